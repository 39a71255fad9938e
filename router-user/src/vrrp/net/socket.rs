//! The raw VRRP socket: one per instance, bound to its interface and address family.
use std::io;
use std::mem::{size_of, zeroed};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};

use tokio::io::unix::AsyncFd;

use crate::vrrp::packet::{self, IpInfo, PROTO, TTL};

use super::{bind_to_device, setsockopt, sockaddr_in, sockaddr_in6, socket};

/// A raw VRRP socket bound to one interface and one address family.
pub struct VrrpSocket {
    fd: AsyncFd<OwnedFd>,
    ifindex: u32,
    v6: bool,
}

/// A received datagram: IP header facts and where the VRRP payload sits in the buffer.
pub struct Received {
    pub info: IpInfo,
    pub start: usize,
    pub end: usize,
}

impl VrrpSocket {
    /// Opens the socket. Multicast mode joins 224.0.0.18 / ff02::12 on the interface; unicast
    /// mode only receives what is addressed to us. TTL / hop limit 255 (RFC 5798 §5.1.1.3);
    /// multicast loopback off so we never hear ourselves.
    pub fn open(ifname: &str, ifindex: u32, v6: bool, multicast: bool) -> io::Result<VrrpSocket> {
        let fd = if v6 {
            let fd = socket(libc::AF_INET6, libc::SOCK_RAW, i32::from(PROTO))?;
            let raw = fd.as_raw_fd();
            let hops: libc::c_int = i32::from(TTL);
            setsockopt(raw, libc::IPPROTO_IPV6, libc::IPV6_MULTICAST_HOPS, &hops)?;
            setsockopt(raw, libc::IPPROTO_IPV6, libc::IPV6_UNICAST_HOPS, &hops)?;
            let off: libc::c_int = 0;
            setsockopt(raw, libc::IPPROTO_IPV6, libc::IPV6_MULTICAST_LOOP, &off)?;
            let on: libc::c_int = 1;
            setsockopt(raw, libc::IPPROTO_IPV6, libc::IPV6_RECVHOPLIMIT, &on)?;
            setsockopt(raw, libc::IPPROTO_IPV6, libc::IPV6_RECVPKTINFO, &on)?;
            let idx = ifindex as libc::c_int;
            setsockopt(raw, libc::IPPROTO_IPV6, libc::IPV6_MULTICAST_IF, &idx)?;
            if multicast {
                let mreq = libc::ipv6_mreq {
                    ipv6mr_multiaddr: libc::in6_addr {
                        s6_addr: packet::MCAST_V6.octets(),
                    },
                    ipv6mr_interface: ifindex,
                };
                setsockopt(raw, libc::IPPROTO_IPV6, libc::IPV6_ADD_MEMBERSHIP, &mreq)?;
            }
            bind_to_device(raw, ifname)?;
            fd
        } else {
            let fd = socket(libc::AF_INET, libc::SOCK_RAW, i32::from(PROTO))?;
            let raw = fd.as_raw_fd();
            // We write the IP header ourselves: the source must be our primary address, not
            // whatever the kernel picks once a VIP sits on the interface.
            let on: libc::c_int = 1;
            setsockopt(raw, libc::IPPROTO_IP, libc::IP_HDRINCL, &on)?;
            let off: libc::c_int = 0;
            setsockopt(raw, libc::IPPROTO_IP, libc::IP_MULTICAST_LOOP, &off)?;
            let mreqn = libc::ip_mreqn {
                imr_multiaddr: libc::in_addr {
                    s_addr: u32::from(packet::MCAST_V4).to_be(),
                },
                imr_address: libc::in_addr { s_addr: 0 },
                imr_ifindex: ifindex as libc::c_int,
            };
            setsockopt(raw, libc::IPPROTO_IP, libc::IP_MULTICAST_IF, &mreqn)?;
            if multicast {
                setsockopt(raw, libc::IPPROTO_IP, libc::IP_ADD_MEMBERSHIP, &mreqn)?;
            }
            bind_to_device(raw, ifname)?;
            fd
        };
        // SAFETY: `fd` is an open socket that the AsyncFd owns and keeps open until dropped.
        let fd = unsafe { AsyncFd::register(fd) }?;
        Ok(VrrpSocket { fd, ifindex, v6 })
    }

    /// Waits for the next datagram. IPv4 raw sockets hand us the IP header; for IPv6 the hop
    /// limit and destination come as ancillary data.
    pub async fn recv(&self, buf: &mut [u8]) -> io::Result<Received> {
        loop {
            let mut guard = self.fd.readable().await?;
            let r = guard.try_io(|fd| {
                if self.v6 {
                    recv_v6(fd.as_raw_fd(), buf)
                } else {
                    recv_v4(fd.as_raw_fd(), buf)
                }
            });
            match r {
                Ok(Ok(Some(r))) => return Ok(r),
                // Not IPv4/VRRP or truncated beyond repair: reported by the caller's decode.
                Ok(Ok(None)) => continue,
                Ok(Err(e)) => return Err(e),
                Err(_would_block) => continue,
            }
        }
    }

    /// Sends one VRRP message from `src` to `dst` with TTL/hop limit 255.
    pub async fn send(&self, src: IpAddr, dst: IpAddr, payload: &[u8]) -> io::Result<()> {
        loop {
            let mut guard = self.fd.writable().await?;
            let r = guard.try_io(|fd| match (src, dst) {
                (IpAddr::V4(s), IpAddr::V4(d)) => send_v4(fd.as_raw_fd(), s, d, payload),
                (IpAddr::V6(s), IpAddr::V6(d)) => {
                    send_v6(fd.as_raw_fd(), self.ifindex, s, d, payload)
                }
                _ => Err(io::Error::other("mixed address families")),
            });
            match r {
                Ok(r) => return r,
                Err(_would_block) => continue,
            }
        }
    }
}

fn recv_v4(fd: RawFd, buf: &mut [u8]) -> io::Result<Option<Received>> {
    // SAFETY: buf is valid for writes of its length.
    let n = unsafe { libc::recv(fd, buf.as_mut_ptr().cast(), buf.len(), 0) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    // Without MSG_TRUNC, recv never reports more than the buffer holds.
    let data = buf.get(..n as usize).unwrap_or(buf);
    match packet::split_ipv4(data) {
        Ok((info, payload)) => {
            let start = payload.as_ptr() as usize - data.as_ptr() as usize;
            Ok(Some(Received {
                info,
                start,
                end: start + payload.len(),
            }))
        }
        // Hand the bytes on as a zero-length payload so the caller counts the rejection.
        Err(_) => Ok(Some(Received {
            info: IpInfo {
                src: Ipv4Addr::UNSPECIFIED.into(),
                dst: Ipv4Addr::UNSPECIFIED.into(),
                ttl: 0,
            },
            start: 0,
            end: 0,
        })),
    }
}

fn recv_v6(fd: RawFd, buf: &mut [u8]) -> io::Result<Option<Received>> {
    // SAFETY: all structures are plain data, sized and pointed at live buffers below.
    unsafe {
        let mut src: libc::sockaddr_in6 = zeroed();
        let mut iov = libc::iovec {
            iov_base: buf.as_mut_ptr().cast(),
            iov_len: buf.len(),
        };
        let mut cbuf = [0u64; 32];
        let mut msg: libc::msghdr = zeroed();
        msg.msg_name = (&mut src as *mut libc::sockaddr_in6).cast();
        msg.msg_namelen = size_of::<libc::sockaddr_in6>() as libc::socklen_t;
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = cbuf.as_mut_ptr().cast();
        msg.msg_controllen = size_of::<[u64; 32]>();
        let n = libc::recvmsg(fd, &mut msg, 0);
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        let mut hops = 0u8;
        let mut dst = Ipv6Addr::UNSPECIFIED;
        let mut c = libc::CMSG_FIRSTHDR(&msg);
        while !c.is_null() {
            let h = &*c;
            if h.cmsg_level == libc::IPPROTO_IPV6 && h.cmsg_type == libc::IPV6_HOPLIMIT {
                let v = std::ptr::read_unaligned(libc::CMSG_DATA(c) as *const libc::c_int);
                hops = u8::try_from(v).unwrap_or(0);
            } else if h.cmsg_level == libc::IPPROTO_IPV6 && h.cmsg_type == libc::IPV6_PKTINFO {
                let pi = std::ptr::read_unaligned(libc::CMSG_DATA(c) as *const libc::in6_pktinfo);
                dst = Ipv6Addr::from(pi.ipi6_addr.s6_addr);
            }
            c = libc::CMSG_NXTHDR(&msg, c);
        }
        let info = IpInfo {
            src: Ipv6Addr::from(src.sin6_addr.s6_addr).into(),
            dst: dst.into(),
            ttl: hops,
        };
        Ok(Some(Received {
            info,
            start: 0,
            end: n as usize,
        }))
    }
}

fn send_v4(fd: RawFd, src: Ipv4Addr, dst: Ipv4Addr, payload: &[u8]) -> io::Result<()> {
    let total = 20 + payload.len();
    let mut b = Vec::with_capacity(total);
    // Version 4, IHL 5; TOS 0xc0 (CS6, network control) as keepalived; id, checksum left to
    // the kernel (IP_HDRINCL fills both when zero).
    b.extend_from_slice(&[0x45, 0xc0]);
    b.extend_from_slice(&u16::try_from(total).unwrap_or(u16::MAX).to_be_bytes());
    b.extend_from_slice(&[0, 0, 0, 0, TTL, PROTO, 0, 0]);
    b.extend_from_slice(&src.octets());
    b.extend_from_slice(&dst.octets());
    b.extend_from_slice(payload);
    let sin = sockaddr_in(dst);
    // SAFETY: buffer and address are valid for the lengths given.
    let n = unsafe {
        libc::sendto(
            fd,
            b.as_ptr().cast(),
            b.len(),
            0,
            (&sin as *const libc::sockaddr_in).cast(),
            size_of::<libc::sockaddr_in>() as libc::socklen_t,
        )
    };
    if n < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

fn send_v6(
    fd: RawFd,
    ifindex: u32,
    src: Ipv6Addr,
    dst: Ipv6Addr,
    payload: &[u8],
) -> io::Result<()> {
    // SAFETY: all structures are plain data, sized and pointed at live buffers below.
    unsafe {
        let mut sin6 = sockaddr_in6(dst, ifindex);
        let mut iov = libc::iovec {
            iov_base: payload.as_ptr() as *mut _,
            iov_len: payload.len(),
        };
        let mut cbuf = [0u64; 8];
        let mut msg: libc::msghdr = zeroed();
        msg.msg_name = (&mut sin6 as *mut libc::sockaddr_in6).cast();
        msg.msg_namelen = size_of::<libc::sockaddr_in6>() as libc::socklen_t;
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = cbuf.as_mut_ptr().cast();
        msg.msg_controllen = libc::CMSG_SPACE(size_of::<libc::in6_pktinfo>() as u32) as usize;
        let c = libc::CMSG_FIRSTHDR(&msg);
        (*c).cmsg_level = libc::IPPROTO_IPV6;
        (*c).cmsg_type = libc::IPV6_PKTINFO;
        (*c).cmsg_len = libc::CMSG_LEN(size_of::<libc::in6_pktinfo>() as u32) as usize;
        // The source must be the one our checksum's pseudo-header used.
        let pi = libc::in6_pktinfo {
            ipi6_addr: libc::in6_addr {
                s6_addr: src.octets(),
            },
            ipi6_ifindex: ifindex,
        };
        std::ptr::write_unaligned(libc::CMSG_DATA(c) as *mut libc::in6_pktinfo, pi);
        let n = libc::sendmsg(fd, &msg, 0);
        if n < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(())
        }
    }
}
