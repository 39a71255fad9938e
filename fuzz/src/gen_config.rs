//! Structure-aware pgrouter TOML: the real sections and keys (config/raw.rs, vrrp's
//! `InstanceConfig`), values drawn mostly from each key's grammar with near-misses mixed in, so
//! the validator's deep paths are reached instead of the TOML parser's first error.
use arbitrary::{Result, Unstructured};

use crate::pools::*;

/// The configs the project ships (examples/, dist/).
const FIXTURES: &[&str] = &[
    include_str!("../../examples/pgrouter.toml"),
    include_str!("../../dist/pgrouter.toml"),
];

/// Renders one config from the fuzzer's bytes.
pub fn config(u: &mut Unstructured<'_>) -> Result<String> {
    let mut out = String::new();
    let seeded = u.ratio(1, 3)?;
    if seeded {
        // A shipped config, then generated clusters and instances appended to its arrays.
        out.push_str(pick(u, FIXTURES)?);
        out.push('\n');
    } else if u.ratio(3, 4)? {
        datapath(u, &mut out)?;
    }
    if !seeded && u.ratio(1, 4)? {
        out.push_str("[control]\n");
        key(
            u,
            &mut out,
            "socket",
            &[r#""/run/pgrouter/fuzz.sock""#, r#""""#, r#""relative""#],
        )?;
        key(
            u,
            &mut out,
            "metrics",
            &[
                r#""127.0.0.1:9187""#,
                r#""""#,
                r#""[::1]:0""#,
                r#""nope""#,
                "9187",
            ],
        )?;
    }
    for _ in 0..u.int_in_range(0..=3)? {
        cluster(u, &mut out)?;
    }
    for _ in 0..u.int_in_range(0..=2)? {
        vrrp(u, &mut out)?;
    }
    if u.ratio(1, 16)? {
        // A stray key or table anywhere: unknown fields must be named.
        out.push_str(pick(
            u,
            &["bogus = 1\n", "[datapath.extra]\n", "[[cluster.node.x]]\n"],
        )?);
    }
    Ok(out)
}

/// Writes `name = value` with probability 3/4, the value from `values` or a fuzzed string.
fn key(u: &mut Unstructured<'_>, out: &mut String, name: &str, values: &[&str]) -> Result<()> {
    if u.ratio(3, 4)? {
        let v = value(u, values)?;
        out.push_str(&format!("{name} = {v}\n"));
    }
    Ok(())
}

fn datapath(u: &mut Unstructured<'_>, out: &mut String) -> Result<()> {
    out.push_str("[datapath]\n");
    key(
        u,
        out,
        "interfaces",
        &[
            r#"["eth0"]"#,
            "[]",
            r#"["eth0", "eth1"]"#,
            r#"["""]"#,
            r#"["a-very-long-interface-name"]"#,
        ],
    )?;
    key(
        u,
        out,
        "mode",
        &[r#""auto""#, r#""native""#, r#""generic""#, r#""skb""#],
    )?;
    key(
        u,
        out,
        "pin_path",
        &[r#""/sys/fs/bpf/pgrouter""#, r#""""#, r#""rel/path""#],
    )?;
    key(u, out, "conntrack_entries", INTS)?;
    key(u, out, "handshake_entries", INTS)?;
    key(u, out, "snat_ports", PORT_RANGES)?;
    if u.ratio(1, 2)? {
        out.push_str("[datapath.timeouts]\n");
        for k in ["handshake", "established", "closing", "closed"] {
            key(u, out, k, DURATIONS)?;
        }
    }
    Ok(())
}

fn cluster(u: &mut Unstructured<'_>, out: &mut String) -> Result<()> {
    out.push_str("[[cluster]]\n");
    key(u, out, "name", NAMES)?;
    key(
        u,
        out,
        "checks",
        &[r#""patroni""#, r#""static""#, r#""tcp""#],
    )?;
    if u.ratio(1, 2)? {
        out.push_str("[cluster.health]\n");
        for k in ["interval", "fastinter", "downinter", "timeout"] {
            key(u, out, k, DURATIONS)?;
        }
        key(u, out, "fall", INTS)?;
        key(u, out, "rise", INTS)?;
        key(u, out, "observe_refusals", &["true", "false", r#""yes""#])?;
    }
    if u.ratio(1, 3)? {
        out.push_str("[cluster.api]\n");
        key(u, out, "scheme", &[r#""http""#, r#""https""#, r#""ftp""#])?;
        key(u, out, "port", PORTS)?;
        for k in ["ca_file", "cert_file", "key_file"] {
            key(u, out, k, &[r#""""#, r#""/etc/ssl/ca.pem""#])?;
        }
        key(u, out, "username", &[r#""""#, r#""patroni""#])?;
        key(u, out, "password", &[r#""""#, r#""secret""#])?;
    }
    for _ in 0..u.int_in_range(0..=4)? {
        out.push_str("[[cluster.node]]\n");
        key(u, out, "name", NAMES)?;
        key(u, out, "host", IPS)?;
        key(u, out, "port", PORTS)?;
        key(u, out, "api_port", PORTS)?;
        key(
            u,
            out,
            "role",
            &[r#""primary""#, r#""replica""#, r#""down""#, r#""leader""#],
        )?;
        key(u, out, "tls_name", &[r#""db1.example""#, r#""""#])?;
    }
    for _ in 0..u.int_in_range(0..=4)? {
        out.push_str("[[cluster.listener]]\n");
        key(u, out, "name", NAMES)?;
        key(u, out, "vip", IPS)?;
        key(u, out, "port", PORTS)?;
        key(
            u,
            out,
            "kind",
            &[
                r#""primary""#,
                r#""replica""#,
                r#""read-only""#,
                r#""readonly""#,
            ],
        )?;
        key(u, out, "maxconn", INTS)?;
        key(
            u,
            out,
            "balance",
            &[
                r#""roundrobin""#,
                r#""leastconn""#,
                r#""source""#,
                r#""round-robin""#,
                r#""random""#,
            ],
        )?;
        key(
            u,
            out,
            "on_marked_down",
            &[r#""shutdown-sessions""#, r#""keep""#, r#""drop""#],
        )?;
        key(
            u,
            out,
            "on_empty",
            &[r#""hold""#, r#""reject""#, r#""queue""#],
        )?;
        key(u, out, "empty_hold", DURATIONS)?;
        key(
            u,
            out,
            "fallback",
            &[r#""primary""#, r#""none""#, r#""replica""#],
        )?;
        key(u, out, "lag", SIZES)?;
        key(u, out, "snat", IPS)?;
    }
    Ok(())
}

fn vrrp(u: &mut Unstructured<'_>, out: &mut String) -> Result<()> {
    out.push_str("[[vrrp]]\n");
    key(u, out, "name", NAMES)?;
    key(u, out, "interface", &[r#""eth0""#, r#""""#, r#""lo""#])?;
    key(u, out, "version", &["2", "3", "4", "0"])?;
    key(u, out, "virtual_router_id", &["1", "51", "255", "0", "256"])?;
    key(u, out, "priority", &["1", "100", "254", "255", "0"])?;
    key(
        u,
        out,
        "advert_int",
        &[
            "1",
            r#""1s""#,
            r#""10ms""#,
            r#""41s""#,
            "0",
            r#""1.5s""#,
            "1.5",
        ],
    )?;
    key(
        u,
        out,
        "state",
        &[r#""MASTER""#, r#""BACKUP""#, r#""master""#, r#""FAULT""#],
    )?;
    key(u, out, "nopreempt", &["true", "false"])?;
    key(u, out, "preempt_delay", &[r#""5s""#, "5", r#""0s""#])?;
    key(
        u,
        out,
        "auth_pass",
        &[r#""secret""#, r#""""#, r#""123456789""#],
    )?;
    key(
        u,
        out,
        "virtual_ipaddress",
        &[
            r#"["198.18.0.100/24"]"#,
            r#"["198.18.0.100"]"#,
            r#"["fd00:198:18::100/64"]"#,
            "[]",
            r#"["198.18.0.100/33"]"#,
            r#"["198.18.0.1", "fd00:198:18::1"]"#,
        ],
    )?;
    key(u, out, "unicast_src_ip", IPS)?;
    key(
        u,
        out,
        "unicast_peer",
        &[
            r#"["198.18.0.2"]"#,
            "[]",
            r#"["fd00:198:18::2"]"#,
            r#"["198.18.0.2", "198.18.0.2"]"#,
        ],
    )?;
    key(u, out, "garp_master_delay", &[r#""5s""#, "5", r#""0s""#])?;
    key(u, out, "garp_master_repeat", INTS)?;
    key(u, out, "garp_master_refresh", &[r#""60s""#, "0"])?;
    for k in ["notify_master", "notify_backup", "notify_fault"] {
        key(u, out, k, &[r#""/bin/true""#, r#""""#])?;
    }
    for _ in 0..u.int_in_range(0..=2)? {
        out.push_str("[[vrrp.track]]\n");
        key(
            u,
            out,
            "name",
            &[
                r#""xdp-attached""#,
                r#""patroni:main""#,
                r#""patroni:a""#,
                r#""unknown""#,
                r#""""#,
            ],
        )?;
        key(u, out, "weight", &["0", "-10", "10", "-255", "256"])?;
        key(u, out, "fatal", &["true", "false"])?;
    }
    Ok(())
}
