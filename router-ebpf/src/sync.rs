//! Flow-state sync, the kernel's part: report established and closed flows to the ring buffer
//! the controller drains (and sends to the peer edge hosts), install and remove the peers'
//! flows on the controller's request (run under `BPF_PROG_TEST_RUN`, like `gc`, for the same
//! atomic slot accounting), and the takeover grace window.
use aya_ebpf::bindings::{BPF_NOEXIST, xdp_action};
use router_ebpf::{
    FLOW_EVENT_CLOSED, FLOW_EVENT_ESTABLISHED, FLOW_F_CLOSED, FLOW_F_REPLY, FLOW_F_SYNCED, Flow,
    FlowEvent, FlowKey, SYNC_F_EVENTS, SyncRequest,
};

use crate::{
    atomic,
    maps::{
        PGR_BACKEND_CONNS, PGR_CONNTRACK, PGR_FLOW_EVENTS, PGR_HANDSHAKE, PGR_SYNC, sync_stats,
    },
};

#[inline(always)]
fn enabled() -> bool {
    match PGR_SYNC.get(0) {
        Some(s) => s.flags & SYNC_F_EVENTS != 0,
        None => false,
    }
}

/// Writes one event; a full ring is counted (the next refresh or full sync repairs the peer).
#[inline(always)]
fn report(kind: u32, key: &FlowKey, fwd: *const Flow, reply: *const Flow) {
    let Some(mut e) = PGR_FLOW_EVENTS.reserve(0) else {
        if let Some(s) = sync_stats() {
            s.events_lost += 1;
        }
        return;
    };
    let p = e.as_mut_ptr();
    unsafe {
        (*p).kind = kind;
        (*p)._pad = 0;
        (*p).key = *key;
        (*p).fwd = *fwd;
        if reply.is_null() {
            (*p).reply = Flow::default();
        } else {
            (*p).reply = *reply;
        }
    }
    e.submit(0);
    if let Some(s) = sync_stats() {
        s.events += 1;
    }
}

/// A handshake completed: `key` → `fwd`, and `fwd.peer_key()` → `reply`.
#[inline(never)]
pub fn established(key: &FlowKey, fwd: *const Flow, reply: *const Flow) {
    if enabled() {
        report(FLOW_EVENT_ESTABLISHED, key, fwd, reply);
    }
}

/// The flow of forward entry `fwd` was closed (once). A synced entry that no packet has
/// claimed here belongs to the peer that reported it: its close is not reported back.
#[inline(never)]
pub fn closed(fwd: *const Flow) {
    let f = unsafe { &*fwd };
    if f.flags & FLOW_F_SYNCED == 0 && enabled() {
        report(FLOW_EVENT_CLOSED, &f.peer_key(), fwd, core::ptr::null());
    }
}

/// Within the takeover grace window (see `router_ebpf::SyncState`)? `port`: a reply
/// packet's destination port, to be within the SNAT ports; `None` for a client packet.
#[inline(always)]
pub fn in_grace(now: u64, port: Option<u16>) -> bool {
    let Some(s) = PGR_SYNC.get(0) else {
        return false;
    };
    if now >= s.grace_until_ns {
        return false;
    }
    if let Some(p) = port
        && (p < s.grace_port_min || p > s.grace_port_max)
    {
        return false;
    }
    if let Some(st) = sync_stats() {
        st.grace_drops += 1;
    }
    true
}

/// A synced entry's first packet here: the flow is this host's from now on.
#[inline(always)]
pub fn adopt(entry: *mut Flow) {
    atomic::fetch_and(unsafe { &raw mut (*entry).flags }, !FLOW_F_SYNCED);
    if let Some(s) = sync_stats() {
        s.adopted += 1;
    }
}

fn latest(f: &Flow, r: &Flow) -> u64 {
    if f.last_seen > r.last_seen {
        f.last_seen
    } else {
        r.last_seen
    }
}

/// `GC_OP_SYNC_INSTALL` (see `router_ebpf`).
#[inline(never)]
pub fn install(req: &SyncRequest) -> u32 {
    if req.fwd.flags & (FLOW_F_CLOSED | FLOW_F_REPLY) != 0
        || req.reply.flags & FLOW_F_REPLY == 0
        || (req.fwd.flags & req.reply.flags) & FLOW_F_SYNCED == 0
        || req.fwd.backend_id != req.reply.backend_id
    {
        return xdp_action::XDP_ABORTED;
    }
    let rkey = req.fwd.peer_key();
    if req.reply.peer_key() != req.key {
        return xdp_action::XDP_ABORTED;
    }
    if let Some(e) = PGR_CONNTRACK.get_ptr_mut(&req.key) {
        let Some(r) = PGR_CONNTRACK.get_ptr_mut(&rkey) else {
            return xdp_action::XDP_TX;
        };
        let (ef, er) = unsafe { (&*e, &*r) };
        if ef.flags & FLOW_F_REPLY != 0 || ef.peer_key() != rkey || er.peer_key() != req.key {
            // Another flow (or another rewrite) holds the tuple here.
            return xdp_action::XDP_TX;
        }
        if ef.flags & FLOW_F_CLOSED != 0 || latest(ef, er) >= latest(&req.fwd, &req.reply) {
            return xdp_action::XDP_PASS;
        }
        // Newer than ours: take the peer's view; the next packet here learns afresh.
        unsafe {
            (*e).last_ack = req.fwd.last_ack;
            (*e).seq = req.fwd.seq;
            (*e).peer_fin_end = req.fwd.peer_fin_end;
            if req.fwd.last_seen > (*e).last_seen {
                (*e).last_seen = req.fwd.last_seen;
            }
            (*r).last_ack = req.reply.last_ack;
            (*r).seq = req.reply.seq;
            (*r).peer_fin_end = req.reply.peer_fin_end;
            if req.reply.last_seen > (*r).last_seen {
                (*r).last_seen = req.reply.last_seen;
            }
        }
        atomic::fetch_or(
            unsafe { &raw mut (*e).flags },
            req.fwd.flags | FLOW_F_SYNCED,
        );
        atomic::fetch_or(
            unsafe { &raw mut (*r).flags },
            req.reply.flags | FLOW_F_SYNCED,
        );
        return xdp_action::XDP_DROP;
    }
    if PGR_CONNTRACK.get_ptr(&rkey).is_some()
        || PGR_HANDSHAKE.get_ptr(&rkey).is_some()
        || PGR_HANDSHAKE.get_ptr(&req.key).is_some()
    {
        // The SNAT port (or the client's tuple) holds another flow here, established or in
        // its handshake: the hosts' port shares overlap.
        return xdp_action::XDP_TX;
    }
    let Some(c) = PGR_BACKEND_CONNS.get_ptr_mut(req.fwd.backend_id) else {
        return xdp_action::XDP_ABORTED;
    };
    if PGR_CONNTRACK
        .insert(&rkey, &req.reply, u64::from(BPF_NOEXIST))
        .is_err()
    {
        return xdp_action::XDP_TX;
    }
    if PGR_CONNTRACK
        .insert(&req.key, &req.fwd, u64::from(BPF_NOEXIST))
        .is_err()
    {
        let _ = PGR_CONNTRACK.remove(&rkey);
        return xdp_action::XDP_TX;
    }
    // The node holds the session: it counts against maxconn here from now on, whatever the
    // count (the slot is given back by the same close as any flow's).
    atomic::fetch_add(c, 1);
    xdp_action::XDP_DROP
}

/// `GC_OP_SYNC_REMOVE` (see `router_ebpf`): `req.key` is the reply key.
#[inline(never)]
pub fn remove(req: &SyncRequest) -> u32 {
    let Some(r) = PGR_CONNTRACK.get_ptr_mut(&req.key) else {
        return xdp_action::XDP_PASS;
    };
    let rv = unsafe { *r };
    if rv.flags & FLOW_F_REPLY == 0 {
        return xdp_action::XDP_PASS;
    }
    let Some(f) = PGR_CONNTRACK.get_ptr(&rv.peer_key()) else {
        crate::flow::end(&req.key, r);
        return xdp_action::XDP_DROP;
    };
    let fv = unsafe { *f };
    if fv.peer_key() != req.key {
        return xdp_action::XDP_PASS;
    }
    if fv.flags & FLOW_F_SYNCED == 0 && latest(&fv, &rv) > req.fwd.last_seen {
        // Live here since the peer's report (this host took the flow over).
        return xdp_action::XDP_PASS;
    }
    crate::flow::end(&req.key, r);
    xdp_action::XDP_DROP
}
