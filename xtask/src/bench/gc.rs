//! GC with a million flows (issue 10): the controller's garbage collector walking a full
//! `PGR_CONNTRACK` (private maps, filled from userspace), against one full walk the old way
//! (`HashMap::iter`, one lookup per key) of the same table in the same run. The measurement
//! itself is `tests/tests/bench_gc.rs` (needs the embedded object); this formats it.
use std::fmt::Write as _;

use super::micro::{Fields, cargo_bench_test, field};

/// Env overrides passed through: `PGR_BENCH_GC_FLOWS` (1,000,000), `PGR_BENCH_GC_SECS` (30).
pub fn run() -> anyhow::Result<Fields> {
    let env: Vec<(&str, String)> = ["PGR_BENCH_GC_FLOWS", "PGR_BENCH_GC_SECS"]
        .into_iter()
        .filter_map(|k| std::env::var(k).ok().map(|v| (k, v)))
        .collect();
    cargo_bench_test("bench_gc", "bench_gc_million_flows", &env)
}

pub fn markdown(f: &Fields) -> String {
    let g = |k: &str| field(f, k).unwrap_or(f64::NAN);
    let mut md = String::new();
    let _ = writeln!(md, "## GC: controller CPU with a million flows\n");
    let _ = writeln!(
        md,
        "The real object loaded with private maps (`LoadOptions {{ pin_path: None }}`, conntrack table of \
         2,097,152 entries); `PGR_CONNTRACK` filled from userspace with **{:.0} flows = {:.0} entries** \
         (forward and reply) in {:.1} s: 90 % established and fresh, 5 % closed 20 s ago (past the 10 s closed \
         timeout), 5 % closing and idle past the 2 min closing timeout — {:.0} expired flows in all. Then, \
         in the same process (`tests/tests/bench_gc.rs`, `bench_gc_million_flows`):\n",
        g("flows"),
        g("entries"),
        g("fill_s"),
        g("expired_flows"),
    );
    let _ = writeln!(
        md,
        "| | wall time | CPU (thread, user + system) | entries/s |\n|---|---:|---:|---:|\n\
         | baseline: one full walk the old way (`HashMap::iter`: next-key + lookup per key) | {:.2} s | {:.2} s | {:.0} |",
        g("walk_s"),
        g("walk_cpu_s"),
        g("walk_entries_per_s"),
    );
    if field(f, "gc_secs").is_some() {
        for c in [1, 2] {
            let k = |x: &str| g(&format!("gc_cycle{c}_{x}"));
            let _ = writeln!(
                md,
                "| GC executor, full cycle {c} back to back ({:.0} ticks of {:.0} entries per table{}) | {:.2} s | {:.2} s | {:.0} |",
                k("ticks"),
                g("gc_per_tick"),
                if c == 1 {
                    format!("; reaps the {:.0} expired flows", k("reaped"))
                } else {
                    String::from("; nothing left to reap")
                },
                k("s"),
                k("cpu_s"),
                k("walked") / k("s"),
            );
        }
        let _ = writeln!(
            md,
            "| GC executor at the controller's cadence (one tick a second) for {:.0} s | {} | **{:.2} s = {:.1} % of one core** | {:.0} |",
            g("gc_secs"),
            format_args!("{:.0} s per full cycle", g("gc_cycle_s")),
            g("gc_cpu_s"),
            g("gc_cpu_pct"),
            g("gc_walked_per_s"),
        );
        let _ = writeln!(
            md,
            "\nThe two back-to-back cycles are what the controller runs at start (`START_CYCLES`); then it ticks once a \
             second, so a full cycle of this table takes {:.0} ticks ≈ {:.0} s. CPU = `getrusage(RUSAGE_THREAD)` user + \
             system (the kernel's work in the batch syscalls and the `BPF_PROG_TEST_RUN` reaps included) over the wall \
             time. Per entry: the old walk {:.0} ns of CPU, a GC cycle with nothing to reap {:.0} ns (**{:.3}×**). The \
             old walk, {:.2} s of CPU, was paid by every `pgrouter status` call; the GC's {:.1} % of a core is the \
             whole cost now. Reaped {:.0} flows ({:.0} kept by the kernel's re-check, {:.0} orphans), {:.0} drift \
             corrections, {:.0} errors.",
            g("gc_ticks_per_cycle"),
            g("gc_ticks_per_cycle"),
            1e9 * g("walk_cpu_s") / g("entries"),
            1e9 * g("gc_cycle2_cpu_s") / g("gc_cycle2_walked"),
            (g("gc_cycle2_cpu_s") / g("gc_cycle2_walked")) / (g("walk_cpu_s") / g("entries")),
            g("walk_cpu_s"),
            g("gc_cpu_pct"),
            g("gc_reaped"),
            g("gc_kept"),
            g("gc_orphans"),
            g("gc_drift_corrections"),
            g("gc_errors"),
        );
    } else {
        let _ = writeln!(
            md,
            "\nThe GC executor was not measured in this run (`{}`).",
            f.iter()
                .find(|(k, _)| k == "gc")
                .map(|(_, v)| v.as_str())
                .unwrap_or("no gc fields")
        );
    }
    md.push('\n');
    md
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::micro::bench_fields;

    #[test]
    fn markdown_compares_the_gc_with_the_old_walk() {
        let f = bench_fields(
            "BENCH flows=1000000 entries=2000000 expired_flows=100000 fill_s=9.5 walk_s=4.0 \
             walk_cpu_s=3.5 walk_entries_per_s=500000 gc_cycle1_s=2.0 gc_cycle1_cpu_s=1.9 \
             gc_cycle1_ticks=31 gc_cycle1_walked=2000000 gc_cycle1_reaped=100000 gc_cycle2_s=1.0 \
             gc_cycle2_cpu_s=0.9 gc_cycle2_ticks=28 gc_cycle2_walked=1800000 gc_cycle2_reaped=100000 \
             gc_secs=30.0 gc_cpu_s=0.9 gc_cpu_pct=3.00 gc_walked=1800000 gc_walked_per_s=60000 \
             gc_cycles=0 gc_ticks_per_cycle=28 gc_cycle_s=28 gc_reaped=100000 gc_reaped_cadence=0 \
             gc_kept=0 gc_orphans=0 gc_drift_corrections=0 gc_errors=0 gc_per_tick=65536\n",
            "",
        )
        .unwrap();
        let md = markdown(&f);
        assert!(md.contains("**1000000 flows = 2000000 entries**"), "{md}");
        assert!(md.contains("**0.90 s = 3.0 % of one core**"), "{md}");
        assert!(md.contains("| 2.00 s | 1.90 s | 1000000 |"), "{md}");
        assert!(
            md.contains(
                "the old walk 1750 ns of CPU, a GC cycle with nothing to reap 500 ns (**0.286×**)"
            ),
            "{md}"
        );
        let bare = bench_fields("BENCH flows=1 gc=missing\n", "").unwrap();
        assert!(markdown(&bare).contains("not measured in this run (`missing`)"));
    }
}
