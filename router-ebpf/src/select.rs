//! Backend selection for a new flow (balance mode, active state, maxconn by a plain read) and
//! the slot a flow takes when its handshake completes.
use router_ebpf::{
    BACKEND_ACTIVE, BACKEND_SHUTDOWN, BALANCE_LEAST_CONN, BALANCE_SOURCE_HASH, FlowKey, MAX_SET,
    Service,
};

use crate::{
    atomic,
    maps::{
        PGR_BACKEND_CONNS, PGR_BACKEND_SETS, PGR_BACKENDS, PGR_RR_CURSOR, PGR_SET_SCRATCH,
        backend_stats,
    },
};

pub enum NoChoice {
    /// The set is empty or no member is active. With the set's `empty_since_ns` (0 when it is
    /// not known: no set yet, or members published but none active, a transient state).
    Empty(u64),
    /// Every active member is at its `maxconn`: the SYN is dropped and the client's SYN
    /// retransmission acts as the queue.
    AllAtMaxconn,
}

/// Takes one of backend `id`'s slots, when a handshake completes. With a `maxconn` the count
/// is raised first and the old value tested after (one atomic fetch-add): completions racing
/// on other CPUs can never take more slots than there are. A flow that is not established
/// after all gives it back with [`release`]; an established one when it closes.
#[inline(always)]
pub fn reserve(id: u32, maxconn: u32) -> bool {
    let Some(c) = PGR_BACKEND_CONNS.get_ptr_mut(id) else {
        return false;
    };
    let old = atomic::fetch_add(c, 1);
    if maxconn != 0 && old >= maxconn {
        atomic::sub(c, 1);
        return false;
    }
    true
}

/// Gives back a slot: of a flow that closed, or taken by [`choose`] for a flow that was not
/// created. A shut-down backend's count belongs to userspace (it sweeps the flows and zeroes
/// the count before reactivating the backend), so it is left alone.
#[inline(always)]
pub fn release(id: u32) {
    if PGR_BACKENDS
        .get(id)
        .is_some_and(|b| b.state == BACKEND_SHUTDOWN)
    {
        return;
    }
    if let Some(c) = PGR_BACKEND_CONNS.get_ptr_mut(id) {
        atomic::sub(c, 1);
    }
}

#[inline(always)]
pub fn full(id: u32) {
    if let Some(s) = backend_stats(id) {
        s.drop_maxconn += 1;
    }
}

/// Picks a backend id from the service's current set for a new handshake. No slot is taken
/// here (half-open flows hold none, so SYNs that are never completed cannot exhaust
/// `maxconn`); a member already at `maxconn` is skipped, so a full backend gets no new
/// handshakes (the client's SYN retransmission acts as the queue).
#[inline(always)]
pub fn choose(svc: &Service, key: &FlowKey) -> Result<u32, NoChoice> {
    let Some(set) = PGR_BACKEND_SETS.get_ptr(&svc.id) else {
        return Err(NoChoice::Empty(0));
    };
    // Copy the generation once: userspace may swap it while we look (a preallocated hash
    // reuses a replaced element at once). Into per-CPU scratch: 144 bytes are too many for
    // BPF's 512-byte stack.
    let Some(copy) = PGR_SET_SCRATCH.get_ptr_mut(0) else {
        return Err(NoChoice::Empty(0));
    };
    let set = unsafe {
        *copy = *set;
        &*copy
    };
    let n = set.count;
    if n == 0 || n > MAX_SET as u32 {
        return Err(NoChoice::Empty(set.empty_since_ns));
    }
    let start = match svc.balance {
        BALANCE_SOURCE_HASH => key.saddr[0].wrapping_mul(0x9e37_79b1) >> 8,
        BALANCE_LEAST_CONN => 0,
        _ => match PGR_RR_CURSOR.get_ptr_mut(svc.id) {
            Some(c) => unsafe {
                *c = (*c).wrapping_add(1);
                *c
            },
            None => 0,
        },
    } % n;
    let least = svc.balance == BALANCE_LEAST_CONN;
    let mut best = u32::MAX;
    let mut best_conns = u32::MAX;
    let mut saw_full = false;
    for i in 0..MAX_SET as u32 {
        if i >= n {
            break;
        }
        let mut idx = start + i;
        if idx >= n {
            idx -= n;
        }
        if idx >= MAX_SET as u32 {
            break;
        }
        let id = set.ids[idx as usize];
        let Some(b) = PGR_BACKENDS.get(id) else {
            continue;
        };
        if b.state != BACKEND_ACTIVE {
            continue;
        }
        let conns = match PGR_BACKEND_CONNS.get_ptr(id) {
            Some(p) => unsafe { core::ptr::read_volatile(p) },
            None => 0,
        };
        // A plain read first: a full backend is skipped without an atomic operation.
        if b.maxconn != 0 && conns >= b.maxconn {
            saw_full = true;
            full(id);
            continue;
        }
        if !least {
            return Ok(id);
        }
        if conns < best_conns {
            best = id;
            best_conns = conns;
        }
    }
    if best != u32::MAX {
        Ok(best)
    } else if saw_full {
        Err(NoChoice::AllAtMaxconn)
    } else {
        Err(NoChoice::Empty(0))
    }
}
