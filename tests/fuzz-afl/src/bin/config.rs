//! `cargo afl` target `config`: see `saccade_fuzz::config`.
fn main() {
    afl::fuzz!(|data: &[u8]| {
        saccade_fuzz::config(data);
    });
}
