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
use aya_ebpf::{
    bindings::{BPF_ANY, BPF_NOEXIST, xdp_action},
    programs::XdpContext,
};
use router_ebpf::{
    BACKEND_ACTIVE, BACKEND_DRAIN, FAMILY_IPV4, FLOW_F_ANSWERED, FLOW_F_BACKEND_CLOSED_FIRST,
    FLOW_F_CLIENT_FIN_SEEN, FLOW_F_CLOSED, FLOW_F_FIN_BACKEND, FLOW_F_FIN_CLIENT, FLOW_F_PEER_FIN,
    FLOW_F_PEER_FIN_ACKED, FLOW_F_REPLY, FLOW_STATE_HANDSHAKE, Flow, FlowKey, PROTO_TCP, Service,
    Timeouts, counter, flow_state, state_timeout,
};

use crate::{
    atomic, csum,
    maps::{
        PGR_BACKENDS, PGR_CONNTRACK, PGR_HANDSHAKE, PGR_SCRATCH, backend_stats, count, may_log,
        now, service_stats, timeouts,
    },
    parse::{Headers, IPV4_LEN, TCP_ACK, TCP_FIN, TCP_RST, TCP_SYN, get32, put32},
    reset, select, snat, xmit,
};

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

/// Verdict-like return of [`establish`]: the flow is in the established table now and the
/// packet is to be handled as an established one (by the caller, which keeps BPF's call chain,
/// and so its stack, short).
const NOW_ESTABLISHED: u32 = u32::MAX;

/// Removes a half-open flow's entries (they hold no slot).
///
/// The other entry is removed only if it is still this flow's: the table is LRU, so it may
/// have been evicted and its key (a SNAT port) taken by another flow since.
#[inline(never)]
fn end_handshake(key: &FlowKey, f: &Flow) {
    let other = f.peer_key();
    if let Some(o) = PGR_HANDSHAKE.get_ptr(&other) {
        if unsafe { (*o).peer_key() } == *key {
            let _ = PGR_HANDSHAKE.remove(&other);
        }
    }
    let _ = PGR_HANDSHAKE.remove(key);
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

/// A SYN with no flow: choose a backend, allocate a SNAT port, insert both entries into the
/// handshake table. No slot is taken until the handshake completes. Three steps called one
/// after the other, not nested: BPF allows 512 bytes of stack for a whole call chain.
#[inline(always)]
fn new_flow(ctx: &XdpContext, h: &Headers, key: &FlowKey, svc: &Service) -> u32 {
    let v = prepare(ctx, h, key, svc);
    if v != PREPARED {
        return v;
    }
    let Some(w) = PGR_SCRATCH.get_ptr_mut(0) else {
        return xdp_action::XDP_DROP;
    };
    match snat::allocate(svc, w) {
        Some(port) => unsafe { (*w).fwd.sport = port.to_be() },
        None => {
            let now = unsafe { (*w).now };
            if may_log(now) {
                log_snat_exhausted(ctx, svc.id);
            }
            if let Some(stats) = service_stats(svc.id) {
                stats.drop_snat_exhausted += 1;
            }
            count(counter::DROP_SYN);
            return xdp_action::XDP_DROP;
        }
    }
    finish(ctx, h, key, w)
}

/// [`prepare`]'s "go on": the new flow's entries stand in the per-CPU scratch.
const PREPARED: u32 = u32::MAX - 1;

/// Chooses the backend (or holds/rejects the SYN when the set is empty) and fills the scratch
/// with the new flow's entries, all but the SNAT port.
#[inline(never)]
fn prepare(ctx: &XdpContext, h: &Headers, key: &FlowKey, svc: &Service) -> u32 {
    let now = now();
    let Some(stats) = service_stats(svc.id) else {
        return xdp_action::XDP_PASS;
    };
    let backend_id = match select::choose(svc, key) {
        Ok(id) => id,
        Err(select::NoChoice::Empty(since)) => {
            let hold = u64::from(svc.empty_hold_ms) * 1_000_000;
            // Hold: the client's SYN retransmission connects as soon as a backend exists.
            // Bounded: past the hold a RST says "refused" at once instead of a hang. An
            // unknown start (0) is a transient state the controller is about to replace.
            if hold != 0 && (since == 0 || now.saturating_sub(since) < hold) {
                stats.drop_no_backend += 1;
                count(counter::DROP_SYN_HELD);
                return xdp_action::XDP_DROP;
            }
            stats.rst_no_backend += 1;
            stats.rst_sent += 1;
            count(counter::RST_NO_BACKEND);
            return reset::reply_rst(ctx);
        }
        Err(select::NoChoice::AllAtMaxconn) => {
            stats.drop_maxconn += 1;
            count(counter::DROP_SYN);
            return xdp_action::XDP_DROP;
        }
    };
    let Some(b) = PGR_BACKENDS.get(backend_id) else {
        return xdp_action::XDP_DROP;
    };
    let Some(w) = PGR_SCRATCH.get_ptr_mut(0) else {
        return xdp_action::XDP_DROP;
    };
    let isn = u32::from_be(get32(unsafe { &(*h.tcp).seq }));
    // Field by field: a struct literal would be built on the stack first.
    unsafe {
        let r = &mut (*w).reply;
        r.saddr = key.daddr;
        r.daddr = key.saddr;
        r.sport = key.dport;
        r.dport = key.sport;
        r.backend_id = backend_id;
        r.service_id = svc.id;
        r.flags = FLOW_F_REPLY;
        r.last_ack = 0;
        r.last_seen = now;
        r.isn = isn;
        r.peer_fin_end = 0;
        let f = &mut (*w).fwd;
        f.saddr = svc.snat_addr;
        f.daddr = b.addr;
        f.sport = 0;
        f.dport = b.port;
        f.backend_id = backend_id;
        f.service_id = svc.id;
        f.flags = 0;
        f.last_ack = 0;
        f.last_seen = now;
        f.isn = isn;
        f.peer_fin_end = 0;
        let k = &mut (*w).rkey;
        k.saddr = b.addr;
        k.daddr = svc.snat_addr;
        k.sport = b.port;
        k.dport = 0;
        k.proto = PROTO_TCP;
        k.family = FAMILY_IPV4;
        k._pad = [0; 2];
        (*w).client = *key;
        (*w).now = now;
        (*w).t = timeouts();
        (*w).any_closed = 0;
    }
    PREPARED
}

/// Inserts the new flow's forward entry (its reply entry went in with the port) and sends
/// the SYN on.
#[inline(never)]
fn finish(ctx: &XdpContext, h: &Headers, key: &FlowKey, w: *mut snat::Want) -> u32 {
    let fwd = unsafe { &(*w).fwd };
    if PGR_HANDSHAKE
        .insert(key, fwd, u64::from(BPF_NOEXIST))
        .is_err()
    {
        // Another CPU created this flow from a duplicate SYN; the retransmit will use it.
        let _ = PGR_HANDSHAKE.remove(unsafe { &(*w).rkey });
        count(counter::CT_INSERT_FAILED);
        return xdp_action::XDP_DROP;
    }
    if let Some(s) = service_stats(fwd.service_id) {
        s.new_flows += 1;
    }
    if let Some(bs) = backend_stats(fwd.backend_id) {
        bs.new_flows += 1;
    }
    send(ctx, h, fwd)
}

/// Actionable: the range is too small for the flows open at once. Its own frame: the log
/// record's buffer would otherwise sit on the SYN path's stack.
#[inline(never)]
fn log_snat_exhausted(ctx: &XdpContext, service_id: u32) {
    aya_log_ebpf::warn!(ctx, "snat ports exhausted for service {}", service_id);
}

/// A client packet of a flow in its handshake: SYN retransmissions go to the same backend;
/// the ACK of the backend's SYN-ACK completes it ([`establish`]); a RST ends it only with the
/// sequence number the backend expects (ISN + 1).
#[inline(never)]
fn handshake_forward(ctx: &XdpContext, h: &Headers, key: &FlowKey, f: &Flow) -> u32 {
    let tcp_flags = unsafe { (*h.tcp).flags };
    if tcp_flags & TCP_RST != 0 {
        // A copy: the entry may be reused once removed.
        let fc = *f;
        if u32::from_be(get32(unsafe { &(*h.tcp).seq })) == fc.isn.wrapping_add(1) {
            end_handshake(key, &fc);
        } else {
            count(counter::RST_NOT_EXACT);
        }
        return send(ctx, h, &fc);
    }
    if tcp_flags & (TCP_SYN | TCP_ACK) == TCP_ACK {
        if let Some(r) = PGR_HANDSHAKE.get_ptr(&f.peer_key()) {
            // The reply entry must still be this flow's: an LRU eviction may have handed its
            // SNAT port to another flow, whose reply entry now stands under the key.
            let (flags, owner) = unsafe { ((*r).flags, (*r).peer_key()) };
            if flags & FLOW_F_ANSWERED != 0 && owner == *key {
                return establish(key, f, r);
            }
        }
    }
    send(ctx, h, f)
}

/// The client's ACK completes the handshake: take a slot (or drop the ACK while all are
/// taken: the client retransmits, the node keeps its half-open socket, and the wait ends at
/// the handshake timeout), then move both entries to the established table.
#[inline(never)]
fn establish(key: &FlowKey, f: &Flow, r: *const Flow) -> u32 {
    let now = now();
    let rkey = &f.peer_key();
    let maxconn = match PGR_BACKENDS.get(f.backend_id) {
        Some(b) => b.maxconn,
        None => return xdp_action::XDP_DROP,
    };
    if !select::reserve(f.backend_id, maxconn) {
        select::full(f.backend_id);
        if let Some(s) = service_stats(f.service_id) {
            s.drop_maxconn += 1;
        }
        count(counter::DROP_WAIT_SLOT);
        return xdp_action::XDP_DROP;
    }
    // The new entries are built in the per-CPU scratch (see `snat::Want`), off the stack.
    let Some(w) = PGR_SCRATCH.get_ptr_mut(0) else {
        select::release(f.backend_id);
        return xdp_action::XDP_DROP;
    };
    let (nf, nr) = unsafe {
        (*w).fwd = *f;
        (*w).fwd.last_seen = now;
        (*w).fwd.flags = 0;
        (*w).reply = *r;
        (*w).reply.last_seen = now;
        (*w).reply.flags = FLOW_F_REPLY | FLOW_F_ANSWERED;
        (&(*w).fwd, &(*w).reply)
    };
    // The forward insert is the lock: a duplicate ACK on another CPU finds it and goes on as
    // an established packet. The reply entry goes in before the handshake one leaves, so the
    // port is always owned by some entry (see `snat`).
    if PGR_CONNTRACK
        .insert(key, nf, u64::from(BPF_NOEXIST))
        .is_err()
    {
        select::release(f.backend_id);
        if PGR_CONNTRACK.get_ptr(key).is_some() {
            return NOW_ESTABLISHED;
        }
        return ct_full(f.service_id);
    }
    if PGR_CONNTRACK.insert(rkey, nr, u64::from(BPF_ANY)).is_err() {
        let _ = PGR_CONNTRACK.remove(key);
        select::release(f.backend_id);
        return ct_full(f.service_id);
    }
    let service_id = f.service_id;
    // `f` and `r` point into the handshake entries, dead from here.
    let _ = PGR_HANDSHAKE.remove(rkey);
    let _ = PGR_HANDSHAKE.remove(key);
    if let Some(s) = service_stats(service_id) {
        s.established += 1;
    }
    NOW_ESTABLISHED
}

#[inline(always)]
fn ct_full(service_id: u32) -> u32 {
    if let Some(s) = service_stats(service_id) {
        s.drop_ct_full += 1;
    }
    count(counter::DROP_CT_FULL);
    xdp_action::XDP_DROP
}

/// A node packet of a flow in its handshake. A RST is a refusal (nothing listens) only if it
/// acknowledges exactly our SYN, and only before the node answered.
#[inline(never)]
fn handshake_reply(ctx: &XdpContext, h: &Headers, key: &FlowKey, entry: *mut Flow) -> u32 {
    let f = unsafe { &*entry };
    let tcp_flags = unsafe { (*h.tcp).flags };
    let ack = get32(unsafe { &(*h.tcp).ack });
    if tcp_flags & TCP_RST != 0 {
        // A copy: the entry may be reused once removed.
        let fc = *f;
        if tcp_flags & TCP_ACK != 0 && u32::from_be(ack) == fc.isn.wrapping_add(1) {
            if fc.flags & FLOW_F_ANSWERED == 0 {
                if let Some(b) = backend_stats(fc.backend_id) {
                    b.refused += 1;
                }
            }
            end_handshake(key, &fc);
        } else {
            count(counter::RST_FORGED_REFUSAL);
        }
        return send(ctx, h, &fc);
    }
    if tcp_flags & (TCP_SYN | TCP_ACK) == TCP_SYN | TCP_ACK
        && u32::from_be(ack) == f.isn.wrapping_add(1)
    {
        unsafe { (*entry).last_ack = ack };
        atomic::fetch_or(unsafe { &raw mut (*entry).flags }, FLOW_F_ANSWERED);
    }
    send(ctx, h, f)
}

/// How far (either way) a segment's sequence and acknowledgement numbers may lie from what was
/// acknowledged last for the data path to learn from it: more than a PostgreSQL connection has
/// in flight (Linux autotunes receive buffers up to 6 MiB by default), a 2^-7 target for each
/// blind guess in 2^32, so 2^-14 for a spoofed segment.
const SEQ_WINDOW: u32 = 1 << 24;

/// A packet of an established flow, either direction: refreshes its last-seen time, tracks
/// acknowledged FINs and exact RSTs, and translates it. Acknowledgements and FINs count only
/// from a segment whose sequence number lies near what the other side acknowledged last: a
/// blind spoofer knows the tuples but not the sequence numbers (RFC 5961 §5), so it can
/// neither set the number an "exact" RST is judged by nor fake an acknowledged FIN.
#[inline(never)]
fn established(ctx: &XdpContext, h: &Headers, entry: *mut Flow) -> u32 {
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
    let in_window = near(seq, u32::from_be(unsafe { (*peer).last_ack }))
        && (f.last_ack == 0 || near(u32::from_be(ack_be), u32::from_be(f.last_ack)));
    if !in_window {
        count(counter::SEQ_OUT_OF_WINDOW);
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
fn near(a: u32, b: u32) -> bool {
    a.wrapping_sub(b).wrapping_add(SEQ_WINDOW) <= 2 * SEQ_WINDOW
}

#[inline(always)]
fn fin_acked(fwd: *mut Flow, backend_id: u32, bit: u64) {
    let old = atomic::fetch_or(unsafe { &raw mut (*fwd).flags }, bit);
    if (old | bit) & (FLOW_F_FIN_CLIENT | FLOW_F_FIN_BACKEND)
        == FLOW_F_FIN_CLIENT | FLOW_F_FIN_BACKEND
    {
        close(fwd, backend_id);
    }
}

/// A FIN is recorded in the other direction's entry (which closes it when that side
/// acknowledges it); a RST closes the flow only with exactly the sequence number the other
/// side acknowledged last (RFC 5961 §3.2: anything else only earns a challenge ACK from the
/// endpoint, so a forged RST cannot free a slot or a port).
#[inline(always)]
fn track_close(h: &Headers, entry: *mut Flow, peer: *mut Flow, f: &Flow, tcp_flags: u8) {
    let is_reply = f.flags & FLOW_F_REPLY != 0;
    let seq_be = get32(unsafe { &(*h.tcp).seq });
    if tcp_flags & TCP_RST != 0 {
        if seq_be == unsafe { (*peer).last_ack } {
            let fwd = if is_reply { peer } else { entry };
            close(fwd, f.backend_id);
        } else {
            count(counter::RST_NOT_EXACT);
        }
        return;
    }
    let (tot_len, doff) = unsafe { (u16::from_be((*h.ip).tot_len), (*h.tcp).doff >> 4) };
    let payload = u32::from(tot_len).saturating_sub(IPV4_LEN as u32 + u32::from(doff) * 4);
    let end = u32::from_be(seq_be).wrapping_add(payload).wrapping_add(1);
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
