//! The map ABI shared by pgrouter's XDP program and its controller.
//!
//! Every map key and value type lives here once, `#[repr(C)]` with explicit padding and a size
//! assertion, so the kernel side and userspace can never drift apart. `docs/maps.md` mirrors this
//! file as a table.
//!
//! Byte order: fields named `*_be` or typed [`Be16`]/[`Be32`] hold network byte order exactly as
//! on the wire; everything else is host order. Addresses are `[u32; 4]` so IPv6 fits later: an
//! IPv4 address sits in word 0, words 1–3 are zero, and `family` says which.
//!
//! Under the `status` feature the crate also carries [`status`], the other interface pgrouter's
//! components share: the control socket's typed status answer. It lives here, not in the daemon
//! crate, so xtask can read status without building the daemon (whose build needs the
//! toolchain `cargo xtask setup` installs); that feature makes the crate `std`.
#![cfg_attr(not(feature = "status"), no_std)]

#[cfg(feature = "status")]
pub mod status;

pub mod replication;
pub use replication::*;

/// A 16-bit value in network byte order.
pub type Be16 = u16;
/// A 32-bit value in network byte order.
pub type Be32 = u32;

/// Bumped whenever a map layout below changes; userspace pins maps under a folder named after it
/// so an incompatible build never reads an old map.
pub const ABI_VERSION: u32 = 3;

/// Most services (VIP:port listeners) one data path serves.
pub const MAX_SERVICES: u32 = 256;
/// Most backend entries. Each (service, node) pair has its own entry, as HAProxy has one server
/// line per `listen` section, so counters and `maxconn` are per listener.
pub const MAX_BACKENDS: u32 = 4096;
/// Most members of one backend set.
pub const MAX_SET: usize = 32;
/// Default connection-tracking capacity in entries; each flow takes two (forward and reply).
pub const DEFAULT_CT_ENTRIES: u32 = 524_288;
/// Default handshake-table capacity in entries (two per half-open flow). Small on purpose: it
/// bounds how many SNAT ports half-open flows (a SYN flood) can hold at once, and a flood only
/// ever evicts other half-open flows, never established ones.
pub const DEFAULT_HS_ENTRIES: u32 = 16_384;

/// Default flow timeouts (ns). Handshake: from the SYN until the client's ACK completes it
/// (HAProxy's `timeout connect`). Established: idle time, at least 2 h 4 min (RFC 5382 REQ-5).
/// Closing: idle time after a FIN in one direction (netfilter's fin_wait). Closed: how long a
/// flow whose FINs were both acknowledged, or that saw a valid RST, keeps translating late
/// retransmissions; its SNAT port is reusable within 10 ms regardless.
pub const DEFAULT_TIMEOUT_HANDSHAKE_NS: u64 = 5_000_000_000;
pub const DEFAULT_TIMEOUT_ESTABLISHED_NS: u64 = 7_440_000_000_000;
pub const DEFAULT_TIMEOUT_CLOSING_NS: u64 = 120_000_000_000;
pub const DEFAULT_TIMEOUT_CLOSED_NS: u64 = 10_000_000_000;
/// How long a node that closed first keeps the 4-tuple in TIME_WAIT (Linux: 60 s). A SNAT port
/// whose flow the backend closed first is reused within this time only when no other port is
/// free: the node answers a SYN on it with a challenge ACK unless the SYN's timestamp or
/// sequence number happens to be newer (RFC 6191), and the client then retransmits.
pub const NODE_TIME_WAIT_NS: u64 = 60_000_000_000;
/// Default hold for a SYN to a listener whose set is empty (ms): dropped silently, so the
/// client retransmits and connects once a backend exists, for this long after the set became
/// empty; then answered by a RST. Covers a planned switchover (2–3 s in the lab). At most 7 s:
/// a client retransmits its SYN 1, 3 and 7 s after the first, so with a hold of 7 s or less
/// every client has a connection or a refusal within 7 s of its first SYN, before pgjdbc's
/// 10 s `connectTimeout` (with 8 s, a SYN sent as the set emptied would be retransmitted
/// next at 15 s: a timeout, not a refusal).
pub const DEFAULT_EMPTY_HOLD_MS: u32 = 6_000;
/// Interfaces the program may redirect to.
pub const MAX_IFACES: u32 = 64;

pub const FAMILY_IPV4: u8 = 4;
pub const FAMILY_IPV6: u8 = 6;
pub const PROTO_TCP: u8 = 6;

/// Names of the maps, as userspace pins and opens them.
pub mod map_names {
    pub const SERVICES: &str = "PGR_SERVICES";
    pub const BACKEND_SETS: &str = "PGR_BACKEND_SETS";
    pub const BACKENDS: &str = "PGR_BACKENDS";
    pub const BACKEND_CONNS: &str = "PGR_BACKEND_CONNS";
    pub const CONNTRACK: &str = "PGR_CONNTRACK";
    pub const SERVICE_STATS: &str = "PGR_SERVICE_STATS";
    pub const BACKEND_STATS: &str = "PGR_BACKEND_STATS";
    pub const COUNTERS: &str = "PGR_COUNTERS";
    pub const RR_CURSOR: &str = "PGR_RR_CURSOR";
    pub const IFACES: &str = "PGR_IFACES";
    pub const IFACE_MACS: &str = "PGR_IFACE_MACS";
    pub const HANDSHAKE: &str = "PGR_HANDSHAKE";
    pub const TIMEOUTS: &str = "PGR_TIMEOUTS";
    pub const FLOW_EVENTS: &str = "PGR_FLOW_EVENTS";
    pub const SYNC: &str = "PGR_SYNC";
    pub const SYNC_STATS: &str = "PGR_SYNC_STATS";
    /// Every map pgrouter pins, in a stable order.
    pub const ALL: [&str; 16] = [
        SERVICES,
        BACKEND_SETS,
        BACKENDS,
        BACKEND_CONNS,
        CONNTRACK,
        SERVICE_STATS,
        BACKEND_STATS,
        COUNTERS,
        RR_CURSOR,
        IFACES,
        IFACE_MACS,
        HANDSHAKE,
        TIMEOUTS,
        FLOW_EVENTS,
        SYNC,
        SYNC_STATS,
    ];
}

/// Name of the XDP program in the object.
pub const PROGRAM_NAME: &str = "pgrouter";
/// Name of the flow-reaping program: never attached, run by the controller's garbage
/// collector through `BPF_PROG_TEST_RUN` with a [`GcRequest`] as the frame, so a slot is given
/// back by the same atomic close as on the packet path (userspace has no atomics on maps).
pub const GC_PROGRAM_NAME: &str = "pgrouter_gc";

/// Key of `PGR_SERVICES`: a listener address as the client addresses it.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ServiceKey {
    /// The VIP (network order; IPv4 in word 0).
    pub addr: [Be32; 4],
    /// Listener port (network order).
    pub port: Be16,
    /// IP protocol; only [`PROTO_TCP`] is served.
    pub proto: u8,
    /// [`FAMILY_IPV4`] or [`FAMILY_IPV6`].
    pub family: u8,
}
const _: () = assert!(size_of::<ServiceKey>() == 20);

/// Balance modes of a service.
pub const BALANCE_ROUND_ROBIN: u8 = 0;
pub const BALANCE_LEAST_CONN: u8 = 1;
pub const BALANCE_SOURCE_HASH: u8 = 2;

/// Service flag: on withdrawal, reset the backend's flows (HAProxy's
/// `on-marked-down shutdown-sessions`). Without it withdrawn flows drain.
pub const SVC_F_SHUTDOWN_SESSIONS: u8 = 1 << 0;

/// Value of `PGR_SERVICES`. Written by userspace only.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Service {
    /// Index into `PGR_BACKEND_SETS`, `PGR_SERVICE_STATS` and `PGR_RR_CURSOR`.
    pub id: u32,
    /// One of the `BALANCE_*` modes.
    pub balance: u8,
    /// `SVC_F_*` bits.
    pub flags: u8,
    pub _pad: [u8; 2],
    /// Source address for the backend leg (network order); the VIP by default.
    pub snat_addr: [Be32; 4],
    /// Inclusive SNAT port range (host order). Keep it out of the kernel's ephemeral range.
    pub snat_port_min: u16,
    pub snat_port_max: u16,
    /// How long after its set became empty a SYN is held (dropped silently, so the client
    /// retransmits) before SYNs are answered by a RST (ms, host order). 0: RST at once
    /// (`on_empty = "reject"`).
    pub empty_hold_ms: u32,
}
const _: () = assert!(size_of::<Service>() == 32);

/// Value of `PGR_BACKEND_SETS` (key: service id). Userspace replaces the whole value in one
/// hash-map update, which the kernel swaps in atomically, so a packet sees either the old
/// generation or the new one, never a mix.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BackendSet {
    /// Generation counter, bumped on every publication (for tracing and status).
    pub generation: u32,
    /// Number of valid entries in `ids`; 0 means no backend can take new flows.
    pub count: u32,
    /// Backend ids (indexes into `PGR_BACKENDS`).
    pub ids: [u32; MAX_SET],
    /// With `count == 0`: when the set became empty (CLOCK_MONOTONIC ns, the clock of
    /// `bpf_ktime_get_coarse_ns`), kept across republications while it stays empty; the
    /// service's `empty_hold_ms` counts from here. 0 otherwise.
    pub empty_since_ns: u64,
}
const _: () = assert!(size_of::<BackendSet>() == 8 + 4 * MAX_SET + 8);

impl Default for BackendSet {
    fn default() -> Self {
        Self {
            generation: 0,
            count: 0,
            ids: [0; MAX_SET],
            empty_since_ns: 0,
        }
    }
}

/// Backend states.
/// The entry is unused.
pub const BACKEND_UNUSED: u8 = 0;
/// In service: may be chosen for new flows, existing flows continue.
pub const BACKEND_ACTIVE: u8 = 1;
/// Not chosen for new flows; existing flows continue (healthy but deselected, e.g. the primary
/// serving reads as fallback once a replica is back, or `on_marked_down = "keep"`).
pub const BACKEND_DRAIN: u8 = 2;
/// Marked down with shutdown-sessions: every packet of an existing flow is answered by a RST
/// and the flow is removed.
pub const BACKEND_SHUTDOWN: u8 = 3;

/// Value of `PGR_BACKENDS` (array, key: backend id). Written by userspace.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Backend {
    /// Node address (network order).
    pub addr: [Be32; 4],
    /// PostgreSQL port (network order).
    pub port: Be16,
    pub family: u8,
    /// One of the `BACKEND_*` states.
    pub state: u8,
    /// The service this entry belongs to.
    pub service_id: u32,
    /// Most concurrent flows; 0 means unlimited.
    pub maxconn: u32,
}
const _: () = assert!(size_of::<Backend>() == 28);

/// Key of `PGR_CONNTRACK`: a packet's 5-tuple as seen on the wire.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct FlowKey {
    pub saddr: [Be32; 4],
    pub daddr: [Be32; 4],
    pub sport: Be16,
    pub dport: Be16,
    pub proto: u8,
    pub family: u8,
    pub _pad: [u8; 2],
}
const _: () = assert!(size_of::<FlowKey>() == 40);

/// Flow flag: this entry translates backend → client packets (the reply direction).
pub const FLOW_F_REPLY: u64 = 1 << 0;
/// Forward entry: the client's FIN was acknowledged by the backend (so it was in-window: the
/// backend, not us, judged it).
pub const FLOW_F_FIN_CLIENT: u64 = 1 << 1;
/// Forward entry: the backend's FIN was acknowledged by the client.
pub const FLOW_F_FIN_BACKEND: u64 = 1 << 2;
/// Forward entry: closed (both FINs acknowledged, a RST with the exact expected sequence
/// number, an expiry, or a shutdown). Set once, atomically; whoever sets it gives the slot
/// back. A closed flow's SNAT port is reusable within 10 ms; a new SYN on its tuple starts afresh.
pub const FLOW_F_CLOSED: u64 = 1 << 3;
/// Reply entry: the backend has answered our SYN with a SYN-ACK, so a later RST is a reset of
/// a connection, not a refusal (`BackendStats::refused`).
pub const FLOW_F_ANSWERED: u64 = 1 << 4;
/// The other direction sent a FIN ending at `peer_fin_end`; this direction's ACK of it makes
/// it count.
pub const FLOW_F_PEER_FIN: u64 = 1 << 5;
/// This direction has acknowledged the other direction's FIN (recorded once).
pub const FLOW_F_PEER_FIN_ACKED: u64 = 1 << 6;
/// Forward entry: the backend's FIN did not acknowledge the client's (it closed first, or the
/// FINs crossed), so the node holds the 4-tuple in TIME_WAIT (see [`NODE_TIME_WAIT_NS`]).
pub const FLOW_F_BACKEND_CLOSED_FIRST: u64 = 1 << 7;
/// Forward entry: the client has sent a FIN (acknowledged or not), so the flow is closing.
pub const FLOW_F_CLIENT_FIN_SEEN: u64 = 1 << 8;
/// Installed by flow-state sync from a peer edge host and not yet seen a packet here: its
/// sequence numbers are as of the peer's last report, so its next packet in this direction
/// sets them afresh (instead of being judged out of window), and its close is not reported
/// back to the peers (they own it). Cleared by that packet: from then on the flow is this
/// host's.
pub const FLOW_F_SYNCED: u64 = 1 << 9;

/// Value of `PGR_CONNTRACK` (established flows) and `PGR_HANDSHAKE` (flows whose handshake has
/// not completed): how to rewrite a packet whose tuple is the key. A flow has two entries,
/// forward (client → VIP) and reply (backend → SNAT address), always in the same table; only
/// the kernel writes them, userspace reads and deletes them (and reaps through
/// [`GC_PROGRAM_NAME`]).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Flow {
    /// Rewritten source address (network order).
    pub saddr: [Be32; 4],
    /// Rewritten destination address (network order).
    pub daddr: [Be32; 4],
    /// Rewritten source port (network order).
    pub sport: Be16,
    /// Rewritten destination port (network order).
    pub dport: Be16,
    pub backend_id: u32,
    pub service_id: u32,
    /// Last acknowledgement number sent in this entry's direction (network order): a RST in
    /// the other direction closes the flow only with exactly this sequence number (RFC 5961
    /// §3.2), and a controller reset lands in-window.
    pub last_ack: Be32,
    /// `FLOW_F_*` bits; close state lives in the forward entry. 64-bit because the BPF
    /// backend encodes 32-bit fetch-or without the fetch flag (the old value is lost).
    pub flags: u64,
    /// CLOCK_MONOTONIC_COARSE ns of the last packet in this entry's direction; in the
    /// handshake table, of the first SYN (retransmissions do not extend a handshake).
    pub last_seen: u64,
    /// Host order. In the handshake table: the client's initial sequence number, in both
    /// entries (a RST from the node is a refusal only if it acknowledges exactly `seq + 1`).
    /// In the conntrack table: the sequence number right after the last segment sent in this
    /// entry's direction (0 until one is seen), so a RST sent before the other side
    /// acknowledged that data is still judged exact, as its receiver judges it.
    pub seq: u32,
    /// With [`FLOW_F_PEER_FIN`]: the sequence number right after the other direction's FIN
    /// (host order); an ACK of at least this acknowledges it.
    pub peer_fin_end: u32,
}
const _: () = assert!(size_of::<Flow>() == 72);

impl Flow {
    /// The key of this flow's other entry: the tuple of the packets this entry rewrites
    /// into, reversed (forward entry → reply key, reply entry → client tuple).
    #[inline(always)]
    pub const fn peer_key(&self) -> FlowKey {
        FlowKey {
            saddr: self.daddr,
            daddr: self.saddr,
            sport: self.dport,
            dport: self.sport,
            proto: PROTO_TCP,
            family: FAMILY_IPV4,
            _pad: [0; 2],
        }
    }
}
const _: () = assert!(core::mem::offset_of!(Flow, flags) == 48);
const _: () = assert!(core::mem::offset_of!(Flow, last_seen) == 56);

/// Value of `PGR_TIMEOUTS` (array of one, key 0): flow timeouts in ns, written by the
/// controller at start and on reload. A zero field means the `DEFAULT_TIMEOUT_*` constant.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Timeouts {
    pub handshake_ns: u64,
    pub established_ns: u64,
    pub closing_ns: u64,
    pub closed_ns: u64,
}
const _: () = assert!(size_of::<Timeouts>() == 32);

/// [`GcRequest::op`]: reap the flow whose forward (or orphaned reply) entry has key `key` in
/// `PGR_CONNTRACK` if it has expired by the kernel's clock; with [`GC_F_FORCE`], whatever its
/// age. Verdict: `XDP_DROP` reaped, `XDP_PASS` kept (alive, claimed, or gone).
pub const GC_OP_REAP: u32 = 1;
/// [`GcRequest::op`]: add `delta` to backend `backend_id`'s open-flow count atomically
/// (a drift correction found by the controller's recount). Verdict `XDP_DROP`.
pub const GC_OP_ADJUST: u32 = 2;
/// `pgrouter_gc`'s verdicts (XDP action codes), as the controller reads them.
pub mod gc_verdict {
    /// `XDP_ABORTED`: a malformed request.
    pub const MALFORMED: u32 = 0;
    /// `XDP_DROP`: done (reaped, adjusted, installed, removed).
    pub const DONE: u32 = 1;
    /// `XDP_PASS`: nothing to do (alive, gone, nothing newer, live here).
    pub const KEPT: u32 = 2;
    /// `XDP_TX`: a sync install that conflicts with another flow here.
    pub const CONFLICT: u32 = 3;
}

/// [`GcRequest::flags`]: reap even if not expired.
pub const GC_F_FORCE: u32 = 1;

/// The frame the controller hands to [`GC_PROGRAM_NAME`] under `BPF_PROG_TEST_RUN`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GcRequest {
    pub op: u32,
    pub flags: u32,
    pub backend_id: u32,
    pub delta: i32,
    pub key: FlowKey,
}
const _: () = assert!(size_of::<GcRequest>() == 56);

/// A flow's life-cycle state as status and metrics report it, derived from the table it is in
/// and its forward entry's flags ([`flow_state`]).
pub const FLOW_STATE_HANDSHAKE: u8 = 0;
pub const FLOW_STATE_ESTABLISHED: u8 = 1;
pub const FLOW_STATE_CLOSING: u8 = 2;
pub const FLOW_STATE_CLOSED: u8 = 3;
pub const FLOW_STATE_NAMES: [&str; 4] = ["handshake", "established", "closing", "closed"];

/// State of a flow in `PGR_CONNTRACK` from its forward entry's flags (the handshake table
/// holds only [`FLOW_STATE_HANDSHAKE`] flows): any FIN seen makes it closing.
#[inline(always)]
pub const fn flow_state(fwd_flags: u64) -> u8 {
    if fwd_flags & FLOW_F_CLOSED != 0 {
        FLOW_STATE_CLOSED
    } else if fwd_flags
        & (FLOW_F_FIN_CLIENT | FLOW_F_FIN_BACKEND | FLOW_F_PEER_FIN | FLOW_F_CLIENT_FIN_SEEN)
        != 0
    {
        FLOW_STATE_CLOSING
    } else {
        FLOW_STATE_ESTABLISHED
    }
}

/// The timeout (ns) of a flow state, zero fields meaning the defaults.
#[inline(always)]
pub const fn state_timeout(t: &Timeouts, state: u8) -> u64 {
    let (v, d) = match state {
        FLOW_STATE_HANDSHAKE => (t.handshake_ns, DEFAULT_TIMEOUT_HANDSHAKE_NS),
        FLOW_STATE_ESTABLISHED => (t.established_ns, DEFAULT_TIMEOUT_ESTABLISHED_NS),
        FLOW_STATE_CLOSING => (t.closing_ns, DEFAULT_TIMEOUT_CLOSING_NS),
        _ => (t.closed_ns, DEFAULT_TIMEOUT_CLOSED_NS),
    };
    if v == 0 { d } else { v }
}

/// Value of `PGR_IFACE_MACS` (hash, key: ifindex): the interface's MAC address, so the
/// program ignores frames a switch flooded to it that are meant for another host.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct IfaceMac {
    pub mac: [u8; 6],
    pub _pad: [u8; 2],
}
const _: () = assert!(size_of::<IfaceMac>() == 8);

/// Per-service counters (`PGR_SERVICE_STATS`, per-CPU array, key: service id).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ServiceStats {
    /// Client → backend packets and bytes (L3).
    pub packets_in: u64,
    pub bytes_in: u64,
    /// Backend → client packets and bytes (L3).
    pub packets_out: u64,
    pub bytes_out: u64,
    /// Handshakes started (SYN forwarded to a backend).
    pub new_flows: u64,
    pub rst_sent: u64,
    /// SYN dropped: the set is empty and within its hold (the client retransmits).
    pub drop_no_backend: u64,
    /// SYN dropped, or a handshake's completion held back: every member is at `maxconn`.
    pub drop_maxconn: u64,
    /// SYN dropped: no free SNAT port.
    pub drop_snat_exhausted: u64,
    /// A non-SYN packet without a live flow (expired, reaped, or forged).
    pub ct_miss: u64,
    /// SYN answered by a RST: the set is empty past its hold (or `on_empty = "reject"`).
    pub rst_no_backend: u64,
    /// Handshakes completed: the flow moved to the established table and took its slot.
    pub established: u64,
    /// A completed handshake found the established table full (the client retransmits).
    pub drop_ct_full: u64,
}
const _: () = assert!(size_of::<ServiceStats>() == 104);

/// Per-backend counters (`PGR_BACKEND_STATS`, per-CPU array, key: backend id).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BackendStats {
    pub packets_in: u64,
    pub bytes_in: u64,
    pub packets_out: u64,
    pub bytes_out: u64,
    pub new_flows: u64,
    pub rst_sent: u64,
    /// SYNs or handshake completions that found this backend at `maxconn`.
    pub drop_maxconn: u64,
    /// Connections the backend refused: a RST before any other answer to our SYN, i.e.
    /// nothing listens on the port (PostgreSQL stopped or restarting). The controller polls
    /// it to take the node out at once, before Patroni's API shows anything.
    pub refused: u64,
}
const _: () = assert!(size_of::<BackendStats>() == 64);

/// Global verdict and reason counters (`PGR_COUNTERS`, per-CPU array of u64, key: the
/// constant). Every early return of the program counts here.
pub mod counter {
    /// Passed: not IPv4 (ARP, IPv6, VLAN …).
    pub const PASS_NOT_IPV4: u32 = 0;
    /// Passed: IPv4 but not TCP (VRRP, ICMP, UDP …).
    pub const PASS_NOT_TCP: u32 = 1;
    /// Passed: TCP not addressed to a service nor a known reply flow.
    pub const PASS_NOT_OURS: u32 = 2;
    /// Passed: the frame was too short for the headers it announced.
    pub const PASS_MALFORMED: u32 = 3;
    /// Passed: a service packet with IP options or fragmented; the kernel handles it.
    pub const PASS_UNSUPPORTED: u32 = 4;
    /// Passed after rewriting: no neighbour entry for the next hop yet; the kernel forwards it.
    pub const PASS_NO_NEIGH: u32 = 5;
    /// Passed after rewriting: the FIB lookup failed otherwise; the kernel routes it.
    pub const PASS_FIB_OTHER: u32 = 6;
    pub const TX: u32 = 7;
    pub const REDIRECT: u32 = 8;
    /// Dropped: SYN with every member at maxconn, or no SNAT port free (see service stats).
    pub const DROP_SYN: u32 = 9;
    /// A RST answered an unknown mid-flow packet.
    pub const RST_UNKNOWN_FLOW: u32 = 10;
    /// A RST answered a packet of a flow whose backend was shut down.
    pub const RST_SHUTDOWN: u32 = 11;
    /// A SYN lost the race for its tuple to a duplicate on another CPU; dropped.
    pub const CT_INSERT_FAILED: u32 = 12;
    /// The redirect target interface is not in `PGR_IFACES`; passed.
    pub const PASS_NO_IFACE: u32 = 13;
    /// Dropped: a packet of a service arrived with a RST flag and no flow (never answer a RST).
    pub const DROP_RST_NO_FLOW: u32 = 14;
    /// Passed: the frame is addressed to another host's MAC (flooded by a switch that lost
    /// track of the VIP owner). Only the host the frame is for may answer it.
    pub const PASS_OTHER_HOST: u32 = 15;
    /// Dropped: a SYN to an empty set within its hold (the client's retransmission retries).
    pub const DROP_SYN_HELD: u32 = 16;
    /// A RST answered a SYN: the set is empty past its hold, or the listener rejects at once.
    pub const RST_NO_BACKEND: u32 = 17;
    /// Dropped: a handshake's completing ACK while every slot of its backend is taken; the
    /// client's retransmission retries until the handshake timeout.
    pub const DROP_WAIT_SLOT: u32 = 18;
    /// Dropped: a completed handshake found the established table full.
    pub const DROP_CT_FULL: u32 = 19;
    /// Forwarded without closing the flow: a RST whose sequence number is not exactly the one
    /// expected (RFC 5961: the endpoint answers it with a challenge ACK).
    pub const RST_NOT_EXACT: u32 = 20;
    /// Forwarded, not counted as a refusal: a RST "from" a node that does not acknowledge our
    /// SYN's ISN + 1.
    pub const RST_FORGED_REFUSAL: u32 = 21;
    /// A packet found its flow expired: the flow was ended (slot and port given back).
    pub const EXPIRED_ON_PACKET: u32 = 22;
    /// A new flow took over the SNAT port of a closed or expired flow.
    pub const SNAT_REUSED: u32 = 23;
    /// A new flow's SNAT port was found only by the linear scan after the random probes.
    pub const SNAT_SCANNED: u32 = 24;
    /// Translated without learning from it: an established flow's segment whose sequence
    /// number lies far from what the other side acknowledged (a blind spoof, or a lost
    /// sync); its ACK, FIN are ignored by the data path.
    pub const SEQ_OUT_OF_WINDOW: u32 = 25;
    /// Names of the counters above, indexed by their value (status, metrics, docs/maps.md).
    pub const NAMES: [&str; 26] = [
        "pass_not_ipv4",
        "pass_not_tcp",
        "pass_not_ours",
        "pass_malformed",
        "pass_unsupported",
        "pass_no_neigh",
        "pass_fib_other",
        "tx",
        "redirect",
        "drop_syn",
        "rst_unknown_flow",
        "rst_shutdown",
        "ct_insert_failed",
        "pass_no_iface",
        "drop_rst_no_flow",
        "pass_other_host",
        "drop_syn_held",
        "rst_no_backend",
        "drop_wait_slot",
        "drop_ct_full",
        "rst_not_exact",
        "rst_forged_refusal",
        "expired_on_packet",
        "snat_reused",
        "snat_scanned",
        "seq_out_of_window",
    ];
    pub const COUNT: u32 = 26;
    const _: () = assert!(NAMES.len() as u32 == COUNT);
}

/// Field-wise sums, for adding up per-CPU values in userspace.
macro_rules! impl_accumulate {
    ($t:ty { $($f:ident),+ }) => {
        impl $t {
            pub fn accumulate(&mut self, o: &Self) {
                $(self.$f += o.$f;)+
            }
        }
    };
}
impl_accumulate!(ServiceStats {
    packets_in,
    bytes_in,
    packets_out,
    bytes_out,
    new_flows,
    rst_sent,
    drop_no_backend,
    drop_maxconn,
    drop_snat_exhausted,
    ct_miss,
    rst_no_backend,
    established,
    drop_ct_full
});
impl_accumulate!(SyncStats {
    events,
    events_lost,
    grace_drops,
    adopted
});
impl_accumulate!(BackendStats {
    packets_in,
    bytes_in,
    packets_out,
    bytes_out,
    new_flows,
    rst_sent,
    drop_maxconn,
    refused
});

#[cfg(feature = "user")]
mod pod {
    use super::*;
    // SAFETY: all types are `repr(C)`, `Copy`, with explicit padding and no pointers.
    unsafe impl aya::Pod for ServiceKey {}
    unsafe impl aya::Pod for Service {}
    unsafe impl aya::Pod for BackendSet {}
    unsafe impl aya::Pod for Backend {}
    unsafe impl aya::Pod for FlowKey {}
    unsafe impl aya::Pod for Flow {}
    unsafe impl aya::Pod for IfaceMac {}
    unsafe impl aya::Pod for ServiceStats {}
    unsafe impl aya::Pod for BackendStats {}
    unsafe impl aya::Pod for Timeouts {}
    unsafe impl aya::Pod for GcRequest {}
    unsafe impl aya::Pod for SyncRequest {}
    unsafe impl aya::Pod for FlowEvent {}
    unsafe impl aya::Pod for SyncState {}
    unsafe impl aya::Pod for SyncStats {}
}
