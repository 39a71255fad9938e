//! The sync protocol's messages and their byte form (pure). A flow travels by its addresses,
//! not by this host's map ids, which differ between hosts: the receiver finds its own service
//! by VIP:port and its own backend by node address:port, and refuses what it does not have.
//!
//! ```text
//! hello (client → server)  "PGRSYNC1" key_id[8] nonce[16] id_len u8 id (the client's listen address)
//! hello (server → client)  "PGRSYNC1" nonce[16]
//! frame                    len u32 | seq u64 | kind u8 | payload | tag[32]    (len covers seq..tag)
//! ```
//! All integers big-endian. The tag is HMAC-SHA256 under the connection's key (see `auth`)
//! over `seq | kind | payload`; `seq` starts at 0 and counts frames, so a frame can be
//! neither replayed, reordered nor moved to another connection.
#![cfg_attr(not(test), deny(clippy::indexing_slicing))]

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

pub const MAGIC: &[u8; 8] = b"PGRSYNC1";
pub const NONCE_LEN: usize = 16;
pub const KEY_ID_LEN: usize = 8;
pub const TAG_LEN: usize = 32;
/// A frame's `len` above this is refused before anything is read or allocated.
pub const MAX_FRAME: usize = 1 << 20;
/// Records per Upsert/Remove frame: a full sync of a million flows is ~10,000 frames.
pub const RECORDS_PER_FRAME: usize = 100;

/// One endpoint of a flow leg.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Endpoint {
    pub addr: IpAddr,
    pub port: u16,
}

/// One direction's tracking state.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Side {
    /// `FLOW_F_*` bits that describe the flow's close state (never `FLOW_F_REPLY`,
    /// `FLOW_F_CLOSED` or `FLOW_F_SYNCED`, which the receiver sets itself).
    pub flags: u64,
    /// Network order, as in the map.
    pub last_ack: u32,
    pub seq: u32,
    pub peer_fin_end: u32,
    /// Milliseconds since this direction's last packet, at the sender when it was sent.
    pub idle_ms: u32,
}

/// An established flow as the sender holds it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Record {
    pub client: Endpoint,
    /// The listener the client connected to.
    pub vip: Endpoint,
    /// The node the flow is rewritten to.
    pub node: Endpoint,
    /// The SNAT address and port of the backend leg.
    pub snat: Endpoint,
    pub fwd: Side,
    pub reply: Side,
}

/// A flow that ended at the sender, by its backend leg (the SNAT port's owner).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Removal {
    pub node: Endpoint,
    pub snat: Endpoint,
    /// Milliseconds since the flow's last packet, at the sender.
    pub idle_ms: u32,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Message {
    /// Install these flows, or refresh them where they are newer than the local copy.
    Upsert(Vec<Record>),
    Remove(Vec<Removal>),
    /// A full sync follows: every flow the sender holds, then [`Message::FullEnd`].
    FullStart,
    /// The full sync is complete: flows of the sender's that were not in it are gone.
    FullEnd,
    /// Keeps an idle connection's liveness visible.
    Ping,
}

const K_UPSERT: u8 = 1;
const K_REMOVE: u8 = 2;
const K_FULL_START: u8 = 3;
const K_FULL_END: u8 = 4;
const K_PING: u8 = 5;

/// Why bytes are not a message.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("unknown message kind {0}")]
    Kind(u8),
    #[error("message cut short")]
    Short,
    #[error("{0} trailing bytes")]
    Trailing(usize),
    #[error("address family {0} is neither 4 nor 6")]
    Family(u8),
}

impl Message {
    /// `(kind, payload)`.
    pub fn encode(&self) -> (u8, Vec<u8>) {
        let mut b = Vec::new();
        let kind = match self {
            Message::Upsert(rs) => {
                put_u32(&mut b, rs.len() as u32);
                for r in rs {
                    for e in [r.client, r.vip, r.node, r.snat] {
                        put_endpoint(&mut b, e);
                    }
                    put_side(&mut b, &r.fwd);
                    put_side(&mut b, &r.reply);
                }
                K_UPSERT
            }
            Message::Remove(rs) => {
                put_u32(&mut b, rs.len() as u32);
                for r in rs {
                    put_endpoint(&mut b, r.node);
                    put_endpoint(&mut b, r.snat);
                    put_u32(&mut b, r.idle_ms);
                }
                K_REMOVE
            }
            Message::FullStart => K_FULL_START,
            Message::FullEnd => K_FULL_END,
            Message::Ping => K_PING,
        };
        (kind, b)
    }

    pub fn decode(kind: u8, payload: &[u8]) -> Result<Message, DecodeError> {
        let mut r = Reader(payload);
        let m = match kind {
            K_UPSERT => {
                let n = r.u32()? as usize;
                // Each record takes at least 4 × 4 bytes: a count beyond the payload is a
                // lie, refused before any allocation.
                if n > payload.len() / 16 {
                    return Err(DecodeError::Short);
                }
                let mut v = Vec::with_capacity(n);
                for _ in 0..n {
                    v.push(Record {
                        client: r.endpoint()?,
                        vip: r.endpoint()?,
                        node: r.endpoint()?,
                        snat: r.endpoint()?,
                        fwd: r.side()?,
                        reply: r.side()?,
                    });
                }
                Message::Upsert(v)
            }
            K_REMOVE => {
                let n = r.u32()? as usize;
                if n > payload.len() / 8 {
                    return Err(DecodeError::Short);
                }
                let mut v = Vec::with_capacity(n);
                for _ in 0..n {
                    v.push(Removal {
                        node: r.endpoint()?,
                        snat: r.endpoint()?,
                        idle_ms: r.u32()?,
                    });
                }
                Message::Remove(v)
            }
            K_FULL_START => Message::FullStart,
            K_FULL_END => Message::FullEnd,
            K_PING => Message::Ping,
            k => return Err(DecodeError::Kind(k)),
        };
        if !r.0.is_empty() {
            return Err(DecodeError::Trailing(r.0.len()));
        }
        Ok(m)
    }
}

fn put_u32(b: &mut Vec<u8>, v: u32) {
    b.extend_from_slice(&v.to_be_bytes());
}

fn put_endpoint(b: &mut Vec<u8>, e: Endpoint) {
    match e.addr {
        IpAddr::V4(a) => {
            b.push(4);
            b.extend_from_slice(&a.octets());
        }
        IpAddr::V6(a) => {
            b.push(6);
            b.extend_from_slice(&a.octets());
        }
    }
    b.extend_from_slice(&e.port.to_be_bytes());
}

fn put_side(b: &mut Vec<u8>, s: &Side) {
    b.extend_from_slice(&s.flags.to_be_bytes());
    put_u32(b, s.last_ack);
    put_u32(b, s.seq);
    put_u32(b, s.peer_fin_end);
    put_u32(b, s.idle_ms);
}

/// A cursor that never reads past its slice.
struct Reader<'a>(&'a [u8]);

impl Reader<'_> {
    fn take<const N: usize>(&mut self) -> Result<[u8; N], DecodeError> {
        let (head, rest) = self.0.split_first_chunk::<N>().ok_or(DecodeError::Short)?;
        self.0 = rest;
        Ok(*head)
    }

    fn u32(&mut self) -> Result<u32, DecodeError> {
        self.take::<4>().map(u32::from_be_bytes)
    }

    fn endpoint(&mut self) -> Result<Endpoint, DecodeError> {
        let [family] = self.take::<1>()?;
        let addr = match family {
            4 => IpAddr::V4(Ipv4Addr::from(self.take::<4>()?)),
            6 => IpAddr::V6(Ipv6Addr::from(self.take::<16>()?)),
            f => return Err(DecodeError::Family(f)),
        };
        let port = u16::from_be_bytes(self.take::<2>()?);
        Ok(Endpoint { addr, port })
    }

    fn side(&mut self) -> Result<Side, DecodeError> {
        Ok(Side {
            flags: u64::from_be_bytes(self.take::<8>()?),
            last_ack: self.u32()?,
            seq: self.u32()?,
            peer_fin_end: self.u32()?,
            idle_ms: self.u32()?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ep(a: &str, port: u16) -> Endpoint {
        Endpoint {
            addr: a.parse().unwrap(),
            port,
        }
    }

    fn record() -> Record {
        Record {
            client: ep("198.18.0.30", 51000),
            vip: ep("198.18.0.100", 5000),
            node: ep("198.18.0.11", 5432),
            snat: ep("198.18.0.100", 40001),
            fwd: Side {
                flags: 1 << 8,
                last_ack: 7,
                seq: 9,
                peer_fin_end: 0,
                idle_ms: 120,
            },
            reply: Side {
                flags: 1 << 4,
                last_ack: 11,
                seq: 13,
                peer_fin_end: 0,
                idle_ms: 5,
            },
        }
    }

    #[test]
    fn every_message_decodes_to_itself() {
        let msgs = [
            Message::Upsert(vec![record(), record()]),
            Message::Remove(vec![Removal {
                node: ep("fd00:198:18::11", 5432),
                snat: ep("fd00:198:18::100", 42000),
                idle_ms: 3,
            }]),
            Message::FullStart,
            Message::FullEnd,
            Message::Ping,
            Message::Upsert(vec![]),
        ];
        for m in msgs {
            let (k, p) = m.encode();
            assert_eq!(Message::decode(k, &p), Ok(m));
        }
    }

    #[test]
    fn a_cut_or_padded_message_is_refused() {
        let (k, p) = Message::Upsert(vec![record()]).encode();
        for cut in 0..p.len() {
            assert!(Message::decode(k, &p[..cut]).is_err(), "cut at {cut}");
        }
        let mut long = p.clone();
        long.push(0);
        assert_eq!(Message::decode(k, &long), Err(DecodeError::Trailing(1)));
        assert_eq!(Message::decode(99, &[]), Err(DecodeError::Kind(99)));
    }

    #[test]
    fn a_count_larger_than_the_payload_allocates_nothing() {
        let p = u32::MAX.to_be_bytes();
        assert_eq!(Message::decode(K_UPSERT, &p), Err(DecodeError::Short));
        assert_eq!(Message::decode(K_REMOVE, &p), Err(DecodeError::Short));
    }
}
