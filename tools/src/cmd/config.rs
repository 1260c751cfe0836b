//! `saccade config`: print the commented default configuration, or check a file and print it resolved.

#[derive(Debug, clap::Args)]
pub struct ConfigArgs {
    /// Print the commented default configuration.
    #[arg(long)]
    pub print_default: bool,
    /// Validate this config file and print it resolved.
    #[arg(long)]
    pub check: Option<std::path::PathBuf>,
}

pub fn config(args: ConfigArgs) -> anyhow::Result<()> {
    if args.print_default {
        print!("{}", crate::config::Config::default_toml()?);
    }
    if let Some(path) = &args.check {
        let config = crate::config::Config::load(path)?;
        println!(
            "{} is valid:\n{}",
            path.display(),
            toml::to_string_pretty(&config)?
        );
    }
    if !args.print_default && args.check.is_none() {
        anyhow::bail!("saccade config: give --print-default or --check FILE");
    }
    Ok(())
}
