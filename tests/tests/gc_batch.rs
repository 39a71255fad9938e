//! Root-only: the flow GC's batch map operations against real kernel maps (a plain hash like
//! PGR_CONNTRACK and an LRU hash like PGR_HANDSHAKE), created here with `BPF_MAP_CREATE` so the
//! test needs no eBPF object. Proves that a walk in small batches sees every entry exactly
//! once and ends on ENOENT, that a batch delete skips keys already gone, and that `test_run`
//! with the request bytes only (no output buffer, no context) returns an XDP verdict.
use std::{
    collections::BTreeMap,
    os::fd::{AsFd as _, FromRawFd as _, OwnedFd},
};

use pgrouter::dataplane::batch;

const BPF_MAP_CREATE: libc::c_long = 0;
const BPF_MAP_UPDATE_ELEM: libc::c_long = 2;
const BPF_MAP_TYPE_HASH: u32 = 1;
const BPF_MAP_TYPE_LRU_HASH: u32 = 9;

fn bpf(cmd: libc::c_long, attr: &mut [u8; 128]) -> libc::c_long {
    // SAFETY: a zero-padded `union bpf_attr` whose pointers outlive the call.
    unsafe { libc::syscall(libc::SYS_bpf, cmd, attr.as_mut_ptr(), attr.len() as u32) }
}

/// A map with u64 keys and `[u64; 9]` values (72 bytes, a `Flow`'s size).
fn create(map_type: u32, entries: u32) -> OwnedFd {
    let mut a = [0u8; 128];
    a[0..4].copy_from_slice(&map_type.to_ne_bytes());
    a[4..8].copy_from_slice(&8u32.to_ne_bytes());
    a[8..12].copy_from_slice(&72u32.to_ne_bytes());
    a[12..16].copy_from_slice(&entries.to_ne_bytes());
    let fd = bpf(BPF_MAP_CREATE, &mut a);
    assert!(
        fd >= 0,
        "BPF_MAP_CREATE: {}",
        std::io::Error::last_os_error()
    );
    // SAFETY: a fresh fd the kernel just returned, owned here only.
    unsafe { OwnedFd::from_raw_fd(fd as i32) }
}

fn insert(fd: &OwnedFd, key: u64, value: &[u64; 9]) {
    use std::os::fd::AsRawFd as _;
    let mut a = [0u8; 128];
    a[0..4].copy_from_slice(&(fd.as_raw_fd() as u32).to_ne_bytes());
    a[8..16].copy_from_slice(&(std::ptr::from_ref(&key) as u64).to_ne_bytes());
    a[16..24].copy_from_slice(&(value.as_ptr() as u64).to_ne_bytes());
    assert_eq!(
        bpf(BPF_MAP_UPDATE_ELEM, &mut a),
        0,
        "update: {}",
        std::io::Error::last_os_error()
    );
}

fn walk(fd: &OwnedFd, per_batch: usize) -> (BTreeMap<u64, [u64; 9]>, usize) {
    let mut cursor = None;
    let mut seen = BTreeMap::new();
    let mut calls = 0;
    loop {
        let b = batch::lookup_batch::<u64, [u64; 9]>(fd.as_fd(), &mut cursor, per_batch)
            .expect("lookup batch");
        calls += 1;
        for (k, v) in b.entries {
            assert!(seen.insert(k, v).is_none(), "key {k} returned twice");
        }
        if b.end {
            assert_eq!(cursor, None, "the cursor is reset for the next walk");
            return (seen, calls);
        }
        assert!(calls < 10_000, "the walk never ended");
    }
}

fn walks_every_entry_once(map_type: u32) {
    // Room to spare, so the LRU never evicts during the fill.
    let fd = create(map_type, 65_536);
    for k in 0..5000u64 {
        insert(&fd, k, &[k; 9]);
    }
    let (seen, calls) = walk(&fd, 64);
    assert_eq!(seen.len(), 5000);
    assert!(seen.iter().all(|(k, v)| v == &[*k; 9]), "values match keys");
    assert!(calls > 5000 / 200, "bounded batches: {calls} calls");

    // Delete a batch in which some keys are gone already: the rest still go.
    let keys: Vec<u64> = (0..100).chain(100_000..100_010).chain(100..200).collect();
    let deleted = batch::delete_batch(fd.as_fd(), &keys).expect("delete batch");
    assert_eq!(deleted, 200);
    let (seen, _) = walk(&fd, 1000);
    assert_eq!(seen.len(), 4800);
    assert!(!seen.contains_key(&150));
}

/// PGR_CONNTRACK is a plain hash.
#[test]
fn a_hash_is_walked_in_batches_to_its_end() {
    walks_every_entry_once(BPF_MAP_TYPE_HASH);
}

/// PGR_HANDSHAKE is an LRU hash.
#[test]
fn an_lru_hash_is_walked_in_batches_to_its_end() {
    walks_every_entry_once(BPF_MAP_TYPE_LRU_HASH);
}

/// An empty table ends the walk on the first call.
#[test]
fn an_empty_table_ends_at_once() {
    let fd = create(BPF_MAP_TYPE_HASH, 16);
    let (seen, calls) = walk(&fd, 64);
    assert!(seen.is_empty());
    assert_eq!(calls, 1);
}

/// `r0 = verdict; exit` as an XDP program, loaded with `BPF_PROG_LOAD`.
fn xdp_returning(verdict: i32) -> OwnedFd {
    let mut insns = [0u8; 16];
    insns[0] = 0xb7; // mov64 r0, imm
    insns[4..8].copy_from_slice(&verdict.to_ne_bytes());
    insns[8] = 0x95; // exit
    let license = c"GPL";
    let mut a = [0u8; 128];
    a[0..4].copy_from_slice(&6u32.to_ne_bytes()); // BPF_PROG_TYPE_XDP
    a[4..8].copy_from_slice(&2u32.to_ne_bytes());
    a[8..16].copy_from_slice(&(insns.as_ptr() as u64).to_ne_bytes());
    a[16..24].copy_from_slice(&(license.as_ptr() as u64).to_ne_bytes());
    let fd = bpf(5, &mut a); // BPF_PROG_LOAD
    assert!(
        fd >= 0,
        "BPF_PROG_LOAD: {}",
        std::io::Error::last_os_error()
    );
    // SAFETY: a fresh fd the kernel just returned, owned here only.
    unsafe { OwnedFd::from_raw_fd(fd as i32) }
}

/// The GC hands `pgrouter_gc` a 56-byte `GcRequest` as the frame and reads the verdict.
#[test]
fn test_run_returns_the_programs_verdict() {
    let req = [0u8; 56];
    for verdict in [1, 2] {
        let prog = xdp_returning(verdict);
        let v = batch::test_run(prog.as_fd(), &req).expect("test_run");
        assert_eq!(v, verdict as u32);
    }
}
