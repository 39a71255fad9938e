//! The JSON contract: a status as the daemon printed it before the types were shared reads
//! into [`Status`] and writes back unchanged, field for field.
use super::*;

/// Every field of every type, in the shape `pgrouter status --json` has always printed.
const WIRE: &str = r#"{
  "version": "0.1.0", "abi_version": 7, "uptime_s": 12, "config": "/etc/pgrouter/pgrouter.toml",
  "datapath": {
    "interfaces": [["eth0", "native"]], "pin_path": "/sys/fs/bpf/pgrouter",
    "tracked_entries": 4, "handshake_entries": 2, "handshake_capacity": 16384,
    "counters": {"pass": 10, "nat": 3},
    "gc": {
      "last_cycle_age_s": 0.5, "last_cycle_ms": 1.25, "last_cycle_entries": 6,
      "expiries": {"handshake": 1, "established": 0, "closing": 0, "closed": 2},
      "reaped": 3, "orphans": 1, "kept": 0, "drift_corrections": 0, "full_cycles": 9,
      "entries_walked": 54, "errors": 0
    }
  },
  "clusters": [{
    "cluster": "pg", "checks": "patroni", "primary": "pg1", "split_brain": false,
    "writes_blocked": false,
    "nodes": [{
      "name": "pg1", "addr": "198.18.0.11", "port": 5432, "api_port": 8008,
      "role": "primary", "state": "running", "timeline": 3, "replication_state": null,
      "lag_bytes": 0, "demoted": false, "refusing": false,
      "checks": [
        {"check": "/primary", "verdict": "up", "up": true, "successes": 3, "failures": 0,
         "last": {"ok": true, "http_status": 200, "latency_ms": 1.5, "detail": "primary"}},
        {"check": "/replica?lag=1048576", "verdict": "unknown", "up": false,
         "successes": 0, "failures": 0, "last": null}
      ]
    }],
    "listeners": [
      {"name": "PG1", "kind": "primary", "members": ["pg1"], "fallback_active": false},
      {"name": "PG2", "kind": "read-only", "members": [], "fallback_active": true}
    ],
    "counters": {"checks_total": 40, "checks_failed": 2, "set_changes": 1}
  }],
  "listeners": [{
    "name": "pg/PG1", "vip": "198.18.0.100", "port": 5000, "fallback_active": false,
    "generation": 2, "new_flows": 5, "rst_sent": 0, "drop_no_backend": 1, "drop_maxconn": 0,
    "drop_snat_exhausted": 0, "ct_miss": 0, "rst_no_backend": 0, "established": 5,
    "drop_ct_full": 0, "snat_ports_in_use": 2, "snat_ports": 20000,
    "backends": [{
      "node": "pg1", "addr": "198.18.0.11", "state": "down", "active_flows": 2,
      "flows": {"handshake": 0, "established": 2, "closing": 0, "closed": 1},
      "maxconn": 100, "new_flows": 5, "packets_in": 50, "bytes_in": 5000, "packets_out": 40,
      "bytes_out": 4000, "rst_sent": 0, "drop_maxconn": 0, "refused": 1
    }]
  }],
  "vrrp": [{
    "name": "VI_1", "interface": "eth0", "virtual_router_id": 51, "version": 3,
    "state": "Master", "configured_priority": 100, "effective_priority": 90,
    "master": "198.18.0.2", "primary_ip": "198.18.0.2", "vips": ["198.18.0.100/24"],
    "last_transition_unix_ms": 1700000000000, "last_transition_reason": "master down timer",
    "counters": {"transitions": 2, "two_masters_seen": 0, "adverts_sent": 10,
      "adverts_received": 3, "send_errors": 0, "adverts_rejected": {"checksum": 1}}
  }],
  "last_error": null
}"#;

#[test]
fn the_wire_format_reads_and_writes_back_unchanged() {
    let wire: serde_json::Value = serde_json::from_str(WIRE).expect("fixture is JSON");
    let st: Status = serde_json::from_value(wire.clone()).expect("reads as Status");
    assert_eq!(st.listener("pg/PG1").map(|l| l.port), Some(5000));
    let c = st.cluster("pg").expect("cluster pg");
    assert_eq!(c.set("PG2").map(|s| s.kind), Some(ListenerKind::ReadOnly));
    assert_eq!(
        c.node("pg1")
            .and_then(|n| n.check("/primary"))
            .map(|c| c.verdict),
        Some(Verdict::Up)
    );
    assert_eq!(st.vrrp[0].state, VrrpState::Master);
    let back = serde_json::to_value(&st).expect("writes");
    assert_eq!(back, wire);
}

/// A field the daemon stopped sending is an error for readers, not a silent 0.
#[test]
fn a_missing_field_is_an_error() {
    let mut wire: serde_json::Value = serde_json::from_str(WIRE).expect("fixture is JSON");
    if let Some(l) = wire["listeners"][0].as_object_mut() {
        l.remove("established");
    }
    let err = serde_json::from_value::<Status>(wire).expect_err("must not read");
    assert!(err.to_string().contains("established"), "{err}");
}

fn json<T: serde::Serialize>(v: &T) -> String {
    serde_json::to_string(v).unwrap_or_default()
}

/// `as_str` (the tables) and the JSON name each variant the same.
#[test]
fn enums_are_named_as_before() {
    assert_eq!(json(&Checks::Static), "\"static\"");
    for v in [Verdict::Unknown, Verdict::Up, Verdict::Down] {
        assert_eq!(json(&v), format!("\"{}\"", v.as_str()));
    }
    for s in [
        VrrpState::Initialize,
        VrrpState::Backup,
        VrrpState::Master,
        VrrpState::Fault,
    ] {
        assert_eq!(json(&s), format!("\"{}\"", s.as_str()));
    }
    for s in [
        BackendState::Active,
        BackendState::Drain,
        BackendState::Down,
    ] {
        assert_eq!(json(&s), format!("\"{}\"", s.as_str()));
    }
}

/// `pgrouter reload`'s answer keeps its two fields.
#[test]
fn the_control_answer_reads_as_before() {
    let a: Answer =
        serde_json::from_str(r#"{"message": "reloaded /etc/pgrouter.toml", "ok": true}"#)
            .expect("reads");
    assert!(a.ok);
    assert_eq!(a.message, "reloaded /etc/pgrouter.toml");
}
