//! The system edge of VRRP: raw IP sockets (protocol 112), interface addresses over raw
//! rtnetlink, gratuitous ARP (AF_PACKET) and unsolicited neighbour advertisements (ICMPv6).
//! Everything here is a thin, synchronous-or-readiness-based wrapper around one syscall family;
//! no protocol decisions are made here.

use std::ffi::CString;
use std::io;
use std::mem::{size_of, zeroed};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

use tokio::io::unix::AsyncFd;

use super::packet::{self, IpInfo, PROTO, TTL};
use crate::config::Cidr;

/// One interface as seen by getifaddrs: what the edge needs about the link.
#[derive(Clone, Debug, Default)]
pub struct IfInfo {
    pub index: u32,
    /// `IFF_UP && IFF_RUNNING` (carrier): keepalived's "interface fault" test.
    pub running: bool,
    pub mac: Option<[u8; 6]>,
    pub addrs: Vec<IpAddr>,
}

/// Reads index, flags, MAC and addresses of `ifname` (getifaddrs uses netlink underneath).
pub fn interface(ifname: &str) -> io::Result<IfInfo> {
    let cname = CString::new(ifname).map_err(|_| io::Error::other("interface name has a NUL"))?;
    // SAFETY: plain FFI call with a valid C string.
    let index = unsafe { libc::if_nametoindex(cname.as_ptr()) };
    if index == 0 {
        return Err(io::Error::new(
            io::ErrorKind::NotFound,
            format!("no interface {ifname}"),
        ));
    }
    let mut info = IfInfo {
        index,
        ..IfInfo::default()
    };
    let mut head: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs fills `head` with a list we free below.
    if unsafe { libc::getifaddrs(&mut head) } != 0 {
        return Err(io::Error::last_os_error());
    }
    let mut cur = head;
    while !cur.is_null() {
        // SAFETY: `cur` is a valid node of the list returned by getifaddrs.
        let ifa = unsafe { &*cur };
        cur = ifa.ifa_next;
        // SAFETY: ifa_name is a NUL-terminated string owned by the list.
        let name = unsafe { std::ffi::CStr::from_ptr(ifa.ifa_name) };
        if name.to_bytes() != ifname.as_bytes() || ifa.ifa_addr.is_null() {
            continue;
        }
        // SAFETY: ifa_addr is non-null and points at a sockaddr whose family says its type.
        let family = i32::from(unsafe { (*ifa.ifa_addr).sa_family });
        match family {
            libc::AF_INET => {
                // SAFETY: family is AF_INET, so this is a sockaddr_in.
                let sin = unsafe { &*(ifa.ifa_addr as *const libc::sockaddr_in) };
                info.addrs.push(IpAddr::V4(Ipv4Addr::from(u32::from_be(
                    sin.sin_addr.s_addr,
                ))));
            }
            libc::AF_INET6 => {
                // SAFETY: family is AF_INET6, so this is a sockaddr_in6.
                let sin6 = unsafe { &*(ifa.ifa_addr as *const libc::sockaddr_in6) };
                info.addrs
                    .push(IpAddr::V6(Ipv6Addr::from(sin6.sin6_addr.s6_addr)));
            }
            libc::AF_PACKET => {
                // SAFETY: family is AF_PACKET, so this is a sockaddr_ll.
                let sll = unsafe { &*(ifa.ifa_addr as *const libc::sockaddr_ll) };
                let flags = ifa.ifa_flags;
                info.running =
                    flags & libc::IFF_UP as u32 != 0 && flags & libc::IFF_RUNNING as u32 != 0;
                if sll.sll_halen == 6 {
                    let mut mac = [0u8; 6];
                    mac.copy_from_slice(&sll.sll_addr[..6]);
                    info.mac = Some(mac);
                }
            }
            _ => {}
        }
    }
    // SAFETY: `head` came from getifaddrs and is freed once.
    unsafe { libc::freeifaddrs(head) };
    Ok(info)
}

fn cvt(r: libc::c_int) -> io::Result<libc::c_int> {
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

fn socket(domain: libc::c_int, ty: libc::c_int, proto: libc::c_int) -> io::Result<OwnedFd> {
    // SAFETY: plain FFI; a non-negative return is a fresh fd we own.
    let fd =
        cvt(unsafe { libc::socket(domain, ty | libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK, proto) })?;
    // SAFETY: fd is valid and owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn setsockopt<T>(fd: RawFd, level: libc::c_int, name: libc::c_int, val: &T) -> io::Result<()> {
    // SAFETY: `val` points at a live T of the size we pass.
    cvt(unsafe {
        libc::setsockopt(
            fd,
            level,
            name,
            (val as *const T).cast(),
            size_of::<T>() as libc::socklen_t,
        )
    })
    .map(drop)
}

fn bind_to_device(fd: RawFd, ifname: &str) -> io::Result<()> {
    // SAFETY: the name buffer is valid for its length.
    cvt(unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_BINDTODEVICE,
            ifname.as_ptr().cast(),
            ifname.len() as libc::socklen_t,
        )
    })
    .map(drop)
}

fn sockaddr_in(a: Ipv4Addr) -> libc::sockaddr_in {
    // SAFETY: sockaddr_in is plain data; all-zero is valid.
    let mut sin: libc::sockaddr_in = unsafe { zeroed() };
    sin.sin_family = libc::AF_INET as libc::sa_family_t;
    sin.sin_addr.s_addr = u32::from(a).to_be();
    sin
}

fn sockaddr_in6(a: Ipv6Addr, scope: u32) -> libc::sockaddr_in6 {
    // SAFETY: sockaddr_in6 is plain data; all-zero is valid.
    let mut sin6: libc::sockaddr_in6 = unsafe { zeroed() };
    sin6.sin6_family = libc::AF_INET6 as libc::sa_family_t;
    sin6.sin6_addr.s6_addr = a.octets();
    sin6.sin6_scope_id = scope;
    sin6
}

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
    let data = &buf[..n as usize];
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

const NLMSG_HDRLEN: usize = 16;
const IFA_ADDRESS: u16 = 1;
const IFA_LOCAL: u16 = 2;
const IFA_FLAGS: u16 = 8;
const IFA_F_NODAD: u32 = 0x02;

/// Adds or removes an interface address over rtnetlink. Adding an address that is present and
/// removing one that is absent both succeed: callers state the wanted end state.
pub fn set_address(ifindex: u32, a: Cidr, present: bool) -> io::Result<()> {
    let fd = socket(libc::AF_NETLINK, libc::SOCK_RAW, libc::NETLINK_ROUTE)?;
    let raw = fd.as_raw_fd();
    let mut msg = Vec::with_capacity(64);
    let (family, bytes): (u8, Vec<u8>) = match a.addr {
        IpAddr::V4(v) => (libc::AF_INET as u8, v.octets().to_vec()),
        IpAddr::V6(v) => (libc::AF_INET6 as u8, v.octets().to_vec()),
    };
    let (ty, flags) = if present {
        (
            libc::RTM_NEWADDR,
            libc::NLM_F_REQUEST | libc::NLM_F_ACK | libc::NLM_F_CREATE | libc::NLM_F_EXCL,
        )
    } else {
        (libc::RTM_DELADDR, libc::NLM_F_REQUEST | libc::NLM_F_ACK)
    };
    msg.extend_from_slice(&[0; NLMSG_HDRLEN]);
    // struct ifaddrmsg: family, prefixlen, flags, scope (universe), index.
    msg.extend_from_slice(&[family, a.prefix, 0, 0]);
    msg.extend_from_slice(&ifindex.to_ne_bytes());
    let mut attr = |t: u16, data: &[u8]| {
        let len = 4 + data.len();
        msg.extend_from_slice(&u16::try_from(len).unwrap_or(0).to_ne_bytes());
        msg.extend_from_slice(&t.to_ne_bytes());
        msg.extend_from_slice(data);
        msg.resize(msg.len().next_multiple_of(4), 0);
    };
    attr(IFA_LOCAL, &bytes);
    attr(IFA_ADDRESS, &bytes);
    if a.addr.is_ipv6() {
        // A VIP must answer at once, not after duplicate address detection (keepalived too).
        attr(IFA_FLAGS, &IFA_F_NODAD.to_ne_bytes());
    }
    let len = u32::try_from(msg.len()).unwrap_or(0);
    msg[0..4].copy_from_slice(&len.to_ne_bytes());
    msg[4..6].copy_from_slice(&ty.to_ne_bytes());
    msg[6..8].copy_from_slice(&(flags as u16).to_ne_bytes());
    msg[8..12].copy_from_slice(&1u32.to_ne_bytes());
    // SAFETY: sockaddr_nl is plain data; zero means "the kernel".
    let mut kernel: libc::sockaddr_nl = unsafe { zeroed() };
    kernel.nl_family = libc::AF_NETLINK as libc::sa_family_t;
    // SAFETY: buffer and address are valid for the lengths given.
    let n = unsafe {
        libc::sendto(
            raw,
            msg.as_ptr().cast(),
            msg.len(),
            0,
            (&kernel as *const libc::sockaddr_nl).cast(),
            size_of::<libc::sockaddr_nl>() as libc::socklen_t,
        )
    };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    // The ack comes right back; poll briefly instead of blocking forever on a broken kernel.
    let mut buf = [0u8; 1024];
    let mut pfd = libc::pollfd {
        fd: raw,
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd.
    if cvt(unsafe { libc::poll(&mut pfd, 1, 1000) })? == 0 {
        return Err(io::Error::new(
            io::ErrorKind::TimedOut,
            "netlink ack timed out",
        ));
    }
    // SAFETY: buf is valid for writes of its length.
    let n = unsafe { libc::recv(raw, buf.as_mut_ptr().cast(), buf.len(), 0) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    let n = n as usize;
    if n < NLMSG_HDRLEN + 4 || u16::from_ne_bytes([buf[4], buf[5]]) != libc::NLMSG_ERROR as u16 {
        return Err(io::Error::other("unexpected netlink reply"));
    }
    let err = -i32::from_ne_bytes([buf[16], buf[17], buf[18], buf[19]]);
    match err {
        0 => Ok(()),
        libc::EEXIST if present => Ok(()),
        libc::EADDRNOTAVAIL if !present => Ok(()),
        e => Err(io::Error::from_raw_os_error(e)),
    }
}

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
