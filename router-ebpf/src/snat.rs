//! SNAT port allocation for a new flow. The reply key `(node, node port) → (SNAT address,
//! port)` owns the port, in either table. A candidate port is locked by inserting the new
//! flow's reply entry into the handshake table with `BPF_NOEXIST` (one CPU wins); the port is
//! then ours unless an established flow holds it, and a closed or expired one is ended and
//! its port taken over at once.
use core::ffi::c_void;

use aya_ebpf::{
    bindings::BPF_NOEXIST,
    helpers::{bpf_get_prandom_u32, bpf_loop},
};
use router_ebpf::{
    FLOW_F_BACKEND_CLOSED_FIRST, FLOW_F_CLOSED, FLOW_F_REPLY, Flow, FlowKey, NODE_TIME_WAIT_NS,
    Service, Timeouts,
};

use crate::{
    flow,
    maps::{PGR_CONNTRACK, PGR_HANDSHAKE, PGR_SNAT_CURSOR},
};

/// Random probes (the client's own port first when it lies in the range).
const RANDOM_TRIES: u32 = 8;
/// Then a sequential scan (`bpf_loop`: its body is verified once, whatever the count) from a
/// per-CPU cursor that persists across SYNs: a range of up to this many ports is searched
/// whole, so allocation never fails while a port is free; a larger one is searched on where
/// the last SYN stopped. Bounded so a nearly full range costs one SYN at most ~1,000 probes
/// (a fraction of a millisecond), not a sweep of 60,000.
const SCAN_TRIES: u32 = 1024;

/// A closed flow's port is reused only this long after the flow's last packet (a few of the
/// coarse clock's ticks): the ACK that closed it must reach the node first.
const CLOSED_REUSE_GUARD_NS: u64 = 10_000_000;

/// A new flow in the making: the entries to insert and what a probe needs. It lives in a
/// per-CPU scratch map (`PGR_SCRATCH`), not on the stack: BPF allows 512 bytes of stack for
/// the whole call chain, and two flow entries plus keys would take most of it.
pub struct Want {
    /// The new flow's reply key; `dport` is set to the probed port.
    pub rkey: FlowKey,
    /// The new flow's reply entry, inserted under `rkey`.
    pub reply: Flow,
    /// The new flow's forward entry, filled once the port is known.
    pub fwd: Flow,
    /// The new flow's client tuple.
    pub client: FlowKey,
    pub now: u64,
    pub t: Timeouts,
    /// Take a closed flow's port even when the node may still hold it in TIME_WAIT.
    pub any_closed: u64,
    /// Scan state for the `bpf_loop` callback: first port, range size, cursor, and the port
    /// found (0: none).
    pub scan_min: u32,
    pub scan_range: u32,
    pub scan_off: u32,
    pub found: u32,
    /// Last resort: a port held by a closed flow that the backend closed first, less than the
    /// node's TIME_WAIT ago — usable, but the node may answer the SYN with a challenge ACK
    /// (one retransmission for the client). Starts as a
    /// random port and is never compared, so the verifier need not track which probe set it
    /// (tracking it would fork its states on every probe).
    pub last_resort: u32,
    pub _pad: u32,
}

/// One step of the sequential scan, run by `bpf_loop` (1 stops the loop). Its context is a
/// stack slot holding the scratch pointer (`bpf_loop` takes a stack pointer only).
extern "C" fn scan_step(_index: u64, ctx: *mut c_void) -> i64 {
    let w = unsafe { *(ctx as *mut *mut Want) };
    unsafe {
        let mut off = (*w).scan_off + 1;
        if off >= (*w).scan_range {
            off = 0;
        }
        (*w).scan_off = off;
        let port = ((*w).scan_min + off) as u16;
        if probe(port, w) {
            (*w).found = u32::from(port);
            return 1;
        }
    }
    0
}

/// Finds a free port for a new flow to backend `w.rkey.saddr:w.rkey.sport` and inserts the
/// flow's reply entry into the handshake table under it. Returns the port (host order).
#[inline(never)]
pub fn allocate(svc: &Service, w: *mut Want) -> Option<u16> {
    let (min, max) = (svc.snat_port_min, svc.snat_port_max);
    if min == 0 || max < min {
        return None;
    }
    let range = u32::from(max - min) + 1;
    let client_port = u16::from_be(unsafe { (*w).client.sport });
    unsafe { (*w).last_resort = u32::from(min) + bpf_get_prandom_u32() % range };
    for i in 0..RANDOM_TRIES {
        // Keep the client's port when it is free (as Cilium does): the backend then sees the
        // port the client used, which eases tracing.
        let port = if i == 0 && client_port >= min && client_port <= max {
            client_port
        } else {
            min + (unsafe { bpf_get_prandom_u32() } % range) as u16
        };
        if probe(port, w) {
            return Some(port);
        }
    }
    let cursor = PGR_SNAT_CURSOR.get_ptr_mut(svc.id)?;
    unsafe {
        (*w).scan_min = u32::from(min);
        (*w).scan_range = range;
        (*w).scan_off = *cursor % range;
        (*w).found = 0;
        let n = if range < SCAN_TRIES {
            range
        } else {
            SCAN_TRIES
        };
        let mut ctx = w;
        bpf_loop(n, scan_step as *mut c_void, (&raw mut ctx).cast(), 0);
        *cursor = (*w).scan_off;
        if (*w).found != 0 {
            crate::maps::count(router_ebpf::counter::SNAT_SCANNED);
            return Some((*w).found as u16);
        }
        (*w).any_closed = 1;
    }
    let port = unsafe { (*w).last_resort } as u16;
    if probe(port, w) {
        return Some(port);
    }
    None
}

/// Tries one port: true when it is ours now (the new reply entry stands under it).
#[inline(never)]
fn probe(port: u16, w: *mut Want) -> bool {
    let w = unsafe { &mut *w };
    w.rkey.dport = port.to_be();
    if PGR_HANDSHAKE
        .insert(&w.rkey, &w.reply, u64::from(BPF_NOEXIST))
        .is_err()
    {
        return false;
    }
    // The port is locked: no other SYN can pick it while our entry stands. A handshake that
    // completed moved its entries to the conntrack table before leaving this one, so an
    // established owner is visible now.
    let Some(old) = PGR_CONNTRACK.get_ptr_mut(&w.rkey) else {
        return true;
    };
    let r = unsafe { &*old };
    let taken = if r.flags & FLOW_F_REPLY == 0 {
        // A client tuple that looks like a reply key: never ours to take.
        false
    } else {
        match PGR_CONNTRACK.get_ptr(r.peer_key()) {
            // Orphaned reply entry: its flow is gone.
            None => true,
            Some(fwd) => {
                let f = unsafe { &*fwd };
                if flow::expired(f, r, w.now, &w.t) {
                    true
                } else if f.flags & FLOW_F_CLOSED == 0
                    || w.now.saturating_sub(f.last_seen.max(r.last_seen)) < CLOSED_REUSE_GUARD_NS
                {
                    // Open; or closed by the ACK that passed a moment ago, which the node may
                    // not have processed yet: a SYN arriving first finds its socket in
                    // LAST_ACK and is dropped (a 1 s retransmission for the client).
                    false
                } else if w.any_closed != 0
                    || f.flags & FLOW_F_BACKEND_CLOSED_FIRST == 0
                    || w.now.saturating_sub(r.last_seen) > NODE_TIME_WAIT_NS
                {
                    // Not in the node's TIME_WAIT. (The same client host is no exception:
                    // Linux gives every connection its own random timestamp offset, so the
                    // node's RFC 6191 check passes only by chance, and a SYN it rejects costs
                    // a challenge ACK, the client's RST and a retransmission.)
                    true
                } else {
                    w.last_resort = u32::from(port);
                    false
                }
            }
        }
    };
    if taken {
        flow::end(&w.rkey, old);
        crate::maps::count(router_ebpf::counter::SNAT_REUSED);
    } else {
        let _ = PGR_HANDSHAKE.remove(&w.rkey);
    }
    taken
}
