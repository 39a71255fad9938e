//! `pgrouter import` on small inline inputs: what cannot be expressed becomes a warning and a
//! placeholder that still parses; the CLI fails only when nothing can be produced.
use std::process::Command;
use std::time::Duration;

use pgrouter::config;
use pgrouter::import::{self, Imported, Source};

const SEED_RW: &str = "listen PG1\n    bind *:5000\n    option httpchk\n    \
    default-server inter 3s fall 3 rise 2 on-marked-down shutdown-sessions\n    \
    server a 10.5.5.147:5432 maxconn 100 check port 8008\n    \
    server b 10.5.5.148:5432 maxconn 100 check port 8008\n";

fn run(haproxy: &str, keepalived: Option<&str>) -> Imported {
    let h = Source {
        path: "haproxy.cfg",
        text: haproxy,
    };
    let k = keepalived.map(|text| Source {
        path: "keepalived.conf",
        text,
    });
    let out = import::import(&h, k.as_ref()).unwrap_or_else(|e| panic!("{e}"));
    if let Err(e) = config::parse(&out.toml, "x.toml") {
        panic!("does not parse: {e}\n{}", out.toml);
    }
    out
}

fn warned(out: &Imported, needle: &str) -> bool {
    out.warnings.iter().any(|w| w.message.contains(needle))
}

/// A server given by name gets a TEST-NET placeholder and a warning (no DNS in the data path).
#[test]
fn hostnames_become_placeholders() {
    let out = run(
        "listen rw\n bind 10.0.0.1:5000\n option httpchk GET /primary\n \
         server a pg-a.example:5432 check port 8008\n server b 10.0.0.12:5432 check port 8008\n",
        None,
    );
    assert!(warned(&out, "\"pg-a.example\" is a name"));
    assert!(out.toml.contains("host = \"192.0.2.102\""));
}

/// keepalived details: unicast without a source address, v3 with authentication, IPv6,
/// nopreempt and preempt_delay, an include, a sync group.
#[test]
fn keepalived_variants() {
    let k = "global_defs {\n vrrp_version 3\n}\ninclude /etc/keepalived/other.conf\n\
             vrrp_sync_group G { group { VI_1 } }\n\
             vrrp_instance VI_1 {\n interface eth1\n virtual_router_id 7\n advert_int 0.5\n \
             nopreempt\n preempt_delay 30\n authentication {\n auth_type PASS\n auth_pass secret\n }\n \
             unicast_peer {\n 10.0.0.3\n }\n virtual_ipaddress {\n 10.0.0.1/24 dev eth1\n }\n}\n";
    let out = run(SEED_RW, Some(k));
    let cfg = config::parse(&out.toml, "x").unwrap_or_else(|e| panic!("{e}"));
    let v = &cfg.vrrp[0];
    assert_eq!(v.version, 3);
    assert_eq!(
        v.auth_pass, None,
        "keepalived ignores authentication with v3"
    );
    assert!(warned(&out, "authentication with VRRPv3"));
    assert!(v.nopreempt);
    assert_eq!(v.preempt_delay, Some(std::time::Duration::from_secs(30)));
    assert_eq!(v.advert_int, std::time::Duration::from_millis(500));
    assert_eq!(v.unicast_peer.len(), 1);
    assert_eq!(
        v.unicast_src_ip.map(|a| a.to_string()).as_deref(),
        Some("192.0.2.254")
    );
    assert!(warned(&out, "unicast_peer without unicast_src_ip"));
    assert!(warned(
        &out,
        "`include /etc/keepalived/other.conf` is not followed"
    ));
    assert!(warned(&out, "vrrp_sync_group"));
    assert_eq!(v.virtual_ipaddress[0].prefix, 24);
    assert_eq!(v.priority, 100, "keepalived's default priority");
    // No track_script: pgrouter's own tracks; FAULT without a data path (weight 0), never
    // FAULT for Patroni (both hosts would drop the VIP while a failover has no leader).
    let tracks: Vec<_> = v
        .track
        .iter()
        .map(|t| (t.name.as_str(), t.weight))
        .collect();
    assert_eq!(tracks, vec![("xdp-attached", 0), ("patroni:PG1", -50)]);
}

/// The data path serves IPv4 only: an IPv6-only setup is refused with the reason (check-config
/// would refuse its listeners); keepalived still speaks VRRPv3 for IPv6 VIPs, and `bind :::PORT`
/// (every address, IPv4 too) over IPv4 servers takes keepalived's IPv4 VIP.
#[test]
fn ipv6_vip() {
    let h = "listen rw\n bind :::5000\n option httpchk\n \
             server a [2001:db8::11]:5432 check port 8008\n server b [2001:db8::12]:5432 check port 8008\n";
    let k6 = "vrrp_instance V6 {\n interface eth0\n virtual_router_id 9\n \
             virtual_ipaddress {\n 2001:db8::100/64\n }\n}\n";
    let e = import::import(
        &Source {
            path: "haproxy.cfg",
            text: h,
        },
        Some(&Source {
            path: "keepalived.conf",
            text: k6,
        }),
    )
    .map(|o| o.toml)
    .expect_err("nothing pgrouter serves");
    assert!(
        e.contains("IPv6 listeners are not served by the data path yet"),
        "{e}"
    );

    let h = "listen rw\n bind :::5000\n option httpchk\n \
             server a 10.0.0.11:5432 check port 8008\n server b 10.0.0.12:5432 check port 8008\n";
    let k = format!(
        "{k6}vrrp_instance V4 {{\n interface eth0\n virtual_router_id 10\n \
         virtual_ipaddress {{\n 10.0.0.100/24\n }}\n}}\n"
    );
    let out = run(h, Some(&k));
    let cfg = config::parse(&out.toml, "x").unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(cfg.vrrp[0].version, 3, "VRRPv3 for the IPv6 VIP");
    let vips: Vec<String> = cfg.clusters[0]
        .listeners
        .iter()
        .map(|l| l.vip.to_string())
        .collect();
    assert_eq!(vips, ["10.0.0.100"]);
}

/// An IPv6 bind over IPv4 servers: keepalived's only IPv4 VIP when there is exactly one (with
/// a warning); otherwise the listener is written commented out, with a warning, and the rest of
/// the output still passes check-config.
#[test]
fn an_ipv6_bind_over_ipv4_servers() {
    let servers = " option httpchk GET /primary\n server a 10.0.0.11:5432 check port 8008\n";
    let k4 = "vrrp_instance V4 {\n interface eth0\n virtual_router_id 10\n \
              virtual_ipaddress {\n 10.0.0.100/24\n }\n}\n";
    let out = run(
        &format!("listen rw\n bind [2001:db8::100]:5000\n{servers}"),
        Some(k4),
    );
    let cfg = config::parse(&out.toml, "x").unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(cfg.clusters[0].listeners[0].vip.to_string(), "10.0.0.100");
    assert!(warned(&out, "takes keepalived's only IPv4 VIP 10.0.0.100"));

    let out = run(
        &format!("listen rw\n bind 10.0.0.100:5000\n bind [2001:db8::100]:5001\n{servers}"),
        None,
    );
    let cfg = config::parse(&out.toml, "x").unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(cfg.clusters[0].listeners.len(), 1);
    assert!(warned(
        &out,
        "[2001:db8::100]:5001: IPv6 listeners are not served by the data path yet"
    ));
    assert!(
        out.toml
            .contains("# [[cluster.listener]]\n# name = \"rw-2\"\n# vip = \"2001:db8::100\"\n"),
        "{}",
        out.toml
    );
}

/// Checks Patroni answers differently: /read-only, /health, tags, bad lag, unknown paths,
/// TCP-only checks, and conditional routing pgrouter cannot express.
#[test]
fn check_variants() {
    let h = "defaults\n mode tcp\n\
             listen ro\n bind 10.0.0.1:5002\n option httpchk GET /read-only?lag=1mb\n \
             server a 10.0.0.11:5432 check port 8008\n\
             listen tcp\n bind 10.0.0.1:5003\n option tcp-check\n \
             server a 10.0.0.11:5432 check\n\
             listen odd\n bind 10.0.0.1:5004\n option httpchk GET /status\n balance first\n \
             use_backend x if { src 10.0.0.0/8 }\n server a 10.0.0.11:5432 check port 8008\n";
    let out = run(h, None);
    let cfg = config::parse(&out.toml, "x").unwrap_or_else(|e| panic!("{e}"));
    let ls = &cfg.clusters[0].listeners;
    assert_eq!(ls[0].kind, config::ListenerKind::ReadOnly);
    assert_eq!(
        ls[0].lag, None,
        "Patroni ignores `1mb`; so does the translation"
    );
    assert!(warned(&out, "`lag=1mb` is not a size Patroni understands"));
    assert!(warned(&out, "has only a TCP check"));
    assert!(warned(
        &out,
        "is checked on port 5432 here but on 8008 elsewhere"
    ));
    assert!(warned(&out, "`/status` is not a Patroni health endpoint"));
    assert!(warned(&out, "`balance first` has no pgrouter equivalent"));
    assert!(warned(&out, "use_backend x if { src 10.0.0.0/8 }"));
}

/// Directives pgrouter does not know are warned about, never silently dropped.
#[test]
fn unknown_directives_are_warned() {
    let h = format!("{SEED_RW}    tcp-request content reject if {{ src 1.2.3.4 }}\n");
    let out = run(&h, None);
    assert!(warned(
        &out,
        "`tcp-request content reject if { src 1.2.3.4 }` in `PG1` is not translated"
    ));
}

fn parsed(out: &Imported) -> config::Config {
    config::parse(&out.toml, "x.toml").unwrap_or_else(|e| panic!("{e}"))
}

/// `timeout connect` → handshake; the larger of `timeout client`/`server` → established,
/// with a warning when it is below RFC 5382's 2h4m; the rest say what pgrouter does instead.
#[test]
fn haproxy_timeouts_become_flow_timeouts() {
    let h = format!(
        "defaults\n    mode tcp\n    timeout connect 4s\n    timeout client 30m\n    \
         timeout server 45m\n    timeout queue 5s\n    timeout client-fin 10s\n\n{SEED_RW}"
    );
    let out = run(&h, None);
    let t = parsed(&out).datapath.timeouts;
    assert_eq!(t.handshake, Duration::from_secs(4));
    assert_eq!(t.established, Duration::from_secs(45 * 60));
    assert_eq!(t.closing, config::FlowTimeouts::default().closing);
    assert!(warned(
        &out,
        "`timeout server 45m`: pgrouter keeps HAProxy's idle limit as written (established = \"45m\")"
    ));
    assert!(warned(&out, "RFC 5382 asks a NAT for at least 2h4m"));
    assert!(warned(
        &out,
        "`timeout queue 5s`: pgrouter has no queue: a connection waiting for a maxconn slot is \
         retried by the client's TCP until datapath.timeouts.handshake expires"
    ));
    assert!(warned(
        &out,
        "`timeout client-fin 10s`: pgrouter has one limit for a connection with a FIN seen in \
         either direction, datapath.timeouts.closing"
    ));
    assert!(
        out.toml
            .contains("handshake = \"4s\"  # timeout connect 4s (haproxy.cfg:3)"),
        "{}",
        out.toml
    );
}

/// HAProxy's idle limits at or above 2h4m carry over silently; no timeouts keep the defaults.
#[test]
fn long_idle_timeouts_carry_over_and_missing_ones_keep_the_defaults() {
    let h = format!("defaults\n    timeout client 3h\n    timeout server 3h\n{SEED_RW}");
    let out = run(&h, None);
    assert_eq!(
        parsed(&out).datapath.timeouts.established,
        Duration::from_secs(3 * 3600)
    );
    assert!(!warned(&out, "RFC 5382"), "{:#?}", out.warnings);
    let out = run(SEED_RW, None);
    assert_eq!(
        parsed(&out).datapath.timeouts,
        config::FlowTimeouts::default()
    );
    assert!(!out.toml.contains("[datapath.timeouts]"));
}

/// In TCP mode `timeout tunnel` replaces client/server once connected; 0 is "no limit".
#[test]
fn tunnel_timeout_wins_and_zero_keeps_the_default() {
    let h = format!(
        "defaults\n    timeout client 30s\n    timeout server 30s\n    timeout tunnel 4h\n    \
         timeout connect 0\n{SEED_RW}"
    );
    let out = run(&h, None);
    let t = parsed(&out).datapath.timeouts;
    assert_eq!(t.established, Duration::from_secs(4 * 3600));
    assert_eq!(t.handshake, config::FlowTimeouts::default().handshake);
    assert!(warned(
        &out,
        "`timeout tunnel 4h`: in TCP mode HAProxy uses it instead"
    ));
    assert!(warned(
        &out,
        "`timeout connect 0` means no limit in HAProxy"
    ));
}

/// pgrouter has one set of timeouts: listeners that disagree get the largest, with a warning.
#[test]
fn listeners_with_different_connect_timeouts_get_the_largest() {
    let second = SEED_RW
        .replace("PG1", "PG2")
        .replace("*:5000", "*:5001")
        .replace("option httpchk", "option httpchk GET /replica");
    let h = format!("{SEED_RW}    timeout connect 3s\n{second}    timeout connect 7s\n");
    let out = run(&h, None);
    assert_eq!(
        parsed(&out).datapath.timeouts.handshake,
        Duration::from_secs(7)
    );
    assert!(warned(
        &out,
        "listeners use different values for `timeout connect`; pgrouter has one handshake timeout"
    ));
}

fn pgrouter() -> Command {
    Command::new(env!("CARGO_BIN_EXE_pgrouter"))
}

/// The command: config on stdout (or --output), warnings on stderr, exit 0; non-zero only
/// when nothing can be produced.
#[test]
fn cli_exit_codes_and_output() {
    let dir = std::env::temp_dir().join(format!("pgrouter-import-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{e}"));
    let good = dir.join("haproxy.cfg");
    std::fs::write(&good, SEED_RW).unwrap_or_else(|e| panic!("{e}"));
    let out = pgrouter()
        .args(["import", "--haproxy"])
        .arg(&good)
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(out.status.success(), "{out:?}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(config::parse(&stdout, "stdout").is_ok(), "{stdout}");
    assert!(stderr.contains("warning: "), "{stderr}");
    assert!(stderr.contains("placeholder 192.0.2.1"), "{stderr}");

    let written = dir.join("out.toml");
    let out = pgrouter()
        .args(["import", "--haproxy"])
        .arg(&good)
        .arg("--output")
        .arg(&written)
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(out.status.success());
    assert!(out.stdout.is_empty());
    let text = std::fs::read_to_string(&written).unwrap_or_default();
    assert!(config::parse(&text, &written).is_ok());
    let check = pgrouter()
        .arg("check-config")
        .arg(&written)
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(check.status.success(), "{check:?}");

    // Only a stats page: nothing to translate.
    let stats = dir.join("stats.cfg");
    std::fs::write(
        &stats,
        "listen stats\n mode http\n bind *:7000\n stats enable\n",
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let out = pgrouter()
        .args(["import", "--haproxy"])
        .arg(&stats)
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("nothing to translate"));

    let out = pgrouter()
        .args(["import", "--haproxy", "/nonexistent/haproxy.cfg"])
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(!out.status.success());
    let _ = std::fs::remove_dir_all(&dir);
}

/// Two HAProxy pools with disjoint servers are two Patroni clusters; the VRRP instance tracks
/// both, and a fallback backend's unknown directives are reported once.
#[test]
fn two_clusters_are_both_tracked() {
    let h = "listen orders\n bind *:5000\n option httpchk\n \
             server a 10.1.0.11:5432 check port 8008\n\
             listen orders_ro\n bind *:5001\n option httpchk GET /replica\n \
             use_backend orders_leader if { nbsrv(orders_ro) eq 0 }\n \
             server a 10.1.0.11:5432 check port 8008\n\
             backend orders_leader\n option httpchk GET /primary\n tcp-request inspect-delay 5s\n \
             server a 10.1.0.11:5432 check port 8008\n\
             listen billing\n bind *:5100\n option httpchk\n \
             server b 10.2.0.11:5432 check port 8008\n";
    let k = "vrrp_instance VI_1 {\n interface eth0\n virtual_router_id 5\n \
             virtual_ipaddress {\n 10.0.0.1\n }\n}\n";
    let out = run(h, Some(k));
    let cfg = config::parse(&out.toml, "x").unwrap_or_else(|e| panic!("{e}"));
    let names: Vec<&str> = cfg.clusters.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(names, vec!["orders", "billing"]);
    assert_eq!(cfg.clusters[0].listeners.len(), 2);
    assert_eq!(
        cfg.clusters[0].listeners[1].fallback,
        config::Fallback::Primary
    );
    let tracks: Vec<&str> = cfg.vrrp[0].track.iter().map(|t| t.name.as_str()).collect();
    assert_eq!(
        tracks,
        vec!["xdp-attached", "patroni:orders", "patroni:billing"]
    );
    let n = out
        .warnings
        .iter()
        .filter(|w| w.message.contains("tcp-request inspect-delay 5s"))
        .count();
    assert_eq!(n, 1, "{:#?}", out.warnings);
}

/// Issue 16: a frontend with a bare `use_backend` or `acl` line made `pgrouter import` panic.
/// Every directive pgrouter reads that is cut short is now a warning naming its line, and the
/// rest of the file is still translated.
#[test]
fn directives_without_their_arguments_are_warned_not_a_panic() {
    let h = "frontend f\n bind 10.0.0.1:5000\n use_backend\n acl\n acl x\n default_backend b\n \
             balance\n maxconn\n timeout\n bind\n server\n server a\n\
             backend b\n option httpchk\n default_backend\n server a 10.0.0.11:5432 check port 8008\n";
    let out = run(h, None);
    let at = |line: usize, text: &str| {
        out.warnings
            .iter()
            .any(|w| w.line == line && w.message == format!("{text}; ignored"))
    };
    assert!(
        at(3, "`use_backend` without a backend name"),
        "{:#?}",
        out.warnings
    );
    assert!(at(4, "`acl` without a name and a criterion"));
    assert!(at(5, "`acl x` without a name and a criterion"));
    assert!(at(7, "`balance` without an algorithm"));
    assert!(at(8, "`maxconn` without a number"));
    assert!(at(9, "`timeout` without a name and a time"));
    assert!(at(10, "`bind` without an address"));
    assert!(at(11, "`server` without a name and an address"));
    assert!(at(12, "`server a` without a name and an address"));
    assert!(at(15, "`default_backend` without a backend name"));
    let cfg = parsed(&out);
    assert_eq!(cfg.clusters[0].listeners[0].port, 5000);
    assert_eq!(cfg.clusters[0].nodes.len(), 1);
}

/// The same through the CLI, as the issue reported it: a warning on stderr, exit 0.
#[test]
fn cli_bare_use_backend_does_not_panic() {
    let dir = std::env::temp_dir().join(format!("pgrouter-import-bare-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{e}"));
    let h = dir.join("haproxy.cfg");
    std::fs::write(
        &h,
        "frontend f\n bind 10.0.0.1:5000\n use_backend\n default_backend b\n\
         backend b\n option httpchk\n server a 10.0.0.11:5432 check port 8008\n",
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let out = pgrouter()
        .args(["import", "--haproxy"])
        .arg(&h)
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("haproxy.cfg:3: `use_backend` without a backend name; ignored"),
        "{stderr}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// keepalived values the config types cannot hold (an address that is not one) are warned
/// about at their line and left out, instead of being written for check-config to reject.
#[test]
fn keepalived_values_that_are_not_addresses_are_warned_at_their_line() {
    let k = "vrrp_instance V {\n interface eth0\n virtual_router_id 9\n \
             unicast_src_ip nope\n unicast_peer {\n 10.0.0.2\n bad\n }\n \
             notify_fault /bin/f x\n notify_master /bin/m\n \
             virtual_ipaddress {\n 10.0.0.1\n }\n}\n";
    let out = run(SEED_RW, Some(k));
    let at = |line: usize, text: &str| {
        out.warnings
            .iter()
            .any(|w| w.line == line && w.message.contains(text))
    };
    assert!(
        at(4, "`unicast_src_ip nope`: not an IP address"),
        "{:#?}",
        out.warnings
    );
    assert!(at(7, "unicast_peer \"bad\" is not an IP address"));
    assert!(!warned(&out, "does not pass `pgrouter check-config`"));
    let v = &parsed(&out).vrrp[0];
    assert_eq!(v.unicast_peer.len(), 1);
    assert_eq!(v.notify_master.as_deref(), Some("/bin/m"));
    assert_eq!(v.notify_fault.as_deref(), Some("/bin/f x"));
}

/// Every warning is in the output, also one whose listener is never written (a bind that does
/// not parse, a proxy name used twice): it goes to the cluster, not to the next listener.
#[test]
fn warnings_of_listeners_that_are_not_written_stay_in_the_output() {
    let servers = " option httpchk GET /primary\n server a 10.0.0.11:5432 check port 8008\n";
    let h = format!(
        "listen bad\n bind 10.0.0.1:x\n{servers}listen good\n bind 10.0.0.1:5001\n{servers}\
         listen good\n bind 10.0.0.1:5002\n{servers}"
    );
    let out = run(&h, None);
    for w in &out.warnings {
        assert!(
            out.toml.contains(&format!("# WARNING: {w}")),
            "{w} missing:\n{}",
            out.toml
        );
    }
    let bind = out
        .warnings
        .iter()
        .find(|w| w.message.contains("bind 10.0.0.1:x"))
        .unwrap_or_else(|| panic!("{:?}", out.warnings));
    assert_eq!(bind.place, pgrouter::import::Place::Cluster(0));
    let cfg = config::parse(&out.toml, "x").unwrap_or_else(|e| panic!("{e}"));
    let names: Vec<&str> = cfg.clusters[0]
        .listeners
        .iter()
        .map(|l| l.name.as_str())
        .collect();
    assert_eq!(names, ["good", "good-2"], "one name each");
}

/// keepalived values `[[vrrp]]` refuses are fitted with a warning (an interval v2 cannot
/// carry, a weight beyond ±254, an unknown `vrrp_version`) or left out (a bad prefix length,
/// an address of the other family, an instance whose name or VRID is taken, commented out at
/// the end of the file); the output passes check-config.
#[test]
fn keepalived_values_check_config_refuses_are_fitted_or_left_out() {
    let k = "global_defs {\n vrrp_version 4\n}\n\
             vrrp_instance VI_1 {\n interface eth0\n virtual_router_id 51\n advert_int 0.5\n \
             unicast_src_ip fd00::1\n unicast_peer {\n 10.0.0.3\n fd00::2\n }\n \
             virtual_ipaddress {\n 10.0.0.100/33\n 10.0.0.101/24\n fd00::100/64\n }\n \
             track_script {\n chk weight 300\n }\n}\n\
             vrrp_instance VI_1 {\n interface eth0\n virtual_router_id 52\n \
             virtual_ipaddress {\n 10.0.0.102\n }\n}\n\
             vrrp_instance VI_3 {\n interface eth0\n virtual_router_id 51\n \
             virtual_ipaddress {\n 10.0.0.103\n }\n}\n";
    let out = run(SEED_RW, Some(k));
    let cfg = config::parse(&out.toml, "x").unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(cfg.vrrp.len(), 1, "{}", out.toml);
    let v = &cfg.vrrp[0];
    assert_eq!(v.version, 2);
    assert_eq!(v.advert_int, Duration::from_secs(1));
    assert_eq!(
        v.virtual_ipaddress
            .iter()
            .map(|c| c.to_string())
            .collect::<Vec<_>>(),
        ["10.0.0.101/24"]
    );
    assert_eq!(v.unicast_peer.len(), 1);
    assert_eq!(
        v.unicast_src_ip.map(|a| a.to_string()).as_deref(),
        Some("192.0.2.254")
    );
    assert!(v.track.iter().all(|t| t.weight == 254), "{:?}", v.track);
    for needle in [
        "`vrrp_version 4` in global_defs: not 2 or 3; ignored",
        "advert_int 0.5: VRRPv2 carries whole seconds 1..=255; set to 1s",
        "10.0.0.100/33: invalid prefix length",
        "fd00::100/64: another address family",
        "unicast_src_ip fd00::1 is not of the VIPs' address family",
        "unicast_peer fd00::2 is not of the VIPs' address family",
        "weight 300 is outside -254..=254; set to 254",
        "vrrp_instance VI_1: its name is the one of the vrrp_instance at line 4",
        "vrrp_instance VI_3: virtual_router_id 51 on eth0 is already the one of vrrp_instance VI_1",
    ] {
        assert!(
            warned(&out, needle),
            "no warning {needle:?}: {:#?}",
            out.warnings
        );
    }
    assert!(
        out.toml.contains("\n# [[vrrp]]\n# name = \"VI_3\"\n"),
        "{}",
        out.toml
    );
}

/// A listener port inside the default SNAT ports moves the SNAT ports; a port range binds at
/// most the 256 listeners the data path serves, the rest commented out.
#[test]
fn listener_ports_fit_the_data_path() {
    let h = SEED_RW.replace("bind *:5000", "bind 10.0.0.1:50000");
    let out = run(&h, None);
    let cfg = config::parse(&out.toml, "x").unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        (cfg.datapath.snat_ports.first, cfg.datapath.snat_ports.last),
        (40000, 49999)
    );
    assert!(warned(&out, "snat_ports set to 40000-49999"));

    let h = SEED_RW.replace("bind *:5000", "bind 10.0.0.1:1000-1299");
    let out = run(&h, None);
    let cfg = config::parse(&out.toml, "x").unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(cfg.clusters[0].listeners.len(), 256);
    assert!(warned(
        &out,
        "the data path serves at most 256 listeners; 10.0.0.1:1256 and the rest"
    ));

    let servers: String = (1..=33)
        .map(|i| format!(" server n{i} 10.0.1.{i}:5432 check port 8008\n"))
        .collect();
    let out = run(
        &format!("listen rw\n bind 10.0.0.1:5000\n option httpchk\n{servers}"),
        None,
    );
    let cfg = config::parse(&out.toml, "x").unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(cfg.clusters[0].nodes.len(), 32);
    assert!(warned(
        &out,
        "server `n33` (10.0.1.33:5432): a cluster has at most 32 nodes"
    ));
}
