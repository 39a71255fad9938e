//! The program's maps. Types and names come from the shared ABI (`router_ebpf`); sizes here are
//! defaults that userspace may override at load time (`conntrack_entries`).
use aya_ebpf::{
    btf_maps::{Array, DevMapHash, HashMap, LruHashMap, PerCpuArray, RingBuf},
    helpers::bpf_ktime_get_coarse_ns,
    macros::btf_map,
};
use router_ebpf::{
    Backend, BackendSet, BackendStats, DEFAULT_CT_ENTRIES, DEFAULT_HS_ENTRIES, FLOW_EVENTS_BYTES,
    Flow, FlowEvent, FlowKey, IfaceMac, MAX_BACKENDS, MAX_IFACES, MAX_SERVICES, Service,
    ServiceKey, ServiceStats, SyncState, SyncStats, Timeouts, counter,
};

/// VIP:port → service. Written by userspace.
#[btf_map]
pub static PGR_SERVICES: HashMap<ServiceKey, Service, { MAX_SERVICES as usize }> = HashMap::new();

/// Service id → the backend set in force; replaced whole by userspace (atomic swap).
#[btf_map]
pub static PGR_BACKEND_SETS: HashMap<u32, BackendSet, { MAX_SERVICES as usize }> = HashMap::new();

/// Backend id → address, port, state, maxconn. Written by userspace.
#[btf_map]
pub static PGR_BACKENDS: Array<Backend, { MAX_BACKENDS as usize }> = Array::new();

/// Backend id → open flows (atomic). Incremented on a new flow, decremented once on close.
#[btf_map]
pub static PGR_BACKEND_CONNS: Array<u32, { MAX_BACKENDS as usize }> = Array::new();

/// 5-tuple → rewrite for flows whose handshake completed; two entries per flow. A plain hash,
/// not LRU: an established flow is never evicted, only closed or expired (and reaped).
#[btf_map]
pub static PGR_CONNTRACK: HashMap<FlowKey, Flow, { DEFAULT_CT_ENTRIES as usize }> = HashMap::new();

/// 5-tuple → rewrite for flows in their handshake; two entries per flow. LRU and small, so a SYN
/// flood evicts only other half-open flows and holds a bounded number of SNAT ports.
#[btf_map]
pub static PGR_HANDSHAKE: LruHashMap<FlowKey, Flow, { DEFAULT_HS_ENTRIES as usize }> =
    LruHashMap::new();

/// Flow timeouts, written by the controller (key 0).
#[btf_map]
pub static PGR_TIMEOUTS: Array<Timeouts, 1> = Array::new();

/// Per CPU, when the program last logged (ns): data-path log lines are rate-limited to one per
/// second per CPU, so a flood cannot flood the log too. Private (not pinned).
#[btf_map]
pub static PGR_LOG_RATE: PerCpuArray<u64, 1> = PerCpuArray::new();

/// Per CPU: the new flow being built (see `snat::Want`), off the 512-byte stack.
#[btf_map]
pub static PGR_SCRATCH: PerCpuArray<crate::snat::Want, 1> = PerCpuArray::new();

/// Per CPU: the copy of a backend set `select::choose` works on, off the stack.
#[btf_map]
pub static PGR_SET_SCRATCH: PerCpuArray<BackendSet, 1> = PerCpuArray::new();

/// SNAT port cursor per service, per CPU: where the sequential scan after the random probes
/// goes on (see `snat`).
#[btf_map]
pub static PGR_SNAT_CURSOR: PerCpuArray<u32, { MAX_SERVICES as usize }> = PerCpuArray::new();

#[btf_map]
pub static PGR_SERVICE_STATS: PerCpuArray<ServiceStats, { MAX_SERVICES as usize }> =
    PerCpuArray::new();

#[btf_map]
pub static PGR_BACKEND_STATS: PerCpuArray<BackendStats, { MAX_BACKENDS as usize }> =
    PerCpuArray::new();

/// Verdicts and reasons, indexed by `router_ebpf::counter::*`.
#[btf_map]
pub static PGR_COUNTERS: PerCpuArray<u64, { counter::COUNT as usize }> = PerCpuArray::new();

/// Round-robin cursor per service, per CPU (no cross-CPU contention on the SYN path).
#[btf_map]
pub static PGR_RR_CURSOR: PerCpuArray<u32, { MAX_SERVICES as usize }> = PerCpuArray::new();

/// Interfaces the program may redirect to (ifindex → ifindex), filled by userspace.
#[btf_map]
pub static PGR_IFACES: DevMapHash<{ MAX_IFACES as usize }> = DevMapHash::new();

/// Ingress ifindex → its MAC, filled by userspace at attach.
#[btf_map]
pub static PGR_IFACE_MACS: HashMap<u32, IfaceMac, { MAX_IFACES as usize }> = HashMap::new();

#[inline(always)]
pub fn count(idx: u32) {
    if let Some(p) = PGR_COUNTERS.get_ptr_mut(idx) {
        unsafe { *p += 1 };
    }
}

#[inline(always)]
pub fn service_stats(id: u32) -> Option<&'static mut ServiceStats> {
    PGR_SERVICE_STATS
        .get_ptr_mut(id)
        .map(|p| unsafe { &mut *p })
}

#[inline(always)]
pub fn backend_stats(id: u32) -> Option<&'static mut BackendStats> {
    PGR_BACKEND_STATS
        .get_ptr_mut(id)
        .map(|p| unsafe { &mut *p })
}

/// CLOCK_MONOTONIC_COARSE in ns: the clock of every `last_seen` (a few ms of resolution is
/// plenty for timeouts of seconds, and it is cheaper than the precise clock).
#[inline(always)]
pub fn now() -> u64 {
    unsafe { bpf_ktime_get_coarse_ns() }
}

/// The timeouts in force (zero fields mean the ABI defaults, see `state_timeout`).
#[inline(always)]
pub fn timeouts() -> Timeouts {
    match PGR_TIMEOUTS.get(0) {
        Some(t) => *t,
        None => Timeouts::default(),
    }
}

/// True at most once per second per CPU: gate for data-path log lines.
#[inline(always)]
pub fn may_log(now: u64) -> bool {
    let Some(p) = PGR_LOG_RATE.get_ptr_mut(0) else {
        return false;
    };
    unsafe {
        if now.wrapping_sub(*p) < 1_000_000_000 && *p != 0 {
            return false;
        }
        *p = now;
    }
    true
}

/// Flow events for flow-state sync (see `sync`): established and closed flows, read by the
/// controller and sent to the peer edge hosts. Written only while the controller enables it.
#[btf_map]
pub static PGR_FLOW_EVENTS: RingBuf<FlowEvent, { FLOW_EVENTS_BYTES as usize }> = RingBuf::new();

/// Whether events are reported, and the takeover grace window (key 0). Written by userspace.
#[btf_map]
pub static PGR_SYNC: Array<SyncState, 1> = Array::new();

/// Sync counters, per CPU (key 0).
#[btf_map]
pub static PGR_SYNC_STATS: PerCpuArray<SyncStats, 1> = PerCpuArray::new();

#[inline(always)]
pub fn sync_stats() -> Option<&'static mut SyncStats> {
    PGR_SYNC_STATS.get_ptr_mut(0).map(|p| unsafe { &mut *p })
}
