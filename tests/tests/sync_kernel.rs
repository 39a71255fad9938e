//! Kernel tests of flow-state sync: the real XDP object, loaded and run with
//! BPF_PROG_TEST_RUN, as in datapath_kernel.rs (a thread-private network namespace with one
//! veth and static neighbours, so `bpf_fib_lookup` resolves as on an edge host).
//!
//! A peer's flow is installed (and refreshed, and removed) through `pgrouter_gc` with a
//! `SyncRequest` frame built by the controller's own `sync::records` from a wire record; its
//! packets then go through `pgrouter`. Every translated frame is compared byte for byte with
//! one built independently by etherparse, which also verifies both checksums; table entries
//! are compared with entries built here field by field, not with the request that made them.
use std::{
    net::{IpAddr, Ipv4Addr},
    os::fd::{AsFd as _, AsRawFd as _, BorrowedFd},
    sync::Barrier,
};

use aya::{
    maps::{Array, MapData, PerCpuArray, RingBuf},
    programs::Xdp,
};
use pgrouter::{
    config::PortRange,
    dataplane::{
        Applied, Datapath, LoadOptions, Maps, gc::request_bytes, host::monotonic_ns, plan,
    },
    model::{BackendKey, BackendState, Balance, DesiredBackend, DesiredListener, ListenerKey},
    sync::{
        records::{self, Local},
        wire::{Endpoint, Record, Removal, Side},
    },
};
use router_ebpf::{
    FLOW_EVENT_CLOSED, FLOW_EVENT_ESTABLISHED, FLOW_F_ANSWERED, FLOW_F_CLOSED, FLOW_F_FIN_BACKEND,
    FLOW_F_FIN_CLIENT, FLOW_F_REPLY, FLOW_F_SYNCED, Flow, FlowEvent, FlowKey, GC_F_FORCE,
    GC_OP_REAP, GC_OP_SYNC_INSTALL, GC_OP_SYNC_REMOVE, GC_PROGRAM_NAME, GcRequest, PROGRAM_NAME,
    SYNC_F_EVENTS, SyncRequest, SyncState, SyncStats, counter, map_names,
};
use tests::{
    flows::{key, words},
    frames::{self, Tcp},
};

const XDP_ABORTED: u32 = 0;
const XDP_DROP: u32 = 1;
const XDP_PASS: u32 = 2;
const XDP_TX: u32 = 3;

const VIP: Ipv4Addr = Ipv4Addr::new(198, 18, 2, 100);
const CLIENT: Ipv4Addr = Ipv4Addr::new(198, 18, 2, 50);
const CLIENT2: Ipv4Addr = Ipv4Addr::new(198, 18, 2, 51);
const PG_A: Ipv4Addr = Ipv4Addr::new(198, 18, 1, 11);
const PG_PORT: u16 = 5432;
const VPORT: u16 = 5000;
const EDGE_MAC: [u8; 6] = [0x02, 0xed, 0, 0, 0, 0x01];
const SNAT: (u16, u16) = (40000, 40999);
const CLIENT_ISN: u32 = 7777;
const NODE_ISN: u32 = 9000;
const SEC: u64 = 1_000_000_000;
/// Further behind than the data path's sequence window (2^24) reaches.
const STALE: u32 = 1 << 25;
/// A PostgreSQL simple query, and the start of its answer.
const QUERY: &[u8] = b"Q\x00\x00\x00\x0dselect 1\x00";
const ANSWER: &[u8] = b"T\x00\x00\x00\x21";

fn node_mac(ip: Ipv4Addr) -> [u8; 6] {
    [0x02, 0xdb, 0, 0, 0, ip.octets()[3]]
}

fn client_mac(ip: Ipv4Addr) -> [u8; 6] {
    [0x02, 0xc1, 0, 0, 0, ip.octets()[3]]
}

fn mac(m: [u8; 6]) -> String {
    m.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

fn lkey() -> ListenerKey {
    ListenerKey::new("pg", "PG1")
}

/// The write listener VIP:5000 → node A (`maxconn`, 0 for none).
fn listeners(maxconn: u32) -> Vec<DesiredListener> {
    vec![DesiredListener {
        key: lkey(),
        vip: IpAddr::V4(VIP),
        port: VPORT,
        balance: Balance::RoundRobin,
        shutdown_sessions: true,
        empty_hold_ms: router_ebpf::DEFAULT_EMPTY_HOLD_MS,
        snat_addr: IpAddr::V4(VIP),
        backends: vec![DesiredBackend {
            node: "a".into(),
            addr: IpAddr::V4(PG_A),
            port: PG_PORT,
            maxconn,
            state: BackendState::Active,
        }],
    }]
}

/// One loaded data path in a private namespace, with its sync maps.
struct K {
    dp: Datapath,
    maps: Maps,
    applied: Applied,
    ifindex: u32,
    sync: Array<MapData, SyncState>,
    sync_stats: PerCpuArray<MapData, SyncStats>,
    events: RingBuf<MapData>,
}

impl K {
    fn new(maxconn: u32) -> Self {
        tests::netns::enter_private().expect("private netns");
        let script = format!(
            "ip link add k0 address {edge} type veth peer name k1 && ip link set k0 up && ip link set k1 up \
             && ip addr add 198.18.1.1/24 dev k0 && ip addr add 198.18.2.1/24 dev k0 \
             && sysctl -qw net.ipv4.ip_forward=1 \
             && ip neigh add {a} lladdr {am} dev k0 nud permanent \
             && ip neigh add {cl} lladdr {clm} dev k0 nud permanent \
             && ip neigh add {cl2} lladdr {cl2m} dev k0 nud permanent",
            edge = mac(EDGE_MAC),
            a = PG_A,
            am = mac(node_mac(PG_A)),
            cl = CLIENT,
            clm = mac(client_mac(CLIENT)),
            cl2 = CLIENT2,
            cl2m = mac(client_mac(CLIENT2)),
        );
        tests::sh(&script).expect("namespace set-up");
        let ifindex = unsafe { libc::if_nametoindex(c"k0".as_ptr()) };
        assert_ne!(ifindex, 0, "k0 exists");
        let mut dp = Datapath::load(&LoadOptions {
            pin_path: None,
            conntrack_entries: 4096,
            handshake_entries: router_ebpf::DEFAULT_HS_ENTRIES,
        })
        .expect("load the XDP object");
        let mut maps = Maps::take(&mut dp.ebpf).expect("maps");
        maps.allow_iface(ifindex, Some(EDGE_MAC)).expect("iface");
        let mut take = |name: &str| dp.ebpf.take_map(name).expect(name);
        let sync = Array::try_from(take(map_names::SYNC)).expect("PGR_SYNC");
        let sync_stats = PerCpuArray::try_from(take(map_names::SYNC_STATS)).expect("stats");
        let events = RingBuf::try_from(take(map_names::FLOW_EVENTS)).expect("PGR_FLOW_EVENTS");
        let mut k = Self {
            dp,
            maps,
            applied: Applied::default(),
            ifindex,
            sync,
            sync_stats,
            events,
        };
        let (delta, next) =
            plan(&listeners(maxconn), &k.applied, SNAT, monotonic_ns()).expect("plan");
        k.maps.apply(&delta).expect("apply");
        k.applied = next;
        k
    }

    fn run_on(&self, prog: &str, frame: &[u8]) -> (u32, Vec<u8>) {
        let xdp: &Xdp = self
            .dp
            .ebpf
            .program(prog)
            .expect("program")
            .try_into()
            .expect("xdp");
        let fd = xdp.fd().expect("loaded");
        let r =
            tests::xdp::test_run(fd.as_fd(), frame, self.ifindex, 1).expect("BPF_PROG_TEST_RUN");
        (r.verdict, r.frame)
    }

    /// A loaded program by fd, for threads (valid while this `K` lives).
    fn raw(&self, prog: &str) -> Raw {
        let xdp: &Xdp = self
            .dp
            .ebpf
            .program(prog)
            .expect("program")
            .try_into()
            .expect("xdp");
        Raw {
            fd: xdp.fd().expect("loaded").as_fd().as_raw_fd(),
            ifindex: self.ifindex,
        }
    }

    /// The data path on one frame.
    fn run(&self, frame: &[u8]) -> (u32, Vec<u8>) {
        self.run_on(PROGRAM_NAME, frame)
    }

    /// `pgrouter_gc` on a sync request, as the controller's sync runs it.
    fn sync_op(&self, req: &SyncRequest) -> u32 {
        self.run_on(GC_PROGRAM_NAME, &records::request_bytes(req)).0
    }

    fn gc(&self, req: &GcRequest) -> u32 {
        self.run_on(GC_PROGRAM_NAME, &request_bytes(req)).0
    }

    fn bid(&self) -> u32 {
        self.applied.backend_ids[&BackendKey::new(lkey(), "a")]
    }

    fn sid(&self) -> u32 {
        self.applied.service_ids[&lkey()]
    }

    /// This host's translation of received records (the whole SNAT range).
    fn local(&self) -> Local {
        Local::new(
            &self.applied,
            PortRange {
                first: SNAT.0,
                last: SNAT.1,
            },
        )
    }

    /// The install request for `r` received at `now_ns`.
    fn install_req(&self, r: &Record, now_ns: u64) -> SyncRequest {
        self.local()
            .install(r, now_ns)
            .expect("a record for this host")
    }

    fn entry(&self, key: &FlowKey) -> Option<Flow> {
        self.maps.conntrack.get(key, 0).ok()
    }

    /// Every conntrack entry, sorted (for "nothing changed").
    fn conntrack(&self) -> Vec<(FlowKey, Flow)> {
        let mut v: Vec<_> = self.maps.conntrack.iter().flatten().collect();
        v.sort_by_key(|(k, _)| *k);
        v
    }

    fn handshakes(&self) -> usize {
        self.maps.handshake.iter().flatten().count()
    }

    fn conns(&self) -> u32 {
        self.maps.active_conns(self.bid())
    }

    fn counter(&self, c: u32) -> u64 {
        self.maps.counter(c)
    }

    fn stats(&self) -> SyncStats {
        let mut t = SyncStats::default();
        if let Ok(v) = self.sync_stats.get(&0, 0) {
            v.iter().for_each(|s| t.accumulate(s));
        }
        t
    }

    fn set_sync(&mut self, s: SyncState) {
        self.sync.set(0, s, 0).expect("PGR_SYNC");
    }

    /// Every record in the ring now, oldest first.
    fn drain_events(&mut self) -> Vec<FlowEvent> {
        let mut out = Vec::new();
        while let Some(item) = self.events.next() {
            assert_eq!(item.len(), size_of::<FlowEvent>(), "record size");
            // SAFETY: `FlowEvent` is plain data of exactly this size (router_ebpf).
            out.push(unsafe { std::ptr::read_unaligned(item.as_ptr().cast::<FlowEvent>()) });
        }
        out
    }
}

/// A loaded program by fd: runs from any thread of the namespace.
#[derive(Clone, Copy)]
struct Raw {
    fd: i32,
    ifindex: u32,
}

impl Raw {
    fn run(self, frame: &[u8]) -> u32 {
        // SAFETY: the fd stays open while the `K` it came from lives, which outlives `self`.
        let fd = unsafe { BorrowedFd::borrow_raw(self.fd) };
        tests::xdp::test_run(fd, frame, self.ifindex, 1)
            .expect("BPF_PROG_TEST_RUN")
            .verdict
    }
}

/// Pins the calling thread to `cpu`, so racing threads run on different CPUs.
fn pin_to_cpu(cpu: usize) {
    // SAFETY: a zeroed cpu_set_t with one bit set, for this thread only.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        libc::sched_setaffinity(0, size_of_val(&set), &set);
    }
}

/// Runs every job at the same moment, each on its own thread (pinned round the CPUs).
/// Threads spawned here inherit the test thread's private namespace, where the ifindex is.
fn race(jobs: &[(Raw, Vec<u8>)]) -> Vec<u32> {
    let cpus = std::thread::available_parallelism().map_or(2, |n| n.get());
    let go = Barrier::new(jobs.len());
    std::thread::scope(|s| {
        let handles: Vec<_> = jobs
            .iter()
            .enumerate()
            .map(|(i, (raw, frame))| {
                let go = &go;
                s.spawn(move || {
                    pin_to_cpu(i % cpus);
                    go.wait();
                    raw.run(frame)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("racer"))
            .collect()
    })
}

/// One client connection through the VIP, as both of its ends see it.
#[derive(Clone, Copy, Debug)]
struct Conn {
    client: (Ipv4Addr, u16),
    /// The SNAT port of the backend leg.
    snat: u16,
}

impl Conn {
    fn new(client: (Ipv4Addr, u16), snat: u16) -> Self {
        Self { client, snat }
    }

    /// A client segment: `seq`, acknowledging `ack`.
    fn client_seg(&self, seq: u32, ack: u32) -> Tcp {
        Tcp::new(self.client, (VIP, VPORT))
            .seq(seq)
            .ack(ack)
            .macs(client_mac(self.client.0), EDGE_MAC)
    }

    /// A node segment: `seq`, acknowledging `ack`.
    fn node_seg(&self, seq: u32, ack: u32) -> Tcp {
        Tcp::new((PG_A, PG_PORT), (VIP, self.snat))
            .seq(seq)
            .ack(ack)
            .macs(node_mac(PG_A), EDGE_MAC)
    }

    fn fwd_key(&self) -> FlowKey {
        key(self.client, (VIP, VPORT))
    }

    fn reply_key(&self) -> FlowKey {
        key((PG_A, PG_PORT), (VIP, self.snat))
    }

    /// The flow's two entries as this host must hold them: forward (client → VIP, rewritten
    /// SNAT → node) and reply (node → SNAT, rewritten VIP → client), built field by field.
    fn entries(&self, bid: u32, sid: u32) -> (Flow, Flow) {
        let fwd = Flow {
            saddr: words(VIP),
            daddr: words(PG_A),
            sport: self.snat.to_be(),
            dport: PG_PORT.to_be(),
            backend_id: bid,
            service_id: sid,
            ..Flow::default()
        };
        let reply = Flow {
            saddr: words(VIP),
            daddr: words(self.client.0),
            sport: VPORT.to_be(),
            dport: self.client.1.to_be(),
            backend_id: bid,
            service_id: sid,
            flags: FLOW_F_REPLY,
            ..Flow::default()
        };
        (fwd, reply)
    }

    /// Runs segment `t` with `payload` and asserts it reached the other end translated, every
    /// byte as etherparse builds the translated segment (so both checksums are right too).
    fn passes(&self, k: &K, t: &Tcp, payload: &[u8], what: &str) {
        let (v, out) = k.run(&t.build(payload));
        assert_eq!(v, XDP_TX, "{what}: verdict");
        let want = if t.src == self.client.0 {
            expected(
                t,
                payload,
                node_mac(PG_A),
                (VIP, self.snat),
                (PG_A, PG_PORT),
            )
        } else {
            expected(
                t,
                payload,
                client_mac(self.client.0),
                (VIP, VPORT),
                self.client,
            )
        };
        assert_eq!(out, want, "{what}: every byte of the translated frame");
        assert_csums(&out);
    }

    /// The record a peer sends of this flow: the client's next sequence number is
    /// `client_next` (so the node acknowledged that much), the node's `node_next`; each
    /// direction last seen `idle_ms` before the sender sent it.
    fn record(&self, client_next: u32, node_next: u32, idle_ms: u32) -> Record {
        let ep = |(addr, port): (Ipv4Addr, u16)| Endpoint {
            addr: IpAddr::V4(addr),
            port,
        };
        Record {
            client: ep(self.client),
            vip: ep((VIP, VPORT)),
            node: ep((PG_A, PG_PORT)),
            snat: ep((VIP, self.snat)),
            fwd: Side {
                flags: 0,
                last_ack: node_next.to_be(),
                seq: client_next,
                peer_fin_end: 0,
                idle_ms,
            },
            reply: Side {
                flags: FLOW_F_ANSWERED,
                last_ack: client_next.to_be(),
                seq: node_next,
                peer_fin_end: 0,
                idle_ms,
            },
        }
    }

    /// The peer's report that this flow ended, `idle_ms` after its last packet there.
    fn removal(&self, idle_ms: u32) -> Removal {
        Removal {
            node: Endpoint {
                addr: IpAddr::V4(PG_A),
                port: PG_PORT,
            },
            snat: Endpoint {
                addr: IpAddr::V4(VIP),
                port: self.snat,
            },
            idle_ms,
        }
    }
}

/// The frame the data path must emit for `input` NATed to `(src, dst)`, sent from the edge
/// host's MAC to `dmac`: built independently.
fn expected(
    input: &Tcp,
    payload: &[u8],
    dmac: [u8; 6],
    src: (Ipv4Addr, u16),
    dst: (Ipv4Addr, u16),
) -> Vec<u8> {
    let mut t = *input;
    t.smac = EDGE_MAC;
    t.dmac = dmac;
    (t.src, t.sport) = src;
    (t.dst, t.dport) = dst;
    t.build(payload)
}

fn assert_csums(frame: &[u8]) -> frames::Parsed {
    let p = frames::parse(frame).expect("output parses");
    assert!(p.ip_csum_ok, "IPv4 checksum wrong in {p:?}");
    assert!(p.tcp_csum_ok, "TCP checksum wrong in {p:?}");
    p
}

/// Runs segment `t` and asserts the data path answered with a bare RST back to its sender.
fn assert_reset(k: &K, t: &Tcp, what: &str) {
    let (v, out) = k.run(&t.build(&[]));
    assert_eq!(v, XDP_TX, "{what}: verdict");
    assert_eq!(out.len(), 54, "{what}: a bare RST");
    let p = assert_csums(&out);
    assert!(p.tcp.rst, "{what}: a RST, got {p:?}");
    assert_eq!(
        ((p.src, p.sport), (p.dst, p.dport), (p.smac, p.dmac)),
        ((t.dst, t.dport), (t.src, t.sport), (t.dmac, t.smac)),
        "{what}: back to the sender"
    );
}

/// A local flow through the whole handshake (SYN, SYN-ACK, the client's ACK), each segment
/// checked byte for byte. The client's port, in the SNAT range and free, is kept as the
/// SNAT port.
fn handshake(k: &K, client: (Ipv4Addr, u16)) -> Conn {
    let c = Conn::new(client, client.1);
    let syn = Tcp::new(client, (VIP, VPORT))
        .syn()
        .seq(CLIENT_ISN)
        .macs(client_mac(client.0), EDGE_MAC);
    c.passes(k, &syn, &[], "SYN");
    let mut syn_ack = c.node_seg(NODE_ISN, CLIENT_ISN + 1);
    syn_ack.syn = true;
    c.passes(k, &syn_ack, &[], "SYN-ACK");
    c.passes(
        k,
        &c.client_seg(CLIENT_ISN + 1, NODE_ISN + 1),
        &[],
        "the client's ACK",
    );
    assert!(k.entry(&c.fwd_key()).is_some(), "established");
    c
}

/// The client's FIN, the node's ACK of it with its own FIN, the client's ACK of that, from
/// the client's next sequence number `s` and the node's `n`.
fn close_by_fins(k: &K, c: &Conn, s: u32, n: u32, what: &str) {
    let segs = [
        c.client_seg(s, n).fin(),
        c.node_seg(n, s + 1).fin(),
        c.client_seg(s + 1, n + 1),
    ];
    for (i, t) in segs.iter().enumerate() {
        c.passes(k, t, &[], &format!("{what}: closing segment {i}"));
    }
}

/// A peer's flow: client 51000 → VIP:5000, rewritten to node A from SNAT port 40500.
const PEER_FLOW: Conn = Conn {
    client: (CLIENT, 51000),
    snat: 40500,
};

/// An installed flow holds both entries, marked synced, and exactly one slot, whatever the
/// backend's `maxconn`; its first packets are translated as a local flow's are, and each
/// direction's first packet adopts its entry (`adopted`).
#[test]
fn an_installed_flow_is_translated_both_ways_and_adopted_by_its_first_packets() {
    let k = K::new(1);
    let (bid, sid) = (k.bid(), k.sid());
    // The one slot is taken by a local flow: the backend is at maxconn.
    let local = handshake(&k, (CLIENT2, 40100));
    assert_eq!(k.conns(), 1);
    let c = PEER_FLOW;
    let now = monotonic_ns();
    let req = k.install_req(&c.record(CLIENT_ISN + 1, NODE_ISN + 1, 2_000), now);
    assert_eq!(req.op, GC_OP_SYNC_INSTALL);
    assert_eq!(k.sync_op(&req), XDP_DROP, "installed");
    let seen = now - 2 * SEC;
    let (mut fwd, mut reply) = c.entries(bid, sid);
    fwd.flags = FLOW_F_SYNCED;
    fwd.last_ack = (NODE_ISN + 1).to_be();
    fwd.seq = CLIENT_ISN + 1;
    fwd.last_seen = seen;
    reply.flags = FLOW_F_REPLY | FLOW_F_ANSWERED | FLOW_F_SYNCED;
    reply.last_ack = (CLIENT_ISN + 1).to_be();
    reply.seq = NODE_ISN + 1;
    reply.last_seen = seen;
    assert_eq!(k.entry(&c.fwd_key()), Some(fwd), "forward entry");
    assert_eq!(k.entry(&c.reply_key()), Some(reply), "reply entry");
    assert_eq!(
        k.conntrack().len(),
        4,
        "the local flow's two, the peer's two"
    );
    assert_eq!(k.handshakes(), 0, "nothing in the handshake table");
    assert_eq!(
        k.conns(),
        2,
        "one slot more, past maxconn: the node holds it"
    );
    assert_eq!(k.stats(), SyncStats::default(), "nothing counted yet");

    // The client's next segment, as the node's last ACK expects it.
    let q = c.client_seg(CLIENT_ISN + 1, NODE_ISN + 1);
    c.passes(&k, &q, QUERY, "the client's query");
    let f = k.entry(&c.fwd_key()).expect("forward entry");
    assert_eq!(f.flags, 0, "the forward entry is this host's now");
    assert_eq!(f.seq, CLIENT_ISN + 1 + QUERY.len() as u32, "learnt its end");
    assert_eq!(f.last_ack, (NODE_ISN + 1).to_be());
    assert!(f.last_seen > seen, "refreshed");
    assert_eq!(
        k.entry(&c.reply_key()).map(|r| r.flags),
        Some(reply.flags),
        "the reply entry waits for the node's first packet"
    );
    assert_eq!(k.stats().adopted, 1);

    let a = c.node_seg(NODE_ISN + 1, CLIENT_ISN + 1 + QUERY.len() as u32);
    c.passes(&k, &a, ANSWER, "the node's answer");
    let r = k.entry(&c.reply_key()).expect("reply entry");
    assert_eq!(r.flags, FLOW_F_REPLY | FLOW_F_ANSWERED, "adopted");
    assert_eq!(r.seq, NODE_ISN + 1 + ANSWER.len() as u32);
    assert_eq!(k.stats().adopted, 2, "one per direction");
    // Later packets are plain established ones.
    c.passes(
        &k,
        &q.seq(CLIENT_ISN + 1 + QUERY.len() as u32),
        QUERY,
        "again",
    );
    assert_eq!(k.stats().adopted, 2);
    assert_eq!(k.counter(counter::SEQ_OUT_OF_WINDOW), 0);
    assert_eq!(k.conns(), 2);
    let st = k.maps.service_stats(sid);
    assert_eq!((st.packets_in, st.packets_out), (2 + 2, 1 + 1), "accounted");
    assert!(
        k.entry(&local.fwd_key()).is_some(),
        "the local flow untouched"
    );
}

/// A synced flow whose stored numbers are far behind the connection's (the peer's last
/// report was more than the sequence window ago) learns from its first packet in each
/// direction; then acknowledged FINs, or an exact RST, close it and give its slot back once.
/// The same stale numbers in a local (not synced) flow are judged out of window: the check
/// that the synced bit switches off.
#[test]
fn a_stale_synced_flow_learns_from_its_first_packets_and_closes_exactly_once() {
    let k = K::new(1);
    let (s, n) = (CLIENT_ISN + 1, NODE_ISN + 1);
    let (qs, an) = (s + QUERY.len() as u32, n + ANSWER.len() as u32);
    let c = PEER_FLOW;
    let stale = c.record(s.wrapping_sub(STALE), n.wrapping_sub(STALE), 1_000);
    assert_eq!(k.sync_op(&k.install_req(&stale, monotonic_ns())), XDP_DROP);
    assert_eq!(k.conns(), 1);
    c.passes(&k, &c.client_seg(s, n), QUERY, "query");
    c.passes(&k, &c.node_seg(n, qs), ANSWER, "answer");
    assert_eq!(k.counter(counter::SEQ_OUT_OF_WINDOW), 0, "both learnt");
    let (f, r) = (k.entry(&c.fwd_key()), k.entry(&c.reply_key()));
    let (f, r) = (f.expect("fwd"), r.expect("reply"));
    assert_eq!((f.seq, f.last_ack), (qs, n.to_be()), "forward numbers");
    assert_eq!((r.seq, r.last_ack), (an, qs.to_be()), "reply numbers");
    close_by_fins(&k, &c, qs, an, "adopted flow");
    let f = k.entry(&c.fwd_key()).expect("a closed flow lingers");
    let closed = FLOW_F_CLOSED | FLOW_F_FIN_CLIENT | FLOW_F_FIN_BACKEND;
    assert_eq!(f.flags & closed, closed, "closed by both FINs");
    assert_eq!(k.conns(), 0, "slot given back");
    close_by_fins(&k, &c, qs, an, "retransmitted");
    assert_eq!(
        k.conns(),
        0,
        "not given back twice (below zero reads near u32::MAX)"
    );
    // The freed slot (maxconn 1) serves a new local flow.
    handshake(&k, (CLIENT2, 40101));
    assert_eq!(k.conns(), 1);

    // Exact RSTs, from the node after the client's first packet and from the client after
    // both directions spoke.
    let k = K::new(0);
    for (i, rst_from_node) in [true, false].into_iter().enumerate() {
        let c = Conn::new((CLIENT, 51100 + i as u16), 40600 + i as u16);
        let stale = c.record(s.wrapping_sub(STALE), n.wrapping_sub(STALE), 1_000);
        assert_eq!(k.sync_op(&k.install_req(&stale, monotonic_ns())), XDP_DROP);
        assert_eq!(k.conns(), 1, "flow {i}: installed");
        c.passes(&k, &c.client_seg(s, n), QUERY, "query");
        let rst = if rst_from_node {
            c.node_seg(n, qs).rst()
        } else {
            c.passes(&k, &c.node_seg(n, qs), ANSWER, "answer");
            c.client_seg(qs, an).rst()
        };
        c.passes(&k, &rst, &[], &format!("flow {i}: exact RST"));
        let f = k.entry(&c.fwd_key()).expect("lingers");
        assert_ne!(f.flags & FLOW_F_CLOSED, 0, "flow {i}: closed");
        assert_eq!(k.conns(), 0, "flow {i}: slot back");
        c.passes(&k, &rst, &[], &format!("flow {i}: repeated RST"));
        assert_eq!(k.conns(), 0, "flow {i}: once");
    }
    assert_eq!(k.counter(counter::RST_NOT_EXACT), 0);
    assert_eq!(k.counter(counter::SEQ_OUT_OF_WINDOW), 0);

    // Without the synced bit the stale numbers would be judged out of window: the kernel
    // refuses such an install outright.
    let c = Conn::new((CLIENT, 51200), 40700);
    let mut req = k.install_req(
        &c.record(s.wrapping_sub(STALE), n.wrapping_sub(STALE), 1_000),
        monotonic_ns(),
    );
    req.fwd.flags &= !FLOW_F_SYNCED;
    req.reply.flags &= !FLOW_F_SYNCED;
    assert_eq!(k.sync_op(&req), XDP_ABORTED);
    assert!(k.entry(&c.fwd_key()).is_none(), "nothing installed");
    assert_eq!(k.conns(), 0, "no slot taken");
    assert_eq!(k.stats().adopted, 4, "the adoptions above");
}

/// After a stale synced flow's first client segment, the client's next segments (before the
/// node has said anything here) are still learnt: a client that sends its query in two
/// segments, then closes, must have its FIN counted once the node acknowledges it, so both
/// FINs close the flow and give its slot back.
#[test]
fn a_stale_synced_flows_second_segment_in_one_direction_is_learnt() {
    let k = K::new(0);
    let (s, n) = (CLIENT_ISN + 1, NODE_ISN + 1);
    let len = QUERY.len() as u32;
    let c = PEER_FLOW;
    let stale = c.record(s.wrapping_sub(STALE), n.wrapping_sub(STALE), 1_000);
    assert_eq!(k.sync_op(&k.install_req(&stale, monotonic_ns())), XDP_DROP);
    c.passes(&k, &c.client_seg(s, n), QUERY, "first segment");
    c.passes(&k, &c.client_seg(s + len, n), QUERY, "second segment");
    let f = k.entry(&c.fwd_key()).expect("fwd");
    let out_of_window = k.counter(counter::SEQ_OUT_OF_WINDOW);
    close_by_fins(&k, &c, s + 2 * len, n, "after two client segments");
    let g = k.entry(&c.fwd_key()).expect("fwd");
    assert!(
        out_of_window == 0 && f.seq == s + 2 * len && g.flags & FLOW_F_CLOSED != 0,
        "second client segment judged against the reply entry's stale last_ack: \
         seq_out_of_window {out_of_window}, forward seq {} (want {}), forward flags after \
         both FINs {:#x} (closed: {}), slots held {}",
        f.seq,
        s + 2 * len,
        g.flags,
        g.flags & FLOW_F_CLOSED != 0,
        k.conns()
    );
    assert_eq!(k.conns(), 0);
}

/// Install is newest-wins: the same request again, or one older than what the table holds,
/// changes nothing (`XDP_PASS`); a newer one takes the peer's numbers and marks the flow
/// synced again (`XDP_DROP`). Never a second slot.
#[test]
fn install_is_idempotent_and_the_newest_report_wins() {
    let k = K::new(0);
    let c = PEER_FLOW;
    let (s, n) = (CLIENT_ISN + 1, NODE_ISN + 1);
    let base = monotonic_ns() - 10 * SEC;
    let first = k.install_req(&c.record(s, n, 5_000), base);
    assert_eq!(k.sync_op(&first), XDP_DROP);
    let held = k.conntrack();
    assert_eq!(held.len(), 2);
    assert_eq!(k.conns(), 1);
    assert_eq!(k.sync_op(&first), XDP_PASS, "the same request");
    let older = k.install_req(&c.record(s + 100, n + 100, 6_000), base);
    assert_eq!(k.sync_op(&older), XDP_PASS, "an older report");
    // As new as the table in one direction, older in the other: not newer.
    let mut one_side = older;
    one_side.reply.last_seen = first.reply.last_seen;
    assert_eq!(k.sync_op(&one_side), XDP_PASS, "as new, not newer");
    assert_eq!(k.conntrack(), held, "nothing changed");
    assert_eq!(k.conns(), 1);

    let newer = k.install_req(&c.record(s + 1000, n + 2000, 1_000), base);
    assert_eq!(k.sync_op(&newer), XDP_DROP, "a newer report");
    let (f, r) = (k.entry(&c.fwd_key()), k.entry(&c.reply_key()));
    let (f, r) = (f.expect("fwd"), r.expect("reply"));
    assert_eq!(
        (f.seq, f.last_ack, f.last_seen),
        (s + 1000, (n + 2000).to_be(), base - SEC),
        "forward entry takes the report's numbers"
    );
    assert_eq!(
        (r.seq, r.last_ack, r.last_seen),
        (n + 2000, (s + 1000).to_be(), base - SEC),
        "reply entry takes the report's numbers"
    );
    let (mut fwd, mut reply) = c.entries(k.bid(), k.sid());
    fwd.flags = FLOW_F_SYNCED;
    (fwd.seq, fwd.last_ack, fwd.last_seen) = (f.seq, f.last_ack, f.last_seen);
    reply.flags = FLOW_F_REPLY | FLOW_F_ANSWERED | FLOW_F_SYNCED;
    (reply.seq, reply.last_ack, reply.last_seen) = (r.seq, r.last_ack, r.last_seen);
    assert_eq!((f, r), (fwd, reply), "the rewrite kept");
    assert_eq!(k.conns(), 1, "a refresh takes no slot");
    assert_eq!(k.sync_op(&newer), XDP_PASS, "applied once");

    // A packet here is newer than any report sent before it: the adoption stands.
    c.passes(&k, &c.client_seg(s + 1000, n + 2000), QUERY, "query");
    let adopted = k.entry(&c.fwd_key()).expect("fwd");
    assert_eq!(adopted.flags, 0);
    let stale = k.install_req(&c.record(s + 1000, n + 2000, 0), monotonic_ns() - SEC);
    assert_eq!(k.sync_op(&stale), XDP_PASS, "older than the packet");
    assert_eq!(
        k.entry(&c.fwd_key()),
        Some(adopted),
        "kept as the packet left it"
    );
    // A report newer than the packet marks the flow synced again: its next packet here
    // learns afresh.
    let fresh = k.install_req(&c.record(s + 5000, n + 6000, 0), monotonic_ns() + SEC);
    assert_eq!(k.sync_op(&fresh), XDP_DROP);
    let f = k.entry(&c.fwd_key()).expect("fwd");
    assert_eq!((f.flags, f.seq), (FLOW_F_SYNCED, s + 5000));
    assert_eq!(k.conns(), 1);
}

/// A request that would make a second owner of a tuple or a SNAT port here is a conflict
/// (`XDP_TX`) and changes nothing; a malformed request is refused (`XDP_ABORTED`).
#[test]
fn conflicting_and_malformed_installs_change_nothing() {
    let k = K::new(0);
    let local = handshake(&k, (CLIENT2, 40100));
    let held = k.conntrack();
    let (s, n) = (CLIENT_ISN + 1, NODE_ISN + 1);
    let now = monotonic_ns();
    // Another client's flow on the local flow's SNAT port (node A:5432 → VIP:40100).
    let same_port = Conn::new((CLIENT, 51300), local.snat);
    let req = k.install_req(&same_port.record(s, n, 0), now);
    assert_eq!(k.sync_op(&req), XDP_TX, "the SNAT port holds another flow");
    // The local flow's own client tuple, rewritten from another SNAT port.
    let same_tuple = Conn::new(local.client, 40900);
    let req = k.install_req(&same_tuple.record(s, n, 0), now + SEC);
    assert_eq!(k.sync_op(&req), XDP_TX, "the tuple holds another flow");
    assert_eq!(k.conntrack(), held, "nothing changed");
    assert_eq!(k.conns(), 1);

    let good = k.install_req(&PEER_FLOW.record(s, n, 0), now);
    let mut bad = Vec::new();
    let mut r = good;
    r.fwd.flags |= FLOW_F_REPLY;
    bad.push(("forward entry marked reply", r));
    let mut r = good;
    r.fwd.flags |= FLOW_F_CLOSED;
    bad.push(("a closed flow", r));
    let mut r = good;
    r.reply.flags &= !FLOW_F_REPLY;
    bad.push(("reply entry not marked reply", r));
    let mut r = good;
    r.reply.dport = 51301u16.to_be();
    bad.push(("reply entry rewrites to another client", r));
    let mut r = good;
    r.key.sport = 51302u16.to_be();
    bad.push(("key is not the reply entry's peer", r));
    let mut r = good;
    r.reply.daddr = words(CLIENT2);
    bad.push(("reply entry rewrites to another client address", r));
    let mut r = good;
    r.fwd.backend_id = router_ebpf::MAX_BACKENDS;
    r.reply.backend_id = router_ebpf::MAX_BACKENDS;
    bad.push(("no such backend", r));
    for (what, r) in &bad {
        assert_eq!(k.sync_op(r), XDP_ABORTED, "{what}");
    }
    let short = &records::request_bytes(&good)[..size_of::<SyncRequest>() - 1];
    assert_eq!(
        k.run_on(GC_PROGRAM_NAME, short).0,
        XDP_ABORTED,
        "short frame"
    );
    assert_eq!(k.conntrack(), held, "nothing changed");
    assert_eq!(k.conns(), 1);
    assert_eq!(
        k.sync_op(&good),
        XDP_DROP,
        "the good request still installs"
    );
    assert_eq!(k.conns(), 2);
}

/// A SNAT port held by a local flow still in its handshake (`PGR_HANDSHAKE`) is held as much
/// as one held by an established flow: installing a peer's flow on it is a conflict, or the
/// node's SYN-ACK for the local handshake is translated with the peer's flow's entry.
#[test]
fn an_install_on_a_snat_port_of_a_local_handshake_is_a_conflict() {
    let k = K::new(0);
    let local = Conn::new((CLIENT2, 40100), 40100);
    let syn = Tcp::new(local.client, (VIP, VPORT))
        .syn()
        .seq(CLIENT_ISN)
        .macs(client_mac(CLIENT2), EDGE_MAC);
    local.passes(&k, &syn, &[], "SYN");
    assert_eq!(k.handshakes(), 2, "half-open");
    let peer = Conn::new((CLIENT, 51300), local.snat);
    let req = k.install_req(
        &peer.record(CLIENT_ISN + 1, NODE_ISN + 1, 0),
        monotonic_ns(),
    );
    let v = k.sync_op(&req);
    let mut syn_ack = local.node_seg(NODE_ISN, CLIENT_ISN + 1);
    syn_ack.syn = true;
    let (_, out) = k.run(&syn_ack.build(&[]));
    let p = frames::parse(&out).expect("parses");
    assert_eq!(
        (v, k.conntrack().len(), k.conns()),
        (XDP_TX, 0, 0),
        "install over a half-open flow's SNAT port; the local SYN-ACK then went to {}:{}",
        p.dst,
        p.dport
    );
}

/// `GC_OP_SYNC_REMOVE` (by reply key) ends a synced flow (slot given back once) and leaves
/// alone a flow that is live here: a local one, or an adopted one, seen here after the
/// report's last packet. A flow idle here since before the report is removed.
#[test]
fn sync_remove_ends_a_synced_flow_but_not_one_live_here() {
    let k = K::new(0);
    let (s, n) = (CLIENT_ISN + 1, NODE_ISN + 1);
    let c = PEER_FLOW;
    assert_eq!(
        k.sync_op(&k.install_req(&c.record(s, n, 0), monotonic_ns())),
        XDP_DROP
    );
    assert_eq!(k.conns(), 1);
    // A report much older than the synced copy still removes it: nothing happened here.
    let rm = records::remove(&c.removal(60_000), monotonic_ns()).expect("remove");
    assert_eq!(rm.op, GC_OP_SYNC_REMOVE);
    assert_eq!(rm.key, c.reply_key());
    assert_eq!(k.sync_op(&rm), XDP_DROP, "removed");
    assert!(k.conntrack().is_empty(), "both entries gone");
    assert_eq!(k.conns(), 0, "slot back");
    assert_eq!(k.sync_op(&rm), XDP_PASS, "gone already");
    assert_eq!(k.conns(), 0, "once");

    // A local flow, live after the report's last packet.
    let local = handshake(&k, (CLIENT2, 40100));
    let held = k.conntrack();
    let rm_local = records::remove(&local.removal(1_000), monotonic_ns()).expect("remove");
    assert_eq!(k.sync_op(&rm_local), XDP_PASS, "live here");
    let mut by_fwd_key = rm_local;
    by_fwd_key.key = local.fwd_key();
    assert_eq!(k.sync_op(&by_fwd_key), XDP_PASS, "not a reply key");
    assert_eq!(k.conntrack(), held, "intact");
    assert_eq!(k.conns(), 1);
    local.passes(
        &k,
        &local.client_seg(s, n),
        QUERY,
        "the local flow carries on",
    );

    // An adopted flow, live after the report's last packet.
    assert_eq!(
        k.sync_op(&k.install_req(&c.record(s, n, 0), monotonic_ns() - 5 * SEC)),
        XDP_DROP
    );
    c.passes(&k, &c.client_seg(s, n), QUERY, "query adopts it");
    let held = k.conntrack();
    let rm = records::remove(&c.removal(1_000), monotonic_ns()).expect("remove");
    assert_eq!(k.sync_op(&rm), XDP_PASS, "live here");
    assert_eq!(k.conntrack(), held, "intact");
    assert_eq!(k.conns(), 2);
    // A report of a close after its last packet here: it ended at the peer after all.
    let rm = records::remove(&c.removal(0), monotonic_ns() + SEC).expect("remove");
    assert_eq!(k.sync_op(&rm), XDP_DROP, "ended");
    assert!(k.entry(&c.fwd_key()).is_none() && k.entry(&c.reply_key()).is_none());
    assert_eq!(k.conns(), 1, "its slot back, the local flow's held");
    assert!(k.entry(&local.fwd_key()).is_some());
}

/// With `SYNC_F_EVENTS`, a handshake completed here writes one established event (forward key,
/// both entries as inserted) and its close one closed event (reply key, the forward entry);
/// without it nothing is written. A synced flow ended by the peer's report writes nothing
/// (the peer owns it); an adopted one is this host's, and its close is reported.
#[test]
fn flow_events_report_local_flows_only_while_enabled() {
    let mut k = K::new(0);
    let (bid, sid) = (k.bid(), k.sid());
    k.set_sync(SyncState {
        flags: SYNC_F_EVENTS,
        ..SyncState::default()
    });
    let before = monotonic_ns();
    let c = handshake(&k, (CLIENT, 40200));
    let ev = k.drain_events();
    assert_eq!(ev.len(), 1, "one event per completed handshake: {ev:?}");
    let e = ev[0];
    assert_eq!((e.kind, e._pad), (FLOW_EVENT_ESTABLISHED, 0));
    assert_eq!(e.key, c.fwd_key());
    let (mut fwd, mut reply) = c.entries(bid, sid);
    assert!(e.fwd.last_seen >= before - SEC && e.fwd.last_seen <= monotonic_ns());
    fwd.last_seen = e.fwd.last_seen;
    reply.flags = FLOW_F_REPLY | FLOW_F_ANSWERED;
    reply.last_ack = (CLIENT_ISN + 1).to_be();
    reply.last_seen = e.fwd.last_seen;
    assert_eq!(e.fwd, fwd, "the forward entry as inserted");
    assert_eq!(e.reply, reply, "the reply entry as inserted");
    assert_eq!(
        k.entry(&c.reply_key()),
        Some(reply),
        "as the table holds it"
    );
    assert_eq!(k.stats().events, 1);

    let (s, n) = (CLIENT_ISN + 1, NODE_ISN + 1);
    c.passes(&k, &c.client_seg(s, n), QUERY, "query");
    assert!(k.drain_events().is_empty(), "data writes no event");
    let qs = s + QUERY.len() as u32;
    close_by_fins(&k, &c, qs, n, "local flow");
    let ev = k.drain_events();
    assert_eq!(ev.len(), 1, "one event per close: {ev:?}");
    let e = ev[0];
    assert_eq!(e.kind, FLOW_EVENT_CLOSED);
    assert_eq!(e.key, c.reply_key(), "named by its SNAT port");
    let f = k.entry(&c.fwd_key()).expect("lingers closed");
    assert_ne!(f.flags & FLOW_F_CLOSED, 0);
    assert_eq!(e.fwd, f, "the forward entry as closed");
    assert_eq!(e.reply, Flow::default(), "no reply entry");
    close_by_fins(&k, &c, qs, n, "retransmitted");
    assert!(k.drain_events().is_empty(), "closed once");
    assert_eq!(k.stats().events, 2);

    // An expiry reaped by the GC is a close too.
    let d = handshake(&k, (CLIENT, 40201));
    assert_eq!(k.drain_events().len(), 1);
    let reap = GcRequest {
        op: GC_OP_REAP,
        flags: GC_F_FORCE,
        key: d.fwd_key(),
        ..Default::default()
    };
    assert_eq!(k.gc(&reap), XDP_DROP);
    let ev = k.drain_events();
    assert_eq!(ev.len(), 1, "{ev:?}");
    assert_eq!((ev[0].kind, ev[0].key), (FLOW_EVENT_CLOSED, d.reply_key()));

    // Installs, and the end of a synced flow by the peer's report or the GC, write nothing.
    let p = PEER_FLOW;
    let install = k.install_req(&p.record(s, n, 0), monotonic_ns());
    assert_eq!(k.sync_op(&install), XDP_DROP);
    let rm = records::remove(&p.removal(0), monotonic_ns()).expect("remove");
    assert_eq!(k.sync_op(&rm), XDP_DROP);
    assert_eq!(k.sync_op(&install), XDP_DROP, "installed again");
    let reap = GcRequest {
        key: p.fwd_key(),
        ..reap
    };
    assert_eq!(k.gc(&reap), XDP_DROP);
    assert!(k.drain_events().is_empty(), "the peer owns a synced flow");
    // Adopted (its client spoke here), its close is this host's to report.
    assert_eq!(k.sync_op(&install), XDP_DROP, "installed again");
    p.passes(&k, &p.client_seg(s, n), QUERY, "query");
    p.passes(&k, &p.node_seg(n, qs), ANSWER, "answer");
    close_by_fins(&k, &p, qs, n + ANSWER.len() as u32, "adopted flow");
    let ev = k.drain_events();
    assert_eq!(ev.len(), 1, "{ev:?}");
    assert_eq!((ev[0].kind, ev[0].key), (FLOW_EVENT_CLOSED, p.reply_key()));
    assert_eq!(k.conns(), 0);
    let events = k.stats().events;
    assert_eq!(events, 5);

    // Events off: nothing written.
    k.set_sync(SyncState::default());
    let e = handshake(&k, (CLIENT, 40202));
    close_by_fins(&k, &e, s, n, "flow without events");
    assert_eq!(
        k.entry(&e.fwd_key()).map(|f| f.flags & FLOW_F_CLOSED),
        Some(FLOW_F_CLOSED)
    );
    assert!(k.drain_events().is_empty(), "events off");
    assert_eq!(k.stats().events, events);
    assert_eq!(k.stats().events_lost, 0);
}

/// In the takeover grace window a mid-flow packet without a flow is dropped (`grace_drops`),
/// not answered by a RST: a client's to a service, a node's to a port in the grace range
/// (outside it the kernel's stack gets it). After the window, the usual answers.
#[test]
fn the_grace_window_drops_mid_flow_packets_without_a_flow() {
    let mut k = K::new(0);
    let (gmin, gmax) = (40000, 40999);
    k.set_sync(SyncState {
        flags: 0,
        grace_port_min: gmin,
        grace_port_max: gmax,
        grace_until_ns: monotonic_ns() + 60 * SEC,
    });
    let stray = Tcp::new((CLIENT, 53000), (VIP, VPORT))
        .seq(1234)
        .ack(424242)
        .macs(client_mac(CLIENT), EDGE_MAC);
    assert_eq!(k.run(&stray.build(b"Q")).0, XDP_DROP, "client mid-flow");
    assert_eq!(k.stats().grace_drops, 1);
    assert_eq!(k.counter(counter::RST_UNKNOWN_FLOW), 0, "no RST");
    assert_eq!(k.maps.service_stats(k.sid()).ct_miss, 1, "still a miss");
    // A stray RST is dropped as ever, and not counted as a grace drop.
    assert_eq!(k.run(&stray.rst().build(&[])).0, XDP_DROP);
    assert_eq!(k.counter(counter::DROP_RST_NO_FLOW), 1);
    assert_eq!(k.stats().grace_drops, 1);
    // A SYN still opens a flow.
    let c = Conn::new((CLIENT, 40300), 40300);
    let syn = Tcp::new(c.client, (VIP, VPORT))
        .syn()
        .seq(CLIENT_ISN)
        .macs(client_mac(CLIENT), EDGE_MAC);
    c.passes(&k, &syn, &[], "SYN in the grace window");

    let node_to = |port: u16| {
        Tcp::new((PG_A, PG_PORT), (VIP, port))
            .seq(5555)
            .ack(6666)
            .macs(node_mac(PG_A), EDGE_MAC)
    };
    for (i, port) in [gmin, 40500, gmax].into_iter().enumerate() {
        assert_eq!(
            k.run(&node_to(port).build(b"D")).0,
            XDP_DROP,
            "node to SNAT port {port}"
        );
        assert_eq!(k.stats().grace_drops, 2 + i as u64);
    }
    let mut node_syn = node_to(40500);
    node_syn.syn = true;
    for (what, t) in [
        ("below the range", node_to(gmin - 1)),
        ("above the range", node_to(gmax + 1)),
        ("a SYN", node_syn),
    ] {
        let frame = t.build(b"D");
        let (v, out) = k.run(&frame);
        assert_eq!(
            (v, out == frame),
            (XDP_PASS, true),
            "{what}: passed untouched"
        );
    }
    assert_eq!(k.stats().grace_drops, 4);

    // The window is over.
    k.set_sync(SyncState {
        grace_until_ns: monotonic_ns() - SEC,
        ..k.sync.get(&0, 0).expect("PGR_SYNC")
    });
    assert_reset(&k, &stray, "client mid-flow after the window");
    assert_eq!(k.counter(counter::RST_UNKNOWN_FLOW), 1);
    let frame = node_to(40500).build(b"D");
    assert_eq!(
        k.run(&frame),
        (XDP_PASS, frame.clone()),
        "node after the window"
    );
    assert_eq!(k.stats().grace_drops, 4);
    // Never set (0): no window.
    k.set_sync(SyncState::default());
    assert_reset(&k, &stray, "client mid-flow without a window");
    assert_eq!(k.stats().grace_drops, 4);
}

/// A synced flow ended at once by the peer's report (`pgrouter_gc`) and by exact RSTs from
/// both ends (`pgrouter`, whose first packets adopt it), each on its own CPU, gives its slot
/// back exactly once: whoever sets the closed bit first releases it.
#[test]
fn racing_ends_of_a_synced_flow_give_its_slot_back_exactly_once() {
    const ROUNDS: u16 = 200;
    let k = K::new(0);
    let (xdp, gc) = (k.raw(PROGRAM_NAME), k.raw(GC_PROGRAM_NAME));
    let (s, n) = (CLIENT_ISN + 1, NODE_ISN + 1);
    for round in 0..ROUNDS {
        let c = Conn::new((CLIENT, 1024 + round), SNAT.0 + round);
        let install = k.install_req(&c.record(s, n, 0), monotonic_ns());
        assert_eq!(k.sync_op(&install), XDP_DROP, "round {round}: installed");
        assert_eq!(k.conns(), 1, "round {round}: one slot");
        // Newer than any packet of the round, so it applies whoever comes first.
        let rm = records::remove(&c.removal(0), monotonic_ns() + SEC).expect("remove");
        let jobs = [
            (gc, records::request_bytes(&rm)),
            (xdp, c.client_seg(s, n).rst().build(&[])),
            (xdp, c.node_seg(n, s).rst().build(&[])),
        ];
        let verdicts = race(&jobs);
        assert_eq!(verdicts[0], XDP_DROP, "round {round}: the report ended it");
        assert_eq!(k.conns(), 0, "round {round}: released once");
        assert!(
            k.entry(&c.fwd_key()).is_none() && k.entry(&c.reply_key()).is_none(),
            "round {round}: both entries gone"
        );
    }
}
