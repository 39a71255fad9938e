//! Raw Ethernet frames sent from inside a test namespace (`AF_PACKET`), for packets no socket
//! would send: SYNs from spoofed sources, forged RSTs. Frames come from [`crate::frames`]; the
//! flood patches a template in place so one process reaches the highest rate it can.
use std::{
    ffi::CString,
    io,
    net::Ipv4Addr,
    os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd},
    sync::atomic::{AtomicBool, Ordering},
    time::{Duration, Instant},
};

use crate::frames::{self, ETH_HDR};

/// An `AF_PACKET` socket bound to one interface of the namespace it was opened in.
pub struct RawSocket {
    fd: OwnedFd,
    addr: libc::sockaddr_ll,
}

impl RawSocket {
    /// Opens a send-only raw socket on `iface` of the calling thread's network namespace
    /// (call it inside [`crate::in_netns`]).
    pub fn open(iface: &str) -> io::Result<Self> {
        let name = CString::new(iface).map_err(io::Error::other)?;
        let ifindex = unsafe { libc::if_nametoindex(name.as_ptr()) };
        if ifindex == 0 {
            return Err(io::Error::last_os_error());
        }
        // Protocol 0: the socket receives nothing, so a flood never fills its queue.
        let raw = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW | libc::SOCK_CLOEXEC, 0) };
        if raw < 0 {
            return Err(io::Error::last_os_error());
        }
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        let mut addr: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        addr.sll_family = libc::AF_PACKET as u16;
        addr.sll_protocol = (libc::ETH_P_IP as u16).to_be();
        addr.sll_ifindex = ifindex as i32;
        addr.sll_halen = 6;
        Ok(Self { fd, addr })
    }

    /// Sends one complete Ethernet frame.
    pub fn send(&self, frame: &[u8]) -> io::Result<()> {
        let mut addr = self.addr;
        addr.sll_addr[..6].copy_from_slice(&frame[..6]);
        let n = unsafe {
            libc::sendto(
                self.fd.as_raw_fd(),
                frame.as_ptr().cast(),
                frame.len(),
                0,
                (&raw const addr).cast(),
                size_of::<libc::sockaddr_ll>() as u32,
            )
        };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }
}

/// The MAC address of `iface` in namespace `ns`.
pub fn mac_of(ns: &str, iface: &str) -> anyhow::Result<[u8; 6]> {
    let text = crate::sh(&format!(
        "ip netns exec {ns} cat /sys/class/net/{iface}/address"
    ))?;
    let bytes: Vec<u8> = text
        .trim()
        .split(':')
        .map(|b| u8::from_str_radix(b, 16))
        .collect::<Result<_, _>>()
        .map_err(|e| anyhow::anyhow!("MAC of {ns}/{iface} {text:?}: {e}"))?;
    bytes
        .try_into()
        .map_err(|_| anyhow::anyhow!("MAC of {ns}/{iface} {text:?}: not 6 bytes"))
}

/// Where a spoofed SYN flood comes from and goes to, and its bounds.
#[derive(Clone, Copy, Debug)]
pub struct Flood {
    pub smac: [u8; 6],
    pub dmac: [u8; 6],
    /// Sources are `first`, `first + 1`, … `first + hosts - 1`, ports 1024 upwards: every
    /// SYN of a flood is a new 4-tuple (hosts × 64,000 of them).
    pub first: Ipv4Addr,
    pub hosts: u32,
    pub dst: (Ipv4Addr, u16),
    pub max_packets: u64,
    pub max_time: Duration,
}

/// What a flood achieved.
#[derive(Clone, Copy, Debug, Default)]
pub struct FloodReport {
    /// Frames the kernel accepted.
    pub sent: u64,
    /// Frames refused at once (ENOBUFS: the device or its peer's queue was full).
    pub refused: u64,
    pub elapsed: Duration,
}

impl FloodReport {
    pub fn rate(&self) -> f64 {
        self.sent as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

/// The internet checksum of `data` folded onto `sum`.
fn csum(mut sum: u32, data: &[u8]) -> u16 {
    for c in data.chunks(2) {
        let w = if c.len() == 2 {
            u16::from_be_bytes([c[0], c[1]])
        } else {
            u16::from_be_bytes([c[0], 0])
        };
        sum += u32::from(w);
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// Sends spoofed SYNs as fast as this thread can until `f.max_packets` or `f.max_time`, or
/// until `stop` is set. Call it inside the flooding host's namespace.
pub fn syn_flood(sock: &RawSocket, f: &Flood, stop: &AtomicBool) -> anyhow::Result<FloodReport> {
    anyhow::ensure!(f.hosts > 0, "a flood needs at least one source host");
    let mut frame = frames::Tcp::new((f.first, 1024), f.dst)
        .macs(f.smac, f.dmac)
        .syn()
        .build(&[]);
    let ip = ETH_HDR;
    let tcp = ETH_HDR + 20;
    let tcp_len = frame.len() - tcp;
    let first = u32::from(f.first);
    let start = Instant::now();
    let mut r = FloodReport::default();
    let mut i: u64 = 0;
    while i < f.max_packets {
        // The clock and the stop flag every 256 frames: cheap, and bounds overshoot.
        if i.is_multiple_of(256) && (start.elapsed() >= f.max_time || stop.load(Ordering::Relaxed))
        {
            break;
        }
        let host = first + (i % u64::from(f.hosts)) as u32;
        let port = 1024 + ((i / u64::from(f.hosts)) % 64_000) as u16;
        frame[ip + 12..ip + 16].copy_from_slice(&host.to_be_bytes());
        frame[ip + 10..ip + 12].copy_from_slice(&[0, 0]);
        let c = csum(0, &frame[ip..ip + 20]);
        frame[ip + 10..ip + 12].copy_from_slice(&c.to_be_bytes());
        frame[tcp..tcp + 2].copy_from_slice(&port.to_be_bytes());
        frame[tcp + 4..tcp + 8]
            .copy_from_slice(&((i as u32).wrapping_mul(2_654_435_761)).to_be_bytes());
        frame[tcp + 16..tcp + 18].copy_from_slice(&[0, 0]);
        let mut pseudo = [0u8; 12];
        pseudo[..8].copy_from_slice(&frame[ip + 12..ip + 20]);
        pseudo[9] = 6;
        pseudo[10..12].copy_from_slice(&(tcp_len as u16).to_be_bytes());
        let mut sum = 0u32;
        for c in pseudo.chunks(2) {
            sum += u32::from(u16::from_be_bytes([c[0], c[1]]));
        }
        let c = csum(sum, &frame[tcp..]);
        frame[tcp + 16..tcp + 18].copy_from_slice(&c.to_be_bytes());
        if i == 0 {
            // Judge the patched frame once with an independent parser.
            let p = frames::parse(&frame)?;
            anyhow::ensure!(
                p.ip_csum_ok && p.tcp_csum_ok && p.tcp.syn,
                "flood template is not a valid SYN: {p:?}"
            );
        }
        match sock.send(&frame) {
            Ok(()) => r.sent += 1,
            Err(e) if e.raw_os_error() == Some(libc::ENOBUFS) => r.refused += 1,
            Err(e) => anyhow::bail!("sending flood frame #{i}: {e}"),
        }
        i += 1;
    }
    r.elapsed = start.elapsed();
    Ok(r)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csum_of_a_known_ipv4_header() {
        // RFC 1071 style example: header with a zeroed checksum field.
        let h = [
            0x45, 0x00, 0x00, 0x73, 0x00, 0x00, 0x40, 0x00, 0x40, 0x11, 0x00, 0x00, 0xc0, 0xa8,
            0x00, 0x01, 0xc0, 0xa8, 0x00, 0xc7,
        ];
        assert_eq!(csum(0, &h), 0xb861);
    }
}
