//! HAProxy + Keepalived models → a [`Plan`] in pgrouter's own config types, with a warning for
//! everything that does not carry over exactly. Pure; `render` turns the plan into TOML.
//!
//! One step per concern, in the order [`plan`] runs them:
//! - [`proxies`]: sections with their `defaults` applied → the directives pgrouter reads;
//! - [`routes`]: which frontend/listen serves which pool, the fallback rule, the clusters;
//! - [`timeouts`]: `timeout` directives → `[datapath.timeouts]`;
//! - [`nodes`]: servers → `[[cluster.node]]` and `[cluster.api]`;
//! - [`health`]: server check timing → `[cluster.health]`;
//! - [`role`]: a pool's HTTP check → the listener kind (what Patroni would have answered);
//! - [`listeners`]: binds, limits and fallback → `[[cluster.listener]]`.
//!
//! keepalived's part is `super::vrrp_plan`.
use std::collections::{BTreeSet, HashMap};
use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use super::haproxy::{self, SectionKind};
use super::keepalived;
use super::plan::{Plan, Sink};
use super::vrrp_plan::PATRONI_TRACKS;
use super::{Place, Source};
use crate::config::vrrp::RawTrack;
use crate::config::{Checks, raw};

mod health;
mod listeners;
mod nodes;
mod proxies;
mod role;
mod routes;
mod timeouts;

use proxies::Proxy;
use routes::Route;

/// TEST-NET-1 (RFC 5737): placeholders that can never be a real host, so a forgotten one
/// fails loudly instead of routing somewhere.
pub const PLACEHOLDER_VIP: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);
/// Placeholder nodes are 192.0.2.102, .103, …
const PLACEHOLDER_NODE_BASE: u8 = 101;
pub(super) const PLACEHOLDER_SRC: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 254);

/// Weight of a `patroni:<cluster>` track (this host reaches some node's Patroni API) when
/// keepalived gives none (or 0). Never 0 (FAULT): a cluster whose APIs are all down fails the
/// track on every host, and FAULT on both would drop the VIP for every listener. A large
/// negative weight moves the VIP only to a peer that does reach the cluster.
pub const PATRONI_TRACK_WEIGHT: i32 = -50;

/// What the per-cluster steps read: the sources and the HAProxy model.
#[derive(Clone, Copy)]
struct Inputs<'a> {
    hsrc: &'a Source<'a>,
    ksrc: Option<&'a Source<'a>>,
    proxies: &'a [Proxy],
    routes: &'a [Route],
    by_name: &'a HashMap<&'a str, usize>,
    /// keepalived VIPs (instance, address): what `bind *` means.
    vips: &'a [(String, IpAddr)],
}

impl<'a> Inputs<'a> {
    /// Route `ri` with its frontend/listen and its pool. The earlier steps made these indices
    /// from the same slices, so they always resolve; a route that did not would be skipped.
    fn route(&self, ri: usize) -> Option<(&'a Route, &'a Proxy, &'a Proxy)> {
        let r = self.routes.get(ri)?;
        Some((r, self.proxies.get(r.front)?, self.proxies.get(r.pool)?))
    }
}

/// What the per-cluster steps accumulate across clusters.
#[derive(Default)]
struct State {
    bind_seen: BTreeSet<(IpAddr, u16)>,
    placeholder_nodes: u8,
    /// Proxies whose unknown directives were already reported.
    reported: BTreeSet<usize>,
    dropped: Vec<String>,
    /// Why listeners were left out (for the error when none is left).
    refused: Vec<String>,
    /// Listeners written so far, in every cluster (at most `config::MAX_LISTENERS`).
    listeners: usize,
}

/// The translation: HAProxy (and keepalived) sources → a plan; warnings and notes go to `sink`.
/// `Err` when nothing usable comes out (no listener).
pub(crate) fn plan(
    hsrc: &Source<'_>,
    ksrc: Option<&Source<'_>>,
    sink: &mut Sink,
) -> Result<Plan, String> {
    let hfile = haproxy::parse(hsrc.text);
    for e in &hfile.errors {
        sink.warn(hsrc.path, e.line, Place::Top, e.message.clone());
    }

    // keepalived first: its VIPs resolve `bind *:PORT`.
    let mut plan = Plan::default();
    let mut vips: Vec<(String, IpAddr)> = Vec::new();
    if let Some(k) = ksrc {
        let kfile = keepalived::parse(k.text);
        super::vrrp_plan::vrrp_plans(k, &kfile, &mut plan, sink);
        for v in &plan.config.vrrp {
            for a in &v.virtual_ipaddress {
                let ip = a.split('/').next().unwrap_or_default();
                if let Ok(ip) = ip.parse::<IpAddr>() {
                    vips.push((v.name.clone(), ip));
                }
            }
        }
    }

    let proxies = proxies::build_proxies(&hfile, hsrc, sink);
    let by_name: HashMap<&str, usize> = proxies
        .iter()
        .enumerate()
        .filter(|(_, p)| p.kind != SectionKind::Frontend)
        .map(|(i, p)| (p.name.as_str(), i))
        .collect();

    let routes = routes::build_routes(&proxies, &by_name, hsrc, sink);
    if routes.is_empty() {
        return Err(format!(
            "{}: no frontend or listen section that binds a TCP port and has servers; nothing to translate",
            hsrc.path
        ));
    }

    timeouts::flow_timeouts(
        &proxies,
        &routes,
        hsrc,
        sink,
        &mut plan.config.datapath.timeouts,
    );

    let groups = routes::group_routes(&routes, &proxies);
    let multi = groups.len() > 1;
    let mut used_names = BTreeSet::new();
    let inp = Inputs {
        hsrc,
        ksrc,
        proxies: &proxies,
        routes: &routes,
        by_name: &by_name,
        vips: &vips,
    };
    let mut st = State::default();
    for (gi, route_ids) in groups.iter().enumerate() {
        let ci = plan.config.cluster.len();
        let Some((_, first, _)) = route_ids.first().and_then(|&ri| inp.route(ri)) else {
            continue;
        };
        let mut cname = sanitize(&first.name);
        if multi && used_names.contains(&cname) {
            cname = free_name(with_suffix(&cname, gi), &cname, gi + 1, |n| {
                used_names.contains(n)
            });
        }
        used_names.insert(cname.clone());
        let mut cluster = raw::Cluster {
            name: cname,
            checks: Checks::Patroni,
            health: health::haproxy_default(),
            api: raw::Api::default(),
            node: Vec::new(),
            listener: Vec::new(),
        };
        let node_by_addr = nodes::cluster_nodes(&inp, &mut st, sink, ci, route_ids, &mut cluster);
        health::cluster_health(&inp, sink, ci, route_ids, &mut cluster);
        listeners::cluster_listeners(
            &inp,
            &mut st,
            sink,
            ci,
            route_ids,
            &node_by_addr,
            &mut cluster,
        );
        plan.config.cluster.push(cluster);
    }

    plan.dropped = st.dropped;
    plan.refused = st.refused;
    snat_ports_without_listeners(&mut plan, hsrc, sink);
    if plan.config.datapath.interfaces.is_empty() {
        sink.warn(
            hsrc.path,
            0,
            Place::Datapath,
            "no keepalived vrrp_instance (--keepalived) names the interface that receives the VIP traffic; set datapath.interfaces",
        );
    }

    // keepalived's scripts became pgrouter's tracks: `patroni:` stands for one track per
    // cluster (the VIP should leave a host that reaches no Patroni API of a cluster it serves).
    let cnames: Vec<String> = plan.config.cluster.iter().map(|c| c.name.clone()).collect();
    for v in &mut plan.config.vrrp {
        let mut tracks = Vec::new();
        for t in std::mem::take(&mut v.track) {
            if t.name == PATRONI_TRACKS {
                tracks.extend(cnames.iter().map(|c| RawTrack {
                    name: format!("{PATRONI_TRACKS}{c}"),
                    ..t.clone()
                }));
            } else {
                tracks.push(t);
            }
        }
        v.track = tracks;
    }
    plan.notes = std::mem::take(&mut sink.notes);
    Ok(plan)
}

/// Listener ports inside the default SNAT source ports would catch the replies of SNATed
/// flows (check-config refuses them): the SNAT ports become the largest part of the default
/// range without a listener port.
fn snat_ports_without_listeners(plan: &mut Plan, hsrc: &Source<'_>, sink: &mut Sink) {
    let snat = crate::config::DEFAULT_SNAT_PORTS;
    let inside: BTreeSet<u16> = plan
        .config
        .cluster
        .iter()
        .flat_map(|c| &c.listener)
        .map(|l| l.port)
        .filter(|p| snat.contains(*p))
        .collect();
    if inside.is_empty() {
        return;
    }
    // The gaps between the ports (and the range's ends): the widest one, the first if tied.
    let mut best: Option<(u16, u16)> = None;
    let mut start = u32::from(snat.first);
    for p in inside
        .iter()
        .map(|p| u32::from(*p))
        .chain([u32::from(snat.last) + 1])
    {
        if p > start {
            let (a, b) = (start, p - 1);
            if best.is_none_or(|(x, y)| b - a > u32::from(y) - u32::from(x)) {
                best = u16::try_from(a).ok().zip(u16::try_from(b).ok());
            }
        }
        start = p + 1;
    }
    let ports = inside
        .iter()
        .map(u16::to_string)
        .collect::<Vec<_>>()
        .join(", ");
    // Too few ports left would refuse connections (each flow holds one); then the listeners
    // inside stay and check-config's refusal of them applies.
    const MIN_SNAT_PORTS: u16 = 1024;
    match best.filter(|(a, b)| b - a + 1 >= MIN_SNAT_PORTS) {
        Some((a, b)) => {
            plan.config.datapath.snat_ports = format!("{a}-{b}");
            sink.warn(hsrc.path, 0, Place::Datapath, format!(
                "listener port{} {ports} inside pgrouter's default SNAT source ports {}-{}: snat_ports set to {a}-{b}, the largest part without them (replies to SNATed flows would hit a listener)",
                if inside.len() == 1 { " is" } else { "s are" }, snat.first, snat.last));
        }
        None => sink.warn(hsrc.path, 0, Place::Datapath, format!(
            "listener ports {ports} leave no {MIN_SNAT_PORTS} consecutive ports of pgrouter's default SNAT source ports {}-{}; set datapath.snat_ports to a range without listener ports",
            snat.first, snat.last)),
    }
}

/// `base-N` within the 64 characters a name may have (`base` shortened when needed).
pub(super) fn with_suffix(base: &str, n: usize) -> String {
    let suffix = format!("-{n}");
    let head: String = base
        .chars()
        .take(64usize.saturating_sub(suffix.len()))
        .collect();
    format!("{head}{suffix}")
}

/// `first` unless `taken`, else the first `base-N` (from `n` on) that is not.
pub(super) fn free_name(
    first: String,
    base: &str,
    mut n: usize,
    taken: impl Fn(&str) -> bool,
) -> String {
    if !taken(&first) {
        return first;
    }
    loop {
        let name = with_suffix(base, n);
        if !taken(&name) {
            return name;
        }
        n += 1;
    }
}

/// A name pgrouter accepts (`A-Z a-z 0-9 - _ .`, 1..=64).
pub(super) fn sanitize(name: &str) -> String {
    let mut s: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') {
                c
            } else {
                '_'
            }
        })
        .take(64)
        .collect();
    if s.is_empty() {
        s.push_str("unnamed");
    }
    s
}

/// The word the config uses for an enum value (`"read-only"`, `"keep"`), for messages: the
/// config's own serde names, so the two never drift apart.
pub(super) fn config_word(v: impl serde::Serialize) -> String {
    match serde_json::to_value(v) {
        Ok(serde_json::Value::String(s)) => s,
        _ => String::new(),
    }
}

/// A duration in its largest whole unit (`3s`, `1500ms`, `2m`), as HAProxy users write them;
/// `config::units::parse_duration` reads it.
pub(super) fn fmt_duration(d: Duration) -> String {
    let us = d.as_micros();
    if us == 0 {
        "0ms".into()
    } else if us.is_multiple_of(3_600_000_000) {
        format!("{}h", us / 3_600_000_000)
    } else if us.is_multiple_of(60_000_000) {
        format!("{}m", us / 60_000_000)
    } else if us.is_multiple_of(1_000_000) {
        format!("{}s", us / 1_000_000)
    } else if us.is_multiple_of(1_000) {
        format!("{}ms", us / 1_000)
    } else {
        format!("{us}us")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_durations() {
        assert_eq!(
            sanitize("postgresql_10.5.5.147_5432"),
            "postgresql_10.5.5.147_5432"
        );
        assert_eq!(sanitize("pg a/b"), "pg_a_b");
        assert_eq!(fmt_duration(Duration::from_millis(3000)), "3s");
        assert_eq!(fmt_duration(Duration::from_millis(1500)), "1500ms");
        assert_eq!(fmt_duration(Duration::from_secs(120)), "2m");
    }
}
