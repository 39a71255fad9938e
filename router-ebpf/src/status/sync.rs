//! Flow-state sync with the peer edge hosts, as `pgrouter status` shows it.
use serde::{Deserialize, Serialize};

/// `[sync]` at run time.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct SyncStatus {
    /// This host holds every peer's flows: each peer completed a full sync on its current
    /// connection. The `sync` VRRP track is this or being master. A host that is not ready
    /// can still take over, but the flows it lacks are reset.
    pub ready: bool,
    /// The SNAT ports this host allocates from (its share of `snat_ports`).
    pub snat_first: u16,
    pub snat_last: u16,
    /// The takeover grace window is open (this host became master less than `grace` ago).
    pub grace_open: bool,
    pub peers: Vec<PeerStatus>,
    /// Data-path counters (`PGR_SYNC_STATS`).
    pub events: u64,
    pub events_lost: u64,
    pub grace_drops: u64,
    pub adopted: u64,
    /// Connections refused before any peer could be named (not a sync hello, or a claimed
    /// address that is no configured peer).
    pub unknown_peer_failures: u64,
}

/// One peer: what we send it (our flows) and what it sends us (its flows).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct PeerStatus {
    /// The peer's `listen` address.
    pub addr: String,
    /// Our connection to it is up and authenticated (our flows reach it).
    pub sending: bool,
    /// Its connection to us is up and authenticated (its flows reach us).
    pub receiving: bool,
    /// Seconds since its last full sync completed here (`None`: none since start).
    pub last_full_sync_s: Option<u64>,
    pub full_syncs: u64,
    /// Its full sync on the current connection is complete.
    pub ready: bool,
    /// Messages queued for it, and the age of the oldest (ms).
    pub pending: u64,
    pub lag_ms: u64,
    pub bytes_sent: u64,
    pub bytes_received: u64,
    /// Flows installed or refreshed from it, and removed on its report.
    pub installed: u64,
    pub removed: u64,
    /// Entries refused: a VIP, listener or node the local config does not have, or a
    /// conflict with a flow here.
    pub rejected: u64,
    /// Connections or frames refused for a bad key, tag or sequence.
    pub auth_failures: u64,
    /// Our connection's last error, if it is down.
    pub last_error: Option<String>,
}
