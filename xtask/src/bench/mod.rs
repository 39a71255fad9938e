//! `cargo xtask bench`: speed figures as ratios against a baseline measured in the same run,
//! written to BENCHMARKS.md. Never timed assertions.
pub mod hairpin;
pub mod pgbench;
pub mod svg;

use std::{
    fmt::Write as _,
    path::{Path, PathBuf},
    process::Command,
};

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

/// The workspace root (BENCHMARKS.md, docs/img, target/bench live there).
fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."))
}

/// Failover section: draws every `target/bench/failover-<scenario>.json` (written by the
/// failover scenarios) to `docs/img/failover-<scenario>.svg` and embeds it, after
/// `outages` (the scenarios' outage table, markdown) when given. Timelines that started before
/// `since_unix_ms` are marked as coming from an earlier run.
pub fn failover_md(outages: Option<&str>, since_unix_ms: u64) -> String {
    let root = root();
    let mut md = String::new();
    let _ = writeln!(md, "## Failover: HAProxy + Keepalived vs pgrouter\n");
    if let Some(t) = outages {
        let _ = writeln!(md, "{}\n", t.trim_end());
    }
    let drawn = svg::draw_all(&root.join("target/bench"), &root.join("docs/img"));
    match drawn {
        Ok(v) if v.is_empty() => {
            let _ = writeln!(
                md,
                "No failover timelines (`target/bench/failover-*.json`) in this run.\n"
            );
        }
        Ok(v) => {
            let _ = writeln!(
                md,
                "One row per client probe loop (HAProxy above pgrouter), one mark per probe: green shades = answered \
                 (shade = serving node), red = failed; dashed blue lines = Patroni events.\n"
            );
            for (scenario, res) in v {
                match res {
                    Ok((path, t0)) => {
                        let _ = writeln!(
                            md,
                            "### {scenario}\n\n![{scenario}]({path})\n\nStarted {}{}.\n",
                            svg::utc(t0),
                            if t0 < since_unix_ms {
                                " — from an earlier run of the failover scenarios, not this one"
                            } else {
                                ""
                            }
                        );
                    }
                    Err(e) => {
                        let _ = writeln!(md, "### {scenario}\n\nNot drawn: {e}\n");
                    }
                }
            }
        }
        Err(e) => {
            let _ = writeln!(md, "Timelines not drawn: {e:#}\n");
        }
    }
    md
}

pub fn run() -> anyhow::Result<()> {
    // Development: only one section, printed; BENCHMARKS.md untouched.
    match std::env::var("PGR_BENCH_ONLY").as_deref() {
        Ok("pgbench") => {
            print!("{}", pgbench::run()?.markdown());
            return Ok(());
        }
        Ok("failover") => {
            print!("{}", failover_md(None, 0));
            return Ok(());
        }
        _ => {}
    }
    let started = std::time::Instant::now();
    let started_unix_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0);
    let m = xdp_micro()?;
    let get = |k: &str| {
        m.iter()
            .find(|(n, _)| n == k)
            .map(|(_, v)| v.clone())
            .unwrap_or_default()
    };
    // pgbench through direct / HAProxy / pgrouter (takes and releases the lab session lock).
    let pg = pgbench::run();
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
        "\nSingle runs include the test_run call's fixed cost, which is why the SYN row is compared with single runs of the baseline.\n"
    );
    let pg_err = match &pg {
        Ok(r) => {
            md.push_str(&r.markdown());
            None
        }
        Err(e) => {
            let _ = writeln!(
                md,
                "## pgbench: direct vs HAProxy vs pgrouter\n\nFailed in this run: {e:#}\n"
            );
            Some(e)
        }
    };
    // Failover scenarios: they take the lab session lock themselves, after pgbench::run()
    // has released it, write target/bench/failover-*.json and return the outage table.
    let failover = crate::demo::bench_failover();
    let table = match &failover {
        Ok(results) => crate::demo::markdown(results),
        Err(e) => format!("Failover measurements failed in this run: {e:#}"),
    };
    md.push_str(&failover_md(Some(&table), started_unix_ms));
    let _ = writeln!(md, "Whole run: {:.0} s.", started.elapsed().as_secs_f64());
    std::fs::write(root().join("BENCHMARKS.md"), &md).context("writing BENCHMARKS.md")?;
    print!("{md}");
    if let Some(e) = pg_err {
        bail!("pgbench comparison failed: {e:#}");
    }
    Ok(())
}
