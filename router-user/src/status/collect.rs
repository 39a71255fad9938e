//! Gathers [`Status`] from the daemon's state: the config, the health snapshots, what the
//! plan applied, the kernel maps' counters, VRRP and the flow GC's last full cycle.
use std::time::Duration;

use crate::{
    config::Config,
    dataplane::{
        Applied, Maps,
        gc::{CycleReport, GcCounters},
    },
    health::ClusterSnapshot,
    model::BackendKey,
};

use super::{BackendStatus, DatapathStatus, GcStatus, InstanceStatus, ListenerStatus, Status};

/// The flow GC as status shows it: its last full cycle, its totals, and the monotonic clock
/// now (for the cycle's age).
pub struct GcView<'a> {
    pub cycle: Option<&'a CycleReport>,
    pub totals: &'a GcCounters,
    pub now_ns: u64,
}

#[expect(
    clippy::too_many_arguments,
    reason = "one call site; a struct would only rename them"
)]
pub fn collect(
    cfg: &Config,
    snaps: &[ClusterSnapshot],
    applied: &Applied,
    maps: &Maps,
    attached: &[(String, String)],
    vrrp: Vec<InstanceStatus>,
    gc: GcView<'_>,
    uptime: Duration,
    last_error: Option<String>,
) -> Status {
    let cycle = gc.cycle;
    let tally = cycle.map(|c| &c.tally);
    let mut listeners = Vec::new();
    for snap in snaps {
        for (l, set) in snap.listeners.iter().zip(snap.status.listeners.iter()) {
            let sid = applied.service_ids.get(&l.key).copied();
            let svc = sid.map(|id| maps.service_stats(id)).unwrap_or_default();
            let generation = sid
                .and_then(|id| applied.sets.get(&id))
                .map(|s| s.generation);
            let backends = l
                .backends
                .iter()
                .map(|b| {
                    let bid = applied
                        .backend_ids
                        .get(&BackendKey::new(l.key.clone(), b.node.clone()))
                        .copied();
                    let st = bid.map(|id| maps.backend_stats(id)).unwrap_or_default();
                    BackendStatus {
                        node: b.node.clone(),
                        addr: b.addr,
                        state: b.state.into(),
                        active_flows: bid.map(|id| maps.active_conns(id)).unwrap_or(0),
                        flows: bid
                            .and_then(|id| tally.and_then(|t| t.flows.get(&id)))
                            .copied()
                            .unwrap_or_default()
                            .into(),
                        maxconn: b.maxconn,
                        new_flows: st.new_flows,
                        packets_in: st.packets_in,
                        bytes_in: st.bytes_in,
                        packets_out: st.packets_out,
                        bytes_out: st.bytes_out,
                        rst_sent: st.rst_sent,
                        drop_maxconn: st.drop_maxconn,
                        refused: st.refused,
                    }
                })
                .collect();
            listeners.push(ListenerStatus {
                name: l.key.to_string(),
                vip: l.vip,
                port: l.port,
                fallback_active: set.fallback_active,
                generation: generation.unwrap_or(0),
                new_flows: svc.new_flows,
                rst_sent: svc.rst_sent,
                drop_no_backend: svc.drop_no_backend,
                drop_maxconn: svc.drop_maxconn,
                drop_snat_exhausted: svc.drop_snat_exhausted,
                ct_miss: svc.ct_miss,
                rst_no_backend: svc.rst_no_backend,
                established: svc.established,
                drop_ct_full: svc.drop_ct_full,
                snat_ports_in_use: sid
                    .and_then(|id| tally.and_then(|t| t.snat_ports.get(&id)))
                    .copied()
                    .unwrap_or(0),
                snat_ports: sid
                    .and_then(|id| applied.services.values().find(|s| s.id == id))
                    .map(|s| u64::from(s.snat_port_max.saturating_sub(s.snat_port_min)) + 1)
                    .unwrap_or(0),
                backends,
            });
        }
    }
    let counters = router_ebpf::counter::NAMES
        .iter()
        .enumerate()
        .map(|(i, n)| ((*n).to_string(), maps.counter(i as u32)))
        .collect();
    Status {
        version: env!("CARGO_PKG_VERSION").into(),
        abi_version: router_ebpf::ABI_VERSION,
        uptime_s: uptime.as_secs(),
        config: cfg.path.display().to_string(),
        datapath: DatapathStatus {
            interfaces: attached.to_vec(),
            pin_path: cfg.datapath.pin_path.display().to_string(),
            tracked_entries: tally.map_or(0, |t| t.conntrack_entries),
            handshake_entries: tally.map_or(0, |t| t.handshake_entries),
            handshake_capacity: cycle.map_or(0, |c| c.handshake_capacity),
            counters,
            gc: GcStatus {
                last_cycle_age_s: cycle
                    .map(|c| gc.now_ns.saturating_sub(c.finished_ns) as f64 / 1e9),
                last_cycle_ms: cycle.map(|c| c.duration_ns as f64 / 1e6),
                last_cycle_entries: tally.map_or(0, |t| t.walked),
                totals: gc.totals.clone(),
            },
        },
        clusters: snaps.iter().map(|s| s.status.clone()).collect(),
        listeners,
        vrrp,
        // Filled in by the controller, which owns the sync state.
        sync: None,
        last_error,
    }
}
