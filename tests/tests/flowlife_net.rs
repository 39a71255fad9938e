//! Network tests of the flow life cycle (issue 10): real TCP through the VIP, with a client,
//! an edge host running `pgrouter run` and one PostgreSQL stand-in (`pg1`), each in its own
//! namespace on one bridge; spoofed and forged packets come from raw sockets inside the lab.
//!
//! What the kernel holds is read straight from the pinned maps (`tests::pinned`), so the
//! assertions do not depend on how `pgrouter status` chooses to report it; status supplies
//! the slot counts (`active_flows`) and counters, printed at the end of each test
//! (`cargo test -p tests --test flowlife_net -- --nocapture --test-threads=1`).
//!
//! Addresses: bridge 198.18.0.0/24 (pg1 .11, edge .21, client .30, VIP .100); spoofed
//! half-open sources 198.18.0.150–209 (no host owns them, so no RST ever comes back); flood
//! sources 198.18.7.0/24 (routed nowhere).
use std::{
    io::{ErrorKind, Read, Write},
    net::{Ipv4Addr, Shutdown, SocketAddr, TcpListener, TcpStream},
    os::fd::AsRawFd as _,
    path::PathBuf,
    sync::{
        Arc, Barrier, Mutex,
        atomic::{AtomicBool, Ordering},
        mpsc,
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use pgrouter::status::{BackendState, BackendStatus, FlowsByState, ListenerStatus, Status};
use tests::{
    config::{Cluster, Config, Control, Datapath, Health, Listener, Node, Section as _},
    frames,
    netns::{Lab, Topology, in_netns},
    pinned::{self, Tables},
    raw::{self, Flood, RawSocket},
    wait_for,
};

const VIP: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 100);
const NODE: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 11);
const CLIENT: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 30);
const PG_PORT: u16 = 5432;
/// The controller's GC tick, as an upper bound: the time between an entry expiring and the
/// GC deleting it.
const GC_TICK: Duration = Duration::from_secs(1);
/// Scheduling, status round trips and GC batches on a shared 2-core machine.
const SLACK: Duration = Duration::from_secs(3);

/// What differs between the tests' configs.
#[derive(Clone, Default)]
struct Opts {
    /// `[datapath] snat_ports`; the daemon's default range when `None`.
    snat_ports: Option<&'static str>,
    /// `[datapath.timeouts]`: a flow state and its timeout.
    timeout: Option<(&'static str, Duration)>,
    /// `checks = "patroni"` with a fake Patroni on pg1 (state file `pg1.state`); otherwise
    /// static, pg1 primary.
    patroni: bool,
    /// Run `pgr-echo` on pg1:5432 (banner `pg1\n`, then echo). Off: the test serves itself.
    echo: bool,
    /// The listeners (see [`listener`]).
    listeners: Vec<Listener>,
}

/// A primary listener on the VIP.
fn listener(name: &str, port: u16) -> Listener {
    Listener::primary(name, VIP, port)
}

fn config(lab: &Lab, o: &Opts) -> Config {
    let mut datapath = Datapath::new("eth0", "native", lab.dir.join("bpf"));
    if let Some(range) = o.snat_ports {
        datapath = datapath.snat_ports(range);
    }
    if let Some((state, d)) = o.timeout {
        datapath = datapath.timeout(state, d);
    }
    let cluster = if o.patroni {
        Cluster::new("pg").checks("patroni").health(
            Health::new()
                .interval(Duration::from_secs(1))
                .fastinter(Duration::from_millis(200))
                .downinter(Duration::from_secs(1))
                .timeout(Duration::from_millis(500))
                .fall(2)
                .rise(1),
        )
    } else {
        Cluster::new("pg").checks("static")
    };
    let node = Node::new("pg1", NODE);
    let node = if o.patroni {
        node
    } else {
        node.role("primary")
    };
    let cluster = o
        .listeners
        .iter()
        .fold(cluster.node(node), |c, l| c.listener(l.clone()));
    Config::new()
        .datapath(datapath)
        .control(Control::new(lab.dir.join("pgrouter.sock")))
        .cluster(cluster)
}

struct Setup {
    lab: Lab,
    br: String,
    client: String,
    node: String,
    socket: String,
    pins: PathBuf,
    edge_mac: [u8; 6],
    client_mac: [u8; 6],
    _peer_xdp: Option<aya::Ebpf>,
}

/// Sets pg1's Patroni state (see [`Lab::set_patroni`]).
fn set_patroni(lab: &Lab, state: &str) {
    lab.set_patroni(&[("pg1", state)]).expect("pg1 state");
}

fn setup(prefix: &str, o: Opts) -> Setup {
    // Native XDP on a veth needs a program on the peer to accept XDP_TX frames.
    let (mut lab, br, client, edge, peer) = Topology::new(prefix, true).expect("lab").parts();
    let node = lab
        .add_host("pg1", &br, &format!("{NODE}/24"))
        .expect("node");
    if o.echo {
        lab.spawn_echo(&node, "pg1", &format!("{NODE}:{PG_PORT}"))
            .expect("echo");
    }
    if o.patroni {
        lab.spawn_fake_patroni(&node, "pg1", &format!("{NODE}:8008"), "primary tl=1")
            .expect("fake patroni");
    }
    // Pins on a bpffs mounted in our mount namespace (see datapath_net.rs), so this test
    // can read the flow tables.
    let pins = lab.dir.join("bpf");
    lab.run_pgrouter(&edge, "pgrouter", &config(&lab, &o), &pins)
        .expect("pgrouter");
    let socket = lab.dir.join("pgrouter.sock").display().to_string();
    let sock = socket.clone();
    wait_for("pgrouter to publish pg1", Duration::from_secs(20), || {
        let v = tests::status(&sock)?;
        let ls = &v.listeners;
        let ready = !ls.is_empty()
            && ls.iter().all(|l| {
                l.generation > 0 && l.backends.iter().any(|b| b.state == BackendState::Active)
            });
        ready.then_some(())
    })
    .unwrap_or_else(|e| panic!("{e}\n{}", lab.log("pgrouter")));
    let edge_mac = raw::mac_of(&edge, "eth0").expect("edge mac");
    let client_mac = raw::mac_of(&client, "eth0").expect("client mac");
    Setup {
        lab,
        br,
        client,
        node,
        socket,
        pins,
        edge_mac,
        client_mac,
        _peer_xdp: peer,
    }
}

impl Setup {
    fn status(&self) -> Status {
        let s = self.socket.clone();
        wait_for("pgrouter status", Duration::from_secs(5), || {
            tests::status(&s)
        })
        .unwrap_or_else(|e| panic!("{e}\n{}", self.lab.log("pgrouter")))
    }

    fn tables(&self) -> Tables {
        pinned::tables(&self.pins).unwrap_or_else(|e| panic!("reading the flow tables: {e}"))
    }

    /// The log of the daemon, for failure messages.
    fn log(&self) -> String {
        self.lab.log("pgrouter")
    }

    /// Prints the listeners' data-path view and the global counters that are not zero.
    fn report(&self, test: &str) {
        let v = self.status();
        for l in &v.listeners {
            println!("{test}: listener {}", compact(l));
        }
        let d = &v.datapath;
        let counters: Vec<String> = d
            .counters
            .iter()
            .filter(|(_, n)| **n > 0)
            .map(|(k, n)| format!("{k}={n}"))
            .collect();
        println!("{test}: counters {}", counters.join(" "));
        println!(
            "{test}: datapath tracked_entries={} handshake_entries={} handshake_capacity={} gc={}",
            d.tracked_entries,
            d.handshake_entries,
            d.handshake_capacity,
            compact(&d.gc)
        );
    }
}

/// One line of JSON, for reports.
fn compact<T: serde::Serialize>(v: &T) -> String {
    serde_json::to_string(v).unwrap_or_default()
}

/// A global data-path counter by name (`router_ebpf::counter::NAMES`).
fn counter(v: &Status, name: &str) -> u64 {
    v.datapath.counters.get(name).copied().unwrap_or(0)
}

/// Slots pg1 holds on listener `name` (`active_flows`: maxconn slots in use).
fn slots(v: &Status, name: &str) -> Option<u64> {
    Some(u64::from(pg1(v, name)?.active_flows))
}

/// Listener `name`'s data-path status (`pg/<name>`).
fn listener_status<'a>(v: &'a Status, name: &str) -> Option<&'a ListenerStatus> {
    v.listener(&format!("pg/{name}"))
}

/// pg1's backend entry on listener `name`.
fn pg1<'a>(v: &'a Status, name: &str) -> Option<&'a BackendStatus> {
    listener_status(v, name)?.backend("pg1")
}

/// pg1's flows on listener `name` as status reports them (counted by the flow GC at its last
/// full cycle, so up to a GC tick behind the tables).
fn status_flows(v: &Status, name: &str) -> Option<FlowsByState> {
    Some(pg1(v, name)?.flows)
}

fn vip(port: u16) -> SocketAddr {
    SocketAddr::from((VIP, port))
}

/// Reads pg-echo's banner line (the node's name).
fn banner(s: &mut TcpStream) -> std::io::Result<String> {
    tests::read_banner(s)
}

/// Connects to the VIP and reads pg1's banner, within `timeout` each.
fn open(port: u16, timeout: Duration) -> std::io::Result<TcpStream> {
    let mut s = TcpStream::connect_timeout(&vip(port), timeout)?;
    s.set_read_timeout(Some(timeout))?;
    s.set_write_timeout(Some(timeout))?;
    s.set_nodelay(true)?;
    let who = banner(&mut s)?;
    if who != "pg1" {
        return Err(std::io::Error::other(format!("banner {who:?}")));
    }
    Ok(s)
}

/// Sends `msg` and expects it echoed back.
fn echo(s: &mut TcpStream, msg: &[u8]) -> std::io::Result<()> {
    s.write_all(msg)?;
    let mut back = vec![0u8; msg.len()];
    s.read_exact(&mut back)?;
    if back != msg {
        return Err(std::io::Error::other("echo differs"));
    }
    Ok(())
}

/// A `TcpExt` counter of namespace `ns` (`/proc/net/netstat`, read from inside it).
fn tcpext(lab: &Lab, ns: &str, field: &str) -> u64 {
    let text = lab.exec(ns, "cat /proc/net/netstat").expect("netstat");
    let mut rows = text.lines().filter(|l| l.starts_with("TcpExt:"));
    let (Some(names), Some(values)) = (rows.next(), rows.next()) else {
        panic!("no TcpExt rows in {ns}'s /proc/net/netstat:\n{text}");
    };
    names
        .split_whitespace()
        .zip(values.split_whitespace())
        .find(|(n, _)| *n == field)
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or_else(|| panic!("no TcpExt {field} in {ns}"))
}

/// A raw socket on the client's eth0, for frames from the client's own address or spoofed
/// ones. Opened inside the namespace, usable from any thread.
fn client_raw(s: &Setup) -> RawSocket {
    in_netns(&s.client, || RawSocket::open("eth0"))
        .expect("client thread")
        .expect("raw socket in the client namespace")
}

/// A TCP server run on a thread inside the node's namespace, for tests that need the node to
/// close first. Per connection: read 16 bytes, echo them; if the first byte is `s` close at
/// once (the node closes first and holds TIME_WAIT), else wait for the client's FIN. Bytes
/// 1..5 carry the client's connection number, logged with the SNAT port the node saw.
struct ClosingNode {
    stop: Arc<AtomicBool>,
    handle: Option<JoinHandle<()>>,
    log: Arc<Mutex<Vec<Accepted>>>,
}

/// One connection the node served.
#[derive(Clone, Copy, Debug)]
struct Accepted {
    /// The client's connection number.
    n: u32,
    /// The SNAT port the connection came from.
    port: u16,
    at: Instant,
    node_first: bool,
}

impl ClosingNode {
    fn start(ns: &str, addr: SocketAddr) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let log: Arc<Mutex<Vec<Accepted>>> = Arc::default();
        let (tx, rx) = mpsc::channel();
        let (ns, st, lg) = (ns.to_string(), stop.clone(), log.clone());
        let handle = std::thread::spawn(move || {
            let _ = in_netns(&ns, move || serve_closing(addr, &st, &lg, &tx));
        });
        rx.recv_timeout(Duration::from_secs(5))
            .expect("node server started")
            .expect("node server bound");
        Self {
            stop,
            handle: Some(handle),
            log,
        }
    }

    fn log(&self) -> Vec<Accepted> {
        self.log.lock().map(|l| l.clone()).unwrap_or_default()
    }
}

impl Drop for ClosingNode {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

fn serve_closing(
    addr: SocketAddr,
    stop: &AtomicBool,
    log: &Mutex<Vec<Accepted>>,
    ready: &mpsc::Sender<std::io::Result<()>>,
) {
    let l = match TcpListener::bind(addr) {
        Ok(l) => l,
        Err(e) => {
            let _ = ready.send(Err(e));
            return;
        }
    };
    let _ = ready.send(Ok(()));
    while !stop.load(Ordering::Relaxed) {
        // poll with a timeout, so the stop flag is seen and no accept waits for ever.
        let mut p = libc::pollfd {
            fd: l.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        if unsafe { libc::poll(&mut p, 1, 50) } <= 0 {
            continue;
        }
        let Ok((mut s, peer)) = l.accept() else {
            continue;
        };
        let at = Instant::now();
        let _ = s.set_read_timeout(Some(Duration::from_secs(3)));
        let mut b = [0u8; 16];
        if s.read_exact(&mut b).is_err() || s.write_all(&b).is_err() {
            continue;
        }
        let node_first = b[0] == b's';
        if !node_first {
            // The client closes first: wait for its FIN.
            let mut rest = [0u8; 64];
            while matches!(s.read(&mut rest), Ok(n) if n > 0) {}
        }
        if let Ok(mut log) = log.lock() {
            log.push(Accepted {
                n: u32::from_be_bytes([b[1], b[2], b[3], b[4]]),
                port: peer.port(),
                at,
                node_first,
            });
        }
        drop(s);
    }
}

/// The churn of an application without a pooler: far more sequential connections than the
/// SNAT range has ports, most closed by the client (as libpq does) and one in twenty by the
/// node, which then holds TIME_WAIT on that 4-tuple for 60 s. Closed flows must give their
/// port back within milliseconds and the data path must not hand a port the node holds in
/// TIME_WAIT to a new flow while others are free (the node would answer its SYN with a
/// challenge ACK): every connect succeeds at the first SYN (the client's kernel counts zero
/// SYN retransmissions). (With more node-closed connections in 60 s than the range has
/// ports no free tuple exists; then a TIME_WAIT port is reused as a last resort and the
/// client retransmits once — docs/maps.md.)
#[test]
fn churn_ten_times_the_snat_range_connects_without_a_syn_retransmission() {
    const PORTS: u32 = 200;
    const CONNS: u32 = 10 * PORTS;
    let s = setup(
        "pgfc",
        Opts {
            snat_ports: Some("41000-41199"),
            listeners: vec![listener("PG1", 5000)],
            ..Opts::default()
        },
    );
    let node = ClosingNode::start(&s.node, SocketAddr::from((NODE, PG_PORT)));
    let retrans_before = tcpext(&s.lab, &s.client, "TCPSynRetrans");
    let start = Instant::now();
    let (slowest, slow, failures) = in_netns(&s.client, || {
        let mut slowest = Duration::ZERO;
        let mut slow = Vec::new();
        let mut failures = Vec::new();
        for i in 0..CONNS {
            let node_first = i % 20 == 1;
            let r = (|| -> std::io::Result<Duration> {
                let t = Instant::now();
                let mut c = TcpStream::connect_timeout(&vip(5000), Duration::from_secs(3))?;
                let took = t.elapsed();
                c.set_read_timeout(Some(Duration::from_secs(3)))?;
                let mut msg = [if node_first { b's' } else { b'c' }; 16];
                msg[1..5].copy_from_slice(&i.to_be_bytes());
                echo(&mut c, &msg)?;
                if node_first {
                    // Wait for the node's FIN before closing, so the node closed first.
                    let mut b = [0u8; 1];
                    if c.read(&mut b)? != 0 {
                        return Err(std::io::Error::other("data after the echo"));
                    }
                }
                Ok(took)
            })();
            match r {
                Ok(took) => {
                    slowest = slowest.max(took);
                    if took >= Duration::from_millis(500) {
                        slow.push((i, took));
                    }
                }
                Err(e) => {
                    failures.push(format!("connection #{i}: {e}"));
                    if failures.len() >= 20 {
                        break;
                    }
                }
            }
        }
        (slowest, slow, failures)
    })
    .expect("client thread");
    let elapsed = start.elapsed();
    let syn_retrans = tcpext(&s.lab, &s.client, "TCPSynRetrans") - retrans_before;
    let node_time_wait = s
        .lab
        .exec(&s.node, "ss -Htan state time-wait | wc -l")
        .expect("ss")
        .trim()
        .parse::<u64>()
        .unwrap_or(0);
    let served = node.log();
    drop(node);
    let ports: std::collections::BTreeSet<u16> = served.iter().map(|a| a.port).collect();
    // Connections whose SNAT port's previous connection the node closed first: the new SYN
    // met the node's TIME_WAIT on the same 4-tuple.
    let mut last: std::collections::HashMap<u16, Accepted> = std::collections::HashMap::new();
    let mut met_time_wait = 0;
    let mut by_n = served.clone();
    by_n.sort_by_key(|a| a.n);
    for a in &by_n {
        if last.get(&a.port).is_some_and(|b| b.node_first) {
            met_time_wait += 1;
        }
        last.insert(a.port, *a);
    }
    // Each slow connect with the connection that last used its SNAT port before it.
    for (i, took) in &slow {
        let Some(me) = served.iter().find(|a| a.n == *i) else {
            println!("churn: connection #{i} took {took:?}; the node never served it");
            continue;
        };
        let before = served
            .iter()
            .filter(|a| a.port == me.port && a.n < *i)
            .max_by_key(|a| a.n);
        println!(
            "churn: connection #{i} took {took:?} on SNAT port {}; the port's previous \
             connection: {}",
            me.port,
            before.map_or("none".into(), |b| format!(
                "#{} (closed first by the {}), accepted {:?} earlier",
                b.n,
                if b.node_first { "node" } else { "client" },
                me.at - b.at
            ))
        );
    }
    println!(
        "churn: {CONNS} connections over {PORTS} SNAT ports in {elapsed:?} \
         ({:.0}/s), slowest connect {slowest:?}, {syn_retrans} SYN retransmissions, \
         {} failures, node served {} on {} distinct SNAT ports, {met_time_wait} of them on \
         a tuple the node held in TIME_WAIT, node TIME_WAIT sockets at the end {node_time_wait}",
        f64::from(CONNS) / elapsed.as_secs_f64(),
        failures.len(),
        served.len(),
        ports.len()
    );
    s.report("churn");
    assert!(failures.is_empty(), "failed connections: {failures:#?}");
    assert_eq!(
        syn_retrans,
        0,
        "the client retransmitted SYNs (slowest connect {slowest:?}; {met_time_wait} SYNs met \
         the node's TIME_WAIT; rst_not_exact {} = the client's RSTs to the node's TIME_WAIT \
         ACKs)\n{}",
        counter(&s.status(), "rst_not_exact"),
        s.log()
    );
    assert!(
        slowest < Duration::from_millis(900),
        "a connect took {slowest:?}: the first SYN was lost"
    );
    assert!(
        ports.iter().all(|p| (41_000..=41_199).contains(p)),
        "SNAT ports outside the range: {ports:?}"
    );
    // The scenario really left the node in TIME_WAIT on tuples of the range (whether a new
    // SYN meets one is the data path's choice of port).
    assert!(
        node_time_wait > 0,
        "the node holds no TIME_WAIT socket: it never closed first"
    );
    let v = s.status();
    assert!(
        counter(&v, "snat_reused") + counter(&v, "snat_scanned") > 0,
        "2000 flows over 200 ports without reusing one: {}",
        compact(&v.datapath.counters)
    );
    assert_eq!(
        counter(&v, "drop_syn"),
        0,
        "SYNs dropped for want of a port"
    );
}

/// The first SYN of a connection (as the client sends it) from a source no host owns.
fn spoofed_syn(s: &Setup, src: Ipv4Addr, sport: u16, seq: u32) -> Vec<u8> {
    frames::Tcp::new((src, sport), (VIP, 5000))
        .macs(s.client_mac, s.edge_mac)
        .seq(seq)
        .syn()
        .build(&[])
}

/// Half-open connections (SYNs whose sources never answer the node's SYN-ACK, so no RST
/// ever comes back) must hold no maxconn slot: with all of maxconn's slots' worth of
/// half-open flows and more, every real client still connects at once, up to maxconn
/// together. And their state (entries, SNAT ports) is gone after the handshake timeout.
#[test]
fn half_open_syns_take_no_slot_and_expire_after_the_handshake_timeout() {
    const MAXCONN: usize = 20;
    const HALF_OPEN: u32 = 60;
    const HANDSHAKE: Duration = Duration::from_secs(2);
    let s = setup(
        "pgfh",
        Opts {
            timeout: Some(("handshake", HANDSHAKE)),
            echo: true,
            listeners: vec![listener("PG1", 5000).set("maxconn", MAXCONN as u32)],
            ..Opts::default()
        },
    );
    let spoofed = |i: u32| Ipv4Addr::from(u32::from(Ipv4Addr::new(198, 18, 0, 150)) + i);
    let is_spoofed =
        |a: Ipv4Addr| (u32::from(spoofed(0))..u32::from(spoofed(HALF_OPEN))).contains(&a.into());
    let sock = client_raw(&s);
    for i in 0..HALF_OPEN {
        let f = spoofed_syn(&s, spoofed(i), 20_000 + i as u16, 7_000_000 + i * 1000);
        sock.send(&f).expect("spoofed SYN");
    }
    let sent = Instant::now();
    let half_open = wait_for(
        "the spoofed SYNs to reach the node",
        Duration::from_secs(3),
        || {
            let n = s
                .tables()
                .half_open()
                .filter(|e| is_spoofed(e.src().0))
                .count();
            (n == HALF_OPEN as usize).then_some(n)
        },
    )
    .unwrap_or_else(|e| {
        panic!(
            "{e}: {} half-open\n{}",
            s.tables().half_open().count(),
            s.log()
        )
    });
    assert_eq!(
        s.tables().flows().filter(|e| is_spoofed(e.src().0)).count(),
        0,
        "a spoofed SYN reached the established table"
    );
    // Seen from outside: status counts them as handshakes (as of the GC's last cycle).
    let sock = s.socket.clone();
    wait_for(
        "status to show the half-open flows",
        GC_TICK + SLACK,
        || {
            let v = tests::status(&sock)?;
            (status_flows(&v, "PG1")?.handshake == u64::from(HALF_OPEN)).then_some(())
        },
    )
    .unwrap_or_else(|e| panic!("{e}: {:?}", pg1(&s.status(), "PG1")));

    // maxconn real clients at once, while the half-open flows are all still there.
    let barrier = Arc::new(Barrier::new(MAXCONN));
    let t0 = Instant::now();
    let clients: Vec<_> = (0..MAXCONN)
        .map(|i| {
            let (ns, b) = (s.client.clone(), barrier.clone());
            std::thread::spawn(move || {
                in_netns(&ns, move || {
                    b.wait();
                    let t = Instant::now();
                    let mut c = open(5000, Duration::from_secs(3))
                        .map_err(|e| format!("client {i}: {e}"))?;
                    echo(&mut c, format!("client {i:02} here").as_bytes())
                        .map_err(|e| format!("client {i} echo: {e}"))?;
                    Ok::<_, String>((t.elapsed(), c))
                })
                .unwrap_or_else(|e| Err(e.to_string()))
            })
        })
        .collect();
    let results: Vec<_> = clients
        .into_iter()
        .map(|h| h.join().unwrap_or_else(|_| Err("panicked".into())))
        .collect();
    let all_in = t0.elapsed();
    let failed: Vec<&String> = results.iter().filter_map(|r| r.as_ref().err()).collect();
    let slowest = results
        .iter()
        .filter_map(|r| r.as_ref().ok().map(|(t, _)| *t))
        .max()
        .unwrap_or_default();
    let v = s.status();
    let held = slots(&v, "PG1");
    println!(
        "half-open: {half_open} half-open flows; {} of {MAXCONN} real clients in within \
         {all_in:?} (slowest {slowest:?}); slots held {held:?}",
        MAXCONN - failed.len()
    );
    assert!(
        failed.is_empty(),
        "real clients failed beside {half_open} half-open flows: {failed:?}\n{}",
        s.log()
    );
    assert!(
        slowest < Duration::from_millis(900),
        "a real client waited {slowest:?}"
    );
    assert_eq!(
        held,
        Some(MAXCONN as u64),
        "slots = the real connections only"
    );
    drop(results);

    // Their state is gone after the handshake timeout (plus one GC tick).
    let limit = HANDSHAKE + GC_TICK + SLACK;
    let gone = wait_for(
        "the half-open flows to expire",
        limit.saturating_sub(sent.elapsed()),
        || {
            let t = s.tables();
            let left = t.handshake.iter().chain(&t.conntrack).any(|e| {
                is_spoofed(e.src().0)
                    || is_spoofed(e.dst().0)
                    || is_spoofed(e.to().0)
                    || is_spoofed(e.from().0)
            });
            (!left).then(|| sent.elapsed())
        },
    )
    .unwrap_or_else(|e| {
        let t = s.tables();
        panic!(
            "{e}: {} handshake entries, {} established entries left\n{}",
            t.handshake.len(),
            t.conntrack.len(),
            s.log()
        )
    });
    println!("half-open: their entries were gone {gone:?} after the SYNs (timeout {HANDSHAKE:?})");
    s.report("half-open");
    assert!(
        gone >= HANDSHAKE - Duration::from_millis(100),
        "half-open flows removed after {gone:?}, before their handshake timeout"
    );
    // Every slot came back once the real clients closed, and status agrees no handshake is
    // left.
    wait_for("the real clients' slots", Duration::from_secs(5), || {
        let v = s.status();
        (slots(&v, "PG1") == Some(0) && status_flows(&v, "PG1").map(|f| f.handshake) == Some(0))
            .then_some(())
    })
    .unwrap_or_else(|e| panic!("{e}: {:?}", pg1(&s.status(), "PG1")));
}

/// A client host that dies mid-session (no FIN, no RST: its link is gone) must not keep its
/// maxconn slot and SNAT port for ever: both come back after the established idle timeout,
/// and another client takes the slot. Idle means neither side sends: the session is quiet
/// (all data acknowledged) when the client vanishes.
#[test]
fn a_vanished_client_gives_back_its_slot_and_port_after_the_idle_timeout() {
    const IDLE: Duration = Duration::from_secs(2);
    let mut s = setup(
        "pgfv",
        Opts {
            timeout: Some(("established", IDLE)),
            echo: true,
            listeners: vec![listener("PG1", 5000).set("maxconn", 1u32)],
            ..Opts::default()
        },
    );
    let br = s.br.clone();
    let gone_ns = s.lab.add_host("gone", &br, "198.18.0.31/24").expect("host");
    let gone_addr = Ipv4Addr::new(198, 18, 0, 31);
    let stream = in_netns(&gone_ns, || -> std::io::Result<TcpStream> {
        let mut c = open(5000, Duration::from_secs(3))?;
        echo(&mut c, b"about to vanish")?;
        Ok(c)
    })
    .expect("thread")
    .expect("session from the doomed client");
    let t = s.tables();
    let fwd: Vec<_> = t.flows().filter(|e| e.src().0 == gone_addr).collect();
    assert_eq!(fwd.len(), 1, "one flow from the doomed client: {fwd:?}");
    let (snat, port) = fwd[0].from();
    assert_eq!(slots(&s.status(), "PG1"), Some(1), "its slot is taken");

    // An idle session: the client has acknowledged all the node sent (a delayed ACK still
    // pending would leave the node retransmitting, which keeps the flow alive by design).
    let node = s.node.clone();
    let lab = &s.lab;
    wait_for(
        "the node's data to be acknowledged",
        Duration::from_secs(2),
        || {
            let ss = lab.exec(&node, "ss -Htin state established").ok()?;
            (!ss.trim().is_empty() && !ss.contains("unacked")).then_some(())
        },
    )
    .expect("idle session");

    // Pull the cable: the link goes first, so closing the socket sends nothing.
    s.lab
        .exec(&gone_ns, "ip link del eth0")
        .expect("link removed");
    drop(stream);
    tests::run("ip", &["netns", "del", &gone_ns]).expect("namespace removed");
    let vanished = Instant::now();

    let back = wait_for(
        "the vanished client's slot and port",
        IDLE + GC_TICK + SLACK,
        || {
            let t = s.tables();
            // Reaped (deleted) or closed: either way the slot is back and the port free.
            let free = slots(&s.status(), "PG1") == Some(0)
                && t.live_from(gone_addr).is_empty()
                && t.live_holders(snat, port).is_empty();
            free.then(|| vanished.elapsed())
        },
    )
    .unwrap_or_else(|e| {
        let t = s.tables();
        panic!(
            "{e}: slots {:?}, entries {:?}, port {snat}:{port} held by {:?}\n{}",
            slots(&s.status(), "PG1"),
            t.involving(gone_addr),
            t.holding_port(snat, port),
            s.log()
        )
    });
    println!(
        "vanished: slot and SNAT port {snat}:{port} back {back:?} after the client vanished \
         (idle timeout {IDLE:?}); its entries left in the tables: {}",
        s.tables().involving(gone_addr).len()
    );
    assert!(
        back >= IDLE - Duration::from_millis(500),
        "the idle flow was ended after {back:?}, before its {IDLE:?} timeout"
    );

    // Seen from outside: no open flow and no SNAT port in use on the listener.
    wait_for("status to show the flow gone", GC_TICK + SLACK, || {
        let v = s.status();
        let f = status_flows(&v, "PG1")?;
        let open = f.handshake + f.established + f.closing;
        let ports = listener_status(&v, "PG1")?.snat_ports_in_use;
        (open == 0 && ports == 0).then_some(())
    })
    .unwrap_or_else(|e| panic!("{e}: {:?}", listener_status(&s.status(), "PG1")));

    // Another client takes the slot.
    in_netns(&s.client, || -> std::io::Result<()> {
        let mut c = open(5000, Duration::from_secs(3))?;
        echo(&mut c, b"the slot is mine now")
    })
    .expect("thread")
    .unwrap_or_else(|e| panic!("new client: {e}\n{}", s.log()));
    s.report("vanished");
}

/// What one held session of the flood test saw.
#[derive(Clone, Copy, Debug)]
struct Held {
    rounds: u64,
    /// The slowest query (round trip).
    slowest: Duration,
    last_answer: Instant,
}

/// Held database sessions must survive a SYN flood: spoofed SYNs at the highest rate one
/// process can send, for a few seconds, while 8 sessions query every 100 ms and a prober
/// opens a new connection every 50 ms. Zero held sessions lost; the share of the prober's
/// connections that succeeded during the flood and the flood's rate are reported.
#[test]
fn a_syn_flood_loses_no_held_session() {
    const SESSIONS: usize = 8;
    const FLOOD_TIME: Duration = Duration::from_secs(5);
    const FLOOD_MAX: u64 = 5_000_000;
    const HELD_WAIT: Duration = Duration::from_secs(15);
    let mut s = setup(
        "pgff",
        Opts {
            timeout: Some(("handshake", Duration::from_secs(3))),
            echo: true,
            listeners: vec![listener("PG1", 5000)],
            ..Opts::default()
        },
    );
    let br = s.br.clone();
    let flooder = s.lab.add_host("fl", &br, "198.18.0.40/24").expect("host");
    let flooder_mac = raw::mac_of(&flooder, "eth0").expect("mac");

    let stop = Arc::new(AtomicBool::new(false));
    // Held sessions: query every 100 ms until stopped. Lost = reset, closed, or no answer
    // within HELD_WAIT (a stall while the host is saturated is TCP retransmitting, reported
    // as the slowest query, not a loss).
    let (ready_tx, ready_rx) = mpsc::channel();
    let sessions: Vec<_> = (0..SESSIONS)
        .map(|i| {
            let (ns, stop, ready) = (s.client.clone(), stop.clone(), ready_tx.clone());
            std::thread::spawn(move || {
                in_netns(&ns, move || -> Result<Held, String> {
                    let mut c =
                        open(5000, HELD_WAIT).map_err(|e| format!("session {i} open: {e}"))?;
                    let _ = ready.send(());
                    let mut h = Held {
                        rounds: 0,
                        slowest: Duration::ZERO,
                        last_answer: Instant::now(),
                    };
                    while !stop.load(Ordering::Relaxed) {
                        let msg = format!("session {i} round {:06}", h.rounds);
                        let t = Instant::now();
                        echo(&mut c, msg.as_bytes()).map_err(|e| {
                            format!(
                                "session {i} lost at round {} after {:?}: {e}",
                                h.rounds,
                                t.elapsed()
                            )
                        })?;
                        h.slowest = h.slowest.max(t.elapsed());
                        h.last_answer = Instant::now();
                        h.rounds += 1;
                        std::thread::sleep(Duration::from_millis(100));
                    }
                    Ok(h)
                })
                .unwrap_or_else(|e| Err(e.to_string()))
            })
        })
        .collect();
    for _ in 0..SESSIONS {
        ready_rx
            .recv_timeout(Duration::from_secs(10))
            .expect("held sessions open");
    }
    // Prober: a new connection every 50 ms (start time, success, time to the banner).
    let probes: Arc<Mutex<Vec<(Instant, bool, Duration)>>> = Arc::default();
    let prober = {
        let (ns, stop, probes) = (s.client.clone(), stop.clone(), probes.clone());
        std::thread::spawn(move || {
            let _ = in_netns(&ns, move || {
                while !stop.load(Ordering::Relaxed) {
                    let t = Instant::now();
                    let ok = open(5000, Duration::from_secs(2))
                        .and_then(|mut c| echo(&mut c, b"probe"))
                        .is_ok();
                    probes.lock().expect("probes").push((t, ok, t.elapsed()));
                    std::thread::sleep(Duration::from_millis(50).saturating_sub(t.elapsed()));
                }
            });
        })
    };
    std::thread::sleep(Duration::from_secs(1));
    let v0 = s.status();

    let flood = Flood {
        smac: flooder_mac,
        dmac: s.edge_mac,
        first: Ipv4Addr::new(198, 18, 7, 1),
        hosts: 254,
        dst: (VIP, 5000),
        max_packets: FLOOD_MAX,
        max_time: FLOOD_TIME,
    };
    let flood_start = Instant::now();
    let report = {
        let stop = stop.clone();
        in_netns(&flooder, move || {
            let sock = RawSocket::open("eth0")?;
            raw::syn_flood(&sock, &flood, &stop)
        })
        .expect("flood thread")
        .expect("flood")
    };
    let flood_end = Instant::now();
    let peak_half_open = s.tables().half_open().count();
    // Two more seconds of sessions and probes after the flood.
    std::thread::sleep(Duration::from_secs(2));
    stop.store(true, Ordering::Relaxed);
    let results: Vec<_> = sessions
        .into_iter()
        .map(|h| h.join().unwrap_or_else(|_| Err("panicked".into())))
        .collect();
    let _ = prober.join();
    let v1 = s.status();

    let probes = probes.lock().expect("probes").clone();
    let during: Vec<_> = probes
        .iter()
        .filter(|(t, _, _)| *t >= flood_start && *t < flood_end)
        .collect();
    let ok = during.iter().filter(|(_, ok, _)| *ok).count();
    let fast = during
        .iter()
        .filter(|(_, ok, d)| *ok && *d < Duration::from_secs(1))
        .count();
    let after_ok = probes
        .iter()
        .filter(|(t, ok, _)| *t >= flood_end + Duration::from_millis(500) && *ok)
        .count();
    println!(
        "flood: {} spoofed SYNs in {:?} = {:.0} SYN/s from one process ({} refused by the \
         sender's device); {} half-open flows in the table right after",
        report.sent,
        report.elapsed,
        report.rate(),
        report.refused,
        peak_half_open
    );
    println!(
        "flood: prober {ok}/{} connections succeeded during the flood ({:.0}%; {fast} within \
         1 s), {after_ok} after it",
        during.len(),
        100.0 * ok as f64 / during.len().max(1) as f64
    );
    let alive: Vec<&Held> = results.iter().filter_map(|r| r.as_ref().ok()).collect();
    println!(
        "flood: held sessions {} of {SESSIONS} alive, slowest query {:?}, rounds {:?}",
        alive.len(),
        alive.iter().map(|h| h.slowest).max().unwrap_or_default(),
        alive.iter().map(|h| h.rounds).collect::<Vec<_>>()
    );
    for name in [
        "drop_syn",
        "ct_insert_failed",
        "drop_ct_full",
        "drop_wait_slot",
        "snat_scanned",
        "snat_reused",
        "expired_on_packet",
        "rst_unknown_flow",
    ] {
        print!(
            "{name}+{} ",
            counter(&v1, name).saturating_sub(counter(&v0, name))
        );
    }
    println!();
    s.report("flood");
    let lost: Vec<&String> = results.iter().filter_map(|r| r.as_ref().err()).collect();
    assert!(
        lost.is_empty(),
        "held sessions lost during the flood: {lost:?}\n{}",
        s.log()
    );
    assert!(
        alive.iter().all(|h| h.last_answer > flood_end),
        "every session answered after the flood: {alive:?}"
    );
    assert!(
        report.sent >= 10_000,
        "the flood sent only {} SYNs",
        report.sent
    );
    // After the flood, new connections work again.
    in_netns(&s.client, || {
        open(5000, Duration::from_secs(3)).and_then(|mut c| echo(&mut c, b"after the flood"))
    })
    .expect("thread")
    .unwrap_or_else(|e| panic!("a new connection after the flood: {e}\n{}", s.log()));
}

/// Members of listener `name` as the cluster view reports them.
fn members(v: &Status, name: &str) -> Option<usize> {
    Some(v.clusters.first()?.set(name)?.members.len())
}

/// When the only node stops being primary, a SYN to the empty set is held (dropped
/// silently, so the client's kernel retransmits) for `empty_hold` after the set became empty,
/// then answered by a RST: the client sees "connection refused" at its next retransmission,
/// never a hang. A listener with `on_empty = "reject"` refuses at once.
#[test]
fn a_syn_to_an_empty_set_is_held_then_answered_with_a_rst() {
    const HOLD: Duration = Duration::from_secs(2);
    let s = setup(
        "pgfe",
        Opts {
            patroni: true,
            echo: true,
            listeners: vec![
                listener("PG1", 5000)
                    .set("on_empty", "hold")
                    .set("empty_hold", HOLD),
                listener("PG1_reject", 5003).set("on_empty", "reject"),
            ],
            ..Opts::default()
        },
    );
    in_netns(&s.client, || open(5000, Duration::from_secs(3)).map(drop))
        .expect("thread")
        .expect("pg1 serves while primary");
    let v0 = s.status();

    set_patroni(&s.lab, "replica tl=1");
    let sock = s.socket.clone();
    wait_for("the primary set to empty", Duration::from_secs(5), || {
        let v = tests::status(&sock)?;
        (members(&v, "PG1")? == 0 && members(&v, "PG1_reject")? == 0).then_some(())
    })
    .unwrap_or_else(|e| panic!("{e}\n{}", s.log()));
    let empty = Instant::now();

    // Both listeners at once: hold and reject.
    let held = {
        let ns = s.client.clone();
        std::thread::spawn(move || {
            in_netns(&ns, || {
                let t = Instant::now();
                let r = TcpStream::connect_timeout(&vip(5000), Duration::from_secs(8));
                (
                    r.map(drop).map_err(|e| e.kind()),
                    t.elapsed(),
                    Instant::now(),
                )
            })
        })
    };
    let (rejected, reject_took) = in_netns(&s.client, || {
        let t = Instant::now();
        let r = TcpStream::connect_timeout(&vip(5003), Duration::from_secs(3));
        (r.map(drop).map_err(|e| e.kind()), t.elapsed())
    })
    .expect("thread");
    let (held, held_took, held_at) = held.join().expect("held thread").expect("thread");
    let since_empty = held_at - empty;
    println!(
        "empty set: reject refused in {reject_took:?} ({rejected:?}); hold answered after \
         {held_took:?} ({held:?}), {since_empty:?} after the set emptied (hold {HOLD:?})"
    );
    assert_eq!(
        rejected,
        Err(ErrorKind::ConnectionRefused),
        "reject refuses"
    );
    assert!(
        reject_took < Duration::from_millis(500),
        "reject refuses at once, not after {reject_took:?}"
    );
    assert_eq!(
        held,
        Err(ErrorKind::ConnectionRefused),
        "the held SYN is refused after the hold, not left hanging\n{}",
        s.log()
    );
    assert!(
        held_took >= Duration::from_millis(900),
        "the SYN was refused after {held_took:?}: not held through a retransmission"
    );
    assert!(
        since_empty >= HOLD - Duration::from_millis(100),
        "refused {since_empty:?} after the set emptied, within the {HOLD:?} hold"
    );
    // The refusal comes at the first client retransmission after the hold (1 s, 3 s, …).
    assert!(
        since_empty <= HOLD + Duration::from_millis(2500),
        "refused only {since_empty:?} after the set emptied"
    );
    // Past the hold, a new connection is refused at once.
    let (late, late_took) = in_netns(&s.client, || {
        let t = Instant::now();
        let r = TcpStream::connect_timeout(&vip(5000), Duration::from_secs(3));
        (r.map(drop).map_err(|e| e.kind()), t.elapsed())
    })
    .expect("thread");
    assert_eq!(late, Err(ErrorKind::ConnectionRefused));
    assert!(
        late_took < Duration::from_millis(500),
        "past the hold refused after {late_took:?}"
    );
    let v1 = s.status();
    let delta = |n: &str| counter(&v1, n).saturating_sub(counter(&v0, n));
    println!(
        "empty set: drop_syn_held+{} rst_no_backend+{}",
        delta("drop_syn_held"),
        delta("rst_no_backend")
    );
    s.report("empty");
    assert!(
        delta("drop_syn_held") >= 2,
        "held SYNs counted: {}",
        delta("drop_syn_held")
    );
    assert!(
        delta("rst_no_backend") >= 3,
        "refusals counted: {}",
        delta("rst_no_backend")
    );
}

/// The point of holding: a switchover shorter than `empty_hold`. A SYN that arrives while
/// the set is empty is dropped silently, the client's kernel retransmits it, and the
/// connection succeeds once a primary is back, with no error seen by the application.
#[test]
fn a_syn_held_while_the_set_is_empty_connects_once_a_primary_returns() {
    let s = setup(
        "pgfw",
        Opts {
            patroni: true,
            echo: true,
            listeners: vec![
                listener("PG1", 5000)
                    .set("on_empty", "hold")
                    .set("empty_hold", Duration::from_secs(6)),
            ],
            ..Opts::default()
        },
    );
    set_patroni(&s.lab, "replica tl=1");
    let sock = s.socket.clone();
    wait_for("the primary set to empty", Duration::from_secs(5), || {
        let v = tests::status(&sock)?;
        (members(&v, "PG1")? == 0).then_some(())
    })
    .unwrap_or_else(|e| panic!("{e}\n{}", s.log()));
    let attempt = {
        let ns = s.client.clone();
        std::thread::spawn(move || {
            in_netns(&ns, || {
                let t = Instant::now();
                let r = open(5000, Duration::from_secs(8)).and_then(|mut c| echo(&mut c, b"held"));
                (r.map_err(|e| e.to_string()), t.elapsed())
            })
        })
    };
    // The switchover: a primary again after half a second.
    std::thread::sleep(Duration::from_millis(500));
    set_patroni(&s.lab, "primary tl=2");
    let (r, took) = attempt.join().expect("client thread").expect("thread");
    println!("held SYN: connected after {took:?} ({r:?})");
    s.report("held");
    assert_eq!(r, Ok(()), "the held connection attempt\n{}", s.log());
    assert!(
        took >= Duration::from_millis(400),
        "connected after {took:?}: the set was not empty"
    );
}

/// A RST forged from the client's address whose sequence number is not exactly the one the
/// node expects must not close the session nor free its slot (RFC 5961): it is passed on
/// for the node to judge, and the session carries on. The same RST with the exact sequence
/// number does close the flow, so the forged ones were tested on a live path.
#[test]
fn a_forged_rst_with_the_wrong_sequence_does_not_close_a_session() {
    let s = setup(
        "pgfr",
        Opts {
            echo: true,
            listeners: vec![listener("PG1", 5000).set("maxconn", 4u32)],
            ..Opts::default()
        },
    );
    let mut c = in_netns(&s.client, || -> std::io::Result<TcpStream> {
        let mut c = open(5000, Duration::from_secs(3))?;
        echo(&mut c, b"before the forgery")?;
        Ok(c)
    })
    .expect("thread")
    .expect("session");
    let cport = c.local_addr().expect("local addr").port();
    // The sequence number the node expects next from the client: the last ACK it sent.
    let expected = || -> u32 {
        let t = s.tables();
        let fwd = t
            .flows()
            .find(|e| e.src() == (CLIENT, cport) && e.dst() == (VIP, 5000))
            .copied()
            .unwrap_or_else(|| panic!("no flow from {CLIENT}:{cport}"));
        let reply = t
            .conntrack
            .iter()
            .find(|e| e.is_reply() && e.src() == (NODE, PG_PORT) && e.dst() == fwd.from())
            .unwrap_or_else(|| panic!("no reply entry for {:?}", fwd.from()));
        u32::from_be(reply.flow.last_ack)
    };
    let rst = |seq: u32| {
        frames::Tcp::new((CLIENT, cport), (VIP, 5000))
            .macs(s.client_mac, s.edge_mac)
            .seq(seq)
            .rst()
            .build(&[])
    };
    let sock = client_raw(&s);
    let v0 = s.status();
    assert_eq!(slots(&v0, "PG1"), Some(1), "the session holds a slot");
    let exact = expected();
    // In the window, just before it, and far outside it.
    let forged = [
        exact.wrapping_add(1000),
        exact.wrapping_sub(1),
        exact.wrapping_add(0x4000_0000),
    ];
    for seq in forged {
        sock.send(&rst(seq)).expect("forged RST");
    }
    let sock_path = s.socket.clone();
    let before = counter(&v0, "rst_not_exact");
    wait_for(
        "the data path to see the forged RSTs",
        Duration::from_secs(3),
        || {
            let v = tests::status(&sock_path)?;
            (counter(&v, "rst_not_exact") >= before + forged.len() as u64).then_some(())
        },
    )
    .unwrap_or_else(|e| panic!("{e}\n{}", s.log()));
    echo(&mut c, b"after the forgery, still here")
        .unwrap_or_else(|e| panic!("the session died after forged RSTs: {e}\n{}", s.log()));
    assert_eq!(
        slots(&s.status(), "PG1"),
        Some(1),
        "the session still holds its slot"
    );
    let t = s.tables();
    let fwd = t
        .flows()
        .find(|e| e.src() == (CLIENT, cport))
        .expect("the flow is still there");
    assert_eq!(
        fwd.state(),
        router_ebpf::FLOW_STATE_ESTABLISHED,
        "the flow is still established: flags {:#x}",
        fwd.flow.flags
    );

    // Control: the exact sequence number closes the flow and gives the slot back.
    sock.send(&rst(expected())).expect("exact RST");
    wait_for(
        "the exact RST to free the slot",
        Duration::from_secs(3),
        || (slots(&tests::status(&sock_path)?, "PG1")? == 0).then_some(()),
    )
    .unwrap_or_else(|e| panic!("{e}: the exact RST did not close the flow\n{}", s.log()));
    let after = c.write_all(b"x").and_then(|_| {
        let mut b = [0u8; 8];
        c.read(&mut b)
    });
    println!(
        "forged RST: the session survived 3 forged RSTs; after the exact one the client saw {after:?}"
    );
    s.report("forged-rst");
    let _ = c.shutdown(Shutdown::Both);
}
