//! A pool's HTTP check → the listener kind: what Patroni would have answered that check.
use super::super::plan::Sink;
use super::proxies::Proxy;
use super::{Place, Source};
use crate::config::ListenerKind;
use crate::config::units::patroni_parse_bytes;

/// What one listener serves, decided from the pool's check.
#[derive(Clone, Debug)]
pub(super) struct Role {
    pub(super) kind: ListenerKind,
    /// Patroni's `?lag=` as written, only when Patroni understands it.
    pub(super) lag: Option<String>,
}

/// Patroni matches the request path by substring, in this order (api.py `do_GET`); we do
/// the same so the translation means what Patroni would have answered.
pub(super) fn role_of(p: &Proxy, src: &Source<'_>, place: &Place, sink: &mut Sink) -> Role {
    let c = &p.check;
    let line = if c.line == 0 { p.line } else { c.line };
    if !c.http {
        let how = if c.tcp_only {
            "only a TCP check"
        } else {
            "no HTTP check (`option httpchk`)"
        };
        sink.warn(
            src.path,
            line,
            place.clone(),
            format!(
                "`{}` has {how}: HAProxy sends connections to any node that accepts TCP, whatever its role; \
                 pgrouter needs a Patroni role, so this became kind = \"primary\" — check that this is what clients expect",
                p.name
            ),
        );
        return Role {
            kind: ListenerKind::Primary,
            lag: None,
        };
    }
    if c.lone_method {
        sink.warn(
            src.path,
            line,
            place.clone(),
            format!(
                "`option httpchk {}`: HAProxy reads a lone argument as the URI, so it requests the path {:?}, \
                 which Patroni answers with 503 on every node (this listener never had a server); \
                 translated as the intended leader check `GET /`",
                c.uri.as_deref().unwrap_or_default(),
                c.uri.as_deref().unwrap_or_default()
            ),
        );
        return Role {
            kind: ListenerKind::Primary,
            lag: None,
        };
    }
    let uri = c.uri.clone().unwrap_or_else(|| "/".to_owned());
    let (path, query) = match uri.split_once('?') {
        Some((p, q)) => (p.to_owned(), Some(q.to_owned())),
        None => (uri.clone(), None),
    };
    let whole = if path == "/" {
        "/primary".to_owned()
    } else {
        uri.clone()
    };
    let mut role = if whole.contains("standby_leader") || whole.contains("standby-leader") {
        sink.warn(
            src.path,
            line,
            place.clone(),
            format!("`{uri}` follows a standby cluster's leader; pgrouter has no such listener kind, translated as kind = \"primary\""),
        );
        Role {
            kind: ListenerKind::Primary,
            lag: None,
        }
    } else if whole.contains("leader")
        || whole.contains("master")
        || whole.contains("primary")
        || whole.contains("read-write")
    {
        Role {
            kind: ListenerKind::Primary,
            lag: None,
        }
    } else if whole.contains("replica") {
        Role {
            kind: ListenerKind::Replica,
            lag: None,
        }
    } else if whole.contains("read-only") {
        if whole.contains("sync") || whole.contains("quorum") {
            sink.warn(
                src.path,
                line,
                place.clone(),
                format!("`{uri}` serves the primary and synchronous/quorum standbys only; pgrouter's read-only kind includes every running replica"),
            );
        }
        Role {
            kind: ListenerKind::ReadOnly,
            lag: None,
        }
    } else if whole.contains("health") {
        sink.warn(
            src.path,
            line,
            place.clone(),
            format!("`{uri}` passes on every node with PostgreSQL running; translated as kind = \"read-only\" (primary and running replicas)"),
        );
        Role {
            kind: ListenerKind::ReadOnly,
            lag: None,
        }
    } else if matches!(
        path.as_str(),
        "/sync" | "/synchronous" | "/quorum" | "/async" | "/asynchronous"
    ) {
        sink.warn(
            src.path,
            line,
            place.clone(),
            format!("`{path}` selects only {} replicas; pgrouter cannot tell synchronous from asynchronous replicas, so this listener (kind = \"replica\") serves every replica Patroni reports",
                if path.contains("async") { "asynchronous" } else { "synchronous/quorum" }),
        );
        Role {
            kind: ListenerKind::Replica,
            lag: None,
        }
    } else {
        sink.warn(
            src.path,
            line,
            place.clone(),
            format!("`{uri}` is not a Patroni health endpoint (Patroni answers 503 on every node, so HAProxy never had a server here); translated as kind = \"primary\""),
        );
        Role {
            kind: ListenerKind::Primary,
            lag: None,
        }
    };
    if let Some(method) = &c.method
        && !matches!(method.as_str(), "GET" | "OPTIONS" | "HEAD")
    {
        sink.warn(
            src.path,
            line,
            place.clone(),
            format!("check method {method} is unusual for Patroni; pgrouter always sends GET"),
        );
    }
    for kv in query
        .iter()
        .flat_map(|q| q.split('&'))
        .filter(|kv| !kv.is_empty())
    {
        let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
        match k {
            "lag" if role.kind == ListenerKind::Primary => sink.warn(
                src.path,
                line,
                place.clone(),
                format!("`lag={v}` means nothing on a leader check; dropped"),
            ),
            "lag" => {
                if patroni_parse_bytes(v).is_some() {
                    role.lag = Some(v.to_owned());
                } else {
                    sink.warn(
                        src.path,
                        line,
                        place.clone(),
                        format!("`lag={v}` is not a size Patroni understands, so Patroni applies no limit at all; left out (no limit, as before)"),
                    );
                }
            }
            _ => sink.warn(
                src.path,
                line,
                place.clone(),
                format!("check parameter `{kv}` (Patroni tag or state filter) has no pgrouter equivalent; dropped, so nodes it excluded may serve this listener"),
            ),
        }
    }
    if let Some((eline, e)) = &p.expect
        && e != "status 200"
        && e != "rstatus ^2"
    {
        sink.warn(
            src.path,
            *eline,
            place.clone(),
            format!("`http-check expect {e}`: pgrouter passes a check on HTTP 200 with the Patroni JSON role, not on this expectation"),
        );
    }
    role
}
