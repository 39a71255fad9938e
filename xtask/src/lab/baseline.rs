//! The setup pgrouter replaces, runnable in the lab for side-by-side demos and
//! benchmarks: HAProxy + Keepalived on edge1/edge2 (configs from the seed
//! article, adapted to the lab: lab/haproxy.cfg.tmpl, lab/keepalived.conf.tmpl).
//! HAProxy is started by the lab's edge module, like the demo's and the bench's.
use super::util::wait_for;
use super::{EDGES, Lab, VIP, host};
use anyhow::{Context, Result, bail};
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

const KEEPALIVED_TMPL: &str = include_str!("../../../lab/keepalived.conf.tmpl");

impl Lab {
    fn edge_dir(&self, edge: &str) -> PathBuf {
        self.dir.join(edge)
    }

    /// keepalived.conf for `edge` (edge1: MASTER 101, edge2: BACKUP 100).
    pub fn render_keepalived(&self, edge: &str) -> Result<String> {
        let me = host(edge)?;
        let peer = host(if edge == "edge1" { "edge2" } else { "edge1" })?;
        let (state, prio) = if edge == "edge1" {
            ("MASTER", "101")
        } else {
            ("BACKUP", "100")
        };
        let check = self.edge_dir(edge).join("chk-haproxy.sh");
        let cfg = KEEPALIVED_TMPL
            .replace("{{EDGE}}", edge)
            .replace("{{STATE}}", state)
            .replace("{{PRIORITY}}", prio)
            .replace("{{SRC}}", me.addr)
            .replace("{{PEER}}", peer.addr)
            .replace("{{VIP}}", VIP)
            .replace("{{CHECK}}", &check.to_string_lossy());
        if cfg.contains("{{") {
            bail!("keepalived.conf.tmpl: unknown placeholder");
        }
        Ok(cfg)
    }

    /// Starts HAProxy and Keepalived on both edges (installing them if
    /// missing) and waits until the VIP is on edge1 and VIP:5000 reaches the
    /// primary. Fails if pgrouter (or anything) already holds the VIP.
    pub fn baseline_up(&self) -> Result<()> {
        let t = Instant::now();
        if !Path::new("/run/netns/pgrlab-edge1").exists() {
            bail!("lab is not up (run `cargo xtask lab up` first)");
        }
        let holders = self.vip_holders();
        if !holders.is_empty() {
            bail!("VIP {VIP} already on {holders:?}: stop pgrouter/baseline first");
        }
        super::install::ensure_packages(&["haproxy", "keepalived"])?;
        for edge in EDGES {
            let d = self.edge_dir(edge);
            fs::create_dir_all(&d).with_context(|| format!("mkdir {}", d.display()))?;
            fs::set_permissions(&d, fs::Permissions::from_mode(0o755))?;
            let pidfile = self.dir.join(format!("run/haproxy-{edge}.pid"));
            let check = d.join("chk-haproxy.sh");
            fs::write(
                &check,
                format!(
                    "#!/bin/sh\n# exits 0 while {edge}'s haproxy runs (not a zombie)\n\
                     pid=$(cat {}) || exit 1\n\
                     state=$(sed 's/.*) //' /proc/$pid/stat 2>/dev/null | cut -c1)\n\
                     [ -n \"$state\" ] && [ \"$state\" != Z ]\n",
                    pidfile.display()
                ),
            )?;
            fs::set_permissions(&check, fs::Permissions::from_mode(0o755))?;
            let kcfg = d.join("keepalived.conf");
            fs::write(&kcfg, self.render_keepalived(edge)?)?;
            super::edge::start_haproxy(self, edge, &format!("haproxy-{edge}"), &d)?;
            let s = |v: &str| v.to_string();
            let p = |f: &str| d.join(f).to_string_lossy().into_owned();
            self.spawn(
                edge,
                &format!("keepalived-{edge}"),
                &[
                    s("keepalived"),
                    s("--dont-fork"),
                    s("--log-console"),
                    s("-f"),
                    p("keepalived.conf"),
                    s("-p"),
                    p("keepalived.pid"),
                    s("-r"),
                    p("keepalived-vrrp.pid"),
                    s("-c"),
                    p("keepalived-checkers.pid"),
                ],
            )?;
        }
        wait_for(
            "the VIP on edge1",
            Duration::from_secs(20),
            Duration::from_millis(250),
            || Ok((self.vip_holders() == ["edge1"]).then_some(())),
        )?;
        println!(
            "lab: baseline: VIP {VIP} on edge1 after {:.1?}",
            t.elapsed()
        );
        let leader = self.leader()?;
        // HAProxy starts with every server up; wait until its checks settle.
        let mut good = 0;
        wait_for(
            "HAProxy VIP:5000 to reach the primary",
            Duration::from_secs(30),
            Duration::from_millis(500),
            || {
                let ok = self
                    .psql_port(VIP, 5000, "SELECT NOT pg_is_in_recovery()")
                    .map(|s| s == "t")
                    .unwrap_or(false)
                    && self.psql_port(VIP, 5001, "SELECT 1").is_ok();
                good = if ok { good + 1 } else { 0 };
                Ok((good >= 6).then_some(()))
            },
        )?;
        println!(
            "lab: baseline: HAProxy+Keepalived up in {:.1?}; VIP:5000 -> primary {} ({})",
            t.elapsed(),
            leader.name,
            leader.host
        );
        Ok(())
    }

    /// Stops the baseline's HAProxy and Keepalived on both edges.
    pub fn baseline_down(&self) -> Result<()> {
        let mut any = false;
        for edge in EDGES {
            any |= self.kill_proc(&format!("keepalived-{edge}"), libc::SIGTERM)?;
            any |= self.kill_proc(&format!("haproxy-{edge}"), libc::SIGTERM)?;
            for n in ["keepalived", "haproxy"] {
                let _ = fs::remove_file(self.dir.join(format!("run/{n}-{edge}.pid")));
            }
        }
        if !self.vip_holders().is_empty() {
            println!(
                "lab: baseline: warning: VIP still on {:?}",
                self.vip_holders()
            );
        }
        println!(
            "lab: baseline: {}",
            if any { "stopped" } else { "was not running" }
        );
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keepalived_configs_pair_up() {
        let lab = Lab::default();
        let a = lab.render_keepalived("edge1").unwrap();
        let b = lab.render_keepalived("edge2").unwrap();
        assert!(a.contains("state MASTER") && a.contains("priority 101"));
        assert!(b.contains("state BACKUP") && b.contains("priority 100"));
        assert!(a.contains("unicast_src_ip 198.18.0.21") && a.contains("        198.18.0.22\n"));
        assert!(b.contains("unicast_src_ip 198.18.0.22") && b.contains("        198.18.0.21\n"));
        assert!(a.contains("198.18.0.100/24 dev eth0"));
        assert!(a.contains("/var/lib/pgrouter-lab/edge1/chk-haproxy.sh"));
    }
}
