//! The contract between the health layer and the data-path writer: what each listener should
//! serve right now. The health layer produces it; `dataplane::plan` turns it into map updates.
use std::{fmt, net::IpAddr};

/// How a listener spreads new connections over its set.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Balance {
    #[default]
    #[serde(alias = "roundrobin", alias = "round-robin")]
    RoundRobin,
    #[serde(alias = "leastconn", alias = "least-conn")]
    LeastConn,
    #[serde(alias = "source", alias = "source-hash")]
    SourceHash,
}

/// What one node is to one listener.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum BackendState {
    /// In the set: takes new connections.
    Active,
    /// Healthy but not selected (e.g. the primary once a replica is back on a read listener,
    /// or a node marked down with `on_marked_down = "keep"`): existing sessions continue.
    Drain,
    /// Marked down with shutdown-sessions: existing sessions are reset.
    Shutdown,
}

/// Which listener: its cluster and its name there. Shown (logs, status, errors) as
/// `cluster/listener`; never parsed back.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ListenerKey {
    pub cluster: String,
    pub listener: String,
}

impl ListenerKey {
    pub fn new(cluster: impl Into<String>, listener: impl Into<String>) -> Self {
        Self {
            cluster: cluster.into(),
            listener: listener.into(),
        }
    }
}

impl fmt::Display for ListenerKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.cluster, self.listener)
    }
}

impl serde::Serialize for ListenerKey {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// One node as one listener's backend: what a backend entry's id stands for, stable across
/// reloads.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct BackendKey {
    pub listener: ListenerKey,
    /// Node name from the config.
    pub node: String,
}

impl BackendKey {
    pub fn new(listener: ListenerKey, node: impl Into<String>) -> Self {
        Self {
            listener,
            node: node.into(),
        }
    }
}

/// One node as a listener's backend.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct DesiredBackend {
    /// Node name from the config, stable across reloads.
    pub node: String,
    pub addr: IpAddr,
    /// PostgreSQL port.
    pub port: u16,
    /// 0 = unlimited.
    pub maxconn: u32,
    pub state: BackendState,
}

/// One listener (VIP:port) and what it should serve.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct DesiredListener {
    /// Which listener, stable across reloads.
    pub key: ListenerKey,
    pub vip: IpAddr,
    pub port: u16,
    pub balance: Balance,
    pub shutdown_sessions: bool,
    /// How long a SYN to an empty set is held before it is answered by a RST (ms); 0 = at
    /// once (`on_empty = "reject"`).
    pub empty_hold_ms: u32,
    /// Source address for the backend leg; the VIP when not configured.
    pub snat_addr: IpAddr,
    /// Every node of the cluster, in config order; only `Active` ones take new flows.
    pub backends: Vec<DesiredBackend>,
}
