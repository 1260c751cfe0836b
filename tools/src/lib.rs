//! The `saccade` command line: demo, run, train, quantize, inspect, eval, bench, calibrate.

pub mod train;

pub fn main() -> anyhow::Result<()> {
    Ok(())
}
