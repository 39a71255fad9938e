//! shutdown-sessions, actively: when a backend is marked down, every flow it carries gets a
//! RST to the client and a RST to the node at once (HAProxy's `on-marked-down
//! shutdown-sessions`), instead of waiting for either end to speak. Sequence numbers come from
//! the last ACK the kernel saw in each direction, so the resets land in-window. Its half-open
//! flows are deleted from the handshake table.
use std::{collections::BTreeSet, net::Ipv4Addr, os::fd::AsFd as _};

use aya::maps::{HashMap, IterableMap as _, MapData};
use router_ebpf::{FLOW_F_CLOSED, FLOW_F_REPLY, Flow, FlowKey};
use tracing::{info, warn};

use super::{batch, writer::Maps};

/// One flow to reset: the client leg (as the client sees it) and the backend leg.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Victim {
    pub fwd_key: FlowKey,
    pub fwd: Flow,
    pub reply: Option<Flow>,
}

/// The entries of `map` that `keep` selects, read in batches (`BPF_MAP_LOOKUP_BATCH`, a few
/// syscalls for the whole table, memory only for what is kept); on a kernel without batch
/// operations, one lookup per key.
fn entries(
    map: &HashMap<MapData, FlowKey, Flow>,
    what: &str,
    keep: impl Fn(&Flow) -> bool,
) -> Vec<(FlowKey, Flow)> {
    let fd = map.map().fd().as_fd();
    let mut cursor = None;
    let mut out = Vec::new();
    loop {
        match batch::lookup_batch::<FlowKey, Flow>(fd, &mut cursor, SWEEP_BATCH) {
            Ok(b) => {
                out.extend(b.entries.into_iter().filter(|(_, f)| keep(f)));
                if b.end {
                    return out;
                }
            }
            Err(e) => {
                warn!("shutdown-sessions: batch walk of {what}: {e}; walking key by key");
                return map.iter().flatten().filter(|(_, f)| keep(f)).collect();
            }
        }
    }
}

/// Entries per batch syscall of a sweep (a rare, operator-visible event: finish it fast).
const SWEEP_BATCH: usize = 16_384;

/// Finds the forward entries of established flows on `backends`, with their reply entries,
/// and the handshake-table entries (both directions) of flows on `backends`.
pub fn collect(maps: &Maps, backends: &BTreeSet<u32>) -> (Vec<Victim>, Vec<FlowKey>) {
    // Both entries of a flow carry its backend id.
    let on = |f: &Flow| backends.contains(&f.backend_id);
    let ct = entries(&maps.conntrack, "PGR_CONNTRACK", on);
    let by_key: std::collections::HashMap<FlowKey, Flow> = ct.iter().copied().collect();
    let mut out = Vec::new();
    for (k, f) in &ct {
        if f.flags & FLOW_F_REPLY != 0 {
            continue;
        }
        let rk = f.peer_key();
        // Inserted after the walk passed its bucket: look it up.
        let reply = by_key
            .get(&rk)
            .copied()
            .or_else(|| maps.conntrack.get(&rk, 0).ok());
        out.push(Victim {
            fwd_key: *k,
            fwd: *f,
            reply,
        });
    }
    let half_open = entries(&maps.handshake, "PGR_HANDSHAKE", on)
        .into_iter()
        .map(|(k, _)| k)
        .collect();
    (out, half_open)
}

/// A RST segment (IPv4 + TCP, no options) from `src` to `dst` with sequence `seq_be` as it
/// would appear on the wire.
pub fn rst_segment(src: (Ipv4Addr, u16), dst: (Ipv4Addr, u16), seq_be: u32) -> [u8; 40] {
    let mut p = [0u8; 40];
    p[0] = 0x45;
    p[2..4].copy_from_slice(&40u16.to_be_bytes());
    p[6] = 0x40; // DF
    p[8] = 64;
    p[9] = 6;
    p[12..16].copy_from_slice(&src.0.octets());
    p[16..20].copy_from_slice(&dst.0.octets());
    let ipc = !fold(sum(&p[..20]));
    p[10..12].copy_from_slice(&ipc.to_be_bytes());
    // TCP from byte 20.
    p[20..22].copy_from_slice(&src.1.to_be_bytes());
    p[22..24].copy_from_slice(&dst.1.to_be_bytes());
    p[24..28].copy_from_slice(&seq_be.to_ne_bytes());
    p[32] = 5 << 4;
    p[33] = 0x04; // RST
    let mut pseudo = [0u8; 12];
    pseudo[0..4].copy_from_slice(&src.0.octets());
    pseudo[4..8].copy_from_slice(&dst.0.octets());
    pseudo[9] = 6;
    pseudo[10..12].copy_from_slice(&20u16.to_be_bytes());
    let c = !fold(sum(&pseudo) + sum(&p[20..]));
    p[36..38].copy_from_slice(&c.to_be_bytes());
    p
}

fn sum(b: &[u8]) -> u64 {
    let (words, odd) = b.as_chunks::<2>();
    let words: u64 = words
        .iter()
        .map(|&w| u64::from(u16::from_be_bytes(w)))
        .sum();
    words + odd.first().map_or(0, |&l| u64::from(l) << 8)
}

fn fold(mut s: u64) -> u16 {
    while s > 0xffff {
        s = (s & 0xffff) + (s >> 16);
    }
    s as u16
}

fn v4(w: [u32; 4]) -> Ipv4Addr {
    Ipv4Addr::from(w[0].to_ne_bytes())
}

/// Resets and removes every flow of `backends`. Returns how many flows were reset.
pub fn shutdown_sessions(maps: &mut Maps, backends: &BTreeSet<u32>) -> usize {
    if backends.is_empty() {
        return 0;
    }
    let (victims, half_open) = collect(maps, backends);
    // Half-open flows get no RST: the client's next packet (its ACK) finds no flow and is
    // answered by the program; the node's SYN-ACK retransmissions reach a reserved port.
    if !half_open.is_empty()
        && let Err(e) = batch::delete_batch(maps.handshake.map().fd().as_fd(), &half_open)
    {
        warn!("shutdown-sessions: deleting handshakes: {e}");
    }
    let sock = unsafe { libc::socket(libc::AF_INET, libc::SOCK_RAW, libc::IPPROTO_RAW) };
    if sock < 0 {
        warn!(
            "raw socket for shutdown-sessions: {}",
            std::io::Error::last_os_error()
        );
    }
    for v in &victims {
        let client = (v4(v.fwd_key.saddr), u16::from_be(v.fwd_key.sport));
        let vip = (v4(v.fwd_key.daddr), u16::from_be(v.fwd_key.dport));
        let node = (v4(v.fwd.daddr), u16::from_be(v.fwd.dport));
        let snat = (v4(v.fwd.saddr), u16::from_be(v.fwd.sport));
        // A closed flow is over at both ends already: nothing to reset, only to delete.
        if sock >= 0 && v.fwd.flags & FLOW_F_CLOSED == 0 {
            // To the client: its last ACK is the next sequence it expects from us.
            if v.fwd.last_ack != 0 {
                send(sock, &rst_segment(vip, client, v.fwd.last_ack), client.0);
            }
            if let Some(r) = v.reply
                && r.last_ack != 0
            {
                send(sock, &rst_segment(snat, node, r.last_ack), node.0);
            }
        }
        let _ = maps.conntrack.remove(&v.fwd_key);
        let _ = maps.conntrack.remove(&v.fwd.peer_key());
    }
    if sock >= 0 {
        unsafe { libc::close(sock) };
    }
    // While shut down the kernel leaves these counts alone; the flows are gone now.
    for id in backends {
        let _ = maps.conns.set(*id, 0, 0);
    }
    if !victims.is_empty() || !half_open.is_empty() {
        info!(
            flows = victims.len(),
            handshakes = half_open.len() / 2,
            "shutdown-sessions: reset flows of marked-down backends"
        );
    }
    victims.len()
}

fn send(sock: i32, pkt: &[u8; 40], dst: Ipv4Addr) {
    let sa = libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: 0,
        sin_addr: libc::in_addr {
            s_addr: u32::from_ne_bytes(dst.octets()),
        },
        sin_zero: [0; 8],
    };
    let rc = unsafe {
        libc::sendto(
            sock,
            pkt.as_ptr().cast(),
            pkt.len(),
            0,
            (&raw const sa).cast(),
            size_of::<libc::sockaddr_in>() as u32,
        )
    };
    if rc < 0 {
        warn!(%dst, "sending RST: {}", std::io::Error::last_os_error());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Both checksums verify (the sum over the covered bytes folds to 0xffff) and the
    /// sequence number and flags sit where TCP puts them.
    #[test]
    fn rst_segment_matches_a_linux_rst() {
        let p = rst_segment(
            (Ipv4Addr::new(198, 18, 0, 100), 5000),
            (Ipv4Addr::new(198, 18, 0, 30), 40000),
            1u32.to_be(),
        );
        // IPv4 header checksum over the header including it folds to 0xffff.
        assert_eq!(fold(sum(&p[..20])), 0xffff);
        let mut pseudo = [0u8; 12];
        pseudo[0..4].copy_from_slice(&p[12..16]);
        pseudo[4..8].copy_from_slice(&p[16..20]);
        pseudo[9] = 6;
        pseudo[11] = 20;
        assert_eq!(fold(sum(&pseudo) + sum(&p[20..])), 0xffff);
        assert_eq!(&p[24..28], &[0, 0, 0, 1]);
        assert_eq!(p[33], 0x04);
    }
}
