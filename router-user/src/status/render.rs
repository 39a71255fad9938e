//! `pgrouter status` as tables, from the typed [`Status`] the daemon answers.
use std::fmt::{Display, Write as _};

use super::{ClusterStatus, InstanceStatus, ListenerStatus, Status, SyncStatus};

/// `-` for a value not known (yet).
fn opt<T: Display>(v: &Option<T>) -> String {
    v.as_ref().map_or_else(|| "-".into(), T::to_string)
}

/// Renders the status as the tables `pgrouter status` prints.
pub fn render(st: &Status) -> String {
    let mut o = String::new();
    let _ = writeln!(
        o,
        "pgrouter {} (map ABI v{}), up {}s, config {}",
        st.version, st.abi_version, st.uptime_s, st.config
    );
    datapath(&mut o, st);
    for c in &st.clusters {
        cluster(&mut o, c);
    }
    for l in &st.listeners {
        listener(&mut o, l);
    }
    for i in &st.vrrp {
        vrrp(&mut o, i);
    }
    if let Some(sy) = &st.sync {
        sync(&mut o, sy);
    }
    if let Some(e) = &st.last_error {
        let _ = writeln!(o, "\nlast error: {e}");
    }
    o
}

fn datapath(o: &mut String, st: &Status) {
    let d = &st.datapath;
    let list: Vec<String> = d
        .interfaces
        .iter()
        .map(|(name, mode)| format!("{name} ({mode})"))
        .collect();
    let _ = writeln!(
        o,
        "datapath: {}; {} conntrack entries, handshake table {}/{}; pins {}",
        list.join(", "),
        d.tracked_entries,
        d.handshake_entries,
        d.handshake_capacity,
        d.pin_path
    );
    let g = &d.gc;
    let e = |state: &str| opt(&g.totals.expiries.get(state));
    let _ = writeln!(
        o,
        "flow gc: last full cycle {}s ago, {} ms, {} entries; expired handshake {} \
         established {} closing {} closed {}; reaped {} (orphans {}); slot drift \
         corrections {}",
        g.last_cycle_age_s
            .map_or_else(|| "-".into(), |a| format!("{a:.1}")),
        g.last_cycle_ms
            .map_or_else(|| "-".into(), |a| format!("{a:.1}")),
        g.last_cycle_entries,
        e("handshake"),
        e("established"),
        e("closing"),
        e("closed"),
        g.totals.reaped,
        g.totals.orphans,
        g.totals.drift_corrections,
    );
}

fn cluster(o: &mut String, c: &ClusterStatus) {
    let _ = writeln!(
        o,
        "\ncluster {}: primary {}{}{}",
        c.cluster,
        opt(&c.primary),
        if c.split_brain { "  SPLIT BRAIN" } else { "" },
        if c.writes_blocked {
            "  WRITES BLOCKED"
        } else {
            ""
        },
    );
    let _ = writeln!(
        o,
        "  {:<10} {:<16} {:<9} {:<9} {:>3} {:>10}  checks",
        "NODE", "ADDRESS", "ROLE", "STATE", "TL", "LAG"
    );
    for n in &c.nodes {
        let checks: Vec<String> = n
            .checks
            .iter()
            .map(|ch| {
                let verdict = ch.verdict.as_str();
                match &ch.last {
                    Some(last) => format!("{}={verdict}({})", ch.check, opt(&last.http_status)),
                    None => format!("{}={verdict}", ch.check),
                }
            })
            .collect();
        let _ = writeln!(
            o,
            "  {:<10} {:<16} {:<9} {:<9} {:>3} {:>10}  {}{}",
            n.name,
            format!("{}:{}", n.addr, n.port),
            opt(&n.role),
            opt(&n.state),
            opt(&n.timeline),
            opt(&n.lag_bytes),
            checks.join(" "),
            if n.refusing {
                "  REFUSING CONNECTIONS (out of every set)"
            } else {
                ""
            }
        );
    }
}

fn listener(o: &mut String, l: &ListenerStatus) {
    let _ = writeln!(
        o,
        "\nlistener {} {}:{}  gen {}{}  new {} established {} rst {} (no backend {}) drops(no-backend {} maxconn {} snat {} ct-full {}) ct-miss {}  snat ports {}/{}",
        l.name,
        l.vip,
        l.port,
        l.generation,
        if l.fallback_active {
            "  FALLBACK→primary"
        } else {
            ""
        },
        l.new_flows,
        l.established,
        l.rst_sent,
        l.rst_no_backend,
        l.drop_no_backend,
        l.drop_maxconn,
        l.drop_snat_exhausted,
        l.drop_ct_full,
        l.ct_miss,
        l.snat_ports_in_use,
        l.snat_ports,
    );
    let _ = writeln!(
        o,
        "  {:<10} {:<16} {:<7} {:>7} {:>8} {:>6} {:>6} {:>7} {:>6} {:>9} {:>12} {:>12}",
        "NODE",
        "ADDRESS",
        "STATE",
        "ACTIVE",
        "MAXCONN",
        "HS",
        "EST",
        "CLOSING",
        "CLOSED",
        "NEW",
        "BYTES_IN",
        "BYTES_OUT"
    );
    for b in &l.backends {
        let _ = writeln!(
            o,
            "  {:<10} {:<16} {:<7} {:>7} {:>8} {:>6} {:>6} {:>7} {:>6} {:>9} {:>12} {:>12}",
            b.node,
            b.addr.to_string(),
            b.state.as_str(),
            b.active_flows,
            b.maxconn,
            b.flows.handshake,
            b.flows.established,
            b.flows.closing,
            b.flows.closed,
            b.new_flows,
            b.bytes_in,
            b.bytes_out,
        );
    }
}

fn sync(o: &mut String, sy: &SyncStatus) {
    let _ = writeln!(
        o,
        "\nsync: {} (snat ports {}-{}{}), events {} lost {}, grace drops {}, adopted {}",
        if sy.ready {
            "ready"
        } else {
            "NOT READY (a peer's full sync is missing)"
        },
        sy.snat_first,
        sy.snat_last,
        if sy.grace_open {
            ", grace window open"
        } else {
            ""
        },
        sy.events,
        sy.events_lost,
        sy.grace_drops,
        sy.adopted
    );
    let _ = writeln!(
        o,
        "  {:<22} {:>4} {:>4} {:>5} {:>9} {:>7} {:>6} {:>9} {:>7} {:>8} {:>4}",
        "peer",
        "out",
        "in",
        "ready",
        "last full",
        "pending",
        "lag ms",
        "installed",
        "removed",
        "rejected",
        "auth"
    );
    for p in &sy.peers {
        let yn = |b: bool| if b { "up" } else { "down" };
        let _ = writeln!(
            o,
            "  {:<22} {:>4} {:>4} {:>5} {:>9} {:>7} {:>6} {:>9} {:>7} {:>8} {:>4}",
            p.addr,
            yn(p.sending),
            yn(p.receiving),
            if p.ready { "yes" } else { "no" },
            p.last_full_sync_s
                .map_or_else(|| "-".into(), |s| format!("{s}s")),
            p.pending,
            p.lag_ms,
            p.installed,
            p.removed,
            p.rejected,
            p.auth_failures
        );
        if let Some(e) = &p.last_error
            && !p.sending
        {
            let _ = writeln!(o, "    last error: {e}");
        }
    }
}

fn vrrp(o: &mut String, i: &InstanceStatus) {
    let _ = writeln!(
        o,
        "\nvrrp {} on {} vrid {} v{}: {} priority {}/{} master {} last change: {}",
        i.name,
        i.interface,
        i.virtual_router_id,
        i.version,
        i.state.as_str(),
        i.effective_priority,
        i.configured_priority,
        opt(&i.master),
        opt(&i.last_transition_reason),
    );
}

#[cfg(test)]
mod tests {
    use super::super::{BackendState, BackendStatus, ListenerStatus};
    use super::*;

    /// The table shows flows by state per backend, SNAT range usage and the GC's figures.
    #[test]
    fn the_table_shows_flow_states_snat_usage_and_gc_figures() {
        let mut st = Status::default();
        st.datapath
            .interfaces
            .push(("eth0".into(), "native".into()));
        st.datapath.handshake_entries = 6;
        st.datapath.handshake_capacity = 16_384;
        st.datapath.gc.last_cycle_age_s = Some(0.4);
        st.datapath.gc.totals.drift_corrections = 2;
        st.listeners.push(ListenerStatus {
            name: "pg/PG1".into(),
            snat_ports_in_use: 9,
            snat_ports: 300,
            backends: vec![BackendStatus {
                node: "pg1".into(),
                addr: [198, 18, 0, 11].into(),
                state: BackendState::Active,
                flows: [3, 40, 2, 1].into(),
                ..Default::default()
            }],
            ..Default::default()
        });
        let t = render(&st);
        assert!(t.contains("handshake table 6/16384"), "{t}");
        assert!(t.contains("snat ports 9/300"), "{t}");
        assert!(t.contains("slot drift corrections 2"), "{t}");
        assert!(t.contains("last full cycle 0.4s ago, - ms"), "{t}");
        let row = t
            .lines()
            .find(|l| l.trim_start().starts_with("pg1"))
            .unwrap_or("");
        let cols: Vec<&str> = row.split_whitespace().collect();
        assert_eq!(
            cols.get(..9),
            Some(
                &[
                    "pg1",
                    "198.18.0.11",
                    "active",
                    "0",
                    "0",
                    "3",
                    "40",
                    "2",
                    "1"
                ][..]
            ),
            "{row}"
        );
    }

    /// The sync table names each peer and what it is missing.
    #[test]
    fn the_table_shows_each_sync_peer() {
        let st = Status {
            sync: Some(SyncStatus {
                ready: false,
                snat_first: 40000,
                snat_last: 42499,
                peers: vec![super::super::PeerStatus {
                    addr: "198.18.0.22:7800".into(),
                    sending: false,
                    receiving: true,
                    installed: 50,
                    last_error: Some("connect: refused".into()),
                    ..Default::default()
                }],
                ..Default::default()
            }),
            ..Default::default()
        };
        let t = render(&st);
        assert!(t.contains("sync: NOT READY"), "{t}");
        assert!(t.contains("snat ports 40000-42499"), "{t}");
        let row = t
            .lines()
            .find(|l| l.contains("198.18.0.22:7800"))
            .unwrap_or("");
        let cols: Vec<&str> = row.split_whitespace().collect();
        assert_eq!(
            cols.get(..4),
            Some(&["198.18.0.22:7800", "down", "up", "no"][..]),
            "{row}"
        );
        assert!(t.contains("last error: connect: refused"), "{t}");
    }
}
