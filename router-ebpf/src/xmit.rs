//! Sending a rewritten packet: next hop by `bpf_fib_lookup`, then XDP_TX, redirect, or pass.
use aya_ebpf::{
    bindings::{
        BPF_FIB_LKUP_RET_NO_NEIGH, BPF_FIB_LKUP_RET_SUCCESS, bpf_fib_lookup as FibParams,
        xdp_action,
    },
    helpers::bpf_fib_lookup,
    programs::XdpContext,
};
use router_ebpf::counter;

use crate::{
    maps::{PGR_IFACES, count},
    parse::{Headers, get32},
};

const AF_INET: u8 = 2;

/// Same interface → XDP_TX; another interface in `PGR_IFACES` → redirect. When the neighbour
/// is not resolved yet the rewritten packet is passed so the kernel resolves and forwards it
/// (never a silent drop); the controller keeps backends' neighbour entries warm.
#[inline(always)]
pub fn send(ctx: &XdpContext, h: &Headers) -> u32 {
    let mut p: FibParams = unsafe { core::mem::zeroed() };
    let ingress = ctx.ingress_ifindex() as u32;
    unsafe {
        p.family = AF_INET;
        p.l4_protocol = (*h.ip).proto;
        p.sport = (*h.tcp).sport;
        p.dport = (*h.tcp).dport;
        p.__bindgen_anon_1.tot_len = u16::from_be((*h.ip).tot_len);
        p.__bindgen_anon_2.tos = (*h.ip).tos;
        p.__bindgen_anon_3.ipv4_src = get32(&(*h.ip).saddr);
        p.__bindgen_anon_4.ipv4_dst = get32(&(*h.ip).daddr);
        p.ifindex = ingress;
    }
    let rc = unsafe { bpf_fib_lookup(ctx.ctx.cast(), &mut p, size_of::<FibParams>() as i32, 0) };
    if rc == i64::from(BPF_FIB_LKUP_RET_SUCCESS) {
        unsafe {
            (*h.eth).dst = p.dmac;
            (*h.eth).src = p.smac;
        }
        if p.ifindex == ingress {
            count(counter::TX);
            return xdp_action::XDP_TX;
        }
        return match PGR_IFACES.redirect(p.ifindex, 0) {
            Ok(action) => {
                count(counter::REDIRECT);
                action
            }
            Err(_) => {
                count(counter::PASS_NO_IFACE);
                xdp_action::XDP_PASS
            }
        };
    }
    if rc == i64::from(BPF_FIB_LKUP_RET_NO_NEIGH) {
        count(counter::PASS_NO_NEIGH);
    } else {
        count(counter::PASS_FIB_OTHER);
    }
    xdp_action::XDP_PASS
}
