//! The scenarios the demo plays and `cargo xtask scenarios` asserts: switchover, primary
//! crash, both replicas stopped, a lagging replica, the master edge host failing, a
//! controller restart under load, and an upgrade under pgbench. Each measures what the prober
//! saw per router.
use super::edges::{self, EmptySetCounters};
use super::prober::{self, Attempts, Kind, Probe, Prober, Target};
use crate::lab::Lab;
use crate::lab::cluster::VIP;
use anyhow::{Context, Result, anyhow, bail};
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
    pub _peers: Vec<crate::bench::pgbench::PeerXdpPass>,
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
        for e in crate::lab::cluster::EDGES {
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

    // ------------------------------------------------------------------ scenarios

    /// Planned switchover (Patroni `POST /switchover`); with `on_empty_probes`, also how
    /// new connections fare through the hold and the reject listener.
    pub fn switchover(&self) -> Outcome {
        self.run_one("switchover", |env, o| {
            let old = env.leader_name()?;
            let modes = if env.on_empty_probes {
                Some(OnEmptyProbe::start(env)?)
            } else {
                None
            };
            let action = env.event(format!("switchover requested (leader {old})"));
            let (_, new) = env.lab.switchover(None, true)?;
            env.event(format!(
                "switchover done: {old} -> {new}, {old} streaming again"
            ));
            let settled = env.settle(Duration::from_secs(2), None, env.settle_timeout());
            let to = env.event("writes and reads settled");
            o.stats = env.stats(o.from_ms, action, to, Some(&old));
            o.to_ms = to;
            env.common_checks(o, settled, &new);
            if let Some(m) = modes {
                m.finish(env, o, action, to, &new)?;
            }
            Ok(())
        })
    }

    /// The primary crashes (SIGKILL of Patroni and PostgreSQL); Patroni fails over after
    /// its ttl; the old primary rejoins.
    pub fn kill_primary(&self) -> Outcome {
        self.run_one("primary killed", |env, o| {
            let old = env.leader_name()?;
            let action = env.event(format!("kill -9 of the primary {old}"));
            env.lab.kill_primary(true)?;
            let new = env.leader_name()?;
            env.event(format!("Patroni elected {new}"));
            let settled = env.settle(Duration::from_secs(2), None, env.settle_timeout());
            let to = env.event("writes settled");
            o.stats = env.stats(o.from_ms, action, to, Some(&old));
            o.to_ms = to;
            env.common_checks(o, settled, &new);
            env.event(format!(
                "starting {old} again (pg_rewind, rejoins as a replica)"
            ));
            env.lab.start_node(&old, true)?;
            env.event(format!("{old} streaming"));
            env.settle(
                Duration::from_secs(2),
                Some(new.as_str()),
                env.settle_timeout(),
            );
            Ok(())
        })
    }

    /// Both replicas stopped: reads fall back to the primary, and return to the replicas.
    pub fn replicas_stopped(&self) -> Outcome {
        self.run_one("both replicas stopped", |env, o| {
            let leader = env.leader_name()?;
            let action = env.event("stopping both replicas");
            env.lab.stop_replicas()?;
            let stopped = env.event("both replicas stopped");
            Env::sleep(Duration::from_secs(if env.slow { 14 } else { 4 }));
            let start = env.event("starting the replicas");
            env.lab.start_stopped(true)?;
            env.event("replicas streaming");
            let settled = env.settle(
                Duration::from_secs(2),
                Some(leader.as_str()),
                env.settle_timeout(),
            );
            let to = env.event("reads back on the replicas");
            o.stats = env.stats(o.from_ms, action, to, Some(&leader));
            o.to_ms = to;
            let during = Some(leader.clone());
            for r in &env.routers {
                let rd = env.prober.probes(&r.reads());
                let fails = prober::failures(&rd, stopped + 1000, start);
                let by = prober::served(&rd, stopped + 1000, start);
                o.notes.push(format!(
                    "{:<9} reads while both replicas were down (from 1 s after the stop): {} failed, served by {}",
                    r.name,
                    fails,
                    if by.is_empty() { "-".into() } else { by.join("+") }
                ));
                if r.name == "pgrouter" {
                    // From the first stop on: the replicas' PostgreSQL stops refusing before
                    // Patroni's API says so, and pgrouter acts on the refusals.
                    let worst = prober::outage(&rd, action, start);
                    o.check(
                        format!("pgrouter: failed reads in a row span at most 1 s from the first stop on ({worst} ms)"),
                        worst <= 1000,
                    );
                    o.check(
                        format!("pgrouter: no failed read beyond 1 s while both replicas are stopped ({fails} failed)"),
                        fails == 0,
                    );
                    o.check(
                        format!("pgrouter: reads fell back to the primary {leader}"),
                        by.iter().all(|n| Some(n) == during.as_ref()) && !by.is_empty(),
                    );
                    let after = &o.stat("pgrouter").unwrap().reads_after;
                    o.check(
                        format!("pgrouter: reads back on the replicas ({})", after.join("+")),
                        settled && !after.is_empty() && !after.contains(&leader),
                    );
                }
            }
            env.write_checks(o);
            Ok(())
        })
    }

    /// A replica whose replay is frozen falls behind by ~17 MB: `lag = "10MB"` excludes it.
    pub fn lagging_replica(&self) -> Outcome {
        self.run_one("lagging replica", |env, o| {
            let st = env.lab.cluster()?;
            let leader = st
                .leader()
                .ok_or_else(|| anyhow!("no leader"))?
                .name
                .clone();
            let lagging = st
                .streaming_replicas()
                .last()
                .ok_or_else(|| anyhow!("no streaming replica"))?
                .name
                .clone();
            let action = env.event(format!("freezing replay on {lagging}, writing 16 MB"));
            let lag = env.lab.lag_replica(&lagging, 16)?;
            let lagged = env.event(format!(
                "{lagging} is {:.1} MB behind (Patroni's /replica?lag=8MB: 503)",
                lag as f64 / 1048576.0
            ));
            Env::sleep(Duration::from_secs(5));
            let check_to = env.event("unlagging");
            let set = env
                .pgrouter_edges
                .first()
                .and_then(|e| edges::status(e))
                .map(|v| edges::set_members(&v, "PG1_ro"))
                .unwrap_or_default();
            env.lab.unlag(Some(&lagging))?;
            env.event(format!("{lagging} caught up"));
            let t = Instant::now();
            // Back in the read set once it passes the check again.
            while t.elapsed() < Duration::from_secs(10) {
                let now = env.now();
                if env
                    .routers
                    .iter()
                    .filter(|r| r.name == "pgrouter")
                    .all(|r| {
                        prober::served(
                            &env.prober.probes(&r.reads()),
                            now.saturating_sub(1000),
                            now,
                        )
                        .contains(&lagging)
                    })
                {
                    break;
                }
                Env::sleep(Duration::from_millis(200));
            }
            let to = env.event(format!("reads reach {lagging} again"));
            o.stats = env.stats(o.from_ms, action, to, Some(&leader));
            o.to_ms = to;
            for r in &env.routers {
                let rd = env.prober.probes(&r.reads());
                let window_from = lagged + 1500;
                let by = prober::served(&rd, window_from, check_to);
                o.notes.push(format!(
                    "{:<9} reads from 1.5 s after the lag until unlag: served by {}",
                    r.name,
                    by.join("+")
                ));
                if r.name == "pgrouter" {
                    o.check(
                        format!(
                            "pgrouter: no read reached the lagging {lagging} (read set {set:?})"
                        ),
                        !by.contains(&lagging) && !set.contains(&lagging) && !by.is_empty(),
                    );
                }
            }
            env.write_checks(o);
            Ok(())
        })
    }

    /// The master edge host fails: pgrouter SIGKILLed and its link down; the VIP moves.
    pub fn edge_failure(&self) -> Outcome {
        self.run_one("master edge host failed", |env, o| {
            let leader = env.leader_name()?;
            let (a, b) = ("edge1", "edge2");
            let action = env.event(format!("kill -9 of pgrouter on {a}, {a}'s link down"));
            edges::kill(&env.lab, a, libc::SIGKILL)?;
            env.lab.link(a, false)?;
            // edge1 keeps the address configured (its pgrouter was killed) but is cut off.
            let moved = edges::wait_vip_on(&env.lab, b, false, Duration::from_secs(10))?;
            env.event(format!(
                "VIP {VIP} on {b} after {} ms",
                moved.as_millis()
            ));
            Env::sleep(Duration::from_secs(3));
            let mid = env.now();
            o.stats = env.stats(o.from_ms, action, mid, Some(&leader));
            env.event(format!("restoring {a}: link up, pgrouter started (pinned state)"));
            env.lab.link(a, true)?;
            edges::start(&env.lab, a)?;
            edges::wait_ready(&env.lab, a, &leader, Duration::from_secs(20))?;
            let back = edges::wait_vip(&env.lab, a, Duration::from_secs(10))?;
            env.event(format!("VIP back on {a} (preempted, priority 150)"));
            let settled = env.settle(Duration::from_secs(2), None, env.settle_timeout());
            let to = env.now();
            o.to_ms = to;
            o.notes.push(format!(
                "VIP moved to {b} in {} ms; back on {a} {} ms after pgrouter started there",
                moved.as_millis(),
                back.as_millis()
            ));
            let s = o.stat("pgrouter").cloned().unwrap_or_default();
            o.check(
                format!(
                    "pgrouter: VIP on {b} within 2 s and writes resumed within 3 s (write outage {} ms)",
                    s.write_outage_ms
                ),
                moved < Duration::from_secs(2) && s.write_outage_ms <= 3000 && settled,
            );
            env.write_checks(o);
            Ok(())
        })
    }

    /// `kill -9` of the master edge's controller while clients hold sessions through the VIP
    /// (backup edge stopped, so the VIP stays): the data path keeps forwarding; the restarted
    /// controller takes over the pinned link and maps.
    pub fn controller_restart(&self) -> Outcome {
        self.run_one("controller restart under load", |env, o| {
            let leader = env.leader_name()?;
            let a = "edge1";
            let others = env.stop_backups(a)?;
            let sessions = Sessions::open(env.prober.clock, 4)?;
            Env::sleep(Duration::from_secs(1));
            let action = env.event(format!("kill -9 of pgrouter on {a} (4 sessions open)"));
            edges::kill(&env.lab, a, libc::SIGKILL)?;
            Env::sleep(Duration::from_secs(2));
            let log = edges::log_path(&env.lab, a);
            let offset = std::fs::metadata(&log).map(|m| m.len()).unwrap_or(0);
            env.event(format!("starting pgrouter on {a} again"));
            let started = Instant::now();
            edges::start(&env.lab, a)?;
            edges::wait_ready(&env.lab, a, &leader, Duration::from_secs(20))?;
            let ready = started.elapsed();
            edges::wait_vip(&env.lab, a, Duration::from_secs(10))?;
            env.event(format!(
                "pgrouter on {a} ready after {} ms",
                ready.as_millis()
            ));
            Env::sleep(Duration::from_secs(3));
            let (queries, errors) = sessions.close();
            let to = env.event("sessions closed");
            let text = std::fs::read(&log)
                .map(|b| String::from_utf8_lossy(&b[offset as usize..]).into_owned())
                .unwrap_or_default();
            o.stats = env.stats(o.from_ms, action, to, Some(&leader));
            o.to_ms = to;
            o.notes.push(format!(
                "4 sessions ran {queries} queries across the restart; errors: {}",
                if errors.is_empty() {
                    "none".to_string()
                } else {
                    errors.join("; ")
                }
            ));
            o.check(
                format!("no established session lost ({} errors)", errors.len()),
                errors.is_empty() && queries > 0,
            );
            o.check(
                "restarted pgrouter: \"took over the pinned XDP link\"".into(),
                text.contains("took over the pinned XDP link"),
            );
            o.check(
                "restarted pgrouter: \"found pinned state\"".into(),
                text.contains("found pinned state"),
            );
            env.write_checks(o);
            env.restart_backups(&others, &leader)?;
            Ok(())
        })
    }

    /// The running pgrouter on the master edge is replaced by a new build while `pgbench`
    /// runs through the VIP (4 persistent connections, select-only): round 1 stops it the
    /// systemd way (SIGTERM), round 2 with SIGKILL; each time the binary is started from a
    /// copy at another path (standing for the new version). Zero failed transactions, no
    /// client aborted, and the new process takes over the pinned XDP link.
    pub fn upgrade_under_pgbench(&self) -> Outcome {
        self.run_one("upgrade under pgbench", |env, o| {
            let leader = env.leader_name()?;
            let a = "edge1";
            let others = env.stop_backups(a)?;
            // The new version's binary: a copy of the release build at another path.
            let new_bin = env.lab.dir.join("pgrouter-new");
            std::fs::copy(edges::pgrouter_bin(), &new_bin)
                .with_context(|| format!("copying pgrouter to {}", new_bin.display()))?;
            pgbench_init(&env.lab)?;
            env.event("pgbench tables ready (-s 5)");
            let rounds = [("SIGTERM", libc::SIGTERM), ("SIGKILL", libc::SIGKILL)];
            for (round, (signame, sig)) in rounds.into_iter().enumerate() {
                let bench = Pgbench::start(env)?;
                Env::sleep(Duration::from_secs(8));
                let log = edges::log_path(&env.lab, a);
                let offset = std::fs::metadata(&log).map(|m| m.len()).unwrap_or(0);
                let stop = env.event(format!(
                    "round {}: {signame} to pgrouter on {a} (pgbench running, 4 clients)",
                    round + 1
                ));
                let t = Instant::now();
                edges::kill(&env.lab, a, sig)?;
                let stopped = t.elapsed();
                let argv = vec![
                    new_bin.display().to_string(),
                    "run".into(),
                    "-c".into(),
                    edges::config_path(a).display().to_string(),
                ];
                env.lab.spawn(a, &edges::proc_name(a), &argv)?;
                edges::wait_ready(&env.lab, a, &leader, Duration::from_secs(20))?;
                let ready_in = t.elapsed();
                edges::wait_vip(&env.lab, a, Duration::from_secs(10))?;
                let ready = env.event(format!(
                    "new pgrouter ({}) on {a} ready: old one gone after {} ms, sets published after {} ms, VIP held",
                    new_bin.display(),
                    stopped.as_millis(),
                    ready_in.as_millis()
                ));
                let r = bench.wait()?;
                env.event(format!("round {}: pgbench finished", round + 1));
                let text = std::fs::read(&log)
                    .map(|b| String::from_utf8_lossy(&b[offset as usize..]).into_owned())
                    .unwrap_or_default();
                let (before, around, after, min) = r.tps_windows(stop, ready);
                o.notes.push(format!(
                    "round {} ({signame}): tps before {before:.0}, in the 2 s around the replacement {around:.0} (lowest second {min:.0}), after {after:.0}; {} transactions, {} failed, exit {}",
                    round + 1,
                    r.processed,
                    r.failed.map_or("?".to_string(), |f| f.to_string()),
                    r.status,
                ));
                o.check(
                    format!(
                        "{signame}: pgbench exit 0, no client aborted ({})",
                        r.status
                    ),
                    r.status == 0 && !r.aborted,
                );
                o.check(
                    format!(
                        "{signame}: number of failed transactions: {} (0 expected), {} processed",
                        r.failed.map_or("?".to_string(), |f| f.to_string()),
                        r.processed
                    ),
                    r.failed == Some(0) && r.processed > 0,
                );
                o.check(
                    format!("{signame}: new pgrouter: \"took over the pinned XDP link\""),
                    text.contains("took over the pinned XDP link"),
                );
                if !(r.status == 0 && r.failed == Some(0)) {
                    o.notes.push(format!("pgbench output:\n{}", r.output));
                }
            }
            let to = env.event("upgrade rounds done");
            o.stats = env.stats(o.from_ms, o.from_ms, to, Some(&leader));
            o.to_ms = to;
            env.write_checks(o);
            env.restart_backups(&others, &leader)?;
            Ok(())
        })
    }

    /// Checks shared by the failover scenarios: the new primary serves writes through
    /// pgrouter within 1 s of Patroni showing it, and no write was accepted by a non-primary.
    fn common_checks(&self, o: &mut Outcome, settled: bool, new: &str) {
        if let Some(s) = o.stat("pgrouter").cloned() {
            match s.new_leader_to_first_write_ms {
                Some(ms) => o.check(
                    format!("pgrouter: Patroni's new leader visible -> first write through the VIP {ms} ms <= 1000 ms"),
                    ms <= 1000,
                ),
                None => o.check(
                    "pgrouter: a write reached the new leader after Patroni showed it".into(),
                    false,
                ),
            }
            o.check(
                format!("pgrouter: writes settled on {new}"),
                settled && s.writes_after == [new.to_string()],
            );
        }
        self.write_checks(o);
    }

    fn write_checks(&self, o: &mut Outcome) {
        let bad: usize = o.stats.iter().map(|s| s.non_primary_writes).sum();
        o.check(
            format!("no write accepted by a non-primary ({bad})"),
            bad == 0,
        );
    }
}

/// New connections through both `on_empty` modes during a switchover: a second prober opens a
/// connection every 100 ms to VIP:5000 (`hold`, the default) and to VIP:5010 (`reject`), each
/// with a real client's 10 s connect timeout (pgjdbc's `connectTimeout`), and runs a write; the
/// VRRP master's kernel counters of both listeners are read before and after.
pub struct OnEmptyProbe {
    prober: Prober,
    edge: &'static str,
    before: [EmptySetCounters; 2],
}

const HOLD_LABEL: &str = "new connections :5000 (hold)";
const REJECT_LABEL: &str = "new connections :5010 (reject)";
/// A refusal sooner than the kernel's first SYN retransmission (1 s) answered the first SYN:
/// none was dropped.
const PROMPT_MS: u64 = 1000;

impl OnEmptyProbe {
    fn start(env: &Env) -> Result<Self> {
        let edge = *env
            .pgrouter_edges
            .first()
            .ok_or_else(|| anyhow!("no edge runs pgrouter"))?;
        let before = Self::counters(edge)?;
        let target = |label: &str, port| Target {
            label: label.into(),
            addr: VIP.into(),
            port,
            kind: Kind::Write,
            connect_timeout: prober::CLIENT_CONNECT_TIMEOUT,
        };
        let prober = Prober::start_probes(
            env.prober.clock,
            vec![
                target(HOLD_LABEL, 5000),
                target(REJECT_LABEL, edges::REJECT_PORT),
            ],
        )?;
        // Both listeners serve before the switchover starts.
        let t = Instant::now();
        while ![HOLD_LABEL, REJECT_LABEL]
            .iter()
            .all(|l| prober.probes(l).iter().any(|p| p.ok))
        {
            if t.elapsed() > Duration::from_secs(10) {
                let last = |l| prober.probes(l).last().and_then(|p| p.error.clone());
                bail!(
                    "no successful write through :5000 and :{} within 10 s (last errors: {:?}, {:?})",
                    edges::REJECT_PORT,
                    last(HOLD_LABEL),
                    last(REJECT_LABEL)
                );
            }
            Env::sleep(Duration::from_millis(50));
        }
        Ok(Self {
            prober,
            edge,
            before,
        })
    }

    /// The hold and the reject listener's counters on `edge`.
    fn counters(edge: &str) -> Result<[EmptySetCounters; 2]> {
        let v = edges::status(edge).ok_or_else(|| anyhow!("pgrouter on {edge}: no status"))?;
        let get = |l| {
            EmptySetCounters::of(&v, l).ok_or_else(|| {
                anyhow!(
                    "pgrouter on {edge}: no counters of listener {l} in status --json: {:.600}",
                    serde_json::to_string(&v.listeners).unwrap_or_default()
                )
            })
        };
        Ok([get(edges::WRITE_LISTENER)?, get(edges::REJECT_LISTENER)?])
    }

    /// Counts the attempts started in `[action, to)` once they have all ended, reports them
    /// and asserts what each mode promises.
    fn finish(self, env: &Env, o: &mut Outcome, action: u64, to: u64, new: &str) -> Result<()> {
        let deadline = Duration::from_secs(1) + prober::CLIENT_CONNECT_TIMEOUT * 2;
        let ended = self.prober.wait_finished(to, deadline);
        self.prober.stop();
        let after = Self::counters(self.edge)?;
        let (kh, kr) = (
            after[0].since(self.before[0]),
            after[1].since(self.before[1]),
        );
        let hold = prober::attempts(&self.prober.probes(HOLD_LABEL), action, to);
        let rej = prober::attempts(&self.prober.probes(REJECT_LABEL), action, to);
        let line = format!(
            "switchover: new connections — hold: {}; reject: {}",
            mode_text(&hold, kh.rejected),
            mode_text(&rej, kr.rejected)
        );
        o.notes.push(line.clone());
        o.on_empty = Some(line);
        o.notes.push(format!(
            "pgrouter on {}: {} (hold) held {} SYNs, answered {} with a RST, its nodes refused {}; {} (reject) answered {} with a RST, held {}, its nodes refused {}",
            self.edge,
            edges::WRITE_LISTENER,
            kh.held,
            kh.rejected,
            kh.node_refusals,
            edges::REJECT_LISTENER,
            kr.rejected,
            kr.held,
            kr.node_refusals
        ));
        o.check(
            format!("every new connection attempt ended within its deadline ({ended})"),
            ended,
        );
        // The set was empty at most from the action until writes reached the new primary
        // (the 1 s outage probes); the hold promise applies when that is within the hold.
        let hold_ms = u64::from(router_ebpf::DEFAULT_EMPTY_HOLD_MS);
        let back_ms = env
            .prober
            .probes("pgrouter writes")
            .iter()
            .find(|p| p.ok && p.t_ms >= action && p.node.as_deref() == Some(new))
            .map(|p| p.t_ms - action);
        match back_ms {
            Some(b) if b < hold_ms => o.check(
                format!(
                    "hold: no attempt refused by pgrouter or hung, writes back {b} ms after the switchover began (< the {hold_ms} ms hold): pgrouter RSTs +{}, timed out {}, other {}, refused {} <= the nodes' own refusals {}",
                    kh.rejected, hold.timed_out, hold.other, hold.refused, kh.node_refusals
                ),
                kh.rejected == 0
                    && hold.timed_out == 0
                    && hold.other == 0
                    && hold.refused as u64 <= kh.node_refusals,
            ),
            _ => o.notes.push(format!(
                "hold: not asserted, writes back {back_ms:?} ms after the switchover began (hold {hold_ms} ms): RSTs after the hold are expected"
            )),
        }
        o.check(
            format!(
                "reject: every failed attempt was refused at once or by PostgreSQL: refused {} (the longest after {} ms < {PROMPT_MS} ms), timed out {}, other {}",
                rej.refused, rej.longest_refusal_ms, rej.timed_out, rej.other
            ),
            rej.timed_out == 0 && rej.other == 0 && rej.longest_refusal_ms < PROMPT_MS,
        );
        // While the hold listener held a SYN the same set was empty for the reject one, which
        // the prober hit every 100 ms.
        if hold.longest_wait_ms >= PROMPT_MS {
            o.check(
                format!(
                    "reject: pgrouter refused at once while the set was empty (RSTs +{}, refused attempts {})",
                    kr.rejected, rej.refused
                ),
                kr.rejected > 0 && rej.refused > 0,
            );
        }
        Ok(())
    }
}

/// "0 of 37 failed (longest connect 1.02 s)", with the failures by kind. `rsts`: the RSTs
/// pgrouter sent for want of a backend on the listener meanwhile; refusals beyond them came
/// from a node (the old primary's closed port, before that refusal took it out of the set).
fn mode_text(a: &Attempts, rsts: u64) -> String {
    let mut kinds = vec![];
    if a.refused > 0 {
        let by_router = (a.refused as u64).min(rsts);
        let by_node = a.refused as u64 - by_router;
        kinds.push(format!(
            "{} refused {} ({by_router} by pgrouter, {by_node} by a node)",
            a.refused,
            if a.longest_refusal_ms < PROMPT_MS {
                "at once".to_string()
            } else {
                format!("after up to {:.2} s", a.longest_refusal_ms as f64 / 1000.0)
            }
        ));
    }
    if a.timed_out > 0 {
        kinds.push(format!("{} timed out", a.timed_out));
    }
    if a.server > 0 {
        kinds.push(format!(
            "{} by PostgreSQL: {}",
            a.server,
            a.server_error
                .as_deref()
                .map_or("?", |e| e.trim_start_matches("db error: "))
        ));
    }
    if a.other > 0 {
        kinds.push(format!("{} other", a.other));
    }
    format!(
        "{} of {} failed{} (longest connect {:.2} s)",
        a.failed(),
        a.total,
        if kinds.is_empty() {
            String::new()
        } else {
            format!(": {}", kinds.join(", "))
        },
        a.longest_wait_ms as f64 / 1000.0
    )
}

/// Long-lived sessions through the VIP (half on 5000, half on 5001), each running a query
/// every 200 ms on a thread in the client namespace.
pub struct Sessions {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    handle: std::thread::JoinHandle<(u64, Vec<String>)>,
}

impl Sessions {
    pub fn open(_clock: prober::Clock, n: usize) -> Result<Sessions> {
        use std::sync::atomic::{AtomicBool, Ordering};
        let stop = std::sync::Arc::new(AtomicBool::new(false));
        let (tx, rx) = std::sync::mpsc::channel::<Result<()>>();
        let s2 = stop.clone();
        let handle = std::thread::spawn(move || {
            let mut clients = vec![];
            let setup = (|| -> Result<()> {
                let path = format!("/run/netns/{}", crate::lab::cluster::CLIENT_NS);
                let f = std::fs::File::open(&path)?;
                // SAFETY: plain syscall on a valid fd; affects only this thread.
                if unsafe { libc::setns(std::os::fd::AsRawFd::as_raw_fd(&f), libc::CLONE_NEWNET) }
                    != 0
                {
                    bail!("setns: {}", std::io::Error::last_os_error());
                }
                for i in 0..n {
                    let port = if i % 2 == 0 { 5000 } else { 5001 };
                    clients.push((
                        port,
                        prober::connect(VIP, port, Duration::from_secs(2))
                            .with_context(|| format!("session {i} to {VIP}:{port}"))?,
                    ));
                }
                Ok(())
            })();
            let failed = setup.is_err();
            let _ = tx.send(setup);
            if failed {
                return (0, vec![]);
            }
            let (mut queries, mut errors) = (0u64, vec![]);
            let mut dead = vec![false; clients.len()];
            while !s2.load(Ordering::Relaxed) {
                for (i, (port, c)) in clients.iter_mut().enumerate() {
                    if dead[i] {
                        continue;
                    }
                    match c.simple_query("SELECT 1") {
                        Ok(_) => queries += 1,
                        Err(e) => {
                            errors.push(format!("session {i} (:{port}): {e}"));
                            dead[i] = true;
                        }
                    }
                }
                std::thread::sleep(Duration::from_millis(200));
            }
            (queries, errors)
        });
        rx.recv_timeout(Duration::from_secs(10))
            .map_err(|_| anyhow!("sessions: no answer"))??;
        Ok(Sessions { stop, handle })
    }

    /// Stops the sessions; returns (queries run, errors).
    pub fn close(self) -> (u64, Vec<String>) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        self.handle.join().unwrap_or((0, vec!["panicked".into()]))
    }
}

const PGBENCH: &str = "/usr/lib/postgresql/15/bin/pgbench";

/// `pgbench -i -s 5` through the VIP unless the tables exist.
fn pgbench_init(lab: &Lab) -> Result<()> {
    let have = lab.psql_port(
        VIP,
        5000,
        "SELECT to_regclass('pgbench_accounts') IS NOT NULL",
    )?;
    if have == "t" {
        return Ok(());
    }
    let mut c = crate::lab::util::ns_cmd(
        crate::lab::cluster::CLIENT_NS,
        [
            PGBENCH, "-i", "-q", "-s", "5", "-h", VIP, "-p", "5000", "-U", "postgres", "postgres",
        ],
    );
    c.env("PGPASSWORD", crate::lab::cluster::SUPERUSER_PASSWORD);
    crate::lab::util::run(&mut c).context("pgbench -i -s 5 through the VIP")?;
    Ok(())
}

/// `pgbench -S -c 4 -j 2 -T 20 -P 1` through VIP:5000 from the client namespace; progress
/// lines are time-stamped on arrival (the prober's clock).
struct Pgbench {
    child: std::process::Child,
    lines: std::sync::Arc<Mutex<Vec<(u64, String)>>>,
    readers: Vec<std::thread::JoinHandle<()>>,
}

struct PgbenchResult {
    status: i32,
    aborted: bool,
    processed: u64,
    failed: Option<u64>,
    /// (arrival ms, tps) of each `progress:` line.
    progress: Vec<(u64, f64)>,
    output: String,
}

impl Pgbench {
    fn start(env: &Env) -> Result<Pgbench> {
        use std::io::BufRead;
        use std::process::Stdio;
        let mut c = crate::lab::util::ns_cmd(
            crate::lab::cluster::CLIENT_NS,
            [
                PGBENCH, "-h", VIP, "-p", "5000", "-U", "postgres", "-S", "-c", "4", "-j", "2",
                "-T", "20", "-P", "1", "postgres",
            ],
        );
        c.env("PGPASSWORD", crate::lab::cluster::SUPERUSER_PASSWORD)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = c.spawn().context("starting pgbench")?;
        env.event("pgbench -S -c 4 -j 2 -T 20 -P 1 through the VIP started");
        let lines = std::sync::Arc::new(Mutex::new(vec![]));
        let clock = env.prober.clock;
        let mut readers = vec![];
        let out: Vec<Box<dyn std::io::Read + Send>> = vec![
            Box::new(child.stdout.take().expect("piped")),
            Box::new(child.stderr.take().expect("piped")),
        ];
        for r in out {
            let lines = lines.clone();
            readers.push(std::thread::spawn(move || {
                for l in std::io::BufReader::new(r).lines().map_while(Result::ok) {
                    lines.lock().unwrap().push((clock.ms(), l));
                }
            }));
        }
        Ok(Pgbench {
            child,
            lines,
            readers,
        })
    }

    fn wait(mut self) -> Result<PgbenchResult> {
        let st = self.child.wait().context("waiting for pgbench")?;
        for r in self.readers.drain(..) {
            let _ = r.join();
        }
        let lines = std::mem::take(&mut *self.lines.lock().unwrap());
        let output = lines
            .iter()
            .map(|(_, l)| l.as_str())
            .collect::<Vec<_>>()
            .join("\n");
        let num = |prefix: &str| {
            lines.iter().find_map(|(_, l)| {
                l.strip_prefix(prefix)?
                    .split_whitespace()
                    .next()?
                    .split('/')
                    .next()?
                    .parse::<u64>()
                    .ok()
            })
        };
        let progress = lines
            .iter()
            .filter_map(|(t, l)| {
                let rest = l.strip_prefix("progress: ")?;
                let tps = rest.split(", ").nth(1)?.strip_suffix(" tps")?;
                Some((*t, tps.parse::<f64>().ok()?))
            })
            .collect();
        Ok(PgbenchResult {
            status: st.code().unwrap_or(-1),
            aborted: output.contains("aborted") || output.contains("Run was aborted"),
            processed: num("number of transactions actually processed: ").unwrap_or(0),
            failed: num("number of failed transactions: "),
            progress,
            output,
        })
    }
}

impl PgbenchResult {
    /// Mean tps of the progress seconds before `stop`, of the 2 s around the replacement
    /// (the second in which it was stopped and the next one, extended to 1 s after `ready`
    /// if it took longer), and after; plus the lowest second around it. Each `-P 1` line
    /// covers the second before its arrival.
    fn tps_windows(&self, stop: u64, ready: u64) -> (f64, f64, f64, f64) {
        let end = (stop + 2000).max(ready + 1000);
        let mean = |v: Vec<f64>| {
            if v.is_empty() {
                0.0
            } else {
                v.iter().sum::<f64>() / v.len() as f64
            }
        };
        let pick = |f: &dyn Fn(u64) -> bool| {
            self.progress
                .iter()
                .filter(|(t, _)| f(*t))
                .map(|(_, x)| *x)
                .collect::<Vec<_>>()
        };
        let around = pick(&|t| t > stop && t <= end);
        let min = around.iter().copied().fold(f64::INFINITY, f64::min);
        (
            mean(pick(&|t| t <= stop)),
            mean(around),
            mean(pick(&|t| t > end)),
            if min.is_finite() { min } else { 0.0 },
        )
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_mode_line_attributes_refusals_to_pgrouter_or_a_node() {
        let a = Attempts {
            total: 56,
            refused: 25,
            longest_wait_ms: 8,
            longest_refusal_ms: 3,
            ..Default::default()
        };
        assert_eq!(
            mode_text(&a, 24),
            "25 of 56 failed: 25 refused at once (24 by pgrouter, 1 by a node) (longest connect 0.01 s)"
        );
        let held = Attempts {
            total: 37,
            longest_wait_ms: 1020,
            ..Default::default()
        };
        assert_eq!(
            mode_text(&held, 0),
            "0 of 37 failed (longest connect 1.02 s)"
        );
    }
}
