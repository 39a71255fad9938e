//! The contract between the health layer and the data-path writer: what each listener should
//! serve right now. The health layer produces it; `dataplane::plan` turns it into map updates.
use std::net::IpAddr;

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
    /// `cluster/listener`, stable across reloads.
    pub name: String,
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
