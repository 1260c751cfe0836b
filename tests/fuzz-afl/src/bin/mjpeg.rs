//! `cargo afl` target `mjpeg`: see `saccade_fuzz::mjpeg`.
// `fuzz_nohook`: a panic saccade catches itself (zune-jpeg's, behind `without_decoder_panic`) is an error
// like any other, not a crash; a panic that escapes the harness still aborts, which AFL++ records.
fn main() {
    afl::fuzz_nohook!(|data: &[u8]| {
        saccade_fuzz::mjpeg(data);
    });
}
