//! `cargo afl` target `weights`: see `saccade_fuzz::weights`.
fn main() {
    afl::fuzz!(|data: &[u8]| {
        saccade_fuzz::weights(data);
    });
}
