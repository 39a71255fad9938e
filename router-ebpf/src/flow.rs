//! Connection tracking and NAT, and the life of a flow:
//!
//! - a SYN creates both entries in the handshake table (`PGR_HANDSHAKE`, LRU, no slot held);
//! - the client's ACK of the backend's SYN-ACK completes it: a `maxconn` slot is taken and the
//!   entries move to the conntrack table (`PGR_CONNTRACK`, never evicted);
//! - a FIN counts once the other side acknowledges it, a RST only with the exact sequence
//!   number the other side expects; both FINs or such a RST close the flow (slot given back
//!   once, SNAT port reusable within milliseconds);
//! - every entry carries a last-seen time; an expired flow is treated as absent and ended on
//!   the spot, and the controller reaps the ones no packet comes for (`gc`).
//!
//! This module finds a packet's entry, judges expiry and ends flows; `handshake` and
//! `established` handle the packets of each table; translation (`send`) is shared.
use aya_ebpf::{bindings::xdp_action, programs::XdpContext};
use router_ebpf::{
    BACKEND_ACTIVE, BACKEND_DRAIN, FAMILY_IPV4, FLOW_F_CLOSED, FLOW_F_REPLY, FLOW_STATE_HANDSHAKE,
    Flow, FlowKey, PROTO_TCP, Service, Timeouts, counter, flow_state, state_timeout,
};

use crate::{
    atomic, csum,
    maps::{
        PGR_BACKENDS, PGR_CONNTRACK, PGR_HANDSHAKE, backend_stats, count, now, service_stats,
        timeouts,
    },
    parse::{Headers, TCP_ACK, TCP_FIN, TCP_RST, TCP_SYN, get32, put32},
    reset, select, sync, xmit,
};

mod established;
mod handshake;

use established::established;
use handshake::{NOW_ESTABLISHED, end_handshake, handshake_forward, handshake_reply, new_flow};

/// The packet's 5-tuple as a conntrack key.
#[inline(always)]
pub fn tuple(h: &Headers) -> FlowKey {
    unsafe {
        FlowKey {
            saddr: [get32(&(*h.ip).saddr), 0, 0, 0],
            daddr: [get32(&(*h.ip).daddr), 0, 0, 0],
            sport: (*h.tcp).sport,
            dport: (*h.tcp).dport,
            proto: PROTO_TCP,
            family: FAMILY_IPV4,
            _pad: [0; 2],
        }
    }
}

/// Which table a tracked packet's entry lives in.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Table {
    Handshake,
    Established,
}

/// A reply packet's entry (backend → SNAT address), if the tuple is a tracked reply.
#[inline(always)]
pub fn reply_entry(key: &FlowKey) -> Option<(Table, *mut Flow)> {
    if let Some(e) = PGR_CONNTRACK.get_ptr_mut(key) {
        if unsafe { (*e).flags } & FLOW_F_REPLY != 0 {
            return Some((Table::Established, e));
        }
        return None;
    }
    let e = PGR_HANDSHAKE.get_ptr_mut(key)?;
    if unsafe { (*e).flags } & FLOW_F_REPLY != 0 {
        Some((Table::Handshake, e))
    } else {
        None
    }
}

#[inline(always)]
fn usable(backend_id: u32) -> bool {
    match PGR_BACKENDS.get(backend_id) {
        Some(b) => b.state == BACKEND_ACTIVE || b.state == BACKEND_DRAIN,
        None => false,
    }
}

/// `a` is at or after `b` in sequence space (RFC 9293 §3.4).
#[inline(always)]
fn seq_ge(a: u32, b: u32) -> bool {
    a.wrapping_sub(b) as i32 >= 0
}

/// Whether an established flow has expired: idle in both directions for longer than its
/// state's timeout. `f` and `r` are its forward and reply entries.
#[inline(always)]
pub fn expired(f: &Flow, r: &Flow, now: u64, t: &Timeouts) -> bool {
    let seen = if f.last_seen > r.last_seen {
        f.last_seen
    } else {
        r.last_seen
    };
    now.saturating_sub(seen) > state_timeout(t, flow_state(f.flags))
}

/// Whether the established-table entry `e` under `key` (either direction) belongs to an
/// expired flow. The common case (this direction seen within the shortest timeout) costs no
/// second lookup.
#[inline(always)]
pub fn entry_expired(key: &FlowKey, e: &Flow, now: u64, t: &Timeouts) -> bool {
    let idle = now.saturating_sub(e.last_seen);
    if idle <= state_timeout(t, router_ebpf::FLOW_STATE_CLOSED)
        && idle <= state_timeout(t, router_ebpf::FLOW_STATE_CLOSING)
        && idle <= state_timeout(t, router_ebpf::FLOW_STATE_ESTABLISHED)
    {
        return false;
    }
    let Some(p) = PGR_CONNTRACK.get_ptr(e.peer_key()) else {
        // Its other entry is gone: nothing can translate this flow both ways any more.
        return true;
    };
    let p = unsafe { &*p };
    if p.peer_key() != *key {
        // The other key now holds another flow's entry: this one is an orphan.
        return true;
    }
    if e.flags & FLOW_F_REPLY == 0 {
        expired(e, p, now, t)
    } else {
        expired(p, e, now, t)
    }
}

/// Marks the forward entry closed and, the first time only, releases the backend's slot
/// ([`select::release`]: a shut-down backend's count belongs to userspace).
#[inline(always)]
fn close(fwd: *mut Flow, backend_id: u32) {
    if atomic::fetch_or(unsafe { &raw mut (*fwd).flags }, FLOW_F_CLOSED) & FLOW_F_CLOSED == 0 {
        select::release(backend_id);
        sync::closed(fwd);
    }
}

/// Ends an established flow from either of its entries (`key` → `entry`): closes it (slot
/// given back once) and removes both entries. An entry of the other direction is removed only
/// if it still belongs to this flow (its SNAT port may already serve a new one).
#[inline(never)]
pub fn end(key: &FlowKey, entry: *mut Flow) {
    let e = unsafe { *entry };
    let other = e.peer_key();
    if let Some(o) = PGR_CONNTRACK.get_ptr_mut(&other) {
        if unsafe { (*o).peer_key() } == *key {
            if e.flags & FLOW_F_REPLY != 0 {
                close(o, e.backend_id);
            }
            let _ = PGR_CONNTRACK.remove(&other);
        }
    }
    if e.flags & FLOW_F_REPLY == 0 {
        close(entry, e.backend_id);
    }
    let _ = PGR_CONNTRACK.remove(key);
}

/// Client → VIP:port.
#[inline(never)]
pub fn forward(ctx: &XdpContext, h: &Headers, key: &FlowKey, svc: &Service) -> u32 {
    let tcp_flags = unsafe { (*h.tcp).flags };
    // A connection request: SYN alone (SYN with RST or FIN is invalid and never opens a flow).
    let syn = tcp_flags & (TCP_SYN | TCP_ACK | TCP_RST | TCP_FIN) == TCP_SYN;
    let now = now();
    let t = timeouts();
    if let Some(entry) = PGR_CONNTRACK.get_ptr_mut(key) {
        let f = unsafe { &*entry };
        if entry_expired(key, f, now, &t) {
            // Treated as absent: ended here, so its slot and port come back now.
            end(key, entry);
            count(counter::EXPIRED_ON_PACKET);
        } else if !usable(f.backend_id) {
            // shutdown-sessions: the client learns now; the backend learns from the edge
            // host's own RST to its next packet, or from the controller's sweep.
            let backend_id = f.backend_id;
            end(key, entry);
            return rst_shutdown(ctx, svc.id, backend_id);
        } else if syn && f.flags & FLOW_F_CLOSED != 0 {
            // A SYN reusing a closed tuple starts a new flow.
            end(key, entry);
        } else {
            return established(ctx, h, entry);
        }
    } else if let Some(entry) = PGR_HANDSHAKE.get_ptr(key) {
        let f = unsafe { &*entry };
        if now.saturating_sub(f.last_seen) > state_timeout(&t, FLOW_STATE_HANDSHAKE) {
            end_handshake(key, f);
            count(counter::EXPIRED_ON_PACKET);
        } else if !usable(f.backend_id) {
            let backend_id = f.backend_id;
            end_handshake(key, f);
            return rst_shutdown(ctx, svc.id, backend_id);
        } else {
            let v = handshake_forward(ctx, h, key, f);
            if v != NOW_ESTABLISHED {
                return v;
            }
            // The handshake completed: this packet is the flow's first established one.
            return match PGR_CONNTRACK.get_ptr_mut(key) {
                Some(e) => established(ctx, h, e),
                None => xdp_action::XDP_DROP,
            };
        }
    }
    if syn {
        return new_flow(ctx, h, key, svc);
    }
    if let Some(s) = service_stats(svc.id) {
        s.ct_miss += 1;
    }
    if tcp_flags & TCP_RST != 0 {
        count(counter::DROP_RST_NO_FLOW);
        return xdp_action::XDP_DROP;
    }
    if sync::in_grace(now, None) {
        // Just took the VIP over: the peer's sync of this flow may still be in flight, and
        // the client retransmits a dropped packet; a RST would end its session.
        return xdp_action::XDP_DROP;
    }
    count(counter::RST_UNKNOWN_FLOW);
    bump_rst(svc.id, u32::MAX);
    reset::reply_rst(ctx)
}

/// Backend → SNAT address: a tracked reply.
#[inline(never)]
pub fn reply(ctx: &XdpContext, h: &Headers, key: &FlowKey, table: Table, entry: *mut Flow) -> u32 {
    let f = unsafe { &*entry };
    let (backend_id, service_id) = (f.backend_id, f.service_id);
    let now = now();
    let t = timeouts();
    let live = match table {
        Table::Established => !entry_expired(key, f, now, &t),
        Table::Handshake => {
            now.saturating_sub(f.last_seen) <= state_timeout(&t, FLOW_STATE_HANDSHAKE)
        }
    };
    if !live {
        // Not ours any more: the edge host's kernel answers the node (a RST, as for any port
        // nothing listens on).
        match table {
            Table::Established => end(key, entry),
            Table::Handshake => end_handshake(key, f),
        }
        count(counter::EXPIRED_ON_PACKET);
        count(counter::PASS_NOT_OURS);
        return xdp_action::XDP_PASS;
    }
    if !usable(backend_id) {
        match table {
            Table::Established => end(key, entry),
            Table::Handshake => end_handshake(key, f),
        }
        return rst_shutdown(ctx, service_id, backend_id);
    }
    match table {
        Table::Established => established(ctx, h, entry),
        Table::Handshake => handshake_reply(ctx, h, key, entry),
    }
}

#[inline(always)]
fn rst_shutdown(ctx: &XdpContext, service_id: u32, backend_id: u32) -> u32 {
    count(counter::RST_SHUTDOWN);
    bump_rst(service_id, backend_id);
    reset::reply_rst(ctx)
}

#[inline(always)]
fn bump_rst(service_id: u32, backend_id: u32) {
    if let Some(s) = service_stats(service_id) {
        s.rst_sent += 1;
    }
    if let Some(b) = backend_stats(backend_id) {
        b.rst_sent += 1;
    }
}

/// Rewrites, accounts and transmits a packet of flow entry `f`.
#[inline(always)]
fn send(ctx: &XdpContext, h: &Headers, f: &Flow) -> u32 {
    rewrite(h, f);
    account(h, f);
    xmit::send(ctx, h)
}

/// Full NAT of addresses and ports with incremental checksum updates (RFC 1624).
#[inline(always)]
fn rewrite(h: &Headers, f: &Flow) {
    unsafe {
        let ip = &mut *h.ip;
        let tcp = &mut *h.tcp;
        let (old_s, old_d) = (get32(&ip.saddr), get32(&ip.daddr));
        let (new_s, new_d) = (f.saddr[0], f.daddr[0]);
        let mut ipc = csum::replace32(ip.check, old_s, new_s);
        ipc = csum::replace32(ipc, old_d, new_d);
        ip.check = ipc;
        // The TCP checksum covers the pseudo-header addresses and the ports.
        let mut tc = csum::replace32(tcp.check, old_s, new_s);
        tc = csum::replace32(tc, old_d, new_d);
        tc = csum::replace16(tc, tcp.sport, f.sport);
        tc = csum::replace16(tc, tcp.dport, f.dport);
        tcp.check = tc;
        put32(&mut ip.saddr, new_s);
        put32(&mut ip.daddr, new_d);
        tcp.sport = f.sport;
        tcp.dport = f.dport;
    }
}

#[inline(always)]
fn account(h: &Headers, f: &Flow) {
    let bytes = u64::from(u16::from_be(unsafe { (*h.ip).tot_len }));
    let reply = f.flags & FLOW_F_REPLY != 0;
    if let Some(s) = service_stats(f.service_id) {
        if reply {
            s.packets_out += 1;
            s.bytes_out += bytes;
        } else {
            s.packets_in += 1;
            s.bytes_in += bytes;
        }
    }
    if let Some(b) = backend_stats(f.backend_id) {
        if reply {
            b.packets_out += 1;
            b.bytes_out += bytes;
        } else {
            b.packets_in += 1;
            b.bytes_in += bytes;
        }
    }
}
