//! The ABI of flow-state sync: the controller's install and remove requests to
//! `pgrouter_gc`, the flow events the data path reports, the grace-window setting and the
//! sync counters. Beside the rest of the map ABI (re-exported at the crate root).
use super::{Flow, FlowKey};

/// [`SyncRequest::op`]: install a peer's established flow (both entries, slot taken without a
/// `maxconn` check: the node already holds the session), or refresh it when the request is
/// newer than what the table holds. Verdicts: `XDP_DROP` installed or refreshed, `XDP_PASS`
/// nothing newer, `XDP_TX` a conflict (the tuple or the SNAT port holds another flow here).
pub const GC_OP_SYNC_INSTALL: u32 = 3;
/// [`SyncRequest::op`]: a peer reports the flow whose reply key is `key` ended: remove it
/// (slot given back once) if it is still a synced entry, or if nothing newer than the
/// report's `fwd.last_seen` happened to it here. Verdicts: `XDP_DROP` removed, `XDP_PASS`
/// kept (gone, or live here).
pub const GC_OP_SYNC_REMOVE: u32 = 4;

/// The frame the controller hands to [`GC_PROGRAM_NAME`](super::GC_PROGRAM_NAME) for a sync operation: `key` is the
/// forward key (install) or the reply key (remove); `fwd` and `reply` are the entries as this
/// host is to hold them (ids and `last_seen` already translated to this host).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SyncRequest {
    pub op: u32,
    pub flags: u32,
    pub key: FlowKey,
    pub fwd: Flow,
    pub reply: Flow,
}
const _: () = assert!(size_of::<SyncRequest>() == 8 + 40 + 72 + 72);

/// [`FlowEvent::kind`]: a handshake completed (the flow entered `PGR_CONNTRACK`).
pub const FLOW_EVENT_ESTABLISHED: u32 = 1;
/// [`FlowEvent::kind`]: a flow was closed (FINs, exact RST, expiry, reap, take-over).
pub const FLOW_EVENT_CLOSED: u32 = 2;

/// A record of `PGR_FLOW_EVENTS` (ring buffer), written only while [`SYNC_F_EVENTS`] is set:
/// what flow-state sync sends to the peers. Established: `key` is the forward key, `fwd` and
/// `reply` the entries as inserted. Closed: `key` is the reply key (the SNAT port's owner),
/// `fwd` the forward entry; `reply` is zero.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FlowEvent {
    pub kind: u32,
    pub _pad: u32,
    pub key: FlowKey,
    pub fwd: Flow,
    pub reply: Flow,
}
const _: () = assert!(size_of::<FlowEvent>() == 192);

/// Size of `PGR_FLOW_EVENTS` in bytes (a power of two, page-aligned): ~5,400 events between
/// two reads of the controller, which drains it continuously.
pub const FLOW_EVENTS_BYTES: u32 = 1 << 20;

/// [`SyncState::flags`]: report flow events to `PGR_FLOW_EVENTS`.
pub const SYNC_F_EVENTS: u32 = 1;

/// Value of `PGR_SYNC` (array of one, key 0), written by the controller: whether flow events
/// are reported, and the takeover grace window. Until `grace_until_ns` (CLOCK_MONOTONIC) a
/// mid-flow packet without a flow is dropped instead of reset (the sync still in flight may
/// land; the sender retransmits), for a client packet to a service and for a node packet to
/// a port in `[grace_port_min, grace_port_max]` (the SNAT ports, which no local socket uses).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SyncState {
    pub flags: u32,
    pub grace_port_min: u16,
    pub grace_port_max: u16,
    pub grace_until_ns: u64,
}
const _: () = assert!(size_of::<SyncState>() == 16);

/// Per-CPU sync counters (`PGR_SYNC_STATS`, key 0). Its own map, not new `PGR_COUNTERS`
/// slots, so a pinned counters map from an earlier build stays compatible.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SyncStats {
    /// Events written to `PGR_FLOW_EVENTS`.
    pub events: u64,
    /// Events lost: the ring was full (the next refresh or full sync repairs the peer).
    pub events_lost: u64,
    /// Mid-flow packets without a flow dropped in the takeover grace window (not reset).
    pub grace_drops: u64,
    /// Synced entries whose first packet here set their sequence numbers afresh.
    pub adopted: u64,
}
const _: () = assert!(size_of::<SyncStats>() == 32);
