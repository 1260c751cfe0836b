//! One module per `saccade` subcommand: its flags and what it does with them.

pub mod bench;
pub mod calibrate;
pub mod config;
pub mod demo;
pub mod eval;
pub mod eval_classifier;
pub mod inspect;
pub mod quantize;
pub mod run;
pub mod synth;
pub mod train;
