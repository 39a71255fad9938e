//! VRRP (RFC 5798 v3, RFC 3768 v2): codec, pure state machine, and the socket/netlink edge.
//!
//! - [`packet`]: the wire format and the packet-only receive checks.
//! - [`fsm`]: the state machine, pure (`step(&mut Instance, Event, now) -> Vec<Action>`).
//! - [`net`]: raw sockets, rtnetlink addresses, gratuitous ARP / unsolicited NA.
//! - [`instance`]: one tokio task per virtual router that joins them; `notify` runs its
//!   `notify_*` hooks.
//!
//! The schema (`[[vrrp]]`), its defaults and its checks are `config::vrrp`; this module runs
//! what it validated. The controller calls [`spawn`] per [`VrrpInstance`] with a
//! `watch::Receiver<Tracks>`, and reads [`InstanceHandle::status`].

pub mod fsm;
pub mod instance;
pub mod net;
mod notify;
pub mod packet;

use std::collections::BTreeMap;

use anyhow::Context as _;
use tokio::sync::watch;

use crate::config::VrrpInstance;

pub use instance::{InstanceHandle, InstanceStatus, spawn};

/// Track results the controller publishes: name → healthy. Names pgrouter uses:
/// `xdp-attached` (the XDP program is attached on this host) and `patroni:<cluster>` (this host
/// reaches the cluster: some node's Patroni API answered its last check, whatever the role).
/// A name absent from the map counts as failing, so nothing claims a VIP before the controller
/// has checked.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct Tracks {
    pub named: BTreeMap<String, bool>,
}

/// Runs the instances (validated by `config::load_vrrp_only`) until SIGTERM or SIGINT, then
/// shuts each down (priority 0, VIPs removed). Tracks are fixed to "all healthy" for the configured names: standalone mode has no
/// controller.
pub async fn run_standalone(instances: Vec<VrrpInstance>) -> anyhow::Result<()> {
    let mut all = Tracks::default();
    for i in &instances {
        for t in &i.track {
            all.named.insert(t.name.clone(), true);
        }
    }
    let (_tx, rx) = watch::channel(all);
    let mut handles = Vec::new();
    for cfg in instances {
        let name = cfg.name.clone();
        handles.push(
            spawn(cfg, rx.clone()).with_context(|| format!("starting vrrp instance {name:?}"))?,
        );
    }
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = term.recv() => {}
        r = tokio::signal::ctrl_c() => r?,
    }
    tracing::info!("signal received, shutting down vrrp instances");
    for h in handles {
        h.shutdown().await;
    }
    Ok(())
}
