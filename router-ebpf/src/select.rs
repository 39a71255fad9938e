//! Backend selection for a new flow: balance mode, active state and maxconn.
use router_ebpf::{
    BACKEND_ACTIVE, BALANCE_LEAST_CONN, BALANCE_SOURCE_HASH, FlowKey, MAX_SET, Service,
};

use crate::maps::{
    PGR_BACKEND_CONNS, PGR_BACKEND_SETS, PGR_BACKENDS, PGR_RR_CURSOR, backend_stats,
};

pub enum NoChoice {
    /// The set is empty or no member is active.
    Empty,
    /// Every active member is at its `maxconn`: the SYN is dropped and the client's SYN
    /// retransmission acts as the queue.
    AllAtMaxconn,
}

/// Picks a backend id from the service's current set.
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
        if b.maxconn != 0 && conns >= b.maxconn {
            saw_full = true;
            if let Some(s) = backend_stats(id) {
                s.drop_maxconn += 1;
            }
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
        Err(NoChoice::Empty)
    }
}
