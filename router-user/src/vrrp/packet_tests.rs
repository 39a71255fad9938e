//! Codec tests: byte vectors both ways, packets captured from Debian's keepalived 2.2.7, and
//! every malformation the receive path must reject without panicking.
use super::*;

/// Reads a fixture: `#` comment lines, then one line of hex (IP header + VRRP).
fn fixture(text: &str) -> Vec<u8> {
    let hex: String = text
        .lines()
        .filter(|l| !l.starts_with('#'))
        .collect::<String>();
    let hex = hex.trim();
    (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).expect("fixture hex"))
        .collect()
}

fn split(raw: &[u8]) -> (IpInfo, Vec<u8>) {
    let (info, payload) = if raw[0] >> 4 == 4 {
        split_ipv4(raw)
    } else {
        split_ipv6(raw)
    }
    .expect("ip header");
    (info, payload.to_vec())
}

const KA_V3_V4: &str = include_str!("fixtures/keepalived_v3_ipv4_multicast_prio150.hex");
const KA_V3_V4_P0: &str = include_str!("fixtures/keepalived_v3_ipv4_multicast_prio0.hex");
const KA_V3_V6: &str = include_str!("fixtures/keepalived_v3_ipv6_prio100.hex");
const KA_V3_V6_P0: &str = include_str!("fixtures/keepalived_v3_ipv6_prio0.hex");
const KA_V2: &str = include_str!("fixtures/keepalived_v2_pass_prio120.hex");
const KA_V2_P0: &str = include_str!("fixtures/keepalived_v2_pass_prio0.hex");
const KA_V3_UNI: &str = include_str!("fixtures/keepalived_v3_ipv4_unicast_prio200.hex");
const KA_V3_UNI_P0: &str = include_str!("fixtures/keepalived_v3_ipv4_unicast_prio0.hex");

fn v4(s: &str) -> IpAddr {
    IpAddr::V4(s.parse().expect("v4"))
}
fn v6(s: &str) -> IpAddr {
    IpAddr::V6(s.parse().expect("v6"))
}

/// Table: keepalived capture → the packet we must decode from it.
#[test]
fn decodes_keepalived_captures() {
    let cases: &[(&str, &str, Packet)] = &[
        (
            "v3 v4 multicast",
            KA_V3_V4,
            Packet {
                version: Version::V3,
                vrid: 51,
                priority: 150,
                adver_int_cs: 100,
                addrs: vec![v4("198.18.1.100")],
                auth: Auth::None,
            },
        ),
        (
            "v3 v4 prio 0",
            KA_V3_V4_P0,
            Packet {
                version: Version::V3,
                vrid: 51,
                priority: 0,
                adver_int_cs: 100,
                addrs: vec![v4("198.18.1.100")],
                auth: Auth::None,
            },
        ),
        (
            "v3 v6",
            KA_V3_V6,
            Packet {
                version: Version::V3,
                vrid: 52,
                priority: 100,
                adver_int_cs: 50,
                addrs: vec![v6("fd00:198:18:1::100")],
                auth: Auth::None,
            },
        ),
        (
            "v3 v6 prio 0",
            KA_V3_V6_P0,
            Packet {
                version: Version::V3,
                vrid: 52,
                priority: 0,
                adver_int_cs: 50,
                addrs: vec![v6("fd00:198:18:1::100")],
                auth: Auth::None,
            },
        ),
        (
            "v2 PASS",
            KA_V2,
            Packet {
                version: Version::V2,
                vrid: 53,
                priority: 120,
                adver_int_cs: 100,
                addrs: vec![v4("198.18.1.101"), v4("198.18.1.102")],
                auth: Auth::pass("secret12"),
            },
        ),
        (
            "v2 PASS prio 0",
            KA_V2_P0,
            Packet {
                version: Version::V2,
                vrid: 53,
                priority: 0,
                adver_int_cs: 100,
                addrs: vec![v4("198.18.1.101"), v4("198.18.1.102")],
                auth: Auth::pass("secret12"),
            },
        ),
        (
            "v3 unicast",
            KA_V3_UNI,
            Packet {
                version: Version::V3,
                vrid: 54,
                priority: 200,
                adver_int_cs: 100,
                addrs: vec![v4("198.18.1.103")],
                auth: Auth::None,
            },
        ),
        (
            "v3 unicast prio 0",
            KA_V3_UNI_P0,
            Packet {
                version: Version::V3,
                vrid: 54,
                priority: 0,
                adver_int_cs: 100,
                addrs: vec![v4("198.18.1.103")],
                auth: Auth::None,
            },
        ),
    ];
    for (name, fx, want) in cases {
        let (info, payload) = split(&fixture(fx));
        let got = Packet::decode(&payload, &info).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(&got, want, "{name}");
    }
}

/// Our encoder produces exactly keepalived's bytes, checksum included (so keepalived accepts
/// what we send, and our v3 IPv4 checksum uses the pseudo-header as keepalived does).
#[test]
fn encodes_byte_identical_to_keepalived() {
    for fx in [
        KA_V3_V4,
        KA_V3_V4_P0,
        KA_V3_V6,
        KA_V3_V6_P0,
        KA_V2,
        KA_V2_P0,
        KA_V3_UNI,
        KA_V3_UNI_P0,
    ] {
        let (info, payload) = split(&fixture(fx));
        let p = Packet::decode(&payload, &info).expect("decode");
        assert_eq!(
            p.encode(info.src, info.dst),
            payload,
            "{}",
            fx.lines().nth(1).unwrap_or("")
        );
        assert_eq!(p.len(), payload.len());
    }
}

/// RFC 5798 §5.2.8 example shape built by hand: v3, VRID 1, prio 100, 1 s, one address.
#[test]
fn encodes_v3_ipv4_fields() {
    let p = Packet {
        version: Version::V3,
        vrid: 1,
        priority: 100,
        adver_int_cs: 100,
        addrs: vec![v4("198.18.0.100")],
        auth: Auth::None,
    };
    let b = p.encode(v4("198.18.0.1"), MCAST_V4.into());
    assert_eq!(&b[..6], &[0x31, 1, 100, 1, 0x00, 0x64]);
    assert_eq!(&b[8..], &[198, 18, 0, 100]);
    let info = IpInfo {
        src: v4("198.18.0.1"),
        dst: MCAST_V4.into(),
        ttl: 255,
    };
    assert_eq!(Packet::decode(&b, &info), Ok(p));
}

/// Older keepalived (and `old_unicast_checksum`) leaves the pseudo-header out of v3 IPv4
/// checksums; we accept both forms but never send the old one.
#[test]
fn accepts_v3_ipv4_checksum_without_pseudo_header() {
    let p = Packet {
        version: Version::V3,
        vrid: 7,
        priority: 90,
        adver_int_cs: 10,
        addrs: vec![v4("198.18.0.100")],
        auth: Auth::None,
    };
    let src = v4("198.18.0.2");
    let mut b = p.encode(src, MCAST_V4.into());
    b[6] = 0;
    b[7] = 0;
    let sum = checksum(&b, 0);
    b[6..8].copy_from_slice(&sum.to_be_bytes());
    let info = IpInfo {
        src,
        dst: MCAST_V4.into(),
        ttl: 255,
    };
    assert_eq!(Packet::decode(&b, &info), Ok(p));
}

/// IPv6 has no "without pseudo-header" form: RFC 5798 §5.2.8 makes it mandatory.
#[test]
fn rejects_v3_ipv6_checksum_without_pseudo_header() {
    let (info, mut payload) = split(&fixture(KA_V3_V6));
    payload[6] = 0;
    payload[7] = 0;
    let sum = checksum(&payload, 0);
    payload[6..8].copy_from_slice(&sum.to_be_bytes());
    assert_eq!(
        Packet::decode(&payload, &info),
        Err(DecodeError::BadChecksum)
    );
}

/// Every single-bit flip in any captured packet is caught (by the checksum or a field check),
/// and every truncation is an error, never a panic.
#[test]
fn rejects_corruption_and_truncation() {
    for fx in [KA_V3_V4, KA_V3_V6, KA_V2, KA_V3_UNI] {
        let (info, payload) = split(&fixture(fx));
        for i in 0..payload.len() * 8 {
            let mut b = payload.clone();
            b[i / 8] ^= 1 << (i % 8);
            assert!(Packet::decode(&b, &info).is_err(), "bit {i} flip accepted");
        }
        for n in 0..payload.len() {
            assert!(
                matches!(
                    Packet::decode(&payload[..n], &info),
                    Err(DecodeError::Truncated { .. })
                ),
                "truncation to {n} not reported as truncated"
            );
        }
        let mut long = payload.clone();
        long.extend_from_slice(&[0, 0, 0, 0]);
        assert!(matches!(
            Packet::decode(&long, &info),
            Err(DecodeError::BadLength { .. })
        ));
        // Raw IP datagrams cut anywhere: split_* must not panic either.
        let raw = fixture(fx);
        for n in 0..raw.len() {
            let r = if raw[0] >> 4 == 4 {
                split_ipv4(&raw[..n])
            } else {
                split_ipv6(&raw[..n])
            };
            assert!(r.is_err(), "truncated ip datagram to {n} accepted");
        }
    }
}

/// RFC 5798 §7.1: TTL/hop limit must be 255; version, type and VRID must be valid.
#[test]
fn header_field_checks() {
    let (info, payload) = split(&fixture(KA_V3_V4));
    let mut low_ttl = info;
    low_ttl.ttl = 254;
    assert_eq!(
        Packet::decode(&payload, &low_ttl),
        Err(DecodeError::BadTtl(254))
    );

    // Re-checksum after each edit so only the field under test is wrong.
    let edit = |f: &dyn Fn(&mut Vec<u8>)| {
        let mut b = payload.clone();
        f(&mut b);
        b[6] = 0;
        b[7] = 0;
        let s = checksum(&b, pseudo_sum(info.src, info.dst, b.len()));
        b[6..8].copy_from_slice(&s.to_be_bytes());
        Packet::decode(&b, &info)
    };
    assert_eq!(edit(&|b| b[0] = 0x41), Err(DecodeError::BadVersion(4)));
    assert_eq!(edit(&|b| b[0] = 0x32), Err(DecodeError::BadType(2)));
    assert_eq!(edit(&|b| b[1] = 0), Err(DecodeError::BadVrid));
    assert_eq!(
        edit(&|b| b[3] = 2),
        Err(DecodeError::Truncated { need: 16, got: 12 })
    );
    assert_eq!(
        edit(&|b| b[3] = 0),
        Err(DecodeError::BadLength {
            len: 12,
            count: 0,
            expected: 8
        })
    );
}

/// v2 specifics: auth type 2 (AH) is refused; v2 cannot ride IPv6.
#[test]
fn v2_auth_and_family_checks() {
    let (info, payload) = split(&fixture(KA_V2));
    let mut b = payload.clone();
    b[4] = 2;
    b[6] = 0;
    b[7] = 0;
    let s = checksum(&b, 0);
    b[6..8].copy_from_slice(&s.to_be_bytes());
    assert_eq!(Packet::decode(&b, &info), Err(DecodeError::BadAuthType(2)));
    let v6info = IpInfo {
        src: v6("fe80::1"),
        dst: MCAST_V6.into(),
        ttl: 255,
    };
    assert_eq!(
        Packet::decode(&payload, &v6info),
        Err(DecodeError::V2OverIpv6)
    );
}

/// Instance checks of §7.1: VRID, version, v2 password and interval, unicast peer source.
#[test]
fn local_checks() {
    let (info, payload) = split(&fixture(KA_V2));
    let p = Packet::decode(&payload, &info).expect("decode");
    let peers = [v4("198.18.1.1")];
    let ok = Local {
        version: Version::V2,
        vrid: 53,
        adver_int_cs: 100,
        auth: Auth::pass("secret12"),
        unicast_peers: &[],
    };
    assert_eq!(check_local(&p, info.src, &ok), Ok(()));
    assert_eq!(
        check_local(
            &p,
            info.src,
            &Local {
                unicast_peers: &peers,
                ..ok.clone()
            }
        ),
        Ok(())
    );
    let cases: &[(Local<'_>, DecodeError)] = &[
        (
            Local {
                vrid: 54,
                ..ok.clone()
            },
            DecodeError::VridMismatch(53),
        ),
        (
            Local {
                version: Version::V3,
                ..ok.clone()
            },
            DecodeError::VersionMismatch(2),
        ),
        (
            Local {
                auth: Auth::pass("wrong"),
                ..ok.clone()
            },
            DecodeError::AuthMismatch,
        ),
        (
            Local {
                auth: Auth::None,
                ..ok.clone()
            },
            DecodeError::AuthMismatch,
        ),
        (
            Local {
                adver_int_cs: 200,
                ..ok.clone()
            },
            DecodeError::AdverIntMismatch {
                got_cs: 100,
                want_cs: 200,
            },
        ),
        (
            Local {
                unicast_peers: &[IpAddr::V4(Ipv4Addr::new(198, 18, 1, 9))],
                ..ok.clone()
            },
            DecodeError::UnknownPeer(info.src),
        ),
    ];
    for (local, err) in cases {
        assert_eq!(check_local(&p, info.src, local).as_ref(), Err(err));
    }
}

/// Password handling matches keepalived: truncated to 8 bytes, zero-padded.
#[test]
fn pass_is_truncated_and_padded() {
    assert_eq!(Auth::pass("ab"), Auth::Pass(*b"ab\0\0\0\0\0\0"));
    assert_eq!(Auth::pass("0123456789"), Auth::Pass(*b"01234567"));
}

/// Every possible 0..=40 byte buffer prefix of random-ish data decodes or errors, no panic.
#[test]
fn garbage_never_panics() {
    let mut x: u32 = 0x1234_5678;
    let info4 = IpInfo {
        src: v4("198.18.0.1"),
        dst: MCAST_V4.into(),
        ttl: 255,
    };
    let info6 = IpInfo {
        src: v6("fe80::1"),
        dst: MCAST_V6.into(),
        ttl: 255,
    };
    for _ in 0..20_000 {
        let mut b = vec![0u8; (x % 64) as usize];
        for v in b.iter_mut() {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            *v = x as u8;
        }
        if let Some(f) = b.first_mut() {
            *f = (*f & 0x0f) | if x & 1 == 0 { 0x30 } else { 0x20 };
        }
        let _ = Packet::decode(&b, &info4);
        let _ = Packet::decode(&b, &info6);
        let _ = split_ipv4(&b);
        let _ = split_ipv6(&b);
    }
}
