//! The handshake: a SYN with no flow gets a backend and a SNAT port and both entries in the
//! handshake table (`PGR_HANDSHAKE`, LRU, no slot held); the client's ACK of the node's
//! SYN-ACK takes a `maxconn` slot and moves the entries to the conntrack table.
use aya_ebpf::{
    bindings::{BPF_ANY, BPF_NOEXIST, xdp_action},
    programs::XdpContext,
};
use router_ebpf::{
    FAMILY_IPV4, FLOW_F_ANSWERED, FLOW_F_REPLY, Flow, FlowKey, PROTO_TCP, Service, counter,
};

use crate::{
    atomic,
    maps::{
        PGR_BACKENDS, PGR_CONNTRACK, PGR_HANDSHAKE, PGR_SCRATCH, backend_stats, count, may_log,
        now, service_stats, timeouts,
    },
    parse::{Headers, TCP_ACK, TCP_RST, TCP_SYN, get32},
    reset, select, snat,
};

use super::send;

/// Verdict-like return of [`establish`]: the flow is in the established table now and the
/// packet is to be handled as an established one (by the caller, which keeps BPF's call chain,
/// and so its stack, short).
pub(super) const NOW_ESTABLISHED: u32 = u32::MAX;

/// Removes a half-open flow's entries (they hold no slot).
///
/// The other entry is removed only if it is still this flow's: the table is LRU, so it may
/// have been evicted and its key (a SNAT port) taken by another flow since.
#[inline(never)]
pub(super) fn end_handshake(key: &FlowKey, f: &Flow) {
    let other = f.peer_key();
    if let Some(o) = PGR_HANDSHAKE.get_ptr(&other) {
        if unsafe { (*o).peer_key() } == *key {
            let _ = PGR_HANDSHAKE.remove(&other);
        }
    }
    let _ = PGR_HANDSHAKE.remove(key);
}

/// A SYN with no flow: choose a backend, allocate a SNAT port, insert both entries into the
/// handshake table. No slot is taken until the handshake completes. Three steps called one
/// after the other, not nested: BPF allows 512 bytes of stack for a whole call chain.
#[inline(always)]
pub(super) fn new_flow(ctx: &XdpContext, h: &Headers, key: &FlowKey, svc: &Service) -> u32 {
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
pub(super) const PREPARED: u32 = u32::MAX - 1;

/// Chooses the backend (or holds/rejects the SYN when the set is empty) and fills the scratch
/// with the new flow's entries, all but the SNAT port.
#[inline(never)]
pub(super) fn prepare(ctx: &XdpContext, h: &Headers, key: &FlowKey, svc: &Service) -> u32 {
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
        r.seq = isn;
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
        f.seq = isn;
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
pub(super) fn finish(ctx: &XdpContext, h: &Headers, key: &FlowKey, w: *mut snat::Want) -> u32 {
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
pub(super) fn log_snat_exhausted(ctx: &XdpContext, service_id: u32) {
    aya_log_ebpf::warn!(ctx, "snat ports exhausted for service {}", service_id);
}

/// A client packet of a flow in its handshake: SYN retransmissions go to the same backend;
/// the ACK of the backend's SYN-ACK completes it ([`establish`]); a RST ends it only with the
/// sequence number the backend expects (ISN + 1).
#[inline(never)]
pub(super) fn handshake_forward(ctx: &XdpContext, h: &Headers, key: &FlowKey, f: &Flow) -> u32 {
    let tcp_flags = unsafe { (*h.tcp).flags };
    if tcp_flags & TCP_RST != 0 {
        // A copy: the entry may be reused once removed.
        let fc = *f;
        if u32::from_be(get32(unsafe { &(*h.tcp).seq })) == fc.seq.wrapping_add(1) {
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
pub(super) fn establish(key: &FlowKey, f: &Flow, r: *const Flow) -> u32 {
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
        (*w).fwd.seq = 0;
        (*w).reply = *r;
        (*w).reply.seq = 0;
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
    crate::sync::established(key, nf, nr);
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
pub(super) fn ct_full(service_id: u32) -> u32 {
    if let Some(s) = service_stats(service_id) {
        s.drop_ct_full += 1;
    }
    count(counter::DROP_CT_FULL);
    xdp_action::XDP_DROP
}

/// A node packet of a flow in its handshake. A RST is a refusal (nothing listens) only if it
/// acknowledges exactly our SYN, and only before the node answered.
#[inline(never)]
pub(super) fn handshake_reply(
    ctx: &XdpContext,
    h: &Headers,
    key: &FlowKey,
    entry: *mut Flow,
) -> u32 {
    let f = unsafe { &*entry };
    let tcp_flags = unsafe { (*h.tcp).flags };
    let ack = get32(unsafe { &(*h.tcp).ack });
    if tcp_flags & TCP_RST != 0 {
        // A copy: the entry may be reused once removed.
        let fc = *f;
        if tcp_flags & TCP_ACK != 0 && u32::from_be(ack) == fc.seq.wrapping_add(1) {
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
        && u32::from_be(ack) == f.seq.wrapping_add(1)
    {
        unsafe { (*entry).last_ack = ack };
        atomic::fetch_or(unsafe { &raw mut (*entry).flags }, FLOW_F_ANSWERED);
    }
    send(ctx, h, f)
}
