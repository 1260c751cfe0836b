//! One module per `saccade` subcommand: its flags and what it does with them.

pub mod config;
pub mod eval;
pub mod eval_classifier;
