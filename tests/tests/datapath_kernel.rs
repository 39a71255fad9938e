//! Kernel tests: the real XDP object, loaded and run with BPF_PROG_TEST_RUN on crafted frames.
//! Each test runs in its own thread-private network namespace with one veth whose neighbours
//! are static, so `bpf_fib_lookup` resolves exactly as on an edge host. Rewritten frames are
//! checked byte for byte against frames built independently by etherparse, which also verifies
//! every checksum.
use std::net::{IpAddr, Ipv4Addr};

use aya::programs::{ProgramError, TestRun, TestRunOptions, Xdp};
use pgrouter::{
    dataplane::{Applied, Datapath, LoadOptions, Maps, plan},
    model::{BackendState, Balance, DesiredBackend, DesiredListener},
};
use router_ebpf::{FlowKey, PROGRAM_NAME, counter};
use tests::frames::{self, Tcp};

const XDP_DROP: u32 = 1;
const XDP_PASS: u32 = 2;
const XDP_TX: u32 = 3;

const VIP: Ipv4Addr = Ipv4Addr::new(198, 18, 2, 100);
const CLIENT: Ipv4Addr = Ipv4Addr::new(198, 18, 2, 50);
const PG_A: Ipv4Addr = Ipv4Addr::new(198, 18, 1, 11);
const PG_B: Ipv4Addr = Ipv4Addr::new(198, 18, 1, 12);
const PG_C: Ipv4Addr = Ipv4Addr::new(198, 18, 1, 13);
const EDGE_MAC: [u8; 6] = [0x02, 0xed, 0, 0, 0, 0x01];
const CLIENT_MAC: [u8; 6] = [0x02, 0xc1, 0, 0, 0, 0x50];
const SNAT: (u16, u16) = (40000, 40999);

fn node_mac(ip: Ipv4Addr) -> [u8; 6] {
    [0x02, 0xdb, 0, 0, 0, ip.octets()[3]]
}

/// One loaded data path in a private namespace.
struct K {
    dp: Datapath,
    maps: Maps,
    applied: Applied,
    ifindex: u32,
}

impl K {
    fn new() -> Self {
        Self::with_conntrack(4096)
    }

    fn with_conntrack(conntrack_entries: u32) -> Self {
        tests::enter_private_netns().expect("private netns");
        let script = format!(
            "ip link add k0 address {edge} type veth peer name k1 && ip link set k0 up && ip link set k1 up \
             && ip addr add 198.18.1.1/24 dev k0 && ip addr add 198.18.2.1/24 dev k0 \
             && sysctl -qw net.ipv4.ip_forward=1 \
             && ip neigh add {a} lladdr {am} dev k0 nud permanent \
             && ip neigh add {b} lladdr {bm} dev k0 nud permanent \
             && ip neigh add {c} lladdr {cm} dev k0 nud permanent \
             && ip neigh add {cl} lladdr {clm} dev k0 nud permanent",
            edge = mac(EDGE_MAC),
            a = PG_A,
            am = mac(node_mac(PG_A)),
            b = PG_B,
            bm = mac(node_mac(PG_B)),
            c = PG_C,
            cm = mac(node_mac(PG_C)),
            cl = CLIENT,
            clm = mac(CLIENT_MAC),
        );
        tests::sh(&script).expect("namespace set-up");
        let ifindex = unsafe { libc::if_nametoindex(c"k0".as_ptr()) };
        assert_ne!(ifindex, 0, "k0 exists");
        let mut dp = Datapath::load(&LoadOptions {
            pin_path: None,
            conntrack_entries,
            handshake_entries: router_ebpf::DEFAULT_HS_ENTRIES,
        })
        .expect("load the XDP object");
        let mut maps = Maps::take(&mut dp.ebpf).expect("maps");
        maps.allow_iface(ifindex, Some(EDGE_MAC)).expect("iface");
        Self {
            dp,
            maps,
            applied: Applied::default(),
            ifindex,
        }
    }

    /// Publishes listeners: 5000 → primary A; 5001 → replicas B, C.
    fn publish(&mut self, listeners: &[DesiredListener]) {
        self.publish_with(listeners, SNAT);
    }

    fn publish_with(&mut self, listeners: &[DesiredListener], snat: (u16, u16)) {
        let (delta, next) = plan(
            listeners,
            &self.applied,
            snat,
            pgrouter::dataplane::host::monotonic_ns(),
        )
        .expect("plan");
        self.maps.apply(&delta).expect("apply");
        self.applied = next;
    }

    fn run_on(&mut self, prog: &str, frame: &[u8]) -> (u32, Vec<u8>) {
        let xdp: &mut Xdp = self
            .dp
            .ebpf
            .program_mut(prog)
            .expect("program")
            .try_into()
            .expect("xdp");
        if prog != PROGRAM_NAME && xdp.fd().is_err() {
            xdp.load().expect("load baseline");
        }
        // xdp_md: data, data_end, data_meta, ingress_ifindex, rx_queue_index, egress_ifindex.
        let ctx = xdp_md(frame.len(), self.ifindex);
        let mut out = vec![0u8; frame.len() + 256];
        let opts = TestRunOptions {
            data_in: Some(frame),
            data_out: Some(&mut out),
            ctx_in: Some(&ctx),
            ..Default::default()
        };
        let r = xdp.test_run(opts).expect("test_run");
        out.truncate(r.data_size_out as usize);
        (r.return_value, out)
    }

    fn run(&mut self, frame: &[u8]) -> (u32, Vec<u8>) {
        self.run_on(PROGRAM_NAME, frame)
    }

    fn flows(&self) -> Vec<(FlowKey, router_ebpf::Flow)> {
        self.maps.conntrack.iter().flatten().collect()
    }
}

/// `struct xdp_md` for test_run: data = 0, data_end = frame length (the kernel requires it),
/// data_meta = 0, ingress_ifindex, rx_queue_index = 0, egress_ifindex = 0.
fn xdp_md(len: usize, ifindex: u32) -> [u8; 24] {
    let mut ctx = [0u8; 24];
    ctx[4..8].copy_from_slice(&(len as u32).to_ne_bytes());
    ctx[12..16].copy_from_slice(&ifindex.to_ne_bytes());
    ctx
}

fn mac(m: [u8; 6]) -> String {
    m.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

fn backend(name: &str, ip: Ipv4Addr, state: BackendState, maxconn: u32) -> DesiredBackend {
    DesiredBackend {
        node: name.into(),
        addr: IpAddr::V4(ip),
        port: 5432,
        maxconn,
        state,
    }
}

fn listener(name: &str, port: u16, backends: Vec<DesiredBackend>) -> DesiredListener {
    DesiredListener {
        name: name.into(),
        vip: IpAddr::V4(VIP),
        port,
        balance: Balance::RoundRobin,
        shutdown_sessions: true,
        empty_hold_ms: router_ebpf::DEFAULT_EMPTY_HOLD_MS,
        snat_addr: IpAddr::V4(VIP),
        backends,
    }
}

use BackendState::{Active, Drain, Shutdown};

fn standard() -> Vec<DesiredListener> {
    vec![
        listener(
            "pg/PG1",
            5000,
            vec![
                backend("a", PG_A, Active, 0),
                backend("b", PG_B, Shutdown, 0),
                backend("c", PG_C, Shutdown, 0),
            ],
        ),
        listener(
            "pg/PG1_ro",
            5001,
            vec![
                backend("a", PG_A, Drain, 0),
                backend("b", PG_B, Active, 0),
                backend("c", PG_C, Active, 0),
            ],
        ),
    ]
}

fn client_syn(sport: u16, dport: u16) -> Tcp {
    Tcp::new((CLIENT, sport), (VIP, dport))
        .syn()
        .seq(7777)
        .macs(CLIENT_MAC, EDGE_MAC)
}

/// The frame the data path must emit for `input` NATed to `(src, dst)` with new MACs:
/// built independently, so comparing whole frames checks every byte and both checksums.
fn expected(
    input: &Tcp,
    payload: &[u8],
    smac: [u8; 6],
    dmac: [u8; 6],
    src: (Ipv4Addr, u16),
    dst: (Ipv4Addr, u16),
) -> Vec<u8> {
    let mut t = *input;
    t.smac = smac;
    t.dmac = dmac;
    t.src = src.0;
    t.sport = src.1;
    t.dst = dst.0;
    t.dport = dst.1;
    t.build(payload)
}

fn assert_csums(frame: &[u8]) -> frames::Parsed {
    let p = frames::parse(frame).expect("output parses");
    assert!(p.ip_csum_ok, "IPv4 checksum wrong in {p:?}");
    assert!(p.tcp_csum_ok, "TCP checksum wrong in {p:?}");
    p
}

/// Opens a flow from `sport` to `dport` and returns the backend leg's (addr, snat port).
fn open(k: &mut K, sport: u16, dport: u16) -> (Ipv4Addr, u16) {
    let (v, out) = k.run(&client_syn(sport, dport).build(&[]));
    assert_eq!(v, XDP_TX, "SYN must be transmitted");
    let p = assert_csums(&out);
    (p.dst, p.sport)
}

#[test]
fn syn_to_write_port_is_rewritten_to_the_primary_byte_for_byte() {
    let mut k = K::new();
    k.publish(&standard());
    // The client's port lies in the SNAT range and is free, so it is kept (Cilium's rule).
    let syn = client_syn(40100, 5000);
    let (v, out) = k.run(&syn.build(&[]));
    assert_eq!(v, XDP_TX);
    let want = expected(
        &syn,
        &[],
        EDGE_MAC,
        node_mac(PG_A),
        (VIP, 40100),
        (PG_A, 5432),
    );
    assert_eq!(out, want, "every byte of the rewritten SYN");
    assert_csums(&out);
    assert_eq!(k.flows().len(), 2, "forward and reply entries");
    assert_eq!(
        k.maps
            .active_conns(k.applied.backend_ids[&("pg/PG1".into(), "a".into())]),
        1
    );
}

#[test]
fn syn_to_read_port_goes_to_replicas_in_turn() {
    let mut k = K::new();
    k.publish(&standard());
    let mut seen = std::collections::BTreeSet::new();
    for i in 0..6u16 {
        let syn = client_syn(52000 + i, 5001);
        let (v, out) = k.run(&syn.build(&[]));
        assert_eq!(v, XDP_TX);
        let p = assert_csums(&out);
        assert!(p.dst == PG_B || p.dst == PG_C, "read went to {}", p.dst);
        assert_eq!(p.dport, 5432);
        assert_eq!(p.dmac, node_mac(p.dst));
        // Outside the SNAT range the client's port is replaced by one from the range.
        assert!(
            (SNAT.0..=SNAT.1).contains(&p.sport),
            "snat port {}",
            p.sport
        );
        let want = expected(
            &syn,
            &[],
            EDGE_MAC,
            node_mac(p.dst),
            (VIP, p.sport),
            (p.dst, 5432),
        );
        assert_eq!(out, want);
        seen.insert(p.dst);
    }
    assert_eq!(seen.len(), 2, "round robin uses both replicas");
}

#[test]
fn reply_path_is_translated_back_to_the_client() {
    let mut k = K::new();
    k.publish(&standard());
    let (node, snat_port) = open(&mut k, 51001, 5000);
    let synack = Tcp::new((node, 5432), (VIP, snat_port))
        .syn()
        .ack(7778)
        .seq(9000)
        .macs(node_mac(node), EDGE_MAC);
    let (v, out) = k.run(&synack.build(&[]));
    assert_eq!(v, XDP_TX);
    let want = expected(
        &synack,
        &[],
        EDGE_MAC,
        CLIENT_MAC,
        (VIP, 5000),
        (CLIENT, 51001),
    );
    assert_eq!(out, want);
    // Established data both ways.
    let data = Tcp::new((CLIENT, 51001), (VIP, 5000))
        .ack(9001)
        .seq(7778)
        .macs(CLIENT_MAC, EDGE_MAC);
    let payload = b"\x00\x00\x00\x08\x04\xd2\x16\x2f"; // SSLRequest
    let (v, out) = k.run(&data.build(payload));
    assert_eq!(v, XDP_TX);
    assert_eq!(
        out,
        expected(
            &data,
            payload,
            EDGE_MAC,
            node_mac(node),
            (VIP, snat_port),
            (node, 5432)
        )
    );
    let resp = Tcp::new((node, 5432), (VIP, snat_port))
        .ack(7786)
        .seq(9001)
        .macs(node_mac(node), EDGE_MAC);
    let (v, out) = k.run(&resp.build(b"N"));
    assert_eq!(v, XDP_TX);
    assert_eq!(
        out,
        expected(
            &resp,
            b"N",
            EDGE_MAC,
            CLIENT_MAC,
            (VIP, 5000),
            (CLIENT, 51001)
        )
    );
}

#[test]
fn unknown_mid_flow_packet_gets_a_reset_not_a_black_hole() {
    let mut k = K::new();
    k.publish(&standard());
    let stray = Tcp::new((CLIENT, 53000), (VIP, 5000))
        .ack(424242)
        .seq(1234)
        .macs(CLIENT_MAC, EDGE_MAC);
    let (v, out) = k.run(&stray.build(b"hello"));
    assert_eq!(v, XDP_TX);
    let p = assert_csums(&out);
    assert_eq!(out.len(), 54, "RST carries no options or payload");
    assert_eq!((p.smac, p.dmac), (EDGE_MAC, CLIENT_MAC));
    assert_eq!((p.src, p.sport, p.dst, p.dport), (VIP, 5000, CLIENT, 53000));
    assert!(p.tcp.rst && !p.tcp.ack && !p.tcp.syn);
    assert_eq!(
        p.tcp.sequence_number, 424242,
        "RST seq = the segment's ACK (RFC 9293)"
    );
    assert_eq!(p.ttl, 64);
    // Without ACK: seq 0, ACK = seq + payload length.
    let noack = Tcp::new((CLIENT, 53001), (VIP, 5000))
        .seq(500)
        .macs(CLIENT_MAC, EDGE_MAC);
    let (v, out) = k.run(&noack.build(b"abc"));
    assert_eq!(v, XDP_TX);
    let p = assert_csums(&out);
    assert!(p.tcp.rst && p.tcp.ack);
    assert_eq!(p.tcp.acknowledgment_number, 503);
    // A stray RST is never answered.
    let rst = Tcp::new((CLIENT, 53002), (VIP, 5000))
        .rst()
        .seq(1)
        .macs(CLIENT_MAC, EDGE_MAC);
    assert_eq!(k.run(&rst.build(&[])).0, XDP_DROP);
    assert_eq!(k.maps.counter(counter::RST_UNKNOWN_FLOW), 2);
    assert!(
        k.flows().is_empty(),
        "no flow is created by non-SYN packets"
    );
}

#[test]
fn withdrawn_backend_resets_both_ends_and_forgets_the_flow() {
    let mut k = K::new();
    k.publish(&standard());
    let (node, snat_port) = open(&mut k, 51002, 5000);
    assert_eq!(node, PG_A);
    let (node2, snat2) = open(&mut k, 51003, 5000);
    assert_eq!(node2, PG_A);
    // Failover: B becomes primary; A is marked down for writes (shutdown-sessions).
    let mut l = standard();
    l[0].backends[0].state = Shutdown;
    l[0].backends[1].state = Active;
    k.publish(&l);
    let bid = k.applied.backend_ids[&("pg/PG1".into(), "a".into())];
    // Client speaks on the old flow → RST to the client.
    let data = Tcp::new((CLIENT, 51002), (VIP, 5000))
        .ack(9001)
        .seq(7778)
        .macs(CLIENT_MAC, EDGE_MAC);
    let (v, out) = k.run(&data.build(b"Q"));
    assert_eq!(v, XDP_TX);
    let p = assert_csums(&out);
    assert!(p.tcp.rst);
    assert_eq!((p.dst, p.dport, p.sport), (CLIENT, 51002, 5000));
    assert_eq!(p.tcp.sequence_number, 9001);
    // Old primary speaks on the other flow → RST to the old primary, from the SNAT address.
    let resp = Tcp::new((PG_A, 5432), (VIP, snat2))
        .ack(7786)
        .seq(9100)
        .macs(node_mac(PG_A), EDGE_MAC);
    let (v, out) = k.run(&resp.build(b"D"));
    assert_eq!(v, XDP_TX);
    let p = assert_csums(&out);
    assert!(p.tcp.rst);
    assert_eq!((p.dst, p.dport, p.src, p.sport), (PG_A, 5432, VIP, snat2));
    assert_eq!(p.dmac, node_mac(PG_A));
    assert!(k.flows().is_empty(), "both flows are gone");
    assert_eq!(k.maps.counter(counter::RST_SHUTDOWN), 2);
    let _ = snat_port;
    // A new connection goes to the new primary.
    let (n, _) = open(&mut k, 51004, 5000);
    assert_eq!(n, PG_B);
    // When A comes back, its count starts from zero (the controller owns it while shut down).
    k.publish(&standard());
    assert_eq!(
        k.maps.active_conns(bid),
        0,
        "reactivated backend starts empty"
    );
}

#[test]
fn drained_backend_keeps_its_sessions_but_takes_no_new_ones() {
    let mut k = K::new();
    let mut l = standard();
    // Read listener in fallback: replicas down, primary serving reads.
    l[1].backends = vec![
        backend("a", PG_A, Active, 0),
        backend("b", PG_B, Shutdown, 0),
        backend("c", PG_C, Shutdown, 0),
    ];
    k.publish(&l);
    let (n, snat) = open(&mut k, 51005, 5001);
    assert_eq!(n, PG_A, "fallback to the primary");
    // Replica B is back: reads return to it; the primary's read session drains.
    l[1].backends = vec![
        backend("a", PG_A, Drain, 0),
        backend("b", PG_B, Active, 0),
        backend("c", PG_C, Shutdown, 0),
    ];
    k.publish(&l);
    let data = Tcp::new((CLIENT, 51005), (VIP, 5001))
        .ack(1)
        .seq(7778)
        .macs(CLIENT_MAC, EDGE_MAC);
    let (v, out) = k.run(&data.build(b"S"));
    assert_eq!(v, XDP_TX);
    let p = assert_csums(&out);
    assert_eq!(
        (p.dst, p.sport),
        (PG_A, snat),
        "existing session still reaches the primary"
    );
    let (n, _) = open(&mut k, 51006, 5001);
    assert_eq!(n, PG_B, "new reads go to the replica");
}

#[test]
fn maxconn_drops_syns_beyond_the_limit_and_frees_slots_on_close() {
    let mut k = K::new();
    let mut l = standard();
    l[0].backends[0].maxconn = 2;
    k.publish(&l);
    let bid = k.applied.backend_ids[&("pg/PG1".into(), "a".into())];
    open(&mut k, 51010, 5000);
    let (_, snat) = open(&mut k, 51011, 5000);
    let (v, _) = k.run(&client_syn(51012, 5000).build(&[]));
    assert_eq!(v, XDP_DROP, "third SYN is over maxconn");
    assert_eq!(k.maps.active_conns(bid), 2);
    let sid = k.applied.service_ids["pg/PG1"];
    assert_eq!(k.maps.service_stats(sid).drop_maxconn, 1);
    assert_eq!(k.maps.backend_stats(bid).drop_maxconn, 1);
    // Close one flow: FIN from the client, FIN from the backend.
    let fin = Tcp::new((CLIENT, 51011), (VIP, 5000))
        .fin()
        .ack(1)
        .seq(7778)
        .macs(CLIENT_MAC, EDGE_MAC);
    assert_eq!(k.run(&fin.build(&[])).0, XDP_TX);
    assert_eq!(k.maps.active_conns(bid), 2, "half-closed still counts");
    let fin2 = Tcp::new((PG_A, 5432), (VIP, snat))
        .fin()
        .ack(7779)
        .seq(1)
        .macs(node_mac(PG_A), EDGE_MAC);
    assert_eq!(k.run(&fin2.build(&[])).0, XDP_TX);
    assert_eq!(k.maps.active_conns(bid), 1, "closed flow frees its slot");
    // Retransmitted FIN does not free it twice.
    assert_eq!(k.run(&fin2.build(&[])).0, XDP_TX);
    assert_eq!(k.maps.active_conns(bid), 1);
    let (v, _) = k.run(&client_syn(51012, 5000).build(&[]));
    assert_eq!(v, XDP_TX, "a slot is free again");
}

#[test]
fn a_syn_dropped_after_its_backend_was_chosen_gives_the_slot_back() {
    let mut k = K::new();
    let mut l = standard();
    l[0].backends[0].maxconn = 2;
    // One SNAT port: the first flow keeps the client's port 40000, the second finds none.
    k.publish_with(&l, (40000, 40000));
    let bid = k.applied.backend_ids[&("pg/PG1".into(), "a".into())];
    let sid = k.applied.service_ids["pg/PG1"];
    open(&mut k, 40000, 5000);
    let (v, _) = k.run(&client_syn(51030, 5000).build(&[]));
    assert_eq!(v, XDP_DROP, "no SNAT port left");
    assert_eq!(k.maps.service_stats(sid).drop_snat_exhausted, 1);
    assert_eq!(
        k.maps.active_conns(bid),
        1,
        "the dropped SYN's slot was given back"
    );
    // With ports again, exactly one more flow fits under maxconn 2.
    k.publish_with(&l, SNAT);
    open(&mut k, 51031, 5000);
    let (v, _) = k.run(&client_syn(51032, 5000).build(&[]));
    assert_eq!(v, XDP_DROP, "maxconn 2 reached");
    assert_eq!(k.maps.active_conns(bid), 2);
    assert_eq!(k.maps.service_stats(sid).drop_maxconn, 1);
}

/// BPF_PROG_TEST_RUN straight from a thread: aya's wrapper needs `&mut` on the program.
fn raw_test_run(prog_fd: i32, frame: &[u8], ifindex: u32) -> u32 {
    let ctx = xdp_md(frame.len(), ifindex);
    let mut out = vec![0u8; frame.len() + 256];
    let mut attr = [0u8; 128];
    attr[0..4].copy_from_slice(&(prog_fd as u32).to_ne_bytes());
    attr[8..12].copy_from_slice(&(frame.len() as u32).to_ne_bytes());
    attr[12..16].copy_from_slice(&(out.len() as u32).to_ne_bytes());
    attr[16..24].copy_from_slice(&(frame.as_ptr() as u64).to_ne_bytes());
    attr[24..32].copy_from_slice(&(out.as_mut_ptr() as u64).to_ne_bytes());
    attr[32..36].copy_from_slice(&1u32.to_ne_bytes()); // repeat
    attr[40..44].copy_from_slice(&(ctx.len() as u32).to_ne_bytes());
    attr[48..56].copy_from_slice(&(ctx.as_ptr() as u64).to_ne_bytes());
    // SAFETY: `union bpf_attr`'s test member, zero-padded; the buffers outlive the call.
    let r = unsafe { libc::syscall(libc::SYS_bpf, 10, attr.as_mut_ptr(), attr.len() as u32) };
    assert_eq!(
        r,
        0,
        "BPF_PROG_TEST_RUN: {}",
        std::io::Error::last_os_error()
    );
    u32::from_ne_bytes([attr[4], attr[5], attr[6], attr[7]])
}

/// Concurrent SYNs on every CPU never take more than `maxconn` slots. Each round raises
/// maxconn by one and every CPU sends a SYN at the same moment: exactly one may get the new
/// slot. Holds however the CPUs interleave, because testing and taking a slot is one atomic
/// fetch-add (with a read-then-add, two CPUs that read the same count both took the slot).
#[test]
fn maxconn_holds_under_concurrent_syns_on_every_cpu() {
    use std::os::fd::{AsFd as _, AsRawFd as _};
    use std::sync::Barrier;
    const ROUNDS: u32 = 300;
    let mut k = K::with_conntrack(65536);
    let mut l = standard();
    let bid = {
        k.publish(&l);
        k.applied.backend_ids[&("pg/PG1".into(), "a".into())]
    };
    let fd = {
        let xdp: &Xdp =
            k.dp.ebpf
                .program(PROGRAM_NAME)
                .expect("program")
                .try_into()
                .expect("xdp");
        xdp.fd().expect("loaded").as_fd().as_raw_fd()
    };
    let ifindex = k.ifindex;
    let cpus = std::thread::available_parallelism()
        .map_or(2, |n| n.get())
        .clamp(2, 16);
    let (go, done) = (Barrier::new(cpus + 1), Barrier::new(cpus + 1));
    let made = std::sync::atomic::AtomicU32::new(0);
    let mut over = Vec::new();
    std::thread::scope(|s| {
        for cpu in 0..cpus {
            let (go, done, made) = (&go, &done, &made);
            s.spawn(move || {
                // SAFETY: a zeroed cpu_set_t with one bit set, for this thread only.
                unsafe {
                    let mut set: libc::cpu_set_t = std::mem::zeroed();
                    libc::CPU_SET(cpu, &mut set);
                    libc::sched_setaffinity(0, std::mem::size_of_val(&set), &set);
                }
                for round in 0..ROUNDS {
                    let sport = 1024 + (round * cpus as u32 + cpu as u32) as u16;
                    let frame = client_syn(sport, 5000).build(&[]);
                    go.wait();
                    if raw_test_run(fd, &frame, ifindex) == XDP_TX {
                        made.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    }
                    done.wait();
                }
            });
        }
        for round in 1..=ROUNDS {
            l[0].backends[0].maxconn = round;
            k.publish(&l);
            go.wait();
            done.wait();
            let n = made.load(std::sync::atomic::Ordering::SeqCst);
            if n > round {
                over.push((round, n));
            }
        }
    });
    assert!(
        over.is_empty(),
        "{cpus} CPUs took more slots than maxconn (round, flows): {over:?}"
    );
    assert_eq!(made.into_inner(), ROUNDS, "one new slot per round, taken");
    assert_eq!(k.maps.active_conns(bid), ROUNDS);
    assert_eq!(k.flows().len() as u32, 2 * ROUNDS, "two entries per flow");
}

#[test]
fn a_backend_refusing_our_syn_is_counted_a_reset_after_an_answer_is_not() {
    let mut k = K::new();
    k.publish(&standard());
    let bid = k.applied.backend_ids[&("pg/PG1".into(), "a".into())];
    // Nothing listens: the backend answers the SYN with RST|ACK.
    let (node, snat) = open(&mut k, 51040, 5000);
    let refuse = Tcp::new((node, 5432), (VIP, snat))
        .rst()
        .ack(7778)
        .macs(node_mac(node), EDGE_MAC);
    let (v, out) = k.run(&refuse.build(&[]));
    assert_eq!(v, XDP_TX, "the client gets the refusal");
    let p = assert_csums(&out);
    assert_eq!((p.dst, p.dport), (CLIENT, 51040));
    assert_eq!(k.maps.backend_stats(bid).refused, 1);
    // A session the backend answered, reset later: not a refusal.
    let (node, snat) = open(&mut k, 51041, 5000);
    let synack = Tcp::new((node, 5432), (VIP, snat))
        .syn()
        .ack(7778)
        .seq(1)
        .macs(node_mac(node), EDGE_MAC);
    assert_eq!(k.run(&synack.build(&[])).0, XDP_TX);
    let reset = Tcp::new((node, 5432), (VIP, snat))
        .rst()
        .ack(7778)
        .seq(2)
        .macs(node_mac(node), EDGE_MAC);
    assert_eq!(k.run(&reset.build(&[])).0, XDP_TX);
    assert_eq!(k.maps.backend_stats(bid).refused, 1, "unchanged");
}

#[test]
fn empty_write_set_drops_syns_and_never_picks_a_non_primary() {
    let mut k = K::new();
    let mut l = standard();
    for b in &mut l[0].backends {
        b.state = Shutdown;
    }
    k.publish(&l);
    let (v, _) = k.run(&client_syn(51020, 5000).build(&[]));
    assert_eq!(v, XDP_DROP);
    let sid = k.applied.service_ids["pg/PG1"];
    assert_eq!(k.maps.service_stats(sid).drop_no_backend, 1);
    assert!(k.flows().is_empty());
}

#[test]
fn snat_port_collision_picks_another_port() {
    let mut k = K::new();
    k.publish(&standard());
    // Two clients with the same source port (in the SNAT range) to the same primary.
    let a = client_syn(40500, 5000);
    let mut b = a;
    b.src = Ipv4Addr::new(198, 18, 2, 51);
    tests::sh("ip neigh add 198.18.2.51 lladdr 02:c1:00:00:00:51 dev k0 nud permanent")
        .expect("neigh");
    let (_, o1) = k.run(&a.build(&[]));
    let (v, o2) = k.run(&b.build(&[]));
    assert_eq!(v, XDP_TX);
    let (p1, p2) = (assert_csums(&o1), assert_csums(&o2));
    assert_eq!(p1.sport, 40500);
    assert_ne!(p2.sport, 40500, "never two flows on one tuple");
    assert!((SNAT.0..=SNAT.1).contains(&p2.sport));
    assert_eq!(k.flows().len(), 4);
}

#[test]
fn traffic_not_for_a_service_passes_untouched() {
    let mut k = K::new();
    k.publish(&standard());
    let mut cases: Vec<(&str, Vec<u8>)> = vec![
        (
            "ssh to the edge host",
            Tcp::new((CLIENT, 50000), (VIP, 22)).syn().build(&[]),
        ),
        (
            "other address, port 5000",
            Tcp::new((CLIENT, 50000), (Ipv4Addr::new(198, 18, 2, 1), 5000))
                .syn()
                .build(&[]),
        ),
        (
            "patroni check reply to the edge",
            Tcp::new((PG_A, 8008), (Ipv4Addr::new(198, 18, 1, 1), 45000))
                .syn()
                .ack(1)
                .build(&[]),
        ),
        (
            "reply-looking packet with no flow",
            Tcp::new((PG_A, 5432), (VIP, 40001)).ack(1).build(b"x"),
        ),
    ];
    let mut udp = Vec::new();
    etherparse::PacketBuilder::ethernet2(CLIENT_MAC, EDGE_MAC)
        .ipv4(CLIENT.octets(), VIP.octets(), 64)
        .udp(5000, 5000)
        .write(&mut udp, b"udp")
        .expect("udp");
    cases.push(("udp to VIP:5000", udp));
    // ARP request for the VIP.
    let mut arp = vec![0xff; 6];
    arp.extend_from_slice(&CLIENT_MAC);
    arp.extend_from_slice(&[0x08, 0x06, 0, 1, 8, 0, 6, 4, 0, 1]);
    arp.extend_from_slice(&CLIENT_MAC);
    arp.extend_from_slice(&CLIENT.octets());
    arp.extend_from_slice(&[0; 6]);
    arp.extend_from_slice(&VIP.octets());
    cases.push(("arp", arp));
    // VRRP advertisement (IP protocol 112).
    let mut vrrp = Vec::new();
    etherparse::PacketBuilder::ethernet2([0, 0, 0x5e, 0, 1, 51], [1, 0, 0x5e, 0, 0, 0x12])
        .ipv4([198, 18, 2, 2], [224, 0, 0, 18], 255)
        .write(
            &mut vrrp,
            etherparse::IpNumber(112),
            &[0x31, 51, 100, 1, 0, 100, 0, 0, 198, 18, 2, 100],
        )
        .expect("vrrp");
    cases.push(("vrrp", vrrp));
    for (what, frame) in cases {
        let (v, out) = k.run(&frame);
        assert_eq!(v, XDP_PASS, "{what}: verdict");
        assert_eq!(out, frame, "{what}: untouched");
    }
    assert!(k.flows().is_empty());
}

#[test]
fn frames_flooded_to_us_for_another_host_are_left_alone() {
    let mut k = K::new();
    k.publish(&standard());
    // A switch that lost track of the VIP owner floods the frame: its destination MAC is the
    // other edge host's. Answering it would open a second flow for the same client.
    let other = client_syn(51050, 5000)
        .macs(CLIENT_MAC, [0x02, 0xed, 0, 0, 0, 0x02])
        .build(&[]);
    let (v, out) = k.run(&other);
    assert_eq!(v, XDP_PASS);
    assert_eq!(out, other, "untouched");
    assert!(k.flows().is_empty());
    assert_eq!(k.maps.counter(counter::PASS_OTHER_HOST), 1);
    // Addressed to us: served.
    assert_eq!(k.run(&client_syn(51050, 5000).build(&[])).0, XDP_TX);
}

#[test]
fn every_truncation_of_a_valid_frame_passes_untouched() {
    let mut k = K::new();
    k.publish(&standard());
    let full = client_syn(51030, 5000).build(b"payload!");
    for len in 14..full.len() {
        let frame = &full[..len];
        let (v, out) = k.run(frame);
        assert_eq!(v, XDP_PASS, "truncated to {len}");
        assert_eq!(out, frame, "truncated to {len}: untouched");
    }
    assert!(k.flows().is_empty());
    assert!(k.maps.counter(counter::PASS_MALFORMED) > 0);
}

#[test]
fn random_and_mutated_frames_never_crash_or_misroute() {
    let mut k = K::new();
    k.publish(&standard());
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    let mut rnd = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let base = client_syn(51040, 5000).build(b"0123456789");
    let backends = [PG_A, PG_B, PG_C];
    for i in 0..4000 {
        let frame: Vec<u8> = if i % 2 == 0 {
            let len = 14 + (rnd() % 200) as usize;
            (0..len).map(|_| rnd() as u8).collect()
        } else {
            let mut f = base.clone();
            for _ in 0..1 + rnd() % 3 {
                let at = (rnd() as usize) % f.len();
                f[at] = rnd() as u8;
            }
            f
        };
        let (v, out) = k.run(&frame);
        assert!(matches!(v, XDP_PASS | XDP_DROP | XDP_TX), "verdict {v}");
        if v == XDP_PASS {
            // Passed frames are either untouched or NATed for the kernel to forward.
            if out != frame {
                let p = frames::parse(&out).expect("rewritten frame parses");
                assert!(backends.contains(&p.dst), "passed rewrite to {}", p.dst);
            }
        }
        if v == XDP_TX {
            let p = frames::parse(&out).expect("transmitted frame parses");
            let in_src = Ipv4Addr::new(frame[26], frame[27], frame[28], frame[29]);
            let in_dport = u16::from_be_bytes([frame[36], frame[37]]);
            if out.len() == 54 && p.tcp.rst && p.dst == in_src {
                // A reset generated by the data path: always valid checksums.
                assert!(p.ip_csum_ok && p.tcp_csum_ok, "RST checksums");
            } else {
                // A translated packet: writes to the primary, reads to replicas, nothing else.
                let ok = match in_dport {
                    5000 => p.dst == PG_A,
                    5001 => p.dst == PG_B || p.dst == PG_C,
                    _ => false,
                };
                assert!(
                    ok && p.dport == 5432,
                    "misroute from port {in_dport}: {p:?}"
                );
            }
        }
    }
}

/// Not a test of behaviour: prints `test_run` nanoseconds per packet for the SYN path and the
/// established path against the minimal XDP_TX program, for `cargo xtask bench`.
#[test]
#[ignore = "benchmark; run by cargo xtask bench"]
fn bench_test_run_ns_per_packet() {
    // The default table size, so the SYN path measures inserts, not LRU eviction.
    let mut k = K::with_conntrack(router_ebpf::DEFAULT_CT_ENTRIES);
    // A range wide enough that the SYN path measures allocation, not exhaustion.
    k.publish_with(&standard(), (1024, 65535));
    let n = 20_000u32;
    let est_frame = {
        open(&mut k, 60000, 5000);
        Tcp::new((CLIENT, 60000), (VIP, 5000))
            .ack(1)
            .seq(7778)
            .macs(CLIENT_MAC, EDGE_MAC)
            .build(b"Q\x00\x00\x00\x0dselect 1\x00")
    };
    let repeat = |k: &mut K, prog: &str, frame: &[u8]| -> Result<f64, ProgramError> {
        let xdp: &mut Xdp =
            k.dp.ebpf
                .program_mut(prog)
                .expect("prog")
                .try_into()
                .expect("xdp");
        if xdp.fd().is_err() {
            xdp.load()?;
        }
        let ctx = xdp_md(frame.len(), k.ifindex);
        let mut out = vec![0u8; frame.len() + 256];
        let r = xdp.test_run(TestRunOptions {
            data_in: Some(frame),
            data_out: Some(&mut out),
            ctx_in: Some(&ctx),
            repeat: n,
            ..Default::default()
        })?;
        Ok(r.duration.as_nanos() as f64)
    };
    let base = repeat(&mut k, "baseline_tx", &est_frame).expect("baseline");
    let est = repeat(&mut k, PROGRAM_NAME, &est_frame).expect("established");
    // A new flow can only be measured one run at a time (a repeat would find the flow), so
    // the baseline is measured the same way for a like-for-like ratio.
    let single = |k: &mut K, prog: &str, f: &[u8]| -> f64 {
        let xdp: &mut Xdp =
            k.dp.ebpf
                .program_mut(prog)
                .expect("prog")
                .try_into()
                .expect("xdp");
        let ctx = xdp_md(f.len(), k.ifindex);
        let mut out = vec![0u8; f.len() + 256];
        let r = xdp
            .test_run(TestRunOptions {
                data_in: Some(f),
                data_out: Some(&mut out),
                ctx_in: Some(&ctx),
                ..Default::default()
            })
            .expect("single run");
        r.duration.as_nanos() as f64
    };
    let syns = 5000u16;
    let mut syn_total = 0f64;
    let mut base_single = 0f64;
    for i in 0..syns {
        let f = client_syn(1024 + i, 5000).build(&[]);
        base_single += single(&mut k, "baseline_tx", &f);
        syn_total += single(&mut k, PROGRAM_NAME, &f);
    }
    let syn = syn_total / f64::from(syns);
    let base_single = base_single / f64::from(syns);
    println!(
        "BENCH baseline_xdp_tx_ns={base:.1} established_ns={est:.1} established_ratio={:.2} baseline_single_run_ns={base_single:.1} syn_ns={syn:.1} syn_ratio={:.2}",
        est / base,
        syn / base_single
    );
}
