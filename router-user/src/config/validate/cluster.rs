//! `[[cluster]]`: health timing, the Patroni API, nodes and listeners, and what must be
//! unique across clusters.
use std::collections::HashMap;
use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use super::super::span::Seg;
use super::super::units::{DurationText, patroni_parse_bytes};
use super::super::{
    Api, Checks, Cluster, Datapath, Fallback, Health, Lag, Listener, ListenerKind, Node, OnEmpty,
    Scheme, StaticRole, raw,
};
use super::{Ctx, p};

/// Shorter than this and checks become a self-inflicted load test of Patroni.
pub const MIN_CHECK_PERIOD: Duration = Duration::from_millis(10);
/// A held SYN is retransmitted by the client (1 s, 3 s, 7 s, …); beyond a minute every
/// client library has given up anyway, and the hold only hides the outage.
const MAX_EMPTY_HOLD: Duration = Duration::from_secs(60);
/// More than this many consecutive results is almost certainly a typo (HAProxy has no limit).
pub const MAX_RISE_FALL: u32 = 1000;
/// Nodes per cluster: every node is a backend of each of the cluster's listeners, and a
/// listener's backend set holds at most this many (`router_ebpf::MAX_SET`).
pub const MAX_NODES: usize = router_ebpf::MAX_SET;
/// Listeners in one file: the data path's service map holds this many (`MAX_SERVICES`).
pub const MAX_LISTENERS: usize = router_ebpf::MAX_SERVICES as usize;
/// Backend entries (every listener's nodes, summed over the listeners): the size of the
/// data path's backend array (`MAX_BACKENDS`).
pub const MAX_BACKEND_ENTRIES: usize = router_ebpf::MAX_BACKENDS as usize;

/// Every cluster, then the names and VIP:ports that must be unique across them.
pub(super) fn clusters(ctx: &mut Ctx<'_>, raw: Vec<raw::Cluster>, dp: &Datapath) -> Vec<Cluster> {
    let clusters: Vec<Cluster> = raw
        .into_iter()
        .enumerate()
        .map(|(i, c)| cluster(ctx, i, c, dp))
        .collect();
    cross_cluster(ctx, &clusters);
    limits(ctx, &clusters);
    clusters
}

/// What the data path's maps hold (the planner refuses more): listeners in the file, and
/// backend entries, one per node of each listener's cluster. Nodes per cluster are checked
/// with the cluster. Each limit is reported once, at the first listener beyond it.
fn limits(ctx: &mut Ctx<'_>, clusters: &[Cluster]) {
    let mut listeners = 0usize;
    let mut entries = 0usize;
    let mut listeners_reported = false;
    for (ci, c) in clusters.iter().enumerate() {
        for li in 0..c.listeners.len() {
            listeners += 1;
            entries += c.nodes.len();
            if listeners == MAX_LISTENERS + 1 && !listeners_reported {
                listeners_reported = true;
                ctx.err(
                    p!["cluster", ci, "listener", li],
                    format!(
                        "more than {MAX_LISTENERS} listeners: the data path serves at most \
                         {MAX_LISTENERS} (router_ebpf::MAX_SERVICES); this is listener {listeners}"
                    ),
                );
            }
            if entries > MAX_BACKEND_ENTRIES && entries - c.nodes.len() <= MAX_BACKEND_ENTRIES {
                ctx.err(
                    p!["cluster", ci, "listener", li],
                    format!(
                        "more than {MAX_BACKEND_ENTRIES} backend entries: every listener takes one \
                         per node of its cluster, and with this listener's {} the file needs \
                         {entries}; the data path holds at most {MAX_BACKEND_ENTRIES} \
                         (router_ebpf::MAX_BACKENDS)",
                        c.nodes.len()
                    ),
                );
            }
        }
    }
}

/// A health-check period: at least [`MIN_CHECK_PERIOD`].
fn check_period(ctx: &mut Ctx<'_>, path: Vec<Seg>, text: &DurationText) -> Duration {
    match text.parse() {
        Ok(d) if d < MIN_CHECK_PERIOD => {
            ctx.err(path, format!("{text} is too short; the minimum is 10ms"));
            MIN_CHECK_PERIOD
        }
        Ok(d) => d,
        Err(e) => {
            ctx.err(path, e);
            MIN_CHECK_PERIOD
        }
    }
}

fn nonzero_port(ctx: &mut Ctx<'_>, path: Vec<Seg>, port: u16) {
    if port == 0 {
        ctx.err(path, "port 0 is not a usable port");
    }
}

fn opt_path(ctx: &mut Ctx<'_>, path: Vec<Seg>, text: &str) -> Option<PathBuf> {
    if text.is_empty() {
        return None;
    }
    let p = PathBuf::from(text);
    if !p.is_file() {
        ctx.err(path, format!("{text:?} is not a readable file"));
    }
    Some(p)
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

fn health(ctx: &mut Ctx<'_>, ci: usize, h: raw::Health) -> Health {
    let at = |k: &str| p!["cluster", ci, "health", k];
    let out = Health {
        interval: check_period(ctx, at("interval"), &h.interval),
        fastinter: check_period(ctx, at("fastinter"), &h.fastinter),
        downinter: check_period(ctx, at("downinter"), &h.downinter),
        timeout: check_period(ctx, at("timeout"), &h.timeout),
        fall: h.fall,
        rise: h.rise,
        observe_refusals: h.observe_refusals,
    };
    for (k, v) in [("fall", h.fall), ("rise", h.rise)] {
        if v == 0 {
            ctx.err(at(k), "must be at least 1");
        } else if v > MAX_RISE_FALL {
            ctx.err(
                at(k),
                format!("{v} is implausibly large (at most {MAX_RISE_FALL})"),
            );
        }
    }
    out
}

fn api(ctx: &mut Ctx<'_>, ci: usize, a: raw::Api) -> Api {
    let at = |k: &str| p!["cluster", ci, "api", k];
    nonzero_port(ctx, at("port"), a.port);
    let ca_file = opt_path(ctx, at("ca_file"), &a.ca_file);
    let cert_file = opt_path(ctx, at("cert_file"), &a.cert_file);
    let key_file = opt_path(ctx, at("key_file"), &a.key_file);
    if a.scheme == Scheme::Http {
        for (k, v) in [
            ("ca_file", &ca_file),
            ("cert_file", &cert_file),
            ("key_file", &key_file),
        ] {
            if v.is_some() {
                ctx.err(at(k), "only meaningful with scheme = \"https\"");
            }
        }
    }
    if cert_file.is_some() != key_file.is_some() {
        let k = if cert_file.is_some() {
            "cert_file"
        } else {
            "key_file"
        };
        ctx.err(
            at(k),
            "client certificates need both cert_file and key_file",
        );
    }
    let username = (!a.username.is_empty()).then_some(a.username);
    let password = (!a.password.is_empty()).then_some(a.password);
    if username.is_some() != password.is_some() {
        let k = if username.is_some() {
            "username"
        } else {
            "password"
        };
        ctx.err(at(k), "basic auth needs both username and password");
    }
    Api {
        scheme: a.scheme,
        port: a.port,
        ca_file,
        cert_file,
        key_file,
        username,
        password,
    }
}

fn cluster(ctx: &mut Ctx<'_>, ci: usize, c: raw::Cluster, dp: &Datapath) -> Cluster {
    if !valid_name(&c.name) {
        ctx.err(
            p!["cluster", ci, "name"],
            format!("{:?}: use 1-64 characters from A-Z a-z 0-9 - _ .", c.name),
        );
    }
    let health = health(ctx, ci, c.health);
    let api = api(ctx, ci, c.api);
    if c.node.is_empty() {
        ctx.err(p!["cluster", ci, "name"], "cluster has no [[cluster.node]]");
    }
    if c.listener.is_empty() {
        ctx.err(
            p!["cluster", ci, "name"],
            "cluster has no [[cluster.listener]]",
        );
    }
    if c.node.len() > MAX_NODES {
        ctx.err(
            p!["cluster", ci, "node", MAX_NODES],
            format!(
                "more than {MAX_NODES} nodes: each listener forwards to at most {MAX_NODES} \
                 (router_ebpf::MAX_SET); this cluster has {}",
                c.node.len()
            ),
        );
    }
    let nodes = nodes(ctx, ci, c.node, c.checks, &api);
    let mut lnames = HashMap::new();
    let mut listeners = Vec::new();
    for (li, l) in c.listener.into_iter().enumerate() {
        if let Some(prev) = lnames.insert(l.name.clone(), li) {
            ctx.err(
                p!["cluster", ci, "listener", li, "name"],
                format!(
                    "duplicate listener name {:?} (also listener[{prev}])",
                    l.name
                ),
            );
        }
        listeners.push(listener(ctx, ci, li, l, &nodes, dp));
    }
    Cluster {
        name: c.name,
        checks: c.checks,
        health,
        api,
        nodes,
        listeners,
    }
}

/// `[[cluster.node]]`: names, addresses, roles and TLS names.
fn nodes(
    ctx: &mut Ctx<'_>,
    ci: usize,
    raw: Vec<raw::Node>,
    checks: Checks,
    api: &Api,
) -> Vec<Node> {
    let mut names = HashMap::new();
    let mut endpoints = HashMap::new();
    let mut tls_names = HashMap::new();
    let mut primaries = 0;
    let mut nodes = Vec::new();
    for (ni, n) in raw.into_iter().enumerate() {
        let at = |k: &str| p!["cluster", ci, "node", ni, k];
        if !valid_name(&n.name) {
            ctx.err(
                at("name"),
                format!("{:?}: use 1-64 characters from A-Z a-z 0-9 - _ .", n.name),
            );
        }
        if let Some(prev) = names.insert(n.name.clone(), ni) {
            ctx.err(
                at("name"),
                format!("duplicate node name {:?} (also node[{prev}])", n.name),
            );
        }
        nonzero_port(ctx, at("port"), n.port);
        if let Some(0) = n.api_port {
            nonzero_port(ctx, at("api_port"), 0);
        }
        if let Some(prev) = endpoints.insert((n.host, n.port), ni) {
            ctx.err(at("host"), format!("same address and port as node[{prev}]"));
        }
        if n.host.is_unspecified() || n.host.is_multicast() {
            ctx.err(
                at("host"),
                format!("{} is not a unicast host address", n.host),
            );
        }
        match (checks, n.role) {
            (Checks::Patroni, Some(_)) => {
                ctx.err(at("role"), "role is only allowed with checks = \"static\"; Patroni decides roles")
            }
            (Checks::Static, None) => ctx.err(
                at("name"),
                "checks = \"static\" needs role = \"primary\" | \"replica\" | \"down\" on every node",
            ),
            (Checks::Static, Some(StaticRole::Primary)) => primaries += 1,
            _ => {}
        }
        if let Some(t) = &n.tls_name {
            if api.scheme != Scheme::Https {
                ctx.err(
                    at("tls_name"),
                    "only meaningful with api.scheme = \"https\"",
                );
            }
            let ok = !t.is_empty()
                && t.len() <= 253
                && t.parse::<IpAddr>().is_err()
                && t.split('.').all(|l| {
                    !l.is_empty()
                        && l.len() <= 63
                        && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
                });
            if !ok {
                ctx.err(at("tls_name"), format!("{t:?} is not a DNS name"));
            } else if let Some(prev) = tls_names.insert(t.to_ascii_lowercase(), ni) {
                ctx.err(at("tls_name"), format!("same tls_name as node[{prev}]"));
            }
        }
        nodes.push(Node {
            name: n.name,
            host: n.host,
            port: n.port,
            api_port: n.api_port.unwrap_or(api.port),
            role: n.role,
            tls_name: n.tls_name,
        });
    }
    if primaries > 1 {
        ctx.err(
            p!["cluster", ci, "checks"],
            format!("{primaries} nodes have role = \"primary\"; at most one may"),
        );
    }
    nodes
}

/// One `[[cluster.listener]]` (its name's uniqueness is checked by the caller).
fn listener(
    ctx: &mut Ctx<'_>,
    ci: usize,
    li: usize,
    l: raw::Listener,
    nodes: &[Node],
    dp: &Datapath,
) -> Listener {
    let at = |k: &str| p!["cluster", ci, "listener", li, k];
    if !valid_name(&l.name) {
        ctx.err(
            at("name"),
            format!("{:?}: use 1-64 characters from A-Z a-z 0-9 - _ .", l.name),
        );
    }
    nonzero_port(ctx, at("port"), l.port);
    if dp.snat_ports.contains(l.port) {
        ctx.err(
            at("port"),
            format!(
                "{} is inside datapath.snat_ports {}-{}; replies to SNATed flows would hit the listener",
                l.port, dp.snat_ports.first, dp.snat_ports.last
            ),
        );
    }
    if l.vip.is_unspecified() || l.vip.is_multicast() || l.vip.is_loopback() {
        ctx.err(at("vip"), format!("{} cannot be a virtual IP", l.vip));
    }
    let fallback = match (l.kind, l.fallback) {
        (ListenerKind::Replica, f) => f.unwrap_or(Fallback::None),
        (_, Some(_)) => {
            ctx.err(at("fallback"), "fallback is only for kind = \"replica\"");
            Fallback::None
        }
        (_, None) => Fallback::None,
    };
    let lag = match (&l.lag, l.kind) {
        (None, _) => None,
        (Some(_), ListenerKind::Primary) => {
            ctx.err(
                at("lag"),
                "lag is only for kind = \"replica\" or \"read-only\"",
            );
            None
        }
        (Some(lag), _) => {
            let text = match lag {
                raw::Lag::Int(i) => i.to_string(),
                raw::Lag::Text(t) => t.clone(),
            };
            match patroni_parse_bytes(&text) {
                Some(b) if b >= 0 => Some(Lag {
                    bytes: b as u64,
                    text,
                }),
                Some(_) => {
                    ctx.err(
                        at("lag"),
                        format!("{text:?} is negative; every replica would count as lagging"),
                    );
                    None
                }
                None => {
                    ctx.err(
                        at("lag"),
                        format!(
                            "{text:?} is not a size Patroni understands (bytes, or a number with \
                             B, kB, MB, GB or TB, case-sensitive); Patroni would silently ignore it"
                        ),
                    );
                    None
                }
            }
        }
    };
    let on_empty = match (l.on_empty, &l.empty_hold) {
        (raw::OnEmptyKind::Reject, Some(_)) => {
            ctx.err(
                at("empty_hold"),
                "only meaningful with on_empty = \"hold\"; on_empty = \"reject\" answers at once",
            );
            OnEmpty::Reject
        }
        (raw::OnEmptyKind::Reject, None) => OnEmpty::Reject,
        (raw::OnEmptyKind::Hold, None) => OnEmpty::default(),
        (raw::OnEmptyKind::Hold, Some(text)) => match text.parse() {
            Ok(d) if d > MAX_EMPTY_HOLD => {
                ctx.err(
                    at("empty_hold"),
                    format!(
                        "{text} is too long; at most {}s (clients have given up by then)",
                        MAX_EMPTY_HOLD.as_secs()
                    ),
                );
                OnEmpty::default()
            }
            Ok(d) if d < Duration::from_millis(1) => {
                ctx.err(
                    at("empty_hold"),
                    format!("{text} is below 1ms; to answer at once write on_empty = \"reject\""),
                );
                OnEmpty::default()
            }
            Ok(d) => OnEmpty::Hold(d),
            Err(e) => {
                ctx.err(at("empty_hold"), e);
                OnEmpty::default()
            }
        },
    };
    let snat = l.snat.unwrap_or(l.vip);
    if let Some(s) = l.snat
        && (s.is_unspecified() || s.is_multicast())
    {
        ctx.err(at("snat"), format!("{s} cannot be a source address"));
    }
    if l.vip.is_ipv6() {
        // The planner refuses it; the daemon would start and serve nothing on it.
        ctx.err(
            at("vip"),
            format!(
                "{}: IPv6 listeners are not served by the data path yet (IPv4 VIPs only)",
                l.vip
            ),
        );
    }
    for (ni, n) in nodes.iter().enumerate() {
        if n.host.is_ipv4() != l.vip.is_ipv4() || n.host.is_ipv4() != snat.is_ipv4() {
            ctx.err(
                at("vip"),
                format!(
                    "address family differs from node[{ni}] {} (no NAT between IPv4 and IPv6)",
                    n.host
                ),
            );
            break;
        }
        if n.host == l.vip {
            ctx.err(at("vip"), format!("the VIP is node[{ni}]'s own address"));
        }
    }
    Listener {
        name: l.name,
        vip: l.vip,
        port: l.port,
        kind: l.kind,
        maxconn: l.maxconn,
        balance: l.balance,
        on_marked_down: l.on_marked_down,
        on_empty,
        fallback,
        lag,
        snat,
    }
}

fn cross_cluster(ctx: &mut Ctx<'_>, clusters: &[Cluster]) {
    let mut names: HashMap<&str, usize> = HashMap::new();
    // (vip, port) → the first listener binding it: cluster index, listener index, names.
    let mut binds: HashMap<(IpAddr, u16), (usize, usize, &str, &str)> = HashMap::new();
    for (ci, c) in clusters.iter().enumerate() {
        if let Some(prev) = names.insert(&c.name, ci) {
            ctx.err(
                p!["cluster", ci, "name"],
                format!("duplicate cluster name {:?} (also cluster[{prev}])", c.name),
            );
        }
        for (li, l) in c.listeners.iter().enumerate() {
            let first = (ci, li, c.name.as_str(), l.name.as_str());
            if let Some((pc, pl, pc_name, pl_name)) = binds.insert((l.vip, l.port), first) {
                ctx.err(
                    p!["cluster", ci, "listener", li, "port"],
                    format!(
                        "{}:{} is already used by cluster[{pc}].listener[{pl}] ({pc_name}/{pl_name})",
                        l.vip, l.port
                    ),
                );
            }
        }
    }
}
