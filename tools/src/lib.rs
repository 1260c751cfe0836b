//! The `saccade` command line: demo, run, train, quantize, inspect, eval, bench, calibrate.

pub fn main() -> anyhow::Result<()> {
    Ok(())
}
