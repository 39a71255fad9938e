//! `cargo xtask bench`: speed figures as ratios against a baseline measured in the same run,
//! written to BENCHMARKS.md. Never timed assertions.
use std::{fmt::Write as _, process::Command};

use anyhow::{Context as _, bail};

/// Runs the XDP per-packet micro-benchmark (BPF_PROG_TEST_RUN, the real object against a
/// minimal XDP_TX program from the same object) and returns its BENCH line's fields.
fn xdp_micro() -> anyhow::Result<Vec<(String, String)>> {
    let out = Command::new("cargo")
        .args([
            "test",
            "--release",
            "-p",
            "tests",
            "--test",
            "datapath_kernel",
        ])
        .args([
            "--",
            "--ignored",
            "--exact",
            "bench_test_run_ns_per_packet",
            "--nocapture",
        ])
        .output()
        .context("running the XDP micro-benchmark")?;
    let text = String::from_utf8_lossy(&out.stdout);
    let Some(line) = text.lines().find(|l| l.starts_with("BENCH ")) else {
        bail!(
            "no BENCH line in the micro-benchmark output:\n{text}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    Ok(line
        .trim_start_matches("BENCH ")
        .split_whitespace()
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect())
}

fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_string())
        })
        .unwrap_or_default();
    let kernel = Command::new("uname")
        .arg("-r")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default();
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(0);
    format!("{cpu}, {cores} cores, Linux {kernel}")
}

pub fn run() -> anyhow::Result<()> {
    let m = xdp_micro()?;
    let get = |k: &str| {
        m.iter()
            .find(|(n, _)| n == k)
            .map(|(_, v)| v.clone())
            .unwrap_or_default()
    };
    let mut md = String::new();
    let _ = writeln!(md, "# pgrouter benchmarks\n");
    let _ = writeln!(
        md,
        "Machine: {}. Command: `cargo xtask bench`. Every figure is a ratio against a baseline measured in the same run.\n",
        machine()
    );
    let _ = writeln!(md, "## XDP per-packet cost (BPF_PROG_TEST_RUN)\n");
    let _ = writeln!(
        md,
        "The real program against `baseline_tx` (returns XDP_TX, nothing else) from the same object, same frames, same namespace.\n"
    );
    let _ = writeln!(
        md,
        "| path | pgrouter ns/packet | baseline ns/packet | ratio |\n|---|---|---|---|"
    );
    let _ = writeln!(
        md,
        "| established flow (repeat 20,000) | {} | {} | {}× |",
        get("established_ns"),
        get("baseline_xdp_tx_ns"),
        get("established_ratio")
    );
    let _ = writeln!(
        md,
        "| new flow, SYN (5,000 single runs) | {} | {} | {}× |",
        get("syn_ns"),
        get("baseline_single_run_ns"),
        get("syn_ratio")
    );
    let _ = writeln!(
        md,
        "\nSingle runs include the test_run call's fixed cost, which is why the SYN row is compared with single runs of the baseline."
    );
    std::fs::write("BENCHMARKS.md", &md).context("writing BENCHMARKS.md")?;
    print!("{md}");
    Ok(())
}
