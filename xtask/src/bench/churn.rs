//! Connection churn soak (issue 10): an application without a pooler, `pgbench -S -C` (a new
//! connection per transaction), through pgrouter's VIP:5000 for ten minutes with a SNAT range
//! small enough that the run cycles it many times, then the same through HAProxy (seed config)
//! in the same lab session. Reported per interval (`pgbench -P`): a data path that leaks ports
//! slows down as the run goes on, so the figure is the last interval's TPS over the first's.
//! Method: docs/benchmarks.md.
use std::{fmt::Write as _, time::Instant};

use super::hairpin::proc_net_counter;
use super::pgbench::{Params, Sample, counter_deltas, parse_pgbench, pgbench_out, pgrouter_status};
use super::session::{self, HAPROXY_ADDR, Session, s};
use crate::lab::{CLIENT_NS, SUPERUSER, VIP};

/// pgrouter's SNAT range in this run: 2,000 ports, so ~90 connections/s for ten minutes
/// cycle it about 25 times (the issue saw the old data path degrade after 10,000–12,000
/// connections on a 20,000-port range).
pub const CHURN_SNAT_PORTS: &str = "40000-41999";
const CHURN_SNAT_COUNT: u32 = 2_000;
/// pgrouter's `[datapath]` lines in this run: the small range, and a handshake table whose
/// half-open flows (1,024) stay under it, as `check-config` requires (a SYN flood must not be
/// able to take every port).
const CHURN_DATAPATH: &str = "snat_ports = \"40000-41999\"\nhandshake_entries = 2048";
const CHURN_HS_ENTRIES: u32 = 2_048;
const _: () = assert!(CHURN_HS_ENTRIES / 2 < CHURN_SNAT_COUNT);
/// The target the issue sets: last interval ≥ 0.95 × the first.
const TARGET_LAST_FIRST: f64 = 0.95;

/// Env overrides: `PGR_BENCH_CHURN_SECS` (600), `PGR_BENCH_CHURN_HAPROXY_SECS` (the same),
/// `PGR_BENCH_CHURN_INTERVAL` (60, at most a third of the run), plus the comparison's
/// `PGR_BENCH_CLIENTS` (8).
#[derive(Clone, Debug)]
pub struct ChurnParams {
    pub secs: u32,
    pub haproxy_secs: u32,
    pub interval: u32,
    pub clients: u32,
    pub threads: u32,
}

impl ChurnParams {
    pub fn from_env(p: &Params) -> anyhow::Result<Self> {
        let get = super::env_positive::<u32>;
        let secs = get("PGR_BENCH_CHURN_SECS", 600)?;
        let haproxy_secs = get("PGR_BENCH_CHURN_HAPROXY_SECS", secs)?;
        let interval = get("PGR_BENCH_CHURN_INTERVAL", 60)?
            .min(secs.min(haproxy_secs) / 3)
            .max(1);
        Ok(ChurnParams {
            secs,
            haproxy_secs,
            interval,
            clients: p.clients,
            threads: p.threads,
        })
    }
}

/// One `pgbench -P` progress line.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Progress {
    /// Seconds since pgbench started (end of the interval).
    pub t: f64,
    pub tps: f64,
    pub latency_ms: f64,
    pub stddev_ms: f64,
}

/// Parses pgbench's progress lines (`progress: 60.0 s, 91.2 tps, lat 87.274 ms stddev 5.123,
/// 0 failed`), in order.
pub fn parse_progress(out: &str) -> Vec<Progress> {
    out.lines()
        .filter_map(|l| {
            let rest = l.trim().strip_prefix("progress: ")?;
            let mut p = Progress::default();
            for part in rest.split(", ") {
                let mut w = part.split_whitespace();
                match (w.next(), w.next()) {
                    (Some(v), Some("s")) => p.t = v.parse().ok()?,
                    (Some(v), Some("tps")) => p.tps = v.parse().ok()?,
                    (Some("lat"), Some(v)) => {
                        p.latency_ms = v.parse().ok()?;
                        // "lat 87.274 ms stddev 5.123"
                        p.stddev_ms = part
                            .split_whitespace()
                            .skip_while(|x| *x != "stddev")
                            .nth(1)
                            .and_then(|x| x.parse().ok())
                            .unwrap_or(f64::NAN);
                    }
                    _ => {}
                }
            }
            Some(p)
        })
        .collect()
}

/// One target's soak.
#[derive(Clone, Debug, Default)]
pub struct ChurnRun {
    pub target: String,
    pub secs: u32,
    pub progress: Vec<Progress>,
    /// pgbench's summary (None if it printed none: aborted).
    pub summary: Option<Sample>,
    pub ok: bool,
    /// The client namespace's `TcpExt: TCPSynRetrans` over the run: SYNs the client had to
    /// send again because no answer came (a dropped SYN costs a client 1 s).
    pub syn_retrans: u64,
    /// pgrouter's counters that moved during the run (pgrouter only).
    pub counters: Vec<(String, f64)>,
    /// pgbench clients that gave up (`client N aborted …`: a connection attempt timed out
    /// after `PGCONNECT_TIMEOUT` = 5 s).
    pub aborted: usize,
    /// The end of pgbench's output when it failed.
    pub error_tail: Option<String>,
}

impl ChurnRun {
    /// Full intervals only (pgbench may print a short last one).
    fn intervals(&self) -> Vec<&Progress> {
        self.progress
            .iter()
            .filter(|p| p.t <= f64::from(self.secs) + 0.5)
            .collect()
    }
    pub fn first(&self) -> Option<f64> {
        self.intervals().first().map(|p| p.tps)
    }
    pub fn last(&self) -> Option<f64> {
        self.intervals().last().map(|p| p.tps)
    }
    pub fn last_over_first(&self) -> Option<f64> {
        Some(self.last()? / self.first()?)
    }
}

#[derive(Clone, Debug, Default)]
pub struct ChurnReport {
    pub params: Option<ChurnParams>,
    pub leader: String,
    pub runs: Vec<ChurnRun>,
    pub notes: Vec<String>,
}

/// The primary's TIME_WAIT counters: `TW` (sockets that entered TIME_WAIT) and
/// `PAWSTimewait` (SYNs on a 4-tuple still in TIME_WAIT refused because their TCP timestamp
/// was older than the last one seen: the client retransmits 1 s later).
fn primary_tcp(leader: &str) -> Vec<(String, f64)> {
    ["TW", "PAWSTimewait"]
        .iter()
        .filter_map(|n| {
            proc_net_counter(&format!("pgrlab-{leader}"), "netstat", "TcpExt:", n)
                .ok()
                .map(|v| (format!("{leader} TcpExt.{n}"), v as f64))
        })
        .collect()
}

fn soak(
    sess: &mut Session,
    cp: &ChurnParams,
    target: &str,
    (host, port): (&str, u16),
    secs: u32,
) -> anyhow::Result<ChurnRun> {
    let retrans = || proc_net_counter(CLIENT_NS, "netstat", "TcpExt:", "TCPSynRetrans");
    let r0 = retrans()?;
    let st0 = pgrouter_status(&sess.dir);
    let node = primary_tcp(&sess.leader.0);
    let t = Instant::now();
    println!(
        "bench: churn through {target} for {secs} s (progress every {} s)",
        cp.interval
    );
    let (ok, out) = pgbench_out(&[
        s("-n"),
        s("-S"),
        s("-C"),
        s("-h"),
        s(host),
        s("-p"),
        port.to_string(),
        s("-U"),
        s(SUPERUSER),
        s("-c"),
        cp.clients.to_string(),
        s("-j"),
        cp.threads.to_string(),
        s("-T"),
        secs.to_string(),
        s("-P"),
        cp.interval.to_string(),
        s("postgres"),
    ])?;
    let run = ChurnRun {
        target: target.to_string(),
        secs,
        progress: parse_progress(&out),
        summary: parse_pgbench(&out).ok(),
        aborted: out
            .lines()
            .filter(|l| l.contains("client") && l.contains("aborted"))
            .count(),
        ok,
        syn_retrans: retrans()?.saturating_sub(r0),
        counters: {
            let mut c = if target == "pgrouter" {
                counter_deltas(&st0, &pgrouter_status(&sess.dir), "pg/PG1")
            } else {
                Vec::new()
            };
            c.extend(primary_tcp(&sess.leader.0).into_iter().map(|(n, v)| {
                let was = node
                    .iter()
                    .find(|(m, _)| *m == n)
                    .map(|x| x.1)
                    .unwrap_or(0.0);
                (n, v - was)
            }));
            c
        },
        error_tail: (!ok).then(|| {
            let l: Vec<&str> = out.lines().rev().take(15).collect();
            l.into_iter().rev().collect::<Vec<_>>().join("\n")
        }),
    };
    println!(
        "bench: churn {target}: {} intervals, first {:.0} tps, last {:.0} tps, {} SYN retransmissions, {:.0?}{}",
        run.progress.len(),
        run.first().unwrap_or(f64::NAN),
        run.last().unwrap_or(f64::NAN),
        run.syn_retrans,
        t.elapsed(),
        if ok { "" } else { " (pgbench failed)" }
    );
    Ok(run)
}

/// The soak in its own lab session: pgrouter with [`CHURN_SNAT_PORTS`] first, then HAProxy.
pub fn run() -> anyhow::Result<ChurnReport> {
    let p = Params::from_env()?;
    let cp = ChurnParams::from_env(&p)?;
    session::session(&p, CHURN_DATAPATH, |sess| {
        let mut rep = ChurnReport {
            params: Some(cp.clone()),
            leader: format!("{} {}", sess.leader.0, sess.leader.1),
            ..ChurnReport::default()
        };
        rep.runs
            .push(soak(sess, &cp, "pgrouter", (VIP, 5000), cp.secs)?);
        sess.ensure_haproxy()?;
        rep.runs.push(soak(
            sess,
            &cp,
            "HAProxy",
            (HAPROXY_ADDR, 5000),
            cp.haproxy_secs,
        )?);
        sess.leader_note()?;
        rep.notes.append(&mut sess.report.notes);
        Ok(rep)
    })
}

fn fmt_opt(v: Option<f64>, prec: usize) -> String {
    v.filter(|x| x.is_finite())
        .map(|x| format!("{x:.prec$}"))
        .unwrap_or_else(|| "–".into())
}

impl ChurnReport {
    pub fn markdown(&self) -> String {
        let mut md = String::new();
        let _ = writeln!(
            md,
            "## Connection churn: `pgbench -S -C` through the VIP, far past the SNAT range\n"
        );
        let Some(cp) = &self.params else {
            return md;
        };
        let _ = writeln!(
            md,
            "Patroni lab, leader {}. From `pgrlab-client`: `pgbench -n -S -C -c {} -j {} -T <secs> -P {}` \
             (a new connection, with SCRAM authentication, per transaction) through **pgrouter** \
             (`{VIP}:5000`, native XDP, the lab's configuration but `snat_ports = \"{CHURN_SNAT_PORTS}\"`: \
             {CHURN_SNAT_COUNT} ports, and `handshake_entries = {CHURN_HS_ENTRIES}`, as `check-config` requires for so small \
             a range) for {} s, then through **HAProxy** (seed configuration, \
             `{HAPROXY_ADDR}:5000`) for {} s, in the same lab session. Target: pgrouter's last \
             interval ≥ {TARGET_LAST_FIRST}× its first. Method: [docs/benchmarks.md](docs/benchmarks.md).\n",
            self.leader, cp.clients, cp.threads, cp.interval, cp.secs, cp.haproxy_secs,
        );
        // Per-interval TPS, one column per target. pgbench prints a progress line when it
        // can, so with slow connections the lines slip past the nominal interval ends.
        let rows = self
            .runs
            .iter()
            .map(|r| r.intervals().len())
            .max()
            .unwrap_or(0);
        let _ = write!(md, "| interval |");
        for r in &self.runs {
            let _ = write!(
                md,
                " {} TPS (mean latency ± stddev, end of interval) |",
                r.target
            );
        }
        let _ = write!(md, "\n|---|");
        for _ in &self.runs {
            let _ = write!(md, "---:|");
        }
        let _ = writeln!(md);
        for i in 0..rows {
            let _ = write!(
                md,
                "| {}–{} s |",
                i as u32 * cp.interval,
                (i as u32 + 1) * cp.interval
            );
            for r in &self.runs {
                let _ = write!(
                    md,
                    " {} |",
                    r.intervals()
                        .get(i)
                        .map(|p| format!(
                            "{:.1} ({:.0} ± {:.0} ms, {:.0} s)",
                            p.tps, p.latency_ms, p.stddev_ms, p.t
                        ))
                        .unwrap_or_else(|| "–".into())
                );
            }
            let _ = writeln!(md);
        }
        let _ = writeln!(
            md,
            "\n| target | seconds | transactions (= connections) | mean TPS | first interval TPS | last interval TPS | last/first | client SYN retransmissions | failed transactions | clients aborted |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
        );
        for r in &self.runs {
            let _ = writeln!(
                md,
                "| {}{} | {} | {} | {} | {} | {} | **{}** | {} | {} | {} |",
                r.target,
                if r.ok { "" } else { " (pgbench failed)" },
                r.secs,
                r.summary
                    .as_ref()
                    .map(|x| x.txns.to_string())
                    .unwrap_or_else(|| "–".into()),
                fmt_opt(r.summary.as_ref().map(|x| x.tps), 1),
                fmt_opt(r.first(), 1),
                fmt_opt(r.last(), 1),
                fmt_opt(r.last_over_first(), 3),
                r.syn_retrans,
                r.summary
                    .as_ref()
                    .map(|x| x.failed.to_string())
                    .unwrap_or_else(|| "–".into()),
                r.aborted,
            );
        }
        let find = |t: &str| self.runs.iter().find(|r| r.target == t);
        if let (Some(pg), Some(ha)) = (find("pgrouter"), find("HAProxy")) {
            let lf = pg.last_over_first();
            let _ = writeln!(
                md,
                "\npgrouter last/first **{}** (target ≥ {TARGET_LAST_FIRST}: {}), HAProxy last/first {}; \
                 pgrouter/HAProxy mean TPS **{}**.",
                fmt_opt(lf, 3),
                match lf {
                    Some(x) if x >= TARGET_LAST_FIRST => "met",
                    Some(_) => "**not met**",
                    None => "no figure",
                },
                fmt_opt(ha.last_over_first(), 3),
                fmt_opt(
                    pg.summary
                        .as_ref()
                        .zip(ha.summary.as_ref())
                        .map(|(a, b)| a.tps / b.tps),
                    3
                ),
            );
            if let Some(x) = &pg.summary {
                let _ = writeln!(
                    md,
                    "\nThe pgrouter run opened {} connections: {:.1} times the {CHURN_SNAT_COUNT}-port SNAT range.",
                    x.txns,
                    x.txns as f64 / f64::from(CHURN_SNAT_COUNT)
                );
            }
        }
        for r in &self.runs {
            if !r.counters.is_empty() {
                let c = super::counter_changes(&r.counters);
                let _ = writeln!(
                    md,
                    "\n{}: counters over the run (after − before; pgrouter's from `pgrouter status --json`, the primary's from its `/proc/net/netstat`): {}.",
                    r.target, c
                );
            }
            super::failed_run_tail(&mut md, &r.target, r.error_tail.as_deref());
        }
        super::notes(&mut md, &self.notes);
        md
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const OUT: &str = "pgbench (15.14 (Debian 15.14-0+deb12u1))
progress: 60.0 s, 91.2 tps, lat 87.274 ms stddev 5.123, 0 failed
progress: 120.0 s, 88.0 tps, lat 90.100 ms stddev 210.500, 0 failed
progress: 180.0 s, 87.5 tps, lat 91.000 ms stddev 6.000, 0 failed
transaction type: <builtin: select only>
number of transactions actually processed: 16000
number of failed transactions: 0 (0.000%)
latency average = 89.000 ms
average connection time = 21.000 ms
tps = 88.900000 (including reconnection times)
";

    #[test]
    fn churn_config_has_the_small_range_and_a_handshake_table_under_it() {
        assert!(CHURN_DATAPATH.contains(&format!("snat_ports = \"{CHURN_SNAT_PORTS}\"")));
        assert!(CHURN_DATAPATH.contains(&format!("handshake_entries = {CHURN_HS_ENTRIES}")));
    }

    #[test]
    fn progress_lines_parse_in_order() {
        let p = parse_progress(OUT);
        assert_eq!(p.len(), 3);
        assert_eq!(
            p[1],
            Progress {
                t: 120.0,
                tps: 88.0,
                latency_ms: 90.1,
                stddev_ms: 210.5
            }
        );
        assert!(parse_progress("tps = 1\n").is_empty());
    }

    #[test]
    fn last_over_first_uses_full_intervals_and_the_report_says_whether_the_target_is_met() {
        let pg = ChurnRun {
            target: "pgrouter".into(),
            secs: 180,
            progress: parse_progress(OUT),
            summary: parse_pgbench(OUT).ok(),
            ok: true,
            ..ChurnRun::default()
        };
        assert_eq!(pg.last_over_first(), Some(87.5 / 91.2));
        // A short trailing interval past -T is not the last minute.
        let mut late = pg.clone();
        late.progress.push(Progress {
            t: 180.9,
            tps: 3.0,
            ..Progress::default()
        });
        assert_eq!(late.last_over_first(), Some(87.5 / 91.2));
        let mut ha = pg.clone();
        ha.target = "HAProxy".into();
        ha.progress[2].tps = 45.6;
        let r = ChurnReport {
            params: Some(ChurnParams {
                secs: 180,
                haproxy_secs: 180,
                interval: 60,
                clients: 8,
                threads: 2,
            }),
            leader: "pg1 198.18.0.11".into(),
            runs: vec![pg, ha],
            notes: vec![],
        };
        let md = r.markdown();
        assert!(
            md.contains("pgrouter last/first **0.959** (target ≥ 0.95: met)"),
            "{md}"
        );
        assert!(md.contains("HAProxy last/first 0.500"), "{md}");
        assert!(
            md.contains("| 60–120 s | 88.0 (90 ± 210 ms, 120 s) | 88.0 (90 ± 210 ms, 120 s) |"),
            "{md}"
        );
        assert!(md.contains("8.0 times the 2000-port SNAT range"), "{md}");
    }
}
