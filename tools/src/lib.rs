//! The `saccade` command line: demo, run, train, quantize, inspect, eval, bench, calibrate.
//!
//! The only crate that uses `anyhow`: library errors are typed in `saccade-runtime` and `saccade-models`; here
//! they get the context a user needs (which file, which flag).

pub mod annotate;
pub mod bench;
pub mod cmd;
pub mod config;
pub mod engine;
pub mod eval;
pub mod font;
pub mod matching;
pub mod mqtt;
pub mod output;
pub mod run;
pub mod serve;
pub mod settings;
pub mod snapshots;
pub mod summary;
pub mod train;

use clap::{Parser, Subcommand};

/// Glance at the whole frame, focus on a few full-resolution patches, classify them with a quantised net.
#[derive(Debug, Parser)]
#[command(name = "saccade", version, about)]
pub struct Cli {
    /// More log output (-v info, -vv debug); RUST_LOG overrides.
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    pub verbose: u8,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the whole pipeline on the sample frames that ship with saccade; write annotated PNGs and a summary.
    Demo(cmd::demo::DemoArgs),
    /// Run the pipeline on a source (camera, folder of frames, synthetic).
    Run(cmd::run::RunArgs),
    /// Train a model (classifier, glance, scorer).
    #[command(subcommand)]
    Train(cmd::train::TrainCommand),
    /// Quantise a float safetensors model into GGUF.
    Quantize(cmd::quantize::QuantizeArgs),
    /// List the tensors, shapes, dtypes, sizes and config of a weight file.
    Inspect(cmd::inspect::InspectArgs),
    /// Write synthetic road frames with their boxes (annotations.csv) into a folder.
    Synth(cmd::synth::SynthArgs),
    /// Fit GFNet's exit thresholds on validation frames to a budget of patches per frame.
    Calibrate(cmd::calibrate::CalibrateArgs),
    /// Detection quality and cost of a strategy on annotated frames (a folder and its CSV).
    Eval(cmd::eval::EvalArgs),
    /// Accuracy and latency of the patch classifier on GTSRB crops.
    EvalClassifier(cmd::eval_classifier::EvalClassifierArgs),
    /// Every strategy on the same frames: ratios vs full resolution, Q8_0 vs f32, single vs pipelined.
    Bench(cmd::bench::BenchArgs),
    /// Configuration file: print the commented default, or check a file.
    Config(cmd::config::ConfigArgs),
}

/// Entry point of the `saccade` binary.
pub fn main() -> anyhow::Result<()> {
    use clap::{CommandFactory, FromArgMatches};
    let matches = Cli::command().get_matches();
    let cli = Cli::from_arg_matches(&matches)?;
    init_logging(cli.verbose);
    match cli.command {
        Command::Demo(args) => cmd::demo::demo(args),
        Command::Run(args) => cmd::run::run(args, matches.subcommand_matches("run")),
        Command::Config(args) => cmd::config::config(args),
        Command::Calibrate(args) => cmd::calibrate::calibrate(args),
        Command::Train(cmd) => cmd::train::run(cmd),
        Command::Quantize(args) => cmd::quantize::quantize(args),
        Command::Inspect(args) => cmd::inspect::inspect(args),
        Command::Synth(args) => cmd::synth::synth(args),
        Command::Eval(args) => cmd::eval::eval(args),
        Command::EvalClassifier(args) => cmd::eval_classifier::eval_classifier(args),
        Command::Bench(args) => cmd::bench::bench(args),
    }
}

fn init_logging(verbose: u8) {
    let default = match verbose {
        0 => "warn",
        1 => "info",
        _ => "debug",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    /// The shipped systemd unit's command line must be one the CLI accepts.
    #[test]
    fn systemd_unit_exec_start_parses() {
        let unit = include_str!("../deploy/saccade.service");
        let mut exec = String::new();
        let mut in_exec = false;
        for line in unit.lines() {
            if let Some(rest) = line.strip_prefix("ExecStart=") {
                in_exec = true;
                exec.push_str(rest);
            } else if in_exec {
                exec.push(' ');
                exec.push_str(line.trim());
            }
            if in_exec && !exec.ends_with('\\') {
                break;
            }
            exec = exec.trim_end_matches('\\').to_string();
        }
        let args: Vec<&str> = exec.split_whitespace().collect();
        assert_eq!(args[0], "/usr/local/bin/saccade");
        let cli = Cli::try_parse_from(&args).unwrap();
        assert!(format!("{cli:?}").contains("events_max_mb: Some(64.0)"));
    }
}
