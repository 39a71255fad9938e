//! What `pgrouter check-config` prints for a valid file: one line per section, and the
//! warnings about values that are accepted but probably not meant.
use std::fmt;
use std::net::IpAddr;
use std::time::Duration;

use super::{Config, Fallback, OnEmpty, units};

/// What `pgrouter check-config` prints for a valid file.
#[derive(Clone, Debug, PartialEq)]
pub struct Summary {
    pub text: String,
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

/// The longest `empty_hold` after which every client still meets the RST before a 10 s
/// connect timeout (its SYN retransmissions: 1, 3, 7 s after the first).
const MAX_PROMPT_HOLD: Duration = Duration::from_secs(7);

pub(super) fn summarize(cfg: &Config) -> Summary {
    use fmt::Write as _;
    let mut s = String::new();
    let _ = writeln!(s, "{}: ok", cfg.path.display());
    let _ = writeln!(
        s,
        "datapath: {} ({:?}), conntrack {} entries, snat ports {}",
        if cfg.datapath.interfaces.is_empty() {
            "no interfaces".to_owned()
        } else {
            cfg.datapath.interfaces.join(",")
        },
        cfg.datapath.mode,
        cfg.datapath.conntrack_entries,
        cfg.datapath.snat_ports,
    );
    let t = &cfg.datapath.timeouts;
    let d = units::duration_text;
    let _ = writeln!(
        s,
        "flows: handshake table {} entries; timeouts handshake {} established {} closing {} \
         closed {}",
        cfg.datapath.handshake_entries,
        d(t.handshake),
        d(t.established),
        d(t.closing),
        d(t.closed)
    );
    if t.established_below_rfc5382() {
        // Accepted (tests use seconds), but idle sessions (a pooler's, a psql left open) would
        // be cut where a NAT following RFC 5382 keeps them.
        let _ = writeln!(
            s,
            "warning: datapath.timeouts.established {} is below 2h4m; RFC 5382 (REQ-5) asks for \
             at least 2h4m, or idle sessions are cut",
            d(t.established)
        );
    }
    for c in &cfg.clusters {
        let h = &c.health;
        let _ = writeln!(
            s,
            "cluster {} ({:?} checks, {} nodes; interval {:?} fastinter {:?} downinter {:?} \
             timeout {:?} fall {} rise {}{})",
            c.name,
            c.checks,
            c.nodes.len(),
            h.interval,
            h.fastinter,
            h.downinter,
            h.timeout,
            h.fall,
            h.rise,
            if h.observe_refusals {
                ""
            } else {
                "; refusals ignored"
            }
        );
        for l in &c.listeners {
            let mut extra = String::new();
            if l.fallback == Fallback::Primary {
                extra.push_str(", fallback primary");
            }
            if let Some(lag) = &l.lag {
                let _ = write!(extra, ", lag {} ({} bytes)", lag.text, lag.bytes);
            }
            let mut warning = None;
            match l.on_empty {
                OnEmpty::Reject => extra.push_str(", empty: reject"),
                OnEmpty::Hold(hold) => {
                    let _ = write!(extra, ", empty: hold {}", d(hold));
                    // SYN retransmissions come 1, 3, 7 then 15 s after the first: past 7 s a
                    // client may reach its connect timeout before it meets the RST.
                    if hold > MAX_PROMPT_HOLD {
                        warning = Some(format!(
                            "warning: listener {} empty_hold {} is above 7s; a client whose first SYN comes \
                             as the set empties retransmits next at 15s, so it may time out \
                             (pgjdbc: 10s) instead of being refused",
                            l.name,
                            d(hold)
                        ));
                    }
                }
            }
            let _ = writeln!(
                s,
                "  listener {} {}:{} -> {:?}{extra}",
                l.name,
                fmt_ip(l.vip),
                l.port,
                l.kind
            );
            if let Some(w) = warning {
                let _ = writeln!(s, "{w}");
            }
        }
    }
    for v in &cfg.vrrp {
        let vips: Vec<String> = v
            .virtual_ipaddress
            .iter()
            .map(ToString::to_string)
            .collect();
        let _ = writeln!(
            s,
            "vrrp {} on {} vrid {} priority {}: {}",
            v.name,
            v.interface,
            v.virtual_router_id,
            v.priority,
            vips.join(", ")
        );
    }
    if cfg.vrrp.is_empty() {
        let _ = writeln!(s, "vrrp: none (the VIPs are managed elsewhere)");
    }
    s.truncate(s.trim_end().len());
    Summary { text: s }
}

fn fmt_ip(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => format!("[{v6}]"),
    }
}
