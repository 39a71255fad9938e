//! A TCP/IPv4 flow's two table entries as the data path writes them, for tests that fill or
//! read the flow tables themselves (the GC's unit tests, the GC benchmark, kernel tests).
//!
//! Std and `router_ebpf` only, on purpose: router-user's unit tests include this file by path
//! (they cannot depend on this crate, which depends on router-user).
use std::net::Ipv4Addr;

use router_ebpf::{FAMILY_IPV4, FLOW_F_REPLY, Flow, FlowKey, PROTO_TCP};

/// An IPv4 address as a map address: word 0, network order in memory.
pub fn words(a: Ipv4Addr) -> [u32; 4] {
    [u32::from_ne_bytes(a.octets()), 0, 0, 0]
}

/// The key of a TCP/IPv4 packet from `src` to `dst`.
pub fn key(src: (Ipv4Addr, u16), dst: (Ipv4Addr, u16)) -> FlowKey {
    FlowKey {
        saddr: words(src.0),
        daddr: words(dst.0),
        sport: src.1.to_be(),
        dport: dst.1.to_be(),
        proto: PROTO_TCP,
        family: FAMILY_IPV4,
        _pad: [0; 2],
    }
}

/// Where a flow goes: the client's packets to the VIP leave rewritten from the SNAT address
/// to the node, and the node's replies come back to the SNAT address.
#[derive(Clone, Copy, Debug)]
pub struct Tuple {
    pub client: (Ipv4Addr, u16),
    pub vip: (Ipv4Addr, u16),
    pub snat: (Ipv4Addr, u16),
    pub node: (Ipv4Addr, u16),
}

impl Tuple {
    /// The forward entry (key client → VIP, rewrite SNAT → node, `flags`) and the reply entry
    /// (key node → SNAT, rewrite VIP → client, `FLOW_F_REPLY`), each last seen as given.
    pub fn entries(
        &self,
        backend_id: u32,
        flags: u64,
        fwd_seen: u64,
        reply_seen: u64,
    ) -> [(FlowKey, Flow); 2] {
        let rewrite = |from: (Ipv4Addr, u16), to: (Ipv4Addr, u16), flags, last_seen| Flow {
            saddr: words(from.0),
            daddr: words(to.0),
            sport: from.1.to_be(),
            dport: to.1.to_be(),
            backend_id,
            service_id: 0,
            flags,
            last_seen,
            ..Flow::default()
        };
        [
            (
                key(self.client, self.vip),
                rewrite(self.snat, self.node, flags, fwd_seen),
            ),
            (
                key(self.node, self.snat),
                rewrite(self.vip, self.client, FLOW_F_REPLY, reply_seen),
            ),
        ]
    }
}
