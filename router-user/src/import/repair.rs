//! The last step of the translation: whatever `config::parse` still refuses in the rendered
//! output is left out, so that `pgrouter import` writes only what `pgrouter check-config`
//! accepts. The translation avoids most of it itself (with better messages); this catches the
//! rest, by the field each diagnostic names: a node or listener is left out whole, a cluster
//! whose problem is its own (no node, no listener) too, a bad VIP, unicast peer or track of a
//! `[[vrrp]]` alone, any other `[[vrrp]]` problem (a name or VRID used twice) leaves out the
//! instance. Every item left out gets a warning with check-config's message and is written
//! commented out at the end of the file.
use std::collections::BTreeMap;

use serde::Serialize;

use super::plan::Plan;
use super::{Place, Warning};
use crate::config::vrrp::RawInstance;
use crate::config::{Diagnostic, raw};

/// What one diagnostic asks to leave out (indices into the plan's config).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Fix {
    // Keys and list elements first (they do not move other items), each list from its end.
    Interface(usize),
    Timeout(String),
    Api(usize, String),
    Health(usize, String),
    Vip(usize, usize),
    Peer(usize, usize),
    Track(usize, usize),
    // Then whole items, from the end of each list.
    Node(usize, usize),
    /// A limit: this node and every one after it.
    NodesFrom(usize, usize),
    Listener(usize, usize),
    /// A limit: this listener and every one after it in its cluster.
    ListenersFrom(usize, usize),
    Cluster(usize),
    Vrrp(usize),
}

/// One step of a diagnostic's field path (`cluster[0].listener[1].vip`).
#[derive(Debug, PartialEq, Eq)]
enum Seg<'a> {
    Key(&'a str),
    Index(usize),
}

fn segments(field: &str) -> Option<Vec<Seg<'_>>> {
    let mut out = Vec::new();
    for part in field.split('.') {
        let (key, mut rest) = part.split_once('[').map_or((part, ""), |(k, r)| (k, r));
        out.push(Seg::Key(key));
        while !rest.is_empty() {
            let (i, after) = rest.split_once(']')?;
            out.push(Seg::Index(i.parse().ok()?));
            rest = after.strip_prefix('[').unwrap_or(after);
        }
    }
    Some(out)
}

fn fix_for(field: &str) -> Option<Fix> {
    use Seg::{Index as I, Key as K};
    let segs = segments(field)?;
    Some(match segs.as_slice() {
        [K("cluster"), I(c), K("node"), I(n)] => Fix::NodesFrom(*c, *n),
        [K("cluster"), I(c), K("node"), I(n), ..] => Fix::Node(*c, *n),
        [K("cluster"), I(c), K("listener"), I(l)] => Fix::ListenersFrom(*c, *l),
        [K("cluster"), I(c), K("listener"), I(l), ..] => Fix::Listener(*c, *l),
        // The two halves of a pair are one fix.
        [K("cluster"), I(c), K("api"), K("key_file")] => Fix::Api(*c, "cert_file".to_owned()),
        [K("cluster"), I(c), K("api"), K("password")] => Fix::Api(*c, "username".to_owned()),
        [K("cluster"), I(c), K("api"), K(k)] => Fix::Api(*c, (*k).to_owned()),
        [K("cluster"), I(c), K("health"), K(k)] => Fix::Health(*c, (*k).to_owned()),
        [K("cluster"), I(c), ..] => Fix::Cluster(*c),
        [K("vrrp"), I(v), K("virtual_ipaddress"), I(j)] => Fix::Vip(*v, *j),
        [K("vrrp"), I(v), K("unicast_peer"), I(j)] => Fix::Peer(*v, *j),
        [K("vrrp"), I(v), K("track"), I(t), ..] => Fix::Track(*v, *t),
        [K("vrrp"), I(v), ..] => Fix::Vrrp(*v),
        [K("datapath"), K("interfaces"), I(i)] => Fix::Interface(*i),
        [K("datapath"), K("timeouts"), K(k)] => Fix::Timeout((*k).to_owned()),
        _ => return None,
    })
}

impl Fix {
    /// Whether `self` is moot because `other` leaves out what contains it.
    fn inside(&self, other: &Fix) -> bool {
        let cluster = |f: &Fix| match f {
            Fix::Api(c, _)
            | Fix::Health(c, _)
            | Fix::Node(c, _)
            | Fix::NodesFrom(c, _)
            | Fix::Listener(c, _)
            | Fix::ListenersFrom(c, _) => Some(*c),
            _ => None,
        };
        let vrrp = |f: &Fix| match f {
            Fix::Vip(v, _) | Fix::Peer(v, _) | Fix::Track(v, _) => Some(*v),
            _ => None,
        };
        match other {
            Fix::Cluster(c) => cluster(self) == Some(*c),
            Fix::Vrrp(v) => vrrp(self) == Some(*v),
            Fix::NodesFrom(c, n) => matches!(self, Fix::Node(d, m) if d == c && m >= n),
            Fix::ListenersFrom(c, l) => matches!(self, Fix::Listener(d, m) if d == c && m >= l),
            _ => false,
        }
    }

    /// Order of application: keys and elements before items, each list from its end (so
    /// the indices of the fixes still to apply stay valid).
    fn rank(&self) -> (u8, std::cmp::Reverse<(usize, usize)>) {
        use std::cmp::Reverse as R;
        match self {
            Fix::Interface(i) => (0, R((*i, 0))),
            Fix::Timeout(_) => (0, R((0, 0))),
            Fix::Api(c, _) | Fix::Health(c, _) => (0, R((*c, 0))),
            Fix::Vip(v, j) | Fix::Peer(v, j) | Fix::Track(v, j) => (0, R((*v, *j))),
            Fix::Node(c, n) | Fix::NodesFrom(c, n) => (1, R((*c, *n))),
            Fix::Listener(c, l) | Fix::ListenersFrom(c, l) => (1, R((*c, *l))),
            Fix::Cluster(c) => (2, R((*c, 0))),
            Fix::Vrrp(v) => (2, R((*v, 0))),
        }
    }
}

/// Leaves out what `diags` name; `false` when none of them can be fixed that way (the caller
/// then reports them as they are).
pub(super) fn repair(plan: &mut Plan, warnings: &mut Vec<Warning>, diags: &[Diagnostic]) -> bool {
    let mut fixes: BTreeMap<Fix, Vec<String>> = BTreeMap::new();
    for d in diags {
        let Some(f) = fix_for(&d.field) else {
            return false;
        };
        fixes
            .entry(f)
            .or_default()
            .push(format!("{}: {}", d.field, d.message));
    }
    let all: Vec<Fix> = fixes.keys().cloned().collect();
    let mut todo: Vec<(Fix, Vec<String>)> = fixes
        .into_iter()
        .filter(|(f, _)| !all.iter().any(|o| o != f && f.inside(o)))
        .collect();
    todo.sort_by_key(|(f, _)| f.rank());
    let mut done = false;
    for (fix, why) in todo {
        done |= apply(plan, warnings, &fix, &why.join("; "));
    }
    done
}

/// A warning of this step.
fn warn(warnings: &mut Vec<Warning>, place: Place, message: String) {
    warnings.push(Warning {
        file: "<imported>".into(),
        line: 0,
        place,
        message: super::plan::comment_text(&message),
    });
}

const COMMENTED: &str = "commented out at the end of the file";

fn apply(plan: &mut Plan, warnings: &mut Vec<Warning>, fix: &Fix, why: &str) -> bool {
    let cfg = &mut plan.config;
    match fix {
        Fix::Interface(i) => {
            if *i >= cfg.datapath.interfaces.len() {
                return false;
            }
            let name = cfg.datapath.interfaces.remove(*i);
            warn(
                warnings,
                Place::Datapath,
                format!("interface {name:?} left out: check-config refuses {why}"),
            );
        }
        Fix::Timeout(k) => {
            let t = &mut cfg.datapath.timeouts;
            let slot = match k.as_str() {
                "handshake" => &mut t.handshake,
                "established" => &mut t.established,
                "closing" => &mut t.closing,
                "closed" => &mut t.closed,
                _ => return false,
            };
            if slot.take().is_none() {
                return false;
            }
            warn(
                warnings,
                Place::Datapath,
                format!(
                    "timeouts.{k} left out (pgrouter's default applies): check-config refuses {why}"
                ),
            );
        }
        Fix::Api(c, k) => {
            let Some(cluster) = cfg.cluster.get_mut(*c) else {
                return false;
            };
            let api = &mut cluster.api;
            let keys: &[&str] = match k.as_str() {
                "ca_file" => &["ca_file"],
                "cert_file" => &["cert_file", "key_file"],
                "username" => &["username", "password"],
                "port" => {
                    api.port = raw::Api::default().port;
                    warn(
                        warnings,
                        Place::Cluster(*c),
                        format!("api.port set to {}: check-config refuses {why}", api.port),
                    );
                    return true;
                }
                _ => return false,
            };
            let mut left = Vec::new();
            for key in keys {
                let v = match *key {
                    "ca_file" => &mut api.ca_file,
                    "cert_file" => &mut api.cert_file,
                    "key_file" => &mut api.key_file,
                    "username" => &mut api.username,
                    _ => &mut api.password,
                };
                if !v.is_empty() {
                    let shown = if *key == "password" {
                        "…".to_owned()
                    } else {
                        format!("{v:?}")
                    };
                    left.push(format!("{key} = {shown}"));
                    v.clear();
                }
            }
            if left.is_empty() {
                return false;
            }
            warn(
                warnings,
                Place::Cluster(*c),
                format!(
                    "api: {} left out: check-config refuses {why} — set it again once check-config accepts it on this host",
                    left.join(", ")
                ),
            );
        }
        Fix::Health(c, k) => {
            let Some(cluster) = cfg.cluster.get_mut(*c) else {
                return false;
            };
            let d = raw::Health::default();
            let h = &mut cluster.health;
            match k.as_str() {
                "interval" => h.interval = d.interval,
                "fastinter" => h.fastinter = d.fastinter,
                "downinter" => h.downinter = d.downinter,
                "timeout" => h.timeout = d.timeout,
                "fall" => h.fall = d.fall,
                "rise" => h.rise = d.rise,
                _ => return false,
            }
            warn(
                warnings,
                Place::Cluster(*c),
                format!("health.{k} set to pgrouter's default: check-config refuses {why}"),
            );
        }
        Fix::Vip(v, j) | Fix::Peer(v, j) => {
            let Some(inst) = cfg.vrrp.get_mut(*v) else {
                return false;
            };
            let (key, text) = if matches!(fix, Fix::Vip(..)) {
                if *j >= inst.virtual_ipaddress.len() {
                    return false;
                }
                ("virtual_ipaddress", inst.virtual_ipaddress.remove(*j))
            } else {
                if *j >= inst.unicast_peer.len() {
                    return false;
                }
                ("unicast_peer", inst.unicast_peer.remove(*j).to_string())
            };
            warn(
                warnings,
                Place::Vrrp(*v),
                format!("{key} {text} left out: check-config refuses {why}"),
            );
        }
        Fix::Track(v, t) => {
            let Some(inst) = cfg.vrrp.get_mut(*v) else {
                return false;
            };
            if *t >= inst.track.len() {
                return false;
            }
            let track = inst.track.remove(*t);
            warn(
                warnings,
                Place::Vrrp(*v),
                format!(
                    "track {:?} left out: check-config refuses {why}",
                    track.name
                ),
            );
        }
        Fix::Node(c, n) | Fix::NodesFrom(c, n) => {
            let Some(cluster) = cfg.cluster.get_mut(*c) else {
                return false;
            };
            let end = if matches!(fix, Fix::NodesFrom(..)) {
                cluster.node.len()
            } else {
                n + 1
            };
            if *n >= end || end > cluster.node.len() {
                return false;
            }
            let cname = cluster.name.clone();
            let gone: Vec<_> = cluster.node.drain(*n..end).collect();
            let names: Vec<String> = gone.iter().map(|n| format!("{:?}", n.name)).collect();
            // From the end, so that the places of the nodes still to renumber stay put.
            for (i, node) in (*n..end).zip(&gone).rev() {
                left_out(plan, &cname, "node", "[[cluster.node]]", node);
                moved(plan, warnings, &Place::Node(*c, i));
            }
            warn(
                warnings,
                Place::Cluster(*c),
                format!(
                    "node{} {} left out ({COMMENTED}): check-config refuses {why}",
                    if names.len() == 1 { "" } else { "s" },
                    names.join(", ")
                ),
            );
        }
        Fix::Listener(c, l) | Fix::ListenersFrom(c, l) => {
            let Some(cluster) = cfg.cluster.get_mut(*c) else {
                return false;
            };
            let end = if matches!(fix, Fix::ListenersFrom(..)) {
                cluster.listener.len()
            } else {
                l + 1
            };
            if *l >= end || end > cluster.listener.len() {
                return false;
            }
            let cname = cluster.name.clone();
            let gone: Vec<_> = cluster.listener.drain(*l..end).collect();
            let names: Vec<String> = gone.iter().map(|l| format!("{:?}", l.name)).collect();
            for (i, listener) in (*l..end).zip(&gone).rev() {
                plan.refused
                    .push(format!("listener {:?}: {why}", listener.name));
                left_out(plan, &cname, "listener", "[[cluster.listener]]", listener);
                moved(plan, warnings, &Place::Listener(*c, i));
            }
            warn(
                warnings,
                Place::Cluster(*c),
                format!(
                    "listener{} {} left out ({COMMENTED}): check-config refuses {why}",
                    if names.len() == 1 { "" } else { "s" },
                    names.join(", ")
                ),
            );
        }
        Fix::Cluster(c) => {
            if *c >= cfg.cluster.len() {
                return false;
            }
            let cluster = cfg.cluster.remove(*c);
            #[derive(Serialize)]
            struct One<'a> {
                cluster: [&'a raw::Cluster; 1],
            }
            if let Ok(text) = toml::to_string(&One {
                cluster: [&cluster],
            }) {
                plan.notes.left_out(&text);
            }
            moved(plan, warnings, &Place::Cluster(*c));
            plan.refused
                .push(format!("cluster {:?}: {why}", cluster.name));
            warn(
                warnings,
                Place::Top,
                format!(
                    "cluster {:?} left out with its nodes and listeners ({COMMENTED}): check-config refuses {why}",
                    cluster.name
                ),
            );
        }
        Fix::Vrrp(v) => {
            if *v >= cfg.vrrp.len() {
                return false;
            }
            let inst = cfg.vrrp.remove(*v);
            #[derive(Serialize)]
            struct One<'a> {
                vrrp: [&'a RawInstance; 1],
            }
            if let Ok(text) = toml::to_string(&One { vrrp: [&inst] }) {
                plan.notes.left_out(&text);
            }
            moved(plan, warnings, &Place::Vrrp(*v));
            warn(
                warnings,
                Place::Top,
                format!(
                    "[[vrrp]] {:?} left out ({COMMENTED}): check-config refuses {why}",
                    inst.name
                ),
            );
        }
    }
    true
}

/// `item` written commented out at the end of the file, under `header`.
fn left_out(plan: &mut Plan, cluster: &str, what: &str, header: &str, item: &impl Serialize) {
    if let Ok(body) = toml::to_string(item) {
        plan.notes.left_out(&format!(
            "# {what} of [[cluster]] {cluster:?}:\n{header}\n{body}"
        ));
    }
}

/// After `gone` was removed: the items behind it move up one, its notes go, its warnings (and
/// those of what it contained) go to the place that held it.
fn moved(plan: &mut Plan, warnings: &mut [Warning], gone: &Place) {
    let parent = match gone {
        Place::Node(c, _) | Place::Listener(c, _) => Place::Cluster(*c),
        _ => Place::Top,
    };
    plan.notes.remap(|p| after_removal(p, gone));
    for w in warnings {
        w.place = after_removal(&w.place, gone).unwrap_or_else(|| parent.clone());
    }
}

/// Where `p` is once `gone` is removed; `None` for `gone` itself and what it contained.
fn after_removal(p: &Place, gone: &Place) -> Option<Place> {
    use std::cmp::Ordering::{Equal, Greater, Less};
    let step = |i: usize, g: usize| match i.cmp(&g) {
        Less => Some(i),
        Equal => None,
        Greater => Some(i - 1),
    };
    match (gone, p) {
        (Place::Node(c, n), Place::Node(pc, pn)) if pc == c => {
            step(*pn, *n).map(|i| Place::Node(*c, i))
        }
        (Place::Listener(c, l), Place::Listener(pc, pl)) if pc == c => {
            step(*pl, *l).map(|i| Place::Listener(*c, i))
        }
        (Place::Cluster(c), Place::Cluster(pc)) => step(*pc, *c).map(Place::Cluster),
        (Place::Cluster(c), Place::Node(pc, n)) => step(*pc, *c).map(|i| Place::Node(i, *n)),
        (Place::Cluster(c), Place::Listener(pc, l)) => {
            step(*pc, *c).map(|i| Place::Listener(i, *l))
        }
        (Place::Vrrp(v), Place::Vrrp(pv)) => step(*pv, *v).map(Place::Vrrp),
        _ => Some(p.clone()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_name_what_to_leave_out() {
        assert_eq!(
            fix_for("cluster[1].listener[2].vip"),
            Some(Fix::Listener(1, 2))
        );
        assert_eq!(fix_for("cluster[0].node[32]"), Some(Fix::NodesFrom(0, 32)));
        assert_eq!(fix_for("cluster[0].name"), Some(Fix::Cluster(0)));
        assert_eq!(
            fix_for("vrrp[3].virtual_ipaddress[1]"),
            Some(Fix::Vip(3, 1))
        );
        assert_eq!(fix_for("vrrp[3].track[0].weight"), Some(Fix::Track(3, 0)));
        assert_eq!(fix_for("vrrp[1].name"), Some(Fix::Vrrp(1)));
        assert_eq!(fix_for("datapath.interfaces[0]"), Some(Fix::Interface(0)));
        assert_eq!(fix_for("(top level)"), None);
        assert_eq!(fix_for("control.socket"), None);
    }

    #[test]
    fn places_move_up_behind_what_is_removed() {
        let gone = Place::Listener(0, 1);
        assert_eq!(
            after_removal(&Place::Listener(0, 2), &gone),
            Some(Place::Listener(0, 1))
        );
        assert_eq!(after_removal(&Place::Listener(0, 1), &gone), None);
        assert_eq!(
            after_removal(&Place::Listener(1, 2), &gone),
            Some(Place::Listener(1, 2))
        );
        assert_eq!(
            after_removal(&Place::Node(2, 0), &Place::Cluster(1)),
            Some(Place::Node(1, 0))
        );
        assert_eq!(after_removal(&Place::Node(1, 0), &Place::Cluster(1)), None);
    }
}
