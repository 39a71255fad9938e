//! pgrouter's status, typed: what the daemon answers on its control socket (`pgrouter status
//! --json`), what `pgrouter status` prints as tables and the metrics export, and what tests,
//! the demo and the benchmarks read back. One set of types serialised by the daemon and
//! deserialised by every reader, so a misspelt field is a compile error, not a silent 0.
//!
//! Beside the map ABI (feature `status`, serde only): xtask reads status without depending on
//! the daemon crate. Enums that mirror a daemon type (`Checks`, `ListenerKind`,
//! `VrrpState`, `BackendState`) are the wire form; router-user converts with exhaustive `From`
//! impls, so a new variant cannot be forgotten here.
//!
//! - [`Status`]: the whole answer; [`DatapathStatus`] and [`ListenerStatus`] come from the
//!   kernel maps and the flow GC.
//! - [`cluster`]: health checks per cluster ([`ClusterStatus`]).
//! - [`vrrp`]: one VRRP instance ([`InstanceStatus`]).
//! - [`sync`]: flow-state sync with the peer edge hosts ([`SyncStatus`]).
pub mod cluster;
pub mod sync;
pub mod vrrp;

use std::{collections::BTreeMap, net::IpAddr};

use serde::{Deserialize, Serialize};

pub use cluster::{
    CheckStatus, Checks, ClusterStatus, HealthCounters, LastCheck, ListenerKind, ListenerSet,
    NodeStatus, Verdict,
};
pub use sync::{PeerStatus, SyncStatus};
pub use vrrp::{InstanceStatus, VrrpCounters, VrrpState};

/// The control socket's answer to anything but `status` (`reload`, an unknown request).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Answer {
    pub ok: bool,
    pub message: String,
}

/// Everything `pgrouter status` shows.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Status {
    pub version: String,
    /// Map layout version of the running program (pins live under `v<abi>/`).
    pub abi_version: u32,
    pub uptime_s: u64,
    /// Path of the configuration file the daemon runs.
    pub config: String,
    pub datapath: DatapathStatus,
    pub clusters: Vec<ClusterStatus>,
    pub listeners: Vec<ListenerStatus>,
    pub vrrp: Vec<InstanceStatus>,
    /// Flow-state sync, with `[sync]` configured (absent from the JSON without it, so
    /// readers of an earlier version see the same answer).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sync: Option<SyncStatus>,
    pub last_error: Option<String>,
}

impl Status {
    /// The listener named `cluster/listener`.
    pub fn listener(&self, name: &str) -> Option<&ListenerStatus> {
        self.listeners.iter().find(|l| l.name == name)
    }

    /// The cluster named `name`.
    pub fn cluster(&self, name: &str) -> Option<&ClusterStatus> {
        self.clusters.iter().find(|c| c.cluster == name)
    }
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct DatapathStatus {
    /// (interface, attach mode), e.g. `("eth0", "native")`.
    pub interfaces: Vec<(String, String)>,
    pub pin_path: String,
    /// Entries in PGR_CONNTRACK (established flows, two per flow) at the flow GC's last full
    /// cycle: status never walks a table itself.
    pub tracked_entries: u64,
    /// Entries in PGR_HANDSHAKE (two per half-open flow) at the last full cycle, and its size.
    pub handshake_entries: u64,
    pub handshake_capacity: u64,
    /// Global verdict counters by name (`router_ebpf::counter::NAMES`).
    pub counters: BTreeMap<String, u64>,
    pub gc: GcStatus,
}

/// The flow garbage collector: its last full cycle and its totals since start.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct GcStatus {
    /// Seconds since the last full cycle ended; `None` before the first.
    pub last_cycle_age_s: Option<f64>,
    pub last_cycle_ms: Option<f64>,
    /// Entries read in the last full cycle.
    pub last_cycle_entries: u64,
    #[serde(flatten)]
    pub totals: GcCounters,
}

/// The flow collector's cumulative figures since the controller started (kept by
/// `dataplane::gc` itself, shown as they are).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GcCounters {
    /// Flows ended by the collector, by the state they expired in (`FLOW_STATE_NAMES`).
    pub expiries: BTreeMap<String, u64>,
    /// Established-table flows `pgrouter_gc` reaped (expired ones and orphans).
    pub reaped: u64,
    /// Reply entries reaped whose forward entry was gone.
    pub orphans: u64,
    /// Reaps the kernel refused (alive by its clock, or claimed).
    pub kept: u64,
    pub drift_corrections: u64,
    pub full_cycles: u64,
    pub entries_walked: u64,
    /// Failed syscalls (walks, deletes, program runs).
    pub errors: u64,
}

/// Flows of one backend by life-cycle state, at the flow GC's last full cycle.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FlowsByState {
    pub handshake: u64,
    pub established: u64,
    pub closing: u64,
    pub closed: u64,
}

impl From<[u64; 4]> for FlowsByState {
    /// In `FLOW_STATE_*` order: handshake, established, closing, closed.
    fn from(v: [u64; 4]) -> Self {
        Self {
            handshake: v[0],
            established: v[1],
            closing: v[2],
            closed: v[3],
        }
    }
}

/// One listener (VIP:port) as the data path counts it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ListenerStatus {
    /// `cluster/listener`.
    pub name: String,
    pub vip: IpAddr,
    pub port: u16,
    pub fallback_active: bool,
    /// Generation of the published set; 0 before the first publication.
    pub generation: u32,
    pub new_flows: u64,
    pub rst_sent: u64,
    pub drop_no_backend: u64,
    pub drop_maxconn: u64,
    pub drop_snat_exhausted: u64,
    pub ct_miss: u64,
    /// SYNs answered by a RST: the set stayed empty past its hold (or the listener rejects).
    pub rst_no_backend: u64,
    /// Handshakes completed (the flow took its slot).
    pub established: u64,
    /// Completed handshakes dropped because PGR_CONNTRACK was full.
    pub drop_ct_full: u64,
    /// SNAT ports held by this listener's flows that are not closed (half-open or open; a
    /// closed flow's port is reusable at once) at the last full GC cycle, and the size of its
    /// SNAT range.
    pub snat_ports_in_use: u64,
    pub snat_ports: u64,
    pub backends: Vec<BackendStatus>,
}

impl Default for ListenerStatus {
    fn default() -> Self {
        Self {
            name: String::new(),
            vip: IpAddr::from([0, 0, 0, 0]),
            port: 0,
            fallback_active: false,
            generation: 0,
            new_flows: 0,
            rst_sent: 0,
            drop_no_backend: 0,
            drop_maxconn: 0,
            drop_snat_exhausted: 0,
            ct_miss: 0,
            rst_no_backend: 0,
            established: 0,
            drop_ct_full: 0,
            snat_ports_in_use: 0,
            snat_ports: 0,
            backends: Vec::new(),
        }
    }
}

impl ListenerStatus {
    /// The backend for node `node`.
    pub fn backend(&self, node: &str) -> Option<&BackendStatus> {
        self.backends.iter().find(|b| b.node == node)
    }
}

/// What one node is to one listener, as status names it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BackendState {
    /// In the set: takes new connections.
    #[default]
    Active,
    /// Out of the set; existing sessions continue.
    Drain,
    /// Marked down with shutdown-sessions: existing sessions are reset.
    Down,
}

impl BackendState {
    pub fn as_str(self) -> &'static str {
        match self {
            BackendState::Active => "active",
            BackendState::Drain => "drain",
            BackendState::Down => "down",
        }
    }
}

/// One node as one listener's backend, as the data path counts it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackendStatus {
    pub node: String,
    pub addr: IpAddr,
    pub state: BackendState,
    /// Slots taken (PGR_BACKEND_CONNS): open established flows, as maxconn counts them.
    pub active_flows: u32,
    /// Flows in the tables by state, at the last full GC cycle.
    pub flows: FlowsByState,
    pub maxconn: u32,
    pub new_flows: u64,
    pub packets_in: u64,
    pub bytes_in: u64,
    pub packets_out: u64,
    pub bytes_out: u64,
    pub rst_sent: u64,
    pub drop_maxconn: u64,
    /// Connections the node refused (nothing listening on its port).
    pub refused: u64,
}

impl Default for BackendStatus {
    fn default() -> Self {
        Self {
            node: String::new(),
            addr: IpAddr::from([0, 0, 0, 0]),
            state: BackendState::default(),
            active_flows: 0,
            flows: FlowsByState::default(),
            maxconn: 0,
            new_flows: 0,
            packets_in: 0,
            bytes_in: 0,
            packets_out: 0,
            bytes_out: 0,
            rst_sent: 0,
            drop_maxconn: 0,
            refused: 0,
        }
    }
}

#[cfg(test)]
mod tests;
