//! `BPF_PROG_TEST_RUN` of a loaded XDP program on one frame, by fd: from any thread (aya's
//! wrapper needs `&mut` on the program) and with the `xdp_md` context the data path needs
//! (its ingress interface).
use std::{
    os::fd::{AsRawFd as _, BorrowedFd},
    time::Duration,
};

/// The `bpf(2)` command number of `BPF_PROG_TEST_RUN` (`enum bpf_cmd` in `linux/bpf.h`; libc
/// does not name it).
const BPF_PROG_TEST_RUN: libc::c_long = 10;

/// Room beyond the input frame for a program that grows it (`bpf_xdp_adjust_head`/`_tail`).
const HEADROOM: usize = 256;

/// What one test run returned.
#[derive(Clone, Debug)]
pub struct Ran {
    /// The program's verdict (`XDP_PASS`, `XDP_TX`, …).
    pub verdict: u32,
    /// The frame as the program left it.
    pub frame: Vec<u8>,
    /// The kernel's mean time per repetition.
    pub duration: Duration,
}

/// `struct xdp_md` as test-run context: data = 0, data_end = frame length (the kernel
/// requires it), data_meta = 0, ingress_ifindex, rx_queue_index = 0, egress_ifindex = 0.
fn xdp_md(len: usize, ifindex: u32) -> [u8; 24] {
    let mut ctx = [0u8; 24];
    ctx[4..8].copy_from_slice(&(len as u32).to_ne_bytes());
    ctx[12..16].copy_from_slice(&ifindex.to_ne_bytes());
    ctx
}

/// Runs `prog` `repeat` times (at least once) on `frame` as if it arrived on `ifindex`.
pub fn test_run(
    prog: BorrowedFd<'_>,
    frame: &[u8],
    ifindex: u32,
    repeat: u32,
) -> std::io::Result<Ran> {
    let ctx = xdp_md(frame.len(), ifindex);
    let mut out = vec![0u8; frame.len() + HEADROOM];
    // `union bpf_attr`'s `test` member, zero-padded to the size the kernel checks.
    let mut attr = [0u8; 128];
    attr[0..4].copy_from_slice(&(prog.as_raw_fd() as u32).to_ne_bytes()); // prog_fd
    attr[8..12].copy_from_slice(&(frame.len() as u32).to_ne_bytes()); // data_size_in
    attr[12..16].copy_from_slice(&(out.len() as u32).to_ne_bytes()); // data_size_out
    attr[16..24].copy_from_slice(&(frame.as_ptr() as u64).to_ne_bytes()); // data_in
    attr[24..32].copy_from_slice(&(out.as_mut_ptr() as u64).to_ne_bytes()); // data_out
    attr[32..36].copy_from_slice(&repeat.max(1).to_ne_bytes()); // repeat
    attr[40..44].copy_from_slice(&(ctx.len() as u32).to_ne_bytes()); // ctx_size_in
    attr[48..56].copy_from_slice(&(ctx.as_ptr() as u64).to_ne_bytes()); // ctx_in
    // SAFETY: the kernel reads and writes only the buffers named in `attr`, which outlive
    // the call.
    let r = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_PROG_TEST_RUN,
            attr.as_mut_ptr(),
            attr.len() as u32,
        )
    };
    if r != 0 {
        return Err(std::io::Error::last_os_error());
    }
    let word = |at: usize| u32::from_ne_bytes([attr[at], attr[at + 1], attr[at + 2], attr[at + 3]]);
    // data_size_out is in/out: the room given, then the frame's length.
    out.truncate(word(12) as usize);
    Ok(Ran {
        verdict: word(4),
        frame: out,
        duration: Duration::from_nanos(u64::from(word(36))),
    })
}
