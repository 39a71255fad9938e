//! The routers on the lab's edge hosts, one place for the baseline, the demo and the bench:
//! the release `pgrouter` and how it is started, the seed's HAProxy (one template,
//! lab/haproxy.cfg.tmpl, checked with `haproxy -c` before it runs) and bpffs mounts for
//! pgrouter's pins. The veth peer's XDP_PASS program is in `peer_xdp`.
use super::Lab;
use super::util::{cmd, run};
use anyhow::{Context, Result};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

/// The seed article's HAProxy configuration, adapted to the lab (`bind *:5000`/`*:5001`, the
/// three nodes' Patroni checks). Every HAProxy in the lab runs exactly this.
pub const HAPROXY_TEMPLATE: &str = include_str!("../../../lab/haproxy.cfg.tmpl");

/// The workspace root (the demo's and the bench's outputs go under its `target/`).
pub fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives in the workspace")
        .to_path_buf()
}

/// `target/release/pgrouter`.
pub fn pgrouter_bin() -> PathBuf {
    workspace().join("target/release/pgrouter")
}

/// `cargo build --release -p router-user --bins` (a no-op when up to date);
/// `PGRLAB_SKIP_BUILD=1` uses an existing binary as it is.
pub fn build_release() -> Result<()> {
    if std::env::var("PGRLAB_SKIP_BUILD").is_ok_and(|v| v == "1") && pgrouter_bin().exists() {
        println!(
            "lab: PGRLAB_SKIP_BUILD=1: using {}",
            pgrouter_bin().display()
        );
        return Ok(());
    }
    let t = Instant::now();
    let ok = Command::new("cargo")
        .args(["build", "--release", "-p", "router-user", "--bins"])
        .current_dir(workspace())
        .status()
        .context("cargo build")?
        .success();
    anyhow::ensure!(ok, "cargo build --release -p router-user failed");
    println!(
        "lab: release pgrouter ready ({:.1?}): {}",
        t.elapsed(),
        pgrouter_bin().display()
    );
    Ok(())
}

/// Starts `bin run -c cfg` on `edge` under the `spawn` name `name`. Returns the PID.
pub fn start_pgrouter(lab: &Lab, edge: &str, name: &str, bin: &Path, cfg: &Path) -> Result<i32> {
    let argv = [
        bin.display().to_string(),
        "run".into(),
        "-c".into(),
        cfg.display().to_string(),
    ];
    lab.spawn(edge, name, &argv)
}

/// Writes [`HAPROXY_TEMPLATE`] to `dir/haproxy.cfg` and has HAProxy check it.
pub fn write_haproxy_config(dir: &Path) -> Result<PathBuf> {
    fs::create_dir_all(dir).with_context(|| format!("mkdir {}", dir.display()))?;
    let cfg = dir.join("haproxy.cfg");
    fs::write(&cfg, HAPROXY_TEMPLATE).with_context(|| format!("write {}", cfg.display()))?;
    run(&mut cmd(
        "haproxy",
        ["-c", "-q", "-f", &cfg.to_string_lossy()],
    ))
    .context("haproxy rejected lab/haproxy.cfg.tmpl")?;
    Ok(cfg)
}

/// The seed's HAProxy on `edge` under the `spawn` name `name`, its config in `dir`
/// (installed first if missing). It binds `*:5000`/`*:5001`: the edge's own address, and the
/// VIP where Keepalived puts it there. Returns the PID.
pub fn start_haproxy(lab: &Lab, edge: &str, name: &str, dir: &Path) -> Result<i32> {
    super::install::ensure_packages(&["haproxy"])?;
    let cfg = write_haproxy_config(dir)?;
    lab.spawn(
        edge,
        name,
        &[
            "haproxy".into(),
            "-db".into(),
            "-f".into(),
            cfg.display().to_string(),
        ],
    )
}

/// True if `p` is a mount point (of this mount namespace).
pub fn is_mountpoint(p: &Path) -> bool {
    let Ok(m) = fs::read_to_string("/proc/self/mountinfo") else {
        return false;
    };
    let p = p.to_string_lossy();
    m.lines()
        .any(|l| l.split_whitespace().nth(4) == Some(p.as_ref()))
}

/// Creates `dir` and mounts a bpffs on it unless one is there. Mounted in the root mount
/// namespace: `ip netns exec` gives pgrouter a private mount namespace where /sys is
/// remounted, so pins under /sys/fs/bpf (or a bpffs it mounted itself) would vanish when it
/// exits.
pub fn mount_bpffs(dir: &Path) -> Result<()> {
    fs::create_dir_all(dir).with_context(|| format!("mkdir {}", dir.display()))?;
    if !is_mountpoint(dir) {
        let ok = Command::new("mount")
            .args(["-t", "bpf", "bpf"])
            .arg(dir)
            .status()?
            .success();
        anyhow::ensure!(ok, "mount -t bpf {}", dir.display());
    }
    Ok(())
}

/// Unmounts the bpffs on `dir` (lazily), dropping the pinned maps and links, if mounted.
pub fn unmount_bpffs(dir: &Path) {
    if is_mountpoint(dir) {
        let _ = Command::new("umount").arg("-l").arg(dir).status();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn haproxy_config_routes_like_the_seed() {
        assert!(
            HAPROXY_TEMPLATE.contains("bind *:5000") && HAPROXY_TEMPLATE.contains("bind *:5001")
        );
        assert!(HAPROXY_TEMPLATE.contains("use_backend PG1_ro_leader if { nbsrv(PG1_ro) eq 0 }"));
        assert!(HAPROXY_TEMPLATE.contains("option httpchk GET /replica?lag=10MB"));
        assert_eq!(HAPROXY_TEMPLATE.matches("check port 8008").count(), 9);
    }

    /// Every starter (baseline, demo, bench) gives HAProxy the template byte for byte, and
    /// HAProxy accepts it (where it is installed).
    #[test]
    fn haproxy_gets_the_template_unchanged() {
        if run(&mut cmd("haproxy", ["-v"])).is_err() {
            eprintln!("haproxy not installed: skipped");
            return;
        }
        let dir = std::env::temp_dir().join(format!("pgr-haproxy-{}", std::process::id()));
        let cfg = write_haproxy_config(&dir).unwrap();
        assert_eq!(fs::read_to_string(&cfg).unwrap(), HAPROXY_TEMPLATE);
        let _ = fs::remove_dir_all(&dir);
    }
}
