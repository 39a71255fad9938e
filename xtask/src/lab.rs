//! `cargo xtask lab up|down|status`.
use clap::Args;

#[derive(Args)]
pub struct LabArgs {
    #[arg(default_value = "status")]
    pub action: String,
}

pub fn run(_args: LabArgs) -> anyhow::Result<()> {
    anyhow::bail!("lab: not implemented yet")
}
