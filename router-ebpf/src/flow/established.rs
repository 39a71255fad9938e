//! An established flow's packets: last-seen refresh, acknowledged FINs and exact RSTs (judged
//! against the sequence numbers the data path learnt, so a blind spoofer ends nothing), and
//! translation.
use aya_ebpf::programs::XdpContext;
use router_ebpf::{
    FLOW_F_BACKEND_CLOSED_FIRST, FLOW_F_CLIENT_FIN_SEEN, FLOW_F_FIN_BACKEND, FLOW_F_FIN_CLIENT,
    FLOW_F_PEER_FIN, FLOW_F_PEER_FIN_ACKED, FLOW_F_REPLY, FLOW_F_SYNCED, Flow, counter,
};

use crate::{
    atomic,
    maps::{PGR_CONNTRACK, count, now},
    parse::{Headers, IPV4_LEN, TCP_ACK, TCP_FIN, TCP_RST, get32},
    sync,
};

use super::{close, send, seq_ge};

/// How far (either way) a segment's sequence and acknowledgement numbers may lie from what was
/// acknowledged last for the data path to learn from it: more than a PostgreSQL connection has
/// in flight (Linux autotunes receive buffers up to 6 MiB by default), a 2^-7 target for each
/// blind guess in 2^32, so 2^-14 for a spoofed segment.
pub(super) const SEQ_WINDOW: u32 = 1 << 24;

/// A packet of an established flow, either direction: refreshes its last-seen time, tracks
/// acknowledged FINs and exact RSTs, and translates it. Acknowledgements and FINs count only
/// from a segment whose sequence number lies near what the other side acknowledged last: a
/// blind spoofer knows the tuples but not the sequence numbers (RFC 5961 §5), so it can
/// neither set the number an "exact" RST is judged by nor fake an acknowledged FIN.
#[inline(never)]
pub(super) fn established(ctx: &XdpContext, h: &Headers, entry: *mut Flow) -> u32 {
    let f = unsafe { &*entry };
    let tcp_flags = unsafe { (*h.tcp).flags };
    let now = now();
    let is_reply = f.flags & FLOW_F_REPLY != 0;
    unsafe { (*entry).last_seen = now };
    let Some(peer) = PGR_CONNTRACK.get_ptr_mut(&f.peer_key()) else {
        // Its other entry is gone: nothing to learn, the flow is ending.
        return send(ctx, h, f);
    };
    let seq = u32::from_be(get32(unsafe { &(*h.tcp).seq }));
    let ack_be = get32(unsafe { &(*h.tcp).ack });
    // The segment's sequence number near what the other side acknowledged last, and its
    // acknowledgement near what this side acknowledged last (acks only move forward by what
    // was received; the first one is learned as it comes): a blind spoofer must guess both.
    // A flow installed by sync carries the peer's last report of its numbers, perhaps long
    // behind: its first packet here in this direction sets them afresh (`sync::adopt`).
    let synced = f.flags & FLOW_F_SYNCED != 0;
    if synced {
        sync::adopt(entry);
    }
    // The other entry's acknowledgement is stale too until that direction's first packet.
    let peer_synced = unsafe { (*peer).flags } & FLOW_F_SYNCED != 0;
    let in_window = synced
        || ((peer_synced || near(seq, u32::from_be(unsafe { (*peer).last_ack })))
            && (f.last_ack == 0 || near(u32::from_be(ack_be), u32::from_be(f.last_ack))));
    if !in_window {
        count(counter::SEQ_OUT_OF_WINDOW);
    }
    if in_window && tcp_flags & TCP_RST == 0 {
        // What this side has sent so far (a FIN takes one number), for judging its own RST
        // (see `track_close`).
        let fin = u32::from(tcp_flags & TCP_FIN != 0);
        let end = seq.wrapping_add(payload_len(h)).wrapping_add(fin);
        if synced || f.seq == 0 || seq_ge(end, f.seq) {
            unsafe { (*entry).seq = end };
        }
    }
    if tcp_flags & TCP_ACK != 0 && in_window {
        unsafe { (*entry).last_ack = ack_be };
        if f.flags & (FLOW_F_PEER_FIN | FLOW_F_PEER_FIN_ACKED) == FLOW_F_PEER_FIN
            && seq_ge(u32::from_be(ack_be), f.peer_fin_end)
        {
            // This side acknowledged the other side's FIN: the FIN was real.
            atomic::fetch_or(unsafe { &raw mut (*entry).flags }, FLOW_F_PEER_FIN_ACKED);
            let (fwd, bit) = if is_reply {
                (peer, FLOW_F_FIN_CLIENT)
            } else {
                (entry, FLOW_F_FIN_BACKEND)
            };
            fin_acked(fwd, f.backend_id, bit);
        }
    }
    if tcp_flags & TCP_RST != 0 || (tcp_flags & TCP_FIN != 0 && in_window) {
        track_close(h, entry, peer, f, tcp_flags);
    }
    send(ctx, h, f)
}

/// `a` lies within [`SEQ_WINDOW`] of `b`, either way, in sequence space.
#[inline(always)]
pub(super) fn near(a: u32, b: u32) -> bool {
    a.wrapping_sub(b).wrapping_add(SEQ_WINDOW) <= 2 * SEQ_WINDOW
}

#[inline(always)]
pub(super) fn fin_acked(fwd: *mut Flow, backend_id: u32, bit: u64) {
    let old = atomic::fetch_or(unsafe { &raw mut (*fwd).flags }, bit);
    if (old | bit) & (FLOW_F_FIN_CLIENT | FLOW_F_FIN_BACKEND)
        == FLOW_F_FIN_CLIENT | FLOW_F_FIN_BACKEND
    {
        close(fwd, backend_id);
    }
}

/// TCP payload bytes of the packet (the IPv4 header is `IPV4_LEN`: options are not parsed).
#[inline(always)]
fn payload_len(h: &Headers) -> u32 {
    let (tot_len, doff) = unsafe { (u16::from_be((*h.ip).tot_len), (*h.tcp).doff >> 4) };
    u32::from(tot_len).saturating_sub(IPV4_LEN as u32 + u32::from(doff) * 4)
}

/// A FIN is recorded in the other direction's entry (which closes it when that side
/// acknowledges it); a RST closes the flow only with exactly the sequence number its receiver
/// expects next: what the receiver acknowledged last, or the end of what the sender has sent
/// (the receiver may hold data it has not acknowledged yet). RFC 5961 §3.2: anything else
/// only earns a challenge ACK from the endpoint, so a forged RST cannot free a slot or a port.
#[inline(always)]
pub(super) fn track_close(h: &Headers, entry: *mut Flow, peer: *mut Flow, f: &Flow, tcp_flags: u8) {
    let is_reply = f.flags & FLOW_F_REPLY != 0;
    let seq_be = get32(unsafe { &(*h.tcp).seq });
    if tcp_flags & TCP_RST != 0 {
        let seq = u32::from_be(seq_be);
        if seq_be == unsafe { (*peer).last_ack } || (f.seq != 0 && seq == f.seq) {
            let fwd = if is_reply { peer } else { entry };
            close(fwd, f.backend_id);
        } else {
            count(counter::RST_NOT_EXACT);
        }
        return;
    }
    let end = u32::from_be(seq_be)
        .wrapping_add(payload_len(h))
        .wrapping_add(1);
    unsafe { (*peer).peer_fin_end = end };
    atomic::fetch_or(unsafe { &raw mut (*peer).flags }, FLOW_F_PEER_FIN);
    if is_reply {
        // The node holds the 4-tuple in TIME_WAIT (see `snat`) unless it closed after
        // receiving the client's FIN, which its FIN then acknowledges. Seeing the client's FIN
        // pass first is not enough: the two FINs may cross (a simultaneous close, as when
        // PostgreSQL exits on the Terminate message just before the client's FIN arrives).
        let ack = u32::from_be(get32(unsafe { &(*h.tcp).ack }));
        let passive = f.flags & FLOW_F_PEER_FIN != 0 && seq_ge(ack, f.peer_fin_end);
        if !passive {
            atomic::fetch_or(
                unsafe { &raw mut (*peer).flags },
                FLOW_F_BACKEND_CLOSED_FIRST,
            );
        }
    } else {
        atomic::fetch_or(unsafe { &raw mut (*entry).flags }, FLOW_F_CLIENT_FIN_SEEN);
    }
}
