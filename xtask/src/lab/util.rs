//! Small helpers for the lab: running commands, network namespaces, a tiny
//! HTTP client (run inside a lab namespace), processes and pidfiles.
use anyhow::{Context, Result, anyhow, bail};
use std::ffi::OsStr;
use std::fs;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::fd::AsRawFd;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Human readable form of a command line, for error messages.
pub fn show(c: &Command) -> String {
    let mut s = c.get_program().to_string_lossy().into_owned();
    for a in c.get_args() {
        s.push(' ');
        s.push_str(&a.to_string_lossy());
    }
    s
}

/// `prog args…`
pub fn cmd<I, S>(prog: &str, args: I) -> Command
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let mut c = Command::new(prog);
    c.args(args);
    c
}

/// `ip netns exec <ns> args…`
pub fn ns_cmd<I, S>(ns: &str, args: I) -> Command
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let mut c = Command::new("ip");
    c.args(["netns", "exec", ns]);
    c.args(args);
    c
}

/// Runs a command to completion; returns stdout. The error names the command,
/// its exit status and its stderr.
pub fn run(c: &mut Command) -> Result<String> {
    let out = c
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("could not start `{}`", show(c)))?;
    if !out.status.success() {
        bail!(
            "`{}` failed ({}): {}{}",
            show(c),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim(),
            String::from_utf8_lossy(&out.stdout).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Runs a command, ignoring failures (cleanup paths). Returns success.
pub fn run_quiet(c: &mut Command) -> bool {
    c.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

/// Runs `f` on a thread that has joined network namespace `ns`
/// (`/run/netns/<ns>`), so sockets it opens live in that namespace.
pub fn in_netns<T: Send>(ns: &str, f: impl FnOnce() -> Result<T> + Send) -> Result<T> {
    let path = format!("/run/netns/{ns}");
    std::thread::scope(|s| {
        s.spawn(|| {
            let file = fs::File::open(&path)
                .with_context(|| format!("network namespace {ns} missing ({path})"))?;
            // SAFETY: plain syscall on a valid fd; affects only this thread.
            let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
            if rc != 0 {
                bail!("setns({path}): {}", std::io::Error::last_os_error());
            }
            f()
        })
        .join()
        .map_err(|_| anyhow!("thread in netns {ns} panicked"))?
    })
}

/// One HTTP/1.0 request from inside namespace `ns` to `addr` (ip:port).
/// Returns (status, body).
pub fn http(
    ns: &str,
    addr: &str,
    method: &str,
    path: &str,
    body: Option<&str>,
    timeout: Duration,
) -> Result<(u16, String)> {
    let sa: SocketAddr = addr
        .parse()
        .with_context(|| format!("bad address {addr}"))?;
    let req = match body {
        Some(b) => format!(
            "{method} {path} HTTP/1.0\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{b}",
            b.len()
        ),
        None => format!("{method} {path} HTTP/1.0\r\nHost: {addr}\r\nConnection: close\r\n\r\n"),
    };
    let raw = in_netns(ns, || {
        let mut s = TcpStream::connect_timeout(&sa, timeout)
            .with_context(|| format!("connect {addr} (from {ns})"))?;
        s.set_read_timeout(Some(timeout))?;
        s.set_write_timeout(Some(timeout))?;
        s.write_all(req.as_bytes())?;
        let mut buf = Vec::new();
        s.read_to_end(&mut buf)
            .with_context(|| format!("{method} http://{addr}{path}: read"))?;
        Ok(buf)
    })?;
    let text = String::from_utf8_lossy(&raw);
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse::<u16>().ok())
        .ok_or_else(|| anyhow!("{method} http://{addr}{path}: bad response {head:?}"))?;
    Ok((status, body.to_string()))
}

/// Polls `f` every `every` until it returns `Some`, or fails after `timeout`
/// with the last error/state seen.
pub fn wait_for<T>(
    what: &str,
    timeout: Duration,
    every: Duration,
    mut f: impl FnMut() -> Result<Option<T>>,
) -> Result<T> {
    let start = Instant::now();
    let mut last = String::from("no answer yet");
    loop {
        match f() {
            Ok(Some(v)) => return Ok(v),
            Ok(None) => {}
            Err(e) => last = format!("{e:#}"),
        }
        if start.elapsed() >= timeout {
            bail!(
                "timed out after {:?} waiting for {what} (last error: {last})",
                timeout
            );
        }
        std::thread::sleep(every);
    }
}

/// Process state letter from /proc/<pid>/stat (None if gone).
pub fn proc_state(pid: i32) -> Option<char> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after = stat.rsplit_once(')')?.1;
    after.trim_start().chars().next()
}

/// True if `pid` exists and is not a zombie.
pub fn pid_alive(pid: i32) -> bool {
    pid > 0 && matches!(proc_state(pid), Some(c) if c != 'Z' && c != 'X')
}

/// Command line of `pid` (NULs replaced by spaces).
pub fn cmdline(pid: i32) -> String {
    fs::read(format!("/proc/{pid}/cmdline"))
        .map(|b| {
            String::from_utf8_lossy(&b)
                .replace('\0', " ")
                .trim()
                .to_string()
        })
        .unwrap_or_default()
}

/// PID from a pidfile, if the process is alive and its command line contains
/// `expect` (guards against PID reuse).
pub fn pidfile_alive(path: &Path, expect: &str) -> Option<i32> {
    let pid: i32 = fs::read_to_string(path).ok()?.trim().parse().ok()?;
    (pid_alive(pid) && cmdline(pid).contains(expect)).then_some(pid)
}

pub fn signal(pid: i32, sig: i32) {
    if pid > 0 {
        // SAFETY: kill(2) on a specific positive PID.
        unsafe {
            libc::kill(pid, sig);
        }
    }
}

/// Waits until none of `pids` is alive; true on success.
pub fn wait_gone(pids: &[i32], timeout: Duration) -> bool {
    let start = Instant::now();
    while start.elapsed() < timeout {
        if pids.iter().all(|&p| !pid_alive(p)) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    pids.iter().all(|&p| !pid_alive(p))
}

/// PIDs of all processes in network namespace `ns` (`ip netns pids`).
pub fn netns_pids(ns: &str) -> Vec<i32> {
    run(&mut cmd("ip", ["netns", "pids", ns]))
        .map(|s| {
            s.split_whitespace()
                .filter_map(|p| p.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

/// Last `n` lines of a file (or a note that it is missing).
pub fn tail(path: &Path, n: usize) -> String {
    match fs::read_to_string(path) {
        Ok(s) => {
            let lines: Vec<&str> = s.lines().collect();
            lines[lines.len().saturating_sub(n)..].join("\n")
        }
        Err(e) => format!("({}: {e})", path.display()),
    }
}

/// Writes a sysctl (`net.ipv4.ip_forward`) inside namespace `ns`, through
/// /proc/sys from a thread that joined the namespace.
pub fn ns_sysctl(ns: &str, key: &str, val: &str) -> Result<()> {
    let path = format!("/proc/sys/{}", key.replace('.', "/"));
    in_netns(ns, || {
        fs::write(&path, val).with_context(|| format!("write {path} in {ns}"))
    })
}
