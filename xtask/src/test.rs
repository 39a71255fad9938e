//! `cargo xtask test`: every test, in layers. Unit and no-root integration tests first (fast),
//! each fuzz target for a few seconds,
//! then the root-only kernel and network tests one at a time (they measure timing and share
//! two cores), then the scenarios on a real Patroni + etcd + PostgreSQL lab.
use std::process::Command;

use anyhow::{Context as _, bail};

fn cargo(args: &[&str]) -> anyhow::Result<()> {
    println!("\n==> cargo {}", args.join(" "));
    let status = Command::new("cargo")
        .args(args)
        .status()
        .context("running cargo")?;
    if !status.success() {
        bail!("cargo {} failed", args.join(" "));
    }
    Ok(())
}

pub fn run(filter: Option<&str>) -> anyhow::Result<()> {
    if unsafe { libc::geteuid() } != 0 {
        bail!("the kernel and network tests need root");
    }
    // The network tests run the real daemon binary.
    cargo(&["build", "-p", "router-user", "--bins"])?;
    let mut unit = vec!["test", "-p", "router-user", "-p", "xtask"];
    let mut root = vec!["test", "-p", "tests"];
    if let Some(f) = filter {
        unit.push(f);
        root.push(f);
    }
    if filter.is_none() {
        // Lints are part of the test: `-D warnings`, and router-user's deny of unwrap, expect
        // and indexing/slicing outside tests (input is judged with errors, never a panic).
        cargo(&[
            "clippy",
            "--workspace",
            "--all-targets",
            "--",
            "-D",
            "warnings",
        ])?;
    }
    cargo(&unit)?;
    if filter.is_none() {
        // The ABI crate's host-side tests (the status contract); its binary is BPF-only.
        cargo(&[
            "test",
            "-p",
            "router-ebpf",
            "--lib",
            "--features",
            "user,status",
        ])?;
        // Every fuzz target briefly on the committed corpus (docs/fuzzing.md).
        crate::fuzz::ci()?;
    }
    root.extend(["--", "--test-threads=1"]);
    cargo(&root)?;
    if filter.is_none() {
        println!("\n==> scenarios on the Patroni lab");
        crate::demo::scenarios(crate::demo::ScenarioArgs {
            keep: false,
            no_setup: true,
            failover_bench: false,
            filter: None,
        })?;
    }
    Ok(())
}
