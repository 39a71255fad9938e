//! Builds the XDP object from `router-ebpf` with the nightly toolchain and bpf-linker
//! (installed by `cargo xtask setup`) so the controller binary embeds it.
use anyhow::{Context as _, anyhow};
use aya_build::Toolchain;

fn main() -> anyhow::Result<()> {
    let cargo_metadata::Metadata { packages, .. } = cargo_metadata::MetadataCommand::new()
        .no_deps()
        .exec()
        .context("MetadataCommand::exec")?;
    let ebpf_package = packages
        .into_iter()
        .find(|cargo_metadata::Package { name, .. }| name.as_str() == "router-ebpf")
        .ok_or_else(|| anyhow!("router-ebpf package not found"))?;
    let cargo_metadata::Package { name, manifest_path, .. } = ebpf_package;
    let root_dir = manifest_path
        .parent()
        .ok_or_else(|| anyhow!("no parent for {manifest_path}"))?
        .as_str();
    let package = aya_build::Package { name: name.as_str(), root_dir, ..Default::default() };
    aya_build::build_ebpf([package], Toolchain::default())
}
