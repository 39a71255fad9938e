//! SYN flood (issue 10): spoofed SYNs at a listener for a bounded time while `pgbench -S`
//! holds a few persistent sessions through it, against pgrouter (VIP:5000) and HAProxy
//! (seed config, edge2:5000) in the same lab session. Reported: the flood rate the sender
//! reached (one thread, pinned to one core), TPS of the held sessions before / during / after
//! the flood, failed transactions and lost sessions, and pgrouter's counters over the flood.
//!
//! Network rule: the frames leave the lab's client namespace only, from sources in the lab's
//! own subnet that no host owns (`SPOOF_FIRST`..), so the nodes' SYN-ACKs die unanswered
//! (no neighbour) inside the lab. Bounded in time and in count. The sender is `syn_flood.rs`.
use std::{
    fmt::Write as _,
    fs,
    net::Ipv4Addr,
    path::Path,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};

use super::{
    churn::{Progress, parse_progress},
    hairpin::proc_net_counter,
    pgbench::{Params, counter_deltas, parse_pgbench, pgrouter_status},
    session::{self, DATAPATH_DEFAULT, HAPROXY_ADDR, Session},
    syn_flood::{BATCH, FloodStats, SPOOF_COUNT, SPOOF_FIRST, flood},
};
use crate::lab::{
    util::in_netns,
    {CLIENT_NS, PG_BIN, SUPERUSER, SUPERUSER_PASSWORD, VIP},
};

/// Seconds of the run not counted in the "before" phase (connections, caches warming up).
const WARM_UP_S: f64 = 3.0;
/// Env overrides: `PGR_BENCH_FLOOD_SECS` (10: each phase — before, during, after),
/// `PGR_BENCH_FLOOD_MAX` (20,000,000 frames at most), `PGR_BENCH_FLOOD_CLIENTS` (4).
#[derive(Clone, Debug)]
pub struct FloodParams {
    pub secs: u32,
    pub max: u64,
    pub clients: u32,
}

impl FloodParams {
    pub fn from_env() -> anyhow::Result<Self> {
        let get = super::env_positive::<u64>;
        Ok(FloodParams {
            secs: get("PGR_BENCH_FLOOD_SECS", 10)?.min(120) as u32,
            max: get("PGR_BENCH_FLOOD_MAX", 20_000_000)?,
            clients: get("PGR_BENCH_FLOOD_CLIENTS", 4)?.min(64) as u32,
        })
    }
}

/// Opens a TCP connection (handshake only, closed at once) to `dst:port` from the client
/// namespace every 100 ms until `until`; a probe fails if the handshake does not complete in
/// 1 s (a dropped SYN costs 1 s). Returns (seconds since `t0`, completed).
fn probe(
    dst: Ipv4Addr,
    port: u16,
    t0: Instant,
    until: Instant,
) -> anyhow::Result<Vec<(f64, bool)>> {
    in_netns(CLIENT_NS, move || {
        let addr = std::net::SocketAddr::from((dst, port));
        let mut out = Vec::new();
        let mut next = Instant::now();
        while Instant::now() < until && out.len() < 10_000 {
            let at = t0.elapsed().as_secs_f64();
            let ok = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(1)).is_ok();
            out.push((at, ok));
            next += Duration::from_millis(100);
            std::thread::sleep(next.saturating_duration_since(Instant::now()));
        }
        Ok(out)
    })
}

impl FloodRun {
    /// (succeeded, tried) of the probes started in `[from, to)`.
    pub fn probes_in(&self, from: f64, to: f64) -> (usize, usize) {
        let p: Vec<bool> = self
            .probes
            .iter()
            .filter(|(t, _)| *t >= from && *t < to)
            .map(|(_, ok)| *ok)
            .collect();
        (p.iter().filter(|ok| **ok).count(), p.len())
    }
}

/// One target's flood run.
#[derive(Clone, Debug, Default)]
pub struct FloodRun {
    pub target: String,
    pub flood: FloodStats,
    /// Mean TPS of the full one-second intervals before, during and after the flood.
    pub tps: [f64; 3],
    pub progress: Vec<Progress>,
    /// When the flood ran, in seconds since pgbench started.
    pub window: (f64, f64),
    pub failed: Option<u64>,
    /// pgbench ended successfully (no client aborted: no session lost).
    pub ok: bool,
    /// pgrouter's counters (or edge2's kernel SYN counters for HAProxy) over the flood.
    pub counters: Vec<(String, f64)>,
    /// New TCP connections tried every 100 ms from the flood's start to the end of the run:
    /// (seconds since pgbench started, handshake completed within 1 s).
    pub probes: Vec<(f64, bool)>,
    pub error_tail: Option<String>,
}

/// Mean TPS of the intervals `[t − 1, t]` inside `[from, to]` (pgbench starts a few ms after
/// we spawn it, so interval ends get half a second of slack).
fn mean_tps(p: &[Progress], from: f64, to: f64) -> f64 {
    let v: Vec<f64> = p
        .iter()
        .filter(|x| x.t - 1.0 >= from && x.t + 0.5 <= to)
        .map(|x| x.tps)
        .collect();
    if v.is_empty() {
        f64::NAN
    } else {
        v.iter().sum::<f64>() / v.len() as f64
    }
}

/// The kernel SYN counters of lab host `host` (`edge2`, `pg1` …): who answered the flood's
/// SYNs, with SYN cookies once the listen backlog filled. For HAProxy that is edge2's kernel;
/// pgrouter forwards SYNs, so for it the primary's.
fn syn_counters(host: &str) -> Vec<(String, f64)> {
    [
        "SyncookiesSent",
        "ListenOverflows",
        "ListenDrops",
        "TCPReqQFullDoCookies",
        "TCPReqQFullDrop",
    ]
    .iter()
    .filter_map(|n| {
        proc_net_counter(&format!("pgrlab-{host}"), "netstat", "TcpExt:", n)
            .ok()
            .map(|v| (format!("{host} TcpExt.{n}"), v as f64))
    })
    .collect()
}

/// The flood's own figures: sender stats, its window (s since pgbench started), counters,
/// new-connection probes.
type FloodOutcome = (FloodStats, (f64, f64), Vec<(String, f64)>, Vec<(f64, bool)>);

fn flood_one(
    sess: &mut Session,
    fp: &FloodParams,
    target: &str,
    (host, port): (&str, u16),
) -> anyhow::Result<FloodRun> {
    let pgr = target == "pgrouter";
    // Who answers the SYNs: edge2's kernel for HAProxy, the primary's for pgrouter.
    let answers = if pgr {
        sess.leader.0.clone()
    } else {
        "edge2".to_string()
    };
    let (st0, k0) = (pgrouter_status(&sess.dir), syn_counters(&answers));
    let log = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../target/bench")
        .join(format!("flood-{}.log", target.to_lowercase()));
    let _ = fs::create_dir_all(log.parent().unwrap_or(Path::new(".")));
    let out = fs::File::create(&log).with_context(|| format!("creating {}", log.display()))?;
    let total = 3 * fp.secs;
    let mut child = Command::new("ip")
        .args(["netns", "exec", CLIENT_NS, &format!("{PG_BIN}/pgbench")])
        .args([
            "-n",
            "-S",
            "-h",
            host,
            "-p",
            &port.to_string(),
            "-U",
            SUPERUSER,
            "-c",
            &fp.clients.to_string(),
            "-j",
            "2",
            "-T",
            &total.to_string(),
            "-P",
            "1",
            "postgres",
        ])
        .env("PGPASSWORD", SUPERUSER_PASSWORD)
        .env("PGCONNECT_TIMEOUT", "5")
        .stdout(out.try_clone()?)
        .stderr(out)
        .stdin(Stdio::null())
        .spawn()
        .context("starting pgbench")?;
    let t0 = Instant::now();
    let res = (|| -> anyhow::Result<FloodOutcome> {
        while t0.elapsed() < Duration::from_secs(u64::from(fp.secs)) {
            if child.try_wait()?.is_some() {
                bail!("pgbench ended before the flood started");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let from = t0.elapsed().as_secs_f64();
        println!("bench: flood at {target} {host}:{port} for {} s", fp.secs);
        let dst: Ipv4Addr = host.parse().context("flood target address")?;
        let probe_until = t0 + Duration::from_secs(u64::from(3 * fp.secs));
        let (st, to, probes) = std::thread::scope(|sc| {
            let prober = sc.spawn(|| probe(dst, port, t0, probe_until));
            let st = flood(CLIENT_NS, dst, port, fp.secs, fp.max);
            let to = t0.elapsed().as_secs_f64();
            (st, to, prober.join())
        });
        let st = st?;
        let probes = probes.map_err(|_| anyhow::anyhow!("prober thread panicked"))??;
        let mut counters = if pgr {
            counter_deltas(&st0, &pgrouter_status(&sess.dir), "pg/PG1")
        } else {
            Vec::new()
        };
        counters.extend(syn_counters(&answers).into_iter().map(|(n, v)| {
            let was = k0.iter().find(|(m, _)| *m == n).map(|x| x.1).unwrap_or(0.0);
            (n, v - was)
        }));
        Ok((st, (from, to), counters, probes))
    })();
    // pgbench ends by itself after -T; bounded wait, then stop our own child.
    let limit = Duration::from_secs(u64::from(total) + 30);
    let status = loop {
        if let Some(st) = child.try_wait()? {
            break Some(st);
        }
        if t0.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let (fl, window, counters, probes) = res?;
    let text = fs::read_to_string(&log).unwrap_or_default();
    let progress = parse_progress(&text);
    let ok = status.is_some_and(|s| s.success());
    let run = FloodRun {
        target: target.to_string(),
        tps: [
            // The first seconds warm the sessions up.
            mean_tps(&progress, WARM_UP_S, window.0),
            mean_tps(&progress, window.0, window.1),
            mean_tps(&progress, window.1 + 1.0, f64::from(total) + 1.0),
        ],
        progress,
        window,
        failed: parse_pgbench(&text).ok().map(|x| x.failed),
        ok,
        counters,
        probes,
        error_tail: (!ok).then(|| {
            let l: Vec<&str> = text.lines().rev().take(15).collect();
            l.into_iter().rev().collect::<Vec<_>>().join("\n")
        }),
        flood: fl,
    };
    println!(
        "bench: flood {target}: {} SYNs in {:.1} s ({:.0}/s, {} refused), TPS before {:.0} during {:.0} after {:.0}{}",
        run.flood.sent,
        run.flood.secs,
        run.flood.sent as f64 / run.flood.secs,
        run.flood.refused,
        run.tps[0],
        run.tps[1],
        run.tps[2],
        if ok { "" } else { " (pgbench failed)" }
    );
    Ok(run)
}

#[derive(Clone, Debug, Default)]
pub struct FloodReport {
    pub params: Option<FloodParams>,
    pub leader: String,
    pub runs: Vec<FloodRun>,
    pub notes: Vec<String>,
}

/// Both floods in their own lab session (the lab's default pgrouter configuration).
pub fn run() -> anyhow::Result<FloodReport> {
    let p = Params::from_env()?;
    let fp = FloodParams::from_env()?;
    session::session(&p, DATAPATH_DEFAULT, |sess| {
        let mut rep = FloodReport {
            params: Some(fp.clone()),
            leader: format!("{} {}", sess.leader.0, sess.leader.1),
            ..FloodReport::default()
        };
        rep.runs
            .push(flood_one(sess, &fp, "pgrouter", (VIP, 5000))?);
        sess.ensure_haproxy()?;
        rep.runs
            .push(flood_one(sess, &fp, "HAProxy", (HAPROXY_ADDR, 5000))?);
        sess.leader_note()?;
        rep.notes.append(&mut sess.report.notes);
        Ok(rep)
    })
}

impl FloodReport {
    pub fn markdown(&self) -> String {
        let mut md = String::new();
        let _ = writeln!(md, "## SYN flood: spoofed SYNs while sessions run\n");
        let Some(fp) = &self.params else {
            return md;
        };
        let last = Ipv4Addr::from(u32::from_be_bytes(SPOOF_FIRST) + SPOOF_COUNT - 1);
        let _ = writeln!(
            md,
            "Patroni lab, leader {}. `pgbench -n -S -c {} -j 2 -T {} -P 1` (persistent sessions) \
             through the target; from second {} to second {} one thread in `pgrlab-client`, pinned \
             to one CPU, sends spoofed SYNs (raw socket, `sendmmsg` of {BATCH}, sources {}–{last} \
             — lab addresses no host owns — random ports, at most {} frames) to the same \
             listener as fast as it can. **pgrouter**: `{VIP}:5000`, native XDP, the lab's \
             configuration (handshake table default, SNAT range 40000–59999); **HAProxy**: seed \
             configuration, `{HAPROXY_ADDR}:5000` (edge2's kernel answers SYNs, with SYN cookies \
             when its backlog fills). TPS = mean of pgbench's one-second intervals in each \
             phase. Method: [docs/benchmarks.md](docs/benchmarks.md).\n",
            self.leader,
            fp.clients,
            3 * fp.secs,
            fp.secs,
            2 * fp.secs,
            Ipv4Addr::from(SPOOF_FIRST),
            fp.max,
        );
        let _ = writeln!(
            md,
            "| target | SYNs sent | SYNs/s (sender, CPU {}) | TPS before | during | after | during/before | failed transactions | sessions lost | new connections during the flood | after it |\n|---|---:|---:|---:|---:|---:|---:|---:|---|---:|---:|",
            self.runs.first().map(|r| r.flood.cpu).unwrap_or(0)
        );
        for r in &self.runs {
            let _ = writeln!(
                md,
                "| {} | {} | {:.0} | {:.0} | {:.0} | {:.0} | **{:.3}** | {} | {} | {} | {} |",
                r.target,
                r.flood.sent,
                r.flood.sent as f64 / r.flood.secs.max(1e-9),
                r.tps[0],
                r.tps[1],
                r.tps[2],
                r.tps[1] / r.tps[0],
                r.failed
                    .map(|f| f.to_string())
                    .unwrap_or_else(|| "–".into()),
                if r.ok {
                    "none"
                } else {
                    "**yes: pgbench failed**"
                },
                {
                    let (ok, n) = r.probes_in(r.window.0, r.window.1);
                    format!("{ok}/{n}")
                },
                {
                    let (ok, n) = r.probes_in(r.window.1, f64::INFINITY);
                    format!("{ok}/{n}")
                },
            );
        }
        for r in &self.runs {
            let per_s: Vec<String> = r.progress.iter().map(|p| format!("{:.0}", p.tps)).collect();
            let _ = writeln!(
                md,
                "\n{}: flood from {:.1} s to {:.1} s of the run ({:.1} s); TPS per second: {}.",
                r.target,
                r.window.0,
                r.window.1,
                r.flood.secs,
                per_s.join(" ")
            );
            if !r.counters.is_empty() {
                let c = super::counter_changes(&r.counters);
                let _ = writeln!(
                    md,
                    "\n{} over the flood ({}): {}.",
                    r.target,
                    if r.target == "pgrouter" {
                        "`pgrouter status --json` and the primary's `/proc/net/netstat`, after − before"
                    } else {
                        "edge2's `/proc/net/netstat`, after − before"
                    },
                    c
                );
            }
            if r.flood.refused > 0 {
                let _ = writeln!(
                    md,
                    "\n{}: the kernel refused {} frames (ENOBUFS) during the flood; not counted as sent.",
                    r.target, r.flood.refused
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

    #[test]
    fn report_row_has_rate_ratio_losses_and_probes() {
        let run = FloodRun {
            target: "pgrouter".into(),
            flood: FloodStats {
                sent: 400_000,
                refused: 0,
                secs: 10.0,
                cpu: 1,
            },
            tps: [10_000.0, 9_000.0, 10_000.0],
            window: (10.0, 20.0),
            failed: Some(0),
            ok: true,
            probes: vec![(10.5, true), (15.0, false), (21.0, true), (25.0, true)],
            ..FloodRun::default()
        };
        assert_eq!(run.probes_in(10.0, 20.0), (1, 2));
        let r = FloodReport {
            params: Some(FloodParams {
                secs: 10,
                max: 1000,
                clients: 4,
            }),
            leader: "pg1 198.18.0.11".into(),
            runs: vec![run],
            notes: vec![],
        };
        let md = r.markdown();
        assert!(
            md.contains("| pgrouter | 400000 | 40000 | 10000 | 9000 | 10000 | **0.900** | 0 | none | 1/2 | 2/2 |"),
            "{md}"
        );
        assert!(md.contains("198.18.0.150–198.18.0.249"), "{md}");
    }

    #[test]
    fn phases_take_only_whole_intervals_inside_them() {
        let p: Vec<Progress> = (1..=30)
            .map(|t| Progress {
                t: f64::from(t),
                tps: if (11..=20).contains(&t) { 50.0 } else { 100.0 },
                ..Progress::default()
            })
            .collect();
        assert_eq!(mean_tps(&p, 1.0, 10.02), 100.0);
        assert_eq!(mean_tps(&p, 10.02, 20.05), 50.0);
        assert_eq!(mean_tps(&p, 21.05, 31.0), 100.0);
        assert!(mean_tps(&p, 40.0, 50.0).is_nan());
    }
}
