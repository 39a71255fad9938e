//! `cargo xtask bench`: speed figures as ratios against a baseline measured in the same run,
//! written to BENCHMARKS.md. Never timed assertions.
pub mod churn;
pub mod edge_failover;
pub mod flood;
pub mod gc;
pub mod hairpin;
pub mod micro;
pub mod pgbench;
pub mod report;
pub mod session;
pub mod svg;
pub mod syn_flood;
pub mod timeline;

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
                            timeline::utc(t0),
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

/// Replaces the section `## <heading>` (up to the next `## `) of `doc` with `section`, or
/// inserts it before the failover section (or at the end) when `doc` has none.
pub fn replace_section(doc: &str, heading: &str, section: &str) -> String {
    let start_tag = format!("## {heading}\n");
    let section = format!("{}\n", section.trim_end());
    let next_heading = |from: usize| {
        doc[from..]
            .find("\n## ")
            .map(|i| from + i + 1)
            .unwrap_or(doc.len())
    };
    if let Some(i) = doc.find(&start_tag) {
        let end = next_heading(i + start_tag.len());
        let sep = if end < doc.len() { "\n" } else { "" };
        return format!("{}{section}{sep}{}", &doc[..i], &doc[end..]);
    }
    let at = doc
        .find("## Failover")
        .or_else(|| doc.find("\nWhole run:").map(|i| i + 1))
        .unwrap_or(doc.len());
    let lead = if at == 0 || doc[..at].ends_with("\n\n") {
        ""
    } else {
        "\n"
    };
    format!("{}{lead}{section}\n{}", &doc[..at], &doc[at..])
}

/// `PGR_BENCH_ONLY=<section>`: prints the sections; with `PGR_BENCH_WRITE=1` also puts them
/// into BENCHMARKS.md in place of their earlier version, dated (the other sections stay from
/// their own runs).
fn only(sections: &[(&str, String)]) -> anyhow::Result<()> {
    let write = std::env::var("PGR_BENCH_WRITE").as_deref() == Ok("1");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0);
    let path = root().join("BENCHMARKS.md");
    // The sources measured (with `+` when the worktree had uncommitted changes).
    let git = |args: &[&str]| {
        std::process::Command::new("git")
            .arg("-C")
            .arg(root())
            .args(args)
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
            .unwrap_or_default()
    };
    let commit = format!(
        "`{}`{}",
        git(&["rev-parse", "--short", "HEAD"]),
        if git(&["status", "--porcelain", "--untracked-files=no"]).is_empty() {
            ""
        } else {
            "+"
        }
    );
    let mut doc = if write {
        std::fs::read_to_string(&path).context("reading BENCHMARKS.md")?
    } else {
        String::new()
    };
    for (heading, md) in sections {
        print!("{md}");
        if write {
            let dated = format!(
                "{}\n_This section: `PGR_BENCH_ONLY` run of {} on {}, commit {}, not the whole bench's run._\n",
                md.trim_end(),
                std::env::var("PGR_BENCH_ONLY").unwrap_or_default(),
                timeline::utc(now),
                commit,
            );
            doc = replace_section(&doc, heading, &dated);
        }
    }
    if write {
        std::fs::write(&path, doc).context("writing BENCHMARKS.md")?;
        println!("bench: wrote {}", path.display());
    }
    Ok(())
}

pub fn run() -> anyhow::Result<()> {
    // Development: only one section, printed (`PGR_BENCH_WRITE=1`: also into BENCHMARKS.md).
    match std::env::var("PGR_BENCH_ONLY").as_deref() {
        Ok("pgbench") => {
            return only(&[(PGBENCH, pgbench::run()?.markdown())]);
        }
        Ok("failover") => {
            print!("{}", failover_md(None, 0));
            return Ok(());
        }
        Ok("micro") => {
            return only(&[(MICRO, MicroReport::run()?.markdown())]);
        }
        Ok("churn") => {
            return only(&[(CHURN, churn::run()?.markdown())]);
        }
        Ok("flood") => {
            let f = flood::run();
            let m = MicroReport::run();
            // Written only when both worked: a failure is printed, not recorded.
            if f.is_ok() && m.is_ok() {
                return only(&[
                    (FLOOD, section(FLOOD, &f, flood::FloodReport::markdown)),
                    (MICRO, section(MICRO, &m, MicroReport::markdown)),
                ]);
            }
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
            return only(&[(GC, gc::markdown(&gc::run()?))]);
        }
        Ok("sync") => {
            return only(&[(SYNC, edge_failover::markdown(&edge_failover::run()?))]);
        }
        Ok(other) => {
            bail!(
                "PGR_BENCH_ONLY={other:?}: one of pgbench, failover, micro, churn, flood, gc, sync"
            )
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
    let sync = edge_failover::run();
    let mut md = String::new();
    let _ = writeln!(md, "# pgrouter benchmarks\n");
    let _ = writeln!(
        md,
        "Machine: {}. Command: `cargo xtask bench`. Every figure is a ratio against a baseline measured in the same run.\n",
        machine()
    );
    md.push_str(&section(MICRO, &micro, MicroReport::markdown));
    md.push_str(&section(PGBENCH, &pg, report::Report::markdown));
    md.push_str(&section(CHURN, &churn, churn::ChurnReport::markdown));
    md.push_str(&section(FLOOD, &flood, flood::FloodReport::markdown));
    md.push_str(&section(GC, &gc, gc::markdown));
    md.push_str(&section(SYNC, &sync, edge_failover::markdown));
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
        ("edge-host failover", sync.err()),
    ]
    .into_iter()
    .filter_map(|(n, e)| e.map(|e| format!("{n}: {e:#}")))
    .collect();
    if !failed.is_empty() {
        bail!("sections failed: {}", failed.join("; "));
    }
    Ok(())
}

const PGBENCH: &str = "pgbench: direct vs HAProxy vs pgrouter";
const MICRO: &str = "XDP per-packet cost (BPF_PROG_TEST_RUN)";
const CHURN: &str = "Connection churn: `pgbench -S -C` through the VIP, far past the SNAT range";
const FLOOD: &str = "SYN flood: spoofed SYNs while sessions run";
const GC: &str = "GC: controller CPU with a million flows";
const SYNC: &str = "Edge-host failover: sessions kept with flow-state sync";

/// A section's closing lines: why a run failed (the end of pgbench's output), if it did.
pub(crate) fn failed_run_tail(md: &mut String, target: impl std::fmt::Display, tail: Option<&str>) {
    use std::fmt::Write as _;
    if let Some(e) = tail {
        let _ = writeln!(
            md,
            "\n{target} run failed; end of pgbench's output:\n\n```\n{e}\n```"
        );
    }
}

/// A section's notes, then the blank line that ends it.
pub(crate) fn notes(md: &mut String, notes: &[String]) {
    use std::fmt::Write as _;
    for n in notes {
        let _ = writeln!(md, "\nNote: {n}");
    }
    let _ = writeln!(md);
}

/// A positive integer from the environment variable `k`, or `d` when it is unset; an error
/// names the variable and its bad value.
pub(crate) fn env_positive<T>(k: &str, d: T) -> anyhow::Result<T>
where
    T: std::str::FromStr + PartialOrd + Default,
{
    use anyhow::Context as _;
    match std::env::var(k) {
        Ok(v) => v
            .parse::<T>()
            .ok()
            .filter(|n| *n > T::default())
            .with_context(|| format!("{k}={v:?}: a positive integer")),
        Err(_) => Ok(d),
    }
}

/// Counter changes over a run, as the report lists them: `` `name` +N, … ``.
pub(crate) fn counter_changes(counters: &[(String, f64)]) -> String {
    counters
        .iter()
        .map(|(k, v)| format!("`{k}` {v:+.0}"))
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    const DOC: &str = "# pgrouter benchmarks\n\nMachine: x.\n\n## A\n\nold a\n\n## B\n\nold b\n\n## Failover: HAProxy + Keepalived vs pgrouter\n\nf\n\nWhole run: 1 s.\n";

    #[test]
    fn a_section_is_replaced_in_place_or_inserted_before_failover() {
        let d = replace_section(DOC, "A", "## A\n\nnew a\n");
        assert!(d.contains("## A\n\nnew a\n\n## B\n\nold b"), "{d}");
        assert!(!d.contains("old a"));
        let d = replace_section(DOC, "C", "## C\n\nnew c\n");
        assert!(d.contains("old b\n\n## C\n\nnew c\n\n## Failover"), "{d}");
        let d = replace_section(
            DOC,
            "Failover: HAProxy + Keepalived vs pgrouter",
            "## Failover: HAProxy + Keepalived vs pgrouter\n\ng\n",
        );
        assert!(
            d.ends_with("## Failover: HAProxy + Keepalived vs pgrouter\n\ng\n"),
            "{d}"
        );
        assert_eq!(replace_section("", "A", "## A\n\nx"), "## A\n\nx\n\n");
    }
}
