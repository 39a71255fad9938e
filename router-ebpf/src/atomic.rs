//! Atomic read-modify-write on map memory. `core::sync::atomic` has no RMW types for the BPF
//! target, so the intrinsics are used directly; LLVM lowers them to BPF_ATOMIC instructions.
use core::intrinsics::{AtomicOrdering, atomic_and, atomic_or, atomic_xadd, atomic_xsub};

/// Adds `v` and returns the previous value (BPF_ADD | BPF_FETCH): the maxconn slot test and
/// the taking of the slot are one instruction, so two CPUs can't both take the last slot.
#[inline(always)]
pub fn fetch_add(p: *mut u32, v: u32) -> u32 {
    unsafe { atomic_xadd::<u32, u32, { AtomicOrdering::SeqCst }>(p, v) }
}

#[inline(always)]
pub fn sub(p: *mut u32, v: u32) {
    unsafe { atomic_xsub::<u32, u32, { AtomicOrdering::Relaxed }>(p, v) };
}

/// ORs `v` in and returns the previous value (BPF_OR | BPF_FETCH; needs BPF ISA v3). 64-bit
/// only: LLVM drops the fetch flag from the 32-bit form.
#[inline(always)]
pub fn fetch_or(p: *mut u64, v: u64) -> u64 {
    unsafe { atomic_or::<u64, u64, { AtomicOrdering::SeqCst }>(p, v) }
}

/// ANDs `v` in (clears bits) and returns the previous value (BPF_AND | BPF_FETCH).
#[inline(always)]
pub fn fetch_and(p: *mut u64, v: u64) -> u64 {
    unsafe { atomic_and::<u64, u64, { AtomicOrdering::SeqCst }>(p, v) }
}
