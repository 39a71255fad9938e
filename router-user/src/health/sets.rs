//! Pure set computation: per-node verdicts in, what every listener serves out.
//!
//! Rules (the seed's HAProxy semantics, plus the guards HAProxy lacks):
//! - primary listener: the node whose primary check is up. Two or more up (split brain): the
//!   one with the highest timeline; equal or unknown timelines → no node (no new writes).
//! - replica listener: nodes whose replica check is up; none and `fallback = "primary"` → the
//!   chosen primary (`use_backend X_leader if { nbsrv(X) eq 0 }`), until a replica is back.
//! - read-only listener: nodes whose read-only check is up.
//! - states: selected → Active; verdict not yet known → Drain (sessions may predate a
//!   controller restart); healthy but not selected → Drain (HAProxy does not kill sessions of
//!   a server that is merely not chosen); marked down → Shutdown with
//!   `on_marked_down = "shutdown-sessions"`, Drain with "keep"; on a primary listener a node
//!   Patroni reports as non-primary (demoted) or a split-brain loser → Shutdown always.
//! - a refusing node (PostgreSQL refused a connection through the data path) is in no set,
//!   but only Drain: a refusal says nothing about its established sessions (a forged or
//!   stray RST must never reset them). Only its own checks marking it down make it Shutdown.
use serde::Serialize;

use super::verdict::{CheckKind, Verdict};
use crate::config::{Cluster, Fallback, ListenerKind, OnMarkedDown};
use crate::model::{BackendState, DesiredBackend, DesiredListener, ListenerKey};

/// What the set rules need to know about one node (same order as `cluster.nodes`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NodeView {
    pub verdicts: Vec<(CheckKind, Verdict)>,
    /// From the node's last readable answer.
    pub timeline: Option<u64>,
    /// Patroni's last answer to the primary check named a non-primary role.
    pub demoted: bool,
    /// PostgreSQL refused a connection and no check has confirmed it since: selectable for
    /// nothing, but its sessions are left alone (Drain) unless its checks mark it down.
    pub refusing: bool,
}

impl NodeView {
    /// What the checks say, whether or not the node refuses.
    pub fn verdict(&self, kind: &CheckKind) -> Verdict {
        self.verdicts
            .iter()
            .find(|(k, _)| k == kind)
            .map_or(Verdict::Unknown, |(_, v)| *v)
    }

    /// May take new flows for `kind`: its check passes and it does not refuse.
    pub fn selectable(&self, kind: &CheckKind) -> bool {
        !self.refusing && self.verdict(kind) == Verdict::Up
    }
}

/// Who gets writes.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct PrimaryChoice {
    /// Index of the chosen primary.
    pub chosen: Option<usize>,
    /// Indices of every node whose primary check is up.
    pub candidates: Vec<usize>,
    /// Two or more candidates.
    pub split_brain: bool,
    /// Split brain that timelines could not settle, or whose winner refuses connections: no
    /// node gets new writes.
    pub undecided: bool,
}

/// Picks the write node; see the module doc for the split-brain rule. A refusing node counts
/// as a candidate (its checks say it is a primary, so it can lose a split brain) but is never
/// chosen: when it would win, no node gets writes.
pub fn choose_primary(views: &[NodeView]) -> PrimaryChoice {
    let candidates: Vec<usize> = views
        .iter()
        .enumerate()
        .filter(|(_, v)| v.verdict(&CheckKind::Primary) == Verdict::Up)
        .map(|(i, _)| i)
        .collect();
    let eligible = |i: usize| views.get(i).is_some_and(|v| !v.refusing).then_some(i);
    match candidates.as_slice() {
        [] => PrimaryChoice::default(),
        [one] => PrimaryChoice {
            chosen: eligible(*one),
            candidates,
            ..Default::default()
        },
        many => {
            let tls: Option<Vec<u64>> = many
                .iter()
                .map(|&i| views.get(i).and_then(|v| v.timeline))
                .collect();
            let chosen = tls.and_then(|tls| {
                let max = tls.iter().copied().max()?;
                let mut at_max = many.iter().zip(&tls).filter(|(_, t)| **t == max);
                let first = at_max.next().map(|(i, _)| *i);
                if at_max.next().is_some() { None } else { first }
            });
            let chosen = chosen.and_then(eligible);
            PrimaryChoice {
                chosen,
                undecided: chosen.is_none(),
                split_brain: true,
                candidates,
            }
        }
    }
}

pub use router_ebpf::status::ListenerSet;

/// The result of [`compute`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Computed {
    pub listeners: Vec<DesiredListener>,
    pub sets: Vec<ListenerSet>,
    pub primary: PrimaryChoice,
}

/// Applies the set rules to every listener of `cluster`. `views` is indexed like
/// `cluster.nodes`.
pub fn compute(cluster: &Cluster, views: &[NodeView]) -> Computed {
    // One view per configured node (missing ones count as not yet judged), so node indices
    // and the backends list always line up with `cluster.nodes`.
    let mut padded = views.to_vec();
    padded.resize(cluster.nodes.len(), NodeView::default());
    let mut computed = compute_padded(cluster, &padded);
    if padded.iter().any(|v| v.refusing) {
        // A refusing node is in no set, but its state is the one its checks alone give it,
        // with Active lowered to Drain: a refusal never resets sessions by itself.
        let checks_only: Vec<NodeView> = padded
            .iter()
            .map(|v| NodeView {
                refusing: false,
                ..v.clone()
            })
            .collect();
        let by_checks = compute_padded(cluster, &checks_only);
        for (l, c) in computed.listeners.iter_mut().zip(&by_checks.listeners) {
            for ((b, by), v) in l.backends.iter_mut().zip(&c.backends).zip(&padded) {
                if v.refusing {
                    b.state = match by.state {
                        BackendState::Active => BackendState::Drain,
                        other => other,
                    };
                }
            }
        }
    }
    computed
}

fn compute_padded(cluster: &Cluster, views: &[NodeView]) -> Computed {
    let primary = choose_primary(views);
    let mut listeners = Vec::with_capacity(cluster.listeners.len());
    let mut sets = Vec::with_capacity(cluster.listeners.len());
    for l in &cluster.listeners {
        let kind = CheckKind::for_listener(l);
        let marked_down = match l.on_marked_down {
            OnMarkedDown::ShutdownSessions => BackendState::Shutdown,
            OnMarkedDown::Keep => BackendState::Drain,
        };
        let up: Vec<bool> = views.iter().map(|v| v.selectable(&kind)).collect();
        let (members, fallback_active): (Vec<usize>, bool) = match l.kind {
            ListenerKind::Primary => (primary.chosen.into_iter().collect(), false),
            ListenerKind::Replica | ListenerKind::ReadOnly => {
                let ups: Vec<usize> = up
                    .iter()
                    .enumerate()
                    .filter_map(|(i, &u)| u.then_some(i))
                    .collect();
                if ups.is_empty()
                    && l.kind == ListenerKind::Replica
                    && l.fallback == Fallback::Primary
                {
                    (primary.chosen.into_iter().collect(), true)
                } else {
                    (ups, false)
                }
            }
        };
        let backends = cluster
            .nodes
            .iter()
            .zip(views)
            .zip(&up)
            .enumerate()
            .map(|(i, ((node, view), &node_up))| {
                let state = if members.contains(&i) {
                    BackendState::Active
                } else if l.kind == ListenerKind::Primary {
                    if view.demoted || (primary.candidates.contains(&i) && primary.chosen.is_some())
                    {
                        // Writes must never reach a non-primary or the stale side of a split.
                        BackendState::Shutdown
                    } else if node_up || view.verdict(&kind) == Verdict::Unknown {
                        // Undecided split brain, or not judged yet.
                        BackendState::Drain
                    } else {
                        marked_down
                    }
                } else if node_up
                    || view.verdict(&kind) == Verdict::Unknown
                    || (l.fallback == Fallback::Primary && primary.chosen == Some(i))
                {
                    BackendState::Drain
                } else {
                    marked_down
                };
                DesiredBackend {
                    node: node.name.clone(),
                    addr: node.host,
                    port: node.port,
                    maxconn: l.maxconn,
                    state,
                }
            })
            .collect();
        sets.push(ListenerSet {
            name: l.name.clone(),
            kind: l.kind.into(),
            members: members
                .iter()
                .filter_map(|&i| cluster.nodes.get(i))
                .map(|n| n.name.clone())
                .collect(),
            fallback_active,
        });
        listeners.push(DesiredListener {
            key: ListenerKey::new(&cluster.name, &l.name),
            vip: l.vip,
            port: l.port,
            balance: l.balance,
            shutdown_sessions: l.on_marked_down == OnMarkedDown::ShutdownSessions,
            empty_hold_ms: l.on_empty.hold_ms(),
            snat_addr: l.snat,
            backends,
        });
    }
    Computed {
        listeners,
        sets,
        primary,
    }
}

/// The checks a cluster's listeners need, without duplicates, in a stable order. The primary
/// check is included whenever a primary listener or a replica fallback exists.
pub fn needed_checks(cluster: &Cluster) -> Vec<CheckKind> {
    let mut kinds: Vec<CheckKind> = Vec::new();
    for l in &cluster.listeners {
        let k = CheckKind::for_listener(l);
        if !kinds.contains(&k) {
            kinds.push(k);
        }
        if l.fallback == Fallback::Primary && !kinds.contains(&CheckKind::Primary) {
            kinds.push(CheckKind::Primary);
        }
    }
    kinds.sort();
    kinds
}

#[cfg(test)]
mod tests;
