//! `cargo xtask …`: set-up, build, test, lab, demo and bench entry points.
mod lab;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "xtask", about = "pgrouter's development tasks")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Manage the local Patroni lab (network namespaces).
    Lab(lab::LabArgs),
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().cmd {
        Cmd::Lab(args) => lab::run(args),
    }
}
