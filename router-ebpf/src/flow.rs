//! Connection tracking and NAT: new flows on SYN, translation of tracked flows in both
//! directions, close accounting, and teardown of flows whose backend was shut down.
use aya_ebpf::{
    bindings::{BPF_NOEXIST, xdp_action},
    helpers::bpf_get_prandom_u32,
    programs::XdpContext,
};
use router_ebpf::{
    BACKEND_ACTIVE, BACKEND_DRAIN, FAMILY_IPV4, FLOW_F_ANSWERED, FLOW_F_CLOSED, FLOW_F_FIN_BACKEND,
    FLOW_F_FIN_CLIENT, FLOW_F_REPLY, Flow, FlowKey, PROTO_TCP, Service, counter,
};

use crate::{
    atomic, csum,
    maps::{PGR_BACKENDS, PGR_CONNTRACK, backend_stats, count, service_stats},
    parse::{Headers, TCP_ACK, TCP_FIN, TCP_RST, TCP_SYN, get32, put32},
    reset, select, xmit,
};

/// SNAT ports tried per new flow (the client's own port first, then random ones).
const SNAT_TRIES: u32 = 8;

/// The packet's 5-tuple as a conntrack key.
#[inline(always)]
pub fn tuple(h: &Headers) -> FlowKey {
    unsafe {
        FlowKey {
            saddr: [get32(&(*h.ip).saddr), 0, 0, 0],
            daddr: [get32(&(*h.ip).daddr), 0, 0, 0],
            sport: (*h.tcp).sport,
            dport: (*h.tcp).dport,
            proto: PROTO_TCP,
            family: FAMILY_IPV4,
            _pad: [0; 2],
        }
    }
}

/// The key of a flow's other entry: the tuple of the packets that entry rewrites into.
#[inline(always)]
fn peer_key(f: &Flow) -> FlowKey {
    FlowKey {
        saddr: f.daddr,
        daddr: f.saddr,
        sport: f.dport,
        dport: f.sport,
        proto: PROTO_TCP,
        family: FAMILY_IPV4,
        _pad: [0; 2],
    }
}

#[inline(always)]
fn backend_state(id: u32) -> u8 {
    match PGR_BACKENDS.get(id) {
        Some(b) => b.state,
        None => 0,
    }
}

/// Marks the forward entry closed and, the first time only, releases the backend's slot
/// ([`select::release`]: a shut-down backend's count belongs to userspace).
#[inline(always)]
fn close(fwd: *mut Flow, backend_id: u32) {
    if atomic::fetch_or(unsafe { &raw mut (*fwd).flags }, FLOW_F_CLOSED) & FLOW_F_CLOSED == 0 {
        select::release(backend_id);
    }
}

/// Removes both entries of a flow, releasing its slot if it was still open.
#[inline(always)]
fn teardown(key: &FlowKey, f: &Flow, entry: *mut Flow) {
    let peer = peer_key(f);
    let fwd = if f.flags & FLOW_F_REPLY == 0 {
        Some(entry)
    } else {
        PGR_CONNTRACK.get_ptr_mut(&peer)
    };
    if let Some(fwd) = fwd {
        close(fwd, f.backend_id);
    }
    let _ = PGR_CONNTRACK.remove(&peer);
    let _ = PGR_CONNTRACK.remove(key);
}

/// Client → VIP:port.
#[inline(always)]
pub fn forward(ctx: &XdpContext, h: &Headers, key: &FlowKey, svc: &Service) -> u32 {
    let tcp_flags = unsafe { (*h.tcp).flags };
    // A connection request: SYN alone (SYN with RST or FIN is invalid and never opens a flow).
    let syn = tcp_flags & (TCP_SYN | TCP_ACK | TCP_RST | TCP_FIN) == TCP_SYN;
    if let Some(entry) = PGR_CONNTRACK.get_ptr_mut(key) {
        let f = unsafe { *entry };
        let state = backend_state(f.backend_id);
        let usable = state == BACKEND_ACTIVE || state == BACKEND_DRAIN;
        if !syn || (usable && f.flags & FLOW_F_CLOSED == 0) {
            if !usable {
                // shutdown-sessions: the client learns now; the backend learns from the edge
                // host's own RST to its next packet, or from the controller's sweep.
                teardown(key, &f, entry);
                count(counter::RST_SHUTDOWN);
                bump_rst(svc.id, f.backend_id);
                return reset::reply_rst(ctx);
            }
            return translate(ctx, h, entry, &f, tcp_flags);
        }
        // A SYN reusing a closed tuple, or retried after its backend was shut down.
        teardown(key, &f, entry);
    }
    if syn {
        return new_flow(ctx, h, key, svc);
    }
    if let Some(s) = service_stats(svc.id) {
        s.ct_miss += 1;
    }
    if tcp_flags & TCP_RST != 0 {
        count(counter::DROP_RST_NO_FLOW);
        return xdp_action::XDP_DROP;
    }
    count(counter::RST_UNKNOWN_FLOW);
    bump_rst(svc.id, u32::MAX);
    reset::reply_rst(ctx)
}

/// Backend → SNAT address: a tracked reply.
#[inline(always)]
pub fn reply(ctx: &XdpContext, h: &Headers, key: &FlowKey, entry: *mut Flow) -> u32 {
    let f = unsafe { *entry };
    let state = backend_state(f.backend_id);
    if state != BACKEND_ACTIVE && state != BACKEND_DRAIN {
        teardown(key, &f, entry);
        count(counter::RST_SHUTDOWN);
        bump_rst(f.service_id, f.backend_id);
        return reset::reply_rst(ctx);
    }
    let tcp_flags = unsafe { (*h.tcp).flags };
    translate(ctx, h, entry, &f, tcp_flags)
}

#[inline(always)]
fn bump_rst(service_id: u32, backend_id: u32) {
    if let Some(s) = service_stats(service_id) {
        s.rst_sent += 1;
    }
    if let Some(b) = backend_stats(backend_id) {
        b.rst_sent += 1;
    }
}

/// A SYN with no flow: choose a backend, allocate a SNAT port, insert both entries.
#[inline(always)]
fn new_flow(ctx: &XdpContext, h: &Headers, key: &FlowKey, svc: &Service) -> u32 {
    let Some(stats) = service_stats(svc.id) else {
        return xdp_action::XDP_PASS;
    };
    let backend_id = match select::choose(svc, key) {
        Ok(id) => id,
        Err(select::NoChoice::Empty) => {
            stats.drop_no_backend += 1;
            count(counter::DROP_SYN);
            return xdp_action::XDP_DROP;
        }
        Err(select::NoChoice::AllAtMaxconn) => {
            stats.drop_maxconn += 1;
            count(counter::DROP_SYN);
            return xdp_action::XDP_DROP;
        }
    };
    // From here on the backend's slot is held: every path that drops the SYN gives it back.
    let Some(b) = PGR_BACKENDS.get(backend_id) else {
        select::release(backend_id);
        return xdp_action::XDP_DROP;
    };
    let (min, max) = (svc.snat_port_min, svc.snat_port_max);
    if min == 0 || max < min {
        select::release(backend_id);
        stats.drop_snat_exhausted += 1;
        count(counter::DROP_SYN);
        return xdp_action::XDP_DROP;
    }
    let range = u32::from(max - min) + 1;
    let client_port = u16::from_be(key.sport);
    let reply = Flow {
        saddr: key.daddr,
        daddr: key.saddr,
        sport: key.dport,
        dport: key.sport,
        backend_id,
        service_id: svc.id,
        flags: FLOW_F_REPLY,
        last_ack: 0,
    };
    let mut rkey = FlowKey {
        saddr: b.addr,
        daddr: svc.snat_addr,
        sport: b.port,
        dport: 0,
        proto: PROTO_TCP,
        family: FAMILY_IPV4,
        _pad: [0; 2],
    };
    let mut found = false;
    for i in 0..SNAT_TRIES {
        // Keep the client's port when it is free (as Cilium does): the backend then sees the
        // port the client used, which eases tracing.
        let port = if i == 0 && client_port >= min && client_port <= max {
            client_port
        } else {
            min + (unsafe { bpf_get_prandom_u32() } % range) as u16
        };
        rkey.dport = port.to_be();
        if PGR_CONNTRACK
            .insert(&rkey, &reply, u64::from(BPF_NOEXIST))
            .is_ok()
        {
            found = true;
            break;
        }
    }
    if !found {
        // Rare and actionable: the SNAT range is too small for the connection rate.
        aya_log_ebpf::warn!(ctx, "snat ports exhausted for service {}", svc.id);
        select::release(backend_id);
        stats.drop_snat_exhausted += 1;
        count(counter::DROP_SYN);
        return xdp_action::XDP_DROP;
    }
    let fwd = Flow {
        saddr: svc.snat_addr,
        daddr: b.addr,
        sport: rkey.dport,
        dport: b.port,
        backend_id,
        service_id: svc.id,
        flags: 0,
        last_ack: 0,
    };
    if PGR_CONNTRACK
        .insert(key, &fwd, u64::from(BPF_NOEXIST))
        .is_err()
    {
        // Another CPU created this flow from a duplicate SYN; the retransmit will use it.
        let _ = PGR_CONNTRACK.remove(&rkey);
        select::release(backend_id);
        count(counter::CT_INSERT_FAILED);
        return xdp_action::XDP_DROP;
    }
    stats.new_flows += 1;
    if let Some(bs) = backend_stats(backend_id) {
        bs.new_flows += 1;
    }
    rewrite(h, &fwd);
    account(h, &fwd);
    xmit::send(ctx, h)
}

/// Rewrites a packet of a tracked flow and tracks FIN/RST for close accounting.
#[inline(always)]
fn translate(ctx: &XdpContext, h: &Headers, entry: *mut Flow, f: &Flow, tcp_flags: u8) -> u32 {
    if tcp_flags & TCP_ACK != 0 {
        unsafe { (*entry).last_ack = get32(&(*h.tcp).ack) };
    }
    if f.flags & (FLOW_F_REPLY | FLOW_F_ANSWERED) == FLOW_F_REPLY {
        // The backend's first answer. Only this flow's reply packets write the reply entry's
        // flags, so a plain write is enough (two CPUs would write the same bit).
        if tcp_flags & TCP_RST != 0 {
            if let Some(b) = backend_stats(f.backend_id) {
                b.refused += 1;
            }
        } else {
            unsafe { (*entry).flags |= FLOW_F_ANSWERED };
        }
    }
    if tcp_flags & (TCP_FIN | TCP_RST) != 0 {
        track_close(entry, f, tcp_flags);
    }
    rewrite(h, f);
    account(h, f);
    xmit::send(ctx, h)
}

#[inline(always)]
fn track_close(entry: *mut Flow, f: &Flow, tcp_flags: u8) {
    let is_reply = f.flags & FLOW_F_REPLY != 0;
    let fwd = if is_reply {
        match PGR_CONNTRACK.get_ptr_mut(&peer_key(f)) {
            Some(p) => p,
            None => return,
        }
    } else {
        entry
    };
    if tcp_flags & TCP_RST != 0 {
        close(fwd, f.backend_id);
        return;
    }
    let bit = if is_reply {
        FLOW_F_FIN_BACKEND
    } else {
        FLOW_F_FIN_CLIENT
    };
    let old = atomic::fetch_or(unsafe { &raw mut (*fwd).flags }, bit);
    if (old | bit) & (FLOW_F_FIN_CLIENT | FLOW_F_FIN_BACKEND)
        == FLOW_F_FIN_CLIENT | FLOW_F_FIN_BACKEND
    {
        close(fwd, f.backend_id);
    }
}

/// Full NAT of addresses and ports with incremental checksum updates (RFC 1624).
#[inline(always)]
fn rewrite(h: &Headers, f: &Flow) {
    unsafe {
        let ip = &mut *h.ip;
        let tcp = &mut *h.tcp;
        let (old_s, old_d) = (get32(&ip.saddr), get32(&ip.daddr));
        let (new_s, new_d) = (f.saddr[0], f.daddr[0]);
        let mut ipc = csum::replace32(ip.check, old_s, new_s);
        ipc = csum::replace32(ipc, old_d, new_d);
        ip.check = ipc;
        // The TCP checksum covers the pseudo-header addresses and the ports.
        let mut tc = csum::replace32(tcp.check, old_s, new_s);
        tc = csum::replace32(tc, old_d, new_d);
        tc = csum::replace16(tc, tcp.sport, f.sport);
        tc = csum::replace16(tc, tcp.dport, f.dport);
        tcp.check = tc;
        put32(&mut ip.saddr, new_s);
        put32(&mut ip.daddr, new_d);
        tcp.sport = f.sport;
        tcp.dport = f.dport;
    }
}

#[inline(always)]
fn account(h: &Headers, f: &Flow) {
    let bytes = u64::from(u16::from_be(unsafe { (*h.ip).tot_len }));
    let reply = f.flags & FLOW_F_REPLY != 0;
    if let Some(s) = service_stats(f.service_id) {
        if reply {
            s.packets_out += 1;
            s.bytes_out += bytes;
        } else {
            s.packets_in += 1;
            s.bytes_in += bytes;
        }
    }
    if let Some(b) = backend_stats(f.backend_id) {
        if reply {
            b.packets_out += 1;
            b.bytes_out += bytes;
        } else {
            b.packets_in += 1;
            b.bytes_in += bytes;
        }
    }
}
