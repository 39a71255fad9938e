//! Network tests of the controller's Patroni health checks: a client, an edge host running
//! `pgrouter run` with `checks = "patroni"`, and three nodes, each in its own namespace on one
//! bridge. Every node runs `pgr-echo` (PostgreSQL stand-in, announces its name) on :5432 and
//! `pgr-fake-patroni` on :8008, whose role the test switches by rewriting a state file in the
//! lab dir (temp + rename; re-read on every request).
//!
//! Health timing in every test: interval 1s, fastinter 200ms, downinter 1s, timeout 500ms,
//! fall 2, rise 1. Measured times are printed (`cargo test ... -- --nocapture`).
use std::{
    collections::BTreeMap,
    io::{ErrorKind, Read, Write},
    net::{SocketAddr, TcpStream},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use pgrouter::status::{
    BackendState, BackendStatus, CheckStatus, ClusterStatus, ListenerStatus, NodeStatus, Status,
    Verdict,
};
use tests::{
    config::{Cluster, Config, Control, Datapath, Health, Listener, Node, Section as _},
    netns::{Lab, NODES, Topology, VIP, in_netns},
    wait_for,
};

const INTERVAL: Duration = Duration::from_secs(1);
const FASTINTER: Duration = Duration::from_millis(200);
const FALL: u32 = 2;
/// Scheduling, HTTP round trips, map writes and the client's own pacing on a shared 2-core
/// machine.
const MARGIN: Duration = Duration::from_millis(300);
/// 10MB as Patroni counts it (powers of 1024).
const LAG_LIMIT: u64 = 10 * 1024 * 1024;

/// Extra config per test.
#[derive(Clone, Copy, Default)]
struct Opts {
    /// The `PG1_ro` listener's `lag` limit (e.g. `"10MB"`).
    ro_lag: Option<&'static str>,
    /// `PG1_keep`: a primary listener on :5002 that keeps sessions of a node marked down.
    keep_listener: bool,
    /// `[control] metrics`.
    metrics: Option<&'static str>,
}

struct Setup {
    lab: Lab,
    client: String,
    edge: String,
    socket: String,
    /// The running `pgrouter run`.
    pgrouter: u32,
    _peer_xdp: Option<aya::Ebpf>,
}

fn config(lab: &Lab, o: Opts) -> Config {
    let mut cluster = Cluster::new("pg").checks("patroni").health(
        Health::new()
            .interval(INTERVAL)
            .fastinter(FASTINTER)
            .downinter(Duration::from_secs(1))
            .timeout(Duration::from_millis(500))
            .fall(FALL)
            .rise(1),
    );
    for (name, ip) in NODES {
        cluster = cluster.node(Node::new(name, ip));
    }
    let mut ro = Listener::replica_or_primary("PG1_ro", VIP, 5001);
    if let Some(lag) = o.ro_lag {
        ro = ro.set("lag", lag);
    }
    cluster = cluster
        .listener(Listener::primary("PG1", VIP, 5000))
        .listener(ro);
    if o.keep_listener {
        cluster = cluster
            .listener(Listener::primary("PG1_keep", VIP, 5002).set("on_marked_down", "keep"));
    }
    let mut control = Control::new(lab.dir.join("pgrouter.sock"));
    if let Some(addr) = o.metrics {
        control = control.metrics(addr);
    }
    Config::new()
        .datapath(Datapath::new("eth0", "native", lab.dir.join("bpf")).snat_ports("40000-44999"))
        .control(control)
        .cluster(cluster)
}

fn status(socket: &str) -> Option<Status> {
    tests::status(socket)
}

/// The (only) cluster's health view.
fn cluster(v: &Status) -> &ClusterStatus {
    v.clusters
        .first()
        .unwrap_or_else(|| panic!("no cluster in {v:?}"))
}

/// The cluster's chosen primary.
fn primary(v: &Status) -> Option<&str> {
    cluster(v).primary.as_deref()
}

/// Members of a listener's set (cluster view), e.g. `set_members(&v, "PG1_ro")`.
fn set_members(v: &Status, listener: &str) -> Option<Vec<String>> {
    Some(cluster(v).set(listener)?.members.clone())
}

/// A data-path listener's status (`pg/PG1`).
fn listener<'a>(v: &'a Status, name: &str) -> Option<&'a ListenerStatus> {
    v.listener(&format!("pg/{name}"))
}

fn node<'a>(v: &'a Status, name: &str) -> Option<&'a NodeStatus> {
    cluster(v).node(name)
}

/// Listener `listener`'s backend entry for `node` in a status document.
fn backend<'a>(v: &'a Status, listener_name: &str, node_name: &str) -> Option<&'a BackendStatus> {
    listener(v, listener_name)?.backend(node_name)
}

/// A node's check result by path prefix (`/primary`, `/replica`).
fn check<'a>(v: &'a Status, node_name: &str, path: &str) -> Option<&'a CheckStatus> {
    node(v, node_name)?
        .checks
        .iter()
        .find(|c| c.check.starts_with(path))
}

fn setup(prefix: &str, o: Opts) -> Setup {
    // Native XDP on a veth needs a program on the peer to accept XDP_TX frames.
    let (mut lab, br, client, edge, peer) = Topology::new(prefix, true).expect("lab").parts();
    for (name, ip) in NODES {
        let ns = lab.add_host(name, &br, &format!("{ip}/24")).expect("node");
        lab.spawn_echo(&ns, name, &format!("{ip}:5432"))
            .expect("echo");
        let role = if name == "pg1" {
            "primary tl=1"
        } else {
            "replica tl=1"
        };
        lab.spawn_fake_patroni(&ns, name, &format!("{ip}:8008"), role)
            .expect("fake patroni");
    }
    // Every fake API answers before the controller starts.
    for (name, ip) in NODES {
        let addr: SocketAddr = format!("{ip}:8008").parse().expect("addr");
        let e = edge.clone();
        wait_for(&format!("{name}'s API"), Duration::from_secs(10), || {
            in_netns(&e, move || {
                TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok()
            })
            .ok()?
            .then_some(())
        })
        .unwrap_or_else(|e| panic!("{e}\n{}", lab.log(&format!("{name}-api"))));
    }
    // Pins on a bpffs of the host's mount namespace (see datapath_net.rs).
    let pins = lab.dir.join("bpf");
    let (pgrouter, _) = lab
        .run_pgrouter(&edge, "pgrouter", &config(&lab, o), &pins)
        .expect("pgrouter");
    let socket = lab.dir.join("pgrouter.sock").display().to_string();
    wait_for(
        "pgrouter to publish the checked sets",
        Duration::from_secs(20),
        || {
            let v = status(&socket)?;
            let published = v.listeners.iter().all(|l| l.generation > 0);
            let ok = published
                && primary(&v) == Some("pg1")
                && set_members(&v, "PG1_ro")? == ["pg2", "pg3"];
            ok.then_some(())
        },
    )
    .unwrap_or_else(|e| panic!("{e}\n{}", lab.log("pgrouter")));
    Setup {
        lab,
        client,
        edge,
        socket,
        pgrouter,
        _peer_xdp: peer,
    }
}

impl Setup {
    /// Stops `pgrouter run` with SIGTERM (XDP program and maps stay pinned).
    fn stop_pgrouter(&mut self) {
        assert!(
            self.lab
                .signal_and_wait(self.pgrouter, libc::SIGTERM, Duration::from_secs(10)),
            "pgrouter did not exit on SIGTERM\n{}",
            self.lab.log("pgrouter")
        );
    }

    /// Starts `pgrouter run` again, logging to `<log>.log`.
    fn start_pgrouter(&mut self, log: &str) {
        let cfg = self.lab.dir.join("pgrouter.toml");
        let edge = self.edge.clone();
        self.pgrouter = self.lab.spawn_pgrouter(&edge, log, &cfg).expect("pgrouter");
    }

    fn set(&self, node: &str, state: &str) {
        self.set_all(&[(node, state)]);
    }

    /// Several nodes' states at once (see [`Lab::set_patroni`]).
    fn set_all(&self, states: &[(&str, &str)]) {
        self.lab.set_patroni(states).expect("patroni states");
    }

    /// Returns right after `node`'s Patroni answered a `/primary` check (the fake logs every
    /// request; polled every 10 ms).
    fn wait_for_check(&self, node: &str) {
        let log = format!("{node}-api");
        let count = |l: &Lab| {
            l.log(&log)
                .lines()
                .filter(|l| l.contains("GET /primary"))
                .count()
        };
        let before = count(&self.lab);
        wait_for(
            &format!("a check of {node}"),
            Duration::from_secs(5),
            || (count(&self.lab) > before).then_some(()),
        )
        .expect("checks stopped");
    }

    fn status(&self) -> Status {
        status(&self.socket).unwrap_or_else(|| panic!("status\n{}", self.lab.log("pgrouter")))
    }

    /// Waits for a status for which `f` holds; returns it and when it was seen.
    fn wait_status(
        &self,
        what: &str,
        timeout: Duration,
        f: impl Fn(&Status) -> bool,
    ) -> (Status, Instant) {
        wait_for(what, timeout, || {
            let v = status(&self.socket)?;
            f(&v).then(|| (v, Instant::now()))
        })
        .unwrap_or_else(|e| panic!("{e}\n{}", self.lab.log("pgrouter")))
    }

    /// Opens a connection from the client and reads the node's name.
    fn session(&self, port: u16) -> (TcpStream, String) {
        in_netns(&self.client, move || {
            let mut s = connect(port, Duration::from_secs(2))?;
            let name = who(&mut s, Duration::from_secs(2))?;
            Ok::<_, std::io::Error>((s, name))
        })
        .expect("client ns")
        .unwrap_or_else(|e| panic!("session to :{port}: {e}\n{}", self.lab.log("pgrouter")))
    }

    /// `n` new connections, one after the other: who served each (or the error).
    fn names(&self, port: u16, n: usize) -> Vec<Result<String, String>> {
        in_netns(&self.client, move || {
            (0..n)
                .map(|_| {
                    connect(port, Duration::from_millis(300))
                        .and_then(|mut s| who(&mut s, Duration::from_secs(1)))
                        .map_err(|e| e.to_string())
                })
                .collect()
        })
        .expect("client ns")
    }

    fn metrics(&self) -> Option<String> {
        in_netns(&self.edge, || -> std::io::Result<String> {
            let addr: SocketAddr = "127.0.0.1:9188".parse().map_err(std::io::Error::other)?;
            let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(1))?;
            s.set_read_timeout(Some(Duration::from_secs(2)))?;
            s.write_all(b"GET /metrics HTTP/1.0\r\n\r\n")?;
            let mut out = String::new();
            s.read_to_string(&mut out)?;
            Ok(out)
        })
        .ok()?
        .ok()
    }
}

fn connect(port: u16, timeout: Duration) -> std::io::Result<TcpStream> {
    let addr: SocketAddr = format!("{VIP}:{port}").parse().expect("addr");
    TcpStream::connect_timeout(&addr, timeout)
}

/// Reads the name the backend announces.
fn who(stream: &mut TcpStream, timeout: Duration) -> std::io::Result<String> {
    stream.set_read_timeout(Some(timeout))?;
    tests::read_banner(stream)
}

/// The session is alive: nothing (no reset, no EOF) arrives unasked, and bytes echo back.
fn alive(s: &mut TcpStream) -> Result<(), String> {
    s.set_read_timeout(Some(Duration::from_millis(300)))
        .map_err(|e| e.to_string())?;
    let mut b = [0u8; 64];
    match s.read(&mut b) {
        Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
        other => return Err(format!("idle read: expected nothing, got {other:?}")),
    }
    s.set_read_timeout(Some(Duration::from_secs(2)))
        .map_err(|e| e.to_string())?;
    s.write_all(b"still here")
        .map_err(|e| format!("write: {e}"))?;
    let mut back = [0u8; 10];
    s.read_exact(&mut back).map_err(|e| format!("echo: {e}"))?;
    if &back != b"still here" {
        return Err(format!("echo differs: {back:?}"));
    }
    Ok(())
}

/// Waits (bounded) for the connection to be reset without sending; returns how long after
/// `since` the reset arrived.
fn wait_reset(s: &mut TcpStream, since: Instant, timeout: Duration) -> Result<Duration, String> {
    s.set_read_timeout(Some(timeout))
        .map_err(|e| e.to_string())?;
    let mut b = [0u8; 64];
    match s.read(&mut b) {
        Err(e) if e.kind() == ErrorKind::ConnectionReset => Ok(since.elapsed()),
        other => Err(format!("expected ECONNRESET, got {other:?}")),
    }
}

/// Watches a held session for a reset on its own thread, so the time is measured when the
/// RST arrives, not when the test gets round to reading.
fn watch_reset(
    mut s: TcpStream,
    since: Instant,
    timeout: Duration,
) -> JoinHandle<Result<Duration, String>> {
    std::thread::spawn(move || wait_reset(&mut s, since, timeout))
}

/// One attempt of the client loop.
#[derive(Clone, Debug)]
struct Rec {
    start: Instant,
    /// When the banner (or the error) arrived.
    end: Instant,
    res: Result<String, String>,
}

/// A client opening a new connection to VIP:port every ~20 ms, recording who served it.
struct Prober {
    stop: Arc<AtomicBool>,
    recs: Arc<Mutex<Vec<Rec>>>,
    thread: Option<JoinHandle<()>>,
}

impl Prober {
    fn start(client: &str, port: u16) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let recs = Arc::new(Mutex::new(Vec::new()));
        let (s, r, ns) = (stop.clone(), recs.clone(), client.to_owned());
        let thread = std::thread::spawn(move || {
            let _ = in_netns(&ns, move || {
                while !s.load(Ordering::Relaxed) {
                    let start = Instant::now();
                    let res = connect(port, Duration::from_millis(150))
                        .and_then(|mut c| who(&mut c, Duration::from_millis(500)))
                        .map_err(|e| e.to_string());
                    let end = Instant::now();
                    r.lock().expect("recs").push(Rec { start, end, res });
                    // Pacing of the load, not synchronisation.
                    if let Some(rest) = Duration::from_millis(20).checked_sub(start.elapsed()) {
                        std::thread::sleep(rest);
                    }
                }
            });
        });
        Self {
            stop,
            recs,
            thread: Some(thread),
        }
    }

    fn recs(&self) -> Vec<Rec> {
        self.recs.lock().expect("recs").clone()
    }

    /// The first attempt started at or after `since` that `node` served.
    fn wait_served_by(&self, node: &str, since: Instant, timeout: Duration) -> Rec {
        wait_for(&format!("a connection served by {node}"), timeout, || {
            self.recs()
                .into_iter()
                .find(|r| r.start >= since && r.res.as_deref() == Ok(node))
        })
        .unwrap_or_else(|e| panic!("{e}; records: {}", summary(&self.recs(), since)))
    }

    /// Waits until `n` attempts started at or after `since` are recorded.
    fn wait_count_after(&self, since: Instant, n: usize, timeout: Duration) {
        wait_for("more client attempts", timeout, || {
            (self.recs().iter().filter(|r| r.start >= since).count() >= n).then_some(())
        })
        .expect("client loop stalled");
    }

    fn stop(mut self) -> Vec<Rec> {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        self.recs()
    }
}

impl Drop for Prober {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Compact run-length view of the records from `since`: `pg1×12 err×3 pg2×40`.
fn summary(recs: &[Rec], since: Instant) -> String {
    let mut out: Vec<(String, usize)> = Vec::new();
    for r in recs.iter().filter(|r| r.start >= since) {
        let k = match &r.res {
            Ok(n) => n.clone(),
            Err(_) => "err".into(),
        };
        match out.last_mut() {
            Some((last, c)) if *last == k => *c += 1,
            _ => out.push((k, 1)),
        }
    }
    out.iter()
        .map(|(k, c)| format!("{k}×{c}"))
        .collect::<Vec<_>>()
        .join(" ")
}

fn ms(d: Duration) -> u128 {
    d.as_millis()
}

/// A Patroni switchover moves new writes to the new primary within fastinter + one check
/// interval, and once the new primary has served a write no new connection reaches the old
/// one. Three switchovers: the first right after the old primary answered a check (the worst
/// phase: a whole interval passes before anyone is asked again), the others at whatever phase
/// the previous one left.
#[test]
fn writes_follow_a_switchover_within_fastinter_plus_a_check() {
    let s = setup("pgrh1", Opts::default());
    let p = Prober::start(&s.client, 5000);
    let warm = Instant::now();
    p.wait_count_after(warm, 10, Duration::from_secs(5));
    assert!(
        p.recs().iter().all(|r| r.res.as_deref() == Ok("pg1")),
        "before the switch writes go to pg1: {}",
        summary(&p.recs(), warm)
    );
    let limit = FASTINTER + INTERVAL + MARGIN;
    // (old, new, new timeline, switch right after a check of the old primary)
    let rounds = [
        ("pg1", "pg2", 2, true),
        ("pg2", "pg3", 3, false),
        ("pg3", "pg1", 4, false),
    ];
    let mut results = Vec::new();
    for (old, new, tl, aligned) in rounds {
        let (held, on) = s.session(5000);
        assert_eq!(on, old, "write session before the switch");
        if aligned {
            s.wait_for_check(old);
        }
        let switch = Instant::now();
        let held_reset = watch_reset(held, switch, Duration::from_secs(5));
        s.set_all(&[
            (old, &format!("replica tl={}", tl - 1)),
            (new, &format!("primary tl={tl}")),
        ]);
        let first_new = p.wait_served_by(new, switch, Duration::from_secs(5));
        let took = first_new.end - switch;
        // Keep writing for a while after the new primary was seen.
        p.wait_count_after(first_new.end, 40, Duration::from_secs(10));
        let recs = p.recs();
        let stale: Vec<&Rec> = recs
            .iter()
            .filter(|r| r.start >= first_new.end && r.res.as_deref() != Ok(new))
            .collect();
        let between = |ok: bool| {
            recs.iter()
                .filter(|r| r.start >= switch && r.start < first_new.start)
                .filter(|r| r.res.is_ok() == ok)
                .count()
        };
        // The held session on the demoted primary is reset (demoted = shutdown, whatever
        // on_marked_down says).
        let reset = held_reset.join().expect("reset watcher");
        println!(
            "switchover {old}->{new} ({}): first write served by {new} {} ms after the role \
             switch (limit {} ms = fastinter 200 + interval 1000 + margin 300); before that {} \
             new connections still reached {old}, {} failed; held session on {old} reset \
             after {:?} ms; records: {}",
            if aligned {
                "right after a check"
            } else {
                "any phase"
            },
            ms(took),
            ms(limit),
            between(true),
            between(false),
            reset.as_ref().map(|d| ms(*d)),
            summary(&recs, switch)
        );
        assert!(
            stale.is_empty(),
            "after {new} served a write, {} new connections did not go to it: {:?}",
            stale.len(),
            stale.iter().map(|r| &r.res).collect::<Vec<_>>()
        );
        assert!(reset.is_ok(), "{old}'s held session: {reset:?}");
        let v = s.status();
        assert_eq!(primary(&v), Some(new));
        assert!(!cluster(&v).split_brain);
        results.push((old, new, took));
    }
    drop(p);
    for (old, new, took) in results {
        assert!(
            took <= limit,
            "switchover {old}->{new} took {} ms > {} ms\n{}",
            ms(took),
            ms(limit),
            s.lab.log("pgrouter")
        );
    }
}

/// With every replica down, reads go to the primary within fall × interval; a replica that
/// comes back takes new reads, and a read session on the primary stays (drain).
#[test]
fn reads_fall_back_to_the_primary_and_return() {
    let s = setup("pgrh2", Opts::default());
    let p = Prober::start(&s.client, 5001);
    let warm = Instant::now();
    p.wait_served_by("pg2", warm, Duration::from_secs(5));
    p.wait_served_by("pg3", warm, Duration::from_secs(5));

    let down = Instant::now();
    s.set_all(&[("pg2", "down"), ("pg3", "down")]);
    let first_primary = p.wait_served_by("pg1", down, Duration::from_secs(6));
    let took = first_primary.end - down;
    p.wait_count_after(first_primary.end, 20, Duration::from_secs(10));
    let after: Vec<Rec> = p
        .recs()
        .into_iter()
        .filter(|r| r.start >= first_primary.end)
        .collect();
    let limit = INTERVAL * FALL + MARGIN;
    println!(
        "fallback: first read served by the primary {} ms after both replicas went down \
         (limit {} ms = fall 2 × interval 1000 + margin 300); records: {}",
        ms(took),
        ms(limit),
        summary(&p.recs(), down)
    );
    assert!(took <= limit, "fallback took {} ms", ms(took));
    assert!(
        after.iter().all(|r| r.res.as_deref() == Ok("pg1")),
        "during fallback reads go only to the primary: {}",
        summary(&after, first_primary.end)
    );
    let v = s.status();
    assert!(listener(&v, "PG1_ro").expect("PG1_ro").fallback_active);

    // A read session on the primary, then pg2 comes back.
    let (mut held, on) = s.session(5001);
    assert_eq!(on, "pg1", "fallback session");
    let back = Instant::now();
    s.set("pg2", "replica tl=1");
    let first_back = p.wait_served_by("pg2", back, Duration::from_secs(5));
    let took_back = first_back.end - back;
    p.wait_count_after(first_back.end, 20, Duration::from_secs(10));
    let recs = p.stop();
    let wrong: Vec<&Rec> = recs
        .iter()
        .filter(|r| r.start >= first_back.end && r.res.as_deref() != Ok("pg2"))
        .collect();
    // downinter (pg2 was down for every check) + rise 1.
    let limit_back = INTERVAL + MARGIN;
    println!(
        "return: first read served by pg2 {} ms after it came back (limit {} ms = downinter \
         1000 + margin 300); records: {}",
        ms(took_back),
        ms(limit_back),
        summary(&recs, back)
    );
    assert!(took_back <= limit_back, "return took {} ms", ms(took_back));
    assert!(
        wrong.is_empty(),
        "once pg2 is back new reads go to it: {}",
        summary(&recs, first_back.end)
    );
    let v = s.status();
    assert!(!listener(&v, "PG1_ro").expect("PG1_ro").fallback_active);
    let pg1 = backend(&v, "PG1_ro", "pg1").expect("pg1 backend");
    assert_eq!(pg1.state, BackendState::Drain, "{pg1:?}");
    assert_eq!(
        alive(&mut held),
        Ok(()),
        "the primary's read session is kept"
    );
}

/// A replica lagging more than the listener's `lag` fails Patroni's `/replica?lag=` and takes
/// no new reads; back under the limit it returns.
#[test]
fn lagging_replica_leaves_the_read_set() {
    let s = setup(
        "pgrh3",
        Opts {
            ro_lag: Some("10MB"),
            ..Default::default()
        },
    );
    wait_for("pg3 takes reads before", Duration::from_secs(3), || {
        s.names(5001, 4)
            .iter()
            .any(|r| r.as_deref() == Ok("pg3"))
            .then_some(())
    })
    .unwrap_or_else(|e| panic!("{e}: {:?}", s.names(5001, 8)));
    let lag = Instant::now();
    s.set("pg3", &format!("replica tl=1 lag={}", 2 * LAG_LIMIT));
    let (v, seen) = s.wait_status("pg3 out of the read set", Duration::from_secs(5), |v| {
        set_members(v, "PG1_ro").is_some_and(|m| m == ["pg2"])
    });
    let took = seen - lag;
    let c = check(&v, "pg3", "/replica").expect("pg3 replica check");
    assert_eq!(c.check, format!("/replica?lag={LAG_LIMIT}"));
    assert!(!c.up, "{c:?}");
    assert_eq!(
        c.last.as_ref().and_then(|l| l.http_status),
        Some(503),
        "{c:?}"
    );
    assert_eq!(
        node(&v, "pg3").expect("pg3").lag_bytes,
        Some(2 * LAG_LIMIT),
        "informational lag"
    );
    // The map write follows the status within the same controller loop; poll the data path.
    let after = wait_for("reads avoid pg3", Duration::from_secs(3), || {
        let n = s.names(5001, 20);
        n.iter().all(|r| r.as_deref() == Ok("pg2")).then_some(n)
    })
    .unwrap_or_else(|e| panic!("{e}: {:?}", s.names(5001, 20)));
    println!(
        "lag: pg3 (20MB behind, limit 10MB) left the read set {} ms after reporting it \
         (limit {} ms = fall 2 × interval 1000 + margin 300); next {} reads all on pg2",
        ms(took),
        ms(INTERVAL * FALL + MARGIN),
        after.len()
    );
    assert!(took <= INTERVAL * FALL + MARGIN, "took {} ms", ms(took));

    // Under the limit again (5MB): back in the set.
    s.set("pg3", &format!("replica tl=1 lag={}", LAG_LIMIT / 2));
    s.wait_status("pg3 back in the read set", Duration::from_secs(5), |v| {
        set_members(v, "PG1_ro").is_some_and(|m| m == ["pg2", "pg3"])
    });
    wait_for("reads reach pg3 again", Duration::from_secs(3), || {
        s.names(5001, 6)
            .iter()
            .any(|r| r.as_deref() == Ok("pg3"))
            .then_some(())
    })
    .expect("pg3 back");
}

/// A primary that stops passing the primary check (its Patroni goes away: no answer, so `fall`
/// applies) has its sessions reset on a `shutdown-sessions` listener, and kept on a `keep`
/// one.
#[test]
fn marked_down_primary_sessions_are_reset() {
    let s = setup(
        "pgrh4",
        Opts {
            keep_listener: true,
            ..Default::default()
        },
    );
    s.wait_status("PG1_keep published", Duration::from_secs(5), |v| {
        listener(v, "PG1_keep").is_some_and(|l| l.generation > 0)
    });
    let (mut shut, a) = s.session(5000);
    let (mut keep, b) = s.session(5002);
    assert_eq!((a.as_str(), b.as_str()), ("pg1", "pg1"));

    let down = Instant::now();
    s.set("pg1", "down");
    let reset = wait_reset(&mut shut, down, Duration::from_secs(5));
    let limit = INTERVAL * FALL + MARGIN;
    println!(
        "marked down: shutdown-sessions session reset {:?} ms after pg1's API went down \
         (limit {} ms = fall 2 × interval 1000 + margin 300)",
        reset.as_ref().map(|d| ms(*d)),
        ms(limit)
    );
    let reset = reset.unwrap_or_else(|e| panic!("{e}\n{}", s.lab.log("pgrouter")));
    assert!(reset <= limit, "reset after {} ms", ms(reset));
    let v = s.status();
    let c = check(&v, "pg1", "/primary").expect("check");
    assert_eq!(c.verdict, Verdict::Down, "{c:?}");
    assert_eq!(primary(&v), None);
    let kb = backend(&v, "PG1_keep", "pg1").expect("pg1");
    assert_eq!(kb.state, BackendState::Drain, "{kb:?}");
    assert_eq!(alive(&mut keep), Ok(()), "on_marked_down = keep");
    // And no new writes anywhere while no node passes the primary check.
    let w = s.names(5000, 3);
    assert!(w.iter().all(|r| r.is_err()), "no primary, no writes: {w:?}");
}

/// Two nodes claiming primary on the same timeline get no new writes at all; once their
/// timelines differ only the higher one does, and the loser's sessions are reset.
#[test]
fn split_brain_never_writes_to_two_nodes() {
    let s = setup("pgrh5", Opts::default());
    let (mut held, on) = s.session(5000);
    assert_eq!(on, "pg1");
    let gen_before = listener(&s.status(), "PG1").expect("PG1").generation;
    let p = Prober::start(&s.client, 5000);
    let warm = Instant::now();
    p.wait_served_by("pg1", warm, Duration::from_secs(5));

    let split = Instant::now();
    s.set("pg2", "primary tl=1");
    // Split seen by the health task *and* the emptied set written to the maps (generation).
    let (v, blocked) = s.wait_status("split brain", Duration::from_secs(5), |v| {
        cluster(v).split_brain
            && cluster(v).writes_blocked
            && listener(v, "PG1").is_some_and(|l| l.generation > gen_before)
    });
    assert_eq!(primary(&v), None);
    assert_eq!(set_members(&v, "PG1").expect("PG1"), Vec::<String>::new());
    p.wait_count_after(blocked, 10, Duration::from_secs(10));
    // The undecided side's sessions are kept (drain): it may be the real primary.
    assert_eq!(alive(&mut held), Ok(()), "pg1 session during the split");

    let resolve = Instant::now();
    let held_reset = watch_reset(held, resolve, Duration::from_secs(5));
    s.set("pg2", "primary tl=2");
    let first_new = p.wait_served_by("pg2", resolve, Duration::from_secs(5));
    let reset = held_reset.join().expect("reset watcher");
    p.wait_count_after(first_new.end, 20, Duration::from_secs(10));
    let recs = p.stop();

    let to_pg2_early: Vec<&Rec> = recs
        .iter()
        .filter(|r| r.start < resolve && r.res.as_deref() == Ok("pg2"))
        .collect();
    let during: Vec<&Rec> = recs
        .iter()
        .filter(|r| r.start >= blocked && r.start < resolve)
        .collect();
    let after: Vec<&Rec> = recs.iter().filter(|r| r.start >= first_new.end).collect();
    println!(
        "split brain: writes blocked (status + maps) {} ms after pg2 claimed primary on the \
         same timeline; {} attempts during the split all refused; pg2 (timeline 2) served \
         writes {} ms after its timeline rose; pg1's held session reset after {:?} ms; \
         records: {}",
        ms(blocked - split),
        during.len(),
        ms(first_new.end - resolve),
        reset.as_ref().map(|d| ms(*d)),
        summary(&recs, split)
    );
    assert!(
        to_pg2_early.is_empty(),
        "pg2 must get no write while timelines are equal"
    );
    assert!(
        during.iter().all(|r| r.res.is_err()),
        "no new write during the undecided split: {}",
        summary(&recs, blocked)
    );
    assert!(
        after.iter().all(|r| r.res.as_deref() == Ok("pg2")),
        "only the higher timeline gets writes: {}",
        summary(&recs, first_new.end)
    );
    assert!(
        reset.is_ok(),
        "pg1's session after losing on timeline: {reset:?}"
    );
    let v = s.status();
    let c = cluster(&v);
    assert!(c.split_brain, "both still pass /primary");
    assert!(!c.writes_blocked);
    assert_eq!(c.primary.as_deref(), Some("pg2"));
    let d = listener(&v, "PG1").expect("PG1").drop_no_backend;
    assert!(d > 0, "blocked SYNs are counted as drop_no_backend");
}

/// Parses a Prometheus text page into `series → value`.
fn parse_metrics(text: &str) -> BTreeMap<String, f64> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (k, v) = l.rsplit_once(' ')?;
            Some((k.to_owned(), v.parse().ok()?))
        })
        .collect()
}

/// `pgrouter status` (table and JSON) names every node with its role and check results, and
/// the metrics endpoint in the edge namespace exposes check, fallback and flow gauges.
#[test]
fn status_and_metrics_report_the_cluster() {
    let s = setup(
        "pgrh6",
        Opts {
            metrics: Some("127.0.0.1:9188"),
            ..Default::default()
        },
    );
    // Every check judged (pg1's `/replica` needs `fall` failures before it is down).
    s.wait_status("every check judged", Duration::from_secs(5), |v| {
        NODES.iter().all(|(n, _)| {
            node(v, n).is_some_and(|n| n.checks.iter().all(|c| c.verdict != Verdict::Unknown))
        })
    });
    let out = std::process::Command::new(tests::pgrouter_bin())
        .args(["status", "--socket", &s.socket])
        .output()
        .expect("status");
    assert!(out.status.success());
    let table = String::from_utf8_lossy(&out.stdout).into_owned();
    println!("{table}");
    assert!(table.contains("cluster pg: primary pg1"), "{table}");
    for (name, ip) in NODES {
        let line = table
            .lines()
            .find(|l| l.trim_start().starts_with(&format!("{name} ")) && l.contains(":5432"))
            .unwrap_or_else(|| panic!("no node line for {name}:\n{table}"));
        assert!(line.contains(ip), "{line}");
        assert!(line.contains("running"), "{line}");
        if name == "pg1" {
            assert!(line.contains(" primary "), "{line}");
            assert!(line.contains("/primary=up(200)"), "{line}");
            assert!(line.contains("/replica=down(503)"), "{line}");
        } else {
            assert!(line.contains(" replica "), "{line}");
            assert!(line.contains("/primary=down(503)"), "{line}");
            assert!(line.contains("/replica=up(200)"), "{line}");
        }
    }
    let v = s.status();
    for (name, _) in NODES {
        let n = node(&v, name).unwrap_or_else(|| panic!("{name} in {v:?}"));
        let primary = name == "pg1";
        let role = if primary { "primary" } else { "replica" };
        assert_eq!(n.role.as_deref(), Some(role));
        assert_eq!(n.timeline, Some(1));
        let p = check(&v, name, "/primary").expect("primary check");
        let r = check(&v, name, "/replica").expect("replica check");
        assert_eq!(p.up, primary, "{p:?}");
        assert_eq!(r.up, !primary, "{r:?}");
        let last = p.last.as_ref().unwrap_or_else(|| panic!("{p:?}"));
        assert_eq!(last.http_status, Some(if primary { 200 } else { 503 }));
    }

    // Three held write sessions and two reads.
    let sessions: Vec<(TcpStream, String)> = (0..3)
        .map(|_| s.session(5000))
        .chain((0..2).map(|_| s.session(5001)))
        .collect();
    let key = |n: &str, c: &str| {
        format!("pgrouter_check_up{{cluster=\"pg\",node=\"{n}\",check=\"{c}\"}}")
    };
    let flows = |l: &str, n: &str| {
        format!("pgrouter_backend_active_flows{{listener=\"pg/{l}\",node=\"{n}\"}}")
    };
    let fallback = "pgrouter_fallback_active{listener=\"pg/PG1_ro\"}".to_owned();
    let m = wait_for(
        "metrics with the held flows",
        Duration::from_secs(5),
        || {
            let m = parse_metrics(&s.metrics()?);
            (m.get(&flows("PG1", "pg1")) == Some(&3.0)).then_some(m)
        },
    )
    .unwrap_or_else(|e| panic!("{e}\n{}", s.metrics().unwrap_or_default()));
    assert_eq!(m.get(&key("pg1", "/primary")), Some(&1.0));
    assert_eq!(m.get(&key("pg1", "/replica")), Some(&0.0));
    for n in ["pg2", "pg3"] {
        assert_eq!(m.get(&key(n, "/primary")), Some(&0.0), "{n}");
        assert_eq!(m.get(&key(n, "/replica")), Some(&1.0), "{n}");
        assert_eq!(m.get(&flows("PG1", n)), Some(&0.0), "{n}");
    }
    assert_eq!(m.get(&fallback), Some(&0.0));
    let reads = m.get(&flows("PG1_ro", "pg2")).copied().unwrap_or(-1.0)
        + m.get(&flows("PG1_ro", "pg3")).copied().unwrap_or(-1.0);
    assert_eq!(reads, 2.0, "two read sessions on the replicas");
    assert_eq!(m.get(&flows("PG1_ro", "pg1")), Some(&0.0));
    assert_eq!(m.get("pgrouter_split_brain{cluster=\"pg\"}"), Some(&0.0));

    // Every replica down: fallback shows, and the replica checks report 0.
    s.set_all(&[("pg2", "down"), ("pg3", "down")]);
    let m = wait_for("fallback in metrics", Duration::from_secs(6), || {
        let m = parse_metrics(&s.metrics()?);
        (m.get(&fallback) == Some(&1.0)).then_some(m)
    })
    .unwrap_or_else(|e| panic!("{e}\n{}", s.metrics().unwrap_or_default()));
    for n in ["pg2", "pg3"] {
        assert_eq!(m.get(&key(n, "/replica")), Some(&0.0), "{n}");
    }
    // The replicas' read sessions were reset (shutdown-sessions) and their flows are gone:
    // only the three write flows (two conntrack entries each) remain.
    let mut sessions = sessions;
    for (st, name) in sessions.iter_mut().skip(3) {
        let r = wait_reset(st, Instant::now(), Duration::from_secs(2));
        assert!(r.is_ok(), "read session on {name}: {r:?}");
    }
    wait_for("read flows swept", Duration::from_secs(5), || {
        let m = parse_metrics(&s.metrics()?);
        (m.get("pgrouter_conntrack_entries") == Some(&6.0)).then_some(())
    })
    .unwrap_or_else(|e| panic!("{e}\n{}", s.metrics().unwrap_or_default()));
    let v = s.status();
    let out = std::process::Command::new(tests::pgrouter_bin())
        .args(["status", "--socket", &s.socket])
        .output()
        .expect("status");
    let table = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(table.contains("FALLBACK"), "{table}");
    assert!(listener(&v, "PG1_ro").expect("ro").fallback_active);

    // A write session the client closes leaves the gauge.
    sessions.truncate(2);
    wait_for(
        "a closed write flow leaves the gauge",
        Duration::from_secs(5),
        || {
            let m = parse_metrics(&s.metrics()?);
            (m.get(&flows("PG1", "pg1")) == Some(&2.0)).then_some(())
        },
    )
    .unwrap_or_else(|e| panic!("{e}\n{}", s.metrics().unwrap_or_default()));
}

/// `pgrouter_backend_active_flows` of a node whose sessions shutdown-sessions has reset should
/// fall to 0 (its flows are gone from conntrack); it keeps the old count until the node is
/// active again.
#[test]
fn active_flows_gauge_drops_when_sessions_are_shut_down() {
    let s = setup(
        "pgrh7",
        Opts {
            metrics: Some("127.0.0.1:9188"),
            ..Default::default()
        },
    );
    let (mut read, on) = s.session(5001);
    let flows = format!("pgrouter_backend_active_flows{{listener=\"pg/PG1_ro\",node=\"{on}\"}}");
    wait_for("the read flow in the gauge", Duration::from_secs(5), || {
        let m = parse_metrics(&s.metrics()?);
        (m.get(&flows) == Some(&1.0)).then_some(())
    })
    .unwrap_or_else(|e| panic!("{e}\n{}", s.metrics().unwrap_or_default()));
    let down = Instant::now();
    s.set(&on, "down");
    let r = wait_reset(&mut read, down, Duration::from_secs(5));
    assert!(r.is_ok(), "read session on {on}: {r:?}");
    // Only the health checks' own traffic is left: no conntrack entry of the read flow.
    wait_for("the read flow swept", Duration::from_secs(5), || {
        let m = parse_metrics(&s.metrics()?);
        (m.get("pgrouter_conntrack_entries") == Some(&0.0)).then_some(())
    })
    .unwrap_or_else(|e| panic!("{e}\n{}", s.metrics().unwrap_or_default()));
    let stale = wait_for("the gauge to drop to 0", Duration::from_secs(5), || {
        let m = parse_metrics(&s.metrics()?);
        (m.get(&flows) == Some(&0.0)).then_some(())
    });
    let now = s.metrics().unwrap_or_default();
    let line = now.lines().find(|l| l.starts_with(&flows)).unwrap_or("");
    assert!(
        stale.is_ok(),
        "{on} has no flow left (conntrack empty, session reset) but the gauge still says: {line}"
    );
}

/// Patroni's `/primary` answers 200 while the leader lock holder's PostgreSQL is still
/// starting (patroni#2756): that node gets no writes, and its sessions are reset after `fall`.
/// A Patroni that accepts but never answers fails each check after `timeout`, so the primary
/// leaves within interval + 2 × timeout + fastinter.
#[test]
fn starting_or_hanging_primary_leaves_the_write_set() {
    let s = setup("pgrh8", Opts::default());
    let timeout = Duration::from_millis(500);
    let mut results = Vec::new();
    for (what, state, limit) in [
        // Two failures: the next check (≤ interval), then one fastinter later.
        (
            "state=starting with HTTP 200",
            "primary tl=1 state=starting",
            INTERVAL + FASTINTER + MARGIN,
        ),
        // Each failure also takes `timeout`; the second check starts when the first gave up.
        (
            "hanging API",
            "hang",
            INTERVAL + timeout * 2 + FASTINTER + MARGIN,
        ),
    ] {
        let (held, on) = s.session(5000);
        assert_eq!(on, "pg1");
        s.wait_for_check("pg1");
        let t0 = Instant::now();
        let reset = watch_reset(held, t0, Duration::from_secs(5));
        s.set("pg1", state);
        let reset = reset.join().expect("watcher");
        let v = s.status();
        let c = check(&v, "pg1", "/primary").expect("check").clone();
        let last = c.last.clone().unwrap_or_else(|| panic!("{what}: {c:?}"));
        let writes = s.names(5000, 3);
        println!(
            "{what}: pg1's write session reset {:?} ms after the change (limit {} ms); last \
             check: {}",
            reset.as_ref().map(|d| ms(*d)),
            ms(limit),
            serde_json::to_string(&last).unwrap_or_default()
        );
        let took = reset.unwrap_or_else(|e| panic!("{what}: {e}\n{}", s.lab.log("pgrouter")));
        assert_eq!(c.verdict, Verdict::Down, "{what}: {c:?}");
        assert_eq!(primary(&v), None, "{what}");
        assert!(
            writes.iter().all(|w| w.is_err()),
            "{what}: no writes anywhere: {writes:?}"
        );
        if state == "hang" {
            assert!(last.detail.contains("timeout"), "{c:?}");
        } else {
            assert_eq!(
                last.http_status,
                Some(200),
                "200 alone is not a primary: {c:?}"
            );
            assert_eq!(
                node(&v, "pg1").expect("pg1").state.as_deref(),
                Some("starting")
            );
        }
        results.push((what, took, limit));
        // Back to a running primary: writes return.
        s.set("pg1", "primary tl=1");
        wait_for("writes back on pg1", Duration::from_secs(5), || {
            (s.names(5000, 1)[0].as_deref() == Ok("pg1")).then_some(())
        })
        .unwrap_or_else(|e| panic!("{e}\n{}", s.lab.log("pgrouter")));
    }
    for (what, took, limit) in results {
        assert!(took <= limit, "{what}: {} ms > {} ms", ms(took), ms(limit));
    }
}

/// A restarted controller adopts the pinned data path and changes nothing until its first
/// checks are in: sessions survive a plain restart; a switchover made while it was stopped is
/// applied once the checks are in (old primary's session reset, writes move), and no new
/// write reaches the old primary after the new one served one.
#[test]
fn restart_keeps_sessions_and_applies_a_switchover_made_meanwhile() {
    let mut s = setup("pgrh9", Opts::default());
    let (mut w, on) = s.session(5000);
    assert_eq!(on, "pg1");
    let mut r = wait_for("a read session on pg3", Duration::from_secs(5), || {
        let (r, on) = s.session(5001);
        (on == "pg3").then_some(r)
    })
    .expect("read session");

    // 1. Plain restart: nothing changes, nothing is reset.
    s.stop_pgrouter();
    let idle = s.names(5000, 2);
    assert!(
        idle.iter().all(|n| n.as_deref() == Ok("pg1")),
        "the pinned data path works without the controller: {idle:?}"
    );
    let t = Instant::now();
    s.start_pgrouter("pgrouter-2");
    wait_for(
        "the restarted controller to take over",
        Duration::from_secs(10),
        || {
            s.lab
                .log("pgrouter-2")
                .contains("first checks complete")
                .then_some(())
        },
    )
    .unwrap_or_else(|e| panic!("{e}\n{}", s.lab.log("pgrouter-2")));
    println!(
        "restart: took over the pinned data path {} ms after start",
        ms(t.elapsed())
    );
    // A whole check cycle more (each node answered again), then the sessions.
    s.wait_for_check("pg1");
    s.wait_for_check("pg3");
    assert_eq!(alive(&mut w), Ok(()), "write session across a restart");
    assert_eq!(alive(&mut r), Ok(()), "read session across a restart");

    // 2. Switchover while the controller is stopped.
    s.stop_pgrouter();
    let p = Prober::start(&s.client, 5000);
    s.set_all(&[("pg1", "replica tl=2"), ("pg2", "primary tl=2")]);
    let t = Instant::now();
    let w_reset = watch_reset(w, t, Duration::from_secs(10));
    s.start_pgrouter("pgrouter-3");
    let first_new = p.wait_served_by("pg2", t, Duration::from_secs(10));
    p.wait_count_after(first_new.end, 20, Duration::from_secs(10));
    let recs = p.stop();
    let reset = w_reset.join().expect("watcher");
    println!(
        "restart after a switchover: first write on pg2 {} ms after the controller started; \
         pg1's held session reset after {:?} ms; records: {}",
        ms(first_new.end - t),
        reset.as_ref().map(|d| ms(*d)),
        summary(&recs, t)
    );
    assert!(reset.is_ok(), "demoted pg1's session: {reset:?}");
    let stale: Vec<&Rec> = recs
        .iter()
        .filter(|x| x.start >= first_new.end && x.res.as_deref() != Ok("pg2"))
        .collect();
    assert!(stale.is_empty(), "{}", summary(&recs, first_new.end));
    assert_eq!(alive(&mut r), Ok(()), "pg3's read session is untouched");
}

/// On a primary listener, `on_marked_down = "keep"` covers a node that merely stopped
/// answering; it must not keep sessions on a node Patroni reports as demoted, nor on the
/// losing side of a split brain (docs/config.md, "What happens to established sessions":
/// reset, whatever on_marked_down says). The `shutdown-sessions` listener on :5000 is the
/// control.
#[test]
fn keep_listener_still_resets_demoted_and_split_losing_primaries() {
    let s = setup(
        "pgrha",
        Opts {
            keep_listener: true,
            ..Default::default()
        },
    );
    s.wait_status("PG1_keep published", Duration::from_secs(5), |v| {
        listener(v, "PG1_keep").is_some_and(|l| l.generation > 0)
    });
    let mut results = Vec::new();
    // (what, old primary, new primary, states written together)
    type Phase<'a> = (&'a str, &'a str, &'a str, &'a [(&'a str, &'a str)]);
    let phases: [Phase; 2] = [
        (
            "demoted (switchover)",
            "pg1",
            "pg2",
            &[("pg1", "replica tl=1"), ("pg2", "primary tl=2")],
        ),
        (
            "split brain lost on timeline",
            "pg2",
            "pg3",
            &[("pg3", "primary tl=3")],
        ),
    ];
    for (what, old, new, states) in phases {
        let (c, a) = s.session(5000);
        let (k, b) = s.session(5002);
        assert_eq!((a.as_str(), b.as_str()), (old, old), "{what}");
        let t = Instant::now();
        let control = watch_reset(c, t, Duration::from_secs(5));
        let keep = std::thread::spawn(move || {
            let mut k = k;
            let r = wait_reset(&mut k, t, Duration::from_secs(5));
            (k, r)
        });
        s.set_all(states);
        let control = control.join().expect("watcher");
        let (mut k, keep) = keep.join().expect("watcher");
        s.wait_status("the new primary", Duration::from_secs(5), |v| {
            primary(v) == Some(new)
        });
        // Not reset: can the client still write through it?
        let still = keep.is_err().then(|| alive(&mut k));
        println!(
            "{what}: {old}'s session on the shutdown-sessions listener: {:?}; on the keep \
             listener: {:?}{}",
            control.as_ref().map(|d| ms(*d)),
            keep.as_ref().map(|d| ms(*d)),
            match still {
                Some(Ok(())) => format!(" and still carries bytes to {old} (echoed)"),
                Some(Err(e)) => format!(" ({e})"),
                None => String::new(),
            }
        );
        results.push((what, control, keep));
    }
    for (what, control, keep) in results {
        assert!(control.is_ok(), "{what}, shutdown-sessions: {control:?}");
        assert!(
            keep.is_ok(),
            "{what}: the keep listener kept a session on a node that must get no writes: {keep:?}"
        );
    }
}

/// PostgreSQL on a replica stops listening while its Patroni API still reports a healthy
/// replica (as in the first second of a Patroni stop). The data path sees the refusal (a RST
/// answering its SYN) and the node leaves the read set within the controller's 100 ms poll,
/// long before `fall` failed checks could; while it refuses, a passing check brings it back
/// at most once per `interval`; listening again, it serves again.
#[test]
fn a_replica_refusing_connections_leaves_the_read_set_before_its_api_says_so() {
    let mut s = setup("pgrh3", Opts::default());
    let p = Prober::start(&s.client, 5001);
    let warm = Instant::now();
    p.wait_served_by("pg2", warm, Duration::from_secs(5));
    p.wait_served_by("pg3", warm, Duration::from_secs(5));

    let pid: u32 = std::fs::read_to_string(s.lab.dir.join("pg2.pid"))
        .expect("pg2 echo pid")
        .trim()
        .parse()
        .expect("pid");
    let stop = Instant::now();
    s.lab.kill(pid);
    let first = wait_for("a refused read", Duration::from_secs(5), || {
        p.recs()
            .into_iter()
            .find(|r| r.start >= stop && r.res.is_err())
    })
    .unwrap_or_else(|e| panic!("{e}; records: {}", summary(&p.recs(), stop)));
    // Poll period 100 ms + the map write; well inside the 1 s hold.
    let settle = first.end + Duration::from_millis(250);
    let hold_end = first.end + INTERVAL - Duration::from_millis(50);
    p.wait_count_after(hold_end, 1, Duration::from_secs(5));
    let recs = p.recs();
    let in_hold: Vec<&Rec> = recs
        .iter()
        .filter(|r| r.start >= settle && r.end < hold_end)
        .collect();
    println!(
        "refusal: first refused read {} ms after the echo stopped; records: {}",
        ms(first.end - stop),
        summary(&recs, stop)
    );
    assert!(
        in_hold.len() >= 10,
        "the client kept trying: {}",
        in_hold.len()
    );
    assert!(
        in_hold.iter().all(|r| r.res.as_deref() == Ok("pg3")),
        "from 250 ms after the refusal reads go to pg3: {}",
        summary(&recs, first.end)
    );
    let v = s.status();
    let pg2 = check(&v, "pg2", "/replica").expect("pg2 /replica");
    assert!(pg2.up, "Patroni's API still says pg2 is fine");
    assert!(node(&v, "pg2").expect("pg2").refusing, "{v:?}");
    let refused = backend(&v, "PG1_ro", "pg2").map(|b| b.refused);
    assert!(
        refused >= Some(1),
        "pg2's refusals are counted: {refused:?}"
    );

    // Listening again: pg2 serves again after the hold.
    let ns = s.lab.ns("pg2");
    s.lab
        .spawn(
            &ns,
            "pg2",
            &[
                env!("CARGO_BIN_EXE_pgr-echo"),
                "pg2",
                &format!("{}:5432", NODES[1].1),
            ],
        )
        .expect("echo");
    let back = Instant::now();
    p.wait_served_by("pg2", back, INTERVAL * 2 + MARGIN);
    let recs = p.stop();
    println!("return: records {}", summary(&recs, back));
}
