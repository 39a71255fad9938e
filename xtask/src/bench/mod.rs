//! `cargo xtask bench`: speed figures as ratios against a baseline measured in the same run,
//! written to BENCHMARKS.md. Never timed assertions.
pub mod churn;
pub mod flood;
pub mod gc;
pub mod hairpin;
pub mod micro;
pub mod pgbench;
pub mod svg;

use std::{
    fmt::Write as _,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, bail};

use micro::MicroReport;

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

/// A section's markdown, or its heading and why it failed in this run.
fn section<T>(heading: &str, r: &anyhow::Result<T>, md: impl Fn(&T) -> String) -> String {
    match r {
        Ok(v) => md(v),
        Err(e) => format!("## {heading}\n\nFailed in this run: {e:#}\n\n"),
    }
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
        Ok("micro") => {
            print!("{}", MicroReport::run()?.markdown());
            return Ok(());
        }
        Ok("churn") => {
            print!("{}", churn::run()?.markdown());
            return Ok(());
        }
        Ok("flood") => {
            let f = flood::run();
            let m = MicroReport::run();
            print!(
                "{}{}",
                section(FLOOD, &f, flood::FloodReport::markdown),
                section(MICRO, &m, MicroReport::markdown)
            );
            f?;
            m?;
            return Ok(());
        }
        Ok("gc") => {
            print!("{}", gc::markdown(&gc::run()?));
            return Ok(());
        }
        Ok(other) => {
            bail!("PGR_BENCH_ONLY={other:?}: one of pgbench, failover, micro, churn, flood, gc")
        }
        Err(_) => {}
    }
    let started = std::time::Instant::now();
    let started_unix_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0);
    let micro = MicroReport::run();
    let gc = gc::run();
    // Lab sections, one lab session each (each takes and releases the lab session lock).
    let pg = pgbench::run();
    let churn = churn::run();
    let flood = flood::run();
    let mut md = String::new();
    let _ = writeln!(md, "# pgrouter benchmarks\n");
    let _ = writeln!(
        md,
        "Machine: {}. Command: `cargo xtask bench`. Every figure is a ratio against a baseline measured in the same run.\n",
        machine()
    );
    md.push_str(&section(MICRO, &micro, MicroReport::markdown));
    md.push_str(&section(
        "pgbench: direct vs HAProxy vs pgrouter",
        &pg,
        pgbench::Report::markdown,
    ));
    md.push_str(&section(CHURN, &churn, churn::ChurnReport::markdown));
    md.push_str(&section(FLOOD, &flood, flood::FloodReport::markdown));
    md.push_str(&section(GC, &gc, gc::markdown));
    // Failover scenarios: they take the lab session lock themselves, after the sections
    // above have released it, write target/bench/failover-*.json and return the outage table.
    let failover = crate::demo::bench_failover();
    let table = match &failover {
        Ok(results) => crate::demo::markdown(results),
        Err(e) => format!("Failover measurements failed in this run: {e:#}"),
    };
    md.push_str(&failover_md(Some(&table), started_unix_ms));
    let _ = writeln!(md, "Whole run: {:.0} s.", started.elapsed().as_secs_f64());
    std::fs::write(root().join("BENCHMARKS.md"), &md).context("writing BENCHMARKS.md")?;
    print!("{md}");
    let failed: Vec<String> = [
        ("micro-benchmark", micro.err()),
        ("pgbench comparison", pg.err()),
        ("churn", churn.err()),
        ("flood", flood.err()),
        ("GC", gc.err()),
    ]
    .into_iter()
    .filter_map(|(n, e)| e.map(|e| format!("{n}: {e:#}")))
    .collect();
    if !failed.is_empty() {
        bail!("sections failed: {}", failed.join("; "));
    }
    Ok(())
}

const MICRO: &str = "XDP per-packet cost (BPF_PROG_TEST_RUN)";
const CHURN: &str = "Connection churn: `pgbench -S -C` through the VIP, far past the SNAT range";
const FLOOD: &str = "SYN flood: spoofed SYNs while sessions run";
const GC: &str = "GC: controller CPU with a million flows";
