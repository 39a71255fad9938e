//! `cargo xtask dist [--verify]`: the Debian package, and proof that it installs.
//!
//! Build: release `pgrouter` (it embeds the XDP object) → man pages and shell completions
//! generated from the clap definitions (`pgrouter manpage DIR`, `pgrouter completions SHELL`)
//! → the systemd unit staged from dist/ → `cargo deb --no-build` (metadata in
//! router-user/Cargo.toml) → target/dist/pgrouter_<version>-1_<arch>.deb.
//!
//! Verify (root, network to Debian's mirror once): a clean Debian bookworm root from
//! `debootstrap --variant=minbase` (cached in target/dist/cache/), the package installed into a
//! fresh copy with dpkg inside a chroot, the installed files checked, the binary run there
//! (`--version`, `check-config` on the shipped conffile, an `import` whose output passes
//! `check-config`), `systemd-analyze verify` on the installed unit, conffile kept across a
//! reinstall, removed on purge. Every step is timed.
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};

/// cargo-deb release known to build with Rust 1.95 (installed when missing).
const CARGO_DEB_VERSION: &str = "3.8.0";
const SUITE: &str = "bookworm";
const DEFAULT_MIRROR: &str = "http://deb.debian.org/debian";

/// `cargo xtask dist` options.
#[derive(clap::Args, Debug, Default)]
pub struct DistArgs {
    /// Also install the package into a clean Debian root and check it.
    #[arg(long)]
    pub verify: bool,
    /// Keep the verification root (target/dist/root) for inspection.
    #[arg(long)]
    pub keep_root: bool,
}

/// Timings of every step, printed at the end.
struct Steps {
    done: Vec<(String, Duration)>,
}

impl Steps {
    fn time<T>(&mut self, what: &str, f: impl FnOnce() -> anyhow::Result<T>) -> anyhow::Result<T> {
        eprintln!("==> {what}");
        let t = Instant::now();
        let r = f().with_context(|| format!("dist: {what}"));
        let d = t.elapsed();
        eprintln!("    {what}: {:.1}s", d.as_secs_f64());
        self.done.push((what.to_owned(), d));
        r
    }

    fn report(&self) -> String {
        let mut s = String::from("dist timings:\n");
        let mut total = Duration::ZERO;
        for (what, d) in &self.done {
            let _ = writeln!(s, "  {:>7.1}s  {what}", d.as_secs_f64());
            total += *d;
        }
        let _ = writeln!(s, "  {:>7.1}s  total", total.as_secs_f64());
        s
    }
}

pub fn run_with(args: DistArgs) -> anyhow::Result<()> {
    let ws = workspace_root();
    let out = ws.join("target/dist");
    let mut steps = Steps { done: Vec::new() };
    let deb = steps.time("build the package", || {
        build(&ws, &out, &mut Steps { done: Vec::new() })
    })?;
    println!("{}", deb.display());
    if args.verify {
        verify(&ws, &out, &deb, args.keep_root, &mut steps)?;
    }
    eprint!("{}", steps.report());
    Ok(())
}

fn workspace_root() -> PathBuf {
    let here = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    here.parent().map(Path::to_path_buf).unwrap_or(here)
}

/// Runs a command, failing with its output when it fails; returns stdout.
fn sh(cmd: &mut Command) -> anyhow::Result<String> {
    let shown = format!("{cmd:?}");
    let o = cmd.output().with_context(|| format!("running {shown}"))?;
    if !o.status.success() {
        bail!(
            "{shown} failed ({}):\n{}{}",
            o.status,
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&o.stdout).into_owned())
}

/// Runs a command with inherited output (long builds show progress).
fn run_visible(cmd: &mut Command) -> anyhow::Result<()> {
    let shown = format!("{cmd:?}");
    let st = cmd.status().with_context(|| format!("running {shown}"))?;
    if !st.success() {
        bail!("{shown} failed ({st})");
    }
    Ok(())
}

fn cargo() -> Command {
    Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
}

fn build(ws: &Path, out: &Path, _steps: &mut Steps) -> anyhow::Result<PathBuf> {
    run_visible(cargo().current_dir(ws).args([
        "build",
        "--release",
        "-p",
        "router-user",
        "--bin",
        "pgrouter",
    ]))?;
    let bin = ws.join("target/release/pgrouter");

    // Man pages and completions from the clap definitions of this very binary.
    // Under target/release/ so cargo-deb maps the asset paths to the real target dir.
    let assets = ws.join("target/release/dist-assets");
    let man = assets.join("man");
    let comp = assets.join("completions");
    for d in [&man, &comp] {
        if d.exists() {
            std::fs::remove_dir_all(d).with_context(|| format!("clearing {}", d.display()))?;
        }
        std::fs::create_dir_all(d).with_context(|| format!("creating {}", d.display()))?;
    }
    sh(Command::new(&bin).arg("manpage").arg(&man))?;
    let mut pages = Vec::new();
    for e in std::fs::read_dir(&man)? {
        let p = e?.path();
        if p.extension().is_some_and(|x| x == "8") {
            pages.push(p);
        }
    }
    if !pages.iter().any(|p| p.ends_with("pgrouter.8")) {
        bail!(
            "pgrouter manpage wrote no pgrouter.8 into {}",
            man.display()
        );
    }
    // -n: no name/timestamp in the header, so the package is reproducible.
    sh(Command::new("gzip").arg("-9nf").args(&pages))?;
    for (shell, file) in [
        ("bash", "pgrouter.bash"),
        ("zsh", "_pgrouter"),
        ("fish", "pgrouter.fish"),
    ] {
        let text = sh(Command::new(&bin).args(["completions", shell]))?;
        if !text.contains("pgrouter") {
            bail!("{shell} completions do not mention pgrouter");
        }
        std::fs::write(comp.join(file), text)?;
    }

    // The unit: Type=notify needs the daemon to send READY=1. Until the controller calls
    // sdnotify::notify_ready(), ship Type=exec so `systemctl start` cannot time out.
    let unit_dir = out.join("unit");
    std::fs::create_dir_all(&unit_dir)?;
    let mut unit = std::fs::read_to_string(ws.join("dist/pgrouter.service"))
        .context("reading dist/pgrouter.service")?;
    let controller =
        std::fs::read_to_string(ws.join("router-user/src/controller.rs")).unwrap_or_default();
    if !controller.contains("notify_ready") {
        eprintln!(
            "    warning: router-user/src/controller.rs never calls sdnotify::notify_ready(); \
             packaging the unit with Type=exec instead of Type=notify"
        );
        unit = unit.replace("Type=notify\nNotifyAccess=main\n", "Type=exec\n");
    }
    std::fs::write(unit_dir.join("pgrouter.service"), unit)?;

    ensure_cargo_deb(ws)?;
    let stdout = sh(cargo()
        .current_dir(ws)
        .args(["deb", "-p", "router-user", "--no-build", "--output"])
        .arg(out))?;
    let deb = stdout
        .lines()
        .rev()
        .map(str::trim)
        .find(|l| l.ends_with(".deb"))
        .map(PathBuf::from)
        .context("cargo deb printed no .deb path")?;
    Ok(deb)
}

fn ensure_cargo_deb(ws: &Path) -> anyhow::Result<()> {
    let ok = cargo()
        .current_dir(ws)
        .args(["deb", "--version"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        eprintln!("    installing cargo-deb {CARGO_DEB_VERSION} (once)");
        run_visible(cargo().args([
            "install",
            "cargo-deb",
            "--locked",
            "--version",
            CARGO_DEB_VERSION,
        ]))?;
    }
    Ok(())
}

/// Expected paths in the package (dpkg-deb -c shows them with a leading `./`).
const EXPECTED: &[&str] = &[
    "./usr/bin/pgrouter",
    "./etc/pgrouter/pgrouter.toml",
    "./lib/systemd/system/pgrouter.service",
    "./usr/share/man/man8/pgrouter.8.gz",
    "./usr/share/man/man8/pgrouter-import.8.gz",
    "./usr/share/bash-completion/completions/pgrouter",
    "./usr/share/zsh/vendor-completions/_pgrouter",
    "./usr/share/fish/vendor_completions.d/pgrouter.fish",
    "./usr/share/doc/pgrouter/operations.md",
];

fn verify(
    ws: &Path,
    out: &Path,
    deb: &Path,
    keep_root: bool,
    steps: &mut Steps,
) -> anyhow::Result<()> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        bail!("dist --verify needs root (debootstrap, chroot)");
    }
    let unit_path = steps.time("check the package contents", || {
        let list = sh(Command::new("dpkg-deb").arg("-c").arg(deb))?;
        let paths: Vec<&str> = list
            .lines()
            .filter_map(|l| l.split_whitespace().nth(5))
            .collect();
        // cargo-deb puts units under lib/ or usr/lib/ depending on its version.
        let unit = paths
            .iter()
            .find(|p| p.ends_with("systemd/system/pgrouter.service"))
            .map(|p| p.trim_start_matches('.').to_owned())
            .context("no pgrouter.service in the package")?;
        for want in EXPECTED {
            let want_unit = want.ends_with("pgrouter.service");
            if !want_unit && !paths.contains(want) {
                bail!("{want} missing from the package:\n{list}");
            }
        }
        let conf = list
            .lines()
            .find(|l| l.ends_with("./etc/pgrouter/pgrouter.toml"))
            .unwrap_or_default();
        if !conf.starts_with("-rw-r-----") {
            bail!("pgrouter.toml should be 0640 (it may hold auth_pass): {conf}");
        }
        let depends = sh(Command::new("dpkg-deb")
            .args(["-f"])
            .arg(deb)
            .arg("Depends"))?;
        eprintln!("    Depends: {}", depends.trim());
        Ok(unit)
    })?;

    // minbase plus systemd: a server's base, and what `systemd-analyze verify` needs (the
    // targets the unit is ordered against, deb-systemd-helper for the maintainer scripts).
    let cache = out.join("cache").join(format!("{SUITE}-minbase-systemd"));
    steps.time("clean Debian root (debootstrap, cached)", || {
        if cache.join("usr/bin/dpkg").exists() {
            return Ok(());
        }
        if Command::new("debootstrap").arg("--version").output().is_err() {
            eprintln!("    installing debootstrap with apt-get");
            run_visible(Command::new("apt-get").args(["install", "-y", "debootstrap"]))?;
        }
        let mirror =
            std::env::var("PGROUTER_DEBIAN_MIRROR").unwrap_or_else(|_| DEFAULT_MIRROR.into());
        let tmp = cache.with_extension("partial");
        let _ = std::fs::remove_dir_all(&tmp);
        std::fs::create_dir_all(tmp.parent().unwrap_or(out))?;
        let r = sh(Command::new("debootstrap")
            .args(["--variant=minbase", "--include=systemd", SUITE])
            .arg(&tmp)
            .arg(&mirror));
        if let Err(e) = r {
            let _ = std::fs::remove_dir_all(&tmp);
            bail!("debootstrap could not build a {SUITE} root from {mirror} (set PGROUTER_DEBIAN_MIRROR for another mirror): {e:#}");
        }
        std::fs::rename(&tmp, &cache)?;
        Ok(())
    })?;

    let root = out.join("root");
    steps.time("fresh copy of the root", || {
        if root.exists() {
            std::fs::remove_dir_all(&root)?;
        }
        sh(Command::new("cp").arg("-a").arg(&cache).arg(&root))?;
        Ok(())
    })?;
    let chroot = |args: &[&str]| -> anyhow::Result<String> {
        sh(Command::new("chroot").arg(&root).args(args))
    };
    let deb_in_root = "/tmp/pgrouter.deb";
    steps.time("dpkg -i in the chroot", || {
        std::fs::copy(deb, root.join(deb_in_root.trim_start_matches('/')))?;
        chroot(&["dpkg", "-i", deb_in_root])?;
        let st = chroot(&["dpkg-query", "-W", "-f", "${Status} ${Version}", "pgrouter"])?;
        if !st.starts_with("install ok installed") {
            bail!("dpkg says: {st}");
        }
        let conffiles = chroot(&["dpkg-query", "-W", "-f", "${Conffiles}", "pgrouter"])?;
        if !conffiles.contains("/etc/pgrouter/pgrouter.toml") {
            bail!("/etc/pgrouter/pgrouter.toml is not a conffile: {conffiles:?}");
        }
        Ok(())
    })?;

    steps.time("run the installed binary", || {
        let v = chroot(&["pgrouter", "--version"])?;
        if !v.starts_with("pgrouter ") {
            bail!("pgrouter --version printed {v:?}");
        }
        chroot(&["pgrouter", "check-config", "/etc/pgrouter/pgrouter.toml"])?;
        // import → check-config, with the seed's files, inside the installed system.
        let fx = ws.join("router-user/tests/fixtures/import");
        for f in ["seed_fallback.haproxy.cfg", "seed.keepalived.conf"] {
            std::fs::copy(fx.join(f), root.join("tmp").join(f))?;
        }
        chroot(&[
            "pgrouter",
            "import",
            "--haproxy",
            "/tmp/seed_fallback.haproxy.cfg",
            "--keepalived",
            "/tmp/seed.keepalived.conf",
            "--output",
            "/tmp/imported.toml",
        ])?;
        let summary = chroot(&["pgrouter", "check-config", "/tmp/imported.toml"])?;
        if !summary.contains("fallback primary") {
            bail!("imported config lost the fallback:\n{summary}");
        }
        let bash =
            std::fs::read_to_string(root.join("usr/share/bash-completion/completions/pgrouter"))?;
        if !bash.contains("check-config") {
            bail!("bash completion does not know check-config");
        }
        Ok(())
    })?;

    steps.time("systemd-analyze verify the installed unit", || {
        let unit = root.join(unit_path.trim_start_matches('/'));
        let text = std::fs::read_to_string(&unit)?;
        let controller =
            std::fs::read_to_string(ws.join("router-user/src/controller.rs")).unwrap_or_default();
        let want_type = if controller.contains("notify_ready") {
            "Type=notify"
        } else {
            "Type=exec"
        };
        for want in [
            want_type,
            "ExecReload=/usr/bin/pgrouter reload",
            "Restart=on-failure",
            "RuntimeDirectory=pgrouter",
            "CAP_BPF",
            "CAP_SYS_ADMIN",
        ] {
            if !text.contains(want) {
                bail!("{} lacks {want}", unit.display());
            }
        }
        // Inside the root: its systemd, its /usr/bin/pgrouter, its targets.
        let o = Command::new("chroot")
            .arg(&root)
            .args(["systemd-analyze", "verify", "--man=no"])
            .arg(&unit_path)
            .output()
            .context("systemd-analyze in the chroot")?;
        let err = String::from_utf8_lossy(&o.stderr);
        // Other units of the minimal root may be reported too; only ours must be clean.
        let ours: Vec<&str> = err.lines().filter(|l| l.contains("pgrouter")).collect();
        if !o.status.success() || !ours.is_empty() {
            bail!("systemd-analyze verify failed ({}):\n{err}", o.status);
        }
        // Informational: systemd's exposure score of the sandbox (lower is tighter).
        if let Ok(sec) = Command::new("chroot")
            .arg(&root)
            .args(["systemd-analyze", "security", "--offline=yes"])
            .arg(&unit_path)
            .output()
        {
            let text = String::from_utf8_lossy(&sec.stdout);
            if let Some(l) = text.lines().find(|l| l.contains("Overall exposure")) {
                eprintln!("    {}", l.trim());
            }
        }
        Ok(())
    })?;

    steps.time("conffile kept on reinstall, removed on purge", || {
        let conf = root.join("etc/pgrouter/pgrouter.toml");
        let mut text = std::fs::read_to_string(&conf)?;
        text.push_str("# local edit\n");
        std::fs::write(&conf, &text)?;
        chroot(&["dpkg", "-i", "--force-confold", deb_in_root])?;
        if !std::fs::read_to_string(&conf)?.ends_with("# local edit\n") {
            bail!("reinstall overwrote the edited conffile");
        }
        chroot(&["dpkg", "-r", "pgrouter"])?;
        if root.join("usr/bin/pgrouter").exists() || !conf.exists() {
            bail!("dpkg -r should remove the binary and keep the conffile");
        }
        chroot(&["dpkg", "-P", "pgrouter"])?;
        if conf.exists() {
            bail!("dpkg -P left {}", conf.display());
        }
        Ok(())
    })?;

    if !keep_root {
        let _ = std::fs::remove_dir_all(&root);
    }
    eprintln!("dist --verify: ok ({})", deb.display());
    Ok(())
}
