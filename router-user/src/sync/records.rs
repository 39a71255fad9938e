//! Between this host's flow entries and the wire's records (pure): a sent flow is named by
//! its addresses, a received one is translated to this host's service and backend ids, or
//! refused when this host has no such listener or node.
use std::{
    collections::HashMap,
    net::{IpAddr, Ipv4Addr},
};

use router_ebpf::{
    FAMILY_IPV4, FLOW_F_ANSWERED, FLOW_F_BACKEND_CLOSED_FIRST, FLOW_F_CLIENT_FIN_SEEN,
    FLOW_F_FIN_BACKEND, FLOW_F_FIN_CLIENT, FLOW_F_PEER_FIN, FLOW_F_PEER_FIN_ACKED, FLOW_F_REPLY,
    FLOW_F_SYNCED, Flow, FlowKey, GC_OP_SYNC_INSTALL, GC_OP_SYNC_REMOVE, PROTO_TCP, SyncRequest,
};

use super::wire::{Endpoint, Record, Removal, Side};
use crate::config::PortRange;
use crate::dataplane::Applied;

/// The close-state bits a record carries; the receiver sets `REPLY`, `SYNCED` itself and never
/// installs a closed flow.
const CARRIED: u64 = FLOW_F_FIN_CLIENT
    | FLOW_F_FIN_BACKEND
    | FLOW_F_ANSWERED
    | FLOW_F_PEER_FIN
    | FLOW_F_PEER_FIN_ACKED
    | FLOW_F_BACKEND_CLOSED_FIRST
    | FLOW_F_CLIENT_FIN_SEEN;

/// Why a received record was refused (status counts them per peer).
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Reject {
    #[error("no listener here on the flow's VIP:port")]
    UnknownListener,
    #[error("the listener has no such node here")]
    UnknownNode,
    #[error("the flow's SNAT address is not the listener's here")]
    SnatAddress,
    #[error("the SNAT port is outside snat_ports")]
    SnatPort,
    #[error("IPv6 flows are not served by this data path")]
    Family,
}

fn v4(word: u32) -> IpAddr {
    IpAddr::V4(Ipv4Addr::from(u32::from_be(word)))
}

fn word(addr: IpAddr) -> Result<[u32; 4], Reject> {
    match addr {
        IpAddr::V4(a) => Ok([u32::from(a).to_be(), 0, 0, 0]),
        IpAddr::V6(_) => Err(Reject::Family),
    }
}

fn ms_since(now_ns: u64, then_ns: u64) -> u32 {
    (now_ns.saturating_sub(then_ns) / 1_000_000).min(u64::from(u32::MAX)) as u32
}

fn side(f: &Flow, now_ns: u64) -> Side {
    Side {
        flags: f.flags & CARRIED,
        last_ack: f.last_ack,
        seq: f.seq,
        peer_fin_end: f.peer_fin_end,
        idle_ms: ms_since(now_ns, f.last_seen),
    }
}

/// The record of an established flow (`key` → `fwd`, its reply entry `reply`), as of `now_ns`.
pub fn record(key: &FlowKey, fwd: &Flow, reply: &Flow, now_ns: u64) -> Record {
    Record {
        client: Endpoint {
            addr: v4(key.saddr[0]),
            port: u16::from_be(key.sport),
        },
        vip: Endpoint {
            addr: v4(key.daddr[0]),
            port: u16::from_be(key.dport),
        },
        node: Endpoint {
            addr: v4(fwd.daddr[0]),
            port: u16::from_be(fwd.dport),
        },
        snat: Endpoint {
            addr: v4(fwd.saddr[0]),
            port: u16::from_be(fwd.sport),
        },
        fwd: side(fwd, now_ns),
        reply: side(reply, now_ns),
    }
}

/// The removal of the flow whose reply key is `rkey` and forward entry `fwd`.
pub fn removal(rkey: &FlowKey, fwd: &Flow, now_ns: u64) -> Removal {
    Removal {
        node: Endpoint {
            addr: v4(rkey.saddr[0]),
            port: u16::from_be(rkey.sport),
        },
        snat: Endpoint {
            addr: v4(rkey.daddr[0]),
            port: u16::from_be(rkey.dport),
        },
        idle_ms: ms_since(now_ns, fwd.last_seen),
    }
}

/// This host's listeners and nodes by address, for translating received records.
#[derive(Debug, Default)]
pub struct Local {
    /// VIP word, port (host order) → service id, SNAT address.
    services: HashMap<([u32; 4], u16), (u32, [u32; 4])>,
    /// Service id, node word, port (host order) → backend id.
    backends: HashMap<(u32, [u32; 4], u16), u32>,
    /// The whole `snat_ports` (every host's share).
    snat: Option<PortRange>,
}

impl Local {
    pub fn new(applied: &Applied, snat: PortRange) -> Local {
        let services = applied
            .services
            .iter()
            .filter(|(k, _)| k.family == FAMILY_IPV4 && k.proto == PROTO_TCP)
            .map(|(k, s)| ((k.addr, u16::from_be(k.port)), (s.id, s.snat_addr)))
            .collect();
        // Named backends only: a retired one (its node gone from the config) takes no
        // flow, and its id may soon be another backend's.
        let named: std::collections::BTreeSet<u32> =
            applied.backend_ids.values().copied().collect();
        let backends = applied
            .backends
            .iter()
            .filter(|(id, _)| named.contains(id))
            .map(|(id, b)| ((b.service_id, b.addr, u16::from_be(b.port)), *id))
            .collect();
        Local {
            services,
            backends,
            snat: Some(snat),
        }
    }

    /// The install request for `r`, received at `now_ns` (this host's clock).
    pub fn install(&self, r: &Record, now_ns: u64) -> Result<SyncRequest, Reject> {
        let (vip, client, node, snat) = (
            word(r.vip.addr)?,
            word(r.client.addr)?,
            word(r.node.addr)?,
            word(r.snat.addr)?,
        );
        let &(service_id, snat_addr) = self
            .services
            .get(&(vip, r.vip.port))
            .ok_or(Reject::UnknownListener)?;
        let &backend_id = self
            .backends
            .get(&(service_id, node, r.node.port))
            .ok_or(Reject::UnknownNode)?;
        if snat != snat_addr {
            return Err(Reject::SnatAddress);
        }
        if let Some(range) = self.snat
            && (r.snat.port < range.first || r.snat.port > range.last)
        {
            return Err(Reject::SnatPort);
        }
        let seen = |s: &Side| now_ns.saturating_sub(u64::from(s.idle_ms) * 1_000_000);
        let fwd = Flow {
            saddr: snat,
            daddr: node,
            sport: r.snat.port.to_be(),
            dport: r.node.port.to_be(),
            backend_id,
            service_id,
            last_ack: r.fwd.last_ack,
            flags: (r.fwd.flags & CARRIED & !FLOW_F_ANSWERED) | FLOW_F_SYNCED,
            last_seen: seen(&r.fwd),
            seq: r.fwd.seq,
            peer_fin_end: r.fwd.peer_fin_end,
        };
        let reply = Flow {
            saddr: vip,
            daddr: client,
            sport: r.vip.port.to_be(),
            dport: r.client.port.to_be(),
            backend_id,
            service_id,
            last_ack: r.reply.last_ack,
            flags: (r.reply.flags & CARRIED) | FLOW_F_REPLY | FLOW_F_ANSWERED | FLOW_F_SYNCED,
            last_seen: seen(&r.reply),
            seq: r.reply.seq,
            peer_fin_end: r.reply.peer_fin_end,
        };
        Ok(SyncRequest {
            op: GC_OP_SYNC_INSTALL,
            flags: 0,
            key: fwd_key(client, r.client.port, vip, r.vip.port),
            fwd,
            reply,
        })
    }
}

fn fwd_key(saddr: [u32; 4], sport: u16, daddr: [u32; 4], dport: u16) -> FlowKey {
    FlowKey {
        saddr,
        daddr,
        sport: sport.to_be(),
        dport: dport.to_be(),
        proto: PROTO_TCP,
        family: FAMILY_IPV4,
        _pad: [0; 2],
    }
}

/// The remove request for `r`, received at `now_ns`.
pub fn remove(r: &Removal, now_ns: u64) -> Result<SyncRequest, Reject> {
    let (node, snat) = (word(r.node.addr)?, word(r.snat.addr)?);
    Ok(remove_request(
        fwd_key(node, r.node.port, snat, r.snat.port),
        now_ns.saturating_sub(u64::from(r.idle_ms) * 1_000_000),
    ))
}

/// The request that removes the flow whose reply key is `rkey` unless it was live here after
/// `last_seen_ns` (see `GC_OP_SYNC_REMOVE`).
pub fn remove_request(rkey: FlowKey, last_seen_ns: u64) -> SyncRequest {
    SyncRequest {
        op: GC_OP_SYNC_REMOVE,
        flags: 0,
        key: rkey,
        fwd: Flow {
            last_seen: last_seen_ns,
            ..Flow::default()
        },
        reply: Flow::default(),
    }
}

/// A request as the frame `pgrouter_gc` reads.
pub fn request_bytes(r: &SyncRequest) -> Vec<u8> {
    // SAFETY: `SyncRequest` is `repr(C)` plain data with explicit padding (router_ebpf).
    let bytes = unsafe {
        std::slice::from_raw_parts(
            (r as *const SyncRequest).cast::<u8>(),
            size_of::<SyncRequest>(),
        )
    };
    bytes.to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;
    use router_ebpf::{Backend, Service, ServiceKey};

    fn be(a: &str) -> [u32; 4] {
        word(a.parse().unwrap()).unwrap()
    }

    /// One listener 198.18.0.100:5000 (service 3) with node pg1 198.18.0.11:5432 (backend 7).
    fn applied() -> Applied {
        let mut a = Applied::default();
        a.services.insert(
            ServiceKey {
                addr: be("198.18.0.100"),
                port: 5000u16.to_be(),
                proto: PROTO_TCP,
                family: FAMILY_IPV4,
            },
            Service {
                id: 3,
                snat_addr: be("198.18.0.100"),
                ..Service::default()
            },
        );
        a.backends.insert(
            7,
            Backend {
                addr: be("198.18.0.11"),
                port: 5432u16.to_be(),
                family: FAMILY_IPV4,
                state: router_ebpf::BACKEND_ACTIVE,
                service_id: 3,
                maxconn: 0,
            },
        );
        a.backend_ids.insert(
            crate::model::BackendKey::new(crate::model::ListenerKey::new("pg", "PG1"), "pg1"),
            7,
        );
        a
    }

    fn range() -> PortRange {
        PortRange {
            first: 40000,
            last: 44999,
        }
    }

    fn local() -> Local {
        Local::new(&applied(), range())
    }

    /// A flow as the sender's kernel holds it: ids 1 and 2 there.
    fn entries() -> (FlowKey, Flow, Flow) {
        let key = fwd_key(be("198.18.0.30"), 51000, be("198.18.0.100"), 5000);
        let fwd = Flow {
            saddr: be("198.18.0.100"),
            daddr: be("198.18.0.11"),
            sport: 42600u16.to_be(),
            dport: 5432u16.to_be(),
            backend_id: 1,
            service_id: 2,
            last_ack: 0x1111_2222,
            flags: FLOW_F_CLIENT_FIN_SEEN | router_ebpf::FLOW_F_CLOSED,
            last_seen: 9_000_000_000,
            seq: 77,
            peer_fin_end: 0,
        };
        let reply = Flow {
            saddr: be("198.18.0.100"),
            daddr: be("198.18.0.30"),
            sport: 5000u16.to_be(),
            dport: 51000u16.to_be(),
            backend_id: 1,
            service_id: 2,
            last_ack: 0x3333_4444,
            flags: FLOW_F_REPLY | FLOW_F_ANSWERED,
            last_seen: 9_500_000_000,
            seq: 99,
            peer_fin_end: 0,
        };
        (key, fwd, reply)
    }

    #[test]
    fn a_flow_arrives_with_local_ids_the_same_keys_and_its_idle_time() {
        let (key, fwd, reply) = entries();
        let r = record(&key, &fwd, &reply, 10_000_000_000);
        assert_eq!((r.fwd.idle_ms, r.reply.idle_ms), (1000, 500));
        let req = local().install(&r, 50_000_000_000).unwrap();
        assert_eq!(req.key, key);
        assert_eq!(
            req.fwd.peer_key(),
            fwd.peer_key(),
            "same SNAT port, same node"
        );
        assert_eq!(req.reply.peer_key(), key);
        assert_eq!((req.fwd.backend_id, req.fwd.service_id), (7, 3));
        assert_eq!((req.reply.backend_id, req.reply.service_id), (7, 3));
        assert_eq!(req.fwd.last_seen, 49_000_000_000);
        assert_eq!(req.reply.last_seen, 49_500_000_000);
        assert_eq!((req.fwd.last_ack, req.fwd.seq), (0x1111_2222, 77));
        assert_eq!((req.reply.last_ack, req.reply.seq), (0x3333_4444, 99));
        assert_eq!(
            req.fwd.flags,
            FLOW_F_CLIENT_FIN_SEEN | FLOW_F_SYNCED,
            "close state carried, CLOSED never"
        );
        assert_eq!(
            req.reply.flags,
            FLOW_F_REPLY | FLOW_F_ANSWERED | FLOW_F_SYNCED
        );
    }

    #[test]
    fn flows_for_what_this_host_lacks_are_refused() {
        let (key, fwd, reply) = entries();
        let r = record(&key, &fwd, &reply, 10_000_000_000);
        let l = local();
        let mut x = r;
        x.vip.port = 5001;
        assert_eq!(l.install(&x, 0), Err(Reject::UnknownListener));
        let mut x = r;
        x.node.addr = "198.18.0.12".parse().unwrap();
        assert_eq!(l.install(&x, 0), Err(Reject::UnknownNode));
        let mut x = r;
        x.snat.addr = "198.18.0.21".parse().unwrap();
        assert_eq!(l.install(&x, 0), Err(Reject::SnatAddress));
        let mut x = r;
        x.snat.port = 1024;
        assert_eq!(l.install(&x, 0), Err(Reject::SnatPort));
        let mut x = r;
        x.client.addr = "fd00:198:18::30".parse().unwrap();
        assert_eq!(l.install(&x, 0), Err(Reject::Family));
    }

    #[test]
    fn a_removal_names_the_reply_key() {
        let (_, fwd, _) = entries();
        let rkey = fwd.peer_key();
        let req = remove(&removal(&rkey, &fwd, 10_000_000_000), 20_000_000_000).unwrap();
        assert_eq!(req.key, rkey);
        assert_eq!(req.fwd.last_seen, 19_000_000_000);
        assert_eq!(request_bytes(&req).len(), size_of::<SyncRequest>());
    }

    /// A retired backend (its node gone from the config) takes no synced flow: its id may
    /// soon be another node's.
    #[test]
    fn a_retired_backend_takes_no_flow() {
        let (key, fwd, reply) = entries();
        let r = record(&key, &fwd, &reply, 10_000_000_000);
        let mut a = applied();
        a.backend_ids.clear();
        assert_eq!(
            Local::new(&a, range()).install(&r, 0),
            Err(Reject::UnknownNode)
        );
        assert!(local().install(&r, 0).is_ok(), "named, it is installed");
    }
}
