//! Answering a packet with a TCP RST, in place (RFC 9293 §3.10.7.1 reset generation).
use aya_ebpf::{bindings::xdp_action, helpers::bpf_xdp_adjust_tail, programs::XdpContext};

use crate::{
    csum,
    parse::{
        ETH_LEN, EthHdr, IPV4_LEN, Ipv4Hdr, TCP_ACK, TCP_FIN, TCP_LEN, TCP_RST, TCP_SYN, TcpHdr,
        get32, ptr_at, put32,
    },
};

const RST_FRAME_LEN: usize = ETH_LEN + IPV4_LEN + TCP_LEN;

/// Turns the received frame into a RST back to its sender and transmits it on the ingress
/// interface. If the segment carried an ACK, the RST takes its sequence number from it;
/// otherwise it acknowledges everything the segment occupied.
#[inline(always)]
pub fn reply_rst(ctx: &XdpContext) -> u32 {
    let (Some(eth), Some(ip), Some(tcp)) = (
        ptr_at::<EthHdr>(ctx, 0),
        ptr_at::<Ipv4Hdr>(ctx, ETH_LEN),
        ptr_at::<TcpHdr>(ctx, ETH_LEN + IPV4_LEN),
    ) else {
        return xdp_action::XDP_DROP;
    };
    unsafe {
        let eth = &mut *eth;
        let ip = &mut *ip;
        let tcp = &mut *tcp;
        core::mem::swap(&mut eth.src, &mut eth.dst);

        let in_flags = tcp.flags;
        let in_seq = u32::from_be(get32(&tcp.seq));
        let in_ack = get32(&tcp.ack);
        let doff = u32::from(tcp.doff >> 4) * 4;
        let payload = u32::from(u16::from_be(ip.tot_len)).saturating_sub(IPV4_LEN as u32 + doff);

        let (s, d) = (get32(&ip.saddr), get32(&ip.daddr));
        put32(&mut ip.saddr, d);
        put32(&mut ip.daddr, s);
        ip.ver_ihl = 0x45;
        ip.tos = 0;
        ip.tot_len = ((IPV4_LEN + TCP_LEN) as u16).to_be();
        ip.id = 0;
        ip.frag_off = 0x4000u16.to_be(); // DF
        ip.ttl = 64;
        ip.check = 0;

        core::mem::swap(&mut tcp.sport, &mut tcp.dport);
        if in_flags & TCP_ACK != 0 {
            put32(&mut tcp.seq, in_ack);
            put32(&mut tcp.ack, 0);
            tcp.flags = TCP_RST;
        } else {
            let mut len = payload;
            if in_flags & TCP_SYN != 0 {
                len += 1;
            }
            if in_flags & TCP_FIN != 0 {
                len += 1;
            }
            put32(&mut tcp.seq, 0);
            put32(&mut tcp.ack, in_seq.wrapping_add(len).to_be());
            tcp.flags = TCP_RST | TCP_ACK;
        }
        tcp.doff = ((TCP_LEN / 4) as u8) << 4;
        tcp.window = 0;
        tcp.urg = 0;
        tcp.check = 0;
    }

    let frame_len = ctx.data_end() - ctx.data();
    if frame_len > RST_FRAME_LEN {
        let delta = RST_FRAME_LEN as i32 - frame_len as i32;
        if unsafe { bpf_xdp_adjust_tail(ctx.ctx, delta) } != 0 {
            return xdp_action::XDP_DROP;
        }
    }
    // Pointers are invalid after adjusting the tail: look the headers up again.
    let (Some(ip), Some(tcp)) = (
        ptr_at::<[u16; IPV4_LEN / 2]>(ctx, ETH_LEN),
        ptr_at::<[u16; TCP_LEN / 2]>(ctx, ETH_LEN + IPV4_LEN),
    ) else {
        return xdp_action::XDP_DROP;
    };
    unsafe {
        let ipw = &mut *ip;
        let mut sum = 0u64;
        for w in ipw.iter() {
            sum += u64::from(*w);
        }
        ipw[5] = !csum::fold(sum);
        // Pseudo-header: addresses are words 6..10 of the IPv4 header.
        let mut sum = 0u64;
        for w in &ipw[6..10] {
            sum += u64::from(*w);
        }
        sum += u64::from(u16::from(router_ebpf::PROTO_TCP).to_be());
        sum += u64::from((TCP_LEN as u16).to_be());
        let tw = &mut *tcp;
        for w in tw.iter() {
            sum += u64::from(*w);
        }
        tw[8] = !csum::fold(sum);
    }
    xdp_action::XDP_TX
}
