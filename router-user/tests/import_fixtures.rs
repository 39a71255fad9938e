//! `pgrouter import` on real HAProxy/Keepalived configurations (fixtures/import/, each naming
//! its source): the output must pass `config::parse`, and what it configures must match what
//! the source meant — listener kinds, ports, VIPs, fallback, lag bytes, health timing, maxconn,
//! VRRP fields — with a warning for everything that differs.
use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use pgrouter::config::StateHint;
use pgrouter::config::{self, Config, Fallback, ListenerKind, OnMarkedDown, Scheme};
use pgrouter::import::{self, Imported, Source};
use pgrouter::model::Balance;

fn fixture(name: &str) -> String {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/import")
        .join(name);
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// Translates fixture files and parses the result; panics with the whole output if pgrouter
/// does not accept it.
fn translate(haproxy: &str, keepalived: Option<&str>) -> (Imported, Config) {
    let htext = fixture(haproxy);
    let ktext = keepalived.map(fixture);
    let h = Source {
        path: haproxy,
        text: &htext,
    };
    let k = keepalived
        .zip(ktext.as_deref())
        .map(|(path, text)| Source { path, text });
    let out = import::import(&h, k.as_ref()).unwrap_or_else(|e| panic!("import failed: {e}"));
    let cfg = config::parse(&out.toml, "imported.toml")
        .unwrap_or_else(|e| panic!("output does not parse:\n{e}\n---\n{}", out.toml));
    // Every warning is in the output too, never only on stderr.
    for w in &out.warnings {
        assert!(
            out.toml.contains(&format!("# WARNING: {w}")),
            "warning missing from the output: {w}\n---\n{}",
            out.toml
        );
    }
    (out, cfg)
}

fn has_warning(out: &Imported, needle: &str) -> bool {
    out.warnings.iter().any(|w| w.message.contains(needle))
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap_or_else(|e| panic!("{s}: {e}"))
}

/// The seed's first configuration: writes to the primary on 5000, reads to replicas on 5001
/// with no fallback (flagged), HAProxy timing carried over, VRRP from the seed's keepalived.conf.
#[test]
fn seed_simple_config_keeps_its_meaning_and_flags_the_missing_fallback() {
    let (out, cfg) = translate("seed_simple.haproxy.cfg", Some("seed.keepalived.conf"));
    assert_eq!(cfg.clusters.len(), 1);
    let c = &cfg.clusters[0];
    let ls: Vec<_> = c
        .listeners
        .iter()
        .map(|l| (l.name.as_str(), l.vip, l.port, l.kind, l.fallback))
        .collect();
    assert_eq!(
        ls,
        vec![
            (
                "PG1",
                ip("10.0.0.1"),
                5000,
                ListenerKind::Primary,
                Fallback::None
            ),
            (
                "PG1_ro",
                ip("10.0.0.1"),
                5001,
                ListenerKind::Replica,
                Fallback::None
            ),
        ]
    );
    for l in &c.listeners {
        assert_eq!(l.maxconn, 100);
        assert_eq!(l.on_marked_down, OnMarkedDown::ShutdownSessions);
        assert_eq!(l.balance, Balance::RoundRobin);
        assert_eq!(l.lag, None);
    }
    // inter 3s fall 3 rise 2; fastinter/downinter default to inter in HAProxy.
    assert_eq!(c.health.interval, Duration::from_secs(3));
    assert_eq!(c.health.fastinter, Duration::from_secs(3));
    assert_eq!(c.health.downinter, Duration::from_secs(3));
    assert_eq!((c.health.fall, c.health.rise), (3, 2));
    let nodes: Vec<_> = c
        .nodes
        .iter()
        .map(|n| (n.host, n.port, n.api_port))
        .collect();
    assert_eq!(
        nodes,
        vec![
            (ip("10.5.5.147"), 5432, 8008),
            (ip("10.5.5.148"), 5432, 8008)
        ]
    );
    assert!(has_warning(&out, "has no fallback"));
    assert!(out.toml.contains("# fallback = \"primary\""));
    assert_eq!(cfg.datapath.interfaces, vec!["eth0".to_owned()]);
}

/// The seed's fixed configuration: the use_backend/nbsrv pair becomes fallback = "primary"
/// and nothing else needs a warning except keepalived's track_script.
#[test]
fn seed_fallback_reads_fall_back_to_the_primary() {
    let (out, cfg) = translate("seed_fallback.haproxy.cfg", Some("seed.keepalived.conf"));
    let c = &cfg.clusters[0];
    assert_eq!(
        c.listeners.len(),
        2,
        "PG1_ro_leader is not a listener of its own"
    );
    assert_eq!(c.listeners[1].kind, ListenerKind::Replica);
    assert_eq!(c.listeners[1].fallback, Fallback::Primary);
    assert_eq!(c.nodes.len(), 2);
    let msgs: Vec<&str> = out.warnings.iter().map(|w| w.message.as_str()).collect();
    assert_eq!(msgs.len(), 1, "{msgs:#?}");
    assert!(msgs[0].contains("track_script chk_haproxy"));
}

/// keepalived's instance carries over field by field; its script becomes pgrouter's own
/// tracks with the script's weight (+2: added while healthy, as in keepalived).
#[test]
fn seed_keepalived_becomes_a_vrrp_instance() {
    let (_, cfg) = translate("seed_fallback.haproxy.cfg", Some("seed.keepalived.conf"));
    assert_eq!(cfg.vrrp.len(), 1);
    let v = &cfg.vrrp[0];
    assert_eq!(v.name, "VI_1");
    assert_eq!(v.interface, "eth0");
    assert_eq!(v.state, Some(StateHint::Master));
    assert_eq!(v.virtual_router_id, 51);
    assert_eq!(v.priority, 101);
    assert_eq!(v.advert_int, Duration::from_secs(1));
    assert_eq!(
        v.version, 2,
        "keepalived defaults to VRRPv2, and auth_pass needs it"
    );
    assert_eq!(v.auth_pass.as_deref(), Some("changeme"));
    assert_eq!(v.virtual_ipaddress.len(), 1);
    assert_eq!(v.virtual_ipaddress[0].addr, ip("10.0.0.1"));
    assert_eq!(v.virtual_ipaddress[0].prefix, 32);
    assert!(!v.nopreempt);
    let tracks: Vec<_> = v
        .track
        .iter()
        .map(|t| (t.name.as_str(), t.weight))
        .collect();
    assert_eq!(tracks, vec![("xdp-attached", 2), ("patroni:PG1", 2)]);
}

/// The seed's warning about names that must agree: a use_backend naming a backend that does
/// not exist, nbsrv counting a pool that is not the listener's, an unused leader backend, a
/// VIP that keepalived does not hold, and a read pool missing a server.
#[test]
fn stale_section_names_and_mismatches_are_flagged() {
    let (out, cfg) = translate("seed_stale_names.haproxy.cfg", Some("seed.keepalived.conf"));
    assert!(has_warning(
        &out,
        "`use_backend PG1_ro_primary` in `PG1_read` names a backend that does not exist"
    ));
    assert!(has_warning(&out, "counts `PG1_ro`, which does not exist"));
    assert!(has_warning(&out, "backend `PG1_ro_leader` is not used"));
    assert!(has_warning(
        &out,
        "binds 10.5.5.100, which is not a keepalived virtual_ipaddress (10.0.0.1)"
    ));
    assert!(has_warning(
        &out,
        "forwards only to 1 of the cluster's 2 servers"
    ));
    assert!(has_warning(&out, "has no fallback"));
    let l = &cfg.clusters[0].listeners[1];
    assert_eq!((l.vip, l.port), (ip("10.5.5.100"), 5001));
    assert_eq!(
        l.fallback,
        Fallback::None,
        "the fallback target does not exist"
    );
    // The warnings point at the lines that cause them.
    let w = out
        .warnings
        .iter()
        .find(|w| w.message.contains("PG1_ro_primary"))
        .map(|w| w.line);
    assert_eq!(w, Some(18));
}

/// The haproxy.cfg Patroni ships: frontend + backend, per-node API ports, `timeout check`,
/// no VIP (placeholder + warning), loopback nodes flagged.
#[test]
fn patroni_example_frontend_backend() {
    let (out, cfg) = translate("patroni.haproxy.cfg", None);
    let c = &cfg.clusters[0];
    assert_eq!(c.listeners.len(), 1);
    let l = &c.listeners[0];
    assert_eq!((l.port, l.kind), (5000, ListenerKind::Primary));
    assert_eq!(l.vip, IpAddr::V4(import::translate::PLACEHOLDER_VIP));
    assert!(has_warning(&out, "replace the placeholder 192.0.2.1"));
    assert_eq!(l.maxconn, 100);
    assert_eq!(l.on_marked_down, OnMarkedDown::Keep, "HAProxy's default");
    let api: Vec<_> = c.nodes.iter().map(|n| (n.port, n.api_port)).collect();
    assert_eq!(api, vec![(5432, 8008), (5433, 8009)]);
    assert_eq!(c.api.port, 8008);
    // HAProxy defaults inter 2s fall 3 rise 2; `timeout check 5s` from defaults.
    assert_eq!(c.health.interval, Duration::from_secs(2));
    assert_eq!(c.health.timeout, Duration::from_secs(5));
    assert_eq!((c.health.fall, c.health.rise), (3, 2));
    assert!(has_warning(&out, "is on loopback"));
    assert!(cfg.vrrp.is_empty());
    assert!(cfg.datapath.interfaces.is_empty());
    assert!(has_warning(&out, "set datapath.interfaces"));
    // `timeout connect 4s`, `timeout client/server 30m` from defaults: kept as written, the
    // short idle limit flagged.
    let t = &cfg.datapath.timeouts;
    assert_eq!(t.handshake, Duration::from_secs(4));
    assert_eq!(t.established, Duration::from_secs(30 * 60));
    assert!(has_warning(
        &out,
        "`timeout client 30m / timeout server 30m`: pgrouter keeps HAProxy's idle limit as written"
    ));
    assert!(
        out.toml.contains("#   retries 2"),
        "dropped directives are listed"
    );
}

/// An older Patroni example says `option httpchk GET`: HAProxy takes the lone word as the URI,
/// so it checked the path "GET". The translation says so and uses the leader check.
#[test]
fn patroni_lone_get_is_explained() {
    let (out, cfg) = translate("patroni_lone_get.haproxy.cfg", None);
    assert!(has_warning(&out, "reads a lone argument as the URI"));
    let c = &cfg.clusters[0];
    assert_eq!(c.listeners[0].kind, ListenerKind::Primary);
    let api: Vec<_> = c.nodes.iter().map(|n| n.api_port).collect();
    assert_eq!(api, vec![15432, 15433]);
}

/// vitabaks/postgresql_cluster (autobase): four listeners on the VIP, lag in the check URI,
/// /sync and /async (flagged), stats page dropped, per-listener rise differences flagged.
#[test]
fn vitabaks_postgresql_cluster() {
    let (out, cfg) = translate("vitabaks.haproxy.cfg", Some("vitabaks.keepalived.conf"));
    let c = &cfg.clusters[0];
    let ls: Vec<_> = c
        .listeners
        .iter()
        .map(|l| {
            (
                l.name.as_str(),
                l.port,
                l.kind,
                l.lag.as_ref().map(|x| x.bytes),
            )
        })
        .collect();
    assert_eq!(
        ls,
        vec![
            ("master", 5000, ListenerKind::Primary, None),
            (
                "replicas",
                5001,
                ListenerKind::Replica,
                Some(100 * 1024 * 1024)
            ),
            ("replicas_sync", 5002, ListenerKind::Replica, None),
            (
                "replicas_async",
                5003,
                ListenerKind::Replica,
                Some(100 * 1024 * 1024)
            ),
        ]
    );
    assert!(c.listeners.iter().all(|l| l.vip == ip("10.128.64.140")));
    assert_eq!(c.nodes.len(), 3);
    // From `listen master`: inter 3s fastinter 1s fall 3 rise 4, timeout check 15s.
    assert_eq!(c.health.interval, Duration::from_secs(3));
    assert_eq!(c.health.fastinter, Duration::from_secs(1));
    assert_eq!(c.health.timeout, Duration::from_secs(15));
    assert_eq!((c.health.fall, c.health.rise), (3, 4));
    assert!(has_warning(&out, "`replicas` checks with different timing"));
    assert!(has_warning(&out, "`/sync` selects only synchronous"));
    assert!(has_warning(&out, "`/async` selects only asynchronous"));
    assert!(has_warning(&out, "`listen stats` is `mode http`"));
    assert!(has_warning(
        &out,
        "`maxconn 10000` on `master` limits the whole proxy"
    ));
    let v = &cfg.vrrp[0];
    assert_eq!(v.interface, "ens192");
    assert_eq!(v.virtual_router_id, 140);
    assert_eq!(v.advert_int, Duration::from_secs(2));
    assert_eq!(v.state, Some(StateHint::Backup));
    assert_eq!(v.auth_pass.as_deref(), Some("1ce24b6e"));
    assert_eq!(cfg.datapath.interfaces, vec!["ens192".to_owned()]);
}

/// frontend/backend pairs with a named ACL fallback, `http-check send`, TLS checks, a backup
/// server, tag filters and leastconn.
#[test]
fn frontend_backend_with_acl_fallback_and_tls() {
    let (out, cfg) = translate("frontend_backend.haproxy.cfg", None);
    let c = &cfg.clusters[0];
    assert_eq!(c.api.scheme, Scheme::Https);
    let w = &c.listeners[0];
    let r = &c.listeners[1];
    assert_eq!((w.port, w.kind), (5432, ListenerKind::Primary));
    assert_eq!((r.port, r.kind), (5433, ListenerKind::Replica));
    assert_eq!(r.fallback, Fallback::Primary);
    assert_eq!(r.balance, Balance::LeastConn);
    assert_eq!(r.lag.as_ref().map(|l| l.bytes), Some(16 * 1024 * 1024));
    assert_eq!(w.maxconn, 200);
    assert_eq!(c.health.interval, Duration::from_secs(1));
    assert_eq!(c.health.fastinter, Duration::from_millis(500));
    assert_eq!(c.health.downinter, Duration::from_secs(5));
    assert_eq!(c.health.timeout, Duration::from_secs(2));
    assert_eq!((c.health.fall, c.health.rise), (2, 1));
    assert!(has_warning(&out, "`db3` is `backup`"));
    assert!(has_warning(&out, "`tag_datacenter=east`"));
    // Said once for the cluster, not once per server.
    let verify_none = out
        .warnings
        .iter()
        .filter(|w| w.message.contains("`verify none`"))
        .count();
    assert_eq!(verify_none, 1);
}

/// The HAProxy template Patroni ships for confd (HEAD checks, a stats page), with the seed's
/// keepalived.conf in front: three nodes, writes and reads on the VIP, the stats page dropped.
#[test]
fn patroni_confd_template() {
    let (out, cfg) = translate("patroni_confd.haproxy.cfg", Some("seed.keepalived.conf"));
    let c = &cfg.clusters[0];
    let ls: Vec<_> = c
        .listeners
        .iter()
        .map(|l| (l.name.as_str(), l.vip, l.port, l.kind, l.maxconn))
        .collect();
    assert_eq!(
        ls,
        vec![
            ("primary", ip("10.0.0.1"), 5000, ListenerKind::Primary, 100),
            ("replicas", ip("10.0.0.1"), 5001, ListenerKind::Replica, 100),
        ]
    );
    assert_eq!(c.nodes.len(), 3);
    assert_eq!(c.health.timeout, Duration::from_secs(5));
    assert_eq!((c.health.fall, c.health.rise), (3, 2));
    assert!(has_warning(&out, "`listen stats` is `mode http`"));
    assert!(has_warning(
        &out,
        "read listener `replicas` has no fallback"
    ));
    assert!(!has_warning(&out, "unusual"), "HEAD is a fine check method");
}

/// A step-by-step guide's configuration: one HAProxy host without keepalived, clients on 5432
/// and 5433. Both listeners get the placeholder VIP and say so.
#[test]
fn guide_single_host_without_keepalived() {
    let (out, cfg) = translate("guide_write_read.haproxy.cfg", None);
    let c = &cfg.clusters[0];
    let ls: Vec<_> = c
        .listeners
        .iter()
        .map(|l| (l.port, l.kind, l.vip, l.maxconn))
        .collect();
    let ph = IpAddr::V4(import::translate::PLACEHOLDER_VIP);
    assert_eq!(
        ls,
        vec![
            (5432, ListenerKind::Primary, ph, 200),
            (5433, ListenerKind::Replica, ph, 200)
        ]
    );
    let placeholders = out
        .warnings
        .iter()
        .filter(|w| w.message.contains("replace the placeholder 192.0.2.1"))
        .count();
    assert_eq!(placeholders, 2);
    assert!(out.toml.contains("interfaces = []"));
}
