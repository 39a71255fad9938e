//! The lab session every bench section runs in: the lab up, pgrouter on edge1 (restarted
//! per XDP mode), the seed's HAProxy on edge2, pgbench's tables; torn down afterwards.
use std::{
    fmt::Write as _,
    fs,
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};

use super::pgbench::{Params, pgbench, xdp_mode};
use super::report::Report;
use crate::lab::{
    HOSTS, Lab, PG_NODES, SUPERUSER, VIP, edge, peer_xdp::PeerXdpPass, topology::host_named,
    util::wait_for,
};

/// Config, pins, control socket of the benchmark's pgrouter and HAProxy.
const RUN_DIR: &str = "/run/pgrouter-bench";
/// HAProxy binds `*:5000` on edge2: clients reach it at edge2's own address.
pub(super) const HAPROXY_ADDR: &str = host_named("edge2").addr;
const PGROUTER_PROC: &str = "pgrouter-bench";
pub(super) const HAPROXY_PROC: &str = "haproxy-bench";

pub(super) fn s(v: &str) -> String {
    v.to_string()
}

/// The `[datapath]` lines of the pgbench comparison and the flood beyond interfaces, mode and
/// pins: the lab's default SNAT range.
pub(super) const DATAPATH_DEFAULT: &str = "snat_ports = \"40000-59999\"";

fn pgrouter_config(dir: &Path, xdp_mode: &str, datapath: &str) -> String {
    let mut nodes = String::new();
    for h in HOSTS.iter().filter(|h| PG_NODES.contains(&h.name)) {
        let _ = write!(
            nodes,
            "[[cluster.node]]\nname = \"{}\"\nhost = \"{}\"\n\n",
            h.name, h.addr
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
pub(super) fn pgrouter_bin() -> PathBuf {
    match std::env::var_os("PGR_BENCH_PGROUTER") {
        Some(p) => PathBuf::from(p),
        None => edge::pgrouter_bin(),
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
        edge::start_pgrouter(self.lab, "edge1", PGROUTER_PROC, &bin, &cfg)?;
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

/// HAProxy with the seed's config on edge2 (binds *:5000, so HAPROXY_ADDR:5000); waits until
/// its checks have marked the replicas down.
fn start_haproxy(lab: &Lab, dir: &Path) -> anyhow::Result<()> {
    edge::start_haproxy(lab, "edge2", HAPROXY_PROC, dir)?;
    wait_primary(
        lab,
        &format!("HAProxy {HAPROXY_ADDR}:5000 to reach the primary"),
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
    edge::mount_bpffs(&dir.join("bpf"))?;
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

/// Stops what `measure` started and the lab; every step is attempted.
fn teardown(lab: &Lab, dir: &Path) -> Vec<String> {
    let mut errs = Vec::new();
    // Keep the proxies' logs for a post-mortem (the lab dir goes with `lab down`).
    let keep = edge::workspace().join("target/bench");
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
    edge::unmount_bpffs(&dir.join("bpf"));
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
        edge::build_release()?;
    }
    println!("bench: pgrouter = {}", pgrouter_bin().display());

    let _lock = crate::lab::lock::session_lock()?;
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

#[cfg(test)]
mod tests {
    use super::*;

    /// The bench's pgrouter pins under its own run dir and lists the lab's three nodes.
    #[test]
    fn pgrouter_config_pins_in_the_run_dir() {
        let cfg = pgrouter_config(Path::new(RUN_DIR), "generic", DATAPATH_DEFAULT);
        assert!(cfg.contains("pin_path = \"/run/pgrouter-bench/bpf\""));
        assert!(cfg.contains("name = \"pg3\"\nhost = \"198.18.0.13\""));
        assert_eq!(cfg.matches("[[cluster.node]]").count(), 3);
    }
}
