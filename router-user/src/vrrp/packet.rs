//! VRRP codec: RFC 5798 (v3, IPv4 and IPv6) and RFC 3768 (v2, IPv4, optional simple-text
//! password). Only bytes in, bytes out: no sockets, no instance state. The receive checks of
//! RFC 5798 §7.1 that need nothing but the packet and its IP header live here; the checks that
//! compare against an instance's configuration live in [`check_local`].
//!
//! Every byte read here comes off the LAN: fields come out of slice patterns and checked
//! splits, never indexing that could panic (denied crate-wide).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// IANA protocol number of VRRP (RFC 5798 §5.2.4, RFC 3768 §5.2.4).
pub const PROTO: u8 = 112;
/// TTL / hop limit every VRRP packet is sent with; a packet that crossed a router arrives with
/// less and is discarded (RFC 5798 §5.1.1.3, §7.1).
pub const TTL: u8 = 255;
/// Fixed VRRP header, without addresses and (v2) authentication data.
pub const MIN_LEN: usize = 8;
/// v2 carries 8 bytes of authentication data after the addresses (RFC 3768 §5.1).
pub const V2_AUTH_LEN: usize = 8;
/// `Type` field value of an ADVERTISEMENT, the only type defined (RFC 5798 §5.2.2).
pub const TYPE_ADVERTISEMENT: u8 = 1;
/// Largest v3 Max Adver Int: a 12-bit field of centiseconds (RFC 5798 §5.2.7).
pub const MAX_ADVER_INT_CS: u16 = 0x0fff;
/// IPv4 multicast group for VRRP (RFC 5798 §5.1.1.2).
pub const MCAST_V4: Ipv4Addr = Ipv4Addr::new(224, 0, 0, 18);
/// IPv6 multicast group for VRRP (RFC 5798 §5.1.2.2).
pub const MCAST_V6: Ipv6Addr = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 0x12);

/// Protocol version on the wire.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize)]
pub enum Version {
    /// RFC 3768: IPv4 only, Adver Int in seconds, 8 bytes of authentication data.
    V2,
    /// RFC 5798: IPv4 and IPv6, Max Adver Int in centiseconds, no authentication.
    V3,
}

impl Version {
    /// Wire value of the 4-bit Version field.
    pub fn number(self) -> u8 {
        match self {
            Version::V2 => 2,
            Version::V3 => 3,
        }
    }
}

/// v2 authentication (RFC 3768 §5.3.6); v3 dropped it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Auth {
    /// Auth Type 0.
    None,
    /// Auth Type 1: a clear-text password of up to 8 bytes, zero-padded (keepalived `auth_type
    /// PASS`).
    Pass([u8; 8]),
}

impl Auth {
    /// Builds a PASS authentication from a configured password; like keepalived, only the first
    /// 8 bytes count.
    pub fn pass(password: &str) -> Auth {
        let mut data = [0u8; 8];
        for (d, s) in data.iter_mut().zip(password.as_bytes()) {
            *d = *s;
        }
        Auth::Pass(data)
    }
}

/// A VRRP ADVERTISEMENT.
///
/// v3 (RFC 5798 §5.1):
/// ```text
///     0                   1                   2                   3
///     0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
///    +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
///    |                    IPv4 Fields or IPv6 Fields                 |
///   ...                                                             ...
///    |                                                               |
///    +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
///    |Version| Type  | Virtual Rtr ID|   Priority    |Count IPvX Addr|
///    +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
///    |(rsvd) |     Max Adver Int     |          Checksum             |
///    +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
///    |                                                               |
///    +                                                               +
///    |                       IPvX Address(es)                        |
///    +                                                               +
///    |                                                               |
///    +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
/// ```
/// v2 (RFC 3768 §5.1):
/// ```text
///     0                   1                   2                   3
///     0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
///    +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
///    |Version| Type  | Virtual Rtr ID|   Priority    | Count IP Addrs|
///    +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
///    |   Auth Type   |   Adver Int   |          Checksum             |
///    +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
///    |                         IP Address (1)                        |
///    +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
///    |                            .                                  |
///    +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
///    |                     Authentication Data (1)                   |
///    +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
///    |                     Authentication Data (2)                   |
///    +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Packet {
    pub version: Version,
    /// Virtual Router ID, 1..=255.
    pub vrid: u8,
    /// 0 = master is leaving, 255 = address owner.
    pub priority: u8,
    /// Advertisement interval normalised to centiseconds: v3 carries centiseconds, v2 seconds
    /// (encoded as `adver_int_cs / 100`).
    pub adver_int_cs: u16,
    /// Virtual addresses; all of the IP header's family.
    pub addrs: Vec<IpAddr>,
    /// v2 only; always [`Auth::None`] for v3.
    pub auth: Auth,
}

/// What the receive path knows about the IP header that carried the packet. The checksum of v3
/// covers a pseudo-header built from it, and the TTL check needs it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IpInfo {
    pub src: IpAddr,
    pub dst: IpAddr,
    /// IPv4 TTL or IPv6 hop limit as received.
    pub ttl: u8,
}

/// Why a received packet was discarded. Each variant is a metrics label ([`DecodeError::reason`]).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("truncated: need {need} bytes, got {got}")]
    Truncated { need: usize, got: usize },
    #[error("not an IPv4 packet carrying VRRP")]
    NotVrrp,
    #[error("ttl/hop limit {0}, must be 255")]
    BadTtl(u8),
    #[error("unsupported version {0}")]
    BadVersion(u8),
    #[error("unknown type {0}")]
    BadType(u8),
    #[error("virtual router id 0 is invalid")]
    BadVrid,
    #[error("length {len} does not match {count} addresses (expected {expected})")]
    BadLength {
        len: usize,
        count: u8,
        expected: usize,
    },
    #[error("checksum mismatch")]
    BadChecksum,
    #[error("v2 over IPv6 is not defined")]
    V2OverIpv6,
    #[error("unsupported auth type {0}")]
    BadAuthType(u8),
    #[error("virtual router id {0} is not ours")]
    VridMismatch(u8),
    #[error("version {0} does not match the configured version")]
    VersionMismatch(u8),
    #[error("authentication mismatch")]
    AuthMismatch,
    #[error("advertisement interval {got_cs}cs differs from configured {want_cs}cs (v2)")]
    AdverIntMismatch { got_cs: u16, want_cs: u16 },
    #[error("source {0} is not a configured unicast peer")]
    UnknownPeer(IpAddr),
}

impl DecodeError {
    /// Short stable label for the "adverts rejected by reason" counters.
    pub fn reason(&self) -> &'static str {
        match self {
            DecodeError::Truncated { .. } => "truncated",
            DecodeError::NotVrrp => "not_vrrp",
            DecodeError::BadTtl(_) => "ttl",
            DecodeError::BadVersion(_) => "version",
            DecodeError::BadType(_) => "type",
            DecodeError::BadVrid => "vrid",
            DecodeError::BadLength { .. } => "length",
            DecodeError::BadChecksum => "checksum",
            DecodeError::V2OverIpv6 => "version",
            DecodeError::BadAuthType(_) => "auth",
            DecodeError::VridMismatch(_) => "vrid_mismatch",
            DecodeError::VersionMismatch(_) => "version",
            DecodeError::AuthMismatch => "auth",
            DecodeError::AdverIntMismatch { .. } => "adver_int",
            DecodeError::UnknownPeer(_) => "unknown_peer",
        }
    }
}

impl Packet {
    /// Length of the encoded VRRP message.
    pub fn len(&self) -> usize {
        let per = match self.addrs.first() {
            Some(IpAddr::V6(_)) => 16,
            _ => 4,
        };
        let auth = if self.version == Version::V2 {
            V2_AUTH_LEN
        } else {
            0
        };
        MIN_LEN + per * self.addrs.len() + auth
    }

    /// A packet always has its fixed header; `is_empty` only satisfies the `len` convention.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// Encodes the message (without IP header). `src`/`dst` feed the v3 pseudo-header checksum,
    /// which we always include for IPv4 too, as keepalived, FRR and tcpdump expect.
    pub fn encode(&self, src: IpAddr, dst: IpAddr) -> Vec<u8> {
        let mut b = Vec::with_capacity(self.len());
        b.push((self.version.number() << 4) | TYPE_ADVERTISEMENT);
        b.push(self.vrid);
        b.push(self.priority);
        // Count is 8 bits; config validation keeps us far below.
        b.push(u8::try_from(self.addrs.len()).unwrap_or(u8::MAX));
        match self.version {
            Version::V3 => {
                let int = self.adver_int_cs.min(MAX_ADVER_INT_CS);
                b.extend_from_slice(&int.to_be_bytes());
            }
            Version::V2 => {
                let auth_type = match self.auth {
                    Auth::None => 0,
                    Auth::Pass(_) => 1,
                };
                b.push(auth_type);
                b.push(
                    u8::try_from(self.adver_int_cs / 100)
                        .unwrap_or(u8::MAX)
                        .max(1),
                );
            }
        }
        b.extend_from_slice(&[0, 0]);
        for a in &self.addrs {
            match a {
                IpAddr::V4(a) => b.extend_from_slice(&a.octets()),
                IpAddr::V6(a) => b.extend_from_slice(&a.octets()),
            }
        }
        if self.version == Version::V2 {
            match self.auth {
                Auth::None => b.extend_from_slice(&[0; V2_AUTH_LEN]),
                Auth::Pass(p) => b.extend_from_slice(&p),
            }
        }
        let sum = match self.version {
            Version::V2 => checksum(&b, 0),
            Version::V3 => checksum(&b, pseudo_sum(src, dst, b.len())),
        };
        // The checksum field of the fixed header pushed above.
        if let Some(field) = b.get_mut(6..8) {
            field.copy_from_slice(&sum.to_be_bytes());
        }
        b
    }

    /// Decodes and checks a VRRP message (the IP payload). Implements the packet-only receive
    /// checks of RFC 5798 §7.1 / RFC 3768 §7.1: TTL 255, version, type, length against the
    /// address count, checksum. v3 over IPv4 accepts the checksum with and without the
    /// pseudo-header (older keepalived unicast sends the latter); IPv6 requires it.
    pub fn decode(buf: &[u8], ip: &IpInfo) -> Result<Packet, DecodeError> {
        let Some((&[vt, vrid, priority, count, b4, b5, _, _], body)) =
            buf.split_first_chunk::<MIN_LEN>()
        else {
            return Err(DecodeError::Truncated {
                need: MIN_LEN,
                got: buf.len(),
            });
        };
        // §7.1: "MUST verify that the IPv4 TTL / IPv6 Hop Limit is 255".
        if ip.ttl != TTL {
            return Err(DecodeError::BadTtl(ip.ttl));
        }
        let version = match vt >> 4 {
            2 => Version::V2,
            3 => Version::V3,
            v => return Err(DecodeError::BadVersion(v)),
        };
        let typ = vt & 0x0f;
        if typ != TYPE_ADVERTISEMENT {
            return Err(DecodeError::BadType(typ));
        }
        if vrid == 0 {
            return Err(DecodeError::BadVrid);
        }
        let v6 = ip.src.is_ipv6();
        if v6 && version == Version::V2 {
            return Err(DecodeError::V2OverIpv6);
        }
        let per = if v6 { 16 } else { 4 };
        let auth_len = if version == Version::V2 {
            V2_AUTH_LEN
        } else {
            0
        };
        let addrs_len = per * usize::from(count);
        let expected = MIN_LEN + addrs_len + auth_len;
        let truncated = || DecodeError::Truncated {
            need: expected,
            got: buf.len(),
        };
        if buf.len() != expected {
            if buf.len() < expected {
                return Err(truncated());
            }
            return Err(DecodeError::BadLength {
                len: buf.len(),
                count,
                expected,
            });
        }
        let ok = match version {
            Version::V2 => checksum(buf, 0) == 0,
            Version::V3 => {
                checksum(buf, pseudo_sum(ip.src, ip.dst, buf.len())) == 0
                    || (!v6 && checksum(buf, 0) == 0)
            }
        };
        if !ok {
            return Err(DecodeError::BadChecksum);
        }
        // The length matched: `body` is the addresses, then (v2) exactly the authentication
        // data, so these splits cannot fail.
        let (addr_bytes, auth_data) = body.split_at_checked(addrs_len).ok_or_else(truncated)?;
        let (adver_int_cs, auth) = match version {
            Version::V3 => (u16::from_be_bytes([b4, b5]) & MAX_ADVER_INT_CS, Auth::None),
            Version::V2 => {
                let auth = match b4 {
                    0 => Auth::None,
                    1 => Auth::Pass(auth_data.try_into().map_err(|_| truncated())?),
                    t => return Err(DecodeError::BadAuthType(t)),
                };
                (u16::from(b5) * 100, auth)
            }
        };
        let addrs = if v6 {
            let (octets, _) = addr_bytes.as_chunks::<16>();
            octets.iter().map(|&o| IpAddr::V6(o.into())).collect()
        } else {
            let (octets, _) = addr_bytes.as_chunks::<4>();
            octets.iter().map(|&o| IpAddr::V4(o.into())).collect()
        };
        Ok(Packet {
            version,
            vrid,
            priority,
            adver_int_cs,
            addrs,
            auth,
        })
    }
}

/// What an instance expects of a packet, for [`check_local`].
#[derive(Clone, Debug)]
pub struct Local<'a> {
    pub version: Version,
    pub vrid: u8,
    pub adver_int_cs: u16,
    pub auth: Auth,
    /// Empty in multicast mode; otherwise the only sources accepted.
    pub unicast_peers: &'a [IpAddr],
}

/// The receive checks of RFC 5798 §7.1 / RFC 3768 §7.1 that compare against the instance:
/// VRID, version, (v2) authentication and Adver Int, (unicast mode) the peer source address.
/// Address-list mismatches are only logged by the RFCs (MAY), so they are not checked here.
pub fn check_local(p: &Packet, src: IpAddr, l: &Local<'_>) -> Result<(), DecodeError> {
    if p.vrid != l.vrid {
        return Err(DecodeError::VridMismatch(p.vrid));
    }
    if p.version != l.version {
        return Err(DecodeError::VersionMismatch(p.version.number()));
    }
    if !l.unicast_peers.is_empty() && !l.unicast_peers.contains(&src) {
        return Err(DecodeError::UnknownPeer(src));
    }
    if p.version == Version::V2 {
        // RFC 3768 §7.1: auth type and data must match the local configuration.
        if p.auth != l.auth {
            return Err(DecodeError::AuthMismatch);
        }
        // RFC 3768 §7.1: "MUST verify that the Adver Interval in the packet is the same as the
        // locally configured for this virtual router".
        if p.adver_int_cs != l.adver_int_cs {
            return Err(DecodeError::AdverIntMismatch {
                got_cs: p.adver_int_cs,
                want_cs: l.adver_int_cs,
            });
        }
    }
    Ok(())
}

/// Splits a datagram read from a raw IPv4 socket (which includes the IP header) into the header
/// information and the VRRP payload.
pub fn split_ipv4(buf: &[u8]) -> Result<(IpInfo, &[u8]), DecodeError> {
    const IPV4_MIN: usize = 20;
    // Fixed fields (version to checksum), source, destination; options are skipped by `ihl`.
    let Some((&[vihl, _, len_hi, len_lo, _, _, _, _, ttl, proto, _, _], src, dst)) =
        buf.split_first_chunk::<12>().and_then(|(fixed, rest)| {
            let (src, rest) = rest.split_first_chunk::<4>()?;
            let (dst, _) = rest.split_first_chunk::<4>()?;
            Some((fixed, src, dst))
        })
    else {
        return Err(DecodeError::Truncated {
            need: IPV4_MIN,
            got: buf.len(),
        });
    };
    if vihl >> 4 != 4 || proto != PROTO {
        return Err(DecodeError::NotVrrp);
    }
    let ihl = usize::from(vihl & 0x0f) * 4;
    let total = usize::from(u16::from_be_bytes([len_hi, len_lo]));
    if ihl < IPV4_MIN || total < ihl {
        return Err(DecodeError::NotVrrp);
    }
    // `ihl <= total`: only a datagram shorter than its total length fails here.
    let Some(payload) = buf.get(ihl..total) else {
        return Err(DecodeError::Truncated {
            need: total,
            got: buf.len(),
        });
    };
    let info = IpInfo {
        src: Ipv4Addr::from(*src).into(),
        dst: Ipv4Addr::from(*dst).into(),
        ttl,
    };
    Ok((info, payload))
}

/// Splits a full IPv6 packet (as captured on the wire) into header information and payload.
/// The live receive path gets these from ancillary data instead; this serves captures and tests.
/// Extension headers are not followed: VRRP is sent without them.
pub fn split_ipv6(buf: &[u8]) -> Result<(IpInfo, &[u8]), DecodeError> {
    const IPV6_LEN: usize = 40;
    // Fixed fields (version to hop limit), source, destination.
    let Some((&[vtc, _, _, _, len_hi, len_lo, next, hop], src, dst, rest)) =
        buf.split_first_chunk::<8>().and_then(|(fixed, rest)| {
            let (src, rest) = rest.split_first_chunk::<16>()?;
            let (dst, rest) = rest.split_first_chunk::<16>()?;
            Some((fixed, src, dst, rest))
        })
    else {
        return Err(DecodeError::Truncated {
            need: IPV6_LEN,
            got: buf.len(),
        });
    };
    if vtc >> 4 != 6 || next != PROTO {
        return Err(DecodeError::NotVrrp);
    }
    let len = usize::from(u16::from_be_bytes([len_hi, len_lo]));
    let Some(payload) = rest.get(..len) else {
        return Err(DecodeError::Truncated {
            need: IPV6_LEN + len,
            got: buf.len(),
        });
    };
    let info = IpInfo {
        src: Ipv6Addr::from(*src).into(),
        dst: Ipv6Addr::from(*dst).into(),
        ttl: hop,
    };
    Ok((info, payload))
}

/// One's-complement sum of the pseudo-header (RFC 5798 §5.2.8 points at RFC 2460 §8.1 for
/// IPv6; for IPv4 the usual src, dst, zero, protocol, length).
fn pseudo_sum(src: IpAddr, dst: IpAddr, len: usize) -> u32 {
    let mut ph = Vec::with_capacity(40);
    match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            ph.extend_from_slice(&s.octets());
            ph.extend_from_slice(&d.octets());
            ph.extend_from_slice(&[0, PROTO]);
            ph.extend_from_slice(&u16::try_from(len).unwrap_or(u16::MAX).to_be_bytes());
        }
        (IpAddr::V6(s), IpAddr::V6(d)) => {
            ph.extend_from_slice(&s.octets());
            ph.extend_from_slice(&d.octets());
            ph.extend_from_slice(&u32::try_from(len).unwrap_or(u32::MAX).to_be_bytes());
            ph.extend_from_slice(&[0, 0, 0, PROTO]);
        }
        // Mixed families cannot come off one socket; a sum that never verifies is the safe answer.
        _ => return 0xffff,
    }
    sum_words(&ph, 0)
}

fn sum_words(data: &[u8], init: u32) -> u32 {
    let mut sum = init;
    let (words, rest) = data.as_chunks::<2>();
    for &w in words {
        sum += u32::from(u16::from_be_bytes(w));
    }
    if let [last] = rest {
        sum += u32::from(*last) << 8;
    }
    sum
}

/// Internet checksum (RFC 1071) of `data` plus a pre-summed pseudo-header. Verifying a buffer
/// whose checksum field is filled in yields 0.
pub fn checksum(data: &[u8], pseudo: u32) -> u16 {
    let mut sum = sum_words(data, pseudo);
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

#[cfg(test)]
#[path = "packet_tests.rs"]
mod tests;
