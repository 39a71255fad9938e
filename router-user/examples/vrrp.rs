//! Runs VRRP instances from a `[[vrrp]]`-only TOML file until SIGTERM/SIGINT — the same code
//! path as `pgrouter vrrp --config FILE`, for the root interop tests until the lead wires it.
fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .init();
    let Some(path) = std::env::args().nth(1) else {
        anyhow::bail!("usage: vrrp CONFIG.toml");
    };
    let instances = pgrouter::vrrp::load_vrrp_only(&path)?;
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(pgrouter::vrrp::run_standalone(instances))
}
