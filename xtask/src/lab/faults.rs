//! Faults the scenarios inject: node crashes, a lagging replica, a DCS outage, a pulled
//! cable.
use super::Lab;
use super::patroni::REST_TIMEOUT;
use super::topology::{CLIENT_NS, PG_NODES, host, node_name, ns_name};
use super::util::{
    cmd, http, netns_pids, pidfile_alive, proc_state, run, signal, wait_for, wait_gone,
};
use anyhow::{Result, anyhow, bail};
use std::time::{Duration, Instant};

impl Lab {
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
}
