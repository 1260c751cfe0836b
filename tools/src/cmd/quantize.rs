//! `saccade quantize`: a float safetensors model into GGUF.

use std::path::PathBuf;

#[derive(Debug, Clone, clap::Args)]
pub struct QuantizeArgs {
    /// Float model (safetensors).
    #[arg(long)]
    pub input: PathBuf,
    /// Output GGUF file.
    #[arg(long)]
    pub output: PathBuf,
    /// q8_0, q4_0, q4k, f16 or f32.
    #[arg(long, default_value = "q8_0")]
    pub dtype: saccade_models::weights::QuantDtype,
}

pub fn quantize(args: QuantizeArgs) -> anyhow::Result<()> {
    let report = saccade_models::weights::quantize_file(&args.input, &args.output, args.dtype)?;
    println!("{report}");
    Ok(())
}
