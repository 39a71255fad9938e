//! Prometheus text exposition of the daemon's status, on a configurable address (loopback by
//! default). Hand-written: a handful of families, rendered from the same `Status` as
//! `pgrouter status`, so the two never disagree.
use std::{
    fmt::Write as _,
    net::SocketAddr,
    sync::{Arc, Mutex},
};

use anyhow::Context as _;
use tokio::{
    io::{AsyncReadExt as _, AsyncWriteExt as _},
    net::TcpListener,
};

use crate::status::{Status, VrrpState};

pub async fn serve(addr: SocketAddr, status: Arc<Mutex<Status>>) -> anyhow::Result<()> {
    let listener = TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding metrics on {addr}"))?;
    tracing::info!(%addr, "metrics listening");
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = listener.accept().await else {
                continue;
            };
            let body = match status.lock() {
                Ok(st) => render(&st),
                Err(p) => render(&p.into_inner()),
            };
            tokio::spawn(async move {
                let mut buf = [0u8; 1024];
                let _ =
                    tokio::time::timeout(std::time::Duration::from_secs(2), s.read(&mut buf)).await;
                let head = format!(
                    "HTTP/1.0 200 OK\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\n\r\n",
                    body.len()
                );
                let _ = s.write_all(head.as_bytes()).await;
                let _ = s.write_all(body.as_bytes()).await;
            });
        }
    });
    Ok(())
}

fn esc(v: &str) -> String {
    v.replace('\\', "\\\\").replace('"', "\\\"")
}

/// Renders every metric family.
pub fn render(st: &Status) -> String {
    let mut o = String::new();
    let _ = writeln!(o, "# TYPE pgrouter_up gauge\npgrouter_up 1");
    let _ = writeln!(o, "# TYPE pgrouter_datapath_packets_total counter");
    for (k, v) in &st.datapath.counters {
        let _ = writeln!(o, "pgrouter_datapath_packets_total{{verdict=\"{k}\"}} {v}");
    }
    let d = &st.datapath;
    let _ = writeln!(
        o,
        "# TYPE pgrouter_conntrack_entries gauge\npgrouter_conntrack_entries {}",
        d.tracked_entries
    );
    // Flow life cycle (flow GC): table usage at its last full cycle, totals since start.
    let _ = writeln!(
        o,
        "# TYPE pgrouter_handshake_entries gauge\npgrouter_handshake_entries {}\n\
         # TYPE pgrouter_handshake_capacity gauge\npgrouter_handshake_capacity {}",
        d.handshake_entries, d.handshake_capacity
    );
    let _ = writeln!(o, "# TYPE pgrouter_flow_expiries_total counter");
    for (state, v) in &d.gc.totals.expiries {
        let _ = writeln!(
            o,
            "pgrouter_flow_expiries_total{{state=\"{}\"}} {v}",
            esc(state)
        );
    }
    let g = &d.gc;
    for (name, kind, v) in [
        ("pgrouter_gc_reaped_total", "counter", g.totals.reaped),
        ("pgrouter_gc_orphans_total", "counter", g.totals.orphans),
        ("pgrouter_gc_kept_total", "counter", g.totals.kept),
        ("pgrouter_gc_errors_total", "counter", g.totals.errors),
        ("pgrouter_gc_cycles_total", "counter", g.totals.full_cycles),
        (
            "pgrouter_gc_entries_walked_total",
            "counter",
            g.totals.entries_walked,
        ),
        (
            "pgrouter_slot_drift_corrections_total",
            "counter",
            g.totals.drift_corrections,
        ),
    ] {
        let _ = writeln!(o, "# TYPE {name} {kind}\n{name} {v}");
    }
    if let Some(ms) = g.last_cycle_ms {
        let _ = writeln!(
            o,
            "# TYPE pgrouter_gc_cycle_seconds gauge\npgrouter_gc_cycle_seconds {}",
            ms / 1000.0
        );
    }
    let _ = writeln!(
        o,
        "# TYPE pgrouter_check_up gauge\n# TYPE pgrouter_check_latency_seconds gauge\n# TYPE pgrouter_checks_total counter\n# TYPE pgrouter_checks_failed_total counter\n# TYPE pgrouter_set_changes_total counter\n# TYPE pgrouter_split_brain gauge"
    );
    for c in &st.clusters {
        let cl = esc(&c.cluster);
        let _ = writeln!(
            o,
            "pgrouter_checks_total{{cluster=\"{cl}\"}} {}",
            c.counters.checks_total
        );
        let _ = writeln!(
            o,
            "pgrouter_checks_failed_total{{cluster=\"{cl}\"}} {}",
            c.counters.checks_failed
        );
        let _ = writeln!(
            o,
            "pgrouter_set_changes_total{{cluster=\"{cl}\"}} {}",
            c.counters.set_changes
        );
        let _ = writeln!(
            o,
            "pgrouter_split_brain{{cluster=\"{cl}\"}} {}",
            u8::from(c.split_brain)
        );
        for n in &c.nodes {
            let node = esc(&n.name);
            for ch in &n.checks {
                let check = esc(&ch.check);
                let l = format!("cluster=\"{cl}\",node=\"{node}\",check=\"{check}\"");
                let _ = writeln!(o, "pgrouter_check_up{{{l}}} {}", u8::from(ch.up));
                let _ = writeln!(
                    o,
                    "pgrouter_check_latency_seconds{{{l}}} {}",
                    ch.last.as_ref().map_or(0.0, |l| l.latency_ms) / 1000.0
                );
            }
        }
    }
    let _ = writeln!(
        o,
        "# TYPE pgrouter_fallback_active gauge\n# TYPE pgrouter_listener_drops_total counter\n# TYPE pgrouter_listener_rst_no_backend_total counter\n# TYPE pgrouter_listener_established_total counter\n# TYPE pgrouter_snat_ports_in_use gauge\n# TYPE pgrouter_snat_ports gauge\n# TYPE pgrouter_snat_exhausted_total counter\n# TYPE pgrouter_flows gauge\n# TYPE pgrouter_backend_active_flows gauge\n# TYPE pgrouter_backend_flows_total counter\n# TYPE pgrouter_backend_bytes_total counter\n# TYPE pgrouter_backend_resets_total counter\n# TYPE pgrouter_backend_refused_total counter"
    );
    for l in &st.listeners {
        let ln = esc(&l.name);
        let _ = writeln!(
            o,
            "pgrouter_fallback_active{{listener=\"{ln}\"}} {}",
            u8::from(l.fallback_active)
        );
        for (reason, v) in [
            ("no_backend", l.drop_no_backend),
            ("maxconn", l.drop_maxconn),
            ("snat_exhausted", l.drop_snat_exhausted),
            ("ct_full", l.drop_ct_full),
        ] {
            let _ = writeln!(
                o,
                "pgrouter_listener_drops_total{{listener=\"{ln}\",reason=\"{reason}\"}} {v}"
            );
        }
        for (name, v) in [
            ("pgrouter_listener_rst_no_backend_total", l.rst_no_backend),
            ("pgrouter_listener_established_total", l.established),
            ("pgrouter_snat_ports_in_use", l.snat_ports_in_use),
            ("pgrouter_snat_ports", l.snat_ports),
            ("pgrouter_snat_exhausted_total", l.drop_snat_exhausted),
        ] {
            let _ = writeln!(o, "{name}{{listener=\"{ln}\"}} {v}");
        }
        for b in &l.backends {
            let lb = format!("listener=\"{ln}\",node=\"{}\"", esc(&b.node));
            let _ = writeln!(
                o,
                "pgrouter_backend_active_flows{{{lb}}} {}",
                b.active_flows
            );
            let _ = writeln!(o, "pgrouter_backend_flows_total{{{lb}}} {}", b.new_flows);
            let _ = writeln!(
                o,
                "pgrouter_backend_bytes_total{{{lb},direction=\"in\"}} {}",
                b.bytes_in
            );
            let _ = writeln!(
                o,
                "pgrouter_backend_bytes_total{{{lb},direction=\"out\"}} {}",
                b.bytes_out
            );
            let _ = writeln!(o, "pgrouter_backend_resets_total{{{lb}}} {}", b.rst_sent);
            let _ = writeln!(o, "pgrouter_backend_refused_total{{{lb}}} {}", b.refused);
            let f = &b.flows;
            for (state, v) in [
                ("handshake", f.handshake),
                ("established", f.established),
                ("closing", f.closing),
                ("closed", f.closed),
            ] {
                let _ = writeln!(o, "pgrouter_flows{{{lb},state=\"{state}\"}} {v}");
            }
        }
    }
    let _ = writeln!(
        o,
        "# TYPE pgrouter_vrrp_master gauge\n# TYPE pgrouter_vrrp_transitions_total counter\n# TYPE pgrouter_vrrp_two_masters_seen_total counter"
    );
    for v in &st.vrrp {
        let name = esc(&v.name);
        let _ = writeln!(
            o,
            "pgrouter_vrrp_master{{instance=\"{name}\"}} {}",
            u8::from(v.state == VrrpState::Master)
        );
        let _ = writeln!(
            o,
            "pgrouter_vrrp_transitions_total{{instance=\"{name}\"}} {}",
            v.counters.transitions
        );
        let _ = writeln!(
            o,
            "pgrouter_vrrp_two_masters_seen_total{{instance=\"{name}\"}} {}",
            v.counters.two_masters_seen
        );
    }
    if let Some(sy) = &st.sync {
        sync(&mut o, sy);
    }
    o
}

/// `pgrouter_sync_*`: readiness, per peer (connected each way, full syncs, queue, lag,
/// bytes, entries installed, removed, rejected, authentication failures), and the data
/// path's sync counters.
fn sync(o: &mut String, sy: &crate::status::SyncStatus) {
    let _ = writeln!(
        o,
        "# TYPE pgrouter_sync_ready gauge\npgrouter_sync_ready {}",
        u8::from(sy.ready)
    );
    for (name, kind, v) in [
        ("pgrouter_sync_events_total", "counter", sy.events),
        ("pgrouter_sync_events_lost_total", "counter", sy.events_lost),
        ("pgrouter_sync_grace_drops_total", "counter", sy.grace_drops),
        ("pgrouter_sync_adopted_total", "counter", sy.adopted),
        (
            "pgrouter_sync_unknown_peer_failures_total",
            "counter",
            sy.unknown_peer_failures,
        ),
    ] {
        let _ = writeln!(o, "# TYPE {name} {kind}\n{name} {v}");
    }
    for p in &sy.peers {
        let peer = esc(&p.addr);
        for (name, v) in [
            ("pgrouter_sync_peer_sending", u64::from(p.sending)),
            ("pgrouter_sync_peer_receiving", u64::from(p.receiving)),
            ("pgrouter_sync_peer_ready", u64::from(p.ready)),
            ("pgrouter_sync_peer_full_syncs_total", p.full_syncs),
            ("pgrouter_sync_peer_pending", p.pending),
            ("pgrouter_sync_peer_lag_ms", p.lag_ms),
            ("pgrouter_sync_peer_sent_bytes_total", p.bytes_sent),
            ("pgrouter_sync_peer_received_bytes_total", p.bytes_received),
            ("pgrouter_sync_peer_installed_total", p.installed),
            ("pgrouter_sync_peer_removed_total", p.removed),
            ("pgrouter_sync_peer_rejected_total", p.rejected),
            ("pgrouter_sync_peer_auth_failures_total", p.auth_failures),
        ] {
            let _ = writeln!(o, "{name}{{peer=\"{peer}\"}} {v}");
        }
        if let Some(s) = p.last_full_sync_s {
            let _ = writeln!(
                o,
                "pgrouter_sync_peer_last_full_sync_seconds{{peer=\"{peer}\"}} {s}"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::status::{BackendStatus, FlowsByState, ListenerStatus};

    /// The flow life cycle is visible: flows by state per backend, SNAT range usage per
    /// listener, handshake-table usage, expiries by state and the GC's totals.
    #[test]
    fn flow_life_cycle_families_are_exported() {
        let mut st = Status::default();
        st.datapath.handshake_entries = 4;
        st.datapath.handshake_capacity = 16_384;
        st.datapath.gc.totals.expiries.insert("handshake".into(), 7);
        st.datapath.gc.totals.reaped = 3;
        st.datapath.gc.totals.drift_corrections = 1;
        st.listeners.push(ListenerStatus {
            name: "pg/PG1".into(),
            snat_ports_in_use: 12,
            snat_ports: 20_000,
            drop_snat_exhausted: 2,
            backends: vec![BackendStatus {
                node: "pg1".into(),
                flows: FlowsByState {
                    handshake: 2,
                    established: 5,
                    closing: 1,
                    closed: 0,
                },
                ..Default::default()
            }],
            ..Default::default()
        });
        let m = render(&st);
        for line in [
            "pgrouter_flows{listener=\"pg/PG1\",node=\"pg1\",state=\"established\"} 5",
            "pgrouter_flows{listener=\"pg/PG1\",node=\"pg1\",state=\"handshake\"} 2",
            "pgrouter_flow_expiries_total{state=\"handshake\"} 7",
            "pgrouter_gc_reaped_total 3",
            "pgrouter_slot_drift_corrections_total 1",
            "pgrouter_snat_ports_in_use{listener=\"pg/PG1\"} 12",
            "pgrouter_snat_ports{listener=\"pg/PG1\"} 20000",
            "pgrouter_snat_exhausted_total{listener=\"pg/PG1\"} 2",
            "pgrouter_handshake_entries 4",
            "pgrouter_handshake_capacity 16384",
        ] {
            assert!(m.lines().any(|l| l == line), "missing {line:?} in\n{m}");
        }
    }

    /// Each sync peer's state is exported with the peer's address as label.
    #[test]
    fn sync_peers_are_exported() {
        let st = Status {
            sync: Some(crate::status::SyncStatus {
                ready: true,
                grace_drops: 4,
                peers: vec![crate::status::PeerStatus {
                    addr: "198.18.0.22:7800".into(),
                    sending: true,
                    installed: 50,
                    rejected: 2,
                    auth_failures: 1,
                    last_full_sync_s: Some(3),
                    ..Default::default()
                }],
                ..Default::default()
            }),
            ..Default::default()
        };
        let m = render(&st);
        for line in [
            "pgrouter_sync_ready 1",
            "pgrouter_sync_grace_drops_total 4",
            "pgrouter_sync_peer_sending{peer=\"198.18.0.22:7800\"} 1",
            "pgrouter_sync_peer_receiving{peer=\"198.18.0.22:7800\"} 0",
            "pgrouter_sync_peer_installed_total{peer=\"198.18.0.22:7800\"} 50",
            "pgrouter_sync_peer_rejected_total{peer=\"198.18.0.22:7800\"} 2",
            "pgrouter_sync_peer_auth_failures_total{peer=\"198.18.0.22:7800\"} 1",
            "pgrouter_sync_peer_last_full_sync_seconds{peer=\"198.18.0.22:7800\"} 3",
        ] {
            assert!(m.lines().any(|l| l == line), "missing {line:?} in\n{m}");
        }
    }
}
