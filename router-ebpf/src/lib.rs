//! The map ABI shared by pgrouter's XDP program and its controller.
//!
//! Every map key and value type lives here once, `#[repr(C)]` with explicit padding and a size
//! assertion, so the kernel side and userspace can never drift apart. `docs/maps.md` mirrors this
//! file as a table.
//!
//! Byte order: fields named `*_be` or typed [`Be16`]/[`Be32`] hold network byte order exactly as
//! on the wire; everything else is host order. Addresses are `[u32; 4]` so IPv6 fits later: an
//! IPv4 address sits in word 0, words 1–3 are zero, and `family` says which.
#![no_std]

/// A 16-bit value in network byte order.
pub type Be16 = u16;
/// A 32-bit value in network byte order.
pub type Be32 = u32;

/// Bumped whenever a map layout below changes; userspace pins maps under a folder named after it
/// so an incompatible build never reads an old map.
pub const ABI_VERSION: u32 = 2;

/// Most services (VIP:port listeners) one data path serves.
pub const MAX_SERVICES: u32 = 256;
/// Most backend entries. Each (service, node) pair has its own entry, as HAProxy has one server
/// line per `listen` section, so counters and `maxconn` are per listener.
pub const MAX_BACKENDS: u32 = 4096;
/// Most members of one backend set.
pub const MAX_SET: usize = 32;
/// Default connection-tracking capacity in entries; each flow takes two (forward and reply).
pub const DEFAULT_CT_ENTRIES: u32 = 524_288;
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
    /// Every map pgrouter pins, in a stable order.
    pub const ALL: [&str; 11] = [
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
    ];
}

/// Name of the XDP program in the object.
pub const PROGRAM_NAME: &str = "pgrouter";

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
}
const _: () = assert!(size_of::<Service>() == 28);

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
}
const _: () = assert!(size_of::<BackendSet>() == 8 + 4 * MAX_SET);

impl Default for BackendSet {
    fn default() -> Self {
        Self {
            generation: 0,
            count: 0,
            ids: [0; MAX_SET],
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
/// The client sent a FIN.
pub const FLOW_F_FIN_CLIENT: u64 = 1 << 1;
/// The backend sent a FIN.
pub const FLOW_F_FIN_BACKEND: u64 = 1 << 2;
/// Closed (both FINs, or a RST): a new SYN on this tuple starts a new flow.
pub const FLOW_F_CLOSED: u64 = 1 << 3;
/// Reply entry only: the backend has answered with something other than a RST, so a later
/// RST is a reset of a connection, not a refusal (`BackendStats::refused`).
pub const FLOW_F_ANSWERED: u64 = 1 << 4;

/// Value of `PGR_CONNTRACK`: how to rewrite a packet whose tuple is the key. A flow has two
/// entries, forward (client → VIP) and reply (backend → SNAT address); only the kernel writes
/// them, userspace reads and deletes them.
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
    /// Last acknowledgement number sent in this entry's direction (network order), so a reset
    /// can be sent with an in-window sequence number.
    pub last_ack: Be32,
    /// `FLOW_F_*` bits; close state lives in the forward entry. 64-bit because the BPF
    /// backend encodes 32-bit fetch-or without the fetch flag (the old value is lost).
    pub flags: u64,
}
const _: () = assert!(size_of::<Flow>() == 56);
const _: () = assert!(core::mem::offset_of!(Flow, flags) == 48);

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
    pub new_flows: u64,
    pub rst_sent: u64,
    /// SYN dropped: the set is empty.
    pub drop_no_backend: u64,
    /// SYN dropped: every member is at `maxconn`.
    pub drop_maxconn: u64,
    /// SYN dropped: no free SNAT port after bounded probing.
    pub drop_snat_exhausted: u64,
    /// A non-SYN packet without a flow (mid-flow after eviction, or forged): LRU pressure shows
    /// here.
    pub ct_miss: u64,
}
const _: () = assert!(size_of::<ServiceStats>() == 80);

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
    /// SYNs that found this backend at `maxconn`.
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
    /// Dropped: SYN with no backend, all at maxconn, or SNAT exhausted (see service stats).
    pub const DROP_SYN: u32 = 9;
    /// A RST answered an unknown mid-flow packet.
    pub const RST_UNKNOWN_FLOW: u32 = 10;
    /// A RST answered a packet of a flow whose backend was shut down.
    pub const RST_SHUTDOWN: u32 = 11;
    /// Conntrack insert failed (map full under NOEXIST races); SYN dropped.
    pub const CT_INSERT_FAILED: u32 = 12;
    /// The redirect target interface is not in `PGR_IFACES`; passed.
    pub const PASS_NO_IFACE: u32 = 13;
    /// Dropped: a packet of a service arrived with a RST flag and no flow (never answer a RST).
    pub const DROP_RST_NO_FLOW: u32 = 14;
    /// Passed: the frame is addressed to another host's MAC (flooded by a switch that lost
    /// track of the VIP owner). Only the host the frame is for may answer it.
    pub const PASS_OTHER_HOST: u32 = 15;
    /// Names of the counters above, indexed by their value (status, metrics, docs/maps.md).
    pub const NAMES: [&str; 16] = [
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
    ];
    pub const COUNT: u32 = 16;
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
    ct_miss
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
}
