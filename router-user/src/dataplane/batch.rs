//! Batch map operations and `BPF_PROG_TEST_RUN` by file descriptor, straight through the
//! `bpf(2)` syscall.
//!
//! Why by hand: aya 0.14 has no batch API (`BPF_MAP_LOOKUP_BATCH`, `BPF_MAP_DELETE_BATCH`),
//! and its `TestRun` needs the `&Xdp` handle while the garbage collector holds only the
//! program's fd (`Datapath::gc_program_fd`). One batch call returns thousands of entries,
//! where a `get_next_key` + lookup walk costs two syscalls per entry: the difference between
//! a bounded GC tick and a full-table walk that takes seconds at a million flows.
//!
//! The attribute layouts (`union bpf_attr`'s `batch` and `test` members) are encoded by pure
//! functions, unit-tested here; the syscalls themselves are covered by the root tests.
use std::{
    io,
    os::fd::{AsRawFd as _, BorrowedFd},
};

use aya::Pod;

/// `enum bpf_cmd` values (include/uapi/linux/bpf.h), stable kernel ABI.
const BPF_PROG_TEST_RUN: libc::c_long = 10;
const BPF_MAP_LOOKUP_BATCH: libc::c_long = 24;
const BPF_MAP_DELETE_BATCH: libc::c_long = 27;

/// `sizeof(union bpf_attr)` up to the last field we set, rounded up: the kernel accepts a
/// shorter attr as long as every byte past what it knows is zero.
const ATTR_LEN: usize = 80;

/// Smallest buffer a lookup batch uses: a hash batch returns whole buckets, and fails with
/// `ENOSPC` when the first bucket has more entries than fit (rare: buckets hold a handful).
const MIN_BATCH: usize = 64;
/// Largest buffer an `ENOSPC` retry grows to before giving up.
const MAX_BATCH: usize = 1 << 20;

/// Where a hash-map batch walk resumes: the kernel's bucket index (`u32` for hash maps),
/// `None` at the start of a walk.
pub type Cursor = Option<u32>;

/// One batch of a walk.
#[derive(Debug)]
pub struct Batch<K, V> {
    pub entries: Vec<(K, V)>,
    /// The walk reached the end of the table (`ENOENT`); `entries` are its last ones and the
    /// cursor was reset, so the next call starts a new walk.
    pub end: bool,
}

/// `union bpf_attr`'s `batch` member: in_batch, out_batch, keys, values (pointers), count,
/// map_fd, elem_flags, flags.
fn batch_attr(
    map_fd: u32,
    in_batch: u64,
    out_batch: u64,
    keys: u64,
    values: u64,
    count: u32,
) -> [u8; ATTR_LEN] {
    let mut a = [0u8; ATTR_LEN];
    a[0..8].copy_from_slice(&in_batch.to_ne_bytes());
    a[8..16].copy_from_slice(&out_batch.to_ne_bytes());
    a[16..24].copy_from_slice(&keys.to_ne_bytes());
    a[24..32].copy_from_slice(&values.to_ne_bytes());
    a[32..36].copy_from_slice(&count.to_ne_bytes());
    a[36..40].copy_from_slice(&map_fd.to_ne_bytes());
    a
}

/// The `count` field after the call: how many elements the kernel filled (or deleted).
fn batch_count(a: &[u8; ATTR_LEN]) -> usize {
    u32::from_ne_bytes([a[32], a[33], a[34], a[35]]) as usize
}

/// What a lookup-batch return means.
#[derive(Debug, PartialEq, Eq)]
enum Outcome {
    /// `n` entries; more follow from the out cursor.
    More(usize),
    /// `n` entries, and the walk is complete.
    End(usize),
    /// The first bucket did not fit: retry with a bigger buffer.
    Grow,
}

/// Reads a lookup-batch result: `ENOENT` is the end of the table (possibly with entries,
/// the last ones), `ENOSPC` with nothing copied asks for a bigger buffer.
fn outcome(rc: libc::c_long, errno: i32, count: usize) -> io::Result<Outcome> {
    match (rc, errno) {
        (0, _) => Ok(Outcome::More(count)),
        (_, libc::ENOENT) => Ok(Outcome::End(count)),
        (_, libc::ENOSPC) if count == 0 => Ok(Outcome::Grow),
        (_, libc::ENOSPC) => Ok(Outcome::More(count)),
        (_, libc::EINVAL) => Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "BPF_MAP_LOOKUP_BATCH rejected (EINVAL): needs Linux ≥ 5.6 and a hash map",
        )),
        (_, e) => Err(io::Error::from_raw_os_error(e)),
    }
}

fn bpf(cmd: libc::c_long, attr: &mut [u8; ATTR_LEN]) -> (libc::c_long, i32) {
    // SAFETY: `attr` is a zero-padded `union bpf_attr` whose pointers reference buffers the
    // caller keeps alive and sized for the counts it passes.
    let rc = unsafe { libc::syscall(libc::SYS_bpf, cmd, attr.as_mut_ptr(), ATTR_LEN as u32) };
    let errno = if rc < 0 {
        io::Error::last_os_error().raw_os_error().unwrap_or(0)
    } else {
        0
    };
    (rc, errno)
}

/// Reads up to `max` entries of a hash map from `cursor` with one `BPF_MAP_LOOKUP_BATCH`
/// (more only if a single bucket is larger). The walk visits buckets in order; entries
/// inserted or deleted meanwhile may be seen once, twice or not at all, as with any walk of
/// a live table.
pub fn lookup_batch<K: Pod, V: Pod>(
    fd: BorrowedFd<'_>,
    cursor: &mut Cursor,
    max: usize,
) -> io::Result<Batch<K, V>> {
    let mut n = max.max(MIN_BATCH);
    loop {
        // Left uninitialised: the kernel writes the first `count` of each, and a big batch
        // buffer on a small table then costs no memset and no page faults.
        let mut keys: Vec<K> = Vec::with_capacity(n);
        let mut values: Vec<V> = Vec::with_capacity(n);
        let in_batch = *cursor;
        let mut out_batch = 0u32;
        let mut attr = batch_attr(
            fd.as_raw_fd() as u32,
            in_batch
                .as_ref()
                .map_or(0, |c| std::ptr::from_ref(c) as u64),
            std::ptr::from_mut(&mut out_batch) as u64,
            keys.as_mut_ptr() as u64,
            values.as_mut_ptr() as u64,
            n as u32,
        );
        let (rc, errno) = bpf(BPF_MAP_LOOKUP_BATCH, &mut attr);
        // The hash batch writes `count = 0` before anything that can return ENOENT or
        // ENOSPC (kernel/bpf/hashtab.c), so `count` is what it filled on those returns too.
        let got = batch_count(&attr).min(n);
        let (count, end) = match outcome(rc, errno, got)? {
            Outcome::Grow if n < MAX_BATCH => {
                n *= 4;
                continue;
            }
            Outcome::Grow => return Err(io::Error::from_raw_os_error(libc::ENOSPC)),
            Outcome::More(c) => (c, false),
            Outcome::End(c) => (c, true),
        };
        *cursor = if end { None } else { Some(out_batch) };
        // SAFETY: the kernel filled `count` ≤ capacity keys and values (`batch_count` is
        // clamped to `n`), and `Pod` types are valid for any bytes it wrote.
        unsafe {
            keys.set_len(count);
            values.set_len(count);
        }
        return Ok(Batch {
            entries: keys.into_iter().zip(values).collect(),
            end,
        });
    }
}

/// Deletes `keys` with `BPF_MAP_DELETE_BATCH`; a key already gone (deleted by the kernel or
/// evicted meanwhile) is skipped, not an error. Returns how many were deleted.
pub fn delete_batch<K: Pod>(fd: BorrowedFd<'_>, keys: &[K]) -> io::Result<usize> {
    let mut rest = keys;
    let mut deleted = 0;
    while !rest.is_empty() {
        let mut attr = batch_attr(
            fd.as_raw_fd() as u32,
            0,
            0,
            rest.as_ptr() as u64,
            0,
            rest.len() as u32,
        );
        let (rc, errno) = bpf(BPF_MAP_DELETE_BATCH, &mut attr);
        let done = batch_count(&attr).min(rest.len());
        deleted += done;
        match (rc, errno) {
            (0, _) => break,
            // The key at `done` is gone already: skip it and go on.
            (_, libc::ENOENT) => rest = rest.get(done + 1..).unwrap_or_default(),
            (_, e) => return Err(io::Error::from_raw_os_error(e)),
        }
    }
    Ok(deleted)
}

/// `union bpf_attr`'s `test` member with `data_in` only and `repeat = 1`.
fn test_run_attr(prog_fd: u32, data: u64, len: u32) -> [u8; ATTR_LEN] {
    let mut a = [0u8; ATTR_LEN];
    a[0..4].copy_from_slice(&prog_fd.to_ne_bytes());
    a[8..12].copy_from_slice(&len.to_ne_bytes()); // data_size_in
    a[16..24].copy_from_slice(&data.to_ne_bytes()); // data_in
    a[32..36].copy_from_slice(&1u32.to_ne_bytes()); // repeat
    a
}

/// Runs a loaded program once over `data` (`BPF_PROG_TEST_RUN`, no output buffer) and
/// returns its verdict. For XDP, `data` must be at least an Ethernet header (14 bytes).
pub fn test_run(prog_fd: BorrowedFd<'_>, data: &[u8]) -> io::Result<u32> {
    let mut attr = test_run_attr(
        prog_fd.as_raw_fd() as u32,
        data.as_ptr() as u64,
        data.len() as u32,
    );
    let (rc, errno) = bpf(BPF_PROG_TEST_RUN, &mut attr);
    if rc < 0 {
        return Err(io::Error::from_raw_os_error(errno));
    }
    Ok(u32::from_ne_bytes([attr[4], attr[5], attr[6], attr[7]]))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The batch fields sit where `union bpf_attr` has them: four pointers, then count and
    /// map_fd, flags zero.
    #[test]
    fn batch_attr_matches_the_kernel_layout() {
        let a = batch_attr(7, 0x1000, 0x2000, 0x3000, 0x4000, 512);
        assert_eq!(a[0..8], 0x1000u64.to_ne_bytes());
        assert_eq!(a[8..16], 0x2000u64.to_ne_bytes());
        assert_eq!(a[16..24], 0x3000u64.to_ne_bytes());
        assert_eq!(a[24..32], 0x4000u64.to_ne_bytes());
        assert_eq!(batch_count(&a), 512);
        assert_eq!(a[36..40], 7u32.to_ne_bytes());
        assert!(a[40..].iter().all(|b| *b == 0), "elem_flags and flags zero");
    }

    /// The test member: prog_fd, data_size_in, data_in and repeat = 1; no output buffers.
    #[test]
    fn test_run_attr_matches_the_kernel_layout() {
        let a = test_run_attr(9, 0xabcd, 56);
        assert_eq!(a[0..4], 9u32.to_ne_bytes());
        assert_eq!(a[8..12], 56u32.to_ne_bytes());
        assert_eq!(a[16..24], 0xabcdu64.to_ne_bytes());
        assert_eq!(a[32..36], 1u32.to_ne_bytes());
        assert!(a[24..32].iter().all(|b| *b == 0), "no data_out");
        assert!(a[40..].iter().all(|b| *b == 0), "no ctx, flags, cpu");
    }

    /// ENOENT is the end of the walk and still carries the last entries.
    #[test]
    fn enoent_ends_the_walk_with_its_last_entries() {
        assert_eq!(outcome(-1, libc::ENOENT, 3).ok(), Some(Outcome::End(3)));
        assert_eq!(outcome(-1, libc::ENOENT, 0).ok(), Some(Outcome::End(0)));
        assert_eq!(outcome(0, 0, 5).ok(), Some(Outcome::More(5)));
    }

    /// A first bucket larger than the buffer asks for a bigger one; other errors are errors.
    #[test]
    fn enospc_with_nothing_copied_grows_the_buffer() {
        assert_eq!(outcome(-1, libc::ENOSPC, 0).ok(), Some(Outcome::Grow));
        assert_eq!(outcome(-1, libc::ENOSPC, 4).ok(), Some(Outcome::More(4)));
        assert!(outcome(-1, libc::EPERM, 0).is_err());
        let e = outcome(-1, libc::EINVAL, 0).err().map(|e| e.to_string());
        assert!(e.is_some_and(|e| e.contains("5.6")));
    }
}
