//! The program's maps. Types and names come from the shared ABI (`router_ebpf`); sizes here are
//! defaults that userspace may override at load time (`conntrack_entries`).
use aya_ebpf::{
    btf_maps::{Array, DevMapHash, HashMap, LruHashMap, PerCpuArray},
    macros::btf_map,
};
use router_ebpf::{
    Backend, BackendSet, BackendStats, DEFAULT_CT_ENTRIES, Flow, FlowKey, IfaceMac, MAX_BACKENDS,
    MAX_IFACES, MAX_SERVICES, Service, ServiceKey, ServiceStats, counter,
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

/// 5-tuple → rewrite; two entries per flow. LRU, so idle flows live until pressure evicts them.
#[btf_map]
pub static PGR_CONNTRACK: LruHashMap<FlowKey, Flow, { DEFAULT_CT_ENTRIES as usize }> =
    LruHashMap::new();

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
