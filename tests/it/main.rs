//! Integration tests of saccade: one binary, one module per area. They run the real `saccade` binary on the
//! sample frames and weights that ship in the repository.

mod alloc;
mod architecture;
mod cli;
mod fuzz;
#[path = "../fuzz-afl/src/lib.rs"]
mod fuzz_afl;
#[cfg(feature = "gstreamer")]
mod gst;
mod http;
mod mqtt;
