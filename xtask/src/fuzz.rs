//! `cargo xtask fuzz [TARGET] [--time S]`: builds the cargo-fuzz targets in `fuzz/` (nightly,
//! libFuzzer) and runs each for a fixed time at the lowest CPU priority, printing executions
//! per second. New inputs go to a scratch directory, so the committed corpus changes only with
//! `--merge` (libFuzzer's `-merge=1`: the smallest set that keeps the coverage). Targets and
//! properties: docs/fuzzing.md.
use std::{
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, bail};

/// Every target in `fuzz/Cargo.toml`, in the order CI runs them.
pub const TARGETS: &[&str] = &[
    "config",
    "config_gen",
    "import",
    "import_gen",
    "vrrp",
    "patroni",
    "units",
];
/// Seconds per target in `cargo xtask test`: 7 targets stay under two minutes.
pub const CI_SECONDS: u64 = 12;

#[derive(clap::Args, Debug)]
pub struct FuzzArgs {
    /// One target (default: all of them, one after another).
    pub target: Option<String>,
    /// Seconds per target.
    #[arg(long, default_value_t = 60)]
    pub time: u64,
    /// Afterwards, merge what was found into the committed corpus (minimised).
    #[arg(long)]
    pub merge: bool,
}

/// What one run reported.
struct Stats {
    target: String,
    execs: u64,
    per_sec: u64,
}

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

pub fn run(args: FuzzArgs) -> anyhow::Result<()> {
    let targets: Vec<&str> = match &args.target {
        Some(t) if TARGETS.contains(&t.as_str()) => vec![t.as_str()],
        Some(t) => bail!("no fuzz target {t:?}; targets: {}", TARGETS.join(", ")),
        None => TARGETS.to_vec(),
    };
    build()?;
    let mut all = Vec::new();
    for t in targets {
        all.push(run_one(t, args.time)?);
        if args.merge {
            merge(t)?;
        }
    }
    println!(
        "\nfuzz: {:<12} {:>12} {:>10}",
        "target", "executions", "exec/s"
    );
    for s in &all {
        println!("fuzz: {:<12} {:>12} {:>10}", s.target, s.execs, s.per_sec);
    }
    Ok(())
}

/// CI: every target for [`CI_SECONDS`] on the committed corpus.
pub fn ci() -> anyhow::Result<()> {
    run(FuzzArgs {
        target: None,
        time: CI_SECONDS,
        merge: false,
    })
}

fn release_dir() -> PathBuf {
    root().join("fuzz/target/x86_64-unknown-linux-gnu/release")
}

/// `cargo +nightly fuzz build`, without a sanitizer: the code under test is safe Rust, and
/// without ASan each target runs several times faster. The targets never load the XDP object,
/// so an empty stand-in spares the eBPF build when `PGROUTER_EBPF_OBJ` is unset.
fn build() -> anyhow::Result<()> {
    let mut cmd = Command::new("nice");
    cmd.args([
        "-n", "19", "cargo", "+nightly", "fuzz", "build", "-s", "none",
    ])
    .current_dir(root().join("fuzz"));
    if std::env::var_os("PGROUTER_EBPF_OBJ").is_none() {
        let stand_in = root().join("target/fuzz-empty-ebpf.o");
        std::fs::create_dir_all(root().join("target"))?;
        std::fs::write(&stand_in, b"").context("writing the empty eBPF stand-in")?;
        cmd.env("PGROUTER_EBPF_OBJ", &stand_in);
    }
    println!("\n==> cargo +nightly fuzz build -s none");
    let ok = cmd
        .status()
        .context("running cargo fuzz (cargo xtask setup installs it)")?
        .success();
    if !ok {
        bail!("cargo fuzz build failed");
    }
    Ok(())
}

fn run_one(target: &str, seconds: u64) -> anyhow::Result<Stats> {
    let corpus = root().join("fuzz/corpus").join(target);
    let scratch = root().join("target/fuzz-new").join(target);
    let artifacts = root().join("fuzz/artifacts").join(target);
    for d in [&corpus, &scratch, &artifacts] {
        std::fs::create_dir_all(d).with_context(|| format!("creating {}", d.display()))?;
    }
    println!("\n==> fuzz {target} for {seconds}s");
    let out = Command::new("nice")
        .args(["-n", "19"])
        .arg(release_dir().join(target))
        .arg(&scratch)
        .arg(&corpus)
        .arg(format!("-max_total_time={seconds}"))
        .arg("-print_final_stats=1")
        .arg(format!("-artifact_prefix={}/", artifacts.display()))
        .output()
        .with_context(|| format!("running fuzz target {target}"))?;
    let log = String::from_utf8_lossy(&out.stderr);
    if !out.status.success() {
        let tail: Vec<&str> = log.lines().rev().take(40).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        bail!(
            "fuzz target {target} failed; the input is in {}:\n{}",
            artifacts.display(),
            tail.join("\n")
        );
    }
    let stat = |name: &str| -> u64 {
        log.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0)
    };
    let s = Stats {
        target: target.to_owned(),
        execs: stat("stat::number_of_executed_units:"),
        per_sec: stat("stat::average_exec_per_sec:"),
    };
    println!(
        "fuzz: {target}: {} executions, {}/s, no failure",
        s.execs, s.per_sec
    );
    Ok(s)
}

/// Merges the scratch finds into the committed corpus, keeping only inputs that add coverage.
fn merge(target: &str) -> anyhow::Result<()> {
    let corpus = root().join("fuzz/corpus").join(target);
    let scratch = root().join("target/fuzz-new").join(target);
    let merged = root().join("target/fuzz-merged").join(target);
    let _ = std::fs::remove_dir_all(&merged);
    std::fs::create_dir_all(&merged)?;
    let ok = Command::new("nice")
        .args(["-n", "19"])
        .arg(release_dir().join(target))
        .arg("-merge=1")
        .arg(&merged)
        .arg(&corpus)
        .arg(&scratch)
        .status()?
        .success();
    if !ok {
        bail!("merging the {target} corpus failed");
    }
    std::fs::remove_dir_all(&corpus)?;
    std::fs::rename(&merged, &corpus)?;
    println!("fuzz: {target}: corpus merged into {}", corpus.display());
    Ok(())
}
