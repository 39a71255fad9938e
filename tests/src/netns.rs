//! Network namespaces for tests: [`in_netns`] runs code inside a named one,
//! [`enter_private`] gives a thread its own, and a [`Lab`] builds bridges, veths and hosts
//! named by a per-test prefix. `Lab::new` first removes whatever an earlier, killed run with
//! the same prefix left (namespaces, links, processes by pidfile, bpffs mounts), and `Drop`
//! removes everything again, also on panic.
use std::{
    fs,
    os::fd::AsRawFd as _,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
};

use crate::{config::Config, run, sh};

/// Runs `f` on a thread that has joined the named namespace `ns` (from `ip netns add`), so
/// test code can open real sockets as a host of the lab would; returns what `f` returned.
/// To keep it running in the background, call this on a thread of your own.
pub fn in_netns<T: Send + 'static>(
    ns: &str,
    f: impl FnOnce() -> T + Send + 'static,
) -> anyhow::Result<T> {
    let path = format!("/run/netns/{ns}");
    let file = fs::File::open(&path).map_err(|e| anyhow::anyhow!("{path}: {e}"))?;
    let h = std::thread::spawn(move || -> anyhow::Result<T> {
        // SAFETY: setns(2) on an open namespace file; affects only this new thread.
        if unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
            anyhow::bail!("setns {path}: {}", std::io::Error::last_os_error());
        }
        Ok(f())
    });
    h.join()
        .map_err(|_| anyhow::anyhow!("thread in {ns} panicked"))?
}

/// Moves the calling thread into a new, anonymous network namespace. It disappears with the
/// thread, so kernel tests need no clean-up of their own.
pub fn enter_private() -> anyhow::Result<()> {
    // SAFETY: unshare(2) of the calling thread's network namespace only.
    if unsafe { libc::unshare(libc::CLONE_NEWNET) } != 0 {
        anyhow::bail!("unshare(CLONE_NEWNET): {}", std::io::Error::last_os_error());
    }
    Ok(())
}

pub struct Lab {
    pub prefix: String,
    /// Per-test folder: pidfiles, logs, configs, pins.
    pub dir: PathBuf,
    children: Vec<Child>,
    /// Children Drop first asks to stop with a signal (see [`Lab::stop_on_drop`]).
    graceful: Vec<(u32, i32)>,
    veth_count: u32,
}

fn state_dir(prefix: &str) -> PathBuf {
    PathBuf::from(format!("/run/pgrouter-tests/{prefix}"))
}

/// Removes namespaces, links, processes and mounts left by a run with this prefix.
pub fn cleanup_prefix(prefix: &str) {
    let dir = state_dir(prefix);
    if let Ok(entries) = fs::read_dir(&dir) {
        for e in entries.flatten() {
            let p = e.path();
            if p.extension().is_some_and(|x| x == "pid")
                && let Ok(s) = fs::read_to_string(&p)
                && let Ok(pid) = s.trim().parse::<i32>()
                && pid > 1
            {
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
        }
    }
    if let Ok(out) = run("ip", &["netns", "list"]) {
        for line in String::from_utf8_lossy(&out.stdout).lines() {
            let name = line.split_whitespace().next().unwrap_or("");
            if name.starts_with(prefix) {
                let _ = run("ip", &["netns", "del", name]);
            }
        }
    }
    if let Ok(out) = run("ip", &["-o", "link", "show"]) {
        for line in String::from_utf8_lossy(&out.stdout).lines() {
            let Some(name) = line.split(':').nth(1) else {
                continue;
            };
            let name = name.trim().split('@').next().unwrap_or("");
            if name.starts_with(prefix) {
                let _ = run("ip", &["link", "del", name]);
            }
        }
    }
    if let Ok(mounts) = fs::read_to_string("/proc/mounts") {
        let d = dir.to_string_lossy().into_owned();
        let mut points: Vec<&str> = mounts
            .lines()
            .filter_map(|l| l.split_whitespace().nth(1))
            .filter(|m| m.starts_with(&d))
            .collect();
        points.sort_by_key(|p| std::cmp::Reverse(p.len()));
        for m in points {
            let _ = run("umount", &["-l", m]);
        }
    }
    let _ = fs::remove_dir_all(&dir);
}

impl Lab {
    pub fn new(prefix: &str) -> anyhow::Result<Self> {
        cleanup_prefix(prefix);
        let dir = state_dir(prefix);
        fs::create_dir_all(&dir)?;
        Ok(Self {
            prefix: prefix.to_string(),
            dir,
            children: Vec::new(),
            graceful: Vec::new(),
            veth_count: 0,
        })
    }

    /// Full name of a namespace of this lab.
    pub fn ns(&self, short: &str) -> String {
        format!("{}{short}", self.prefix)
    }

    pub fn add_ns(&self, short: &str) -> anyhow::Result<String> {
        let ns = self.ns(short);
        run("ip", &["netns", "add", &ns])?;
        run("ip", &["-n", &ns, "link", "set", "lo", "up"])?;
        Ok(ns)
    }

    pub fn add_bridge(&self, short: &str) -> anyhow::Result<String> {
        let br = self.ns(short);
        run("ip", &["link", "add", &br, "type", "bridge"])?;
        run("ip", &["link", "set", &br, "up"])?;
        Ok(br)
    }

    /// Joins `ns` to bridge `br` with a veth named `ifname` inside `ns`, address `cidr`, tx
    /// checksum offload off on both ends (XDP rewrites need full checksums, as from a wire).
    pub fn connect(&mut self, ns: &str, ifname: &str, br: &str, cidr: &str) -> anyhow::Result<()> {
        self.veth_count += 1;
        let host = format!("{}v{}", self.prefix, self.veth_count);
        let peer = format!("{}p{}", self.prefix, self.veth_count);
        run(
            "ip",
            &["link", "add", &host, "type", "veth", "peer", "name", &peer],
        )?;
        run("ip", &["link", "set", &host, "master", br, "up"])?;
        run("ip", &["link", "set", &peer, "netns", ns])?;
        run("ip", &["-n", ns, "link", "set", &peer, "name", ifname])?;
        run("ip", &["-n", ns, "addr", "add", cidr, "dev", ifname])?;
        run("ip", &["-n", ns, "link", "set", ifname, "up"])?;
        sh(&format!("ethtool -K {host} tx off >/dev/null"))?;
        sh(&format!(
            "ip netns exec {ns} ethtool -K {ifname} tx off >/dev/null"
        ))?;
        Ok(())
    }

    /// The bridge-side end of the veth the last [`Lab::connect`] (or [`Lab::add_host`])
    /// made: setting it down cuts that host off the bridge, as a dead host or switch port
    /// looks to the others (the host sees its carrier go: a veth's follows its peer).
    pub fn last_bridge_port(&self) -> String {
        format!("{}v{}", self.prefix, self.veth_count)
    }

    /// A new namespace `short` joined to bridge `br` as `eth0` with address `cidr`.
    pub fn add_host(&mut self, short: &str, br: &str, cidr: &str) -> anyhow::Result<String> {
        let ns = self.add_ns(short)?;
        self.connect(&ns, "eth0", br, cidr)?;
        Ok(ns)
    }

    /// Runs a command in `ns` to completion.
    pub fn exec(&self, ns: &str, script: &str) -> anyhow::Result<String> {
        sh(&format!(
            "ip netns exec {ns} sh -c '{}'",
            script.replace('\'', "'\\''")
        ))
    }

    /// Starts a long-running process in `ns`, logging to `<dir>/<name>.log`; its pid is
    /// recorded so a later run can stop it, and Drop kills it.
    pub fn spawn(&mut self, ns: &str, name: &str, argv: &[&str]) -> anyhow::Result<u32> {
        let log = fs::File::create(self.dir.join(format!("{name}.log")))?;
        let child = Command::new("ip")
            .args(["netns", "exec", ns])
            .args(argv)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()?;
        let pid = child.id();
        fs::write(self.dir.join(format!("{name}.pid")), pid.to_string())?;
        self.children.push(child);
        Ok(pid)
    }

    /// Runs the real daemon, `pgrouter run -c CONFIG`, in `ns` (log and pid file `name`).
    pub fn spawn_pgrouter(&mut self, ns: &str, name: &str, config: &Path) -> anyhow::Result<u32> {
        let bin = crate::pgrouter_bin();
        let (bin, config) = (bin.to_string_lossy(), config.to_string_lossy());
        self.spawn(ns, name, &[&bin, "run", "-c", &config])
    }

    /// A PostgreSQL stand-in in `ns`, `pgr-echo` on `addr` (`IP:PORT`): it announces `name`
    /// and a newline, then echoes. Log and pid file `name`.
    pub fn spawn_echo(&mut self, ns: &str, name: &str, addr: &str) -> anyhow::Result<u32> {
        let bin = crate::test_bin("pgr-echo");
        self.spawn(ns, name, &[&bin.to_string_lossy(), name, addr])
    }

    /// A fake Patroni REST API for `node` in `ns` on `addr`, answering as `state` says (see
    /// [`Lab::set_patroni`]). Log and pid file `<node>-api`.
    pub fn spawn_fake_patroni(
        &mut self,
        ns: &str,
        node: &str,
        addr: &str,
        state: &str,
    ) -> anyhow::Result<u32> {
        self.set_patroni(&[(node, state)])?;
        let bin = crate::test_bin("pgr-fake-patroni");
        let file = self.dir.join(format!("{node}.state"));
        let (bin, file) = (bin.to_string_lossy(), file.to_string_lossy());
        self.spawn(ns, &format!("{node}-api"), &[&bin, node, addr, &file])
    }

    /// Sets nodes' fake Patroni states (`"primary tl=1"`, …): all written first, then renamed
    /// into place back to back, so they take effect together (each fake re-reads its file on
    /// every request).
    pub fn set_patroni(&self, states: &[(&str, &str)]) -> anyhow::Result<()> {
        for (node, state) in states {
            fs::write(
                self.dir.join(format!("{node}.state.tmp")),
                format!("{state}\n"),
            )?;
        }
        for (node, _) in states {
            fs::rename(
                self.dir.join(format!("{node}.state.tmp")),
                self.dir.join(format!("{node}.state")),
            )?;
        }
        Ok(())
    }

    /// Writes `config` to `<dir>/<name>.toml` and returns the path.
    pub fn write_config(&self, name: &str, config: &Config) -> anyhow::Result<PathBuf> {
        let path = self.dir.join(format!("{name}.toml"));
        config.write(&path)?;
        Ok(path)
    }

    /// Starts `pgrouter run` in `ns` as a host would: its pins on a bpffs mounted at `pins`
    /// from our mount namespace (see [`crate::mount_bpffs`]), `config` written to
    /// `<dir>/<name>.toml`, log and pid file `name`. Returns the pid and the config's path.
    pub fn run_pgrouter(
        &mut self,
        ns: &str,
        name: &str,
        config: &Config,
        pins: &Path,
    ) -> anyhow::Result<(u32, PathBuf)> {
        crate::mount_bpffs(pins)?;
        let path = self.write_config(name, config)?;
        let pid = self.spawn_pgrouter(ns, name, &path)?;
        Ok((pid, path))
    }

    /// SIGKILLs one process this lab started.
    pub fn kill(&mut self, pid: u32) {
        if let Some(i) = self.children.iter().position(|c| c.id() == pid) {
            let mut c = self.children.remove(i);
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Sends a signal to a process this lab started and waits (bounded) for it to exit.
    pub fn signal_and_wait(&mut self, pid: u32, sig: i32, timeout: std::time::Duration) -> bool {
        let Some(i) = self.children.iter().position(|c| c.id() == pid) else {
            return false;
        };
        unsafe { libc::kill(pid as i32, sig) };
        let start = std::time::Instant::now();
        while start.elapsed() < timeout {
            if let Ok(Some(_)) = self.children[i].try_wait() {
                let mut c = self.children.remove(i);
                let _ = c.wait();
                return true;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        false
    }

    /// Waits up to `timeout` (zero: only looks) for a process this lab started to exit;
    /// returns its exit status once it has (and forgets it), `None` while it runs or when it
    /// is not one of this lab's.
    pub fn wait_exit(
        &mut self,
        pid: u32,
        timeout: std::time::Duration,
    ) -> Option<std::process::ExitStatus> {
        let i = self.children.iter().position(|c| c.id() == pid)?;
        let start = std::time::Instant::now();
        loop {
            if let Ok(Some(st)) = self.children[i].try_wait() {
                // Reaped already: wait() only hands back the status.
                let _ = self.children.remove(i).wait();
                return Some(st);
            }
            if start.elapsed() >= timeout {
                return None;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
    }

    /// On drop, sends `signal` to this lab's process `pid` and gives it 10 s to exit before
    /// the SIGKILL every child gets (a server that must remove what it holds, as PostgreSQL
    /// its System V shared memory segment on a fast shutdown).
    pub fn stop_on_drop(&mut self, pid: u32, signal: i32) {
        self.graceful.push((pid, signal));
    }

    pub fn log(&self, name: &str) -> String {
        fs::read_to_string(self.dir.join(format!("{name}.log"))).unwrap_or_default()
    }
}

/// The service address of [`Topology`]'s edge host.
pub const VIP: &str = "198.18.0.100";
/// The PostgreSQL nodes the network tests put on [`Topology`]'s bridge, and their addresses.
pub const NODES: [(&str, &str); 3] = [
    ("pg1", "198.18.0.11"),
    ("pg2", "198.18.0.12"),
    ("pg3", "198.18.0.13"),
];

/// The network tests' edge-host lab: bridge `br`; the client `cl` at 198.18.0.30 and the
/// edge host `edge` at 198.18.0.21, which holds the [`VIP`] (/32), each on `eth0`; nodes
/// ([`NODES`]) come after. With `peer_xdp`, `xdp_pass` on the edge's bridge-side veth (`<prefix>v2`): native
/// XDP on a veth delivers XDP_TX frames only when its peer has a program (see
/// [`crate::attach_peer_xdp_pass`]); it stays attached while the returned object lives.
pub struct Topology {
    pub lab: Lab,
    pub br: String,
    pub client: String,
    pub edge: String,
    pub peer_xdp: Option<aya::Ebpf>,
}

impl Topology {
    pub fn new(prefix: &str, peer_xdp: bool) -> anyhow::Result<Self> {
        let mut lab = Lab::new(prefix)?;
        let br = lab.add_bridge("br")?;
        let client = lab.add_host("cl", &br, "198.18.0.30/24")?;
        let edge = lab.add_host("edge", &br, "198.18.0.21/24")?;
        lab.exec(&edge, &format!("ip addr add {VIP}/32 dev eth0"))?;
        let peer_xdp = match peer_xdp {
            true => Some(crate::attach_peer_xdp_pass(&format!("{prefix}v2"))?),
            false => None,
        };
        Ok(Self {
            lab,
            br,
            client,
            edge,
            peer_xdp,
        })
    }

    /// `(lab, br, client, edge, peer_xdp)`, for a test's own set-up struct.
    pub fn parts(self) -> (Lab, String, String, String, Option<aya::Ebpf>) {
        (self.lab, self.br, self.client, self.edge, self.peer_xdp)
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for (pid, sig) in std::mem::take(&mut self.graceful) {
            self.signal_and_wait(pid, sig, std::time::Duration::from_secs(10));
        }
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
        cleanup_prefix(&self.prefix);
    }
}
