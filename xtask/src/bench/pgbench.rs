//! pgbench through the three paths a client can take to the Patroni primary, in one lab, in
//! one run: directly (`leader:5432`), through HAProxy with the seed's configuration
//! (`lab/haproxy.cfg.tmpl`, on edge2, `198.18.0.22:5000`) and through pgrouter (XDP on edge1,
//! `VIP:5000`) — plus the hairpin floor (`hairpin.rs`): direct, but over pgrouter's extra hop
//! with no router logic, which bounds what any edge-host router can reach in this lab.
//! Select-only (`pgbench -S`), with persistent connections and with a new connection per
//! transaction (`-C`); targets alternate within each repetition to spread drift. Method:
//! docs/benchmarks.md.
use std::{
    fmt::Write as _,
    fs,
    os::fd::AsRawFd as _,
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use router_status::Status;

use super::hairpin;
use crate::lab::{
    Lab,
    cluster::{CLIENT_NS, Host, PG_BIN, SUPERUSER, SUPERUSER_PASSWORD, VIP, host},
    util::wait_for,
};

/// Serialises whole lab sessions between engineers/tools (not only single lab actions).
pub const SESSION_LOCK: &str = "/run/pgrouter-lab-session.lock";
/// Config, pins, control socket of the benchmark's pgrouter and HAProxy.
const RUN_DIR: &str = "/run/pgrouter-bench";
pub(super) const HAPROXY_ADDR: &str = "198.18.0.22";
const HAPROXY_TMPL: &str = include_str!("../../../lab/haproxy.cfg.tmpl");
const PGROUTER_PROC: &str = "pgrouter-bench";
pub(super) const HAPROXY_PROC: &str = "haproxy-bench";

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
    /// Native XDP (plus an XDP_PASS program on the veth peer, see [`PeerXdpPass`]).
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

/// Results of the comparison.
#[derive(Clone, Debug, Default)]
pub struct Report {
    pub params: Option<Params>,
    /// (mode, target, sample) in run order.
    pub samples: Vec<(Mode, Target, Sample)>,
    pub leader: String,
    pub xdp_mode: String,
    /// /proc/loadavg (1, 5, 15 min) before and after the runs: other work on the machine.
    pub load: (String, String),
    pub notes: Vec<String>,
}

fn loadavg() -> String {
    fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

fn mean(v: &[f64]) -> f64 {
    if v.is_empty() {
        f64::NAN
    } else {
        v.iter().sum::<f64>() / v.len() as f64
    }
}

impl Report {
    fn of(&self, mode: Mode, target: Target) -> Vec<&Sample> {
        self.samples
            .iter()
            .filter(|(m, t, _)| *m == mode && *t == target)
            .map(|(_, _, s)| s)
            .collect()
    }

    /// Mean TPS of a mode/target.
    pub fn tps(&self, mode: Mode, target: Target) -> f64 {
        mean(
            &self
                .of(mode, target)
                .iter()
                .map(|s| s.tps)
                .collect::<Vec<_>>(),
        )
    }

    /// The markdown section for BENCHMARKS.md.
    pub fn markdown(&self) -> String {
        let mut md = String::new();
        let _ = writeln!(md, "## pgbench: direct vs HAProxy vs pgrouter\n");
        if let Some(p) = &self.params {
            let _ = writeln!(
                md,
                "Patroni lab (`cargo xtask lab`), PostgreSQL 15, `pgbench -i -s {}`, leader {}; pgbench from `pgrlab-client`: \
                 `pgbench -n -S -c {} -j {} -T {}` (and the same with `-C`), {} repetitions per target and mode, targets \
                 alternating in rotated order; a {} s warm-up run per target is not counted. **direct** = `{}:5432`, \
                 **HAProxy** = the seed's configuration (`lab/haproxy.cfg.tmpl`) on edge2, `{HAPROXY_ADDR}:5000`, \
                 **pgrouter** = `pgrouter run` on edge1 ({}{}), `{VIP}:5000`{}. Everything (client, proxies, three \
                 PostgreSQL nodes, etcd) shares this machine's cores, so the figures compare paths, not hardware. \
                 Method: [docs/benchmarks.md](docs/benchmarks.md).\n",
                p.scale,
                self.leader.split(' ').next().unwrap_or("?"),
                p.clients,
                p.threads,
                p.seconds,
                p.reps,
                p.warmup_seconds,
                self.leader.split(' ').nth(1).unwrap_or("?"),
                self.xdp_mode,
                if self.xdp_mode.starts_with("native") {
                    "; an XDP_PASS program on the root-side veth peer, see the method"
                } else {
                    ""
                },
                if p.generic_too {
                    "; **pgrouter, generic XDP** = the same with `mode = \"generic\"` (pgrouter is \
                     restarted with the other mode between runs as the rotation needs)"
                } else {
                    ""
                },
            );
            if p.hairpin {
                let _ = writeln!(
                    md,
                    "**hairpin floor** = direct to `{}:5432`, but the client's and the leader's \
                     neighbour entries for each other point at edge2, where a generic-XDP program \
                     rewrites the two MAC addresses and bounces the frame (XDP_TX; \
                     `xtask/src/bench/hairpin.rs`): the same extra hop as pgrouter's (every packet \
                     crosses the bridge twice and an edge host's veth) with no NAT, no conntrack, no \
                     lookups — the floor for any router on an edge host in this lab. Each run checks \
                     that edge2's own IP stack did not carry the traffic.\n",
                    self.leader.split(' ').nth(1).unwrap_or("?"),
                );
            }
        }
        for mode in Mode::ALL {
            if self.of(mode, Target::Direct).is_empty() {
                continue;
            }
            let _ = writeln!(md, "### {}\n", mode.name());
            let conn = mode == Mode::Connect;
            let _ = writeln!(
                md,
                "| target | TPS (mean) | runs | mean latency ms{} | vs direct |\n|---|---:|---|---:|{}---:|",
                if conn { " | connection ms" } else { "" },
                if conn { "---:|" } else { "" }
            );
            let direct = self.tps(mode, Target::Direct);
            for t in Target::ALL {
                let s = self.of(mode, t);
                if s.is_empty() {
                    continue;
                }
                let runs: Vec<String> = s.iter().map(|s| format!("{:.0}", s.tps)).collect();
                let lat = mean(&s.iter().map(|s| s.latency_ms).collect::<Vec<_>>());
                let conn_ms = mean(&s.iter().filter_map(|s| s.conn_ms).collect::<Vec<_>>());
                let failed: u64 = s.iter().map(|s| s.failed).sum();
                let _ = writeln!(
                    md,
                    "| {}{} | {:.0} | {} | {:.3}{} | {:.3}× |",
                    t.name(),
                    if failed > 0 {
                        format!(" ({failed} failed)")
                    } else {
                        String::new()
                    },
                    self.tps(mode, t),
                    runs.join(", "),
                    lat,
                    if conn {
                        format!(" | {conn_ms:.3}")
                    } else {
                        String::new()
                    },
                    self.tps(mode, t) / direct
                );
            }
            let r = |a: Target, b: Target| self.tps(mode, a) / self.tps(mode, b);
            let _ = writeln!(
                md,
                "\nRatios (TPS): pgrouter/direct **{:.3}×**, pgrouter/HAProxy **{:.3}×**, HAProxy/direct {:.3}×.\n",
                r(Target::Pgrouter, Target::Direct),
                r(Target::Pgrouter, Target::Haproxy),
                r(Target::Haproxy, Target::Direct),
            );
            if !self.of(mode, Target::PgrouterGeneric).is_empty() {
                let _ = writeln!(
                    md,
                    "Generic XDP: pgrouter/direct {:.3}×, pgrouter/HAProxy {:.3}×.\n",
                    r(Target::PgrouterGeneric, Target::Direct),
                    r(Target::PgrouterGeneric, Target::Haproxy),
                );
            }
            if !self.of(mode, Target::Hairpin).is_empty() {
                let _ = writeln!(
                    md,
                    "Hairpin floor/direct **{:.3}×**: what the extra hop through an edge host costs in \
                     this lab with no router logic at all. pgrouter/floor: {:.3}× native{}.\n",
                    r(Target::Hairpin, Target::Direct),
                    r(Target::Pgrouter, Target::Hairpin),
                    if self.of(mode, Target::PgrouterGeneric).is_empty() {
                        String::new()
                    } else {
                        format!(
                            ", **{:.3}×** generic (same XDP mode as the floor)",
                            r(Target::PgrouterGeneric, Target::Hairpin)
                        )
                    },
                );
            }
        }
        if !self.load.0.is_empty() {
            let _ = writeln!(
                md,
                "Load average (1/5/15 min) before the runs: {}; after: {}.\n",
                self.load.0, self.load.1
            );
        }
        for n in &self.notes {
            let _ = writeln!(md, "Note: {n}\n");
        }
        md
    }
}

/// Holds `SESSION_LOCK` (flock, exclusive) until dropped.
pub struct SessionLock(#[allow(dead_code)] fs::File);

impl SessionLock {
    pub fn acquire() -> anyhow::Result<Self> {
        let f = fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(SESSION_LOCK)
            .with_context(|| format!("open {SESSION_LOCK}"))?;
        // SAFETY: flock on an fd we own.
        if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
            println!("bench: waiting for the lab session lock {SESSION_LOCK}");
            // SAFETY: as above.
            if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX) } != 0 {
                bail!("flock {SESSION_LOCK}: {}", std::io::Error::last_os_error());
            }
        }
        Ok(SessionLock(f))
    }
}

/// An XDP program returning XDP_PASS, attached in driver mode to a root-side veth peer for
/// as long as this value lives (a BPF link, detached when its fd closes).
///
/// Why: frames a native XDP program sends with XDP_TX on a veth go to the peer's NAPI ring.
/// With only GRO enabling that NAPI (the lab's set-up), they sat there until the peer's
/// next NAPI run, in the lab about once a second (measured: 1–4 pgbench transactions per
/// second through pgrouter). With an XDP program on the peer they are processed at once —
/// as on a real NIC, where the wire has no such queue. Raw `bpf(2)`: two instructions, no
/// object file, no dependency.
pub struct PeerXdpPass {
    _link: std::os::fd::OwnedFd,
    _prog: std::os::fd::OwnedFd,
}

impl PeerXdpPass {
    pub fn attach(ifname: &str) -> anyhow::Result<Self> {
        // r0 = XDP_PASS; exit
        let insns = [
            u64::from_le_bytes([0xb7, 0, 0, 0, 2, 0, 0, 0]),
            u64::from_le_bytes([0x95, 0, 0, 0, 0, 0, 0, 0]),
        ];
        let prog = hairpin::load("bench_xdp", &insns)?;
        let link = hairpin::attach(&prog, None, ifname, hairpin::XDP_FLAGS_DRV_MODE)?;
        Ok(PeerXdpPass {
            _link: link,
            _prog: prog,
        })
    }
}

/// The hairpin floor for one run (see `hairpin.rs`): the program on edge2's eth0 (generic
/// XDP) and the client's and the leader's neighbour entries for each other pointing at
/// edge2. Undone on drop. Checked: edge2's own IP stack must not see the traffic.
struct HairpinRun {
    _link: std::os::fd::OwnedFd,
    _prog: std::os::fd::OwnedFd,
    /// (namespace, address) neighbour entries to remove again.
    neigh: Vec<(String, String)>,
    in_receives: u64,
}

/// A counter of a namespace's `/proc/net/snmp` or `/proc/net/netstat` (`file`), e.g.
/// (`snmp`, `Ip:`, `InReceives`) or (`netstat`, `TcpExt:`, `TCPSynRetrans`).
pub(super) fn proc_net_counter(
    ns: &str,
    file: &str,
    prefix: &str,
    name: &str,
) -> anyhow::Result<u64> {
    let path = format!("/proc/net/{file}");
    let out = Command::new("ip")
        .args(["netns", "exec", ns, "cat", &path])
        .output()
        .with_context(|| format!("reading {ns}'s {path}"))?;
    let text = String::from_utf8_lossy(&out.stdout);
    let mut rows = text.lines().filter(|l| l.starts_with(prefix));
    let (Some(names), Some(values)) = (rows.next(), rows.next()) else {
        bail!("no {prefix} lines in {ns}'s {path}");
    };
    names
        .split_whitespace()
        .zip(values.split_whitespace())
        .find(|(n, _)| *n == name)
        .and_then(|(_, v)| v.parse().ok())
        .with_context(|| format!("no {prefix} {name} in {ns}'s {path}"))
}

/// `Ip: InReceives` of edge2's namespace: packets its IP stack took in.
fn edge2_in_receives() -> anyhow::Result<u64> {
    proc_net_counter("pgrlab-edge2", "snmp", "Ip:", "InReceives")
}

impl HairpinRun {
    fn start(leader: &str) -> anyhow::Result<Self> {
        let edge = host("edge2")?;
        let client = host("client")?;
        let leader = host(leader)?;
        let ip = |h: Host| -> anyhow::Result<[u8; 4]> {
            Ok(h.addr.parse::<std::net::Ipv4Addr>()?.octets())
        };
        let routes = [
            (ip(leader)?, hairpin::parse_mac(&leader.mac())?),
            (ip(client)?, hairpin::parse_mac(&client.mac())?),
        ];
        let prog = hairpin::load(
            "bench_hairpin",
            &hairpin::program(hairpin::parse_mac(&edge.mac())?, &routes),
        )?;
        let link = hairpin::attach(&prog, Some(&edge.ns()), "eth0", hairpin::XDP_FLAGS_SKB_MODE)?;
        let mut run = HairpinRun {
            _link: link,
            _prog: prog,
            neigh: Vec::new(),
            in_receives: edge2_in_receives()?,
        };
        for (at, to) in [(client, leader), (leader, client)] {
            run.neigh.push((at.ns(), to.addr.to_string()));
            let st = Command::new("ip")
                .args(["-n", &at.ns(), "neigh", "replace", to.addr, "lladdr"])
                .arg(edge.mac())
                .args(["nud", "permanent", "dev", "eth0"])
                .status()?;
            anyhow::ensure!(st.success(), "ip -n {} neigh replace {}", at.ns(), to.addr);
        }
        Ok(run)
    }

    /// Fails when edge2's IP stack took in a share of the run's packets: then the kernel,
    /// not the hairpin, carried them and the row would not be the floor.
    fn check(&self, txns: u64) -> anyhow::Result<()> {
        let seen = edge2_in_receives()?.saturating_sub(self.in_receives);
        // Carried by the kernel, a transaction is at least two packets (ten or more with
        // `-C`); the allowance is for edge2's own traffic (HAProxy's checks).
        anyhow::ensure!(
            seen < 200 + txns / 2,
            "hairpin run: edge2's IP stack took in {seen} packets for {txns} transactions"
        );
        Ok(())
    }
}

impl Drop for HairpinRun {
    fn drop(&mut self) {
        for (ns, addr) in &self.neigh {
            let _ = Command::new("ip")
                .args(["-n", ns, "neigh", "del", addr, "dev", "eth0"])
                .status();
        }
    }
}

pub(super) fn s(v: &str) -> String {
    v.to_string()
}

/// The `[datapath]` lines of the pgbench comparison and the flood beyond interfaces, mode and
/// pins: the lab's default SNAT range.
pub(super) const DATAPATH_DEFAULT: &str = "snat_ports = \"40000-59999\"";

fn pgrouter_config(dir: &Path, xdp_mode: &str, datapath: &str) -> String {
    let mut nodes = String::new();
    for (name, ip) in [
        ("pg1", "198.18.0.11"),
        ("pg2", "198.18.0.12"),
        ("pg3", "198.18.0.13"),
    ] {
        let _ = write!(
            nodes,
            "[[cluster.node]]\nname = \"{name}\"\nhost = \"{ip}\"\n\n"
        );
    }
    format!(
        r#"# pgrouter for `cargo xtask bench` (xtask/src/bench/pgbench.rs): the seed's listeners.
[datapath]
interfaces = ["eth0"]
mode = "{xdp_mode}"
pin_path = "{dir}/bpf"
{datapath}

[control]
socket = "{dir}/pgrouter.sock"
metrics = ""

[[cluster]]
name = "pg"
checks = "patroni"

{nodes}[[cluster.listener]]
name = "PG1"
vip = "{VIP}"
port = 5000
kind = "primary"
maxconn = 100

[[cluster.listener]]
name = "PG1_ro"
vip = "{VIP}"
port = 5001
kind = "replica"
fallback = "primary"
lag = "10MB"
maxconn = 100
"#,
        dir = dir.display()
    )
}

/// `target/release/pgrouter`, or the build named by `PGR_BENCH_PGROUTER` (e.g. one built from
/// an earlier commit, to measure the lab sections before a change).
fn pgrouter_bin() -> PathBuf {
    match std::env::var_os("PGR_BENCH_PGROUTER") {
        Some(p) => PathBuf::from(p),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/release/pgrouter"),
    }
}

/// Waits until `addr:port` reaches the primary `need` times in a row (every 250 ms).
fn wait_primary(lab: &Lab, what: &str, addr: &str, port: u16, need: u32) -> anyhow::Result<()> {
    let mut good = 0;
    wait_for(
        what,
        Duration::from_secs(40),
        Duration::from_millis(250),
        || {
            let ok = lab
                .psql_port(addr, port, "SELECT NOT pg_is_in_recovery()")
                .map(|s| s == "t")
                .unwrap_or(false);
            good = if ok { good + 1 } else { 0 };
            Ok((good >= need).then_some(()))
        },
    )
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

fn pgbench(args: &[String]) -> anyhow::Result<String> {
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

/// The benchmark's pgrouter on edge1, restarted when another XDP mode is needed.
pub(super) struct Pgr<'a> {
    lab: &'a Lab,
    dir: PathBuf,
    /// Its config's `[datapath]` lines beyond interfaces, mode and pins.
    datapath: &'static str,
    current: Option<&'static str>,
    peer: Option<PeerXdpPass>,
}

impl Pgr<'_> {
    pub(super) fn ensure(&mut self, mode: &'static str, report: &mut Report) -> anyhow::Result<()> {
        if self.current == Some(mode) {
            return Ok(());
        }
        let t = Instant::now();
        let cfg = self.dir.join("pgrouter.toml");
        if self.current.take().is_some() {
            self.lab.kill_proc(PGROUTER_PROC, libc::SIGTERM)?;
            detach(self.lab, &cfg);
        }
        self.peer = None;
        fs::write(&cfg, pgrouter_config(&self.dir, mode, self.datapath))?;
        let bin = pgrouter_bin();
        let out = Command::new(&bin)
            .args(["check-config"])
            .arg(&cfg)
            .output()
            .with_context(|| format!("running {}", bin.display()))?;
        anyhow::ensure!(
            out.status.success(),
            "pgrouter check-config {}:\n{}{}",
            cfg.display(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        if mode == "native" {
            self.peer = Some(PeerXdpPass::attach("pgrlab-edge1")?);
        }
        self.lab.spawn(
            "edge1",
            PGROUTER_PROC,
            &[
                bin.display().to_string(),
                s("run"),
                s("-c"),
                cfg.display().to_string(),
            ],
        )?;
        wait_primary(
            self.lab,
            "pgrouter VIP:5000 to reach the primary",
            VIP,
            5000,
            4,
        )
        .with_context(|| lab_log(self.lab, PGROUTER_PROC))?;
        let attached = xdp_mode(&self.dir);
        println!("bench: pgrouter ({attached}) ready in {:.1?}", t.elapsed());
        if !attached.starts_with(mode) {
            report.notes.push(format!(
                "pgrouter asked for {mode} XDP runs with {attached}"
            ));
        }
        if mode == "native" {
            report.xdp_mode = attached;
        }
        self.current = Some(mode);
        Ok(())
    }
}

/// HAProxy with the seed's config on edge2 (binds *:5000, so 198.18.0.22:5000); waits until
/// its checks have marked the replicas down.
fn start_haproxy(lab: &Lab, dir: &Path) -> anyhow::Result<()> {
    let hcfg = dir.join("haproxy.cfg");
    fs::write(&hcfg, HAPROXY_TMPL)?;
    lab.spawn(
        "edge2",
        HAPROXY_PROC,
        &[s("haproxy"), s("-db"), s("-f"), hcfg.display().to_string()],
    )?;
    wait_primary(
        lab,
        "HAProxy 198.18.0.22:5000 to reach the primary",
        HAPROXY_ADDR,
        5000,
        6,
    )
    .with_context(|| lab_log(lab, HAPROXY_PROC))
}

/// Whether a process started by `lab.spawn` under `name` still runs.
pub(super) fn spawned_alive(lab: &Lab, name: &str) -> bool {
    lab.spawned()
        .iter()
        .any(|(n, pid)| n == name && crate::lab::util::pid_alive(*pid))
}

/// Restarts HAProxy if something killed it (e.g. `cargo xtask setup`, which runs
/// `pkill -x haproxy` for Debian's service, from another shell) and says so in the report.
pub(super) fn ensure_haproxy(lab: &Lab, dir: &Path, report: &mut Report) -> anyhow::Result<()> {
    if spawned_alive(lab, HAPROXY_PROC) {
        return Ok(());
    }
    println!("bench: HAProxy is gone (killed from outside?); restarting it");
    report.notes.push(
        "HAProxy was killed from outside during the runs (e.g. by `cargo xtask setup` in \
         another shell: it runs `pkill -x haproxy`) and restarted; a run it broke was repeated"
            .into(),
    );
    start_haproxy(lab, dir)
}

/// `pgrouter detach -c CFG` in edge1: unpins the XDP link and maps (they outlive a
/// SIGTERMed controller by design).
fn detach(lab: &Lab, cfg: &Path) {
    if cfg.exists() && Path::new("/run/netns/pgrlab-edge1").exists() {
        let _ = lab.exec(
            "edge1",
            &[
                pgrouter_bin().display().to_string(),
                s("detach"),
                s("-c"),
                cfg.display().to_string(),
            ],
        );
    }
}

/// A lab session for one bench section (`session`): pgrouter (native XDP, VIP:5000) on
/// edge1, HAProxy (seed config) on edge2, pgbench's tables initialised on the leader.
pub(super) struct Session<'a> {
    pub lab: &'a Lab,
    pub dir: PathBuf,
    /// (name, address) of the Patroni leader when the session started.
    pub leader: (String, String),
    pub pgr: Pgr<'a>,
    /// Notes and the attached XDP mode, filled as pgrouter is (re)started.
    pub report: Report,
}

impl Session<'_> {
    /// Restarts HAProxy if something killed it (noted in the report).
    pub fn ensure_haproxy(&mut self) -> anyhow::Result<()> {
        ensure_haproxy(self.lab, &self.dir, &mut self.report)
    }

    /// A note if the leader changed since the session started (figures not comparable).
    pub fn leader_note(&mut self) -> anyhow::Result<()> {
        let after = self.lab.leader()?;
        if after.name != self.leader.0 {
            self.report.notes.push(format!(
                "the leader changed during the runs ({} → {}): figures are not comparable",
                self.leader.0, after.name
            ));
        }
        Ok(())
    }
}

/// Starts pgrouter (edge1, VIP:5000, `datapath` lines in its config) and HAProxy (edge2) on a healthy lab and
/// initialises pgbench's tables. The caller tears down.
fn prepare<'a>(
    lab: &'a Lab,
    p: &Params,
    dir: &Path,
    datapath: &'static str,
) -> anyhow::Result<Session<'a>> {
    let leader = lab.leader()?;
    // pgrouter on edge1, VIP added by hand (no VRRP in this benchmark).
    let pins = dir.join("bpf");
    fs::create_dir_all(&pins)?;
    // bpffs in the root mount namespace: `ip netns exec` gives pgrouter a private one.
    let mounted = fs::read_to_string("/proc/mounts")
        .unwrap_or_default()
        .lines()
        .any(|l| l.split(' ').nth(1) == Some(&pins.display().to_string()));
    if !mounted {
        let st = Command::new("mount")
            .args(["-t", "bpf", "bpf"])
            .arg(&pins)
            .status()?;
        anyhow::ensure!(st.success(), "mount bpffs on {}", pins.display());
    }
    let code = lab.exec(
        "edge1",
        &[
            s("ip"),
            s("addr"),
            s("add"),
            format!("{VIP}/32"),
            s("dev"),
            s("eth0"),
        ],
    )?;
    anyhow::ensure!(code == 0, "ip addr add {VIP}/32 in edge1 failed");
    let mut sess = Session {
        lab,
        dir: dir.to_path_buf(),
        leader: (leader.name.clone(), leader.host.clone()),
        pgr: Pgr {
            lab,
            dir: dir.to_path_buf(),
            datapath,
            current: None,
            peer: None,
        },
        report: Report {
            params: Some(p.clone()),
            leader: format!("{} {}", leader.name, leader.host),
            ..Report::default()
        },
    };
    sess.pgr.ensure("native", &mut sess.report)?;

    start_haproxy(lab, dir)?;
    let t = Instant::now();
    pgbench(&[
        s("-i"),
        s("-q"),
        s("-s"),
        p.scale.to_string(),
        s("-h"),
        leader.host.clone(),
        s("-U"),
        s(SUPERUSER),
        s("postgres"),
    ])?;
    println!(
        "bench: pgbench -i -s {} on {} in {:.1?}",
        p.scale,
        leader.name,
        t.elapsed()
    );
    Ok(sess)
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

fn lab_log(lab: &Lab, name: &str) -> String {
    let path = lab.dir.join(format!("{name}.log"));
    let text = fs::read_to_string(&path).unwrap_or_default();
    let tail: Vec<&str> = text.lines().rev().take(30).collect();
    format!(
        "last lines of {}:\n{}",
        path.display(),
        tail.into_iter().rev().collect::<Vec<_>>().join("\n")
    )
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
fn xdp_mode(dir: &Path) -> String {
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

/// Stops what `measure` started and the lab; every step is attempted.
fn teardown(lab: &Lab, dir: &Path) -> Vec<String> {
    let mut errs = Vec::new();
    // Keep the proxies' logs for a post-mortem (the lab dir goes with `lab down`).
    let keep = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/bench");
    let _ = fs::create_dir_all(&keep);
    for name in [HAPROXY_PROC, PGROUTER_PROC] {
        let _ = fs::copy(
            lab.dir.join(format!("{name}.log")),
            keep.join(format!("{name}.log")),
        );
    }
    for name in [HAPROXY_PROC, PGROUTER_PROC] {
        if let Err(e) = lab.kill_proc(name, libc::SIGTERM) {
            errs.push(format!("stopping {name}: {e:#}"));
        }
    }
    detach(lab, &dir.join("pgrouter.toml"));
    let pins = dir.join("bpf");
    if fs::read_to_string("/proc/mounts")
        .unwrap_or_default()
        .lines()
        .any(|l| l.split(' ').nth(1) == Some(&pins.display().to_string()))
    {
        let _ = Command::new("umount").arg(&pins).status();
    }
    if let Err(e) = lab.down() {
        errs.push(format!("lab down: {e:#}"));
    }
    if let Err(e) = fs::remove_dir_all(dir)
        && e.kind() != std::io::ErrorKind::NotFound
    {
        errs.push(format!("removing {}: {e}", dir.display()));
    }
    errs
}

/// Builds `target/release/pgrouter`, takes the session lock, brings the lab up, prepares a
/// [`Session`] (pgrouter with `datapath` lines in its config, HAProxy, pgbench tables), runs `f` on it and tears
/// everything down (also on error). Every lab section of the bench goes through here.
pub(super) fn session<T>(
    p: &Params,
    datapath: &'static str,
    f: impl FnOnce(&mut Session) -> anyhow::Result<T>,
) -> anyhow::Result<T> {
    if std::env::var_os("PGR_BENCH_PGROUTER").is_none() {
        let st = Command::new("cargo")
            .args(["build", "--release", "-p", "router-user", "--bins"])
            .status()
            .context("cargo build")?;
        anyhow::ensure!(st.success(), "cargo build --release -p router-user failed");
    }
    println!("bench: pgrouter = {}", pgrouter_bin().display());

    let _lock = SessionLock::acquire()?;
    let lab = Lab::default();
    let dir = PathBuf::from(RUN_DIR);
    let t = Instant::now();
    let res = (|| -> anyhow::Result<T> {
        lab.up(Duration::from_secs(180))?;
        lab.wait_healthy(2, Duration::from_secs(60))?;
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir)?;
        let mut sess = prepare(&lab, p, &dir, datapath)?;
        f(&mut sess)
    })();
    let errs = teardown(&lab, &dir);
    println!("bench: lab session took {:.0?}", t.elapsed());
    let v = res?;
    if !errs.is_empty() {
        bail!("teardown: {}", errs.join("; "));
    }
    Ok(v)
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

    #[test]
    fn markdown_has_ratios_per_mode() {
        let mut r = Report {
            params: Some(Params {
                seconds: 10,
                reps: 2,
                clients: 8,
                threads: 2,
                scale: 10,
                warmup_seconds: 3,
                generic_too: true,
                hairpin: true,
            }),
            leader: "pg1 198.18.0.11".into(),
            xdp_mode: "native XDP on eth0".into(),
            ..Report::default()
        };
        for (mode, base) in [(Mode::Persistent, 10_000.0), (Mode::Connect, 400.0)] {
            for (t, f) in [
                (Target::Direct, 1.0),
                (Target::Haproxy, 0.8),
                (Target::Pgrouter, 0.97),
            ] {
                for _ in 0..2 {
                    r.samples.push((
                        mode,
                        t,
                        Sample {
                            tps: base * f,
                            latency_ms: 1.0 / f,
                            conn_ms: (mode == Mode::Connect).then_some(2.0),
                            txns: 1,
                            failed: 0,
                        },
                    ));
                }
            }
        }
        let md = r.markdown();
        assert!(md.contains("| pgrouter | 9700 | 9700, 9700 |"), "{md}");
        assert!(md.contains("pgrouter/direct **0.970×**"), "{md}");
        assert!(md.contains("pgrouter/HAProxy **1.212×**"), "{md}");
        assert!(md.contains("HAProxy/direct 0.800×"), "{md}");
        assert_eq!(md.matches("### ").count(), 2);
        assert!(md.contains("| 2.000 |"), "connection time column: {md}");
        assert!(
            pgrouter_config(Path::new(RUN_DIR), "generic", DATAPATH_DEFAULT)
                .contains("pin_path = \"/run/pgrouter-bench/bpf\"")
        );
    }
}
