//! VIP addresses on the interface over rtnetlink: one request and its ack, synchronously.
//!
//! Messages are built and parsed with `netlink-packet-route` (the crate under `rtnetlink`);
//! the request is sent on a blocking `netlink-sys` socket because the VRRP instance applies
//! its actions synchronously, and `rtnetlink`'s handle would need a connection task per call.
use std::io;
use std::net::IpAddr;
use std::os::fd::AsRawFd as _;

use netlink_packet_core::{
    NLM_F_ACK, NLM_F_CREATE, NLM_F_EXCL, NLM_F_REQUEST, NetlinkHeader, NetlinkMessage,
    NetlinkPayload,
};
use netlink_packet_route::{
    AddressFamily, RouteNetlinkMessage,
    address::{AddressAttribute, AddressFlags, AddressMessage},
};
use netlink_sys::{Socket, SocketAddr, protocols::NETLINK_ROUTE};

use super::cvt;
use crate::config::Cidr;

/// How long the kernel may take to acknowledge: it answers at once, so this only bounds a
/// broken kernel or a lost message.
const ACK_TIMEOUT_MS: libc::c_int = 1000;

/// Adds or removes an interface address over rtnetlink. Adding an address that is present and
/// removing one that is absent both succeed: callers state the wanted end state.
pub fn set_address(ifindex: u32, a: Cidr, present: bool) -> io::Result<()> {
    let request = request(ifindex, a, present);
    let mut buf = vec![0; request.buffer_len()];
    request.serialize(&mut buf);
    let socket = Socket::new(NETLINK_ROUTE)?;
    socket.send_to(&buf, &SocketAddr::new(0, 0), 0)?;
    let mut pfd = libc::pollfd {
        fd: socket.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd.
    if cvt(unsafe { libc::poll(&mut pfd, 1, ACK_TIMEOUT_MS) })? == 0 {
        return Err(io::Error::new(
            io::ErrorKind::TimedOut,
            "netlink ack timed out",
        ));
    }
    let (reply, _) = socket.recv_from_full()?;
    ack_result(&reply, present)
}

/// The RTM_NEWADDR (exclusive create) or RTM_DELADDR request for `a` on `ifindex`.
fn request(ifindex: u32, a: Cidr, present: bool) -> NetlinkMessage<RouteNetlinkMessage> {
    let mut msg = AddressMessage::default();
    msg.header.family = match a.addr {
        IpAddr::V4(_) => AddressFamily::Inet,
        IpAddr::V6(_) => AddressFamily::Inet6,
    };
    msg.header.prefix_len = a.prefix;
    msg.header.index = ifindex;
    msg.attributes.push(AddressAttribute::Local(a.addr));
    msg.attributes.push(AddressAttribute::Address(a.addr));
    if a.addr.is_ipv6() {
        // A VIP must answer at once, not after duplicate address detection (keepalived too).
        msg.attributes
            .push(AddressAttribute::Flags(AddressFlags::Nodad));
    }
    let (payload, flags) = if present {
        (
            RouteNetlinkMessage::NewAddress(msg),
            NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL,
        )
    } else {
        (
            RouteNetlinkMessage::DelAddress(msg),
            NLM_F_REQUEST | NLM_F_ACK,
        )
    };
    let mut header = NetlinkHeader::default();
    header.flags = flags;
    header.sequence_number = 1;
    let mut m = NetlinkMessage::new(header, NetlinkPayload::from(payload));
    m.finalize();
    m
}

/// The kernel's answer: an ack, or an error where "already there" (adding) and "not there"
/// (removing) mean the wanted state holds.
fn ack_result(reply: &[u8], present: bool) -> io::Result<()> {
    let msg = NetlinkMessage::<RouteNetlinkMessage>::deserialize(reply)
        .map_err(|e| io::Error::other(format!("unexpected netlink reply: {e}")))?;
    let NetlinkPayload::Error(err) = msg.payload else {
        return Err(io::Error::other("unexpected netlink reply: not an ack"));
    };
    match err.code.map(|c| -c.get()) {
        None => Ok(()),
        Some(libc::EEXIST) if present => Ok(()),
        Some(libc::EADDRNOTAVAIL) if !present => Ok(()),
        Some(e) => Err(io::Error::from_raw_os_error(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cidr(s: &str, prefix: u8) -> Cidr {
        Cidr {
            addr: s
                .parse()
                .unwrap_or(IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED)),
            prefix,
        }
    }

    /// The bytes the hand-written encoder sent before the library took over: header, ifaddrmsg,
    /// IFA_LOCAL and IFA_ADDRESS (and IFA_FLAGS = NODAD for IPv6).
    #[test]
    fn requests_match_the_kernel_layout() {
        let m = request(7, cidr("198.18.0.10", 24), true);
        let mut b = vec![0; m.buffer_len()];
        m.serialize(&mut b);
        let mut want = Vec::new();
        want.extend_from_slice(&40u32.to_ne_bytes());
        want.extend_from_slice(&(libc::RTM_NEWADDR).to_ne_bytes());
        want.extend_from_slice(&(0x1 | 0x4 | 0x400 | 0x200u16).to_ne_bytes());
        want.extend_from_slice(&1u32.to_ne_bytes());
        want.extend_from_slice(&0u32.to_ne_bytes());
        want.extend_from_slice(&[libc::AF_INET as u8, 24, 0, 0]);
        want.extend_from_slice(&7u32.to_ne_bytes());
        for t in [2u16, 1] {
            want.extend_from_slice(&8u16.to_ne_bytes());
            want.extend_from_slice(&t.to_ne_bytes());
            want.extend_from_slice(&[198, 18, 0, 10]);
        }
        assert_eq!(b, want);

        let m = request(3, cidr("fd00:198:18::10", 64), false);
        let mut b = vec![0; m.buffer_len()];
        m.serialize(&mut b);
        assert_eq!(&b[4..6], &libc::RTM_DELADDR.to_ne_bytes());
        assert_eq!(&b[6..8], &(0x1u16 | 0x4).to_ne_bytes());
        assert_eq!(b[16], libc::AF_INET6 as u8);
        // IFA_FLAGS (8) carrying IFA_F_NODAD (2) closes the message.
        assert_eq!(&b[b.len() - 8..], &[8, 0, 8, 0, 2, 0, 0, 0]);
    }

    fn nlmsgerr(code: i32) -> Vec<u8> {
        let mut b = Vec::new();
        b.extend_from_slice(&36u32.to_ne_bytes());
        b.extend_from_slice(&2u16.to_ne_bytes()); // NLMSG_ERROR
        b.extend_from_slice(&0u16.to_ne_bytes());
        b.extend_from_slice(&1u32.to_ne_bytes());
        b.extend_from_slice(&0u32.to_ne_bytes());
        b.extend_from_slice(&code.to_ne_bytes());
        b.extend_from_slice(&[0; 16]); // the request's header, echoed
        b
    }

    #[test]
    fn wanted_end_states_are_successes_and_other_errors_are_not() {
        assert!(ack_result(&nlmsgerr(0), true).is_ok());
        assert!(ack_result(&nlmsgerr(-libc::EEXIST), true).is_ok());
        assert!(ack_result(&nlmsgerr(-libc::EADDRNOTAVAIL), false).is_ok());
        let e = ack_result(&nlmsgerr(-libc::EEXIST), false).err();
        assert_eq!(e.and_then(|e| e.raw_os_error()), Some(libc::EEXIST));
        let e = ack_result(&nlmsgerr(-libc::EPERM), true).err();
        assert_eq!(e.and_then(|e| e.raw_os_error()), Some(libc::EPERM));
        assert!(ack_result(&[1, 2, 3], true).is_err());
    }
}
