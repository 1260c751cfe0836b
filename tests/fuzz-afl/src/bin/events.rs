//! `cargo afl` target `events`: see `saccade_fuzz::events`.
fn main() {
    afl::fuzz!(|data: &[u8]| {
        saccade_fuzz::events(data);
    });
}
