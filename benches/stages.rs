//! Per-stage micro-benchmarks.
fn main() {}
