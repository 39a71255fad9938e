//! Builds the XDP object from `router-ebpf` (nightly + bpf-linker, installed by
//! `cargo xtask setup`) so the controller binary embeds it.
//!
//! This mirrors `aya_build::build_ebpf` but adds `-C target-cpu=v3`: the program needs BPF ISA
//! v3 for atomic fetch-or (exactly-once flow close accounting), and aya-build offers no way to
//! pass extra rustflags. `PGROUTER_EBPF_OBJ=path` embeds a prebuilt object instead.
//!
//! Under `cargo clippy` and rust-analyzer nothing is linked, so an empty object stands in and
//! the slow nightly build is skipped (aya-template skips it for checks the same way).
use std::{env, fs, path::PathBuf, process::Command};

fn main() {
    if let Err(e) = run() {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}

/// Whether this build only type-checks: clippy runs through `clippy-driver` as the workspace
/// wrapper, rust-analyzer sets `RA_RUSTC_WRAPPER`. Neither produces a binary that could carry
/// an empty object.
fn checking_only() -> bool {
    let clippy = env::var("RUSTC_WORKSPACE_WRAPPER").is_ok_and(|w| w.contains("clippy-driver"));
    clippy || env::var_os("RA_RUSTC_WRAPPER").is_some()
}

fn run() -> Result<(), String> {
    let out_dir = PathBuf::from(env::var("OUT_DIR").map_err(|e| format!("OUT_DIR: {e}"))?);
    let dest = out_dir.join("router-ebpf.o");
    println!("cargo:rerun-if-env-changed=PGROUTER_EBPF_OBJ");
    println!("cargo:rerun-if-env-changed=RUSTC_WORKSPACE_WRAPPER");
    println!("cargo:rerun-if-env-changed=RA_RUSTC_WRAPPER");
    if checking_only() {
        fs::write(&dest, b"").map_err(|e| format!("writing {}: {e}", dest.display()))?;
        return Ok(());
    }
    if let Ok(obj) = env::var("PGROUTER_EBPF_OBJ") {
        println!("cargo:rerun-if-changed={obj}");
        fs::copy(&obj, &dest).map_err(|e| format!("copying {obj}: {e}"))?;
        return Ok(());
    }
    let manifest = PathBuf::from(env::var("CARGO_MANIFEST_DIR").map_err(|e| e.to_string())?);
    let ebpf_dir = manifest.join("..").join("router-ebpf");
    println!("cargo:rerun-if-changed={}", ebpf_dir.join("src").display());
    println!(
        "cargo:rerun-if-changed={}",
        ebpf_dir.join("Cargo.toml").display()
    );
    let target_dir = out_dir.join("ebpf-target");
    let flags = [
        "--cfg=bpf_target_arch=\"x86_64\"",
        "-Cdebuginfo=2",
        "-Clink-arg=--btf",
        "-Ctarget-cpu=v3",
    ]
    .join("\x1f");
    let mut cmd = Command::new("rustup");
    cmd.args([
        "run",
        "nightly",
        "cargo",
        "build",
        "--package",
        "router-ebpf",
        "--bins",
    ])
    .args([
        "--release",
        "--target",
        "bpfel-unknown-none",
        "-Z",
        "build-std=core",
    ])
    .arg("--target-dir")
    .arg(&target_dir)
    .current_dir(&ebpf_dir)
    .env("CARGO_ENCODED_RUSTFLAGS", flags);
    for key in [
        "RUSTC",
        "RUSTC_WORKSPACE_WRAPPER",
        "RUSTFLAGS",
        "CARGO_TARGET_DIR",
    ] {
        cmd.env_remove(key);
    }
    let out = cmd
        .output()
        .map_err(|e| format!("running rustup (is `cargo xtask setup` done?): {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "building the eBPF program failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    let built = target_dir.join("bpfel-unknown-none/release/router-ebpf");
    fs::copy(&built, &dest).map_err(|e| format!("copying {}: {e}", built.display()))?;
    Ok(())
}
