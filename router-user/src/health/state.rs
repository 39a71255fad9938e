//! The cluster's pure state: hysteresis per node per check, scheduling, and snapshots.
//! The async task in `mod.rs` feeds it probe results and asks it what to probe when; nothing
//! here does I/O, so every timing rule is unit-testable with synthetic `Instant`s.
use std::time::{Duration, Instant};

use tracing::{error, info, warn};

use super::patroni::PatroniInfo;
use super::sets::{self, Computed, NodeView};
use super::verdict::{CheckKind, Hysteresis, Transition, Verdict};
use super::{CheckStatus, ClusterSnapshot, ClusterStatus, Counters, LastCheck, NodeStatus};
use crate::config::Cluster;

/// One check's outcome, as the prober reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CheckOutcome {
    pub ok: bool,
    /// Patroni said this node is not a primary (primary check only): skip `fall`.
    pub not_primary: bool,
    pub http_status: Option<u16>,
    pub latency: Duration,
    /// Failure reason or short description.
    pub detail: String,
    pub info: Option<PatroniInfo>,
}

/// All checks of one node in one cycle, in the order of [`ClusterState::kinds`].
#[derive(Clone, Debug)]
pub struct NodeProbe {
    pub started: Instant,
    pub outcomes: Vec<CheckOutcome>,
}

#[derive(Clone, Debug)]
struct NodeState {
    checks: Vec<Hysteresis>,
    last: Vec<Option<CheckOutcome>>,
    info: PatroniInfo,
    demoted: bool,
    due: Instant,
    last_start: Option<Instant>,
    in_flight: bool,
    /// A cluster-wide re-check was requested while this node's probe was in flight.
    hurry: bool,
    /// PostgreSQL refused a connection (the data path saw a RST answer our SYN): the node is
    /// out of every set until a check of it finishes after this instant.
    refused_until: Option<Instant>,
}

impl NodeState {
    /// Asks for a check of this node by `at`: right after its probe in flight, if one is,
    /// else by moving its due time forward.
    fn recheck_by(&mut self, at: Instant) {
        if self.in_flight {
            self.hurry = true;
        } else {
            self.due = self.due.min(at);
        }
    }
}

/// Pure per-cluster state.
#[derive(Clone, Debug)]
pub struct ClusterState {
    cfg: Cluster,
    kinds: Vec<CheckKind>,
    nodes: Vec<NodeState>,
    counters: Counters,
    computed: Computed,
}

impl ClusterState {
    /// Every node starts Unknown and due for its first check at `now`.
    pub fn new(cfg: &Cluster, now: Instant) -> Self {
        let kinds = sets::needed_checks(cfg);
        let nodes = cfg
            .nodes
            .iter()
            .map(|_| NodeState {
                checks: vec![Hysteresis::default(); kinds.len()],
                last: vec![None; kinds.len()],
                info: PatroniInfo::default(),
                demoted: false,
                due: now,
                last_start: None,
                in_flight: false,
                hurry: false,
                refused_until: None,
            })
            .collect();
        let mut s = Self {
            cfg: cfg.clone(),
            kinds,
            nodes,
            counters: Counters::default(),
            computed: Computed {
                listeners: Vec::new(),
                sets: Vec::new(),
                primary: Default::default(),
            },
        };
        s.computed = sets::compute(&s.cfg, &s.views());
        s
    }

    /// The checks every node runs per cycle.
    pub fn kinds(&self) -> &[CheckKind] {
        &self.kinds
    }

    /// Nodes whose check is due at `now`; they are marked in flight.
    pub fn take_due(&mut self, now: Instant) -> Vec<usize> {
        let mut due = Vec::new();
        for (i, n) in self.nodes.iter_mut().enumerate() {
            if !n.in_flight && n.due <= now {
                n.in_flight = true;
                n.hurry = false;
                due.push(i);
            }
        }
        due
    }

    /// When the next check becomes due (`None` while all are in flight).
    pub fn next_due(&self) -> Option<Instant> {
        self.nodes
            .iter()
            .filter(|n| !n.in_flight)
            .map(|n| n.due)
            .min()
    }

    /// The data path saw node `idx`'s PostgreSQL refuse a connection: nothing listens on its
    /// port (stopped, crashed, restarting), whatever Patroni's API still says — during a stop
    /// it answers as before for a second or more, then not at all. The node leaves every set
    /// now (Drain, not Shutdown: a refusal alone never resets established sessions; its checks
    /// marking it down still apply `on_marked_down`) and is checked at once; it comes back on its first check that finishes at least
    /// one `interval` later (HAProxy's `observe layer4` with `on-error mark-down`, with a hold
    /// so a stale API answer cannot bring it straight back). Returns true when a set changed.
    pub fn refused(&mut self, idx: usize, now: Instant) -> bool {
        if !self.cfg.health.observe_refusals {
            return false;
        }
        let hold = self.cfg.health.interval;
        let (Some(node_cfg), Some(node)) = (self.cfg.nodes.get(idx), self.nodes.get_mut(idx))
        else {
            return false;
        };
        if node.refused_until.is_none() {
            warn!(
                cluster = %self.cfg.name, node = %node_cfg.name,
                "node refused a connection (PostgreSQL not listening): out of every set for at least {hold:?}, checking it now"
            );
        }
        node.refused_until = Some(now + hold);
        node.recheck_by(now);
        self.recompute()
    }

    /// Applies one node's probe. Returns true when a listener's desired state changed.
    pub fn apply(&mut self, idx: usize, probe: NodeProbe, now: Instant) -> bool {
        let h = self.cfg.health;
        let Some(node_cfg) = self.cfg.nodes.get(idx) else {
            return false;
        };
        let node_name = node_cfg.name.clone();
        let Some(node) = self.nodes.get_mut(idx) else {
            return false;
        };
        if node.refused_until.is_some_and(|t| t <= now) {
            node.refused_until = None;
            info!(
                cluster = %self.cfg.name, node = %node_name,
                "refusal hold over: the node's checks decide again"
            );
        }
        let mut result_changed = false;
        // `checks` and `last` have one entry per kind; outcomes beyond the kinds are ignored.
        let per_kind = self
            .kinds
            .iter()
            .zip(node.checks.iter_mut().zip(node.last.iter_mut()));
        for (outcome, (kind, (check, last))) in probe.outcomes.into_iter().zip(per_kind) {
            self.counters.checks_total += 1;
            if !outcome.ok {
                self.counters.checks_failed += 1;
            }
            if last.as_ref().is_some_and(|prev| prev.ok != outcome.ok) {
                result_changed = true;
            }
            let t = if *kind == CheckKind::Primary && outcome.not_primary {
                check.force_down()
            } else {
                check.observe(outcome.ok, h.rise, h.fall)
            };
            match t {
                Some(Transition::Up) => info!(
                    cluster = %self.cfg.name, node = %node_name, check = %kind,
                    "node UP for {kind}: {}", outcome.detail
                ),
                Some(Transition::Down) => warn!(
                    cluster = %self.cfg.name, node = %node_name, check = %kind,
                    "node DOWN for {kind} after {} failure(s): {}",
                    check.failures, outcome.detail
                ),
                None => {}
            }
            if *kind == CheckKind::Primary {
                if outcome.ok {
                    node.demoted = false;
                } else if outcome.not_primary {
                    node.demoted = true;
                }
            }
            if let Some(info) = &outcome.info {
                node.info = info.clone();
            }
            *last = Some(outcome);
        }

        // Schedule the node's next check (HAProxy: fastinter while transitioning, downinter
        // while down, inter otherwise).
        node.in_flight = false;
        node.last_start = Some(probe.started);
        let delay = if node.checks.iter().any(Hysteresis::transitioning) || node.hurry {
            h.fastinter
        } else if node.checks.iter().all(|c| c.verdict == Verdict::Down) {
            h.downinter
        } else {
            h.interval
        };
        node.hurry = false;
        node.due = probe.started + delay;

        if result_changed {
            // One check changed result: re-check the whole cluster at fastinter, so the sets
            // follow a switchover within about one fastinter.
            for n in &mut self.nodes {
                n.recheck_by(n.last_start.map_or(now, |s| s + h.fastinter));
            }
        }

        let changed = self.recompute();
        if self.leaderless() {
            // No node is the primary: Patroni is mid-failover (or split). Keep every node that
            // answers at fastinter until a leader is found, so a promotion that completes after
            // the one-off cluster re-check is seen within a fastinter, not an interval. Nodes
            // down on every check keep HAProxy's downinter.
            for n in &mut self.nodes {
                if n.checks.iter().all(|c| c.verdict == Verdict::Down) {
                    continue;
                }
                n.recheck_by(n.last_start.map_or(now, |s| s + h.fastinter));
            }
        }
        changed
    }

    /// A cluster with a primary listener and no chosen primary.
    fn leaderless(&self) -> bool {
        self.kinds.contains(&CheckKind::Primary) && self.computed.primary.chosen.is_none()
    }

    fn views(&self) -> Vec<NodeView> {
        self.nodes
            .iter()
            .map(|n| NodeView {
                verdicts: self
                    .kinds
                    .iter()
                    .cloned()
                    .zip(n.checks.iter().map(|c| c.verdict))
                    .collect(),
                timeline: n.info.timeline,
                demoted: n.demoted,
                refusing: n.refused_until.is_some(),
            })
            .collect()
    }

    fn recompute(&mut self) -> bool {
        let new = sets::compute(&self.cfg, &self.views());
        let old = std::mem::replace(&mut self.computed, new);
        let new = &self.computed;
        if new.primary.split_brain && !old.primary.split_brain {
            let names: Vec<&str> = new
                .primary
                .candidates
                .iter()
                .filter_map(|&i| self.cfg.nodes.get(i))
                .map(|n| n.name.as_str())
                .collect();
            match new.primary.chosen.and_then(|c| self.cfg.nodes.get(c)) {
                Some(chosen) => error!(
                    cluster = %self.cfg.name,
                    "SPLIT BRAIN: nodes {names:?} all pass the primary check; writes go only to {} \
                     (highest timeline)",
                    chosen.name
                ),
                None => error!(
                    cluster = %self.cfg.name,
                    "SPLIT BRAIN: nodes {names:?} all pass the primary check with equal or unknown \
                     timelines (or the newest refuses connections); admitting NO new writes until \
                     one steps down"
                ),
            }
        } else if !new.primary.split_brain && old.primary.split_brain {
            warn!(cluster = %self.cfg.name, "split brain over: at most one node passes the primary check");
        }
        let changed = new.listeners != old.listeners;
        if changed {
            self.counters.set_changes += 1;
            for (o, n) in old.sets.iter().zip(&new.sets) {
                if o != n {
                    info!(
                        cluster = %self.cfg.name, listener = %n.name,
                        "listener {} set {:?} -> {:?}{}",
                        n.name, o.members, n.members,
                        if n.fallback_active { " (fallback to primary: no replica up)" } else { "" }
                    );
                }
            }
        }
        changed
    }

    /// What to publish: desired listeners plus status.
    pub fn snapshot(&self) -> ClusterSnapshot {
        let primary_loc = self
            .computed
            .primary
            .chosen
            .and_then(|i| self.nodes.get(i))
            .and_then(|n| n.info.wal_location);
        let nodes = self
            .cfg
            .nodes
            .iter()
            .zip(&self.nodes)
            .map(|(c, n)| NodeStatus {
                name: c.name.clone(),
                addr: c.host,
                port: c.port,
                api_port: c.api_port,
                role: n.info.role.clone(),
                state: n.info.state.clone(),
                timeline: n.info.timeline,
                replication_state: n.info.replication_state.clone(),
                lag_bytes: match (primary_loc, n.info.replayed_location) {
                    (Some(p), Some(r)) => Some(p.saturating_sub(r)),
                    _ => None,
                },
                demoted: n.demoted,
                refusing: n.refused_until.is_some(),
                checks: self
                    .kinds
                    .iter()
                    .zip(n.checks.iter().zip(&n.last))
                    .map(|(k, (h, last))| CheckStatus {
                        check: k.path(),
                        verdict: h.verdict,
                        up: h.is_up(),
                        successes: h.successes,
                        failures: h.failures,
                        last: last.as_ref().map(|o| LastCheck {
                            ok: o.ok,
                            http_status: o.http_status,
                            latency_ms: o.latency.as_secs_f64() * 1000.0,
                            detail: o.detail.clone(),
                        }),
                    })
                    .collect(),
            })
            .collect();
        let p = &self.computed.primary;
        ClusterSnapshot {
            listeners: self.computed.listeners.clone(),
            status: ClusterStatus {
                cluster: self.cfg.name.clone(),
                checks: self.cfg.checks.into(),
                primary: p
                    .chosen
                    .and_then(|i| self.cfg.nodes.get(i))
                    .map(|n| n.name.clone()),
                split_brain: p.split_brain,
                writes_blocked: p.undecided,
                nodes,
                listeners: self.computed.sets.clone(),
                counters: self.counters,
            },
        }
    }
}

#[cfg(test)]
mod tests;
