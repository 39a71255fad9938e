//! The lab itself: network, etcd, three Patroni/PostgreSQL nodes, and the
//! actions that scenario tests and the demo use.
use super::util::{
    cmd, cmdline, http, netns_pids, ns_cmd, ns_sysctl, pid_alive, pidfile_alive, proc_state, run,
    run_quiet, show, signal, tail, wait_for, wait_gone,
};
use anyhow::{Context, Result, anyhow, bail};
use serde_json::Value;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Lab state: configs, data dirs, logs, pidfiles. Removed by `down`.
pub const LAB_DIR: &str = "/var/lib/pgrouter-lab";
/// Virtualenv (system python3) holding Patroni. Kept across `down`.
pub const VENV: &str = "/opt/pgrouter-lab/venv";
pub const PG_BIN: &str = "/usr/lib/postgresql/15/bin";
pub const BRIDGE: &str = "pgrlab-br0";
/// Root-namespace address on the bridge (lets the host reach the lab).
pub const BRIDGE_ADDR: &str = "198.18.0.1";
pub const SUBNET: &str = "198.18.0.0/24";
pub const PREFIX_LEN: u8 = 24;
/// The floating address pgrouter will own (not configured by the lab).
pub const VIP: &str = "198.18.0.100";
pub const SUPERUSER: &str = "postgres";
pub const SUPERUSER_PASSWORD: &str = "pgrouter";
pub const REPLICATION_USER: &str = "replicator";
pub const REPLICATION_PASSWORD: &str = "replicator";
pub const ETCD_ADDR: &str = "198.18.0.5";
/// Namespace used for REST calls and client commands.
pub const CLIENT_NS: &str = "pgrlab-client";
const TEMPLATE: &str = include_str!("../../../lab/patroni.yml.tmpl");

/// One lab host = one network namespace `pgrlab-<name>` with `eth0` at `addr`.
#[derive(Clone, Copy, Debug)]
pub struct Host {
    pub name: &'static str,
    pub addr: &'static str,
}

impl Host {
    /// Namespace name, e.g. `pgrlab-pg1`.
    pub fn ns(&self) -> String {
        format!("pgrlab-{}", self.name)
    }
    /// Root-namespace end of this host's veth pair (enslaved to the bridge).
    pub fn host_veth(&self) -> String {
        format!("pgrlab-{}", self.name)
    }
    /// Deterministic MAC of eth0 in the namespace: 02:00:c6:12:00:<last octet>.
    pub fn mac(&self) -> String {
        let last: u8 = self.addr.rsplit('.').next().unwrap().parse().unwrap();
        format!("02:00:c6:12:00:{last:02x}")
    }
}

pub const HOSTS: [Host; 7] = [
    Host {
        name: "etcd",
        addr: "198.18.0.5",
    },
    Host {
        name: "pg1",
        addr: "198.18.0.11",
    },
    Host {
        name: "pg2",
        addr: "198.18.0.12",
    },
    Host {
        name: "pg3",
        addr: "198.18.0.13",
    },
    Host {
        name: "edge1",
        addr: "198.18.0.21",
    },
    Host {
        name: "edge2",
        addr: "198.18.0.22",
    },
    Host {
        name: "client",
        addr: "198.18.0.30",
    },
];
pub const PG_NODES: [&str; 3] = ["pg1", "pg2", "pg3"];
pub const EDGES: [&str; 2] = ["edge1", "edge2"];

pub fn host(name: &str) -> Result<Host> {
    HOSTS
        .iter()
        .copied()
        .find(|h| h.name == name)
        .ok_or_else(|| anyhow!("unknown lab host {name:?}"))
}

/// Accepts `2`, `pg2` or `pgrlab-pg2`; returns `pg2`.
pub fn node_name(arg: &str) -> Result<&'static str> {
    let a = arg.trim_start_matches("pgrlab-");
    let a = if a.chars().all(|c| c.is_ascii_digit()) {
        format!("pg{a}")
    } else {
        a.to_string()
    };
    PG_NODES
        .iter()
        .copied()
        .find(|n| *n == a)
        .ok_or_else(|| anyhow!("unknown PostgreSQL node {arg:?} (expected 1..3 or pg1..pg3)"))
}

/// Accepts `edge1` or `pgrlab-edge1`; returns the namespace name.
pub fn ns_name(arg: &str) -> Result<String> {
    let a = arg.trim_start_matches("pgrlab-");
    Ok(host(a)?.ns())
}

/// Patroni timing, written into the DCS at bootstrap.
#[derive(Clone, Copy, Debug)]
pub struct Timing {
    pub ttl: u32,
    pub loop_wait: u32,
    pub retry_timeout: u32,
}

impl Default for Timing {
    fn default() -> Self {
        Timing {
            ttl: 20,
            loop_wait: 1,
            retry_timeout: 4,
        }
    }
}

impl Timing {
    /// Defaults overridden by PGRLAB_TTL, PGRLAB_LOOP_WAIT, PGRLAB_RETRY_TIMEOUT.
    pub fn from_env() -> Result<Self> {
        let mut t = Timing::default();
        let get = |k: &str, d: u32| -> Result<u32> {
            match std::env::var(k) {
                Ok(v) => v
                    .trim()
                    .parse()
                    .with_context(|| format!("{k}={v:?} is not a number")),
                Err(_) => Ok(d),
            }
        };
        t.ttl = get("PGRLAB_TTL", t.ttl)?;
        t.loop_wait = get("PGRLAB_LOOP_WAIT", t.loop_wait)?;
        t.retry_timeout = get("PGRLAB_RETRY_TIMEOUT", t.retry_timeout)?;
        Ok(t)
    }

    pub fn validate(&self) -> Result<()> {
        if self.ttl < 20 {
            bail!("ttl {} < 20 (Patroni's minimum)", self.ttl);
        }
        if self.loop_wait < 1 || self.retry_timeout < 3 {
            bail!("loop_wait must be >= 1 and retry_timeout >= 3");
        }
        if self.loop_wait + 2 * self.retry_timeout > self.ttl {
            bail!(
                "loop_wait + 2*retry_timeout ({}) must not exceed ttl ({})",
                self.loop_wait + 2 * self.retry_timeout,
                self.ttl
            );
        }
        Ok(())
    }
}

/// One member as reported by Patroni's `GET /cluster`.
#[derive(Clone, Debug)]
pub struct Member {
    pub name: String,
    pub host: String,
    /// `leader`, `replica`, `sync_standby`, …
    pub role: String,
    /// `running`, `streaming`, `stopped`, `starting`, …
    pub state: String,
    pub timeline: Option<u64>,
    /// Bytes behind the leader (received / replayed), when known.
    pub receive_lag: Option<u64>,
    pub replay_lag: Option<u64>,
}

impl Member {
    pub fn is_leader(&self) -> bool {
        self.role == "leader" || self.role == "standby_leader"
    }
    pub fn is_replica(&self) -> bool {
        !self.is_leader()
    }
}

#[derive(Clone, Debug, Default)]
pub struct ClusterState {
    pub members: Vec<Member>,
}

impl ClusterState {
    pub fn leader(&self) -> Option<&Member> {
        self.members
            .iter()
            .find(|m| m.is_leader() && m.state == "running")
    }
    pub fn member(&self, name: &str) -> Option<&Member> {
        self.members.iter().find(|m| m.name == name)
    }
    pub fn streaming_replicas(&self) -> Vec<&Member> {
        self.members
            .iter()
            .filter(|m| m.is_replica() && m.state == "streaming")
            .collect()
    }
    pub fn summary(&self) -> String {
        let mut s = format!(
            "{:<5} {:<13} {:<12} {:<10} {:>3} {:>12} {:>12}\n",
            "name", "host", "role", "state", "TL", "receive_lag", "replay_lag"
        );
        for m in &self.members {
            let o = |v: Option<u64>| v.map(|x| x.to_string()).unwrap_or_else(|| "-".into());
            s.push_str(&format!(
                "{:<5} {:<13} {:<12} {:<10} {:>3} {:>12} {:>12}\n",
                m.name,
                m.host,
                m.role,
                m.state,
                o(m.timeline),
                o(m.receive_lag),
                o(m.replay_lag)
            ));
        }
        s
    }
    fn parse(body: &str) -> Result<Self> {
        let v: Value = serde_json::from_str(body).context("parse /cluster JSON")?;
        let lag = |m: &Value, k: &str| m.get(k).and_then(|x| x.as_u64());
        let mut members: Vec<Member> = v["members"]
            .as_array()
            .ok_or_else(|| anyhow!("/cluster: no members array"))?
            .iter()
            .map(|m| Member {
                name: m["name"].as_str().unwrap_or("?").to_string(),
                host: m["host"].as_str().unwrap_or("?").to_string(),
                role: m["role"].as_str().unwrap_or("?").to_string(),
                state: m["state"].as_str().unwrap_or("?").to_string(),
                timeline: m.get("timeline").and_then(|x| x.as_u64()),
                receive_lag: lag(m, "receive_lag").or_else(|| lag(m, "lag")),
                replay_lag: lag(m, "replay_lag").or_else(|| lag(m, "lag")),
            })
            .collect();
        members.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(ClusterState { members })
    }
}

/// Handle on the lab. All methods are blocking, bounded and print what they do.
pub struct Lab {
    pub dir: PathBuf,
    pub timing: Timing,
}

impl Default for Lab {
    fn default() -> Self {
        Lab {
            dir: PathBuf::from(LAB_DIR),
            timing: Timing::default(),
        }
    }
}

const REST_TIMEOUT: Duration = Duration::from_secs(3);

impl Lab {
    pub fn new(timing: Timing) -> Self {
        Lab {
            dir: PathBuf::from(LAB_DIR),
            timing,
        }
    }

    fn run_dir(&self) -> PathBuf {
        self.dir.join("run")
    }
    fn node_dir(&self, node: &str) -> PathBuf {
        self.dir.join(node)
    }
    fn pidfile(&self, what: &str) -> PathBuf {
        self.run_dir().join(format!("{what}.pid"))
    }
    fn etcd_log(&self) -> PathBuf {
        self.dir.join("etcd/etcd.log")
    }
    fn patroni_log(&self, node: &str) -> PathBuf {
        self.node_dir(node).join("patroni.log")
    }
    fn pg_log(&self, node: &str) -> PathBuf {
        self.node_dir(node).join("log/postgresql.log")
    }
    fn config_path(&self, node: &str) -> PathBuf {
        self.node_dir(node).join("patroni.yml")
    }

    // ------------------------------------------------------------------ up

    /// True if the lab is fully up: etcd and three Patronis running, a leader
    /// and two streaming replicas, all replay un-frozen, nothing `spawn`ed
    /// still running, VIP free.
    pub fn is_healthy(&self) -> bool {
        pidfile_alive(&self.pidfile("etcd"), "etcd").is_some()
            && PG_NODES.iter().all(|n| self.patroni_pid(n).is_some())
            && self.spawned().iter().all(|(_, p)| !pid_alive(*p))
            && self.vip_holders().is_empty()
            && PG_NODES.iter().all(|n| {
                self.postmaster_children(n)
                    .iter()
                    .all(|(p, _)| proc_state(*p) != Some('T'))
            })
            && self
                .cluster()
                .map(|st| st.leader().is_some() && st.streaming_replicas().len() == 2)
                .unwrap_or(false)
    }

    /// `up`, unless the lab is already healthy (see `is_healthy`) with the
    /// same timing: then only prints so. For test suites.
    pub fn up_or_reuse(&self, timeout: Duration) -> Result<Duration> {
        let same_timing = fs::read_to_string(self.config_path("pg1")).is_ok_and(|c| {
            c.contains(&format!("ttl: {}\n", self.timing.ttl))
                && c.contains(&format!("loop_wait: {}\n", self.timing.loop_wait))
                && c.contains(&format!("retry_timeout: {}\n", self.timing.retry_timeout))
        });
        if same_timing && self.is_healthy() {
            let st = self.cluster()?;
            print!("lab: already up and healthy; reusing it\n{}", st.summary());
            return Ok(Duration::ZERO);
        }
        self.up(timeout)
    }

    /// Installs what is missing, removes leftovers, builds network, etcd and
    /// the three nodes, and waits for a leader plus two streaming replicas.
    pub fn up(&self, timeout: Duration) -> Result<Duration> {
        let t0 = Instant::now();
        self.timing.validate()?;
        super::install::ensure_installed()?;
        // `timeout` bounds the lab itself, not package downloads.
        let start = Instant::now();
        self.cleanup(false)?;
        let res = (|| -> Result<()> {
            self.make_dirs()?;
            self.create_network()?;
            self.start_etcd()?;
            for n in PG_NODES {
                self.write_config(n)?;
            }
            // pg1 bootstraps first so the initial leader is deterministic.
            self.start_node_process("pg1")?;
            let left = timeout.saturating_sub(start.elapsed());
            wait_for(
                "pg1 to bootstrap and become leader",
                left,
                Duration::from_millis(500),
                || Ok(self.cluster()?.leader().map(|_| ())),
            )?;
            println!("lab: pg1 is leader after {:.1?}", start.elapsed());
            self.start_node_process("pg2")?;
            self.start_node_process("pg3")?;
            let left = timeout.saturating_sub(start.elapsed());
            let st = self.wait_healthy(2, left)?;
            print!("{}", st.summary());
            Ok(())
        })();
        if let Err(e) = res {
            self.print_log_tails();
            return Err(e.context("lab up failed (logs above; `cargo xtask lab down` cleans up)"));
        }
        let took = t0.elapsed();
        println!(
            "lab: up in {:.1?} ({:.1?} without installing)",
            took,
            start.elapsed()
        );
        println!("{}", self.connect_help());
        Ok(took)
    }

    pub fn connect_help(&self) -> String {
        format!(
            "lab: connect (once pgrouter holds the VIP):\n  \
             PGPASSWORD={SUPERUSER_PASSWORD} ip netns exec {CLIENT_NS} psql -h {VIP} -p 5000 -U {SUPERUSER}   # primary\n  \
             PGPASSWORD={SUPERUSER_PASSWORD} ip netns exec {CLIENT_NS} psql -h {VIP} -p 5001 -U {SUPERUSER}   # replicas\n\
             lab: directly: PGPASSWORD={SUPERUSER_PASSWORD} ip netns exec {CLIENT_NS} psql -h 198.18.0.11 -U {SUPERUSER}\n\
             lab: status: cargo xtask lab status; stop: cargo xtask lab down"
        )
    }

    fn make_dirs(&self) -> Result<()> {
        for d in [self.dir.clone(), self.run_dir(), self.dir.join("etcd")] {
            fs::create_dir_all(&d).with_context(|| format!("mkdir {}", d.display()))?;
            fs::set_permissions(&d, fs::Permissions::from_mode(0o755))?;
        }
        for n in PG_NODES {
            let d = self.node_dir(n);
            for sub in ["", "run", "log"] {
                let p = d.join(sub);
                fs::create_dir_all(&p).with_context(|| format!("mkdir {}", p.display()))?;
                fs::set_permissions(&p, fs::Permissions::from_mode(0o700))?;
            }
            run(&mut cmd(
                "chown",
                ["-R", "postgres:postgres", &d.to_string_lossy()],
            ))?;
        }
        Ok(())
    }

    fn create_network(&self) -> Result<()> {
        let t = Instant::now();
        run(&mut cmd(
            "ip",
            [
                "link",
                "add",
                "name",
                BRIDGE,
                "type",
                "bridge",
                "stp_state",
                "0",
                "forward_delay",
                "0",
                "mcast_snooping",
                "0",
            ],
        ))?;
        disable_ipv6_root(BRIDGE);
        run(&mut cmd(
            "ip",
            [
                "addr",
                "add",
                &format!("{BRIDGE_ADDR}/{PREFIX_LEN}"),
                "dev",
                BRIDGE,
            ],
        ))?;
        run(&mut cmd("ip", ["link", "set", BRIDGE, "up"]))?;
        for h in HOSTS {
            let ns = h.ns();
            let hv = h.host_veth();
            run(&mut cmd("ip", ["netns", "add", &ns]))?;
            // No IPv6 at all (not even link-local): lab traffic stays in 198.18.0.0/24.
            let _ = ns_sysctl(&ns, "net.ipv6.conf.all.disable_ipv6", "1");
            let _ = ns_sysctl(&ns, "net.ipv6.conf.default.disable_ipv6", "1");
            run(&mut cmd(
                "ip",
                [
                    "link", "add", &hv, "type", "veth", "peer", "name", "eth0", "netns", &ns,
                ],
            ))?;
            disable_ipv6_root(&hv);
            run(&mut cmd("ip", ["link", "set", &hv, "master", BRIDGE]))?;
            run(&mut cmd("ip", ["link", "set", &hv, "up"]))?;
            run(&mut cmd("ethtool", ["-K", &hv, "tx", "off"]))?;
            run(&mut cmd(
                "ip",
                ["-n", &ns, "link", "set", "eth0", "address", &h.mac()],
            ))?;
            run(&mut cmd(
                "ip",
                [
                    "-n",
                    &ns,
                    "addr",
                    "add",
                    &format!("{}/{PREFIX_LEN}", h.addr),
                    "dev",
                    "eth0",
                ],
            ))?;
            run(&mut cmd("ip", ["-n", &ns, "link", "set", "eth0", "up"]))?;
            run(&mut cmd("ip", ["-n", &ns, "link", "set", "lo", "up"]))?;
            run(&mut ns_cmd(&ns, ["ethtool", "-K", "eth0", "tx", "off"]))?;
            if EDGES.contains(&h.name) {
                ns_sysctl(&ns, "net.ipv4.ip_forward", "1")?;
                // GRO on the bridge-side peer gives it a NAPI context, which
                // veth needs to accept XDP_TX / XDP_REDIRECT frames from eth0.
                run(&mut cmd("ethtool", ["-K", &hv, "gro", "on"]))?;
            }
        }
        println!(
            "lab: network up in {:.1?}: bridge {BRIDGE} ({BRIDGE_ADDR}/{PREFIX_LEN}), namespaces {}",
            t.elapsed(),
            HOSTS
                .iter()
                .map(|h| format!("{}={}", h.ns(), h.addr))
                .collect::<Vec<_>>()
                .join(" ")
        );
        Ok(())
    }

    /// Starts etcd (same data dir) unless it runs, and waits for /health.
    pub fn start_etcd(&self) -> Result<()> {
        if let Some(pid) = pidfile_alive(&self.pidfile("etcd"), "etcd") {
            println!("lab: etcd already running (pid {pid})");
            return Ok(());
        }
        if !Path::new("/run/netns/pgrlab-etcd").exists() {
            bail!("lab is not up (namespace pgrlab-etcd missing)");
        }
        let data = self.dir.join("etcd/data");
        let client = format!("http://{ETCD_ADDR}:2379");
        let peer = format!("http://{ETCD_ADDR}:2380");
        let mut c = ns_cmd(
            "pgrlab-etcd",
            [
                "etcd",
                "--name",
                "pgrlab-etcd",
                "--data-dir",
                &data.to_string_lossy(),
                "--listen-client-urls",
                &client,
                "--advertise-client-urls",
                &client,
                "--listen-peer-urls",
                &peer,
                "--initial-advertise-peer-urls",
                &peer,
                "--initial-cluster",
                &format!("pgrlab-etcd={peer}"),
                "--initial-cluster-state",
                "new",
                "--initial-cluster-token",
                "pgrlab",
                "--logger",
                "zap",
                "--log-outputs",
                "stderr",
            ],
        );
        c.env_clear().env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin");
        let pid = spawn_daemon(c, &self.etcd_log(), &self.pidfile("etcd"), &self.dir)?;
        println!("lab: etcd started (pid {pid}) on {client}");
        wait_for(
            "etcd /health",
            Duration::from_secs(30),
            Duration::from_millis(200),
            || {
                if !pid_alive(pid) {
                    bail!("etcd exited: {}", tail(&self.etcd_log(), 15));
                }
                let (code, body) = http(
                    CLIENT_NS,
                    &format!("{ETCD_ADDR}:2379"),
                    "GET",
                    "/health",
                    None,
                    REST_TIMEOUT,
                )?;
                Ok((code == 200 && body.contains("true")).then_some(()))
            },
        )
    }

    /// Patroni configuration of `node` (lab/patroni.yml.tmpl filled in).
    pub fn render_config(&self, node: &str) -> Result<String> {
        let h = host(node)?;
        let nd = self.node_dir(node);
        let cfg = TEMPLATE
            .replace("{{NAME}}", node)
            .replace("{{ADDR}}", h.addr)
            .replace("{{NODE_DIR}}", &nd.to_string_lossy())
            .replace("{{ETCD}}", &format!("{ETCD_ADDR}:2379"))
            .replace("{{TTL}}", &self.timing.ttl.to_string())
            .replace("{{LOOP_WAIT}}", &self.timing.loop_wait.to_string())
            .replace("{{RETRY_TIMEOUT}}", &self.timing.retry_timeout.to_string())
            .replace("{{PG_BIN}}", PG_BIN)
            .replace("{{SUPERUSER_PASSWORD}}", SUPERUSER_PASSWORD)
            .replace("{{REPLICATION_USER}}", REPLICATION_USER)
            .replace("{{REPLICATION_PASSWORD}}", REPLICATION_PASSWORD)
            .replace("{{SUBNET}}", SUBNET);
        if let Some(i) = cfg.find("{{") {
            bail!(
                "patroni.yml.tmpl: unknown placeholder at {:?}",
                &cfg[i..(i + 30).min(cfg.len())]
            );
        }
        Ok(cfg)
    }

    fn write_config(&self, node: &str) -> Result<()> {
        let cfg = self.render_config(node)?;
        let p = self.config_path(node);
        fs::write(&p, cfg).with_context(|| format!("write {}", p.display()))?;
        fs::set_permissions(&p, fs::Permissions::from_mode(0o600))?;
        run(&mut cmd(
            "chown",
            ["postgres:postgres", &p.to_string_lossy()],
        ))?;
        Ok(())
    }

    /// Starts Patroni (as `postgres`, in the node's namespace) unless running.
    /// Returns its PID.
    fn start_node_process(&self, node: &str) -> Result<i32> {
        if let Some(pid) = self.patroni_pid(node) {
            println!("lab: {node}: Patroni already running (pid {pid})");
            return Ok(pid);
        }
        let h = host(node)?;
        let nd = self.node_dir(node);
        if !self.config_path(node).exists() {
            bail!(
                "{node}: {} missing: is the lab up?",
                self.config_path(node).display()
            );
        }
        let mut c = ns_cmd(
            &h.ns(),
            [
                "setpriv",
                "--reuid=postgres",
                "--regid=postgres",
                "--init-groups",
                "--",
                &format!("{VENV}/bin/patroni"),
                &self.config_path(node).to_string_lossy(),
            ],
        );
        c.env_clear()
            .env("PATH", format!("{PG_BIN}:/usr/local/bin:/usr/bin:/bin"))
            .env("HOME", &nd)
            .env("USER", "postgres")
            .env("LOGNAME", "postgres")
            .env("LANG", "C.UTF-8")
            .env("LC_ALL", "C.UTF-8")
            .env("PYTHONUNBUFFERED", "1");
        let pid = spawn_daemon(c, &self.patroni_log(node), &self.pidfile(node), &nd)?;
        println!(
            "lab: {node}: Patroni started (pid {pid}) REST http://{}:8008 PostgreSQL {}:5432",
            h.addr, h.addr
        );
        Ok(pid)
    }

    // ---------------------------------------------------------------- down

    /// Stops everything the lab started, deletes namespaces, bridge and data.
    pub fn down(&self) -> Result<()> {
        self.cleanup(true)?;
        println!("lab: down");
        Ok(())
    }

    /// Removes processes (pidfiles, then anything left in pgrlab-* namespaces),
    /// namespaces, pgrlab-* links and the lab dir. Idempotent.
    fn cleanup(&self, verbose: bool) -> Result<()> {
        let mut did = false;
        // 0. Thaw anything frozen by lag-replica so shutdowns don't hang.
        let list = run(&mut cmd("ip", ["netns", "list"])).unwrap_or_default();
        for ns in list
            .lines()
            .filter_map(|l| l.split_whitespace().next())
            .filter(|n| n.starts_with("pgrlab-"))
        {
            for p in netns_pids(ns) {
                signal(p, libc::SIGCONT);
            }
        }
        // 1. Processes from `spawn` (e.g. pgrouter) gracefully, then Patroni
        //    (it stops PostgreSQL), then etcd.
        let mut spawned = vec![];
        for e in fs::read_dir(self.run_dir()).into_iter().flatten().flatten() {
            let f = e.file_name().to_string_lossy().into_owned();
            let Some(name) = f.strip_suffix(".pid") else {
                continue;
            };
            if name == "etcd" || PG_NODES.contains(&name) {
                continue;
            }
            let Ok(pid) = fs::read_to_string(e.path())
                .unwrap_or_default()
                .trim()
                .parse::<i32>()
            else {
                continue;
            };
            // Only if it still runs in one of our namespaces (PID reuse guard).
            let in_lab = fs::read_link(format!("/proc/{pid}/ns/net"))
                .ok()
                .is_some_and(|l| {
                    HOSTS.iter().any(|h| {
                        fs::metadata(format!("/run/netns/{}", h.ns()))
                            .ok()
                            .is_some_and(|m| {
                                use std::os::unix::fs::MetadataExt;
                                l.to_string_lossy() == format!("net:[{}]", m.ino())
                            })
                    })
                });
            if pid_alive(pid) && in_lab {
                println!("lab: stopping {name} (pid {pid})");
                signal(pid, libc::SIGTERM);
                spawned.push(pid);
            }
        }
        if !spawned.is_empty() {
            did = true;
            wait_gone(&spawned, Duration::from_secs(10));
        }
        let mut pats = vec![];
        for n in PG_NODES {
            if let Some(pid) = self.patroni_pid(n) {
                signal(pid, libc::SIGCONT);
                signal(pid, libc::SIGTERM);
                pats.push(pid);
                println!("lab: stopping Patroni {n} (pid {pid})");
            }
        }
        if !pats.is_empty() {
            did = true;
            if !wait_gone(&pats, Duration::from_secs(20)) {
                println!("lab: Patroni did not stop within 20s; killing");
            }
        }
        if let Some(pid) = pidfile_alive(&self.pidfile("etcd"), "etcd") {
            did = true;
            println!("lab: stopping etcd (pid {pid})");
            signal(pid, libc::SIGTERM);
            if !wait_gone(&[pid], Duration::from_secs(10)) {
                signal(pid, libc::SIGKILL);
            }
        }
        // 2. Anything still running inside our namespaces, then the namespaces.
        let list = run(&mut cmd("ip", ["netns", "list"])).unwrap_or_default();
        let nss: Vec<String> = list
            .lines()
            .filter_map(|l| l.split_whitespace().next())
            .filter(|n| n.starts_with("pgrlab-"))
            .map(String::from)
            .collect();
        for ns in &nss {
            let pids = netns_pids(ns);
            if !pids.is_empty() {
                println!("lab: killing leftover processes in {ns}: {pids:?}");
                for &p in &pids {
                    signal(p, libc::SIGKILL);
                }
                if !wait_gone(&pids, Duration::from_secs(10)) {
                    bail!("processes {pids:?} in {ns} survived SIGKILL");
                }
            }
        }
        for ns in &nss {
            did = true;
            run(&mut cmd("ip", ["netns", "del", ns]))?;
        }
        // 3. Root-namespace links (bridge, veth ends whose peer survived).
        let links = run(&mut cmd("ip", ["-o", "link", "show"])).unwrap_or_default();
        for l in links.lines() {
            if let Some(name) = l
                .split(':')
                .nth(1)
                .map(|s| s.trim().split('@').next().unwrap_or("").to_string())
                && name.starts_with("pgrlab-")
            {
                did = true;
                run_quiet(&mut cmd("ip", ["link", "del", &name]));
            }
        }
        // 4. SysV shared memory of SIGKILLed postmasters (key and id are on
        //    line 7 of postmaster.pid); all our processes are gone by now.
        for n in PG_NODES {
            let pm = self.node_dir(n).join("data/postmaster.pid");
            let Ok(text) = fs::read_to_string(&pm) else {
                continue;
            };
            let mut f = text.lines().nth(6).unwrap_or("").split_whitespace();
            let (Some(Ok(key)), Some(Ok(id))) = (
                f.next().map(str::parse::<i32>),
                f.next().map(str::parse::<i32>),
            ) else {
                continue;
            };
            // SAFETY: IPC_STAT fills a zeroed shmid_ds; IPC_RMID only when the
            // segment is still the one named in postmaster.pid and unattached.
            unsafe {
                let mut ds: libc::shmid_ds = std::mem::zeroed();
                if libc::shmctl(id, libc::IPC_STAT, &mut ds) == 0
                    && ds.shm_perm.__key == key
                    && ds.shm_nattch == 0
                    && libc::shmctl(id, libc::IPC_RMID, std::ptr::null_mut()) == 0
                {
                    println!("lab: removed {n}'s leftover shared memory segment (shmid {id})");
                }
            }
        }
        // 5. Lab dir (data, logs, pidfiles).
        if self.dir.exists() {
            did = true;
            fs::remove_dir_all(&self.dir)
                .with_context(|| format!("rm -r {}", self.dir.display()))?;
        }
        if did {
            let what = if verbose {
                "removed"
            } else {
                "removed leftovers of an earlier lab:"
            };
            println!(
                "lab: {what} processes, namespaces pgrlab-*, bridge {BRIDGE}, {}",
                self.dir.display()
            );
        } else if verbose {
            println!("lab: nothing was up");
        }
        Ok(())
    }

    // ---------------------------------------------------------- inspection

    pub fn patroni_pid(&self, node: &str) -> Option<i32> {
        pidfile_alive(&self.pidfile(node), "patroni")
    }

    /// PID of the node's postmaster (first line of postmaster.pid), if alive.
    pub fn postmaster_pid(&self, node: &str) -> Option<i32> {
        let s = fs::read_to_string(self.node_dir(node).join("data/postmaster.pid")).ok()?;
        let pid: i32 = s.lines().next()?.trim().parse().ok()?;
        (pid_alive(pid) && cmdline(pid).contains("postgres")).then_some(pid)
    }

    /// `GET /cluster` from the first node that answers.
    pub fn cluster(&self) -> Result<ClusterState> {
        let mut errs = vec![];
        for n in PG_NODES {
            let h = host(n)?;
            match http(
                CLIENT_NS,
                &format!("{}:8008", h.addr),
                "GET",
                "/cluster",
                None,
                REST_TIMEOUT,
            ) {
                Ok((200, body)) => return ClusterState::parse(&body),
                Ok((code, body)) => errs.push(format!("{n}: HTTP {code} {}", body.trim())),
                Err(e) => errs.push(format!("{n}: {e:#}")),
            }
        }
        bail!("no Patroni REST API answered /cluster: {}", errs.join("; "))
    }

    /// Current leader (name, address).
    pub fn leader(&self) -> Result<Member> {
        let st = self.cluster()?;
        st.leader()
            .cloned()
            .ok_or_else(|| anyhow!("no running leader:\n{}", st.summary()))
    }

    /// Waits for a running leader and at least `replicas` streaming replicas.
    pub fn wait_healthy(&self, replicas: usize, timeout: Duration) -> Result<ClusterState> {
        let start = Instant::now();
        let mut last_print = Instant::now();
        let mut last = ClusterState::default();
        let res = wait_for(
            &format!("a leader and {replicas} streaming replicas"),
            timeout,
            Duration::from_millis(500),
            || {
                let st = self.cluster()?;
                last = st.clone();
                if last_print.elapsed() > Duration::from_secs(10) {
                    last_print = Instant::now();
                    let desc: Vec<String> = st
                        .members
                        .iter()
                        .map(|m| format!("{}={}/{}", m.name, m.role, m.state))
                        .collect();
                    println!("lab: waiting ({:.0?}): {}", start.elapsed(), desc.join(" "));
                }
                Ok(
                    (st.leader().is_some() && st.streaming_replicas().len() >= replicas)
                        .then_some(st),
                )
            },
        );
        res.map_err(|e| e.context(format!("cluster was:\n{}", last.summary())))
    }

    pub fn status(&self) -> Result<()> {
        let list = run(&mut cmd("ip", ["netns", "list"])).unwrap_or_default();
        let nss: Vec<&str> = list
            .lines()
            .filter_map(|l| l.split_whitespace().next())
            .filter(|n| n.starts_with("pgrlab-"))
            .collect();
        if nss.is_empty() && !self.dir.exists() {
            println!(
                "lab: down (no pgrlab-* namespaces, no {})",
                self.dir.display()
            );
            return Ok(());
        }
        println!(
            "namespaces: {}",
            if nss.is_empty() {
                "(none)".to_string()
            } else {
                nss.join(" ")
            }
        );
        for h in HOSTS {
            println!("  {:<14} {}", h.ns(), h.addr);
        }
        let alive = |p: Option<i32>| {
            p.map(|p| format!("pid {p}"))
                .unwrap_or_else(|| "not running".into())
        };
        println!("processes:");
        println!(
            "  etcd          {}",
            alive(pidfile_alive(&self.pidfile("etcd"), "etcd"))
        );
        for n in PG_NODES {
            println!(
                "  {n} patroni   {:<14} postgres {}",
                alive(self.patroni_pid(n)),
                alive(self.postmaster_pid(n))
            );
        }
        for (name, pid) in self.spawned() {
            println!("  {name:<13} {}", alive(pid_alive(pid).then_some(pid)));
        }
        let holders = self.vip_holders();
        println!(
            "VIP {VIP}: {}",
            if holders.is_empty() {
                "not configured on any edge".to_string()
            } else {
                format!("on {}", holders.join(" "))
            }
        );
        match self.cluster() {
            Ok(st) => print!("cluster (GET /cluster):\n{}", st.summary()),
            Err(e) => println!("cluster: {e:#}"),
        }
        if self.config_path("pg1").exists() && nss.contains(&CLIENT_NS) {
            let mut c = ns_cmd(
                CLIENT_NS,
                [
                    &format!("{VENV}/bin/patronictl"),
                    "-c",
                    &self.config_path("pg1").to_string_lossy(),
                    "list",
                ],
            );
            match run(&mut c) {
                Ok(out) => print!("patronictl list:\n{out}"),
                Err(e) => println!("patronictl list: {e:#}"),
            }
        }
        Ok(())
    }

    pub fn print_log_tails(&self) {
        eprintln!(
            "==== {} (tail)\n{}",
            self.etcd_log().display(),
            tail(&self.etcd_log(), 10)
        );
        for n in PG_NODES {
            eprintln!(
                "==== {} (tail)\n{}",
                self.patroni_log(n).display(),
                tail(&self.patroni_log(n), 25)
            );
            eprintln!(
                "==== {} (tail)\n{}",
                self.pg_log(n).display(),
                tail(&self.pg_log(n), 15)
            );
        }
    }

    // -------------------------------------------------------------- actions

    /// Planned switchover via `POST /switchover` on the leader. Returns
    /// (old leader, new leader). With `wait`, also waits until the old
    /// leader streams again.
    pub fn switchover(&self, candidate: Option<&str>, wait: bool) -> Result<(String, String)> {
        let before = self.cluster()?;
        let old = before
            .leader()
            .ok_or_else(|| anyhow!("no leader:\n{}", before.summary()))?
            .clone();
        let replicas = before.streaming_replicas().len();
        let body = match candidate {
            Some(c) => serde_json::json!({ "leader": old.name, "candidate": node_name(c)? }),
            None => serde_json::json!({ "leader": old.name }),
        }
        .to_string();
        let addr = format!("{}:8008", host(&old.name)?.addr);
        println!("lab: switchover: POST http://{addr}/switchover {body}");
        let (code, resp) = http(
            CLIENT_NS,
            &addr,
            "POST",
            "/switchover",
            Some(&body),
            Duration::from_secs(60),
        )?;
        if code != 200 {
            bail!("switchover refused: HTTP {code}: {}", resp.trim());
        }
        println!("lab: switchover: {}", resp.trim());
        let new = wait_for(
            "a new leader",
            Duration::from_secs(60),
            Duration::from_millis(300),
            || {
                let st = self.cluster()?;
                Ok(st
                    .leader()
                    .filter(|l| l.name != old.name)
                    .map(|l| l.name.clone()))
            },
        )?;
        println!("lab: switchover: leader {} -> {new}", old.name);
        if wait {
            let st = self.wait_healthy(replicas, Duration::from_secs(90))?;
            print!("{}", st.summary());
        }
        Ok((old.name, new))
    }

    /// SIGKILLs every process of node `node` (Patroni, postmaster, backends):
    /// a crash. Returns the killed PIDs.
    pub fn kill_node(&self, node: &str) -> Result<Vec<i32>> {
        let h = host(node_name(node)?)?;
        let mut pids: Vec<i32> = self.patroni_pid(h.name).into_iter().collect();
        pids.extend(self.postmaster_pid(h.name));
        for p in netns_pids(&h.ns()) {
            if !pids.contains(&p) {
                pids.push(p);
            }
        }
        if pids.is_empty() {
            println!("lab: {}: nothing running", h.name);
            return Ok(pids);
        }
        for &p in &pids {
            signal(p, libc::SIGKILL);
        }
        if !wait_gone(&pids, Duration::from_secs(10)) {
            bail!("{}: processes {pids:?} survived SIGKILL", h.name);
        }
        println!(
            "lab: {}: SIGKILLed Patroni+PostgreSQL pids {pids:?}",
            h.name
        );
        Ok(pids)
    }

    /// Kills the current leader's node. With `wait`, waits for a new leader.
    /// Returns the killed node's name.
    pub fn kill_primary(&self, wait: bool) -> Result<String> {
        let l = self.leader()?;
        println!("lab: kill-primary: leader is {} ({})", l.name, l.host);
        let t = Instant::now();
        self.kill_node(&l.name)?;
        if wait {
            let new = wait_for(
                "a new leader after kill",
                Duration::from_secs(90),
                Duration::from_millis(250),
                || {
                    Ok(self.cluster().ok().and_then(|st| {
                        st.leader()
                            .filter(|m| m.name != l.name)
                            .map(|m| m.name.clone())
                    }))
                },
            )?;
            println!(
                "lab: kill-primary: new leader {new} after {:.1?}",
                t.elapsed()
            );
        }
        Ok(l.name)
    }

    /// Starts Patroni on `node` (if not running). With `wait`, waits until it
    /// is a running leader or a streaming replica.
    pub fn start_node(&self, node: &str, wait: bool) -> Result<()> {
        let n = node_name(node)?;
        if !Path::new(&format!("/run/netns/{}", host(n)?.ns())).exists() {
            bail!("lab is not up (namespace {} missing)", host(n)?.ns());
        }
        self.start_node_process(n)?;
        if wait {
            let t = Instant::now();
            let st = wait_for(
                &format!("{n} to run"),
                Duration::from_secs(120),
                Duration::from_millis(500),
                || {
                    let st = self.cluster()?;
                    Ok(st
                        .member(n)
                        .filter(|m| {
                            (m.is_leader() && m.state == "running") || m.state == "streaming"
                        })
                        .map(|_| st.clone()))
                },
            )
            .inspect_err(|_| {
                eprintln!(
                    "==== {} (tail)\n{}",
                    self.patroni_log(n).display(),
                    tail(&self.patroni_log(n), 30)
                )
            })?;
            let m = st.member(n).unwrap();
            println!(
                "lab: {n} is {}/{} after {:.1?}",
                m.role,
                m.state,
                t.elapsed()
            );
        }
        Ok(())
    }

    /// Stops Patroni on `node` gracefully (it shuts PostgreSQL down).
    pub fn stop_node(&self, node: &str) -> Result<()> {
        let n = node_name(node)?;
        let Some(pid) = self.patroni_pid(n) else {
            println!("lab: {n}: Patroni not running");
            return Ok(());
        };
        // Thaw a replay frozen by lag-replica, or the shutdown would hang.
        for p in netns_pids(&host(n)?.ns()) {
            signal(p, libc::SIGCONT);
        }
        signal(pid, libc::SIGTERM);
        if wait_gone(&[pid], Duration::from_secs(30)) {
            println!("lab: {n}: Patroni (pid {pid}) and PostgreSQL stopped");
        } else {
            println!("lab: {n}: Patroni (pid {pid}) did not stop in 30s; killing the node");
            self.kill_node(n)?;
        }
        // PostgreSQL should be down with Patroni; make sure.
        if let Some(pm) = self.postmaster_pid(n) {
            signal(pm, libc::SIGTERM);
            if !wait_gone(&[pm], Duration::from_secs(15)) {
                self.kill_node(n)?;
            }
        }
        Ok(())
    }

    /// Stops every node that is currently not the leader. Returns their names.
    pub fn stop_replicas(&self) -> Result<Vec<String>> {
        let st = self.cluster()?;
        let Some(leader) = st.leader().map(|l| l.name.clone()) else {
            bail!(
                "stop-replicas: no running leader, so no replicas to tell apart:\n{}",
                st.summary()
            );
        };
        let mut stopped = vec![];
        for n in PG_NODES {
            if n == leader {
                continue;
            }
            self.stop_node(n)?;
            stopped.push(n.to_string());
        }
        println!("lab: stop-replicas: stopped {stopped:?} (leader {leader} keeps running)");
        Ok(stopped)
    }

    /// Starts every node whose Patroni is not running. Returns their names.
    pub fn start_stopped(&self, wait: bool) -> Result<Vec<String>> {
        let stopped: Vec<String> = PG_NODES
            .iter()
            .filter(|n| self.patroni_pid(n).is_none())
            .map(|n| n.to_string())
            .collect();
        for n in &stopped {
            self.start_node_process(n)?;
        }
        if stopped.is_empty() {
            println!("lab: all nodes already running");
        }
        if wait {
            let st = self.wait_healthy(PG_NODES.len() - 1, Duration::from_secs(120))?;
            print!("{}", st.summary());
        }
        Ok(stopped)
    }

    /// Runs SQL via psql (from the client namespace) on `addr`:5432.
    pub fn psql(&self, addr: &str, sql: &str) -> Result<String> {
        self.psql_port(addr, 5432, sql)
    }

    /// Runs SQL via psql (from the client namespace) on `addr`:`port`, e.g.
    /// the VIP on 5000/5001. Returns trimmed stdout.
    pub fn psql_port(&self, addr: &str, port: u16, sql: &str) -> Result<String> {
        let port = port.to_string();
        let mut c = ns_cmd(
            CLIENT_NS,
            [
                &format!("{PG_BIN}/psql"),
                "-h",
                addr,
                "-p",
                &port,
                "-U",
                SUPERUSER,
                "-d",
                "postgres",
                "-XAtq",
                "-v",
                "ON_ERROR_STOP=1",
                "-c",
                sql,
            ],
        );
        c.env("PGPASSWORD", SUPERUSER_PASSWORD)
            .env("PGCONNECT_TIMEOUT", "5");
        run(&mut c).map(|s| s.trim().to_string())
    }

    /// PIDs and titles of the children of node `node`'s postmaster.
    pub fn postmaster_children(&self, node: &str) -> Vec<(i32, String)> {
        let Some(pm) = self.postmaster_pid(node) else {
            return vec![];
        };
        let mut out = vec![];
        for e in fs::read_dir("/proc").into_iter().flatten().flatten() {
            let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else {
                continue;
            };
            let Ok(stat) = fs::read_to_string(format!("/proc/{pid}/stat")) else {
                continue;
            };
            let Some((_, rest)) = stat.rsplit_once(')') else {
                continue;
            };
            let ppid: i32 = rest
                .split_whitespace()
                .nth(1)
                .and_then(|x| x.parse().ok())
                .unwrap_or(0);
            if ppid == pm {
                out.push((pid, cmdline(pid)));
            }
        }
        out
    }

    fn startup_pid(&self, node: &str) -> Option<i32> {
        self.postmaster_children(node)
            .into_iter()
            .find(|(_, c)| c.contains("startup"))
            .map(|(p, _)| p)
    }

    /// Makes replica `node` lag in replay: freezes its startup (WAL replay)
    /// process with SIGSTOP, then writes about `mb` MB of WAL on the primary.
    /// The replica keeps receiving WAL (receive_lag 0) but replays nothing,
    /// like a replica whose replay cannot keep up. Waits until Patroni's
    /// `GET /replica?lag=<mb/2>MB` on that node answers 503. Returns the
    /// replay lag in bytes.
    ///
    /// (`pg_wal_replay_pause()` does not work for this: Patroni 4 resumes
    /// paused replay on PostgreSQL 14+ within one loop.)
    pub fn lag_replica(&self, node: &str, mb: u32) -> Result<u64> {
        let n = node_name(node)?;
        let st = self.cluster()?;
        let leader = st
            .leader()
            .ok_or_else(|| anyhow!("no leader:\n{}", st.summary()))?
            .clone();
        if leader.name == n {
            bail!("{n} is the leader; lag-replica needs a replica");
        }
        let h = host(n)?;
        let startup = self.startup_pid(n).ok_or_else(|| {
            anyhow!("{n}: no startup (recovery) process found: is it a running replica?")
        })?;
        signal(startup, libc::SIGSTOP);
        println!(
            "lab: lag-replica: WAL replay on {n} frozen (SIGSTOP startup process pid {startup})"
        );
        let rows = mb as u64 * 1024;
        let t = Instant::now();
        self.psql(
            &leader.host,
            &format!(
                "CREATE TABLE IF NOT EXISTS pgrlab_lag(pad text); \
                 INSERT INTO pgrlab_lag SELECT repeat(md5(g::text), 32) FROM generate_series(1, {rows}) g"
            ),
        )?;
        println!(
            "lab: lag-replica: wrote ~{mb} MB on leader {} in {:.1?}",
            leader.name,
            t.elapsed()
        );
        let threshold = format!("{}MB", (mb / 2).max(1));
        let addr = format!("{}:8008", h.addr);
        wait_for(
            &format!("{n}'s GET /replica?lag={threshold} to answer 503"),
            Duration::from_secs(30),
            Duration::from_millis(300),
            || {
                let (code, _) = http(
                    CLIENT_NS,
                    &addr,
                    "GET",
                    &format!("/replica?lag={threshold}"),
                    None,
                    REST_TIMEOUT,
                )?;
                Ok((code == 503).then_some(()))
            },
        )?;
        let lag: u64 = self
            .psql(
                &leader.host,
                &format!(
                    "SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), '{}')::bigint",
                    self.psql(h.addr, "SELECT pg_last_wal_replay_lsn()")?
                ),
            )?
            .parse()
            .unwrap_or(0);
        println!(
            "lab: lag-replica: {n} replay lag {lag} bytes ({:.1} MB); GET /replica?lag={threshold} -> 503",
            lag as f64 / 1048576.0
        );
        Ok(lag)
    }

    /// Thaws WAL replay on `node` (or on every node) and waits until it has
    /// caught up (`GET /replica?lag=1MB` → 200). Returns the thawed nodes.
    pub fn unlag(&self, node: Option<&str>) -> Result<Vec<String>> {
        let targets: Vec<&str> = match node {
            Some(n) => vec![node_name(n)?],
            None => PG_NODES.to_vec(),
        };
        let mut resumed = vec![];
        for n in targets {
            let stopped: Vec<i32> = self
                .postmaster_children(n)
                .into_iter()
                .map(|(p, _)| p)
                .filter(|&p| proc_state(p) == Some('T'))
                .collect();
            if stopped.is_empty() {
                continue;
            }
            for &p in &stopped {
                signal(p, libc::SIGCONT);
            }
            println!("lab: unlag: WAL replay on {n} resumed (SIGCONT {stopped:?})");
            let addr = format!("{}:8008", host(n)?.addr);
            wait_for(
                &format!("{n} to catch up"),
                Duration::from_secs(60),
                Duration::from_millis(300),
                || {
                    let (code, _) = http(
                        CLIENT_NS,
                        &addr,
                        "GET",
                        "/replica?lag=1MB",
                        None,
                        REST_TIMEOUT,
                    )?;
                    Ok((code == 200).then_some(()))
                },
            )?;
            println!("lab: unlag: {n} caught up");
            resumed.push(n.to_string());
        }
        if resumed.is_empty() {
            println!("lab: unlag: no replica had WAL replay frozen");
        } else if let Ok(l) = self.leader() {
            let _ = self.psql(&l.host, "DROP TABLE IF EXISTS pgrlab_lag");
        }
        Ok(resumed)
    }

    /// Starts `argv` detached in lab namespace `ns` (own session, stdout and
    /// stderr to `<lab>/<name>.log`, PID in `<lab>/run/<name>.pid`), e.g.
    /// pgrouter on an edge. `down` stops it with the namespace. Returns the PID.
    pub fn spawn(&self, ns: &str, name: &str, argv: &[String]) -> Result<i32> {
        let ns = ns_name(ns)?;
        if name.is_empty()
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            bail!("spawn: name {name:?} must be [A-Za-z0-9_-]+");
        }
        if PG_NODES.contains(&name) || name == "etcd" {
            bail!("spawn: name {name:?} is taken by the lab");
        }
        if argv.is_empty() {
            bail!("spawn: no command given");
        }
        if !Path::new(&format!("/run/netns/{ns}")).exists() {
            bail!("lab is not up (namespace {ns} missing)");
        }
        let pidfile = self.pidfile(name);
        if let Some(pid) = pidfile_alive(&pidfile, &argv[0]) {
            bail!("spawn: {name} already running (pid {pid}); stop it with `lab kill-proc {name}`");
        }
        let log = self.dir.join(format!("{name}.log"));
        let cwd = std::env::current_dir().unwrap_or_else(|_| PathBuf::from("/"));
        let pid = spawn_daemon(ns_cmd(&ns, argv), &log, &pidfile, &cwd)?;
        println!(
            "lab: spawned {name} in {ns} (pid {pid}), log {}",
            log.display()
        );
        Ok(pid)
    }

    /// Sends `sig` to a process started by `spawn` (by its pidfile) and, for
    /// SIGTERM/SIGKILL, waits up to 10 s for it to exit (then SIGKILL).
    /// Returns false if it was not running.
    pub fn kill_proc(&self, name: &str, sig: i32) -> Result<bool> {
        let pidfile = self.pidfile(name);
        let Ok(text) = fs::read_to_string(&pidfile) else {
            println!("lab: {name}: no pidfile {}", pidfile.display());
            return Ok(false);
        };
        let pid: i32 = text
            .trim()
            .parse()
            .with_context(|| format!("bad pidfile {}", pidfile.display()))?;
        if !pid_alive(pid) {
            println!("lab: {name} (pid {pid}) is not running");
            return Ok(false);
        }
        signal(pid, sig);
        if sig == libc::SIGTERM || sig == libc::SIGKILL || sig == libc::SIGINT {
            if !wait_gone(&[pid], Duration::from_secs(10)) {
                println!("lab: {name} (pid {pid}) still alive after 10 s; SIGKILL");
                signal(pid, libc::SIGKILL);
                wait_gone(&[pid], Duration::from_secs(5));
            }
            println!("lab: {name} (pid {pid}) stopped (signal {sig})");
        } else {
            println!("lab: sent signal {sig} to {name} (pid {pid})");
        }
        Ok(true)
    }

    /// Sets the bridge side of host `ns`'s veth up or down: carrier loss on
    /// its eth0, like a pulled cable (e.g. to fail an edge).
    pub fn link(&self, ns: &str, up: bool) -> Result<()> {
        let ns = ns_name(ns)?;
        let name = ns.trim_start_matches("pgrlab-");
        let hv = host(name)?.host_veth();
        run(&mut cmd(
            "ip",
            ["link", "set", &hv, if up { "up" } else { "down" }],
        ))?;
        println!(
            "lab: link {hv} (to {ns} eth0) {}",
            if up { "up" } else { "down" }
        );
        Ok(())
    }

    /// Names and PIDs (from pidfiles) of processes started by `spawn`.
    pub fn spawned(&self) -> Vec<(String, i32)> {
        let mut v: Vec<(String, i32)> = fs::read_dir(self.run_dir())
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| {
                let f = e.file_name().to_string_lossy().into_owned();
                let name = f.strip_suffix(".pid")?.to_string();
                if name == "etcd" || PG_NODES.contains(&name.as_str()) {
                    return None;
                }
                let pid = fs::read_to_string(e.path()).ok()?.trim().parse().ok()?;
                Some((name, pid))
            })
            .collect();
        v.sort();
        v
    }

    /// Edges (`edge1`, `edge2`) that have the VIP on an interface.
    pub fn vip_holders(&self) -> Vec<&'static str> {
        EDGES
            .iter()
            .copied()
            .filter(|e| {
                run(&mut cmd(
                    "ip",
                    ["-n", &format!("pgrlab-{e}"), "-4", "-o", "addr", "show"],
                ))
                .map(|out| out.contains(&format!(" {VIP}/")))
                .unwrap_or(false)
            })
            .collect()
    }

    /// Stops etcd (SIGTERM, SIGKILL after 10 s): a DCS outage. With
    /// Patroni's defaults (no failsafe mode) the leader demotes itself once
    /// it cannot update the leader key within retry_timeout/ttl.
    pub fn stop_etcd(&self) -> Result<()> {
        let Some(pid) = pidfile_alive(&self.pidfile("etcd"), "etcd") else {
            println!("lab: etcd not running");
            return Ok(());
        };
        signal(pid, libc::SIGTERM);
        if !wait_gone(&[pid], Duration::from_secs(10)) {
            signal(pid, libc::SIGKILL);
            wait_gone(&[pid], Duration::from_secs(5));
        }
        println!("lab: etcd (pid {pid}) stopped");
        Ok(())
    }

    /// Runs psql in the client namespace with the lab's superuser password;
    /// `args` are passed through (default target: the VIP, port 5000).
    pub fn psql_cli(&self, args: &[String]) -> Result<i32> {
        let mut argv = vec![format!("{PG_BIN}/psql")];
        if !args
            .iter()
            .any(|a| a == "-h" || a.starts_with("--host") || a.starts_with("host="))
        {
            argv.extend(["-h".into(), VIP.into()]);
        }
        if !args.iter().any(|a| a == "-p" || a.starts_with("--port")) {
            argv.extend(["-p".into(), "5000".into()]);
        }
        if !args
            .iter()
            .any(|a| a == "-U" || a.starts_with("--username"))
        {
            argv.extend(["-U".into(), SUPERUSER.into()]);
        }
        if !args.iter().any(|a| a == "-d" || a.starts_with("--dbname")) {
            argv.extend(["-d".into(), "postgres".into()]);
        }
        argv.extend(args.iter().cloned());
        let mut c = ns_cmd(CLIENT_NS, &argv);
        c.env("PGPASSWORD", SUPERUSER_PASSWORD);
        if std::env::var_os("PGCONNECT_TIMEOUT").is_none() {
            c.env("PGCONNECT_TIMEOUT", "5");
        }
        let st = c
            .status()
            .with_context(|| format!("could not run `{}`", show(&c)))?;
        Ok(st.code().unwrap_or(128 + 9))
    }

    /// Runs `argv` in lab namespace `ns` (`edge1` or `pgrlab-edge1`) with
    /// inherited stdio; returns its exit code.
    pub fn exec(&self, ns: &str, argv: &[String]) -> Result<i32> {
        let ns = ns_name(ns)?;
        if argv.is_empty() {
            bail!("exec: no command given (usage: cargo xtask lab exec {ns} -- cmd args…)");
        }
        let mut c = ns_cmd(&ns, argv);
        let st = c
            .status()
            .with_context(|| format!("could not run `{}`", show(&c)))?;
        Ok(st.code().unwrap_or(128 + 9))
    }
}

/// Spawns a detached daemon (own session, stdio to `log`), writes its PID to
/// `pidfile`. Fails if it exits within 300 ms.
fn spawn_daemon(mut c: Command, log: &Path, pidfile: &Path, cwd: &Path) -> Result<i32> {
    let f = fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .with_context(|| format!("open {}", log.display()))?;
    c.stdin(Stdio::null())
        .stdout(f.try_clone()?)
        .stderr(f)
        .current_dir(cwd);
    // SAFETY: setsid is async-signal-safe; detaches from our terminal/session
    // so Ctrl-C on cargo does not reach the daemon.
    unsafe {
        c.pre_exec(|| {
            libc::setsid();
            Ok(())
        });
    }
    let desc = show(&c);
    let child = c
        .spawn()
        .with_context(|| format!("could not start `{desc}`"))?;
    let pid = child.id() as i32;
    fs::write(pidfile, format!("{pid}\n"))
        .with_context(|| format!("write {}", pidfile.display()))?;
    std::thread::sleep(Duration::from_millis(300));
    if !pid_alive(pid) {
        bail!("`{desc}` exited at once:\n{}", tail(log, 20));
    }
    Ok(pid)
}

fn disable_ipv6_root(ifname: &str) {
    let _ = fs::write(
        format!("/proc/sys/net/ipv6/conf/{ifname}/disable_ipv6"),
        "1",
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_and_namespace_names() {
        assert_eq!(node_name("2").unwrap(), "pg2");
        assert_eq!(node_name("pg3").unwrap(), "pg3");
        assert_eq!(node_name("pgrlab-pg1").unwrap(), "pg1");
        assert!(node_name("4").is_err());
        assert!(node_name("edge1").is_err());
        assert_eq!(ns_name("edge1").unwrap(), "pgrlab-edge1");
        assert_eq!(ns_name("pgrlab-client").unwrap(), "pgrlab-client");
        assert!(ns_name("nope").is_err());
    }

    #[test]
    fn hosts_fit_the_lab_subnet_and_ifnamsiz() {
        for h in HOSTS {
            assert!(h.addr.starts_with("198.18.0."), "{}", h.addr);
            assert!(
                h.host_veth().len() <= 15,
                "{} too long for IFNAMSIZ",
                h.host_veth()
            );
            assert!(h.ns().starts_with("pgrlab-"));
        }
        assert_eq!(host("pg1").unwrap().mac(), "02:00:c6:12:00:0b");
        assert_eq!(host("client").unwrap().mac(), "02:00:c6:12:00:1e");
        assert!(BRIDGE.len() <= 15);
    }

    #[test]
    fn timing_rules() {
        assert!(Timing::default().validate().is_ok());
        assert!(
            Timing {
                ttl: 19,
                loop_wait: 1,
                retry_timeout: 4
            }
            .validate()
            .is_err()
        );
        assert!(
            Timing {
                ttl: 20,
                loop_wait: 5,
                retry_timeout: 8
            }
            .validate()
            .is_err()
        );
        assert!(
            Timing {
                ttl: 30,
                loop_wait: 2,
                retry_timeout: 10
            }
            .validate()
            .is_ok()
        );
    }

    #[test]
    fn config_renders_every_placeholder() {
        let lab = Lab::new(Timing {
            ttl: 25,
            loop_wait: 2,
            retry_timeout: 5,
        });
        let cfg = lab.render_config("pg2").unwrap();
        assert!(!cfg.contains("{{"));
        for want in [
            "name: pg2",
            "listen: 198.18.0.12:8008",
            "listen: 198.18.0.12:5432",
            "hosts: 198.18.0.5:2379",
            "ttl: 25",
            "loop_wait: 2",
            "retry_timeout: 5",
            "use_pg_rewind: true",
            "use_slots: true",
            "data_dir: /var/lib/pgrouter-lab/pg2/data",
            "bin_dir: /usr/lib/postgresql/15/bin",
            "unix_socket_directories: /var/lib/pgrouter-lab/pg2/run",
            "198.18.0.0/24",
        ] {
            assert!(cfg.contains(want), "missing {want:?} in\n{cfg}");
        }
    }

    #[test]
    fn parses_patroni_cluster_json() {
        let body = r#"{"members": [
            {"name": "pg2", "role": "replica", "state": "streaming", "host": "198.18.0.12",
             "port": 5432, "timeline": 3, "receive_lag": 0, "replay_lag": 17886512, "lag": 0},
            {"name": "pg1", "role": "leader", "state": "running", "host": "198.18.0.11",
             "port": 5432, "timeline": 3},
            {"name": "pg3", "role": "replica", "state": "stopped", "host": "198.18.0.13",
             "port": 5432, "lag": "unknown"}], "scope": "pgrlab"}"#;
        let st = ClusterState::parse(body).unwrap();
        assert_eq!(st.members[0].name, "pg1");
        assert_eq!(st.leader().unwrap().host, "198.18.0.11");
        assert_eq!(st.streaming_replicas().len(), 1);
        assert_eq!(st.member("pg2").unwrap().replay_lag, Some(17886512));
        assert_eq!(st.member("pg3").unwrap().replay_lag, None);
        assert!(st.summary().contains("pg3"));
        // A leader that is not running (e.g. promoting) is not "the" leader.
        let st = ClusterState::parse(
            r#"{"members": [{"name": "pg1", "role": "leader", "state": "starting", "host": "198.18.0.11"}]}"#,
        )
        .unwrap();
        assert!(st.leader().is_none());
    }

    /// Full cycle through the API. Needs root and installs packages:
    /// `cargo test -p xtask -- --ignored lab_full_cycle`.
    #[test]
    #[ignore]
    fn lab_full_cycle() {
        let lab = Lab::default();
        lab.up(Duration::from_secs(180)).unwrap();
        assert_eq!(lab.leader().unwrap().name, "pg1");
        let (old, new) = lab.switchover(None, true).unwrap();
        assert_ne!(old, new);
        let killed = lab.kill_primary(true).unwrap();
        assert_ne!(lab.leader().unwrap().name, killed);
        lab.start_node(&killed, true).unwrap();
        let replica = lab.cluster().unwrap().streaming_replicas()[0].name.clone();
        assert!(lab.lag_replica(&replica, 12).unwrap() > 10 << 20);
        assert_eq!(lab.unlag(None).unwrap(), vec![replica]);
        assert_eq!(lab.stop_replicas().unwrap().len(), 2);
        assert_eq!(lab.start_stopped(true).unwrap().len(), 2);
        lab.down().unwrap();
        assert!(!Path::new(LAB_DIR).exists());
    }
}
