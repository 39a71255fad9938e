//! Applies planned deltas to the kernel maps and reads counters back.
use anyhow::{Context as _, anyhow};
use aya::maps::{Array, HashMap, Map, MapData, PerCpuArray, xdp::DevMapHash};
use router_ebpf::{
    Backend, BackendSet, BackendStats, Flow, FlowKey, IfaceMac, Service, ServiceKey, ServiceStats,
    Timeouts, map_names as n,
};

use super::plan::{Applied, MapDelta};

/// Typed handles on every map the controller uses.
pub struct Maps {
    pub services: HashMap<MapData, ServiceKey, Service>,
    pub sets: HashMap<MapData, u32, BackendSet>,
    pub backends: Array<MapData, Backend>,
    pub conns: Array<MapData, u32>,
    /// Established flows (a plain hash: never evicted).
    pub conntrack: HashMap<MapData, FlowKey, Flow>,
    /// Flows whose handshake has not completed (an LRU hash; aya's `HashMap` accepts
    /// `BPF_MAP_TYPE_LRU_HASH` as it did for the old LRU conntrack).
    pub handshake: HashMap<MapData, FlowKey, Flow>,
    /// Flow timeouts, one entry (key 0).
    pub timeouts: Array<MapData, Timeouts>,
    pub service_stats: PerCpuArray<MapData, ServiceStats>,
    pub backend_stats: PerCpuArray<MapData, BackendStats>,
    pub counters: PerCpuArray<MapData, u64>,
    pub ifaces: DevMapHash<MapData>,
    pub iface_macs: HashMap<MapData, u32, IfaceMac>,
}

fn take(ebpf: &mut aya::Ebpf, name: &str) -> anyhow::Result<Map> {
    ebpf.take_map(name)
        .ok_or_else(|| anyhow!("map {name} missing from the object"))
}

impl Maps {
    pub fn take(ebpf: &mut aya::Ebpf) -> anyhow::Result<Self> {
        Ok(Self {
            services: HashMap::try_from(take(ebpf, n::SERVICES)?)?,
            sets: HashMap::try_from(take(ebpf, n::BACKEND_SETS)?)?,
            backends: Array::try_from(take(ebpf, n::BACKENDS)?)?,
            conns: Array::try_from(take(ebpf, n::BACKEND_CONNS)?)?,
            conntrack: HashMap::try_from(take(ebpf, n::CONNTRACK)?)?,
            handshake: HashMap::try_from(take(ebpf, n::HANDSHAKE)?)?,
            timeouts: Array::try_from(take(ebpf, n::TIMEOUTS)?)?,
            service_stats: PerCpuArray::try_from(take(ebpf, n::SERVICE_STATS)?)?,
            backend_stats: PerCpuArray::try_from(take(ebpf, n::BACKEND_STATS)?)?,
            counters: PerCpuArray::try_from(take(ebpf, n::COUNTERS)?)?,
            ifaces: DevMapHash::try_from(take(ebpf, n::IFACES)?)?,
            iface_macs: HashMap::try_from(take(ebpf, n::IFACE_MACS)?)?,
        })
    }

    /// Writes a delta in the order `plan` laid out. Each set is one hash update, which the
    /// kernel swaps in atomically.
    pub fn apply(&mut self, d: &MapDelta) -> anyhow::Result<()> {
        for id in &d.reset_conns {
            self.conns
                .set(*id, 0, 0)
                .with_context(|| format!("zeroing backend {id} count"))?;
        }
        for (id, b) in &d.backends {
            self.backends
                .set(*id, b, 0)
                .with_context(|| format!("writing backend {id}"))?;
        }
        for (id, s) in &d.sets {
            self.sets
                .insert(id, s, 0)
                .with_context(|| format!("publishing set {id}"))?;
        }
        for (k, s) in &d.services {
            self.services
                .insert(k, s, 0)
                .with_context(|| format!("writing service {}", s.id))?;
        }
        for k in &d.remove_services {
            let _ = self.services.remove(k);
        }
        for id in &d.remove_sets {
            let _ = self.sets.remove(id);
        }
        for id in &d.free_backends {
            self.backends
                .set(*id, Backend::default(), 0)
                .with_context(|| format!("clearing retired backend {id}"))?;
            self.conns
                .set(*id, 0, 0)
                .with_context(|| format!("zeroing retired backend {id}'s count"))?;
        }
        Ok(())
    }

    /// Writes the flow timeouts the kernel judges expiry by (at start and on reload).
    pub fn set_timeouts(&mut self, t: &Timeouts) -> anyhow::Result<()> {
        self.timeouts
            .set(0, t, 0)
            .context("writing the flow timeouts (PGR_TIMEOUTS)")
    }

    /// Rebuilds what an earlier controller applied from the pinned maps, so a restart keeps
    /// service and backend ids (and with them every tracked flow's meaning).
    pub fn read_applied(&self) -> Applied {
        let mut a = Applied::default();
        for (k, s) in self.services.iter().flatten() {
            a.services.insert(k, s);
        }
        for (id, s) in self.sets.iter().flatten() {
            a.sets.insert(id, s);
        }
        for (id, b) in self.backends.iter().enumerate() {
            if let Ok(b) = b
                && b.state != router_ebpf::BACKEND_UNUSED
            {
                a.backends.insert(id as u32, b);
            }
        }
        a
    }

    /// Allows redirects to `ifindex` (the program's devmap) and records its MAC, so frames
    /// flooded to this host for another one are left alone.
    pub fn allow_iface(&mut self, ifindex: u32, mac: Option<[u8; 6]>) -> anyhow::Result<()> {
        self.ifaces
            .insert(ifindex, ifindex, None, 0)
            .with_context(|| format!("adding ifindex {ifindex} to the devmap"))?;
        if let Some(mac) = mac {
            self.iface_macs
                .insert(ifindex, IfaceMac { mac, _pad: [0; 2] }, 0)
                .with_context(|| format!("recording the MAC of ifindex {ifindex}"))?;
        }
        Ok(())
    }

    /// A service's counters summed over CPUs.
    pub fn service_stats(&self, id: u32) -> ServiceStats {
        let mut t = ServiceStats::default();
        if let Ok(v) = self.service_stats.get(&id, 0) {
            v.iter().for_each(|s| t.accumulate(s));
        }
        t
    }

    /// A backend's counters summed over CPUs.
    pub fn backend_stats(&self, id: u32) -> BackendStats {
        let mut t = BackendStats::default();
        if let Ok(v) = self.backend_stats.get(&id, 0) {
            v.iter().for_each(|s| t.accumulate(s));
        }
        t
    }

    pub fn active_conns(&self, id: u32) -> u32 {
        self.conns.get(&id, 0).unwrap_or(0)
    }

    /// Sum over CPUs of one global counter (`router_ebpf::counter::*`).
    pub fn counter(&self, idx: u32) -> u64 {
        self.counters
            .get(&idx, 0)
            .map(|v| v.iter().sum())
            .unwrap_or(0)
    }
}
