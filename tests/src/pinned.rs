//! The running data path's flow tables read straight from their pins, so network tests can
//! check what the kernel holds independently of what `pgrouter status` reports.
use std::{
    net::Ipv4Addr,
    path::{Path, PathBuf},
};

use aya::maps::{Array, HashMap, Map, MapData};
use router_ebpf::{FLOW_F_REPLY, Flow, FlowKey, flow_state, map_names};

/// One entry of a flow table.
#[derive(Clone, Copy, Debug)]
pub struct Entry {
    pub key: FlowKey,
    pub flow: Flow,
}

impl Entry {
    pub fn is_reply(&self) -> bool {
        self.flow.flags & FLOW_F_REPLY != 0
    }
    pub fn src(&self) -> (Ipv4Addr, u16) {
        (v4(self.key.saddr), u16::from_be(self.key.sport))
    }
    pub fn dst(&self) -> (Ipv4Addr, u16) {
        (v4(self.key.daddr), u16::from_be(self.key.dport))
    }
    /// Where the entry rewrites the packet's destination to.
    pub fn to(&self) -> (Ipv4Addr, u16) {
        (v4(self.flow.daddr), u16::from_be(self.flow.dport))
    }
    /// Where the entry rewrites the packet's source to (the SNAT address and port for a
    /// forward entry).
    pub fn from(&self) -> (Ipv4Addr, u16) {
        (v4(self.flow.saddr), u16::from_be(self.flow.sport))
    }
    /// `router_ebpf::FLOW_STATE_*` of a forward entry in the established table.
    pub fn state(&self) -> u8 {
        flow_state(self.flow.flags)
    }
}

/// An IPv4 address stored in word 0 of a map address (network order in memory).
pub fn v4(a: [u32; 4]) -> Ipv4Addr {
    Ipv4Addr::from(a[0].to_ne_bytes())
}

/// Both flow tables at one moment (each read entry by entry; fine for test-sized tables).
#[derive(Clone, Debug, Default)]
pub struct Tables {
    pub handshake: Vec<Entry>,
    pub conntrack: Vec<Entry>,
}

impl Tables {
    /// Forward entries of the handshake table.
    pub fn half_open(&self) -> impl Iterator<Item = &Entry> {
        self.handshake.iter().filter(|e| !e.is_reply())
    }
    /// Forward entries of the established table.
    pub fn flows(&self) -> impl Iterator<Item = &Entry> {
        self.conntrack.iter().filter(|e| !e.is_reply())
    }
    /// Every entry (either table, either direction) that names `addr` as source or
    /// destination, as key or as rewrite.
    pub fn involving(&self, addr: Ipv4Addr) -> Vec<Entry> {
        self.handshake
            .iter()
            .chain(&self.conntrack)
            .filter(|e| {
                e.src().0 == addr || e.dst().0 == addr || e.to().0 == addr || e.from().0 == addr
            })
            .copied()
            .collect()
    }
    /// Entries that keep SNAT port `port` of `snat` from a new flow: any handshake entry
    /// holding it, and an established-table forward entry holding it that is not closed (a
    /// closed flow's port is reusable at once). An expired flow not yet reaped still counts.
    pub fn live_holders(&self, snat: Ipv4Addr, port: u16) -> Vec<Entry> {
        self.holding_port(snat, port)
            .into_iter()
            .filter(|e| {
                let in_conntrack = self.conntrack.iter().any(|c| c.key == e.key);
                !in_conntrack || (!e.is_reply() && e.state() != router_ebpf::FLOW_STATE_CLOSED)
            })
            .collect()
    }

    /// Flows of `addr` (as client) that are still open: handshake entries from it, and
    /// established-table forward entries from it that are not closed.
    pub fn live_from(&self, addr: Ipv4Addr) -> Vec<Entry> {
        self.half_open()
            .chain(
                self.flows()
                    .filter(|e| e.state() != router_ebpf::FLOW_STATE_CLOSED),
            )
            .filter(|e| e.src().0 == addr)
            .copied()
            .collect()
    }

    /// Every entry (either table) that holds SNAT port `port` of `snat`: a forward entry
    /// rewriting to it or the reply entry keyed by it.
    pub fn holding_port(&self, snat: Ipv4Addr, port: u16) -> Vec<Entry> {
        self.handshake
            .iter()
            .chain(&self.conntrack)
            .filter(|e| {
                if e.is_reply() {
                    e.dst() == (snat, port)
                } else {
                    e.from() == (snat, port)
                }
            })
            .copied()
            .collect()
    }
}

/// The folder the daemon pins its maps in (`<pin_path>/v<ABI_VERSION>`).
pub fn pin_dir(pin_path: &Path) -> PathBuf {
    pin_path.join(format!("v{}", router_ebpf::ABI_VERSION))
}

fn hash(pin_path: &Path, name: &str) -> anyhow::Result<HashMap<MapData, FlowKey, Flow>> {
    let p = pin_dir(pin_path).join(name);
    let data = MapData::from_pin(&p).map_err(|e| anyhow::anyhow!("{}: {e}", p.display()))?;
    let map = Map::from_map_data(data).map_err(|e| anyhow::anyhow!("{}: {e}", p.display()))?;
    HashMap::try_from(map).map_err(|e| anyhow::anyhow!("{}: {e}", p.display()))
}

fn entries(m: &HashMap<MapData, FlowKey, Flow>) -> Vec<Entry> {
    // An entry deleted between the key walk and its lookup is simply not there.
    m.iter()
        .filter_map(Result::ok)
        .map(|(key, flow)| Entry { key, flow })
        .collect()
}

/// Reads both flow tables of the data path pinned under `pin_path`.
pub fn tables(pin_path: &Path) -> anyhow::Result<Tables> {
    Ok(Tables {
        handshake: entries(&hash(pin_path, map_names::HANDSHAKE)?),
        conntrack: entries(&hash(pin_path, map_names::CONNTRACK)?),
    })
}

/// Sum of `PGR_BACKEND_CONNS` over every backend: the maxconn slots held right now.
pub fn slots_held(pin_path: &Path) -> anyhow::Result<u64> {
    let p = pin_dir(pin_path).join(map_names::BACKEND_CONNS);
    let data = MapData::from_pin(&p).map_err(|e| anyhow::anyhow!("{}: {e}", p.display()))?;
    let map = Map::from_map_data(data).map_err(|e| anyhow::anyhow!("{}: {e}", p.display()))?;
    let arr: Array<MapData, u32> =
        Array::try_from(map).map_err(|e| anyhow::anyhow!("{}: {e}", p.display()))?;
    Ok(arr.iter().filter_map(Result::ok).map(u64::from).sum())
}
