//! Which frontend/listen serves which pool (`use_backend`, `default_backend`, a listen's own
//! servers), the fallback rule `use_backend X if { nbsrv(POOL) eq 0 }`, and which routes
//! belong to one Patroni cluster.
use std::collections::{BTreeMap, BTreeSet, HashMap};

use super::super::haproxy::SectionKind;
use super::proxies::{Proxy, UseBackend};
use super::{Place, Sink, Source};

/// One pgrouter listener in the making: the frontend/listen that binds, its pool, and the
/// fallback rule if any.
pub(super) struct Route {
    pub(super) front: usize,
    pub(super) pool: usize,
    /// The `use_backend` line, the backend it names (if it exists) and the pool it counts.
    pub(super) fallback: Option<(UseBackend, Option<usize>, String)>,
}

/// Resolves a condition's words (`{ nbsrv(PG1_ro) eq 0 }` or ACL names) to the pool whose
/// emptiness it tests: `Some(pool name)` for `nbsrv(X) eq 0`, `lt 1`, `le 0`.
fn nbsrv_zero(cond: &[String], acls: &HashMap<String, Vec<String>>) -> Option<String> {
    let (kw, words) = cond.split_first()?;
    let neg = match kw.as_str() {
        "if" => false,
        "unless" => true,
        _ => return None,
    };
    if neg {
        return None;
    }
    let mut flat: Vec<String> = Vec::new();
    for w in words {
        match acls.get(w.as_str()) {
            Some(def) => flat.extend(def.iter().cloned()),
            None => flat.push(w.clone()),
        }
    }
    let flat: Vec<&str> = flat
        .iter()
        .map(String::as_str)
        .filter(|w| *w != "{" && *w != "}")
        .collect();
    let [count, op, n] = flat.as_slice() else {
        return None;
    };
    let pool = count.strip_prefix("nbsrv(")?.strip_suffix(')')?;
    match (*op, *n) {
        ("eq", "0") | ("lt", "1") | ("le", "0") => Some(pool.to_owned()),
        _ => None,
    }
}

/// Routes: every frontend/listen that binds, with its pool and fallback rule; flags names
/// that do not resolve and backends nothing uses.
pub(super) fn build_routes(
    proxies: &[Proxy],
    by_name: &HashMap<&str, usize>,
    hsrc: &Source<'_>,
    sink: &mut Sink,
) -> Vec<Route> {
    let mut routes: Vec<Route> = Vec::new();
    let mut used_as_pool: BTreeSet<usize> = BTreeSet::new();
    for (fi, f) in proxies.iter().enumerate() {
        if f.kind == SectionKind::Backend || f.binds.is_empty() {
            continue;
        }
        let place = Place::Top;
        if f.mode_http {
            sink.warn(
                hsrc.path,
                f.line,
                place,
                format!(
                    "`{} {}` is `mode http` (stats page or web service), not PostgreSQL; not translated (pgrouter status and metrics: `pgrouter status`, [control] metrics)",
                    if f.kind == SectionKind::Listen { "listen" } else { "frontend" },
                    f.name
                ),
            );
            continue;
        }
        let mut pool = None;
        let mut fallback = None;
        for ub in &f.use_backends {
            let target = by_name.get(ub.backend.as_str()).copied();
            if target.is_none() {
                sink.warn(
                    hsrc.path,
                    ub.line,
                    Place::Top,
                    format!(
                        "`use_backend {}` in `{}` names a backend that does not exist (HAProxy refuses to start); check the section names",
                        ub.backend, f.name
                    ),
                );
            }
            if ub.cond.is_empty() {
                if pool.is_none() {
                    pool = target;
                }
                continue;
            }
            match nbsrv_zero(&ub.cond, &f.acls) {
                Some(counted) if fallback.is_none() => {
                    fallback = Some((ub.clone(), target, counted));
                }
                _ => sink.warn(
                    hsrc.path,
                    ub.line,
                    Place::Top,
                    format!(
                        "`use_backend {} {}` is not translated: pgrouter only expresses the fallback `use_backend X if {{ nbsrv(POOL) eq 0 }}`",
                        ub.backend,
                        ub.cond.join(" ")
                    ),
                ),
            }
        }
        if pool.is_none() {
            if f.kind == SectionKind::Listen && !f.servers.is_empty() {
                pool = Some(fi);
            } else if let Some((line, b)) = &f.default_backend {
                match by_name.get(b.as_str()) {
                    Some(&bi) => pool = Some(bi),
                    None => sink.warn(
                        hsrc.path,
                        *line,
                        Place::Top,
                        format!(
                            "`default_backend {b}` in `{}` names a backend that does not exist (HAProxy refuses to start)",
                            f.name
                        ),
                    ),
                }
            }
        }
        let Some(pool) = pool else {
            sink.warn(
                hsrc.path,
                f.line,
                Place::Top,
                format!(
                    "`{}` binds but has no servers and no usable backend; not translated",
                    f.name
                ),
            );
            continue;
        };
        used_as_pool.insert(pool);
        if let Some((_, Some(t), _)) = &fallback {
            used_as_pool.insert(*t);
        }
        routes.push(Route {
            front: fi,
            pool,
            fallback,
        });
    }
    for (i, p) in proxies.iter().enumerate() {
        if p.kind == SectionKind::Backend && !used_as_pool.contains(&i) && !p.mode_http {
            sink.warn(
                hsrc.path,
                p.line,
                Place::Top,
                format!(
                    "backend `{}` is not used by any frontend; not translated",
                    p.name
                ),
            );
        }
    }
    routes
}

/// Clusters: routes whose pools share a server address belong to one Patroni cluster.
pub(super) fn group_routes(routes: &[Route], proxies: &[Proxy]) -> Vec<Vec<usize>> {
    // Per route: the server addresses of its pool.
    let servers: Vec<BTreeSet<&str>> = routes
        .iter()
        .map(|r| {
            proxies.get(r.pool).map_or_else(BTreeSet::new, |p| {
                p.servers.iter().map(|s| s.addr.as_str()).collect()
            })
        })
        .collect();
    let mut cluster_of: Vec<usize> = (0..routes.len()).collect();
    for (a, sa) in servers.iter().enumerate() {
        for (b, sb) in servers.iter().enumerate().take(a) {
            if !sa.is_disjoint(sb)
                && let (Some(&from), Some(&to)) = (cluster_of.get(a), cluster_of.get(b))
            {
                for c in cluster_of.iter_mut() {
                    if *c == from {
                        *c = to;
                    }
                }
            }
        }
    }
    let mut groups: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
    for (ri, c) in cluster_of.iter().enumerate() {
        groups.entry(*c).or_default().push(ri);
    }
    groups.into_values().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn w(s: &str) -> Vec<String> {
        s.split_whitespace().map(String::from).collect()
    }

    /// The fallback condition in its spellings; anything else is not a fallback.
    #[test]
    fn nbsrv_conditions() {
        let acls = HashMap::from([("no_replicas".to_owned(), w("nbsrv(ro) lt 1"))]);
        assert_eq!(
            nbsrv_zero(&w("if { nbsrv(PG1_ro) eq 0 }"), &acls),
            Some("PG1_ro".into())
        );
        assert_eq!(nbsrv_zero(&w("if no_replicas"), &acls), Some("ro".into()));
        assert_eq!(nbsrv_zero(&w("unless { nbsrv(x) eq 0 }"), &acls), None);
        assert_eq!(nbsrv_zero(&w("if { nbsrv(x) gt 0 }"), &acls), None);
        assert_eq!(nbsrv_zero(&w("if { src 10.0.0.0/8 }"), &acls), None);
    }
}
