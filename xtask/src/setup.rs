//! `cargo xtask setup`: installs what a fresh machine lacks, idempotently.
//! - Debian packages for tests, the lab and benchmarks (via the lab's installer, which also
//!   keeps Debian's PostgreSQL from creating and starting a default cluster);
//! - nightly's rust-src (the eBPF build uses `-Z build-std=core`);
//! - bpf-linker 0.13 built against nightly's own libLLVM, so the linker and rustc agree;
//! - cargo-fuzz, for `cargo xtask fuzz` (docs/fuzzing.md).
use std::{path::Path, process::Command};

use anyhow::{Context as _, bail};

use crate::lab;

/// Debian packages the tests need beyond the lab's own list.
const PACKAGES: &[&str] = &[
    "iproute2",
    "ethtool",
    "bpftool",
    "keepalived",
    "haproxy",
    "tcpdump",
];
const LLVM_PREFIX: &str = "/opt/pgrouter-llvm";
const BPF_LINKER_VERSION: &str = "0.13.0";

fn installed(pkg: &str) -> bool {
    Command::new("dpkg-query")
        .args(["-W", "-f=${Status}", pkg])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).contains("install ok installed"))
        .unwrap_or(false)
}

fn run(cmd: &mut Command) -> anyhow::Result<()> {
    let status = cmd.status().with_context(|| format!("running {cmd:?}"))?;
    if !status.success() {
        bail!("{cmd:?} failed with {status}");
    }
    Ok(())
}

pub fn run_setup() -> anyhow::Result<()> {
    lab::install::ensure_installed().context("installing the lab's packages")?;
    let missing: Vec<&str> = PACKAGES.iter().copied().filter(|p| !installed(p)).collect();
    if !missing.is_empty() {
        println!("setup: installing {}", missing.join(" "));
        run(Command::new("apt-get")
            .args(["update", "-q"])
            .env("DEBIAN_FRONTEND", "noninteractive"))?;
        // Debian's keepalived and haproxy would start services on install; the tests start
        // their own. policy-rc.d tells invoke-rc.d not to start anything meanwhile.
        let policy = Path::new("/usr/sbin/policy-rc.d");
        let ours = !policy.exists();
        if ours {
            std::fs::write(policy, "#!/bin/sh\nexit 101\n").context("writing policy-rc.d")?;
            run(Command::new("chmod").args(["755", "/usr/sbin/policy-rc.d"]))?;
        }
        let r = run(Command::new("apt-get")
            .args(["install", "-y", "-q", "--no-install-recommends"])
            .args(&missing)
            .env("DEBIAN_FRONTEND", "noninteractive"));
        if ours {
            let _ = std::fs::remove_file(policy);
        }
        r?;
    }
    rust_toolchain()?;
    bpf_linker()?;
    cargo_fuzz()?;
    println!("setup: done");
    Ok(())
}

fn nightly_dir() -> anyhow::Result<std::path::PathBuf> {
    let home = std::env::var("RUSTUP_HOME")
        .map(std::path::PathBuf::from)
        .or_else(|_| std::env::var("HOME").map(|h| Path::new(&h).join(".rustup")))
        .context("neither RUSTUP_HOME nor HOME is set")?;
    let dir = home.join("toolchains");
    for e in std::fs::read_dir(&dir).with_context(|| format!("reading {}", dir.display()))? {
        let p = e?.path();
        if p.file_name()
            .is_some_and(|n| n.to_string_lossy().starts_with("nightly-"))
        {
            return Ok(p);
        }
    }
    bail!(
        "no nightly toolchain under {} (the eBPF program needs one)",
        dir.display()
    )
}

fn rust_toolchain() -> anyhow::Result<()> {
    let nightly = nightly_dir()?;
    if !nightly.join("lib/rustlib/src/rust/library/core").exists() {
        println!("setup: adding rust-src to nightly");
        run(Command::new("rustup").args([
            "component",
            "add",
            "rust-src",
            "--toolchain",
            "nightly",
        ]))?;
    }
    Ok(())
}

fn bpf_linker() -> anyhow::Result<()> {
    let have = Command::new("bpf-linker")
        .arg("--version")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).contains(BPF_LINKER_VERSION))
        .unwrap_or(false);
    if have {
        return Ok(());
    }
    // bpf-linker links against an LLVM; use nightly's own so both speak the same bitcode.
    let nightly = nightly_dir()?;
    let lib = nightly.join("lib");
    let llvm = std::fs::read_dir(&lib)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| {
            p.file_name().is_some_and(|n| {
                let n = n.to_string_lossy();
                n.starts_with("libLLVM.so.") && n.contains("-rust-")
            })
        })
        .with_context(|| format!("no libLLVM.so.* in {}", lib.display()))?;
    let prefix_lib = Path::new(LLVM_PREFIX).join("lib");
    std::fs::create_dir_all(&prefix_lib)?;
    let name = llvm.file_name().context("libLLVM name")?;
    for link in [prefix_lib.join("libLLVM.so"), prefix_lib.join(name)] {
        let _ = std::fs::remove_file(&link);
        std::os::unix::fs::symlink(&llvm, &link)
            .with_context(|| format!("linking {}", link.display()))?;
    }
    println!(
        "setup: building bpf-linker {BPF_LINKER_VERSION} against {}",
        llvm.display()
    );
    run(Command::new("cargo")
        .args(["install", "bpf-linker", "--version", BPF_LINKER_VERSION])
        .args(["--no-default-features", "--features", "llvm-22"])
        .env("LLVM_PREFIX", LLVM_PREFIX))
}

const CARGO_FUZZ_VERSION: &str = "0.13.2";

/// cargo-fuzz drives the libFuzzer targets in fuzz/ (`cargo xtask fuzz`, and briefly in CI).
fn cargo_fuzz() -> anyhow::Result<()> {
    let have = Command::new("cargo")
        .args(["fuzz", "--version"])
        .output()
        .is_ok_and(|o| o.status.success());
    if have {
        return Ok(());
    }
    println!("setup: installing cargo-fuzz {CARGO_FUZZ_VERSION}");
    run(Command::new("cargo").args([
        "install",
        "cargo-fuzz",
        "--locked",
        "--version",
        CARGO_FUZZ_VERSION,
    ]))
}
