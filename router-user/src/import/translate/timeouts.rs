//! HAProxy's `timeout` directives → `[datapath.timeouts]`.
//!
//! HAProxy keeps timeouts per proxy; pgrouter has one set for the whole data path (docs/maps.md,
//! *Life of a flow*), so each key takes the largest value any translated listener uses:
//! - `timeout connect` (backend) → `handshake`;
//! - `timeout client` (frontend) / `timeout server` (backend), the larger → `established`;
//!   in TCP mode HAProxy replaces both by `timeout tunnel` once connected, so a backend's
//!   tunnel timeout wins over them;
//! - `timeout queue`, `client-fin`, `server-fin`: no key of their own; a warning says what
//!   pgrouter does instead.
//!
//! A value of 0 is HAProxy's "no limit"; pgrouter needs one, so the default stays.
use std::time::Duration;

use super::haproxy::{self, Directive};
use super::{Place, Proxy, Route, Sink, Source};
use crate::config::raw;
use crate::config::units::duration_text;

/// The `timeout` keys this module reads.
pub(super) const KEYS: &[&str] = &[
    "connect",
    "client",
    "server",
    "queue",
    "tunnel",
    "client-fin",
    "server-fin",
];

/// One `timeout KEY VALUE` directive.
#[derive(Clone, Debug)]
pub(super) struct Timeout {
    line: usize,
    key: &'static str,
    value: Duration,
    /// The value as written (`60m`), for messages.
    written: String,
}

/// Records `d` (a `timeout` directive with a key from [`KEYS`]), replacing an earlier one of
/// the same key: a section's own line overrides its `defaults`.
pub(super) fn record(list: &mut Vec<Timeout>, d: &Directive, src: &Source<'_>, sink: &mut Sink) {
    let Some(key) = KEYS.iter().copied().find(|k| *k == d.word(1)) else {
        return;
    };
    match haproxy::parse_time(d.word(2)) {
        Ok(value) => {
            list.retain(|t| t.key != key);
            list.push(Timeout {
                line: d.line,
                key,
                value,
                written: d.word(2).to_owned(),
            });
        }
        Err(e) => sink.warn(
            src.path,
            d.line,
            Place::Datapath,
            format!("timeout {key}: {e}"),
        ),
    }
}

fn find(p: &Proxy, key: &str) -> Option<Timeout> {
    p.timeouts.iter().find(|t| t.key == key).cloned()
}

fn text(t: &Timeout) -> String {
    format!("timeout {} {}", t.key, t.written)
}

/// The largest non-zero value of `key` among `pools`; warns about a 0 (no limit) and about
/// listeners that disagree (pgrouter has one value for all).
fn largest(
    all: &[Timeout],
    what: &str,
    default: Duration,
    src: &Source<'_>,
    sink: &mut Sink,
) -> Option<Timeout> {
    for t in all.iter().filter(|t| t.value.is_zero()) {
        sink.warn(
            src.path,
            t.line,
            Place::Datapath,
            format!(
                "`timeout {} 0` means no limit in HAProxy; pgrouter needs one and keeps its default {what} = \"{}\"",
                t.key,
                duration_text(default)
            ),
        );
    }
    let best = all
        .iter()
        .filter(|t| !t.value.is_zero())
        .max_by_key(|t| t.value)?
        .clone();
    if all
        .iter()
        .any(|t| !t.value.is_zero() && t.value != best.value)
    {
        sink.warn(
            src.path,
            best.line,
            Place::Datapath,
            format!(
                "listeners use different values for `timeout {}`; pgrouter has one {what} timeout for all and takes the largest, {}",
                best.key,
                duration_text(best.value)
            ),
        );
    }
    Some(best)
}

/// The flow timeouts every translated listener (front, pool and fallback backend) asks for.
pub(super) fn flow_timeouts(
    proxies: &[Proxy],
    routes: &[Route],
    src: &Source<'_>,
    sink: &mut Sink,
    out: &mut raw::Timeouts,
) {
    let defaults = crate::config::FlowTimeouts::default();
    let mut connects = Vec::new();
    let mut idles = Vec::new();
    // (directive, what pgrouter does instead), warned once per value.
    let mut others: Vec<(Timeout, String)> = Vec::new();
    for r in routes {
        let (Some(front), Some(pool)) = (proxies.get(r.front), proxies.get(r.pool)) else {
            continue;
        };
        let mut backends = vec![pool];
        if let Some((_, Some(t), _)) = &r.fallback {
            backends.extend(proxies.get(*t));
        }
        let client = find(front, "client");
        for b in backends {
            connects.extend(find(b, "connect"));
            // TCP mode: once connected, `timeout tunnel` replaces client and server.
            match find(b, "tunnel") {
                Some(t) => {
                    others.push((
                        t.clone(),
                        "in TCP mode HAProxy uses it instead of `timeout client`/`timeout server` once connected; it became datapath.timeouts.established".into(),
                    ));
                    idles.push(t);
                }
                None => {
                    idles.extend(client.clone());
                    idles.extend(find(b, "server"));
                }
            }
            if let Some(q) = find(b, "queue") {
                others.push((
                    q,
                    "pgrouter has no queue: a connection waiting for a maxconn slot is retried by the client's TCP until datapath.timeouts.handshake expires".into(),
                ));
            }
            if let Some(f) = find(b, "server-fin") {
                others.push((f, closing_note(defaults.closing)));
            }
        }
        if let Some(f) = find(front, "client-fin") {
            others.push((f, closing_note(defaults.closing)));
        }
    }
    for (t, instead) in others {
        sink.warn(
            src.path,
            t.line,
            Place::Datapath,
            format!("`{}`: {instead}", text(&t)),
        );
    }

    if let Some(t) = largest(&connects, "handshake", defaults.handshake, src, sink) {
        out.handshake = Some(t.value.into());
        sink.notes.after(
            Place::Datapath,
            "timeouts.handshake",
            format!("{} ({}:{})", text(&t), src.path, t.line),
        );
    }
    if let Some(t) = largest(&idles, "established", defaults.established, src, sink) {
        // Name every directive that had this value, e.g. both client and server 30m.
        let mut keys: Vec<String> = idles
            .iter()
            .filter(|i| i.value == t.value)
            .map(text)
            .collect();
        keys.sort();
        keys.dedup();
        let directives = keys.join(" / ");
        out.established = Some(t.value.into());
        sink.notes.after(
            Place::Datapath,
            "timeouts.established",
            format!("{directives} ({}:{})", src.path, t.line),
        );
        if t.value < defaults.established {
            sink.warn(
                src.path,
                t.line,
                Place::Datapath,
                format!(
                    "`{directives}`: pgrouter keeps HAProxy's idle limit as written (established = \"{}\"), so idle sessions (poolers, an open psql) are cut after {}; RFC 5382 asks a NAT for at least 2h4m, pgrouter's default: delete the `established` line to use it",
                    duration_text(t.value),
                    duration_text(t.value)
                ),
            );
        }
    }
}

fn closing_note(default: Duration) -> String {
    format!(
        "pgrouter has one limit for a connection with a FIN seen in either direction, datapath.timeouts.closing (default \"{}\"); not set from this",
        duration_text(default)
    )
}
