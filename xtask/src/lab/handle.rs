//! The lab handle: where its state lives, Patroni's timing, and the whole-lab actions
//! (up, status). The other concerns are `impl Lab` blocks in their own modules.
use super::topology::{
    CLIENT_NS, HOSTS, LAB_DIR, PG_NODES, SUPERUSER, SUPERUSER_PASSWORD, VENV, VIP,
};
use super::util::{cmd, ns_cmd, pid_alive, pidfile_alive, proc_state, run, tail, wait_for};
use anyhow::{Context, Result, bail};
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::time::{Duration, Instant};

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

impl Lab {
    pub fn new(timing: Timing) -> Self {
        Lab {
            dir: PathBuf::from(LAB_DIR),
            timing,
        }
    }

    pub(super) fn run_dir(&self) -> PathBuf {
        self.dir.join("run")
    }
    pub(super) fn node_dir(&self, node: &str) -> PathBuf {
        self.dir.join(node)
    }
    pub(super) fn pidfile(&self, what: &str) -> PathBuf {
        self.run_dir().join(format!("{what}.pid"))
    }
    pub(super) fn etcd_log(&self) -> PathBuf {
        self.dir.join("etcd/etcd.log")
    }
    pub(super) fn patroni_log(&self, node: &str) -> PathBuf {
        self.node_dir(node).join("patroni.log")
    }
    pub(super) fn pg_log(&self, node: &str) -> PathBuf {
        self.node_dir(node).join("log/postgresql.log")
    }
    pub(super) fn config_path(&self, node: &str) -> PathBuf {
        self.node_dir(node).join("patroni.yml")
    }

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
}

#[cfg(test)]
mod tests {
    use super::*;

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
        assert!(!std::path::Path::new(LAB_DIR).exists());
    }
}
