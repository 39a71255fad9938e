//! `[datapath]` and `[control]`.
use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use super::super::units::{DurationText, parse_port_range};
use super::super::{Control, DEFAULT_SNAT_PORTS, Datapath, FlowTimeouts, PortRange, raw};
use super::{Ctx, p, valid_ifname};

/// Fewer conntrack entries than this would not hold a handful of connections (two entries
/// each) and is a typo.
const MIN_CT_ENTRIES: u32 = 1024;
/// Fewer handshake entries than this (32 half-open flows) would refuse ordinary bursts.
const MIN_HS_ENTRIES: u32 = 64;

pub(super) fn datapath(ctx: &mut Ctx<'_>, d: raw::Datapath) -> Datapath {
    let mut seen = HashSet::new();
    for (i, ifname) in d.interfaces.iter().enumerate() {
        if !valid_ifname(ifname) {
            ctx.err(
                p!["datapath", "interfaces", i],
                format!("{ifname:?} is not a valid interface name"),
            );
        }
        if !seen.insert(ifname) {
            ctx.err(
                p!["datapath", "interfaces", i],
                format!("interface {ifname:?} is listed twice"),
            );
        }
    }
    let pin_path = PathBuf::from(&d.pin_path);
    if !pin_path.is_absolute() {
        ctx.err(
            p!["datapath", "pin_path"],
            "must be an absolute path (under /sys/fs/bpf)",
        );
    }
    if d.conntrack_entries < MIN_CT_ENTRIES {
        ctx.err(
            p!["datapath", "conntrack_entries"],
            format!(
                "{} is too small; at least {MIN_CT_ENTRIES} (two entries per connection)",
                d.conntrack_entries
            ),
        );
    }
    let snat_ports = match parse_port_range(&d.snat_ports) {
        Ok((first, last)) => {
            if first > last {
                ctx.err(
                    p!["datapath", "snat_ports"],
                    format!("first port {first} is above last port {last}"),
                );
            } else if first < 1024 {
                ctx.err(
                    p!["datapath", "snat_ports"],
                    "must not include privileged ports (below 1024)",
                );
            }
            PortRange { first, last }
        }
        Err(e) => {
            ctx.err(p!["datapath", "snat_ports"], e);
            DEFAULT_SNAT_PORTS
        }
    };
    let ports = u32::from(snat_ports.last.saturating_sub(snat_ports.first)) + 1;
    // Unset: the default, capped so half-open flows can hold at most half the ports.
    let handshake_entries = d.handshake_entries.unwrap_or_else(|| {
        router_ebpf::DEFAULT_HS_ENTRIES
            .min(ports)
            .max(MIN_HS_ENTRIES)
    });
    if handshake_entries < MIN_HS_ENTRIES {
        ctx.err(
            p!["datapath", "handshake_entries"],
            format!(
                "{handshake_entries} is too small; at least {MIN_HS_ENTRIES} (two entries per \
                 half-open connection)"
            ),
        );
    } else if handshake_entries / 2 >= ports {
        // Half-open flows each hold a SNAT port: as many as the ports would let a SYN flood
        // take every port and leave none for connections that complete.
        ctx.err_near(
            p!["datapath", "handshake_entries"],
            &[p!["datapath", "snat_ports"]],
            format!(
                "{} entries hold {} half-open connections, not fewer than the {ports} ports of \
                 snat_ports {}-{}; a SYN flood could take every port",
                handshake_entries,
                handshake_entries / 2,
                snat_ports.first,
                snat_ports.last
            ),
        );
    }
    let t = &d.timeouts;
    let def = FlowTimeouts::default();
    let timeouts = FlowTimeouts {
        handshake: timeout(ctx, "handshake", t.handshake.as_ref(), def.handshake),
        established: timeout(ctx, "established", t.established.as_ref(), def.established),
        closing: timeout(ctx, "closing", t.closing.as_ref(), def.closing),
        closed: timeout(ctx, "closed", t.closed.as_ref(), def.closed),
    };
    Datapath {
        interfaces: d.interfaces,
        mode: d.mode,
        pin_path,
        conntrack_entries: d.conntrack_entries,
        snat_ports,
        handshake_entries,
        timeouts,
    }
}

pub(super) fn control(ctx: &mut Ctx<'_>, c: raw::Control) -> Control {
    let socket = PathBuf::from(&c.socket);
    if !socket.is_absolute() {
        ctx.err(p!["control", "socket"], "must be an absolute path");
    }
    let metrics = if c.metrics.is_empty() {
        None
    } else {
        match c.metrics.parse::<SocketAddr>() {
            Ok(a) => Some(a),
            Err(_) => {
                ctx.err(
                    p!["control", "metrics"],
                    format!(
                        "{:?} is not ADDRESS:PORT (e.g. \"127.0.0.1:9188\"; \"\" disables)",
                        c.metrics
                    ),
                );
                None
            }
        }
    };
    Control { socket, metrics }
}

/// A flow timeout: any positive duration (tests use 1s; `check-config` warns about an
/// `established` below RFC 5382's 2h4m, see `summary`).
fn timeout(
    ctx: &mut Ctx<'_>,
    key: &str,
    text: Option<&DurationText>,
    default: Duration,
) -> Duration {
    ctx.positive_duration(p!["datapath", "timeouts", key], text, default)
}
