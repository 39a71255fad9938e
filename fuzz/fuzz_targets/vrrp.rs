//! VRRP: arbitrary datagrams through the receive path (split, decode, check_local), and
//! decode(encode(p)) == p for every packet the encoder can represent.
#![no_main]
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use pgrouter::vrrp::packet::{Auth, IpInfo, Packet, Version};

#[derive(Arbitrary, Debug)]
struct Input {
    v6: bool,
    src: [u8; 16],
    dst: [u8; 16],
    ttl: u8,
    /// Either raw bytes or a packet to round-trip.
    raw: Result<Vec<u8>, Gen>,
}

#[derive(Arbitrary, Debug)]
struct Gen {
    v2: bool,
    vrid: u8,
    priority: u8,
    adver_int_cs: u16,
    addrs: Vec<[u8; 16]>,
    pass: Option<[u8; 8]>,
}

fn addr(v6: bool, b: [u8; 16]) -> IpAddr {
    if v6 {
        IpAddr::V6(Ipv6Addr::from(b))
    } else {
        IpAddr::V4(Ipv4Addr::new(b[0], b[1], b[2], b[3]))
    }
}

fuzz_target!(|input: Input| {
    let ip = IpInfo {
        src: addr(input.v6, input.src),
        dst: addr(input.v6, input.dst),
        ttl: input.ttl,
    };
    match input.raw {
        Ok(bytes) => {
            if let Err(e) = pgrouter_fuzz::props::vrrp_bytes(&bytes, &ip) {
                panic!("{e}\n{ip:?} {bytes:02x?}");
            }
        }
        Err(g) => {
            let p = Packet {
                version: if g.v2 { Version::V2 } else { Version::V3 },
                vrid: g.vrid,
                priority: g.priority,
                adver_int_cs: g.adver_int_cs,
                addrs: g.addrs.into_iter().map(|a| addr(input.v6, a)).collect(),
                auth: match (g.v2, g.pass) {
                    (true, Some(p)) => Auth::Pass(p),
                    _ => Auth::None,
                },
            };
            if !pgrouter_fuzz::props::vrrp_representable(&p, &ip) {
                return;
            }
            if let Err(e) = pgrouter_fuzz::props::vrrp_round_trip(&p, &ip) {
                panic!("{e}");
            }
        }
    }
});
