//! The controller's hands in the kernel: `pgrouter_gc` is never attached; the controller runs
//! it with `BPF_PROG_TEST_RUN`, the frame being one `GcRequest`. Ending a flow and adjusting
//! a slot count need atomic operations on map memory, which userspace does not have, and the
//! same `flow::end` as the packet path, so a slot is given back exactly once whoever ends it.
use aya_ebpf::{bindings::xdp_action, programs::XdpContext};
use router_ebpf::{
    GC_F_FORCE, GC_OP_ADJUST, GC_OP_REAP, GC_OP_SYNC_INSTALL, GC_OP_SYNC_REMOVE, GcRequest,
    SyncRequest,
};

use crate::{
    atomic, flow,
    maps::{PGR_BACKEND_CONNS, PGR_CONNTRACK, now, timeouts},
    parse::ptr_at,
    sync,
};

/// Runs one request. Verdicts: `XDP_DROP` done (reaped, adjusted), `XDP_PASS` nothing to do
/// (alive, or gone already), `XDP_ABORTED` a malformed request.
#[inline(always)]
pub fn run(ctx: &XdpContext) -> u32 {
    let Some(op) = ptr_at::<u32>(ctx, 0) else {
        return xdp_action::XDP_ABORTED;
    };
    match unsafe { *op } {
        GC_OP_SYNC_INSTALL | GC_OP_SYNC_REMOVE => return sync_op(ctx),
        _ => {}
    }
    let Some(req) = ptr_at::<GcRequest>(ctx, 0) else {
        return xdp_action::XDP_ABORTED;
    };
    let req = unsafe { *req };
    match req.op {
        GC_OP_REAP => {
            let Some(entry) = PGR_CONNTRACK.get_ptr_mut(&req.key) else {
                return xdp_action::XDP_PASS;
            };
            let e = unsafe { *entry };
            // The controller judged from a copy; the kernel's clock and the entry as it is now
            // decide (a packet may have come since).
            if req.flags & GC_F_FORCE == 0 && !flow::entry_expired(&req.key, &e, now(), &timeouts())
            {
                return xdp_action::XDP_PASS;
            }
            flow::end(&req.key, entry);
            xdp_action::XDP_DROP
        }
        GC_OP_ADJUST => {
            let Some(c) = PGR_BACKEND_CONNS.get_ptr_mut(req.backend_id) else {
                return xdp_action::XDP_ABORTED;
            };
            atomic::fetch_add(c, req.delta as u32);
            xdp_action::XDP_DROP
        }
        _ => xdp_action::XDP_ABORTED,
    }
}

/// A sync request (install or remove a peer's flow), its own frame size. Inlined: the
/// context's packet pointers keep their type only within one function.
#[inline(always)]
fn sync_op(ctx: &XdpContext) -> u32 {
    let Some(req) = ptr_at::<SyncRequest>(ctx, 0) else {
        return xdp_action::XDP_ABORTED;
    };
    let req = unsafe { &*req };
    match req.op {
        GC_OP_SYNC_INSTALL => sync::install(req),
        _ => sync::remove(req),
    }
}
