//! `cargo xtask …`: set-up, build, test, lab, demo and bench entry points.
mod bench;
mod demo;
mod dist;
mod fuzz;
mod lab;
mod setup;
mod test;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "xtask", about = "pgrouter's development tasks")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Install what a fresh machine lacks (Debian packages, rust-src, bpf-linker). Idempotent.
    Setup,
    /// Build the release `pgrouter` binary (it embeds the XDP object).
    Build,
    /// Set up, then run every test: unit, kernel (test_run) and network (namespaces).
    Test {
        /// Skip `setup` (already done on this machine).
        #[arg(long)]
        no_setup: bool,
        /// Only tests whose name contains this.
        filter: Option<String>,
    },
    /// Benchmarks (ratios against baselines measured in the same run) → BENCHMARKS.md.
    Bench,
    /// Run the fuzz targets in fuzz/ (cargo-fuzz, nightly) for a fixed time each.
    Fuzz(fuzz::FuzzArgs),
    /// Build the Debian package (`--verify`: install it into a clean Debian root).
    Dist(dist::DistArgs),
    /// Manage the local Patroni lab (network namespaces).
    Lab(lab::LabArgs),
    /// Set up, then the demo on the Patroni lab: pgrouter on two edges, failovers, a client's view.
    Demo(demo::DemoArgs),
    /// The demo's scenarios with assertions (root; ends with `N passed, M failed`).
    Scenarios(demo::ScenarioArgs),
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().cmd {
        Cmd::Setup => setup::run_setup(),
        Cmd::Build => {
            setup::run_setup()?;
            let ok = std::process::Command::new("cargo")
                .args(["build", "--release", "-p", "router-user", "--bins"])
                .status()?
                .success();
            anyhow::ensure!(ok, "cargo build failed");
            println!("built target/release/pgrouter");
            Ok(())
        }
        Cmd::Test { no_setup, filter } => {
            if !no_setup {
                setup::run_setup()?;
            }
            test::run(filter.as_deref())
        }
        Cmd::Bench => {
            setup::run_setup()?;
            bench::run()
        }
        Cmd::Fuzz(args) => fuzz::run(args),
        Cmd::Dist(args) => dist::run_with(args),
        Cmd::Lab(args) => lab::run(args),
        Cmd::Demo(args) => demo::run(args),
        Cmd::Scenarios(args) => demo::scenarios(args),
    }
}
