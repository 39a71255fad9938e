//! Backend selection for a new flow: balance mode, active state and maxconn.
use router_ebpf::{
    BACKEND_ACTIVE, BACKEND_SHUTDOWN, BALANCE_LEAST_CONN, BALANCE_SOURCE_HASH, FlowKey, MAX_SET,
    Service,
};

use crate::{
    atomic,
    maps::{PGR_BACKEND_CONNS, PGR_BACKEND_SETS, PGR_BACKENDS, PGR_RR_CURSOR, backend_stats},
};

pub enum NoChoice {
    /// The set is empty or no member is active.
    Empty,
    /// Every active member is at its `maxconn`: the SYN is dropped and the client's SYN
    /// retransmission acts as the queue.
    AllAtMaxconn,
}

/// Takes one of backend `id`'s slots. With a `maxconn` the count is raised first and the old
/// value tested after (one atomic fetch-add): concurrent SYNs on other CPUs can never take
/// more slots than there are. A flow that is not created after all gives it back with
/// [`release`]; a created one when it closes.
#[inline(always)]
fn reserve(id: u32, maxconn: u32) -> bool {
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
fn full(id: u32) {
    if let Some(s) = backend_stats(id) {
        s.drop_maxconn += 1;
    }
}

/// Picks a backend id from the service's current set and takes one of its slots (see
/// [`reserve`]); the caller must [`release`] it if the flow is not created.
#[inline(always)]
pub fn choose(svc: &Service, key: &FlowKey) -> Result<u32, NoChoice> {
    let Some(set) = PGR_BACKEND_SETS.get_ptr(&svc.id) else {
        return Err(NoChoice::Empty);
    };
    // Copy the generation once: userspace may swap it while we look.
    let set = unsafe { *set };
    let n = set.count;
    if n == 0 || n > MAX_SET as u32 {
        return Err(NoChoice::Empty);
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
    let mut best_maxconn = 0;
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
            if reserve(id, b.maxconn) {
                return Ok(id);
            }
            // Another CPU took the last slot since the read.
            saw_full = true;
            full(id);
            continue;
        }
        if conns < best_conns {
            best = id;
            best_conns = conns;
            best_maxconn = b.maxconn;
        }
    }
    if best != u32::MAX {
        if reserve(best, best_maxconn) {
            return Ok(best);
        }
        // Lost the least-loaded backend's last slot to another CPU: the client's SYN
        // retransmission picks again.
        full(best);
        Err(NoChoice::AllAtMaxconn)
    } else if saw_full {
        Err(NoChoice::AllAtMaxconn)
    } else {
        Err(NoChoice::Empty)
    }
}
