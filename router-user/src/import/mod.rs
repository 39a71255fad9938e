//! `pgrouter import`: HAProxy + Keepalived configurations → pgrouter config.
use std::path::PathBuf;

#[derive(clap::Args, Debug)]
pub struct ImportArgs {
    /// haproxy.cfg to translate.
    #[arg(long)]
    pub haproxy: PathBuf,
    /// keepalived.conf with the VRRP instance(s) to translate.
    #[arg(long)]
    pub keepalived: Option<PathBuf>,
}

pub fn run(_args: ImportArgs) -> anyhow::Result<()> {
    anyhow::bail!("import: not implemented yet")
}
