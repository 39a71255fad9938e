//! The operator's view: one serializable `Status` gathered by the daemon, rendered as JSON
//! (`pgrouter status --json`, metrics) or as tables (`pgrouter status`).
use std::{collections::BTreeMap, fmt::Write as _, time::Duration};

use serde::Serialize;
use serde_json::Value;

use crate::{
    config::Config,
    dataplane::{
        Applied, Maps,
        gc::{CycleReport, GcCounters},
    },
    health::ClusterSnapshot,
    model::BackendState,
    vrrp::InstanceStatus,
};

#[derive(Clone, Debug, Default, Serialize)]
pub struct Status {
    pub version: String,
    /// Map layout version of the running program (pins live under `v<abi>/`).
    pub abi_version: u32,
    pub uptime_s: u64,
    pub config: String,
    pub datapath: DatapathStatus,
    pub clusters: Vec<Value>,
    pub listeners: Vec<ListenerStatus>,
    pub vrrp: Vec<Value>,
    pub last_error: Option<String>,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct DatapathStatus {
    /// (interface, attach mode).
    pub interfaces: Vec<(String, String)>,
    pub pin_path: String,
    /// Entries in PGR_CONNTRACK (established flows, two per flow) at the flow GC's last full
    /// cycle: status never walks a table itself.
    pub tracked_entries: u64,
    /// Entries in PGR_HANDSHAKE (two per half-open flow) at the last full cycle, and its size.
    pub handshake_entries: u64,
    pub handshake_capacity: u64,
    /// Global verdict counters by name.
    pub counters: BTreeMap<String, u64>,
    pub gc: GcStatus,
}

/// The flow garbage collector: its last full cycle and its totals since start.
#[derive(Clone, Debug, Default, Serialize)]
pub struct GcStatus {
    /// Seconds since the last full cycle ended; `None` before the first.
    pub last_cycle_age_s: Option<f64>,
    pub last_cycle_ms: Option<f64>,
    /// Entries read in the last full cycle.
    pub last_cycle_entries: u64,
    #[serde(flatten)]
    pub totals: GcCounters,
}

/// Flows of one backend by life-cycle state, at the flow GC's last full cycle.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct FlowsByState {
    pub handshake: u64,
    pub established: u64,
    pub closing: u64,
    pub closed: u64,
}

impl From<[u64; 4]> for FlowsByState {
    fn from(v: [u64; 4]) -> Self {
        Self {
            handshake: v[0],
            established: v[1],
            closing: v[2],
            closed: v[3],
        }
    }
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct ListenerStatus {
    pub name: String,
    pub vip: String,
    pub port: u16,
    pub fallback_active: bool,
    pub generation: u32,
    pub new_flows: u64,
    pub rst_sent: u64,
    pub drop_no_backend: u64,
    pub drop_maxconn: u64,
    pub drop_snat_exhausted: u64,
    pub ct_miss: u64,
    /// SYNs answered by a RST: the set stayed empty past its hold (or the listener rejects).
    pub rst_no_backend: u64,
    /// Handshakes completed (the flow took its slot).
    pub established: u64,
    /// Completed handshakes dropped because PGR_CONNTRACK was full.
    pub drop_ct_full: u64,
    /// SNAT ports held by this listener's flows that are not closed (half-open or open; a
    /// closed flow's port is reusable at once) at the last full GC cycle, and the size of its
    /// SNAT range.
    pub snat_ports_in_use: u64,
    pub snat_ports: u64,
    pub backends: Vec<BackendStatus>,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct BackendStatus {
    pub node: String,
    pub addr: String,
    pub state: String,
    /// Slots taken (PGR_BACKEND_CONNS): open established flows, as maxconn counts them.
    pub active_flows: u32,
    /// Flows in the tables by state, at the last full GC cycle.
    pub flows: FlowsByState,
    pub maxconn: u32,
    pub new_flows: u64,
    pub packets_in: u64,
    pub bytes_in: u64,
    pub packets_out: u64,
    pub bytes_out: u64,
    pub rst_sent: u64,
    pub drop_maxconn: u64,
    /// Connections the node refused (nothing listening on its port).
    pub refused: u64,
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
    gc: (Option<&CycleReport>, &GcCounters, u64),
    uptime: Duration,
    last_error: Option<String>,
) -> Status {
    let (cycle, gc_totals, now_ns) = gc;
    let tally = cycle.map(|c| &c.tally);
    let mut listeners = Vec::new();
    for snap in snaps {
        for (l, set) in snap.listeners.iter().zip(snap.status.listeners.iter()) {
            let sid = applied.service_ids.get(&l.name).copied();
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
                        .get(&(l.name.clone(), b.node.clone()))
                        .copied();
                    let st = bid.map(|id| maps.backend_stats(id)).unwrap_or_default();
                    BackendStatus {
                        node: b.node.clone(),
                        addr: b.addr.to_string(),
                        state: match b.state {
                            BackendState::Active => "active",
                            BackendState::Drain => "drain",
                            BackendState::Shutdown => "down",
                        }
                        .into(),
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
                name: l.name.clone(),
                vip: l.vip.to_string(),
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
                last_cycle_age_s: cycle.map(|c| now_ns.saturating_sub(c.finished_ns) as f64 / 1e9),
                last_cycle_ms: cycle.map(|c| c.duration_ns as f64 / 1e6),
                last_cycle_entries: tally.map_or(0, |t| t.walked),
                totals: gc_totals.clone(),
            },
        },
        clusters: snaps
            .iter()
            .map(|s| serde_json::to_value(&s.status).unwrap_or(Value::Null))
            .collect(),
        listeners,
        vrrp: vrrp
            .iter()
            .map(|v| serde_json::to_value(v).unwrap_or(Value::Null))
            .collect(),
        last_error,
    }
}

fn s(v: &Value) -> String {
    match v {
        Value::Null => "-".into(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// Renders the JSON status as the tables `pgrouter status` prints.
pub fn render(v: &Value) -> String {
    let mut o = String::new();
    let _ = writeln!(
        o,
        "pgrouter {} (map ABI v{}), up {}s, config {}",
        s(&v["version"]),
        s(&v["abi_version"]),
        s(&v["uptime_s"]),
        s(&v["config"])
    );
    if let Some(ifs) = v["datapath"]["interfaces"].as_array() {
        let list: Vec<String> = ifs
            .iter()
            .map(|i| format!("{} ({})", s(&i[0]), s(&i[1])))
            .collect();
        let d = &v["datapath"];
        let _ = writeln!(
            o,
            "datapath: {}; {} conntrack entries, handshake table {}/{}; pins {}",
            list.join(", "),
            s(&d["tracked_entries"]),
            s(&d["handshake_entries"]),
            s(&d["handshake_capacity"]),
            s(&d["pin_path"])
        );
        let g = &d["gc"];
        let e = &g["expiries"];
        let _ = writeln!(
            o,
            "flow gc: last full cycle {}s ago, {} ms, {} entries; expired handshake {} \
             established {} closing {} closed {}; reaped {} (orphans {}); slot drift \
             corrections {}",
            g["last_cycle_age_s"]
                .as_f64()
                .map_or_else(|| "-".into(), |a| format!("{a:.1}")),
            g["last_cycle_ms"]
                .as_f64()
                .map_or_else(|| "-".into(), |a| format!("{a:.1}")),
            s(&g["last_cycle_entries"]),
            s(&e["handshake"]),
            s(&e["established"]),
            s(&e["closing"]),
            s(&e["closed"]),
            s(&g["reaped"]),
            s(&g["orphans"]),
            s(&g["drift_corrections"]),
        );
    }
    for c in v["clusters"].as_array().into_iter().flatten() {
        let _ = writeln!(
            o,
            "\ncluster {}: primary {}{}{}",
            s(&c["cluster"]),
            s(&c["primary"]),
            if c["split_brain"].as_bool() == Some(true) {
                "  SPLIT BRAIN"
            } else {
                ""
            },
            if c["writes_blocked"].as_bool() == Some(true) {
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
        for n in c["nodes"].as_array().into_iter().flatten() {
            let checks: Vec<String> = n["checks"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|ch| {
                    let last = &ch["last"];
                    format!(
                        "{}={}{}",
                        s(&ch["check"]),
                        s(&ch["verdict"]).to_lowercase(),
                        if last.is_null() {
                            String::new()
                        } else {
                            format!("({})", s(&last["http_status"]))
                        }
                    )
                })
                .collect();
            let _ = writeln!(
                o,
                "  {:<10} {:<16} {:<9} {:<9} {:>3} {:>10}  {}{}",
                s(&n["name"]),
                format!("{}:{}", s(&n["addr"]), s(&n["port"])),
                s(&n["role"]),
                s(&n["state"]),
                s(&n["timeline"]),
                s(&n["lag_bytes"]),
                checks.join(" "),
                if n["refusing"] == true {
                    "  REFUSING CONNECTIONS (out of every set)"
                } else {
                    ""
                }
            );
        }
    }
    for l in v["listeners"].as_array().into_iter().flatten() {
        let _ = writeln!(
            o,
            "\nlistener {} {}:{}  gen {}{}  new {} established {} rst {} (no backend {}) drops(no-backend {} maxconn {} snat {} ct-full {}) ct-miss {}  snat ports {}/{}",
            s(&l["name"]),
            s(&l["vip"]),
            s(&l["port"]),
            s(&l["generation"]),
            if l["fallback_active"].as_bool() == Some(true) {
                "  FALLBACK→primary"
            } else {
                ""
            },
            s(&l["new_flows"]),
            s(&l["established"]),
            s(&l["rst_sent"]),
            s(&l["rst_no_backend"]),
            s(&l["drop_no_backend"]),
            s(&l["drop_maxconn"]),
            s(&l["drop_snat_exhausted"]),
            s(&l["drop_ct_full"]),
            s(&l["ct_miss"]),
            s(&l["snat_ports_in_use"]),
            s(&l["snat_ports"]),
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
        for b in l["backends"].as_array().into_iter().flatten() {
            let _ = writeln!(
                o,
                "  {:<10} {:<16} {:<7} {:>7} {:>8} {:>6} {:>6} {:>7} {:>6} {:>9} {:>12} {:>12}",
                s(&b["node"]),
                s(&b["addr"]),
                s(&b["state"]),
                s(&b["active_flows"]),
                s(&b["maxconn"]),
                s(&b["flows"]["handshake"]),
                s(&b["flows"]["established"]),
                s(&b["flows"]["closing"]),
                s(&b["flows"]["closed"]),
                s(&b["new_flows"]),
                s(&b["bytes_in"]),
                s(&b["bytes_out"]),
            );
        }
    }
    for i in v["vrrp"].as_array().into_iter().flatten() {
        let _ = writeln!(
            o,
            "\nvrrp {} on {} vrid {} v{}: {} priority {}/{} master {} last change: {}",
            s(&i["name"]),
            s(&i["interface"]),
            s(&i["virtual_router_id"]),
            s(&i["version"]),
            s(&i["state"]),
            s(&i["effective_priority"]),
            s(&i["configured_priority"]),
            s(&i["master"]),
            s(&i["last_transition_reason"]),
        );
    }
    if !v["last_error"].is_null() {
        let _ = writeln!(o, "\nlast error: {}", s(&v["last_error"]));
    }
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The table shows flows by state per backend, SNAT range usage and the GC's figures,
    /// read from the same JSON `pgrouter status --json` prints.
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
                addr: "198.18.0.11".into(),
                state: "active".into(),
                flows: [3, 40, 2, 1].into(),
                ..Default::default()
            }],
            ..Default::default()
        });
        let v = serde_json::to_value(&st).expect("json");
        assert_eq!(v["listeners"][0]["backends"][0]["flows"]["established"], 40);
        let t = render(&v);
        assert!(t.contains("handshake table 6/16384"), "{t}");
        assert!(t.contains("snat ports 9/300"), "{t}");
        assert!(t.contains("slot drift corrections 2"), "{t}");
        let row = t
            .lines()
            .find(|l| l.trim_start().starts_with("pg1"))
            .unwrap_or("");
        let cols: Vec<&str> = row.split_whitespace().collect();
        assert_eq!(cols.get(5..9), Some(&["3", "40", "2", "1"][..]), "{row}");
    }
}
