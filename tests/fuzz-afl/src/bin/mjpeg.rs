//! `cargo afl` target `mjpeg`: see `saccade_fuzz::mjpeg`.
fn main() {
    afl::fuzz!(|data: &[u8]| {
        saccade_fuzz::mjpeg(data);
    });
}
