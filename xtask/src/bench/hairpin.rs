//! The hairpin floor: the cheapest XDP program that can stand where pgrouter stands.
//!
//! Through pgrouter, every packet crosses the lab's bridge twice and an edge host's veth
//! (client → edge → primary and back); directly, it crosses the bridge once. On a real network
//! that extra hop is a switch and a NIC; in the lab it is kernel code on the cores PostgreSQL
//! and pgbench share. To tell that cost apart from pgrouter's own, `cargo xtask bench` also
//! runs pgbench *directly to the primary* while both ends' neighbour entries point at edge2,
//! where this program rewrites the two MAC addresses and bounces the frame (XDP_TX): the same
//! hops, no NAT, no conntrack, no lookups. pgrouter cannot be cheaper than this floor.
//!
//! Raw `bpf(2)` with instructions built here (no object file, no dependency): the addresses are
//! immediates, so the program does nothing but compare and store. [`HairpinRun`] sets one run
//! up in the lab (program on edge2, neighbour entries) and checks edge2's stack saw nothing.
use crate::lab::{Host, host};
use std::process::Command;
use std::{
    fs,
    os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd},
};

use anyhow::{Context as _, bail};

const BPF_PROG_LOAD: libc::c_long = 5;
#[cfg(test)]
const BPF_PROG_TEST_RUN: libc::c_long = 10;
const BPF_LINK_CREATE: libc::c_long = 28;
const BPF_PROG_TYPE_XDP: u32 = 6;
const BPF_XDP: u32 = 37;
pub const XDP_FLAGS_SKB_MODE: u32 = 1 << 1;
pub const XDP_PASS: u32 = 2;
pub const XDP_TX: u32 = 3;

/// One eBPF instruction (linux/bpf.h `struct bpf_insn`, little-endian).
fn insn(code: u8, dst: u8, src: u8, off: i16, imm: i32) -> u64 {
    let o = off.to_le_bytes();
    let i = imm.to_le_bytes();
    u64::from_le_bytes([code, dst | (src << 4), o[0], o[1], i[0], i[1], i[2], i[3]])
}

// Opcodes used below (class | op | source/size).
const LDXW: u8 = 0x61; // r_dst = *(u32 *)(r_src + off)
const LDXH: u8 = 0x69; // r_dst = *(u16 *)(r_src + off)
const STB: u8 = 0x72; // *(u8 *)(r_dst + off) = imm
const MOV64_REG: u8 = 0xbf;
const MOV64_IMM: u8 = 0xb7;
const ADD64_IMM: u8 = 0x07;
const JGT_REG: u8 = 0x2d;
const JNE32_IMM: u8 = 0x56;
const JEQ32_IMM: u8 = 0x16;
const EXIT: u8 = 0x95;

/// The program: an IPv4 frame whose destination address is one of `routes` leaves again
/// (XDP_TX) with source MAC `me` and the route's MAC as destination; everything else passes.
pub fn program(me: [u8; 6], routes: &[([u8; 4], [u8; 6])]) -> Vec<u64> {
    // Eth (14) + the IPv4 header up to and including the destination address (20).
    const NEED: i32 = 34;
    let mut p = vec![
        insn(LDXW, 2, 1, 0, 0),         // r2 = ctx->data
        insn(LDXW, 3, 1, 4, 0),         // r3 = ctx->data_end
        insn(MOV64_REG, 4, 2, 0, 0),    // r4 = r2
        insn(ADD64_IMM, 4, 0, 0, NEED), // r4 += 34
    ];
    let checks = 4 + routes.len(); // instructions from here up to the PASS label
    // Jump offsets count from the next instruction.
    p.push(insn(JGT_REG, 4, 3, (checks - 1) as i16, 0)); // too short → PASS
    p.push(insn(LDXH, 5, 2, 12, 0)); // ethertype as loaded little-endian
    p.push(insn(
        JNE32_IMM,
        5,
        0,
        (checks - 3) as i16,
        i32::from(u16::from_le_bytes([0x08, 0x00])),
    ));
    p.push(insn(LDXW, 5, 2, 30, 0)); // IPv4 destination address
    // The PASS block is two instructions; each route block is 12 stores + 2.
    for (i, (ip, _)) in routes.iter().enumerate() {
        let to_block = (routes.len() - 1 - i) + 2 + i * 14;
        p.push(insn(
            JEQ32_IMM,
            5,
            0,
            to_block as i16,
            i32::from_le_bytes(*ip),
        ));
    }
    p.push(insn(MOV64_IMM, 0, 0, 0, XDP_PASS as i32));
    p.push(insn(EXIT, 0, 0, 0, 0));
    for (_, mac) in routes {
        for (k, b) in mac.iter().chain(me.iter()).enumerate() {
            p.push(insn(STB, 2, 0, k as i16, i32::from(*b)));
        }
        p.push(insn(MOV64_IMM, 0, 0, 0, XDP_TX as i32));
        p.push(insn(EXIT, 0, 0, 0, 0));
    }
    p
}

/// `bpf(2)` with a zero-padded attribute block.
fn bpf(cmd: libc::c_long, attr: &mut [u8; 128]) -> std::io::Result<i64> {
    // SAFETY: the attr layouts used here are the documented `union bpf_attr` members; the
    // pointers inside stay valid for the call.
    let r = unsafe { libc::syscall(libc::SYS_bpf, cmd, attr.as_mut_ptr(), attr.len() as u32) };
    if r < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

/// Loads `insns` as an XDP program.
pub fn load(name: &str, insns: &[u64]) -> anyhow::Result<OwnedFd> {
    let license = c"GPL";
    let mut log = vec![0u8; 64 * 1024];
    let mut attr = [0u8; 128];
    attr[0..4].copy_from_slice(&BPF_PROG_TYPE_XDP.to_ne_bytes());
    attr[4..8].copy_from_slice(&(insns.len() as u32).to_ne_bytes());
    attr[8..16].copy_from_slice(&(insns.as_ptr() as u64).to_ne_bytes());
    attr[16..24].copy_from_slice(&(license.as_ptr() as u64).to_ne_bytes());
    attr[24..28].copy_from_slice(&1u32.to_ne_bytes()); // log_level
    attr[28..32].copy_from_slice(&(log.len() as u32).to_ne_bytes());
    attr[32..40].copy_from_slice(&(log.as_mut_ptr() as u64).to_ne_bytes());
    let n = name.len().min(15);
    attr[48..48 + n].copy_from_slice(&name.as_bytes()[..n]);
    match bpf(BPF_PROG_LOAD, &mut attr) {
        // SAFETY: a new fd returned by the kernel, owned from here on.
        Ok(fd) => Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) }),
        Err(e) => {
            let end = log.iter().position(|b| *b == 0).unwrap_or(log.len());
            bail!(
                "BPF_PROG_LOAD {name}: {e}\n{}",
                String::from_utf8_lossy(&log[..end])
            )
        }
    }
}

/// Attaches `prog` to `ifname` in network namespace `netns` (None: ours) with an XDP link,
/// detached when the returned fd closes. The namespace is entered on a short-lived thread.
pub fn attach(
    prog: &OwnedFd,
    netns: Option<&str>,
    ifname: &str,
    flags: u32,
) -> anyhow::Result<OwnedFd> {
    let prog = prog.as_raw_fd();
    let netns = netns.map(|n| format!("/run/netns/{n}"));
    let ifname = std::ffi::CString::new(ifname)?;
    std::thread::scope(|s| {
        s.spawn(|| -> anyhow::Result<OwnedFd> {
            if let Some(path) = &netns {
                let f = fs::File::open(path).with_context(|| format!("open {path}"))?;
                // SAFETY: setns on this thread only, with an fd we own.
                if unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
                    bail!("setns {path}: {}", std::io::Error::last_os_error());
                }
            }
            // SAFETY: a NUL-terminated name.
            let ifindex = unsafe { libc::if_nametoindex(ifname.as_ptr()) };
            anyhow::ensure!(ifindex != 0, "no interface {ifname:?} in {netns:?}");
            let mut attr = [0u8; 128];
            attr[0..4].copy_from_slice(&(prog as u32).to_ne_bytes());
            attr[4..8].copy_from_slice(&ifindex.to_ne_bytes());
            attr[8..12].copy_from_slice(&BPF_XDP.to_ne_bytes());
            attr[12..16].copy_from_slice(&flags.to_ne_bytes());
            let link = bpf(BPF_LINK_CREATE, &mut attr)
                .with_context(|| format!("BPF_LINK_CREATE XDP on {ifname:?} in {netns:?}"))?;
            // SAFETY: a new fd returned by the kernel, owned from here on.
            Ok(unsafe { OwnedFd::from_raw_fd(link as i32) })
        })
        .join()
        .map_err(|_| anyhow::anyhow!("attach thread panicked"))?
    })
}

/// The hairpin floor for one run (see `hairpin.rs`): the program on edge2's eth0 (generic
/// XDP) and the client's and the leader's neighbour entries for each other pointing at
/// edge2. Undone on drop. Checked: edge2's own IP stack must not see the traffic.
pub(super) struct HairpinRun {
    _link: std::os::fd::OwnedFd,
    _prog: std::os::fd::OwnedFd,
    /// (namespace, address) neighbour entries to remove again.
    neigh: Vec<(String, String)>,
    in_receives: u64,
}

/// A counter of a namespace's `/proc/net/snmp` or `/proc/net/netstat` (`file`), e.g.
/// (`snmp`, `Ip:`, `InReceives`) or (`netstat`, `TcpExt:`, `TCPSynRetrans`).
pub(super) fn proc_net_counter(
    ns: &str,
    file: &str,
    prefix: &str,
    name: &str,
) -> anyhow::Result<u64> {
    let path = format!("/proc/net/{file}");
    let out = Command::new("ip")
        .args(["netns", "exec", ns, "cat", &path])
        .output()
        .with_context(|| format!("reading {ns}'s {path}"))?;
    let text = String::from_utf8_lossy(&out.stdout);
    let mut rows = text.lines().filter(|l| l.starts_with(prefix));
    let (Some(names), Some(values)) = (rows.next(), rows.next()) else {
        bail!("no {prefix} lines in {ns}'s {path}");
    };
    names
        .split_whitespace()
        .zip(values.split_whitespace())
        .find(|(n, _)| *n == name)
        .and_then(|(_, v)| v.parse().ok())
        .with_context(|| format!("no {prefix} {name} in {ns}'s {path}"))
}

/// `Ip: InReceives` of edge2's namespace: packets its IP stack took in.
fn edge2_in_receives() -> anyhow::Result<u64> {
    proc_net_counter("pgrlab-edge2", "snmp", "Ip:", "InReceives")
}

impl HairpinRun {
    pub(super) fn start(leader: &str) -> anyhow::Result<Self> {
        let edge = host("edge2")?;
        let client = host("client")?;
        let leader = host(leader)?;
        let ip = |h: Host| -> anyhow::Result<[u8; 4]> {
            Ok(h.addr.parse::<std::net::Ipv4Addr>()?.octets())
        };
        let routes = [
            (ip(leader)?, parse_mac(&leader.mac())?),
            (ip(client)?, parse_mac(&client.mac())?),
        ];
        let prog = load("bench_hairpin", &program(parse_mac(&edge.mac())?, &routes))?;
        let link = attach(&prog, Some(&edge.ns()), "eth0", XDP_FLAGS_SKB_MODE)?;
        let mut run = HairpinRun {
            _link: link,
            _prog: prog,
            neigh: Vec::new(),
            in_receives: edge2_in_receives()?,
        };
        for (at, to) in [(client, leader), (leader, client)] {
            run.neigh.push((at.ns(), to.addr.to_string()));
            let st = Command::new("ip")
                .args(["-n", &at.ns(), "neigh", "replace", to.addr, "lladdr"])
                .arg(edge.mac())
                .args(["nud", "permanent", "dev", "eth0"])
                .status()?;
            anyhow::ensure!(st.success(), "ip -n {} neigh replace {}", at.ns(), to.addr);
        }
        Ok(run)
    }

    /// Fails when edge2's IP stack took in a share of the run's packets: then the kernel,
    /// not the hairpin, carried them and the row would not be the floor.
    pub(super) fn check(&self, txns: u64) -> anyhow::Result<()> {
        let seen = edge2_in_receives()?.saturating_sub(self.in_receives);
        // Carried by the kernel, a transaction is at least two packets (ten or more with
        // `-C`); the allowance is for edge2's own traffic (HAProxy's checks).
        anyhow::ensure!(
            seen < 200 + txns / 2,
            "hairpin run: edge2's IP stack took in {seen} packets for {txns} transactions"
        );
        Ok(())
    }
}

impl Drop for HairpinRun {
    fn drop(&mut self) {
        for (ns, addr) in &self.neigh {
            let _ = Command::new("ip")
                .args(["-n", ns, "neigh", "del", addr, "dev", "eth0"])
                .status();
        }
    }
}

#[cfg(test)]
/// One BPF_PROG_TEST_RUN: the verdict and the frame as the program left it.
pub fn test_run(prog: &OwnedFd, frame: &[u8]) -> anyhow::Result<(u32, Vec<u8>)> {
    let mut out = vec![0u8; frame.len() + 256];
    let mut attr = [0u8; 128];
    attr[0..4].copy_from_slice(&(prog.as_raw_fd() as u32).to_ne_bytes());
    attr[8..12].copy_from_slice(&(frame.len() as u32).to_ne_bytes());
    attr[12..16].copy_from_slice(&(out.len() as u32).to_ne_bytes());
    attr[16..24].copy_from_slice(&(frame.as_ptr() as u64).to_ne_bytes());
    attr[24..32].copy_from_slice(&(out.as_mut_ptr() as u64).to_ne_bytes());
    attr[32..36].copy_from_slice(&1u32.to_ne_bytes()); // repeat
    bpf(BPF_PROG_TEST_RUN, &mut attr).context("BPF_PROG_TEST_RUN")?;
    let verdict = u32::from_ne_bytes([attr[4], attr[5], attr[6], attr[7]]);
    let len = u32::from_ne_bytes([attr[12], attr[13], attr[14], attr[15]]) as usize;
    out.truncate(len);
    Ok((verdict, out))
}

/// Parses `02:00:c6:12:00:0b`.
pub fn parse_mac(s: &str) -> anyhow::Result<[u8; 6]> {
    let v: Vec<u8> = s
        .split(':')
        .map(|h| u8::from_str_radix(h, 16))
        .collect::<Result<_, _>>()
        .with_context(|| format!("MAC {s:?}"))?;
    v.try_into()
        .map_err(|_| anyhow::anyhow!("MAC {s:?}: six octets expected"))
}

#[cfg(test)]
mod tests {
    use super::*;

    const ME: [u8; 6] = [2, 0, 0xc6, 0x12, 0, 0x16];
    const PG1: [u8; 6] = [2, 0, 0xc6, 0x12, 0, 0x0b];
    const CLIENT: [u8; 6] = [2, 0, 0xc6, 0x12, 0, 0x1e];

    fn frame(dst_ip: [u8; 4], ethertype: u16) -> Vec<u8> {
        let mut f = Vec::new();
        f.extend_from_slice(&ME); // addressed to the edge host
        f.extend_from_slice(&[2, 0, 0xc6, 0x12, 0, 0x99]);
        f.extend_from_slice(&ethertype.to_be_bytes());
        let mut ip = [0u8; 20];
        ip[0] = 0x45;
        ip[2..4].copy_from_slice(&40u16.to_be_bytes());
        ip[8] = 64;
        ip[9] = 6;
        ip[12..16].copy_from_slice(&[198, 18, 0, 30]);
        ip[16..20].copy_from_slice(&dst_ip);
        f.extend_from_slice(&ip);
        f.extend_from_slice(&[0u8; 20]); // a TCP header's room; untouched
        f
    }

    #[test]
    fn jump_offsets_land_on_their_blocks() {
        let routes = [([198, 18, 0, 11], PG1), ([198, 18, 0, 30], CLIENT)];
        let p = program(ME, &routes);
        assert_eq!(p.len(), 8 + 2 + 2 + 2 * 14);
        let off = |i: usize| i16::from_le_bytes([(p[i] >> 16) as u8, (p[i] >> 24) as u8]);
        // PASS label = first instruction after the route comparisons.
        let pass = 8 + routes.len();
        assert_eq!(4 + 1 + off(4) as usize, pass);
        assert_eq!(6 + 1 + off(6) as usize, pass);
        for i in 0..routes.len() {
            let block = pass + 2 + 14 * i;
            assert_eq!(8 + i + 1 + off(8 + i) as usize, block, "route {i}");
            // The block's first store writes the route MAC's first octet at offset 0.
            assert_eq!(p[block] & 0xff, u64::from(STB));
        }
    }

    /// Needs root (BPF_PROG_LOAD); CI runs as root.
    #[test]
    fn kernel_runs_it_as_intended() {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            eprintln!("skipped: needs root for BPF_PROG_LOAD");
            return;
        }
        let routes = [([198, 18, 0, 11], PG1), ([198, 18, 0, 30], CLIENT)];
        let prog = load("test_hairpin", &program(ME, &routes)).unwrap();
        for (ip, mac) in routes {
            let f = frame(ip, 0x0800);
            let (verdict, out) = test_run(&prog, &f).unwrap();
            assert_eq!(verdict, XDP_TX);
            assert_eq!(&out[0..6], &mac);
            assert_eq!(&out[6..12], &ME);
            assert_eq!(&out[12..], &f[12..], "only the MACs change");
        }
        for f in [
            frame([198, 18, 0, 12], 0x0800),
            frame([198, 18, 0, 11], 0x86dd),
            frame([198, 18, 0, 11], 0x0800)[..33].to_vec(),
        ] {
            let (verdict, out) = test_run(&prog, &f).unwrap();
            assert_eq!(verdict, XDP_PASS);
            assert_eq!(out, f);
        }
    }

    #[test]
    fn macs_parse() {
        assert_eq!(parse_mac("02:00:c6:12:00:0b").unwrap(), PG1);
        assert!(parse_mac("02:00:c6:12:00").is_err());
        assert!(parse_mac("02:00:c6:12:00:zz").is_err());
    }
}
