//! etcd and Patroni: their configs and processes, Patroni's REST API (`GET /cluster`,
//! `POST /switchover`) and the planned node actions (start, stop).
use super::Lab;
use super::procs::spawn_daemon;
use super::topology::{
    CLIENT_NS, ETCD_ADDR, PG_BIN, PG_NODES, REPLICATION_PASSWORD, REPLICATION_USER, SUBNET,
    SUPERUSER_PASSWORD, VENV, host, node_name,
};
use super::util::{
    cmd, http, netns_pids, ns_cmd, pid_alive, pidfile_alive, run, signal, tail, wait_for, wait_gone,
};
use anyhow::{Context, Result, anyhow, bail};
use serde_json::Value;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::{Duration, Instant};

const TEMPLATE: &str = include_str!("../../../lab/patroni.yml.tmpl");
/// Bound on one Patroni or etcd REST call.
pub(super) const REST_TIMEOUT: Duration = Duration::from_secs(3);

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

impl Lab {
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

    pub(super) fn write_config(&self, node: &str) -> Result<()> {
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
    pub(super) fn start_node_process(&self, node: &str) -> Result<i32> {
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

    // ------------------------------------------------ planned actions

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
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lab::Timing;

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
}
