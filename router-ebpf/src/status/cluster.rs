//! Health checks of one cluster, as the health task last published them.
use std::net::IpAddr;

use serde::{Deserialize, Serialize};

/// One cluster: the chosen primary, every node's checks, every listener's set.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ClusterStatus {
    pub cluster: String,
    pub checks: Checks,
    /// Node receiving writes, if any.
    pub primary: Option<String>,
    /// Two or more nodes pass the primary check.
    pub split_brain: bool,
    /// Split brain with equal/unknown timelines: no node gets new writes.
    pub writes_blocked: bool,
    pub nodes: Vec<NodeStatus>,
    pub listeners: Vec<ListenerSet>,
    pub counters: HealthCounters,
}

impl ClusterStatus {
    /// The node named `name`.
    pub fn node(&self, name: &str) -> Option<&NodeStatus> {
        self.nodes.iter().find(|n| n.name == name)
    }

    /// The set of the listener named `name` (without the cluster prefix).
    pub fn set(&self, name: &str) -> Option<&ListenerSet> {
        self.listeners.iter().find(|l| l.name == name)
    }
}

/// Where a cluster's roles come from (the wire form of the config's `checks`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Checks {
    /// Patroni's REST API on every node.
    #[default]
    Patroni,
    /// `node.role` decides; no checks are sent.
    Static,
}

/// One node as last seen.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct NodeStatus {
    pub name: String,
    pub addr: IpAddr,
    pub port: u16,
    pub api_port: u16,
    /// Patroni's `role` / `state` / `timeline` from the last readable answer (a static
    /// cluster shows the configured role).
    pub role: Option<String>,
    pub state: Option<String>,
    pub timeline: Option<u64>,
    pub replication_state: Option<String>,
    /// Chosen primary's WAL position minus this node's replayed position (informational;
    /// membership uses Patroni's own `?lag=` answer).
    pub lag_bytes: Option<u64>,
    /// Patroni last reported a non-primary role to the primary check.
    pub demoted: bool,
    /// Out of every set: its PostgreSQL refused a connection.
    pub refusing: bool,
    pub checks: Vec<CheckStatus>,
}

impl NodeStatus {
    /// The check whose request path is `path` (e.g. `/primary`).
    pub fn check(&self, path: &str) -> Option<&CheckStatus> {
        self.checks.iter().find(|c| c.check == path)
    }
}

/// One check kind on one node.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CheckStatus {
    /// Request path, e.g. `/replica?lag=10485760`.
    pub check: String,
    pub verdict: Verdict,
    pub up: bool,
    /// Consecutive successes / failures so far.
    pub successes: u32,
    pub failures: u32,
    pub last: Option<LastCheck>,
}

/// A node's standing for one check kind (HAProxy's rise/fall).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    /// Not yet `rise` successes nor `fall` failures since start: not selected, but not
    /// "marked down" either (no session reset; sessions may predate a controller restart).
    #[default]
    Unknown,
    Up,
    Down,
}

impl Verdict {
    /// As the JSON names it.
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Unknown => "unknown",
            Verdict::Up => "up",
            Verdict::Down => "down",
        }
    }
}

/// The most recent result of one check.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LastCheck {
    pub ok: bool,
    pub http_status: Option<u16>,
    pub latency_ms: f64,
    /// Error text, or a short description of the answer.
    pub detail: String,
}

/// A cluster's monotonic counters, for Prometheus.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HealthCounters {
    pub checks_total: u64,
    pub checks_failed: u64,
    /// How often any listener's desired state changed.
    pub set_changes: u64,
}

/// One listener's set.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListenerSet {
    /// The listener's name in its cluster (no `cluster/` prefix).
    pub name: String,
    pub kind: ListenerKind,
    /// Node names taking new connections.
    pub members: Vec<String>,
    /// A replica listener is serving the primary because no replica is up.
    pub fallback_active: bool,
}

/// What a listener serves (the wire form of the config's `kind`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ListenerKind {
    Primary,
    Replica,
    ReadOnly,
}
