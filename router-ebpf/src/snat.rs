//! SNAT port allocation for a new flow. The reply key `(node, node port) → (SNAT address,
//! port)` owns the port, in either table. A candidate port is locked by inserting the new
//! flow's reply entry into the handshake table with `BPF_NOEXIST` (one CPU wins); the port is
//! then ours unless an established flow holds it, and a closed or expired one is ended and
//! its port taken over at once.
use aya_ebpf::{bindings::BPF_NOEXIST, helpers::bpf_get_prandom_u32};
use router_ebpf::{
    FLOW_F_BACKEND_CLOSED_FIRST, FLOW_F_CLOSED, FLOW_F_REPLY, Flow, FlowKey, NODE_TIME_WAIT_NS,
    Service, Timeouts,
};

use crate::{
    flow::{self, peer_key},
    maps::{PGR_CONNTRACK, PGR_HANDSHAKE, PGR_SNAT_CURSOR},
};

/// Random probes (the client's own port first when it lies in the range).
const RANDOM_TRIES: u32 = 8;
/// Then a sequential scan from a per-CPU cursor that persists across SYNs, so successive
/// allocations sweep the whole range: at 90 % of the ports held by live flows, 8 + 32 probes
/// all miss with a chance of 0.9^40 ≈ 1.5 %, and the client's SYN retransmission scans on.
/// Each probe is verified separately (the verifier walks bounded loops), which bounds this.
const SCAN_TRIES: u32 = 32;

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
    /// Last resort: a port held by a closed flow that the backend closed first, less than the
    /// node's TIME_WAIT ago, for another client — usable, but the node may answer the SYN
    /// with a challenge ACK (one retransmission for the client). Starts as a
    /// random port and is never compared, so the verifier need not track which probe set it
    /// (tracking it would fork its states on every probe).
    pub last_resort: u32,
    pub _pad: u32,
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
    let mut off = unsafe { *cursor } % range;
    for _ in 0..SCAN_TRIES {
        off += 1;
        if off >= range {
            off = 0;
        }
        let port = min + off as u16;
        if probe(port, w) {
            unsafe { *cursor = off };
            crate::maps::count(router_ebpf::counter::SNAT_SCANNED);
            return Some(port);
        }
    }
    unsafe {
        *cursor = off;
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
        match PGR_CONNTRACK.get_ptr(peer_key(r)) {
            // Orphaned reply entry: its flow is gone.
            None => true,
            Some(fwd) => {
                let f = unsafe { &*fwd };
                if flow::expired(f, r, w.now, &w.t) {
                    true
                } else if f.flags & FLOW_F_CLOSED == 0 {
                    false
                } else if w.any_closed != 0
                    || f.flags & FLOW_F_BACKEND_CLOSED_FIRST == 0
                    || r.daddr == w.client.saddr
                    || w.now.saturating_sub(r.last_seen) > NODE_TIME_WAIT_NS
                {
                    // Not in the node's TIME_WAIT, or the same client host: its TCP timestamps
                    // only grow, so the node accepts the new SYN (RFC 6191).
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
