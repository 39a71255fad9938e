//! Processes the lab starts: detached daemons with pidfiles and logs (`spawn`,
//! `kill-proc`), commands run in a lab namespace, and the PostgreSQL processes of a node.
use super::Lab;
use super::topology::{PG_NODES, ns_name};
use super::util::{cmdline, ns_cmd, pid_alive, pidfile_alive, show, signal, tail, wait_gone};
use anyhow::{Context, Result, bail};
use std::fs;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

impl Lab {
    pub fn patroni_pid(&self, node: &str) -> Option<i32> {
        pidfile_alive(&self.pidfile(node), "patroni")
    }

    /// PID of the node's postmaster (first line of postmaster.pid), if alive.
    pub fn postmaster_pid(&self, node: &str) -> Option<i32> {
        let s = fs::read_to_string(self.node_dir(node).join("data/postmaster.pid")).ok()?;
        let pid: i32 = s.lines().next()?.trim().parse().ok()?;
        (pid_alive(pid) && cmdline(pid).contains("postgres")).then_some(pid)
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

    pub(super) fn startup_pid(&self, node: &str) -> Option<i32> {
        self.postmaster_children(node)
            .into_iter()
            .find(|(_, c)| c.contains("startup"))
            .map(|(p, _)| p)
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
pub(super) fn spawn_daemon(mut c: Command, log: &Path, pidfile: &Path, cwd: &Path) -> Result<i32> {
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
