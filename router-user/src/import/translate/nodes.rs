//! HAProxy servers → `[[cluster.node]]` (one per address, across the cluster's pools) and
//! `[cluster.api]` (the Patroni REST API: check port, TLS).
use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr};

use super::{Inputs, PLACEHOLDER_NODE_BASE, Place, Sink, State, free_name, sanitize};
use crate::config::{MAX_NODES, Scheme, raw};

/// `host:port` of a server → (host, port).
fn split_host_port(addr: &str) -> (String, Option<u16>) {
    let a = addr
        .strip_prefix("ipv4@")
        .or_else(|| addr.strip_prefix("ipv6@"))
        .unwrap_or(addr);
    if let Some(rest) = a.strip_prefix('[') {
        if let Some((h, p)) = rest.split_once("]:") {
            return (h.to_owned(), p.parse().ok());
        }
        return (rest.trim_end_matches(']').to_owned(), None);
    }
    if a.parse::<IpAddr>().is_ok() {
        return (a.to_owned(), None);
    }
    match a.rsplit_once(':') {
        Some((h, p)) => (h.to_owned(), p.parse().ok()),
        None => (a.to_owned(), None),
    }
}

/// Nodes: every server of every pool (and fallback pool) of a cluster, by address; the
/// API port most servers are checked on becomes `api.port`. Returns address → node index.
pub(super) fn cluster_nodes(
    inp: &Inputs<'_>,
    st: &mut State,
    sink: &mut Sink,
    ci: usize,
    route_ids: &[usize],
    cluster: &mut raw::Cluster,
) -> BTreeMap<String, usize> {
    let Inputs {
        hsrc,
        proxies,
        routes,
        ..
    } = *inp;
    let mut pools: Vec<usize> = Vec::new();
    for r in route_ids.iter().filter_map(|&ri| routes.get(ri)) {
        pools.push(r.pool);
        if let Some((_, Some(t), _)) = &r.fallback {
            pools.push(*t);
        }
    }
    let mut node_by_addr: BTreeMap<String, usize> = BTreeMap::new();
    let mut api_ports: Vec<(usize, u16)> = Vec::new();
    let mut https: Option<bool> = None;
    let mut left_out: BTreeSet<String> = BTreeSet::new();
    for pool in pools.iter().filter_map(|&pi| proxies.get(pi)) {
        for s in &pool.servers {
            let place = Place::Cluster(ci);
            for e in &s.opts.errors {
                sink.warn(
                    hsrc.path,
                    s.line,
                    place.clone(),
                    format!("server `{}`: {e}", s.name),
                );
            }
            if let Some(&ni) = node_by_addr.get(&s.addr) {
                // Same server in another pool: its check port must agree.
                // (No `port N`: HAProxy checks the server's own port.)
                let api = s.opts.check_port.or(split_host_port(&s.addr).1);
                if let Some(p) = api
                    && let Some(q) = cluster.node.get(ni).and_then(|n| n.api_port)
                    && q != p
                {
                    sink.warn(hsrc.path, s.line, place, format!(
                            "server `{}` ({}) is checked on port {p} here but on {q} elsewhere; pgrouter checks each node on one API port",
                            s.name, s.addr));
                }
                continue;
            }
            if cluster.node.len() >= MAX_NODES {
                sink.warn(hsrc.path, s.line, place.clone(), format!(
                    "server `{}` ({}): a cluster has at most {MAX_NODES} nodes (the data path forwards a listener to at most {MAX_NODES}); left out", s.name, s.addr));
                continue;
            }
            let (host, port) = split_host_port(&s.addr);
            let host = match host.parse::<IpAddr>() {
                Ok(ip) if ip.is_ipv6() => {
                    // The data path forwards IPv4 only; a node it cannot reach is left out
                    // (once, though it may be in several pools).
                    if !left_out.insert(s.addr.clone()) {
                        continue;
                    }
                    sink.warn(hsrc.path, s.line, place.clone(), format!(
                        "server `{}` ({ip}): IPv6 nodes are not served by the data path yet (IPv4 only); left out, commented out at the end of the file", s.name));
                    let node = raw::Node {
                        name: sanitize(&s.name),
                        host: ip,
                        port: port.filter(|p| *p != 0).unwrap_or(5432),
                        api_port: s.opts.check_port,
                        role: None,
                        tls_name: None,
                    };
                    if let Ok(body) = toml::to_string(&node) {
                        sink.notes.left_out(&format!(
                            "# node of [[cluster]] {:?} ({}:{}):\n[[cluster.node]]\n{body}",
                            cluster.name, hsrc.path, s.line
                        ));
                    }
                    continue;
                }
                Ok(ip) => {
                    if ip.is_loopback() {
                        sink.warn(hsrc.path, s.line, place.clone(), format!(
                                "server `{}` is on loopback ({ip}); pgrouter forwards packets over the network from the edge host, so the node needs an address the edge host routes to", s.name));
                    }
                    ip
                }
                Err(_) => {
                    st.placeholder_nodes = st.placeholder_nodes.saturating_add(1);
                    let ph = IpAddr::V4(Ipv4Addr::new(
                        192,
                        0,
                        2,
                        PLACEHOLDER_NODE_BASE.saturating_add(st.placeholder_nodes),
                    ));
                    sink.warn(hsrc.path, s.line, Place::Node(ci, cluster.node.len()), format!(
                            "server `{}` address {host:?} is a name; pgrouter needs the node's IP address (no DNS in the data path): replace the placeholder {ph}", s.name));
                    ph
                }
            };
            let port = match port {
                Some(0) => {
                    sink.warn(
                        hsrc.path,
                        s.line,
                        Place::Node(ci, cluster.node.len()),
                        format!(
                            "server `{}` has port 0, which pgrouter cannot forward to; set to 5432",
                            s.name
                        ),
                    );
                    5432
                }
                Some(p) => p,
                None => {
                    sink.warn(hsrc.path, s.line, Place::Node(ci, cluster.node.len()), format!(
                        "server `{}` has no port (HAProxy then uses the client's destination port); set to 5432", s.name));
                    5432
                }
            };
            let check_port = match (s.opts.check, s.opts.check_port) {
                (Some(false) | None, _) => {
                    sink.warn(hsrc.path, s.line, Place::Node(ci, cluster.node.len()), format!(
                            "server `{}` has no `check`: HAProxy always considers it up; pgrouter checks every node through Patroni", s.name));
                    s.opts.check_port.unwrap_or(8008)
                }
                (Some(true), Some(p)) => p,
                (Some(true), None) => {
                    sink.warn(hsrc.path, s.line, Place::Node(ci, cluster.node.len()), format!(
                            "server `{}` is checked on its PostgreSQL port {port} (no `check port N`), which is not Patroni's REST API; assumed Patroni's default 8008", s.name));
                    8008
                }
            };
            if let Some(a) = &s.opts.check_addr {
                sink.warn(hsrc.path, s.line, Place::Node(ci, cluster.node.len()), format!(
                        "server `{}` is checked at another address (`addr {a}`); pgrouter checks Patroni at the node's own address", s.name));
            }
            if s.opts.backup {
                sink.warn(hsrc.path, s.line, Place::Node(ci, cluster.node.len()), format!(
                        "server `{}` is `backup` (HAProxy used it only when every other server was down); pgrouter has no backup nodes: it serves whenever Patroni reports it in the listener's role", s.name));
            }
            if s.opts.disabled {
                sink.warn(hsrc.path, s.line, Place::Node(ci, cluster.node.len()), format!(
                        "server `{}` is `disabled`; pgrouter has no disabled nodes — remove the node if it must not serve", s.name));
            }
            if s.opts.weight.is_some_and(|w| w != 1) {
                sink.warn(
                    hsrc.path,
                    s.line,
                    Place::Node(ci, cluster.node.len()),
                    format!(
                        "server `{}` has `weight {}`; pgrouter balances nodes equally",
                        s.name,
                        s.opts.weight.unwrap_or(1)
                    ),
                );
            }
            if !s.opts.ignored.is_empty() {
                sink.warn(
                    hsrc.path,
                    s.line,
                    Place::Node(ci, cluster.node.len()),
                    format!(
                        "server `{}` options not translated: {}",
                        s.name,
                        s.opts.ignored.join(", ")
                    ),
                );
            }
            let https_here = s.opts.check_ssl;
            match https {
                    None => https = Some(https_here),
                    Some(h) if h != https_here => sink.warn(hsrc.path, s.line, Place::Cluster(ci),
                        "some servers are checked over TLS (`check-ssl`) and some not; pgrouter uses one scheme per cluster (https)"),
                    _ => {}
                }
            if https_here {
                if s.opts.verify.as_deref() == Some("none") && cluster.api.ca_file.is_empty() {
                    sink.warn(hsrc.path, s.line, Place::Cluster(ci), "`verify none` on the servers' TLS checks: pgrouter always verifies Patroni's certificate; set api.ca_file to the CA that signed it");
                }
                if let Some(ca) = &s.opts.ca_file {
                    cluster.api.ca_file = ca.clone();
                }
                if let Some(crt) = &s.opts.crt {
                    cluster.api.cert_file = crt.clone();
                    cluster.api.key_file = crt.clone();
                    sink.warn(hsrc.path, s.line, Place::Cluster(ci), format!(
                            "`crt {crt}`: HAProxy reads certificate and key from one PEM; cert_file and key_file both point to it — split them if pgrouter cannot read the key from it"));
                }
                if let Some(sni) = &s.opts.check_sni {
                    sink.warn(hsrc.path, s.line, Place::Node(ci, cluster.node.len()), format!(
                            "`check-sni {sni}`: set tls_name = {sni:?} on this node if its certificate has no IP SAN"));
                }
            }
            let base = sanitize(&s.name);
            let name = free_name(base.clone(), &base, cluster.node.len() + 1, |n| {
                cluster.node.iter().any(|x| x.name == n)
            });
            node_by_addr.insert(s.addr.clone(), cluster.node.len());
            api_ports.push((cluster.node.len(), check_port));
            sink.notes.above(
                Place::Node(ci, cluster.node.len()),
                format!("{}:{} server {}", hsrc.path, s.line, s.words_for_comment()),
            );
            cluster.node.push(raw::Node {
                name,
                host,
                port,
                api_port: Some(check_port),
                role: None,
                tls_name: None,
            });
        }
    }
    cluster.api.scheme = if https.unwrap_or(false) {
        Scheme::Https
    } else {
        Scheme::Http
    };
    // The most common API port becomes api.port; nodes keep api_port only when different.
    let mut counts: BTreeMap<u16, usize> = BTreeMap::new();
    for (_, p) in &api_ports {
        *counts.entry(*p).or_default() += 1;
    }
    if let Some((&p, _)) = counts
        .iter()
        .max_by_key(|(p, n)| (**n, std::cmp::Reverse(**p)))
    {
        cluster.api.port = p;
    }
    for n in &mut cluster.node {
        if n.api_port == Some(cluster.api.port) {
            n.api_port = None;
        }
    }

    node_by_addr
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_port() {
        assert_eq!(
            split_host_port("10.0.0.1:5432"),
            ("10.0.0.1".into(), Some(5432))
        );
        assert_eq!(
            split_host_port("[2001:db8::1]:5432"),
            ("2001:db8::1".into(), Some(5432))
        );
        assert_eq!(split_host_port("2001:db8::1"), ("2001:db8::1".into(), None));
        assert_eq!(split_host_port("pg-a:5432"), ("pg-a".into(), Some(5432)));
    }
}
