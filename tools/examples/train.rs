//! Runs the trainers before the `saccade train` subcommand is wired into the CLI:
//! `cargo run -p saccade-tools --example train -- classifier --data ../shared/data`.

use clap::Parser;

#[derive(Parser)]
struct Cli {
    #[command(subcommand)]
    command: saccade_tools::cmd::train::TrainCommand,
}

fn main() -> anyhow::Result<()> {
    saccade_tools::cmd::train::run(Cli::parse().command)
}
