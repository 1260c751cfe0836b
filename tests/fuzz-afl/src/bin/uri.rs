//! `cargo afl` target `uri`: see `saccade_fuzz::uri`.
fn main() {
    afl::fuzz!(|data: &[u8]| {
        saccade_fuzz::uri(data);
    });
}
