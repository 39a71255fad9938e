//! Edge-host settings the data path relies on, applied at start (idempotent):
//! - forwarding on, so a rewritten packet passed to the kernel (neighbour not yet resolved)
//!   is forwarded rather than dropped;
//! - `accept_local` and loose `rp_filter` on the XDP interfaces, because such a packet's source
//!   is the VIP, a local address;
//! - the SNAT port range reserved from the kernel's ephemeral range, so the edge host's own
//!   connections never collide with NATed flows.
use std::{fs, net::IpAddr, net::UdpSocket};

use anyhow::Context as _;
use tracing::{info, warn};

fn write_sysctl(path: &str, value: &str) -> anyhow::Result<()> {
    let full = format!("/proc/sys/{path}");
    let cur = fs::read_to_string(&full).unwrap_or_default();
    if cur.trim() == value {
        return Ok(());
    }
    fs::write(&full, value).with_context(|| format!("setting {path} = {value}"))?;
    info!(sysctl = path, value, "set");
    Ok(())
}

pub fn prepare(interfaces: &[String], snat: (u16, u16)) -> anyhow::Result<()> {
    write_sysctl("net/ipv4/ip_forward", "1")?;
    for i in interfaces {
        write_sysctl(&format!("net/ipv4/conf/{i}/accept_local"), "1")?;
        write_sysctl(&format!("net/ipv4/conf/{i}/rp_filter"), "2")?;
    }
    reserve_ports(snat)
}

/// Adds the SNAT range to `ip_local_reserved_ports`, keeping what is there.
fn reserve_ports((first, last): (u16, u16)) -> anyhow::Result<()> {
    let path = "/proc/sys/net/ipv4/ip_local_reserved_ports";
    let cur = fs::read_to_string(path).unwrap_or_default();
    let range = format!("{first}-{last}");
    if cur.split(',').any(|r| r.trim() == range) {
        return Ok(());
    }
    let new = if cur.trim().is_empty() {
        range
    } else {
        format!("{},{range}", cur.trim())
    };
    fs::write(path, &new).with_context(|| format!("reserving SNAT ports {first}-{last}"))?;
    info!(ports = %new, "reserved SNAT ports from the ephemeral range");
    Ok(())
}

/// Keeps the backends' neighbour entries resolved, so a first SYN finds a next hop in XDP
/// instead of taking the slower kernel path: an empty UDP datagram to the discard port makes
/// the kernel resolve (or re-confirm) the neighbour. Health checks do the same for Patroni
/// nodes; this covers static clusters and idle periods.
pub fn warm_neighbours(addrs: &[IpAddr]) {
    for a in addrs {
        let bind = if a.is_ipv4() { "0.0.0.0:0" } else { "[::]:0" };
        match UdpSocket::bind(bind) {
            Ok(s) => {
                let _ = s.send_to(&[], (*a, 9));
            }
            Err(e) => warn!("neighbour warm-up socket: {e}"),
        }
    }
}

/// The interface's MAC address, from sysfs (`None` for interfaces without one).
pub fn iface_mac(iface: &str) -> Option<[u8; 6]> {
    let text = fs::read_to_string(format!("/sys/class/net/{iface}/address")).ok()?;
    let mut mac = [0u8; 6];
    let mut parts = text.trim().split(':');
    for b in &mut mac {
        *b = u8::from_str_radix(parts.next()?, 16).ok()?;
    }
    (parts.next().is_none() && mac != [0; 6]).then_some(mac)
}

/// `CLOCK_MONOTONIC` in ns: the clock of the kernel's `bpf_ktime_get_coarse_ns`, which stamps
/// flows and against which `BackendSet.empty_since_ns` is compared.
pub fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes into the timespec we own.
    if unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) } != 0 {
        return 0;
    }
    (ts.tv_sec as u64)
        .saturating_mul(1_000_000_000)
        .saturating_add(ts.tv_nsec as u64)
}
