//! `cargo afl` target `yuyv`: see `saccade_fuzz::yuyv`.
fn main() {
    afl::fuzz!(|data: &[u8]| {
        saccade_fuzz::yuyv(data);
    });
}
