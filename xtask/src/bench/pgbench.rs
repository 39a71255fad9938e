//! pgbench through the three paths a client can take to the Patroni primary, in one lab, in
//! one run: directly (`leader:5432`), through HAProxy with the seed's configuration
//! (`lab/haproxy.cfg.tmpl`, on edge2, `<edge2>:5000`) and through pgrouter (XDP on edge1,
//! `VIP:5000`) — plus the hairpin floor (`hairpin.rs`): direct, but over pgrouter's extra hop
//! with no router logic, which bounds what any edge-host router can reach in this lab.
//! Select-only (`pgbench -S`), with persistent connections and with a new connection per
//! transaction (`-C`); targets alternate within each repetition to spread drift. Method:
//! docs/benchmarks.md.
//!
//! Here: the runs and their parameters. The lab session every section runs in is
//! `session.rs`, the report `report.rs`, the hairpin run `hairpin.rs`.
use std::{path::Path, process::Command};

use anyhow::{Context as _, bail};
use router_ebpf::status::Status;

use super::hairpin::HairpinRun;
use super::report::{Report, loadavg};
use super::session::{
    DATAPATH_DEFAULT, HAPROXY_ADDR, HAPROXY_PROC, Session, ensure_haproxy, pgrouter_bin, s,
    session, spawned_alive,
};
use crate::lab::{CLIENT_NS, PG_BIN, SUPERUSER, SUPERUSER_PASSWORD, VIP};

/// Run parameters (env overrides: `PGR_BENCH_SECONDS`, `PGR_BENCH_REPS`,
/// `PGR_BENCH_CLIENTS`, `PGR_BENCH_SCALE`, `PGR_BENCH_GENERIC`, `PGR_BENCH_HAIRPIN`).
#[derive(Clone, Debug)]
pub struct Params {
    pub seconds: u32,
    pub reps: u32,
    pub clients: u32,
    pub threads: u32,
    pub scale: u32,
    pub warmup_seconds: u32,
    /// Also measure pgrouter with `mode = "generic"` (`PGR_BENCH_GENERIC=0`: don't).
    pub generic_too: bool,
    /// Also measure the hairpin floor (`PGR_BENCH_HAIRPIN=0`: don't).
    pub hairpin: bool,
}

impl Params {
    pub fn from_env() -> anyhow::Result<Self> {
        let get = super::env_positive::<u32>;
        Ok(Params {
            seconds: get("PGR_BENCH_SECONDS", 8)?,
            reps: get("PGR_BENCH_REPS", 3)?,
            clients: get("PGR_BENCH_CLIENTS", 8)?,
            threads: 2,
            scale: get("PGR_BENCH_SCALE", 10)?,
            warmup_seconds: 3,
            generic_too: std::env::var("PGR_BENCH_GENERIC").as_deref() != Ok("0"),
            hairpin: std::env::var("PGR_BENCH_HAIRPIN").as_deref() != Ok("0"),
        })
    }

    pub fn targets(&self) -> Vec<Target> {
        Target::ALL
            .into_iter()
            .filter(|t| self.generic_too || *t != Target::PgrouterGeneric)
            .filter(|t| self.hairpin || *t != Target::Hairpin)
            .collect()
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Target {
    Direct,
    /// Direct, but through edge2 and a MAC-rewriting XDP_TX program: the lab's cost of the
    /// extra hop, without pgrouter (`hairpin.rs`).
    Hairpin,
    Haproxy,
    /// Native XDP (plus an XDP_PASS program on the veth peer, see `crate::lab::peer_xdp`).
    Pgrouter,
    PgrouterGeneric,
}

impl Target {
    pub const ALL: [Target; 5] = [
        Target::Direct,
        Target::Hairpin,
        Target::Haproxy,
        Target::Pgrouter,
        Target::PgrouterGeneric,
    ];
    pub fn name(self) -> &'static str {
        match self {
            Target::Direct => "direct",
            Target::Hairpin => "hairpin floor (generic XDP)",
            Target::Haproxy => "HAProxy",
            Target::Pgrouter => "pgrouter",
            Target::PgrouterGeneric => "pgrouter, generic XDP",
        }
    }
    /// pgrouter's `datapath.mode` for this target.
    fn xdp(self) -> Option<&'static str> {
        match self {
            Target::Pgrouter => Some("native"),
            Target::PgrouterGeneric => Some("generic"),
            _ => None,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    Persistent,
    Connect,
}

impl Mode {
    pub const ALL: [Mode; 2] = [Mode::Persistent, Mode::Connect];
    pub fn name(self) -> &'static str {
        match self {
            Mode::Persistent => "persistent connections (`-S`)",
            Mode::Connect => "new connection per transaction (`-S -C`)",
        }
    }
}

/// What one pgbench run printed.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Sample {
    pub tps: f64,
    pub latency_ms: f64,
    /// `-C` only: pgbench's "average connection time".
    pub conn_ms: Option<f64>,
    pub txns: u64,
    pub failed: u64,
}

/// Parses pgbench's (PostgreSQL 15) summary.
pub fn parse_pgbench(out: &str) -> anyhow::Result<Sample> {
    let num = |prefix: &str| -> Option<f64> {
        out.lines()
            .find_map(|l| l.trim().strip_prefix(prefix))
            .and_then(|r| r.split_whitespace().next())
            .and_then(|n| n.parse().ok())
    };
    let Some(tps) = num("tps = ") else {
        bail!("no `tps = ` line in pgbench's output:\n{out}");
    };
    Ok(Sample {
        tps,
        latency_ms: num("latency average = ").unwrap_or(f64::NAN),
        conn_ms: num("average connection time = "),
        txns: num("number of transactions actually processed: ").unwrap_or(0.0) as u64,
        failed: num("number of failed transactions: ").unwrap_or(0.0) as u64,
    })
}

/// pgbench in the client namespace: whether it succeeded, and its stdout and stderr
/// (progress lines included).
pub(super) fn pgbench_out(args: &[String]) -> anyhow::Result<(bool, String)> {
    let mut c = Command::new("ip");
    c.args(["netns", "exec", CLIENT_NS, &format!("{PG_BIN}/pgbench")])
        .args(args)
        .env("PGPASSWORD", SUPERUSER_PASSWORD)
        .env("PGCONNECT_TIMEOUT", "5");
    let out = c.output().context("running pgbench")?;
    Ok((
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    ))
}

pub(super) fn pgbench(args: &[String]) -> anyhow::Result<String> {
    let (ok, text) = pgbench_out(args)?;
    if !ok {
        bail!("pgbench {} failed:\n{text}", args.join(" "));
    }
    Ok(text)
}

fn addr_of(t: Target, leader_host: &str) -> (String, u16) {
    match t {
        Target::Direct | Target::Hairpin => (leader_host.to_string(), 5432),
        Target::Haproxy => (HAPROXY_ADDR.to_string(), 5000),
        Target::Pgrouter | Target::PgrouterGeneric => (VIP.to_string(), 5000),
    }
}

fn run_one(
    p: &Params,
    mode: Mode,
    t: Target,
    (leader_name, leader_host): (&str, &str),
    seconds: u32,
) -> anyhow::Result<Sample> {
    let (host, port) = addr_of(t, leader_host);
    let hairpin = if t == Target::Hairpin {
        Some(HairpinRun::start(leader_name)?)
    } else {
        None
    };
    let mut args = vec![
        s("-n"),
        s("-S"),
        s("-h"),
        host,
        s("-p"),
        port.to_string(),
        s("-U"),
        s(SUPERUSER),
        s("-c"),
        p.clients.to_string(),
        s("-j"),
        p.threads.to_string(),
        s("-T"),
        seconds.to_string(),
    ];
    if mode == Mode::Connect {
        args.push(s("-C"));
    }
    args.push(s("postgres"));
    let out = pgbench(&args)?;
    let sample = parse_pgbench(&out)?;
    if let Some(h) = hairpin {
        h.check(sample.txns)?;
    }
    Ok(sample)
}

/// The comparison's runs on a prepared session.
fn measure(sess: &mut Session, p: &Params) -> anyhow::Result<()> {
    let (lab, dir) = (sess.lab, sess.dir.clone());
    let leader = sess.leader.clone();
    let (pgr, report) = (&mut sess.pgr, &mut sess.report);
    report.load.0 = loadavg();
    let targets = p.targets();
    for &tg in &targets {
        if let Some(m) = tg.xdp() {
            pgr.ensure(m, report)?;
        }
        if tg == Target::Haproxy {
            ensure_haproxy(lab, &dir, report)?;
        }
        let w = run_one(
            p,
            Mode::Persistent,
            tg,
            (&leader.0, &leader.1),
            p.warmup_seconds,
        )?;
        println!("bench: warm-up {:<21} {:>8.0} tps", tg.name(), w.tps);
    }
    for rep in 0..p.reps as usize {
        for mode in Mode::ALL {
            for i in 0..targets.len() {
                let tg = targets[(i + rep) % targets.len()];
                if let Some(m) = tg.xdp() {
                    pgr.ensure(m, report)?;
                }
                if tg == Target::Haproxy {
                    ensure_haproxy(lab, &dir, report)?;
                }
                let smp = match run_one(p, mode, tg, (&leader.0, &leader.1), p.seconds) {
                    Err(_) if tg == Target::Haproxy && !spawned_alive(lab, HAPROXY_PROC) => {
                        ensure_haproxy(lab, &dir, report)?;
                        run_one(p, mode, tg, (&leader.0, &leader.1), p.seconds)?
                    }
                    r => r?,
                };
                println!(
                    "bench: rep {} {:<10} {:<21} {:>8.0} tps {:>7.3} ms{}",
                    rep + 1,
                    if mode == Mode::Persistent {
                        "persistent"
                    } else {
                        "connect"
                    },
                    tg.name(),
                    smp.tps,
                    smp.latency_ms,
                    if smp.failed > 0 {
                        format!(" ({} failed)", smp.failed)
                    } else {
                        String::new()
                    }
                );
                report.samples.push((mode, tg, smp));
            }
        }
    }
    report.load.1 = loadavg();
    // The leader must not have changed under the runs.
    sess.leader_note()
}

/// `pgrouter status --json` of the bench's pgrouter, read into its `Status` (empty when it
/// does not answer).
pub(super) fn pgrouter_status(dir: &Path) -> Status {
    Command::new(pgrouter_bin())
        .args(["status", "--json", "--socket"])
        .arg(dir.join("pgrouter.sock"))
        .output()
        .ok()
        .and_then(|o| serde_json::from_slice(&o.stdout).ok())
        .unwrap_or_default()
}

/// Every numeric leaf of `v` as (dotted path, value); array elements are named by their
/// `name` or `node` field when they have one, else by index.
pub(super) fn numeric_leaves(v: &serde_json::Value, path: &str, out: &mut Vec<(String, f64)>) {
    match v {
        serde_json::Value::Number(n) => {
            if let Some(f) = n.as_f64() {
                out.push((path.to_string(), f));
            }
        }
        serde_json::Value::Object(m) => {
            for (k, x) in m {
                let p = if path.is_empty() {
                    k.clone()
                } else {
                    format!("{path}.{k}")
                };
                numeric_leaves(x, &p, out);
            }
        }
        serde_json::Value::Array(a) => {
            for (i, x) in a.iter().enumerate() {
                let name = x
                    .get("name")
                    .or_else(|| x.get("node"))
                    .and_then(|n| n.as_str())
                    .map(str::to_string)
                    .unwrap_or_else(|| i.to_string());
                numeric_leaves(x, &format!("{path}[{name}]"), out);
            }
        }
        _ => {}
    }
}

/// What changed in pgrouter's counters between two status snapshots: the data path's global
/// counters and listener `listener`'s fields (`cluster/listener`, backends included), as
/// (name, after − before) for every field that moved.
pub(super) fn counter_deltas(
    before: &Status,
    after: &Status,
    listener: &str,
) -> Vec<(String, f64)> {
    let pick = |v: &Status| {
        let mut out: Vec<(String, f64)> = v
            .datapath
            .counters
            .iter()
            .map(|(k, n)| (k.clone(), *n as f64))
            .collect();
        if let Some(l) = v
            .listener(listener)
            .and_then(|l| serde_json::to_value(l).ok())
        {
            numeric_leaves(&l, listener, &mut out);
        }
        out
    };
    let b = pick(before);
    pick(after)
        .into_iter()
        .filter(|(k, _)| !k.ends_with(".port") && !k.ends_with(".maxconn"))
        .map(|(k, a)| {
            let was = b
                .iter()
                .find(|(n, _)| *n == k)
                .map(|(_, v)| *v)
                .unwrap_or(0.0);
            (k, a - was)
        })
        .filter(|(_, d)| *d != 0.0)
        .collect()
}

/// "native XDP on eth0" / "generic XDP on eth0" from pgrouter's status.
pub(super) fn xdp_mode(dir: &Path) -> String {
    let parts: Vec<String> = pgrouter_status(dir)
        .datapath
        .interfaces
        .iter()
        .map(|(name, mode)| format!("{mode} XDP on {name}"))
        .collect();
    if parts.is_empty() {
        "XDP".into()
    } else {
        parts.join(", ")
    }
}

/// The whole comparison in its own lab session.
pub fn run() -> anyhow::Result<Report> {
    let p = Params::from_env()?;
    session(&p, DATAPATH_DEFAULT, |sess| {
        measure(sess, &p)?;
        Ok(std::mem::take(&mut sess.report))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const OUT_C: &str = "pgbench (15.14 (Debian 15.14-0+deb12u1))
transaction type: <builtin: select only>
scaling factor: 10
query mode: simple
number of clients: 8
number of threads: 2
maximum number of tries: 1
duration: 10 s
number of transactions actually processed: 4321
number of failed transactions: 0 (0.000%)
latency average = 18.512 ms
average connection time = 9.201 ms
tps = 432.150000 (including reconnection times)
";

    #[test]
    fn parses_pgbench_15_summary() {
        let s = parse_pgbench(OUT_C).unwrap();
        assert_eq!(s.tps, 432.15);
        assert_eq!(s.latency_ms, 18.512);
        assert_eq!(s.conn_ms, Some(9.201));
        assert_eq!((s.txns, s.failed), (4321, 0));
        let p = OUT_C
            .replace(
                "average connection time = 9.201 ms\n",
                "initial connection time = 3.1 ms\n",
            )
            .replace(
                "(including reconnection times)",
                "(without initial connection time)",
            );
        assert_eq!(parse_pgbench(&p).unwrap().conn_ms, None);
        assert!(parse_pgbench("connection to server failed").is_err());
    }
}
