//! Config loading: the example parses to what it says, and every kind of mistake is reported
//! as `FILE:LINE:COL: field.path: message` pointing at the offending line.
use std::path::PathBuf;
use std::time::Duration;

use pgrouter::config::{
    self, Checks, Diagnostic, Fallback, FlowTimeouts, ListenerKind, OnEmpty, OnMarkedDown,
};

fn example() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../examples/pgrouter.toml")
}

/// A minimal valid cluster; tests append or replace lines.
const BASE: &str = r#"[datapath]
interfaces = ["eth0"]

[[cluster]]
name = "pg1"
[cluster.health]
interval = "1s"
fall = 2
[[cluster.node]]
name = "a"
host = "198.18.0.11"
[[cluster.node]]
name = "b"
host = "198.18.0.12"
[[cluster.listener]]
name = "W"
vip = "198.18.0.100"
port = 5000
kind = "primary"
[[cluster.listener]]
name = "R"
vip = "198.18.0.100"
port = 5001
kind = "replica"
fallback = "primary"
"#;

fn errors(text: &str) -> Vec<Diagnostic> {
    match config::parse(text, "bad.toml") {
        Ok(_) => panic!("expected errors for:\n{text}"),
        Err(e) => {
            // The rendered form is one `FILE:LINE:COL: field: message` per diagnostic.
            let rendered = e.to_string();
            assert_eq!(rendered.lines().count(), e.diagnostics.len(), "{rendered}");
            for (line, d) in rendered.lines().zip(&e.diagnostics) {
                assert_eq!(
                    line,
                    format!("bad.toml:{}:{}: {}: {}", d.line, d.col, d.field, d.message)
                );
            }
            e.diagnostics
        }
    }
}

/// 1-based line of the first line containing `needle`.
fn line_of(text: &str, needle: &str) -> usize {
    match text.lines().position(|l| l.contains(needle)) {
        Some(i) => i + 1,
        None => panic!("{needle:?} not in text"),
    }
}

/// Asserts there is a diagnostic for `field` on the line containing `needle`, whose message
/// contains `msg`.
fn expect(diags: &[Diagnostic], text: &str, field: &str, needle: &str, msg: &str) {
    let line = line_of(text, needle);
    assert!(
        diags
            .iter()
            .any(|d| d.field == field && d.line == line && d.message.contains(msg)),
        "no diagnostic {field} at line {line} containing {msg:?}; got:\n{}",
        diags
            .iter()
            .map(|d| d.to_string())
            .collect::<Vec<_>>()
            .join("\n")
    );
}

#[test]
fn base_is_valid() {
    if let Err(e) = config::parse(BASE, "base.toml") {
        panic!("{e}");
    }
}

#[test]
fn example_config_parses_to_the_seed_setup() {
    let cfg = match config::load(example()) {
        Ok(c) => c,
        Err(e) => panic!("{e}"),
    };
    assert_eq!(cfg.datapath.interfaces, vec!["eth0"]);
    assert_eq!(cfg.datapath.snat_ports.first, 40000);
    assert_eq!(cfg.control.metrics.map(|m| m.port()), Some(9188));
    let c = &cfg.clusters[0];
    assert_eq!(c.checks, Checks::Patroni);
    assert_eq!(c.health.interval, Duration::from_secs(1));
    assert_eq!(c.health.fastinter, Duration::from_millis(200));
    assert_eq!((c.health.fall, c.health.rise), (2, 1));
    assert_eq!(c.nodes.len(), 2);
    assert!(c.nodes.iter().all(|n| n.port == 5432 && n.api_port == 8008));
    let w = &c.listeners[0];
    assert_eq!(
        (w.kind, w.port, w.maxconn),
        (ListenerKind::Primary, 5000, 100)
    );
    assert_eq!(w.on_marked_down, OnMarkedDown::ShutdownSessions);
    let r = &c.listeners[1];
    assert_eq!(
        (r.kind, r.port, r.fallback),
        (ListenerKind::Replica, 5001, Fallback::Primary)
    );
    assert_eq!(r.lag.as_ref().map(|l| l.bytes), Some(10 * 1024 * 1024));
    assert_eq!(r.snat, r.vip);
    assert_eq!(r.vip.to_string(), "198.18.0.100");
}

#[test]
fn check_summarizes_a_good_file() {
    let s = match config::check(example()) {
        Ok(s) => s.to_string(),
        Err(e) => panic!("{e}"),
    };
    assert!(s.contains("cluster pg1"), "{s}");
    assert!(s.contains("listener PG1 198.18.0.100:5000"), "{s}");
    assert!(
        s.contains("listener PG1_ro 198.18.0.100:5001 -> Replica, fallback primary, lag 10MB"),
        "{s}"
    );
}

#[test]
fn defaults_apply_when_sections_are_omitted() {
    let cfg = match config::parse(BASE, "base.toml") {
        Ok(c) => c,
        Err(e) => panic!("{e}"),
    };
    let c = &cfg.clusters[0];
    assert_eq!(c.health.timeout, Duration::from_secs(1));
    assert_eq!(c.health.downinter, Duration::from_secs(1));
    assert_eq!(c.health.rise, 1);
    assert!(c.health.observe_refusals);
    assert_eq!(c.api.port, 8008);
    assert_eq!(cfg.datapath.conntrack_entries, 524288);
    assert_eq!(c.listeners[0].maxconn, 0);
    assert_eq!(
        cfg.datapath.handshake_entries,
        router_ebpf::DEFAULT_HS_ENTRIES
    );
    let t = cfg.datapath.timeouts;
    assert_eq!(t, FlowTimeouts::default());
    assert_eq!(t.handshake, Duration::from_secs(5));
    assert_eq!(t.established, Duration::from_secs(2 * 3600 + 4 * 60));
    assert_eq!(t.closing, Duration::from_secs(120));
    assert_eq!(t.closed, Duration::from_secs(10));
    assert_eq!(
        c.listeners[0].on_empty,
        OnEmpty::Hold(Duration::from_secs(6))
    );
    assert_eq!(c.listeners[0].on_empty.hold_ms(), 6000);
}

/// The kernel reads nanoseconds; every field is written, so its defaults never apply.
#[test]
fn flow_timeouts_reach_the_kernel_in_nanoseconds() {
    let text = BASE.replace(
        "interfaces = [\"eth0\"]",
        "interfaces = [\"eth0\"]\n[datapath.timeouts]\nhandshake = \"3s\"\nestablished = \"1s\"\n\
         closing = \"1m30s\"\nclosed = \"500ms\"",
    );
    let cfg = match config::parse(&text, "t.toml") {
        Ok(c) => c,
        Err(e) => panic!("{e}"),
    };
    assert_eq!(
        cfg.datapath.timeouts.to_abi(),
        router_ebpf::Timeouts {
            handshake_ns: 3_000_000_000,
            established_ns: 1_000_000_000,
            closing_ns: 90_000_000_000,
            closed_ns: 500_000_000,
        }
    );
    assert_eq!(
        FlowTimeouts::default().to_abi().established_ns,
        router_ebpf::DEFAULT_TIMEOUT_ESTABLISHED_NS
    );
}

#[test]
fn flow_timeouts_must_be_positive_durations() {
    let text = BASE.replace(
        "interfaces = [\"eth0\"]",
        "interfaces = [\"eth0\"]\n[datapath.timeouts]\nhandshake = \"0s\"\nclosing = \"2\"\n\
         closed = \"soon\"",
    );
    let d = errors(&text);
    expect(
        &d,
        &text,
        "datapath.timeouts.handshake",
        "handshake = ",
        "must be more than 0",
    );
    expect(
        &d,
        &text,
        "datapath.timeouts.closing",
        "closing = ",
        "needs a unit",
    );
    expect(
        &d,
        &text,
        "datapath.timeouts.closed",
        "closed = ",
        "invalid duration",
    );
    let text = BASE.replace(
        "interfaces = [\"eth0\"]",
        "interfaces = [\"eth0\"]\n[datapath.timeouts]\nidle = \"1h\"",
    );
    let d = errors(&text);
    assert!(d[0].message.contains("unknown field `idle`"), "{d:?}");
}

/// Accepted (the tests expire flows in a second), but `check-config` says what it costs.
#[test]
fn an_established_timeout_below_rfc5382_is_accepted_with_a_warning() {
    let dir = std::env::temp_dir().join(format!("pgrouter-cfg-{}", std::process::id()));
    let _ = std::fs::create_dir_all(&dir);
    let path = dir.join("short.toml");
    let text = BASE.replace(
        "interfaces = [\"eth0\"]",
        "interfaces = [\"eth0\"]\n[datapath.timeouts]\nestablished = \"1s\"",
    );
    if let Err(e) = std::fs::write(&path, &text) {
        panic!("writing {}: {e}", path.display());
    }
    let s = config::check(&path).map(|s| s.to_string());
    let _ = std::fs::remove_dir_all(&dir);
    let s = match s {
        Ok(s) => s,
        Err(e) => panic!("{e}"),
    };
    assert!(
        s.contains("warning: datapath.timeouts.established 1s is below 2h4m; RFC 5382"),
        "{s}"
    );
    let s = match config::check(example()) {
        Ok(s) => s.to_string(),
        Err(e) => panic!("{e}"),
    };
    assert!(
        !s.contains("warning"),
        "the defaults warn about nothing: {s}"
    );
}

#[test]
fn handshake_entries_has_a_floor() {
    let text = BASE.replace(
        "interfaces = [\"eth0\"]",
        "interfaces = [\"eth0\"]\nhandshake_entries = 10",
    );
    let d = errors(&text);
    expect(
        &d,
        &text,
        "datapath.handshake_entries",
        "handshake_entries",
        "10 is too small; at least 64",
    );
}

/// Each half-open flow holds a SNAT port: a SYN flood must not be able to take them all.
#[test]
fn half_open_flows_must_not_be_able_to_take_every_snat_port() {
    // Unset, the default is capped to the range: half the ports at most.
    let text = BASE.replace(
        "interfaces = [\"eth0\"]",
        "interfaces = [\"eth0\"]\nsnat_ports = \"40000-44999\"",
    );
    let cfg = config::parse(&text, "t.toml").expect("the default fits any range");
    assert_eq!(cfg.datapath.handshake_entries, 5000);
    let text = BASE.replace(
        "interfaces = [\"eth0\"]",
        "interfaces = [\"eth0\"]\nsnat_ports = \"40000-44999\"\nhandshake_entries = 9998",
    );
    assert!(
        config::parse(&text, "t.toml").is_ok(),
        "4999 half-open flows fit"
    );
    let text = text.replace("9998", "10000");
    let d = errors(&text);
    expect(
        &d,
        &text,
        "datapath.handshake_entries",
        "handshake_entries",
        "5000 half-open connections, not fewer than the 5000 ports",
    );
}

#[test]
fn on_empty_reject_and_hold_lengths() {
    let text = BASE.replace(
        "kind = \"primary\"",
        "kind = \"primary\"\non_empty = \"reject\"",
    );
    match config::parse(&text, "t.toml") {
        Ok(c) => {
            let l = &c.clusters[0].listeners[0];
            assert_eq!(l.on_empty, OnEmpty::Reject);
            assert_eq!(l.on_empty.hold_ms(), 0);
        }
        Err(e) => panic!("{e}"),
    }
    let text = BASE.replace(
        "kind = \"primary\"",
        "kind = \"primary\"\nempty_hold = \"2500ms\"",
    );
    match config::parse(&text, "t.toml") {
        Ok(c) => assert_eq!(c.clusters[0].listeners[0].on_empty.hold_ms(), 2500),
        Err(e) => panic!("{e}"),
    }
}

#[test]
fn empty_hold_is_refused_with_reject_and_beyond_a_minute() {
    let text = BASE
        .replace(
            "kind = \"primary\"",
            "kind = \"primary\"\non_empty = \"reject\"\nempty_hold = \"8s\"",
        )
        .replace(
            "fallback = \"primary\"",
            "fallback = \"primary\"\nempty_hold = \"61s\"",
        );
    let d = errors(&text);
    expect(
        &d,
        &text,
        "cluster[0].listener[0].empty_hold",
        "empty_hold = \"8s\"",
        "only meaningful with on_empty = \"hold\"",
    );
    expect(
        &d,
        &text,
        "cluster[0].listener[1].empty_hold",
        "empty_hold = \"61s\"",
        "\"61s\" is too long; at most 60s",
    );
    let text = BASE.replace(
        "kind = \"primary\"",
        "kind = \"primary\"\nempty_hold = \"0s\"",
    );
    let d = errors(&text);
    expect(
        &d,
        &text,
        "cluster[0].listener[0].empty_hold",
        "empty_hold",
        "write on_empty = \"reject\"",
    );
    let text = BASE.replace(
        "kind = \"primary\"",
        "kind = \"primary\"\non_empty = \"drop\"",
    );
    let d = errors(&text);
    expect(
        &d,
        &text,
        "cluster[0].listener[0].on_empty",
        "on_empty",
        "unknown variant `drop`",
    );
}

#[test]
fn missing_file_is_reported_with_its_path() {
    let e = match config::load("/nonexistent/pgrouter.toml") {
        Ok(_) => panic!("loaded a missing file"),
        Err(e) => e.to_string(),
    };
    assert!(e.starts_with("/nonexistent/pgrouter.toml:1:1: "), "{e}");
    assert!(e.contains("cannot read config"), "{e}");
}

#[test]
fn syntax_error_names_line_and_column() {
    let text = "[datapath]\ninterfaces = [\"eth0\"\nmode = \"auto\"\n";
    let d = errors(text);
    assert_eq!(d.len(), 1);
    assert!(d[0].line >= 2, "{:?}", d[0]);
}

#[test]
fn unknown_field_names_the_field() {
    let text = BASE.replace("fall = 2", "fall = 2\nintreval = \"1s\"");
    let d = errors(&text);
    expect(
        &d,
        &text,
        "cluster[0].health.intreval",
        "intreval",
        "unknown field",
    );
}

#[test]
fn unknown_listener_kind() {
    let text = BASE.replace("kind = \"primary\"", "kind = \"writer\"");
    let d = errors(&text);
    expect(&d, &text, "cluster[0].listener[0].kind", "writer", "writer");
}

#[test]
fn wrong_type_names_the_field() {
    let text = BASE.replace("port = 5001", "port = \"5001\"");
    let d = errors(&text);
    expect(&d, &text, "cluster[0].listener[1].port", "\"5001\"", "");
}

#[test]
fn bad_durations() {
    let text = BASE.replace(
        "interval = \"1s\"",
        "interval = \"1\"\nfastinter = \"fast\"\ndowninter = \"1ms\"",
    );
    let d = errors(&text);
    expect(
        &d,
        &text,
        "cluster[0].health.interval",
        "interval = \"1\"",
        "needs a unit",
    );
    expect(
        &d,
        &text,
        "cluster[0].health.fastinter",
        "fastinter",
        "invalid duration",
    );
    expect(
        &d,
        &text,
        "cluster[0].health.downinter",
        "downinter",
        "too short",
    );
    assert_eq!(d.len(), 3, "all errors at once: {d:?}");
}

/// One duration grammar for every duration key: a bare TOML number (HAProxy's milliseconds,
/// keepalived's seconds) or a fraction is refused at its key with the text to write, and all
/// of them are reported at once.
#[test]
fn every_duration_key_refuses_bare_numbers_with_the_fix() {
    let text = format!(
        "{}{}",
        BASE.replace("interval = \"1s\"", "interval = 1\ntimeout = 0.5")
            .replace(
                "interfaces = [\"eth0\"]",
                "interfaces = [\"eth0\"]\n[datapath.timeouts]\nclosed = 10",
            )
            .replace(
                "kind = \"primary\"",
                "kind = \"primary\"\nempty_hold = \"1.5s\""
            ),
        VRRP.replace(
            "virtual_router_id = 51",
            "virtual_router_id = 51\nadvert_int = 1"
        )
    );
    let d = errors(&text);
    let fix = "(quoted, with a unit: us, ms, s, m, h, d)";
    for (field, needle, msg) in [
        (
            "cluster[0].health.interval",
            "interval = 1",
            "bare number 1 is not a duration; write \"1s\" or \"1ms\"",
        ),
        (
            "cluster[0].health.timeout",
            "timeout = 0.5",
            "bare number 0.5 is not a duration; write \"500ms\"",
        ),
        (
            "datapath.timeouts.closed",
            "closed = 10",
            "write \"10s\" or \"10ms\"",
        ),
        (
            "cluster[0].listener[0].empty_hold",
            "empty_hold",
            "has a fraction; write whole units: \"1s500ms\"",
        ),
        (
            "vrrp[0].advert_int",
            "advert_int = 1",
            "bare number 1 is not a duration; write \"1s\" or \"1ms\"",
        ),
    ] {
        expect(&d, &text, field, needle, msg);
    }
    assert!(
        d.iter().filter(|d| d.message.contains(fix)).count() == 4,
        "{d:?}"
    );
    assert_eq!(d.len(), 5, "{d:?}");
}

#[test]
fn fall_and_rise_must_be_positive() {
    let text = BASE.replace("fall = 2", "fall = 0\nrise = 0");
    let d = errors(&text);
    expect(
        &d,
        &text,
        "cluster[0].health.fall",
        "fall = 0",
        "at least 1",
    );
    expect(
        &d,
        &text,
        "cluster[0].health.rise",
        "rise = 0",
        "at least 1",
    );
}

#[test]
fn port_zero() {
    let text = BASE.replace("port = 5000", "port = 0");
    let d = errors(&text);
    expect(
        &d,
        &text,
        "cluster[0].listener[0].port",
        "port = 0",
        "port 0",
    );
}

#[test]
fn lag_must_be_a_size_patroni_understands() {
    for bad in ["\"10mb\"", "\"10 MiB\"", "\"ten\"", "\"-1\""] {
        let text = BASE.replace(
            "fallback = \"primary\"",
            &format!("fallback = \"primary\"\nlag = {bad}"),
        );
        let d = errors(&text);
        expect(&d, &text, "cluster[0].listener[1].lag", "lag =", "");
    }
    for (good, bytes) in [
        ("\"10MB\"", 10 << 20),
        ("10485760", 10 << 20),
        ("\"0x400\"", 1024),
        ("\"1.5kB\"", 1536),
    ] {
        let text = BASE.replace(
            "fallback = \"primary\"",
            &format!("fallback = \"primary\"\nlag = {good}"),
        );
        match config::parse(&text, "ok.toml") {
            Ok(c) => assert_eq!(
                c.clusters[0].listeners[1].lag.as_ref().map(|l| l.bytes),
                Some(bytes),
                "{good}"
            ),
            Err(e) => panic!("{good}: {e}"),
        }
    }
}

#[test]
fn fallback_and_lag_only_where_they_mean_something() {
    let text = BASE.replace(
        "kind = \"primary\"",
        "kind = \"primary\"\nfallback = \"primary\"\nlag = \"1MB\"",
    );
    let d = errors(&text);
    expect(
        &d,
        &text,
        "cluster[0].listener[0].fallback",
        "fallback = \"primary\"",
        "only for kind = \"replica\"",
    );
    expect(
        &d,
        &text,
        "cluster[0].listener[0].lag",
        "lag = \"1MB\"",
        "only for kind",
    );
}

#[test]
fn role_only_with_static_checks() {
    let text = BASE.replace(
        "host = \"198.18.0.11\"",
        "host = \"198.18.0.11\"\nrole = \"primary\"",
    );
    let d = errors(&text);
    expect(
        &d,
        &text,
        "cluster[0].node[0].role",
        "role = \"primary\"",
        "checks = \"static\"",
    );

    let text = BASE.replace("name = \"pg1\"", "name = \"pg1\"\nchecks = \"static\"");
    let d = errors(&text);
    expect(
        &d,
        &text,
        "cluster[0].node[0].name",
        "name = \"a\"",
        "needs role",
    );
}

#[test]
fn duplicate_names() {
    let text = BASE
        .replace("name = \"b\"", "name = \"a\"")
        .replace("name = \"R\"", "name = \"W\"");
    let d = errors(&text);
    let second_a = text
        .lines()
        .enumerate()
        .filter(|(_, l)| l.contains("name = \"a\""))
        .nth(1)
        .map(|(i, _)| i + 1);
    assert!(
        d.iter().any(|d| d.field == "cluster[0].node[1].name"
            && Some(d.line) == second_a
            && d.message.contains("duplicate")),
        "{d:?}"
    );
    assert!(
        d.iter()
            .any(|d| d.field == "cluster[0].listener[1].name" && d.message.contains("duplicate")),
        "{d:?}"
    );
}

#[test]
fn duplicate_vip_port_across_clusters() {
    let second = BASE
        .split("[[cluster]]")
        .nth(1)
        .unwrap_or_default()
        .replace("pg1", "pg2")
        .replace("198.18.0.1", "198.18.0.2");
    let second = second.replace("198.18.0.200", "198.18.0.100");
    let text = format!("{BASE}[[cluster]]{second}");
    let d = errors(&text);
    assert!(
        d.iter().any(|d| d.field == "cluster[1].listener[0].port"
            && d.message.contains("198.18.0.100:5000 is already used")),
        "{d:?}"
    );
    assert!(d.iter().all(|d| d.line > line_of(&text, "pg2")), "{d:?}");
}

#[test]
fn snat_ports_must_be_a_sane_range_away_from_listeners() {
    let text = BASE.replace(
        "interfaces = [\"eth0\"]",
        "interfaces = [\"eth0\"]\nsnat_ports = \"50000-40000\"",
    );
    let d = errors(&text);
    expect(
        &d,
        &text,
        "datapath.snat_ports",
        "snat_ports",
        "above last port",
    );

    let text = BASE.replace(
        "interfaces = [\"eth0\"]",
        "interfaces = [\"eth0\"]\nsnat_ports = \"4000-6000\"",
    );
    let d = errors(&text);
    expect(
        &d,
        &text,
        "cluster[0].listener[0].port",
        "port = 5000",
        "inside datapath.snat_ports",
    );
}

#[test]
fn addresses_are_checked() {
    let text = BASE.replace(
        "vip = \"198.18.0.100\"\nport = 5000",
        "vip = \"2001:db8::1\"\nport = 5000",
    );
    let d = errors(&text);
    expect(
        &d,
        &text,
        "cluster[0].listener[0].vip",
        "2001:db8::1",
        "address family",
    );

    let text = BASE.replace("host = \"198.18.0.12\"", "host = \"198.18.0.999\"");
    let d = errors(&text);
    expect(&d, &text, "cluster[0].node[1].host", "198.18.0.999", "");
}

#[test]
fn missing_required_field_points_at_its_table() {
    let text = BASE.replace("kind = \"replica\"\n", "");
    let d = errors(&text);
    assert_eq!(d.len(), 1, "{d:?}");
    assert!(d[0].message.contains("kind"), "{d:?}");
    assert!(d[0].line >= line_of(&text, "name = \"R\"") - 1, "{d:?}");
}

#[test]
fn tls_and_auth_settings_come_in_pairs() {
    let text = BASE.replace("[[cluster.node]]\nname = \"a\"", "[cluster.api]\nusername = \"u\"\ncert_file = \"/etc/hostname\"\n[[cluster.node]]\nname = \"a\"");
    let d = errors(&text);
    expect(
        &d,
        &text,
        "cluster[0].api.username",
        "username",
        "both username and password",
    );
    expect(
        &d,
        &text,
        "cluster[0].api.cert_file",
        "cert_file",
        "scheme = \"https\"",
    );
    expect(
        &d,
        &text,
        "cluster[0].api.cert_file",
        "cert_file",
        "both cert_file and key_file",
    );
}

#[test]
fn errors_are_sorted_by_line_and_all_reported() {
    let text = BASE
        .replace("fall = 2", "fall = 0")
        .replace("port = 5000", "port = 0")
        .replace(
            "fallback = \"primary\"",
            "fallback = \"primary\"\nlag = \"lots\"",
        );
    let d = errors(&text);
    assert_eq!(d.len(), 3, "{d:?}");
    assert!(d.windows(2).all(|w| w[0].line <= w[1].line), "{d:?}");
}

#[test]
fn example_vrrp_instance_mirrors_keepalived() {
    let cfg = match config::load(example()) {
        Ok(c) => c,
        Err(e) => panic!("{e}"),
    };
    let v = &cfg.vrrp[0];
    assert_eq!(
        (v.name.as_str(), v.virtual_router_id, v.priority),
        ("VI_1", 51, 101)
    );
    assert_eq!(v.virtual_ipaddress[0].to_string(), "198.18.0.100/24");
    assert!(v.track.iter().any(|t| t.name == "patroni:pg1"));
}

const VRRP: &str = r#"[[vrrp]]
name = "VI_1"
interface = "eth0"
virtual_router_id = 51
virtual_ipaddress = ["198.18.0.100/24"]
[[vrrp.track]]
name = "patroni:pg1"
weight = -2
"#;

#[test]
fn vrrp_errors_name_the_instance_field() {
    let text = format!(
        "{BASE}{}",
        VRRP.replace("virtual_router_id = 51", "virtual_router_id = 0")
    );
    let d = errors(&text);
    expect(
        &d,
        &text,
        "vrrp[0].virtual_router_id",
        "virtual_router_id = 0",
        "1..=255",
    );

    let text = format!("{BASE}{}", VRRP.replace("patroni:pg1", "patroni:pg9"));
    let d = errors(&text);
    expect(
        &d,
        &text,
        "vrrp[0].track[0].name",
        "patroni:pg9",
        "no [[cluster]] named \"pg9\"",
    );

    let text = format!("{BASE}{VRRP}{}", VRRP.replace("VI_1", "VI_2"));
    let d = errors(&text);
    let second = text
        .lines()
        .enumerate()
        .filter(|(_, l)| l.contains("virtual_router_id = 51"))
        .nth(1)
        .map(|(i, _)| i + 1);
    assert!(
        d.iter()
            .any(|d| d.field == "vrrp[1].virtual_router_id" && Some(d.line) == second),
        "{d:?}"
    );

    let text = format!("{BASE}{}", VRRP.replace("interface", "intrface"));
    let d = errors(&text);
    expect(&d, &text, "vrrp[0].intrface", "intrface", "unknown field");
}

#[test]
fn tls_name_needs_https_and_a_dns_name() {
    let text = BASE.replace(
        "host = \"198.18.0.11\"",
        "host = \"198.18.0.11\"\ntls_name = \"pg-a.example\"",
    );
    let d = errors(&text);
    expect(
        &d,
        &text,
        "cluster[0].node[0].tls_name",
        "tls_name",
        "https",
    );

    let text = BASE
        .replace(
            "name = \"pg1\"",
            "name = \"pg1\"\n[cluster.api]\nscheme = \"https\"",
        )
        .replace(
            "host = \"198.18.0.11\"",
            "host = \"198.18.0.11\"\ntls_name = \"198.18.0.11\"",
        );
    let d = errors(&text);
    expect(
        &d,
        &text,
        "cluster[0].node[0].tls_name",
        "tls_name",
        "not a DNS name",
    );
}

#[test]
fn observe_refusals_is_a_bool_and_can_be_turned_off() {
    let text = BASE.replace("fall = 2", "fall = 2\nobserve_refusals = false");
    match config::parse(&text, "t.toml") {
        Ok(c) => assert!(!c.clusters[0].health.observe_refusals),
        Err(e) => panic!("{e}"),
    }
    let text = BASE.replace("fall = 2", "fall = 2\nobserve_refusals = \"yes\"");
    let d = errors(&text);
    expect(
        &d,
        &text,
        "cluster[0].health.observe_refusals",
        "observe_refusals",
        "",
    );
}

/// A character TOML forbids (a control character in a comment) is named, at its position;
/// the parser itself gives no message for it.
#[test]
fn a_control_character_is_named_where_it_is() {
    let text = BASE.replace("[[cluster]]", "# pg\u{1}1\n[[cluster]]");
    let d = errors(&text);
    assert_eq!(d.len(), 1, "{d:?}");
    assert_eq!((d[0].line, d[0].col), (line_of(&text, "# pg"), 5), "{d:?}");
    assert!(d[0].message.contains("control character U+0001"), "{d:?}");
}

/// The data path serves IPv4 only; the planner would refuse an IPv6 listener, so check-config
/// does, at the VIP.
#[test]
fn ipv6_listeners_are_refused_until_the_data_path_serves_them() {
    let text = BASE
        .replace("host = \"198.18.0.11\"", "host = \"2001:db8::11\"")
        .replace("host = \"198.18.0.12\"", "host = \"2001:db8::12\"")
        .replace(
            "vip = \"198.18.0.100\"\nport = 5000",
            "vip = \"2001:db8::100\"\nport = 5000",
        );
    let d = errors(&text);
    expect(
        &d,
        &text,
        "cluster[0].listener[0].vip",
        "2001:db8::100",
        "2001:db8::100: IPv6 listeners are not served by the data path yet",
    );
}

/// A cluster with `n` static nodes (198.18.x.y) and `listeners` listeners on ports 1000, 1001, …
fn big_cluster(name: &str, base: u8, n: usize, listeners: usize, first_port: usize) -> String {
    let mut t = format!("[[cluster]]\nname = \"{name}\"\nchecks = \"static\"\n");
    for i in 0..n {
        t.push_str(&format!(
            "[[cluster.node]]\nname = \"n{i}\"\nhost = \"198.18.{base}.{}\"\nrole = \"replica\"\n",
            i + 1
        ));
    }
    for i in 0..listeners {
        t.push_str(&format!(
            "[[cluster.listener]]\nname = \"l{i}\"\nvip = \"198.18.100.{base}\"\nport = {}\nkind = \"replica\"\n",
            first_port + i
        ));
    }
    t
}

/// The data path's maps bound a config: 32 nodes per listener (`MAX_SET`), 256 listeners
/// (`MAX_SERVICES`), 4096 backend entries (one per node of each listener, `MAX_BACKENDS`).
/// Each is refused at the first node or listener beyond it, naming the limit.
#[test]
fn the_data_path_limits_are_checked() {
    // At the limits: accepted.
    let ok = big_cluster("pg", 0, 32, 1, 1000);
    if let Err(e) = config::parse(&ok, "ok.toml") {
        panic!("{e}");
    }

    let text = big_cluster("pg", 0, 33, 1, 1000);
    let d = errors(&text);
    assert_eq!(d.len(), 1, "{d:?}");
    assert_eq!(d[0].field, "cluster[0].node[32]");
    assert_eq!(d[0].line, line_of(&text, "name = \"n32\"") - 1, "{d:?}");
    assert!(
        d[0].message.contains("more than 32 nodes") && d[0].message.contains("MAX_SET"),
        "{d:?}"
    );

    // 256 listeners in two clusters pass, the 257th does not.
    let ok = format!(
        "{}{}",
        big_cluster("a", 0, 1, 128, 1000),
        big_cluster("b", 1, 1, 128, 2000)
    );
    if let Err(e) = config::parse(&ok, "ok.toml") {
        panic!("{e}");
    }
    let text = format!(
        "{}{}",
        big_cluster("a", 0, 1, 128, 1000),
        big_cluster("b", 1, 1, 129, 2000)
    );
    let d = errors(&text);
    assert_eq!(d.len(), 1, "{d:?}");
    assert_eq!(d[0].field, "cluster[1].listener[128]");
    assert_eq!(d[0].line, line_of(&text, "name = \"l128\"") - 1, "{d:?}");
    assert!(
        d[0].message.contains("more than 256 listeners") && d[0].message.contains("MAX_SERVICES"),
        "{d:?}"
    );

    // 32 nodes × 128 listeners = 4096 entries pass; a 129th listener needs 4128.
    let ok = big_cluster("pg", 0, 32, 128, 1000);
    if let Err(e) = config::parse(&ok, "ok.toml") {
        panic!("{e}");
    }
    let text = big_cluster("pg", 0, 32, 129, 1000);
    let d = errors(&text);
    assert_eq!(d.len(), 1, "{d:?}");
    assert_eq!(d[0].field, "cluster[0].listener[128]");
    assert!(
        d[0].message.contains("more than 4096 backend entries")
            && d[0].message.contains("4128")
            && d[0].message.contains("MAX_BACKENDS"),
        "{d:?}"
    );
}
