//! `saccade inspect`: the tensors, shapes, dtypes, sizes and config of a weight file.

use std::path::PathBuf;

#[derive(Debug, Clone, clap::Args)]
pub struct InspectArgs {
    /// A safetensors or GGUF weight file.
    pub file: PathBuf,
}

pub fn inspect(args: InspectArgs) -> anyhow::Result<()> {
    let inspection = saccade_models::weights::inspect_file(&args.file)?;
    println!("{inspection}");
    Ok(())
}
