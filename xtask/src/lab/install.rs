//! Installs what the lab needs, only when missing (Debian packages, Patroni
//! virtualenv), and keeps Debian's auto-created `15/main` cluster out of the way.
use super::topology::{PG_BIN, VENV};
use super::util::{cmd, run, run_quiet, show};
use anyhow::{Context, Result, bail};
use std::fs;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Instant;

/// Debian packages the lab uses.
pub const PACKAGES: &[&str] = &[
    "iproute2",
    "ethtool",
    "util-linux", // setpriv
    "postgresql-15",
    "etcd-server",
    "etcd-client",
    "python3-venv",
];

/// Python packages installed into the venv.
pub const PIP_PACKAGES: &[&str] = &["patroni[etcd3]", "psycopg2-binary"];

fn installed(pkg: &str) -> bool {
    Command::new("dpkg-query")
        .args(["-W", "-f=${Status}", pkg])
        .stderr(Stdio::null())
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).contains("install ok installed"))
        .unwrap_or(false)
}

/// While alive, `/usr/sbin/policy-rc.d` denies service starts, so package
/// postinsts (etcd-server's init script, postgresql) start nothing in the
/// root namespace on machines without systemd. Only created if absent.
struct NoServiceStarts(bool);

impl NoServiceStarts {
    fn new() -> Self {
        let p = Path::new("/usr/sbin/policy-rc.d");
        if p.exists() {
            return NoServiceStarts(false);
        }
        let ok = fs::write(
            p,
            "#!/bin/sh\n# temporary, from `cargo xtask lab up`\nexit 101\n",
        )
        .is_ok()
            && run_quiet(&mut cmd("chmod", ["755", "/usr/sbin/policy-rc.d"]));
        NoServiceStarts(ok)
    }
}

impl Drop for NoServiceStarts {
    fn drop(&mut self) {
        if self.0 {
            let _ = fs::remove_file("/usr/sbin/policy-rc.d");
        }
    }
}

fn apt_install(pkgs: &[&str]) -> Result<()> {
    let _guard = NoServiceStarts::new();
    let mut c = cmd(
        "apt-get",
        [
            "install",
            "-y",
            "--no-install-recommends",
            "-o",
            "Dpkg::Options::=--force-confdef",
            "-o",
            "Dpkg::Options::=--force-confold",
        ],
    );
    c.args(pkgs).env("DEBIAN_FRONTEND", "noninteractive");
    println!("lab: install: {}", show(&c));
    run(&mut c).map(|_| ())
}

pub fn ensure_installed() -> Result<()> {
    let t = Instant::now();
    let missing: Vec<&str> = PACKAGES.iter().copied().filter(|p| !installed(p)).collect();
    if !missing.is_empty() {
        println!(
            "lab: install: missing Debian packages: {}",
            missing.join(" ")
        );
        run(cmd("apt-get", ["update", "-q"]).env("DEBIAN_FRONTEND", "noninteractive"))
            .context("apt-get update")?;
        if missing.contains(&"postgresql-15") {
            // Keep postgresql-15's postinst from creating (and starting) the
            // `main` cluster on 127.0.0.1:5432 in the root namespace.
            if !installed("postgresql-common") {
                apt_install(&["postgresql-common"])?;
            }
            let d = Path::new("/etc/postgresql-common/createcluster.d");
            fs::create_dir_all(d).context("mkdir /etc/postgresql-common/createcluster.d")?;
            fs::write(
                d.join("pgrouter-lab.conf"),
                "# written by `cargo xtask lab up`: the lab runs its own clusters\ncreate_main_cluster = false\n",
            )
            .context("write createcluster.d/pgrouter-lab.conf")?;
        }
        apt_install(&missing)?;
    }
    if !Path::new(&format!("{PG_BIN}/postgres")).exists() {
        bail!("{PG_BIN}/postgres missing after installing postgresql-15");
    }
    stop_debian_main_cluster();
    ensure_venv()?;
    if !missing.is_empty() {
        println!("lab: install: done in {:.1?}", t.elapsed());
    }
    Ok(())
}

/// Installs `pkgs` that are missing (one `apt-get update` first).
pub fn ensure_packages(pkgs: &[&str]) -> Result<()> {
    let missing: Vec<&str> = pkgs.iter().copied().filter(|p| !installed(p)).collect();
    if missing.is_empty() {
        return Ok(());
    }
    println!(
        "lab: install: missing Debian packages: {}",
        missing.join(" ")
    );
    run(cmd("apt-get", ["update", "-q"]).env("DEBIAN_FRONTEND", "noninteractive"))
        .context("apt-get update")?;
    apt_install(&missing)
}

/// Stops Debian's default cluster (15/main) if it runs: it would hold
/// 127.0.0.1:5432 and /var/run/postgresql in the root namespace.
fn stop_debian_main_cluster() {
    let Ok(out) = run(&mut cmd("pg_lsclusters", ["-h"])) else {
        return;
    };
    for l in out.lines() {
        let f: Vec<&str> = l.split_whitespace().collect();
        if f.len() >= 4 && f[3].starts_with("online") {
            println!(
                "lab: stopping Debian's PostgreSQL cluster {} {} (port {})",
                f[0], f[1], f[2]
            );
            if !run_quiet(&mut cmd("pg_ctlcluster", [f[0], f[1], "stop"])) {
                println!("lab: warning: pg_ctlcluster {} {} stop failed", f[0], f[1]);
            }
        }
    }
}

fn venv_ok() -> bool {
    Path::new(&format!("{VENV}/bin/patroni")).exists()
        && run_quiet(&mut cmd(
            &format!("{VENV}/bin/python"),
            ["-c", "import patroni, psycopg2, etcd"],
        ))
}

fn ensure_venv() -> Result<()> {
    if venv_ok() {
        return Ok(());
    }
    let t = Instant::now();
    if Path::new(VENV).exists() {
        println!("lab: install: {VENV} is incomplete; recreating");
        fs::remove_dir_all(VENV).with_context(|| format!("rm -r {VENV}"))?;
    }
    let parent = Path::new(VENV).parent().unwrap();
    fs::create_dir_all(parent).with_context(|| format!("mkdir {}", parent.display()))?;
    println!(
        "lab: install: creating {VENV} (system python3) with {}",
        PIP_PACKAGES.join(" ")
    );
    run(&mut cmd("/usr/bin/python3", ["-m", "venv", VENV]))?;
    let mut pip = cmd(
        &format!("{VENV}/bin/pip"),
        ["install", "-q", "--disable-pip-version-check"],
    );
    pip.args(PIP_PACKAGES);
    run(&mut pip)?;
    // Readable and executable by the postgres user.
    run(&mut cmd("chmod", ["-R", "a+rX", &parent.to_string_lossy()]))?;
    if !venv_ok() {
        bail!("{VENV}: Patroni still not importable after pip install");
    }
    println!("lab: install: Patroni venv ready in {:.1?}", t.elapsed());
    Ok(())
}
