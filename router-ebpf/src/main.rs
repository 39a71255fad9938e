//! pgrouter's XDP program: full NAT from VIP:port to the PostgreSQL node chosen by the
//! controller, with connection tracking, shutdown-sessions resets and per-backend maxconn.
//!
//! The entry point dispatches; each concern lives in its own module.
#![cfg_attr(target_arch = "bpf", no_std)]
#![cfg_attr(target_arch = "bpf", no_main)]
#![cfg_attr(target_arch = "bpf", feature(core_intrinsics))]
#![cfg_attr(target_arch = "bpf", allow(internal_features))]

#[cfg(target_arch = "bpf")]
mod atomic;
#[cfg(target_arch = "bpf")]
mod csum;
#[cfg(target_arch = "bpf")]
mod flow;
#[cfg(target_arch = "bpf")]
mod gc;
#[cfg(target_arch = "bpf")]
mod maps;
#[cfg(target_arch = "bpf")]
mod parse;
#[cfg(target_arch = "bpf")]
mod reset;
#[cfg(target_arch = "bpf")]
mod select;
#[cfg(target_arch = "bpf")]
mod snat;
#[cfg(target_arch = "bpf")]
mod sync;
#[cfg(target_arch = "bpf")]
mod xmit;

#[cfg(not(target_arch = "bpf"))]
fn main() {}

#[cfg(target_arch = "bpf")]
mod entry {
    use aya_ebpf::{bindings::xdp_action, macros::xdp, programs::XdpContext};
    use router_ebpf::{FlowKey, ServiceKey, counter};

    use crate::{
        flow, gc,
        maps::{PGR_IFACE_MACS, PGR_SERVICES, count},
        parse::{self, Skip},
        sync,
    };

    /// Service packets go to `flow::forward`, reply packets of tracked flows to `flow::reply`;
    /// everything else passes untouched (ARP, VRRP, SSH, the controller's own checks …).
    #[xdp]
    pub fn pgrouter(ctx: XdpContext) -> u32 {
        let h = match parse::parse(&ctx) {
            Ok(h) => h,
            Err(skip) => {
                count(match skip {
                    Skip::NotIpv4 => counter::PASS_NOT_IPV4,
                    Skip::NotTcp => counter::PASS_NOT_TCP,
                    Skip::Malformed => counter::PASS_MALFORMED,
                    Skip::Unsupported => counter::PASS_UNSUPPORTED,
                });
                return xdp_action::XDP_PASS;
            }
        };
        let key: FlowKey = flow::tuple(&h);
        let skey = ServiceKey {
            addr: key.daddr,
            port: key.dport,
            proto: key.proto,
            family: key.family,
        };
        if let Some(svc) = PGR_SERVICES.get_ptr(&skey) {
            if !for_us(&ctx, &h) {
                count(counter::PASS_OTHER_HOST);
                return xdp_action::XDP_PASS;
            }
            let svc = unsafe { *svc };
            return flow::forward(&ctx, &h, &key, &svc);
        }
        if let Some((table, entry)) = flow::reply_entry(&key) {
            if !for_us(&ctx, &h) {
                count(counter::PASS_OTHER_HOST);
                return xdp_action::XDP_PASS;
            }
            return flow::reply(&ctx, &h, &key, table, entry);
        }
        if unsafe { (*h.tcp).flags } & parse::TCP_SYN == 0
            && sync::in_grace(crate::maps::now(), Some(u16::from_be(key.dport)))
        {
            // A node's packet to a SNAT port without a flow, just after taking the VIP over:
            // its flow's sync may still be in flight (see `flow::forward`).
            return xdp_action::XDP_DROP;
        }
        count(counter::PASS_NOT_OURS);
        xdp_action::XDP_PASS
    }

    /// Never attached: the controller's garbage collector runs it under `BPF_PROG_TEST_RUN`
    /// with a `GcRequest` as the frame (see `gc`).
    #[xdp]
    pub fn pgrouter_gc(ctx: XdpContext) -> u32 {
        gc::run(&ctx)
    }

    /// A frame is ours unless its destination MAC is unicast and differs from the ingress
    /// interface's (known from `PGR_IFACE_MACS`; an interface without an entry accepts all).
    #[inline(always)]
    fn for_us(ctx: &XdpContext, h: &parse::Headers) -> bool {
        let ifindex = ctx.ingress_ifindex() as u32;
        let Some(m) = PGR_IFACE_MACS.get_ptr(&ifindex) else {
            return true;
        };
        let dst = unsafe { (*h.eth).dst };
        dst[0] & 1 != 0 || dst == unsafe { (*m).mac }
    }

    /// Benchmark baseline only, never attached: the cheapest useful XDP program (bounce every
    /// frame), so `cargo xtask bench` can report pgrouter's cost as a ratio in the same run.
    #[xdp]
    pub fn baseline_tx(_ctx: XdpContext) -> u32 {
        xdp_action::XDP_TX
    }

    /// Passes everything. A veth delivers XDP_TX/redirected frames in native mode only when
    /// its peer has an XDP program; attach this one to the peer (containers, test hosts).
    #[xdp]
    pub fn xdp_pass(_ctx: XdpContext) -> u32 {
        xdp_action::XDP_PASS
    }

    #[cfg(not(test))]
    #[panic_handler]
    fn panic(_info: &core::panic::PanicInfo) -> ! {
        loop {}
    }
}
