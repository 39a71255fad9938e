//! `[[cluster.listener]]`: per frontend/listen, the kind (from its pool's check), limits,
//! balance, fallback, and one listener per bound VIP:port (`bind *` means keepalived's VIPs).
use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use super::super::haproxy;
use super::proxies::Proxy;
use super::role::{Role, role_of};
use super::{
    Inputs, PLACEHOLDER_VIP, Place, Route, Sink, Source, State, config_word, free_name, sanitize,
    with_suffix,
};
use crate::config::{Fallback, ListenerKind, MAX_LISTENERS, OnMarkedDown, raw};
use crate::model::Balance;

/// A read listener's fallback as the source has it.
#[derive(Clone, Copy, PartialEq, Eq)]
enum FallbackFound {
    /// `use_backend LEADER if { nbsrv(POOL) eq 0 }`: `fallback = "primary"`.
    Primary,
    /// None (or none usable): left out, suggested in a comment.
    Missing,
}

/// Listeners of a cluster: kind, fallback, limits and one listener per bound VIP:port.
pub(super) fn cluster_listeners(
    inp: &Inputs<'_>,
    st: &mut State,
    sink: &mut Sink,
    ci: usize,
    route_ids: &[usize],
    node_by_addr: &BTreeMap<String, usize>,
    cluster: &mut raw::Cluster,
) {
    let hsrc = inp.hsrc;
    let all_nodes: BTreeSet<String> = node_by_addr.keys().cloned().collect();
    for &ri in route_ids {
        let Some((r, f, pool)) = inp.route(ri) else {
            continue;
        };
        let li0 = cluster.listener.len();
        let place = Place::Listener(ci, li0);
        let first_warning = sink.warnings.len();
        let role = role_of(pool, hsrc, &place, sink);
        let here = Here {
            hsrc,
            f,
            pool,
            place: place.clone(),
        };
        let mut source = vec![if r.front == r.pool {
            format!("HAProxy `listen {}` ({}:{})", f.name, hsrc.path, f.line)
        } else {
            format!(
                "HAProxy `frontend {}` ({}:{}) → `backend {}` ({}:{})",
                f.name, hsrc.path, f.line, pool.name, hsrc.path, pool.line
            )
        }];
        let c = &pool.check;
        if c.http {
            source.push(format!(
                "check: {} {}{}",
                c.method.as_deref().unwrap_or("OPTIONS"),
                c.uri.as_deref().unwrap_or("/"),
                pool.expect
                    .as_ref()
                    .map(|(_, e)| format!(", expect {e}"))
                    .unwrap_or_default()
            ));
        }
        // Servers that differ from the cluster's node set.
        let mine: BTreeSet<String> = pool.servers.iter().map(|s| s.addr.clone()).collect();
        let missing: Vec<&String> = all_nodes.difference(&mine).collect();
        if !missing.is_empty() {
            sink.warn(hsrc.path, pool.line, place.clone(), format!(
                    "`{}` forwards only to {} of the cluster's {} servers (not to {}); pgrouter considers every node of the cluster for every listener, by the role Patroni reports",
                    pool.name, mine.len(), all_nodes.len(),
                    missing.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(", ")));
        }
        let (maxconn, on_marked_down, balance) = limits(&here, r.front == r.pool, sink);
        let fallback = fallback_of(&here, inp, r, &role, &mine, &mut source, sink);
        // One listener per bind address (and per VIP for `*`).
        let mut made = 0usize;
        for (bline, b) in &f.binds {
            let addr = match haproxy::parse_bind_addr(b) {
                Ok(a) => a,
                Err(e) => {
                    sink.warn(
                        hsrc.path,
                        *bline,
                        place.clone(),
                        format!("bind {b}: {e}; not translated"),
                    );
                    continue;
                }
            };
            let (p0, p1) = addr.ports;
            if p1 != p0 {
                sink.warn(
                    hsrc.path,
                    *bline,
                    place.clone(),
                    format!("bind {b}: a port range becomes one listener per port ({p0}..={p1})"),
                );
            }
            let hosts = bind_vips(
                &here,
                inp,
                cluster,
                (*bline, b),
                addr.host.as_deref(),
                &mut source,
                sink,
            );
            'binds: for vip in &hosts {
                for port in p0..=p1 {
                    if st.listeners >= MAX_LISTENERS {
                        sink.warn(hsrc.path, *bline, place.clone(), format!(
                            "bind {b}: the data path serves at most {MAX_LISTENERS} listeners; {} and the rest of this bind are left out",
                            std::net::SocketAddr::new(*vip, port)));
                        break 'binds;
                    }
                    if !st.bind_seen.insert((*vip, port)) {
                        sink.warn(
                            hsrc.path,
                            *bline,
                            place.clone(),
                            format!("{vip}:{port} is bound twice; the second is left out"),
                        );
                        continue;
                    }
                    let base = sanitize(&f.name);
                    let first = if made == 0 {
                        base.clone()
                    } else {
                        with_suffix(&base, made + 1)
                    };
                    let name = free_name(first, &base, made + 2, |n| {
                        cluster.listener.iter().any(|l| l.name == n)
                    });
                    made += 1;
                    let listener = raw::Listener {
                        name,
                        vip: *vip,
                        port,
                        kind: role.kind,
                        maxconn,
                        balance,
                        on_marked_down,
                        on_empty: raw::OnEmptyKind::default(),
                        empty_hold: None,
                        fallback: (fallback == Some(FallbackFound::Primary))
                            .then_some(Fallback::Primary),
                        lag: role.lag.clone().map(raw::Lag::Text),
                        snat: None,
                    };
                    if vip.is_ipv6() {
                        leave_out_ipv6(&here, st, sink, cluster, (*bline, b), &listener);
                        continue;
                    }
                    let lplace = Place::Listener(ci, cluster.listener.len());
                    for line in &source {
                        sink.notes.above(lplace.clone(), line.clone());
                    }
                    if fallback == Some(FallbackFound::Missing) {
                        sink.notes.suggest(
                            lplace,
                            "fallback",
                            "fallback = \"primary\"           # not in the source: reads fail while no replica is up",
                        );
                    }
                    cluster.listener.push(listener);
                    st.listeners += 1;
                }
            }
        }
        report_unknown(inp, st, r, &place, sink);
        if f.binds.is_empty() || made == 0 {
            sink.warn(
                hsrc.path,
                f.line,
                place.clone(),
                format!("`{}`: no usable bind address; no listener", f.name),
            );
        }
        if cluster.listener.len() == li0 {
            // No listener came of this section: its warnings belong to the cluster, not to
            // the listener the next section writes at this index.
            for w in sink.warnings.iter_mut().skip(first_warning) {
                if w.place == place {
                    w.place = Place::Cluster(ci);
                }
            }
        }
    }
}

/// The data path serves IPv4 only: a listener on an IPv6 VIP is written commented out, with
/// a warning, instead of a config check-config refuses.
fn leave_out_ipv6(
    h: &Here<'_>,
    st: &mut State,
    sink: &mut Sink,
    cluster: &raw::Cluster,
    (bline, b): (usize, &str),
    l: &raw::Listener,
) {
    let sa = std::net::SocketAddr::new(l.vip, l.port).to_string();
    let bind = if sa == b {
        format!("bind {b}")
    } else {
        format!("bind {b} ({sa})")
    };
    let why = format!(
        "`{}` {bind}: IPv6 listeners are not served by the data path yet (IPv4 only)",
        h.f.name
    );
    let ci = match h.place {
        Place::Listener(ci, _) => ci,
        _ => 0,
    };
    sink.warn(
        h.hsrc.path,
        bline,
        Place::Cluster(ci),
        format!(
            "{why}; listener `{}` is commented out at the end of the file",
            l.name
        ),
    );
    if let Ok(body) = toml::to_string(l) {
        sink.notes.left_out(&format!(
            "# listener of [[cluster]] {:?}:\n[[cluster.listener]]\n{body}",
            cluster.name
        ));
    }
    st.refused.push(why);
}

/// One frontend/listen being translated: its sections, and where its warnings go.
struct Here<'a> {
    hsrc: &'a Source<'a>,
    f: &'a Proxy,
    pool: &'a Proxy,
    place: Place,
}

/// maxconn (per server), on-marked-down and balance of a listener.
fn limits(h: &Here<'_>, own_listen: bool, sink: &mut Sink) -> (u32, OnMarkedDown, Balance) {
    let (hsrc, f, pool, place) = (h.hsrc, h.f, h.pool, &h.place);
    // maxconn: per server.
    let maxconns: BTreeSet<u32> = pool
        .servers
        .iter()
        .map(|s| s.opts.maxconn.unwrap_or(0))
        .collect();
    let maxconn = maxconns.iter().next_back().copied().unwrap_or(0);
    if maxconns.len() > 1 {
        sink.warn(hsrc.path, pool.line, place.clone(), format!(
                "servers of `{}` have different maxconn ({:?}); pgrouter has one per listener, set to the largest, {maxconn}",
                pool.name, maxconns));
    }
    let sections: Vec<&Proxy> = if own_listen { vec![f] } else { vec![f, pool] };
    for p in &sections {
        if let Some((line, m)) = &p.maxconn {
            sink.warn(hsrc.path, *line, place.clone(), format!(
                    "`maxconn {m}` on `{}` limits the whole proxy; pgrouter limits connections per node only (listener maxconn = {maxconn})", p.name));
        }
    }
    // on-marked-down.
    let omd: BTreeSet<Option<String>> = pool
        .servers
        .iter()
        .map(|s| s.opts.on_marked_down.clone())
        .collect();
    let on_marked_down = match omd.iter().next() {
        Some(Some(a)) if a == "shutdown-sessions" => OnMarkedDown::ShutdownSessions,
        Some(Some(a)) => {
            sink.warn(
                hsrc.path,
                pool.line,
                place.clone(),
                format!(
                    "`on-marked-down {a}` has no pgrouter equivalent; on_marked_down = \"keep\""
                ),
            );
            OnMarkedDown::Keep
        }
        _ => OnMarkedDown::Keep,
    };
    if omd.len() > 1 {
        sink.warn(hsrc.path, pool.line, place.clone(), format!(
                "servers of `{}` differ in on-marked-down; pgrouter has one setting per listener: {}", pool.name, config_word(on_marked_down)));
    }
    if let Some(s) = pool.servers.iter().find(|s| s.opts.on_marked_up.is_some()) {
        sink.warn(
            hsrc.path,
            s.line,
            place.clone(),
            format!(
                "`on-marked-up {}` has no pgrouter equivalent; dropped",
                s.opts.on_marked_up.as_deref().unwrap_or_default()
            ),
        );
    }
    // balance.
    let balance = match pool.balance.as_ref().or(f.balance.as_ref()) {
        None => Balance::RoundRobin,
        Some((_, b)) => match b.as_str() {
            "roundrobin" | "static-rr" => Balance::RoundRobin,
            "leastconn" => Balance::LeastConn,
            "source" => Balance::SourceHash,
            other => {
                let line = pool
                    .balance
                    .as_ref()
                    .or(f.balance.as_ref())
                    .map_or(pool.line, |(l, _)| *l);
                sink.warn(hsrc.path, line, place.clone(), format!(
                        "`balance {other}` has no pgrouter equivalent (roundrobin, leastconn, source); set to roundrobin"));
                Balance::RoundRobin
            }
        },
    };
    (maxconn, on_marked_down, balance)
}

/// The fallback rule of a read listener; a source line for it goes to `source`.
fn fallback_of(
    h: &Here<'_>,
    inp: &Inputs<'_>,
    r: &Route,
    role: &Role,
    mine: &BTreeSet<String>,
    source: &mut Vec<String>,
    sink: &mut Sink,
) -> Option<FallbackFound> {
    let (hsrc, f, pool, place) = (h.hsrc, h.f, h.pool, &h.place);
    let Inputs {
        proxies, by_name, ..
    } = *inp;
    // Fallback.
    let mut fallback = None;
    if let Some((ub, target, counted)) = &r.fallback {
        let own = &pool.name;
        if counted != own {
            let exists = by_name.contains_key(counted.as_str());
            sink.warn(hsrc.path, ub.line, place.clone(), format!(
                    "`use_backend {} if {{ nbsrv({counted}) eq 0 }}` counts `{counted}`{}, but `{}`'s servers are in `{own}`: HAProxy falls back on the wrong condition (stale name?). \
                     pgrouter's fallback always watches the listener's own replicas",
                    ub.backend,
                    if exists { "" } else { ", which does not exist" },
                    f.name));
        }
        match target.and_then(|t| proxies.get(t)) {
            Some(tp) => {
                let tplace = place.clone();
                // Only its kind matters here; its own warnings are not this listener's.
                let mut scratch = Sink::default();
                let trole = role_of(tp, hsrc, &tplace, &mut scratch);
                if trole.kind == ListenerKind::Primary && tp.check.http && !tp.check.lone_method {
                    if role.kind == ListenerKind::Replica {
                        fallback = Some(FallbackFound::Primary);
                        source.push(format!(
                            "fallback: `use_backend {} {}` → `backend {}` ({}:{}, leader check)",
                            ub.backend,
                            ub.cond.join(" "),
                            tp.name,
                            hsrc.path,
                            tp.line
                        ));
                        let theirs: BTreeSet<String> =
                            tp.servers.iter().map(|s| s.addr.clone()).collect();
                        if theirs != *mine {
                            sink.warn(hsrc.path, tp.line, place.clone(), format!(
                                    "fallback backend `{}` has other servers than `{}`; pgrouter falls back to the cluster's primary, whichever node it is",
                                    tp.name, pool.name));
                        }
                    } else {
                        sink.warn(hsrc.path, ub.line, place.clone(), format!(
                                "fallback to the leader on a {} listener: pgrouter has fallback only for kind = \"replica\"; dropped", config_word(role.kind)));
                    }
                } else {
                    sink.warn(hsrc.path, ub.line, place.clone(), format!(
                            "fallback backend `{}` does not check for the leader (`{}`); pgrouter can only fall back to the primary; left out",
                            tp.name, tp.check.uri.as_deref().unwrap_or("no http check")));
                }
            }
            None => {
                if role.kind == ListenerKind::Replica {
                    fallback = Some(FallbackFound::Missing);
                }
            }
        }
    }
    if role.kind == ListenerKind::Replica && fallback != Some(FallbackFound::Primary) {
        sink.warn(hsrc.path, pool.line, place.clone(), format!(
                "read listener `{}` has no fallback: reads fail while no replica is up, although the primary could serve them; consider fallback = \"primary\" (commented out below)",
                f.name));
        fallback = Some(FallbackFound::Missing);
    }
    fallback
}

/// The VIPs one `bind` line means: its address, or keepalived's VIPs for `*`, or a placeholder.
fn bind_vips(
    h: &Here<'_>,
    inp: &Inputs<'_>,
    cluster: &raw::Cluster,
    (bline, b): (usize, &str),
    host: Option<&str>,
    source: &mut Vec<String>,
    sink: &mut Sink,
) -> Vec<IpAddr> {
    let (hsrc, place) = (h.hsrc, &h.place);
    let Inputs { ksrc, vips, .. } = *inp;
    match host {
        Some(h) => match h.parse::<IpAddr>() {
            Ok(ip) if ip.is_ipv6() && cluster.node.first().is_some_and(|n| n.host.is_ipv4()) => {
                // The data path serves IPv4 only: an IPv6 bind over IPv4 servers becomes the
                // IPv4 VIP when keepalived has exactly one; otherwise it is left out.
                let mut v4: Vec<IpAddr> = vips
                    .iter()
                    .map(|(_, v)| *v)
                    .filter(IpAddr::is_ipv4)
                    .collect();
                v4.sort();
                v4.dedup();
                match v4.as_slice() {
                    [only] => {
                        sink.warn(hsrc.path, bline, place.clone(), format!(
                            "bind {b}: IPv6 listeners are not served by the data path yet (IPv4 only); the servers are IPv4, so this listener takes keepalived's only IPv4 VIP {only} instead of {ip} — IPv6 clients must connect to {only}"));
                        vec![*only]
                    }
                    _ => vec![ip],
                }
            }
            Ok(ip) => {
                if ksrc.is_some() && !vips.iter().any(|(_, v)| *v == ip) {
                    sink.warn(hsrc.path, bline, place.clone(), format!(
                                "HAProxy binds {ip}, which is not a keepalived virtual_ipaddress ({}); pgrouter serves it as a VIP anyway — check which address clients use",
                                if vips.is_empty() { "none".to_owned() } else { vips.iter().map(|(_, v)| v.to_string()).collect::<Vec<_>>().join(", ") }));
                } else if ksrc.is_none() {
                    sink.warn(hsrc.path, bline, Place::Datapath, format!(
                                "{ip} is used as the VIP; without a keepalived.conf no [[vrrp]] instance moves it (add one, or manage it elsewhere)"));
                }
                vec![ip]
            }
            Err(_) => {
                sink.warn(hsrc.path, bline, place.clone(), format!(
                            "bind {b}: {h:?} is not an IP address; replace the placeholder {PLACEHOLDER_VIP}"));
                vec![IpAddr::V4(PLACEHOLDER_VIP)]
            }
        },
        None if vips.is_empty() => {
            sink.warn(hsrc.path, bline, place.clone(), format!(
                    "bind {b} listens on every address; pgrouter serves one VIP per listener and no keepalived.conf names it (--keepalived): replace the placeholder {PLACEHOLDER_VIP}"));
            vec![IpAddr::V4(PLACEHOLDER_VIP)]
        }
        None => {
            let nodes_family = cluster.node.first().map(|n| n.host.is_ipv4());
            let mut v: Vec<IpAddr> = vips
                .iter()
                .filter(|(_, ip)| nodes_family.is_none_or(|f4| ip.is_ipv4() == f4))
                .map(|(_, ip)| *ip)
                .collect();
            v.dedup();
            if v.is_empty() {
                sink.warn(hsrc.path, bline, place.clone(), format!(
                        "bind {b}: keepalived has no VIP of the nodes' address family; replace the placeholder {PLACEHOLDER_VIP}"));
                v.push(IpAddr::V4(PLACEHOLDER_VIP));
            } else {
                source.push(format!("bind {b}: the VIP from keepalived's virtual_ipaddress (pgrouter serves only the VIP, not the host's own addresses)"));
            }
            v
        }
    }
}

/// Warnings for directives pgrouter does not know: the frontend, its pool and its fallback
/// backend, each once even when several listeners share it.
fn report_unknown(inp: &Inputs<'_>, st: &mut State, r: &Route, place: &Place, sink: &mut Sink) {
    let hsrc = inp.hsrc;
    let proxies = inp.proxies;
    let mut involved = vec![r.front, r.pool];
    if let Some((_, Some(t), _)) = &r.fallback {
        involved.push(*t);
    }
    for pi in involved {
        if !st.reported.insert(pi) {
            continue;
        }
        let Some(p) = proxies.get(pi) else {
            continue;
        };
        for d in &p.unknown {
            sink.warn(
                hsrc.path,
                d.line,
                place.clone(),
                format!("`{}` in `{}` is not translated", d.words.join(" "), p.name),
            );
        }
        for d in &p.dropped {
            if !st.dropped.contains(d) {
                st.dropped.push(d.clone());
            }
        }
    }
}
