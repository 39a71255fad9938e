//! Edge-host failover with and without flow-state sync (issue 11): the master edge host's
//! link is cut while 50 sessions and pgbench run through the VIP in front of a real
//! PostgreSQL, once with `[sync]` and once without, in one run; and short connections per
//! second through the master with sync on and off (its cost on the SYN and close paths).
//! The measurement is `tests/tests/sync_net.rs`, `bench_edge_failover_with_and_without_sync`;
//! this formats it.
use std::fmt::Write as _;

use super::micro::{Fields, cargo_bench_test, field};

pub fn run() -> anyhow::Result<Fields> {
    // The test runs the daemon next to its own (release) binary.
    let st = std::process::Command::new("cargo")
        .args(["build", "--release", "-p", "router-user", "--bins"])
        .status()?;
    anyhow::ensure!(st.success(), "building the release pgrouter failed");
    cargo_bench_test("sync_net", "bench_edge_failover_with_and_without_sync", &[])
}

pub fn markdown(f: &Fields) -> String {
    let g = |k: &str| field(f, k).unwrap_or(f64::NAN);
    let mut md = String::new();
    let _ = writeln!(
        md,
        "## Edge-host failover: sessions kept with flow-state sync\n"
    );
    let _ = writeln!(
        md,
        "Two edge hosts (VRRP at 100 ms adverts, generic XDP) in front of one PostgreSQL 15 in \
         namespaces; {:.0} sessions each run `SELECT 1` every 100 ms and pgbench runs {:.0} \
         persistent clients through the VIP; then the master's link is cut. The same load and \
         cut with `[sync]` and, as the baseline, without it (what HAProxy + Keepalived give: \
         HAProxy terminates TCP, so no other host can continue its sessions), in one run \
         (`tests/tests/sync_net.rs`, `bench_edge_failover_with_and_without_sync`).\n",
        g("sessions"),
        g("pgbench_clients"),
    );
    let _ = writeln!(
        md,
        "| | sessions lost | pgbench clients aborted | pgbench transactions | VIP on the backup after the cut | longest wait between two answers |\n|---|---:|---:|---:|---:|---:|"
    );
    for (name, tag) in [
        ("pgrouter with `[sync]`", "sync"),
        ("without sync (baseline)", "nosync"),
    ] {
        let k = |x: &str| g(&format!("{tag}_{x}"));
        let _ = writeln!(
            md,
            "| {name} | {:.0} of {:.0} | {:.0} of {:.0} | {:.0} | {:.0} ms | {:.0} ms |",
            k("sessions_lost"),
            g("sessions"),
            k("pgbench_aborted"),
            g("pgbench_clients"),
            k("pgbench_processed"),
            k("takeover_ms"),
            k("longest_gap_ms"),
        );
    }
    let (on, off) = (g("sync_churn_per_s"), g("nosync_churn_per_s"));
    let _ = writeln!(
        md,
        "\nCost on new connections: {:.0} short connections (opened, closed by the client) \
         through the master before the cut: **{on:.1}/s with sync, {off:.1}/s without, \
         {:.3}×** (each is two flow events and an install and a removal on the peer; the rate \
         is PostgreSQL's, which forks a backend per connection). Without sync every session \
         is reset by its first packet through the new master (`rst_unknown_flow`); with it, the \
         longest wait is the takeover plus one retransmission.\n",
        g("churn"),
        on / off,
    );
    md
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::micro::bench_fields;

    #[test]
    fn the_section_shows_both_runs_and_the_ratio() {
        let f = bench_fields(
            "BENCH sessions=50 pgbench_clients=4 churn=1000 sync_churn_per_s=182.3 sync_takeover_ms=272 \
             sync_sessions_lost=0 sync_longest_gap_ms=525 sync_pgbench_aborted=0 sync_pgbench_processed=17104 \
             nosync_churn_per_s=182.9 nosync_takeover_ms=351 nosync_sessions_lost=50 nosync_longest_gap_ms=108 \
             nosync_pgbench_aborted=4 nosync_pgbench_processed=4719\n",
            "",
        )
        .unwrap();
        let md = markdown(&f);
        assert!(
            md.contains("| pgrouter with `[sync]` | 0 of 50 | 0 of 4 | 17104 | 272 ms | 525 ms |"),
            "{md}"
        );
        assert!(
            md.contains("| without sync (baseline) | 50 of 50 | 4 of 4 | 4719 | 351 ms | 108 ms |"),
            "{md}"
        );
        assert!(md.contains("0.997×"), "{md}");
    }
}
