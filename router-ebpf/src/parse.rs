//! Header layouts and a bounds-checked cursor over the XDP frame.
//!
//! Every header field is at most 2-byte aligned because Ethernet puts the IPv4 header at offset
//! 14; 32-bit fields are stored as two `u16` words and joined in native order, so a `Be32` here
//! is the wire bytes read as a native `u32`, the same convention as the map ABI.
use aya_ebpf::programs::XdpContext;

pub const ETH_P_IPV4: u16 = 0x0800u16.to_be();
pub const ETH_LEN: usize = 14;
pub const IPV4_LEN: usize = 20;
pub const TCP_LEN: usize = 20;

pub const TCP_FIN: u8 = 0x01;
pub const TCP_SYN: u8 = 0x02;
pub const TCP_RST: u8 = 0x04;
pub const TCP_ACK: u8 = 0x10;

#[repr(C)]
pub struct EthHdr {
    pub dst: [u8; 6],
    pub src: [u8; 6],
    pub proto: u16,
}

#[repr(C)]
pub struct Ipv4Hdr {
    pub ver_ihl: u8,
    pub tos: u8,
    pub tot_len: u16,
    pub id: u16,
    pub frag_off: u16,
    pub ttl: u8,
    pub proto: u8,
    pub check: u16,
    pub saddr: [u16; 2],
    pub daddr: [u16; 2],
}

#[repr(C)]
pub struct TcpHdr {
    pub sport: u16,
    pub dport: u16,
    pub seq: [u16; 2],
    pub ack: [u16; 2],
    /// Data offset in the high nibble.
    pub doff: u8,
    pub flags: u8,
    pub window: u16,
    pub check: u16,
    pub urg: u16,
}

const _: () = assert!(size_of::<EthHdr>() == ETH_LEN);
const _: () = assert!(size_of::<Ipv4Hdr>() == IPV4_LEN);
const _: () = assert!(size_of::<TcpHdr>() == TCP_LEN);

#[inline(always)]
pub fn get32(w: &[u16; 2]) -> u32 {
    u32::from(w[0]) | (u32::from(w[1]) << 16)
}

#[inline(always)]
pub fn put32(w: &mut [u16; 2], v: u32) {
    w[0] = v as u16;
    w[1] = (v >> 16) as u16;
}

/// Returns a pointer to a `T` at `off` if the whole `T` lies inside the frame.
#[inline(always)]
pub fn ptr_at<T>(ctx: &XdpContext, off: usize) -> Option<*mut T> {
    let start = ctx.data();
    let end = ctx.data_end();
    if start + off + size_of::<T>() > end {
        return None;
    }
    Some((start + off) as *mut T)
}

/// The three headers of an IPv4/TCP frame without IP options.
pub struct Headers {
    pub eth: *mut EthHdr,
    pub ip: *mut Ipv4Hdr,
    pub tcp: *mut TcpHdr,
}

/// Why a frame is not ours to rewrite.
pub enum Skip {
    NotIpv4,
    NotTcp,
    Malformed,
    /// IP options or a fragment: let the kernel handle it.
    Unsupported,
}

/// Parses Ethernet → IPv4 → TCP. Frames longer than the IP total length (Ethernet padding)
/// are fine; shorter ones are malformed.
#[inline(always)]
pub fn parse(ctx: &XdpContext) -> Result<Headers, Skip> {
    let eth: *mut EthHdr = ptr_at(ctx, 0).ok_or(Skip::Malformed)?;
    if unsafe { (*eth).proto } != ETH_P_IPV4 {
        return Err(Skip::NotIpv4);
    }
    let ip: *mut Ipv4Hdr = ptr_at(ctx, ETH_LEN).ok_or(Skip::Malformed)?;
    let (ver_ihl, proto, frag, tot_len) = unsafe {
        (
            (*ip).ver_ihl,
            (*ip).proto,
            (*ip).frag_off,
            u16::from_be((*ip).tot_len),
        )
    };
    if ver_ihl >> 4 != 4 {
        return Err(Skip::Malformed);
    }
    if proto != router_ebpf::PROTO_TCP {
        return Err(Skip::NotTcp);
    }
    // MF set or a non-zero fragment offset (the low 13 bits + MF = 0x3fff in host order).
    if ver_ihl & 0x0f != 5 || u16::from_be(frag) & 0x3fff != 0 {
        return Err(Skip::Unsupported);
    }
    let tcp: *mut TcpHdr = ptr_at(ctx, ETH_LEN + IPV4_LEN).ok_or(Skip::Malformed)?;
    let doff = usize::from(unsafe { (*tcp).doff } >> 4) * 4;
    let frame_len = ctx.data_end() - ctx.data();
    if doff < TCP_LEN
        || usize::from(tot_len) < IPV4_LEN + doff
        || ETH_LEN + usize::from(tot_len) > frame_len
    {
        return Err(Skip::Malformed);
    }
    Ok(Headers { eth, ip, tcp })
}
