//! `saccade synth`: synthetic road frames with their boxes (annotations.csv) into a folder.

use std::path::PathBuf;

#[derive(Debug, Clone, clap::Args)]
pub struct SynthArgs {
    /// Output folder (frames NNNN.jpg and annotations.csv).
    #[arg(long)]
    pub out: PathBuf,
    #[arg(long, default_value_t = 16)]
    pub count: u64,
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    #[arg(long, default_value_t = 1280)]
    pub width: u32,
    #[arg(long, default_value_t = 960)]
    pub height: u32,
}

pub fn synth(args: SynthArgs) -> anyhow::Result<()> {
    use saccade_runtime::synth::{SceneConfig, SceneGenerator};
    let generator = SceneGenerator::new(SceneConfig {
        width: args.width,
        height: args.height,
        ..SceneConfig::default()
    })?;
    generator.write_annotated_set(&args.out, args.count, args.seed)?;
    println!("wrote {} frames to {}", args.count, args.out.display());
    Ok(())
}
