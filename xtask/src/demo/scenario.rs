//! The scenarios the demo plays and `cargo xtask scenarios` asserts: switchover, primary
//! crash, both replicas stopped, a lagging replica, the master edge host failing, a
//! controller restart under load, and an upgrade under pgbench. Each measures what the prober
//! saw per router.
//!
//! Here: the routers under test, the run's environment and each scenario's outcome. The
//! scenarios themselves are in `plays`, the `on_empty` probe in `on_empty`, the client load
//! (long-lived sessions, pgbench) in `load`.
mod load;
mod on_empty;
mod plays;

use super::edges;
use super::prober::{self, Kind, Probe, Prober, Target};
use crate::lab::Lab;
use anyhow::{Context, Result, bail};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// A router under test: its probe rows are "<name> writes" / "<name> reads".
#[derive(Clone, Debug)]
pub struct Router {
    pub name: String,
    pub addr: String,
}

impl Router {
    pub fn targets(&self) -> Vec<Target> {
        vec![
            Target {
                label: format!("{} writes", self.name),
                addr: self.addr.clone(),
                port: 5000,
                kind: Kind::Write,
                connect_timeout: prober::OUTAGE_CONNECT_TIMEOUT,
            },
            Target {
                label: format!("{} reads", self.name),
                addr: self.addr.clone(),
                port: 5001,
                kind: Kind::Read,
                connect_timeout: prober::OUTAGE_CONNECT_TIMEOUT,
            },
        ]
    }
    fn writes(&self) -> String {
        format!("{} writes", self.name)
    }
    fn reads(&self) -> String {
        format!("{} reads", self.name)
    }
}

pub struct Env {
    pub lab: Lab,
    pub prober: Prober,
    pub routers: Vec<Router>,
    /// Edges running pgrouter (edge1 first: the VRRP master).
    pub pgrouter_edges: Vec<&'static str>,
    pub events: Mutex<Vec<(u64, String)>>,
    /// Longer holds, so HAProxy's 3 s checks can settle (bench).
    pub slow: bool,
    /// The switchover also measures new connections through the hold and the reject write
    /// listeners ([`OnEmptyProbe`]).
    pub on_empty_probes: bool,
    /// XDP_PASS programs on the edges' bridge-side veth peers (native mode only).
    pub _peers: Vec<crate::lab::peer_xdp::PeerXdpPass>,
}

/// What one router showed during a scenario.
#[derive(Clone, Debug, Default)]
pub struct RouterStats {
    pub router: String,
    pub write_outage_ms: u64,
    pub read_outage_ms: u64,
    pub writes_before: Vec<String>,
    pub writes_after: Vec<String>,
    pub reads_before: Vec<String>,
    pub reads_after: Vec<String>,
    pub write_failures: usize,
    pub read_failures: usize,
    pub non_primary_writes: usize,
    /// Patroni's new leader visible in `GET /cluster` → first successful write through the
    /// router served by it (ms; negative if the router got there before `/cluster` said so).
    pub new_leader_to_first_write_ms: Option<i64>,
    pub first_write_error: Option<String>,
}

/// One scenario's result.
#[derive(Debug, Default)]
pub struct Outcome {
    pub name: String,
    pub from_ms: u64,
    pub to_ms: u64,
    pub stats: Vec<RouterStats>,
    /// (assertion, passed)
    pub checks: Vec<(String, bool)>,
    pub notes: Vec<String>,
    pub error: Option<String>,
    /// The switchover's line on new connections per `on_empty` mode.
    pub on_empty: Option<String>,
}

impl Outcome {
    pub fn passed(&self) -> bool {
        self.error.is_none() && self.checks.iter().all(|(_, ok)| *ok)
    }
    fn check(&mut self, what: String, ok: bool) {
        self.checks.push((what, ok));
    }
    pub fn stat(&self, router: &str) -> Option<&RouterStats> {
        self.stats.iter().find(|s| s.router == router)
    }

    /// Human-readable report.
    pub fn report(&self) -> String {
        let mut s = String::new();
        let list = |v: &[String]| {
            if v.is_empty() {
                "-".to_string()
            } else {
                v.join("+")
            }
        };
        for st in &self.stats {
            s.push_str(&format!(
                "  {:<9} writes: longest outage {:>6} ms ({} failed), served by {} -> {};  reads: longest outage {:>6} ms ({} failed), served by {} -> {}\n",
                st.router,
                st.write_outage_ms,
                st.write_failures,
                list(&st.writes_before),
                list(&st.writes_after),
                st.read_outage_ms,
                st.read_failures,
                list(&st.reads_before),
                list(&st.reads_after),
            ));
            if let Some(ms) = st.new_leader_to_first_write_ms {
                s.push_str(&format!(
                    "  {:<9} Patroni's new leader visible -> first write through it: {ms} ms\n",
                    st.router
                ));
            }
            s.push_str(&format!(
                "  {:<9} writes accepted by a non-primary: {}\n",
                st.router, st.non_primary_writes
            ));
            if let Some(e) = &st.first_write_error {
                s.push_str(&format!("  {:<9} first failed write: {e}\n", st.router));
            }
        }
        for n in &self.notes {
            s.push_str(&format!("  {n}\n"));
        }
        for (c, ok) in &self.checks {
            s.push_str(&format!("  [{}] {c}\n", if *ok { "ok" } else { "FAIL" }));
        }
        if let Some(e) = &self.error {
            s.push_str(&format!("  ERROR: {e}\n"));
        }
        s
    }
}

impl Env {
    pub fn now(&self) -> u64 {
        self.prober.clock.ms()
    }
    pub fn event(&self, label: impl Into<String>) -> u64 {
        let t = self.now();
        let label = label.into();
        println!("demo: [{:>7.1} s] {label}", t as f64 / 1000.0);
        self.events.lock().unwrap().push((t, label));
        t
    }
    fn sleep(d: Duration) {
        std::thread::sleep(d)
    }

    /// Waits until, for every router, the last `quiet` of writes (and reads) all succeeded;
    /// with `replica_reads`, reads were also all served by replicas (not `leader`).
    pub fn settle(&self, quiet: Duration, replica_reads: Option<&str>, timeout: Duration) -> bool {
        let t = Instant::now();
        let q = quiet.as_millis() as u64;
        loop {
            let now = self.now();
            let ok = self.routers.iter().all(|r| {
                let good = |label: &str, leader_ok: bool| {
                    let v: Vec<Probe> = self
                        .prober
                        .probes(label)
                        .into_iter()
                        .filter(|p| p.t_ms + q >= now)
                        .collect();
                    v.len() as u64 >= q / 100 * 3 / 4
                        && v.iter().all(|p| {
                            p.ok && (leader_ok
                                || replica_reads.is_none()
                                || p.node.as_deref() != replica_reads)
                        })
                };
                good(&r.writes(), true) && good(&r.reads(), false)
            });
            if ok {
                return true;
            }
            if t.elapsed() > timeout {
                return false;
            }
            Self::sleep(Duration::from_millis(200));
        }
    }

    /// Per-router numbers for a window; `old_leader`: leader before `action`.
    fn stats(&self, from: u64, action: u64, to: u64, old_leader: Option<&str>) -> Vec<RouterStats> {
        let changes = self.prober.leader_changes();
        // Patroni's new leader visible: the first running leader other than the old one.
        let visible = changes
            .iter()
            .find(|(t, l)| *t >= action && *t < to && l.is_some() && l.as_deref() != old_leader)
            .map(|(t, l)| (*t, l.clone().unwrap()));
        self.routers
            .iter()
            .map(|r| {
                let w = self.prober.probes(&r.writes());
                let rd = self.prober.probes(&r.reads());
                let before = action.saturating_sub(1500);
                let after = to.saturating_sub(1500);
                let share = visible.as_ref().and_then(|(tv, name)| {
                    w.iter()
                        .find(|p| p.ok && p.t_ms >= action && p.node.as_deref() == Some(name))
                        .map(|p| p.t_ms as i64 - *tv as i64)
                });
                RouterStats {
                    router: r.name.clone(),
                    write_outage_ms: prober::outage(&w, action, to),
                    read_outage_ms: prober::outage(&rd, action, to),
                    writes_before: prober::served(&w, before, action),
                    writes_after: prober::served(&w, after, to),
                    reads_before: prober::served(&rd, before, action),
                    reads_after: prober::served(&rd, after, to),
                    write_failures: prober::failures(&w, action, to),
                    read_failures: prober::failures(&rd, action, to),
                    non_primary_writes: prober::non_primary_writes(
                        &w.iter()
                            .filter(|p| p.t_ms >= from && p.t_ms < to)
                            .cloned()
                            .collect::<Vec<_>>(),
                    ),
                    new_leader_to_first_write_ms: share,
                    first_write_error: prober::first_error(&w, action, to),
                }
            })
            .collect()
    }

    fn leader_name(&self) -> Result<String> {
        Ok(self.lab.leader()?.name)
    }

    /// Stops pgrouter (SIGTERM) on every edge but `keep`, so no backup takes the VIP while
    /// `keep`'s pgrouter is killed or replaced; returns the stopped edges.
    fn stop_backups(&self, keep: &str) -> Result<Vec<&'static str>> {
        let others: Vec<&'static str> = self
            .pgrouter_edges
            .iter()
            .copied()
            .filter(|e| *e != keep)
            .collect();
        for e in &others {
            self.event(format!(
                "stopping pgrouter on {e} (a backup would take the VIP from {keep} meanwhile)"
            ));
            edges::kill(&self.lab, e, libc::SIGTERM)?;
        }
        Ok(others)
    }

    /// Starts pgrouter again on the edges [`Self::stop_backups`] stopped.
    fn restart_backups(&self, stopped: &[&str], leader: &str) -> Result<()> {
        for e in stopped {
            edges::start(&self.lab, e)?;
            edges::wait_ready(&self.lab, e, leader, Duration::from_secs(20))?;
            self.event(format!("pgrouter on {e} back (VRRP backup)"));
        }
        Ok(())
    }

    /// Best-effort return to a healthy lab after a failed scenario.
    pub fn restore(&self) {
        println!("demo: restoring the lab after a failed scenario");
        let _ = self.lab.unlag(None);
        for e in crate::lab::EDGES {
            let _ = self.lab.link(e, true);
        }
        let _ = self.lab.start_stopped(true);
        if let Ok(l) = self.leader_name() {
            for e in &self.pgrouter_edges {
                if edges::status(e).is_none() {
                    let _ = edges::start(&self.lab, e);
                }
                let _ = edges::wait_ready(&self.lab, e, &l, Duration::from_secs(20));
            }
        }
        if let Some(e) = self.pgrouter_edges.first() {
            let _ = edges::wait_vip(&self.lab, e, Duration::from_secs(10));
        }
        self.settle(Duration::from_secs(2), None, Duration::from_secs(30));
    }

    fn settle_timeout(&self) -> Duration {
        Duration::from_secs(if self.slow { 45 } else { 20 })
    }

    fn run_one(&self, name: &str, f: impl FnOnce(&Env, &mut Outcome) -> Result<()>) -> Outcome {
        println!("\n=== {name} ===");
        let mut o = Outcome {
            name: name.to_string(),
            ..Default::default()
        };
        o.from_ms = self.now();
        if let Err(e) = f(self, &mut o) {
            o.error = Some(format!("{e:#}"));
            print!("{}", o.report());
            self.restore();
        } else {
            print!("{}", o.report());
        }
        o.to_ms = o.to_ms.max(o.from_ms);
        o
    }
}

/// Creates the probers' role and table on the leader.
pub fn create_probe_table(lab: &Lab) -> Result<()> {
    let l = lab.leader()?;
    lab.psql(&l.host, prober::PROBE_SETUP_SQL)
        .context("creating the probe role and table")?;
    Ok(())
}

/// Waits until every router serves writes and reads, so scenarios start from a clean state.
pub fn wait_serving(env: &Env) -> Result<()> {
    if !env.settle(Duration::from_secs(2), None, Duration::from_secs(45)) {
        let mut msg = String::new();
        for r in &env.routers {
            for l in [r.writes(), r.reads()] {
                let v = env.prober.probes(&l);
                let ok = v.iter().filter(|p| p.ok).count();
                let firsts: Vec<_> = v
                    .iter()
                    .filter(|p| !p.ok)
                    .take(3)
                    .map(|p| (p.t_ms, p.error.clone()))
                    .collect();
                msg.push_str(&format!(
                    "\n  {l}: {} probes, {ok} ok, first failures: {firsts:?}, last: {:?}",
                    v.len(),
                    v.last().map(|p| (p.ok, p.node.clone(), p.error.clone()))
                ));
            }
        }
        bail!("routers do not serve every probe:{msg}");
    }
    Ok(())
}
