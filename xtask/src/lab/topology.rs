//! The lab's topology: one bridge, one namespace per host with `eth0` on it, fixed
//! addresses and MACs, and the VIP pgrouter (or the baseline) will own.
use super::Lab;
use super::util::{cmd, ns_cmd, ns_sysctl, run};
use anyhow::{Result, anyhow};
use std::fs;
use std::time::Instant;

/// Lab state: configs, data dirs, logs, pidfiles. Removed by `down`.
pub const LAB_DIR: &str = "/var/lib/pgrouter-lab";
/// Virtualenv (system python3) holding Patroni. Kept across `down`.
pub const VENV: &str = "/opt/pgrouter-lab/venv";
pub const PG_BIN: &str = "/usr/lib/postgresql/15/bin";
pub const BRIDGE: &str = "pgrlab-br0";
/// Root-namespace address on the bridge (lets the host reach the lab).
pub const BRIDGE_ADDR: &str = "198.18.0.1";
pub const SUBNET: &str = "198.18.0.0/24";
pub const PREFIX_LEN: u8 = 24;
/// The floating address pgrouter will own (not configured by the lab).
pub const VIP: &str = "198.18.0.100";
pub const SUPERUSER: &str = "postgres";
pub const SUPERUSER_PASSWORD: &str = "pgrouter";
pub const REPLICATION_USER: &str = "replicator";
pub const REPLICATION_PASSWORD: &str = "replicator";
pub const ETCD_ADDR: &str = "198.18.0.5";
/// Namespace used for REST calls and client commands.
pub const CLIENT_NS: &str = "pgrlab-client";

/// One lab host = one network namespace `pgrlab-<name>` with `eth0` at `addr`.
#[derive(Clone, Copy, Debug)]
pub struct Host {
    pub name: &'static str,
    pub addr: &'static str,
}

impl Host {
    /// Namespace name, e.g. `pgrlab-pg1`.
    pub fn ns(&self) -> String {
        format!("pgrlab-{}", self.name)
    }
    /// Root-namespace end of this host's veth pair (enslaved to the bridge).
    pub fn host_veth(&self) -> String {
        format!("pgrlab-{}", self.name)
    }
    /// Deterministic MAC of eth0 in the namespace: 02:00:c6:12:00:<last octet>.
    pub fn mac(&self) -> String {
        let last: u8 = self.addr.rsplit('.').next().unwrap().parse().unwrap();
        format!("02:00:c6:12:00:{last:02x}")
    }
}

pub const HOSTS: [Host; 7] = [
    Host {
        name: "etcd",
        addr: "198.18.0.5",
    },
    Host {
        name: "pg1",
        addr: "198.18.0.11",
    },
    Host {
        name: "pg2",
        addr: "198.18.0.12",
    },
    Host {
        name: "pg3",
        addr: "198.18.0.13",
    },
    Host {
        name: "edge1",
        addr: "198.18.0.21",
    },
    Host {
        name: "edge2",
        addr: "198.18.0.22",
    },
    Host {
        name: "client",
        addr: "198.18.0.30",
    },
];
pub const PG_NODES: [&str; 3] = ["pg1", "pg2", "pg3"];
pub const EDGES: [&str; 2] = ["edge1", "edge2"];

/// The host named `name`, for constants (`host_named("edge2").addr`); an unknown name fails
/// the build.
pub const fn host_named(name: &str) -> Host {
    let mut i = 0;
    while i < HOSTS.len() {
        if same(HOSTS[i].name.as_bytes(), name.as_bytes()) {
            return HOSTS[i];
        }
        i += 1;
    }
    panic!("unknown lab host");
}

/// `a == b` for a `const fn` (slice equality is not const).
const fn same(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let mut i = 0;
    while i < a.len() {
        if a[i] != b[i] {
            return false;
        }
        i += 1;
    }
    true
}

pub fn host(name: &str) -> Result<Host> {
    HOSTS
        .iter()
        .copied()
        .find(|h| h.name == name)
        .ok_or_else(|| anyhow!("unknown lab host {name:?}"))
}

/// Accepts `2`, `pg2` or `pgrlab-pg2`; returns `pg2`.
pub fn node_name(arg: &str) -> Result<&'static str> {
    let a = arg.trim_start_matches("pgrlab-");
    let a = if a.chars().all(|c| c.is_ascii_digit()) {
        format!("pg{a}")
    } else {
        a.to_string()
    };
    PG_NODES
        .iter()
        .copied()
        .find(|n| *n == a)
        .ok_or_else(|| anyhow!("unknown PostgreSQL node {arg:?} (expected 1..3 or pg1..pg3)"))
}

/// Accepts `edge1` or `pgrlab-edge1`; returns the namespace name.
pub fn ns_name(arg: &str) -> Result<String> {
    let a = arg.trim_start_matches("pgrlab-");
    Ok(host(a)?.ns())
}

impl Lab {
    pub(super) fn create_network(&self) -> Result<()> {
        let t = Instant::now();
        run(&mut cmd(
            "ip",
            [
                "link",
                "add",
                "name",
                BRIDGE,
                "type",
                "bridge",
                "stp_state",
                "0",
                "forward_delay",
                "0",
                "mcast_snooping",
                "0",
            ],
        ))?;
        disable_ipv6_root(BRIDGE);
        run(&mut cmd(
            "ip",
            [
                "addr",
                "add",
                &format!("{BRIDGE_ADDR}/{PREFIX_LEN}"),
                "dev",
                BRIDGE,
            ],
        ))?;
        run(&mut cmd("ip", ["link", "set", BRIDGE, "up"]))?;
        for h in HOSTS {
            let ns = h.ns();
            let hv = h.host_veth();
            run(&mut cmd("ip", ["netns", "add", &ns]))?;
            // No IPv6 at all (not even link-local): lab traffic stays in 198.18.0.0/24.
            let _ = ns_sysctl(&ns, "net.ipv6.conf.all.disable_ipv6", "1");
            let _ = ns_sysctl(&ns, "net.ipv6.conf.default.disable_ipv6", "1");
            run(&mut cmd(
                "ip",
                [
                    "link", "add", &hv, "type", "veth", "peer", "name", "eth0", "netns", &ns,
                ],
            ))?;
            disable_ipv6_root(&hv);
            run(&mut cmd("ip", ["link", "set", &hv, "master", BRIDGE]))?;
            run(&mut cmd("ip", ["link", "set", &hv, "up"]))?;
            run(&mut cmd("ethtool", ["-K", &hv, "tx", "off"]))?;
            run(&mut cmd(
                "ip",
                ["-n", &ns, "link", "set", "eth0", "address", &h.mac()],
            ))?;
            run(&mut cmd(
                "ip",
                [
                    "-n",
                    &ns,
                    "addr",
                    "add",
                    &format!("{}/{PREFIX_LEN}", h.addr),
                    "dev",
                    "eth0",
                ],
            ))?;
            run(&mut cmd("ip", ["-n", &ns, "link", "set", "eth0", "up"]))?;
            run(&mut cmd("ip", ["-n", &ns, "link", "set", "lo", "up"]))?;
            run(&mut ns_cmd(&ns, ["ethtool", "-K", "eth0", "tx", "off"]))?;
            if EDGES.contains(&h.name) {
                ns_sysctl(&ns, "net.ipv4.ip_forward", "1")?;
                // GRO on the bridge-side peer gives it a NAPI context, which
                // veth needs to accept XDP_TX / XDP_REDIRECT frames from eth0.
                run(&mut cmd("ethtool", ["-K", &hv, "gro", "on"]))?;
            }
        }
        println!(
            "lab: network up in {:.1?}: bridge {BRIDGE} ({BRIDGE_ADDR}/{PREFIX_LEN}), namespaces {}",
            t.elapsed(),
            HOSTS
                .iter()
                .map(|h| format!("{}={}", h.ns(), h.addr))
                .collect::<Vec<_>>()
                .join(" ")
        );
        Ok(())
    }

    /// Edges (`edge1`, `edge2`) that have the VIP on an interface.
    pub fn vip_holders(&self) -> Vec<&'static str> {
        EDGES
            .iter()
            .copied()
            .filter(|e| {
                run(&mut cmd(
                    "ip",
                    ["-n", &format!("pgrlab-{e}"), "-4", "-o", "addr", "show"],
                ))
                .map(|out| out.contains(&format!(" {VIP}/")))
                .unwrap_or(false)
            })
            .collect()
    }
}

fn disable_ipv6_root(ifname: &str) {
    let _ = fs::write(
        format!("/proc/sys/net/ipv6/conf/{ifname}/disable_ipv6"),
        "1",
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_and_namespace_names() {
        assert_eq!(node_name("2").unwrap(), "pg2");
        assert_eq!(node_name("pg3").unwrap(), "pg3");
        assert_eq!(node_name("pgrlab-pg1").unwrap(), "pg1");
        assert!(node_name("4").is_err());
        assert!(node_name("edge1").is_err());
        assert_eq!(ns_name("edge1").unwrap(), "pgrlab-edge1");
        assert_eq!(ns_name("pgrlab-client").unwrap(), "pgrlab-client");
        assert!(ns_name("nope").is_err());
    }

    #[test]
    fn hosts_fit_the_lab_subnet_and_ifnamsiz() {
        for h in HOSTS {
            assert!(h.addr.starts_with("198.18.0."), "{}", h.addr);
            assert!(
                h.host_veth().len() <= 15,
                "{} too long for IFNAMSIZ",
                h.host_veth()
            );
            assert!(h.ns().starts_with("pgrlab-"));
        }
        assert_eq!(host("pg1").unwrap().mac(), "02:00:c6:12:00:0b");
        assert_eq!(host("client").unwrap().mac(), "02:00:c6:12:00:1e");
        assert!(BRIDGE.len() <= 15);
        assert_eq!(host_named("edge2").addr, "198.18.0.22");
    }
}
