//! The scenarios, one `Env` method each: what is done to the cluster or the edges, and what
//! the client must have seen.
use super::load::{Pgbench, Sessions, pgbench_init};
use super::on_empty::OnEmptyProbe;
use super::{Env, Outcome};
use crate::demo::edges;
use crate::demo::prober;
use crate::lab::VIP;
use anyhow::{Context, anyhow};
use std::time::{Duration, Instant};

impl Env {
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
