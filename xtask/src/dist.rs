//! `cargo xtask dist`: the Debian package.
pub fn run() -> anyhow::Result<()> {
    anyhow::bail!("dist: not implemented yet")
}
