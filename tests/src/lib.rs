//! Shared helpers for pgrouter's root-only tests: network namespaces that clean up after
//! themselves, the daemon's configs, commands with bounded waits, frame builders,
//! `BPF_PROG_TEST_RUN`, and a real PostgreSQL server with its clients (`postgres`).
pub mod config;
pub mod flows;
pub mod frames;
pub mod netns;
pub mod pinned;
pub mod postgres;
pub mod raw;
pub mod xdp;

use std::{
    process::{Command, Output},
    time::{Duration, Instant},
};

/// Runs a command, failing with its stderr if it exits non-zero.
pub fn run(cmd: &str, args: &[&str]) -> anyhow::Result<Output> {
    let out = Command::new(cmd).args(args).output()?;
    if !out.status.success() {
        anyhow::bail!(
            "{cmd} {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(out)
}

/// `sh -c` for set-up lines; fails with the command and its stderr.
pub fn sh(script: &str) -> anyhow::Result<String> {
    let out = run("sh", &["-c", script])?;
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Polls `f` every 10 ms until it returns `Some`, or fails after `timeout` naming `what`.
pub fn wait_for<T>(
    what: &str,
    timeout: Duration,
    mut f: impl FnMut() -> Option<T>,
) -> anyhow::Result<T> {
    let start = Instant::now();
    loop {
        if let Some(v) = f() {
            return Ok(v);
        }
        if start.elapsed() > timeout {
            anyhow::bail!("timed out after {timeout:?} waiting for {what}");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// The `pgrouter` binary next to this test binary (built by `cargo xtask test` first).
pub fn pgrouter_bin() -> std::path::PathBuf {
    bin("pgrouter", "run `cargo build -p router-user` first")
}

/// A binary of this crate (`pgr-echo`, `pgr-fake-patroni`), built by cargo with its tests.
pub fn test_bin(name: &str) -> std::path::PathBuf {
    bin(name, "run `cargo build -p tests --bins` first")
}

/// `name` in the folder above this test binary's (`target/debug`).
fn bin(name: &str, hint: &str) -> std::path::PathBuf {
    let exe = std::env::current_exe().expect("test binary path");
    let dir = exe.parent().and_then(|d| d.parent()).expect("target dir");
    let bin = dir.join(name);
    assert!(bin.exists(), "{} missing: {hint}", bin.display());
    bin
}

/// Reads the banner `pgr-echo` sends first: the node's name and a newline (byte by byte, so
/// nothing after it is consumed).
pub fn read_banner(stream: &mut impl std::io::Read) -> std::io::Result<String> {
    let mut name = Vec::new();
    let mut b = [0u8; 1];
    loop {
        stream.read_exact(&mut b)?;
        if b[0] == b'\n' {
            return Ok(String::from_utf8_lossy(&name).into_owned());
        }
        name.push(b[0]);
    }
}

/// The running daemon's status (`pgrouter status --json` read into the status contract's
/// types), or `None` while it does not answer. An answer that does not read as a `Status` is
/// a bug, not a daemon still starting: it panics with the answer.
pub fn status(socket: &str) -> Option<pgrouter::status::Status> {
    let out = std::process::Command::new(pgrouter_bin())
        .args(["status", "--json", "--socket", socket])
        .output()
        .ok()?;
    if !out.status.success() || out.stdout.is_empty() {
        return None;
    }
    match serde_json::from_slice(&out.stdout) {
        Ok(st) => Some(st),
        Err(e) => panic!(
            "pgrouter status --json does not read as a Status: {e}
{}",
            String::from_utf8_lossy(&out.stdout)
        ),
    }
}

/// Mounts a bpffs on `dir` from the test's (host's) mount namespace. `ip netns exec` gives the
/// daemon a private mount namespace, where a bpffs it mounted itself would vanish when it
/// exits, taking the pins (and the data path's survival across restarts) with it.
pub fn mount_bpffs(dir: &std::path::Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir)?;
    let d = dir
        .to_str()
        .ok_or_else(|| anyhow::anyhow!("non-UTF-8 path"))?;
    run("mount", &["-t", "bpf", "bpf", d])?;
    Ok(())
}

/// Attaches the object's `xdp_pass` program in driver mode to `iface`, a bridge-side veth
/// peer: a veth delivers native XDP_TX frames only when its peer has an XDP program. The
/// program stays attached as long as the returned object lives.
pub fn attach_peer_xdp_pass(iface: &str) -> anyhow::Result<aya::Ebpf> {
    let mut ebpf = aya::Ebpf::load(pgrouter::dataplane::loader::EBPF_OBJECT)?;
    let p: &mut aya::programs::Xdp = ebpf
        .program_mut("xdp_pass")
        .ok_or_else(|| anyhow::anyhow!("no xdp_pass program in the object"))?
        .try_into()?;
    p.load()?;
    p.attach(iface, aya::programs::XdpMode::Driver)?;
    Ok(ebpf)
}
