//! Announcements for a VIP this host now owns: gratuitous ARP and unsolicited NA.
use std::io;
use std::mem::{size_of, zeroed};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::fd::{AsRawFd, OwnedFd};

use super::{setsockopt, sockaddr_in6, socket};

/// Sends announcements for a VIP we now own: a gratuitous ARP request (as keepalived sends)
/// for IPv4, an unsolicited neighbour advertisement with the override flag for IPv6
/// (RFC 5798 §6.4.1 / §8.1.2 and RFC 4861 §7.2.6).
pub struct Announcer {
    ifindex: u32,
    mac: [u8; 6],
    packet: OwnedFd,
    icmp6: Option<OwnedFd>,
}

impl Announcer {
    pub fn open(ifindex: u32, mac: [u8; 6], v6: bool) -> io::Result<Announcer> {
        // Protocol 0: a send-only packet socket that never queues received frames.
        let packet = socket(libc::AF_PACKET, libc::SOCK_RAW, 0)?;
        let icmp6 = if v6 {
            let fd = socket(libc::AF_INET6, libc::SOCK_RAW, libc::IPPROTO_ICMPV6)?;
            let raw = fd.as_raw_fd();
            let hops: libc::c_int = 255;
            setsockopt(raw, libc::IPPROTO_IPV6, libc::IPV6_MULTICAST_HOPS, &hops)?;
            let idx = ifindex as libc::c_int;
            setsockopt(raw, libc::IPPROTO_IPV6, libc::IPV6_MULTICAST_IF, &idx)?;
            // ICMP6_FILTER (1) blocking every type: we only send on this socket.
            let block_all = [u32::MAX; 8];
            setsockopt(raw, libc::IPPROTO_ICMPV6, 1, &block_all)?;
            Some(fd)
        } else {
            None
        };
        Ok(Announcer {
            ifindex,
            mac,
            packet,
            icmp6,
        })
    }

    pub fn announce(&self, addr: IpAddr) -> io::Result<()> {
        match addr {
            IpAddr::V4(a) => self.garp(a),
            IpAddr::V6(a) => self.unsolicited_na(a),
        }
    }

    fn garp(&self, a: Ipv4Addr) -> io::Result<()> {
        let frame = garp_frame(self.mac, a);
        // SAFETY: sockaddr_ll is plain data.
        let mut sll: libc::sockaddr_ll = unsafe { zeroed() };
        sll.sll_family = libc::AF_PACKET as u16;
        sll.sll_protocol = (libc::ETH_P_ARP as u16).to_be();
        sll.sll_ifindex = self.ifindex as i32;
        sll.sll_halen = 6;
        sll.sll_addr[..6].copy_from_slice(&[0xff; 6]);
        // SAFETY: buffer and address are valid for the lengths given.
        let n = unsafe {
            libc::sendto(
                self.packet.as_raw_fd(),
                frame.as_ptr().cast(),
                frame.len(),
                0,
                (&sll as *const libc::sockaddr_ll).cast(),
                size_of::<libc::sockaddr_ll>() as libc::socklen_t,
            )
        };
        if n < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(())
        }
    }

    fn unsolicited_na(&self, a: Ipv6Addr) -> io::Result<()> {
        let Some(fd) = &self.icmp6 else { return Ok(()) };
        let msg = na_message(self.mac, a);
        let all_nodes = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 1);
        let sin6 = sockaddr_in6(all_nodes, self.ifindex);
        // SAFETY: buffer and address are valid for the lengths given; the kernel fills the
        // ICMPv6 checksum on raw ICMPv6 sockets.
        let n = unsafe {
            libc::sendto(
                fd.as_raw_fd(),
                msg.as_ptr().cast(),
                msg.len(),
                0,
                (&sin6 as *const libc::sockaddr_in6).cast(),
                size_of::<libc::sockaddr_in6>() as libc::socklen_t,
            )
        };
        if n < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(())
        }
    }
}

/// Ethernet + ARP request announcing `ip` at `mac` (sender = target = VIP, broadcast).
pub fn garp_frame(mac: [u8; 6], ip: Ipv4Addr) -> Vec<u8> {
    let mut f = Vec::with_capacity(42);
    f.extend_from_slice(&[0xff; 6]);
    f.extend_from_slice(&mac);
    f.extend_from_slice(&[0x08, 0x06]);
    // htype Ethernet, ptype IPv4, hlen 6, plen 4, op request.
    f.extend_from_slice(&[0, 1, 0x08, 0x00, 6, 4, 0, 1]);
    f.extend_from_slice(&mac);
    f.extend_from_slice(&ip.octets());
    f.extend_from_slice(&[0xff; 6]);
    f.extend_from_slice(&ip.octets());
    f
}

/// ICMPv6 neighbour advertisement (type 136), Override set, with the target link-layer
/// address option; checksum left zero for the kernel.
pub fn na_message(mac: [u8; 6], target: Ipv6Addr) -> Vec<u8> {
    let mut m = Vec::with_capacity(32);
    m.extend_from_slice(&[136, 0, 0, 0]);
    m.extend_from_slice(&[0x20, 0, 0, 0]);
    m.extend_from_slice(&target.octets());
    m.extend_from_slice(&[2, 1]);
    m.extend_from_slice(&mac);
    m
}
