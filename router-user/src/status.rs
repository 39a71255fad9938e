//! The operator's view: one serializable `Status` gathered by the daemon, rendered as JSON
//! (`pgrouter status --json`, metrics) or as tables (`pgrouter status`).
use std::{collections::BTreeMap, fmt::Write as _, time::Duration};

use serde::Serialize;
use serde_json::Value;

use crate::{
    config::Config,
    dataplane::{Applied, Maps},
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
    pub tracked_entries: usize,
    /// Global verdict counters by name.
    pub counters: BTreeMap<String, u64>,
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
    pub backends: Vec<BackendStatus>,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct BackendStatus {
    pub node: String,
    pub addr: String,
    pub state: String,
    pub active_flows: u32,
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
    uptime: Duration,
    last_error: Option<String>,
) -> Status {
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
            tracked_entries: maps.conntrack.keys().count(),
            counters,
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
        let _ = writeln!(
            o,
            "datapath: {}; {} conntrack entries; pins {}",
            list.join(", "),
            s(&v["datapath"]["tracked_entries"]),
            s(&v["datapath"]["pin_path"])
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
            "\nlistener {} {}:{}  gen {}{}  new {} rst {} drops(no-backend {} maxconn {} snat {}) ct-miss {}",
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
            s(&l["rst_sent"]),
            s(&l["drop_no_backend"]),
            s(&l["drop_maxconn"]),
            s(&l["drop_snat_exhausted"]),
            s(&l["ct_miss"]),
        );
        let _ = writeln!(
            o,
            "  {:<10} {:<16} {:<7} {:>7} {:>8} {:>9} {:>12} {:>12}",
            "NODE", "ADDRESS", "STATE", "ACTIVE", "MAXCONN", "NEW", "BYTES_IN", "BYTES_OUT"
        );
        for b in l["backends"].as_array().into_iter().flatten() {
            let _ = writeln!(
                o,
                "  {:<10} {:<16} {:<7} {:>7} {:>8} {:>9} {:>12} {:>12}",
                s(&b["node"]),
                s(&b["addr"]),
                s(&b["state"]),
                s(&b["active_flows"]),
                s(&b["maxconn"]),
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
