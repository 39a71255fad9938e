//! Flow-state sync between two edge hosts, proven with a real PostgreSQL 15: both edges run
//! `pgrouter run` (generic XDP, VRRP at 100 ms adverts, `[sync]` with each other) in front of
//! one server; the master (edge1, priority 150) syncs its flows to the backup (edge2, 100). A
//! client holds 50 sessions through the VIP, each running `SELECT 1` every 100 ms, while
//! `pgbench` runs 4 persistent clients; then the master dies (its link is cut, after a
//! SIGKILL of its pgrouter or not) or dies and comes back, and not one session, query or
//! transaction may be lost: edge2 already has every flow's NAT state when the VIP reaches
//! it, and edge1 takes the VIP back only once it has edge2's state again (its `sync` track
//! costs it 100 until then).
//!
//! The link cut is the bridge side of edge1's veth, as in failover_net.rs: what a dead host
//! or a dead switch port looks like to the others. edge1 sees its carrier go (a veth's
//! carrier follows its peer), as with a pulled cable; its VRRP instance goes to FAULT.
use std::{
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use pgrouter::status::Status;
use tests::{
    config::{Cluster, Config, Control, Datapath, Listener, Node, Sync, Vrrp},
    netns::{Lab, VIP},
    postgres::{Pgbench, PgbenchResult, Postgres, SessionReport, Sessions},
    wait_for,
};

/// Held sessions through the VIP.
const SESSIONS: usize = 50;
/// Sessions opened through the backup while it is master (the preemption test).
const LATE_SESSIONS: usize = 10;
/// One `SELECT 1` per session this often.
const PERIOD: Duration = Duration::from_millis(100);
/// pgbench's clients (each a flow the backup must have too).
const PGBENCH_CLIENTS: u32 = 4;
/// The load runs this long before the failure.
const BEFORE_FAILURE: Duration = Duration::from_secs(3);
const PG1: &str = "198.18.0.11";
const EDGE_IPS: [&str; 2] = ["198.18.0.21", "198.18.0.22"];
const SYNC_PORT: u16 = 7800;
/// VRRP priorities: edge1 is the master while its sync is ready.
const PRIORITIES: [u8; 2] = [150, 100];

/// Everything that reads the sync part of the status (`Status::sync`, `SyncStatus`,
/// `PeerStatus`), in one place.
mod sync_view {
    use pgrouter::status::Status;

    /// This host has had a full sync from every peer since it (re)connected.
    pub fn ready(st: &Status) -> bool {
        st.sync.as_ref().is_some_and(|s| s.ready)
    }

    /// Flows installed from the peer at `addr` (`IP`, or `IP:PORT`) so far.
    pub fn installed_from(st: &Status, addr: &str) -> u64 {
        st.sync
            .as_ref()
            .and_then(|s| s.peers.iter().find(|p| p.addr.starts_with(addr)))
            .map_or(0, |p| p.installed)
    }

    /// One line per peer, for the summary and failure messages.
    pub fn summary(st: &Status) -> String {
        let Some(s) = &st.sync else {
            return "no sync status".into();
        };
        let mut out = format!("ready={}", s.ready);
        for p in &s.peers {
            out.push_str(&format!(
                "\n    peer {}: sending={} receiving={} ready={} last_full_sync_s={:?} \
                 full_syncs={} pending={} lag_ms={} installed={} removed={} rejected={} \
                 auth_failures={} bytes_sent={} bytes_received={} last_error={:?}",
                p.addr,
                p.sending,
                p.receiving,
                p.ready,
                p.last_full_sync_s,
                p.full_syncs,
                p.pending,
                p.lag_ms,
                p.installed,
                p.removed,
                p.rejected,
                p.auth_failures,
                p.bytes_sent,
                p.bytes_received,
                p.last_error
            ));
        }
        out
    }
}

/// Generic XDP, static roles (pg1 primary), writes on :5000, VRRP at 100 ms adverts that
/// faults when XDP is not attached and costs 100 while the sync is not ready, and `[sync]`
/// with the other edge.
fn edge_config(lab: &Lab, i: usize) -> Config {
    edge_config_with(lab, i, true)
}

/// [`edge_config`], with or without `[sync]` (and its track): the benchmark's baseline.
fn edge_config_with(lab: &Lab, i: usize, sync: bool) -> Config {
    let edge = format!("edge{}", i + 1);
    let peer = format!("{}:{SYNC_PORT}", EDGE_IPS[1 - i]);
    let mut cfg = Config::new()
        .datapath(
            Datapath::new("eth0", "generic", lab.dir.join(format!("{edge}-bpf")))
                .snat_ports("40000-44999"),
        )
        .control(Control::new(lab.dir.join(format!("{edge}.sock"))));
    let mut tracks = vec![("xdp-attached", 0)];
    if sync {
        cfg = cfg.sync(
            Sync::new(
                &format!("{}:{SYNC_PORT}", EDGE_IPS[i]),
                [peer.as_str()],
                lab.dir.join("sync.key"),
            )
            .grace(Duration::from_secs(2))
            .refresh(Duration::from_secs(5)),
        );
        tracks.push(("sync", -100));
    }
    cfg.cluster(
        Cluster::new("pg")
            .checks("static")
            .node(Node::new("pg1", PG1).role("primary"))
            .listener(Listener::primary("PG1", VIP, 5000)),
    )
    .vrrp(
        Vrrp::new("VI_1", "eth0", 61, PRIORITIES[i])
            .advert_int(Duration::from_millis(100))
            .vips([format!("{VIP}/24")])
            .tracks(tracks),
    )
}

/// Which of `edges` have the VIP on their eth0.
fn vip_holders(edges: &[String; 2]) -> Vec<usize> {
    (0..2)
        .filter(|i| {
            tests::run(
                "ip",
                &["-n", &edges[*i], "-o", "-4", "addr", "show", "dev", "eth0"],
            )
            .map(|o| String::from_utf8_lossy(&o.stdout).contains(&format!("{VIP}/")))
            .unwrap_or(false)
        })
        .collect()
}

/// When the VIP's holders changed, and to whom.
type VipChanges = Vec<(Instant, Vec<usize>)>;

/// Who holds the VIP, as a timeline: a thread looks every 20 ms and notes each change.
struct VipWatch {
    stop: Arc<AtomicBool>,
    changes: Arc<Mutex<VipChanges>>,
    thread: std::thread::JoinHandle<()>,
}

impl VipWatch {
    fn start(edges: &[String; 2]) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let changes: Arc<Mutex<VipChanges>> = Arc::default();
        let (edges, stop2, changes2) = (edges.clone(), stop.clone(), changes.clone());
        let thread = std::thread::spawn(move || {
            while !stop2.load(Ordering::Relaxed) {
                let t = Instant::now();
                let now = vip_holders(&edges);
                if let Ok(mut c) = changes2.lock()
                    && c.last().is_none_or(|(_, last)| *last != now)
                {
                    c.push((t, now));
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        });
        Self {
            stop,
            changes,
            thread,
        }
    }

    fn stop(self) -> VipChanges {
        self.stop.store(true, Ordering::Relaxed);
        let _ = self.thread.join();
        self.changes.lock().map(|c| c.clone()).unwrap_or_default()
    }
}

/// `edge1`, `edge1+edge2`, `nobody`.
fn holders_text(h: &[usize]) -> String {
    match h {
        [] => "nobody".into(),
        h => h
            .iter()
            .map(|i| format!("edge{}", i + 1))
            .collect::<Vec<_>>()
            .join("+"),
    }
}

/// A problem unless, from `since` on, the VIP reached where `settled` wants it and stayed
/// there to the end: on its way it may be held by both edges or by nobody for a moment (a
/// handover), but once settled it must not move again (a VIP that flaps moves every session
/// more than once).
fn vip_settled(
    changes: &[(Instant, Vec<usize>)],
    since: Instant,
    what: &str,
    settled: impl Fn(&[usize]) -> bool,
) -> Option<String> {
    // The holders at `since`, then each change after it.
    let at_since = changes.iter().rev().find(|(t, _)| *t <= since);
    let states: Vec<&Vec<usize>> = at_since
        .into_iter()
        .chain(changes.iter().filter(|(t, _)| *t > since))
        .map(|(_, h)| h)
        .collect();
    let ok = states
        .iter()
        .position(|h| settled(h))
        .is_some_and(|first| states[first..].iter().all(|h| settled(h)));
    (!ok).then(|| {
        let seq: Vec<String> = states.iter().map(|h| holders_text(h)).collect();
        format!(
            "the VIP did not settle after {what}: it went {}",
            seq.join(" → ")
        )
    })
}

/// Both edges' shared key: 32 random bytes in hex, one line.
fn write_key(lab: &Lab) {
    use std::{io::Read as _, os::unix::fs::PermissionsExt as _};
    let mut key = [0u8; 32];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut key))
        .expect("random key");
    let hex: String = key.iter().map(|b| format!("{b:02x}")).collect();
    let path = lab.dir.join("sync.key");
    std::fs::write(&path, format!("{hex}\n")).expect("key file");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).expect("key mode");
}

struct Net {
    lab: Lab,
    client: String,
    edges: [String; 2],
    /// The bridge-side ends of the edges' veths.
    ports: [String; 2],
    pids: [u32; 2],
}

impl Net {
    fn socket(&self, i: usize) -> String {
        self.lab
            .dir
            .join(format!("edge{}.sock", i + 1))
            .display()
            .to_string()
    }

    fn status(&self, i: usize) -> Option<Status> {
        tests::status(&self.socket(i))
    }

    /// Which edges have the VIP on their eth0.
    fn vip_holders(&self) -> Vec<usize> {
        vip_holders(&self.edges)
    }

    /// Both edges' sync status and the tail of their logs, for a failure message.
    fn diagnostics(&self) -> String {
        let mut out = String::new();
        for i in 0..2 {
            let sync = self
                .status(i)
                .map_or("no status".into(), |st| sync_view::summary(&st));
            let log = self.lab.log(&format!("edge{}", i + 1));
            let tail: Vec<&str> = log.lines().rev().take(40).collect();
            out.push_str(&format!(
                "\n--- edge{} sync: {sync}\n--- edge{} log (last 40 lines):\n{}\n",
                i + 1,
                i + 1,
                tail.into_iter().rev().collect::<Vec<_>>().join("\n")
            ));
        }
        out
    }

    /// Cuts edge `i` off the bridge (it sees its carrier go).
    fn cut(&self, i: usize) {
        tests::run("ip", &["link", "set", &self.ports[i], "down"]).expect("cut");
    }

    fn restore(&self, i: usize) {
        tests::run("ip", &["link", "set", &self.ports[i], "up"]).expect("restore");
    }

    /// Polls `f` every 10 ms until it returns `Some`; panics with both edges' diagnostics
    /// after `timeout`, or at once when an edge's daemon (one not killed on purpose) exits.
    fn wait<T>(
        &mut self,
        what: &str,
        timeout: Duration,
        mut f: impl FnMut(&Net) -> Option<T>,
    ) -> T {
        let start = Instant::now();
        loop {
            if let Some(v) = f(self) {
                return v;
            }
            for i in 0..2 {
                if let Some(st) = self.lab.wait_exit(self.pids[i], Duration::ZERO) {
                    panic!(
                        "edge{}'s pgrouter exited ({st}) while waiting for {what}{}",
                        i + 1,
                        self.diagnostics()
                    );
                }
            }
            if start.elapsed() > timeout {
                panic!(
                    "timed out after {timeout:?} waiting for {what}{}",
                    self.diagnostics()
                );
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    fn wait_sync_ready(&mut self, i: usize, timeout: Duration) {
        self.wait(&format!("edge{}'s sync to be ready", i + 1), timeout, |n| {
            n.status(i).filter(sync_view::ready).map(|_| ())
        });
    }
}

/// The lab: client, two edges, pg1 running PostgreSQL (with pgbench's tables) on one bridge;
/// both edges started, the VIP on edge1 only, both syncs ready.
fn setup(prefix: &str) -> Net {
    setup_with(prefix, true)
}

/// [`setup`], with or without sync (without it, nothing waits for a sync to be ready).
fn setup_with(prefix: &str, sync: bool) -> Net {
    let mut lab = Lab::new(prefix).expect("lab");
    let br = lab.add_bridge("br").expect("bridge");
    let client = lab.add_host("cl", &br, "198.18.0.30/24").expect("client");
    let e1 = lab
        .add_host("e1", &br, &format!("{}/24", EDGE_IPS[0]))
        .expect("edge1");
    let p1 = lab.last_bridge_port();
    let e2 = lab
        .add_host("e2", &br, &format!("{}/24", EDGE_IPS[1]))
        .expect("edge2");
    let p2 = lab.last_bridge_port();
    let pg_ns = lab.add_host("pg1", &br, &format!("{PG1}/24")).expect("pg1");
    let pg = Postgres::start(&mut lab, &pg_ns, "pg1", PG1, &[("max_connections", "150")])
        .expect("postgres");
    pg.pgbench_init(&lab, 1).expect("pgbench -i");
    write_key(&lab);
    let edges = [e1, e2];
    let mut pids = [0u32; 2];
    for (i, pid) in pids.iter_mut().enumerate() {
        let edge = format!("edge{}", i + 1);
        // Pins on a bpffs of the host's mount namespace (see datapath_net.rs).
        let pins = lab.dir.join(format!("{edge}-bpf"));
        let cfg = edge_config_with(&lab, i, sync);
        *pid = lab
            .run_pgrouter(&edges[i], &edge, &cfg, &pins)
            .expect("pgrouter")
            .0;
    }
    let mut n = Net {
        lab,
        client,
        edges,
        ports: [p1, p2],
        pids,
    };
    n.wait("the VIP on edge1 only", Duration::from_secs(20), |n| {
        (n.vip_holders() == vec![0]).then_some(())
    });
    if sync {
        for i in 0..2 {
            n.wait_sync_ready(i, Duration::from_secs(20));
        }
    }
    n
}

/// The load running: the held sessions and pgbench.
struct Load {
    sessions: Sessions,
    pgbench: Pgbench,
    vip: VipWatch,
}

/// Starts the sessions, then pgbench; checks the baseline (every session makes progress,
/// nothing failed, edge2 has installed every flow from edge1) and returns once the load has
/// run for [`BEFORE_FAILURE`].
fn start_load(net: &mut Net, pgbench_secs: u32) -> Load {
    let vip = VipWatch::start(&net.edges);
    let sessions = Sessions::start(&net.client, VIP, 5000, SESSIONS, PERIOD);
    sessions
        .wait_progress(&[], 3, Duration::from_secs(15))
        .unwrap_or_else(|e| panic!("baseline: {e}{}", net.diagnostics()));
    let mut pgbench = Pgbench::start(
        &mut net.lab,
        &net.client,
        "pgbench",
        VIP,
        5000,
        PGBENCH_CLIENTS,
        2,
        pgbench_secs,
    )
    .expect("pgbench");
    // pgbench's flows exist once it reports progress.
    wait_for(
        "pgbench's first progress line",
        Duration::from_secs(10),
        || net.lab.log("pgbench").contains("progress:").then_some(()),
    )
    .unwrap_or_else(|e| panic!("{e}\n{}", net.lab.log("pgbench")));
    let flows = (SESSIONS as u64) + u64::from(PGBENCH_CLIENTS);
    net.wait(
        &format!("edge2 to have installed {flows} flows from edge1"),
        Duration::from_secs(10),
        |n| {
            let st = n.status(1)?;
            (sync_view::installed_from(&st, EDGE_IPS[0]) >= flows).then_some(())
        },
    );
    if let Some(left) = BEFORE_FAILURE.checked_sub(pgbench.start.elapsed()) {
        std::thread::sleep(left);
    }
    // Baseline: every session made progress, nothing failed, pgbench still runs.
    let counts = sessions.counts();
    assert!(
        counts.iter().all(|n| *n > 0),
        "baseline: a session made no progress: {counts:?}"
    );
    assert!(
        sessions.failures().is_empty(),
        "baseline: sessions failed before the failure: {:?}",
        sessions.failures()
    );
    assert!(
        pgbench.running(&mut net.lab),
        "baseline: pgbench ended early:\n{}",
        net.lab.log("pgbench")
    );
    Load {
        sessions,
        pgbench,
        vip,
    }
}

/// The end of a run: the sessions' and pgbench's results.
struct Outcome {
    reports: Vec<SessionReport>,
    bench: PgbenchResult,
    /// When the sessions started.
    start: Instant,
    /// Who held the VIP from then on.
    vip: VipChanges,
}

/// Waits for pgbench to finish (bounded), then stops the sessions.
fn finish(net: &mut Net, load: Load) -> Outcome {
    let bench = load.pgbench.wait(&mut net.lab, Duration::from_secs(20));
    let start = load.sessions.start;
    let reports = load
        .sessions
        .stop(Duration::from_secs(10))
        .unwrap_or_else(|e| panic!("{e}{}", net.diagnostics()));
    let vip = load.vip.stop();
    Outcome {
        reports,
        bench,
        start,
        vip,
    }
}

/// Waits for edge2 to hold the VIP; the time since `t0`.
fn wait_vip_on_edge2(net: &mut Net, t0: Instant) -> Duration {
    net.wait("edge2 to take the VIP", Duration::from_secs(10), |n| {
        n.vip_holders().contains(&1).then(|| t0.elapsed())
    })
}

/// A moment of a run: what happened, when, and every session's successful queries then.
struct Mark {
    what: &'static str,
    at: Instant,
    counts: Vec<u64>,
}

impl Mark {
    fn now(what: &'static str, load: &Load) -> Self {
        Self {
            what,
            at: Instant::now(),
            counts: load.sessions.counts(),
        }
    }
}

/// Prints the summary (sessions, queries between marks, the VIP's timeline, pgbench, both
/// syncs), then fails with every problem: `problems` found on the way, a lost session, a
/// session without progress after a mark, pgbench not clean.
fn check(name: &str, net: &Net, out: &Outcome, marks: &[Mark], mut problems: Vec<String>) {
    let lost: Vec<(usize, &Duration, &String)> = out
        .reports
        .iter()
        .enumerate()
        .filter_map(|(i, r)| r.failure.as_ref().map(|(t, w)| (i, t, w)))
        .collect();
    let total: u64 = out.reports.iter().map(|r| r.ok).sum();
    let longest = out
        .reports
        .iter()
        .map(|r| r.max_gap)
        .max()
        .unwrap_or_default();
    let rel = |t: Instant| t.saturating_duration_since(out.start).as_secs_f64();
    println!("== {name}");
    println!(
        "  sessions: {} kept, {} lost; {total} queries; longest wait between two answers {longest:?}",
        SESSIONS - lost.len(),
        lost.len()
    );
    let mut before = 0;
    for m in marks {
        let at: u64 = m.counts.iter().sum();
        let fewest = out
            .reports
            .iter()
            .zip(&m.counts)
            .map(|(r, c)| r.ok.saturating_sub(*c))
            .min()
            .unwrap_or(0);
        println!(
            "  {} (+{:.2} s): {} queries since the previous mark, {} after it (fewest after, one session: {fewest})",
            m.what,
            rel(m.at),
            at - before,
            total - at
        );
        before = at;
    }
    let mut timeline: Vec<(Instant, String)> = out
        .vip
        .iter()
        .map(|(t, h)| (*t, format!("VIP on {}", holders_text(h))))
        .chain(marks.iter().map(|m| (m.at, m.what.to_string())))
        .collect();
    timeline.sort_by_key(|(t, _)| *t);
    let timeline: Vec<String> = timeline
        .iter()
        .map(|(t, what)| format!("+{:.2} s {what}", rel(*t)))
        .collect();
    println!("  timeline: {}", timeline.join(", "));
    let b = &out.bench;
    println!(
        "  pgbench: {:?} transactions, tps {:?}, slowest second {:?} tps, failed {:?}, aborted clients {}, exit {:?}{}",
        b.processed,
        b.tps,
        b.slowest_second_tps(),
        b.failed,
        b.aborted_clients(),
        b.exit,
        if b.hung { " (hung, killed)" } else { "" }
    );
    for i in 0..2 {
        if let Some(st) = net.status(i) {
            println!("  edge{} sync: {}", i + 1, sync_view::summary(&st));
        }
    }
    if !lost.is_empty() {
        problems.push(format!(
            "{} session(s) lost (times since the sessions' start): {lost:?}",
            lost.len()
        ));
    }
    for m in marks {
        let stuck: Vec<usize> = out
            .reports
            .iter()
            .zip(&m.counts)
            .enumerate()
            .filter(|(_, (r, c))| r.ok <= **c)
            .map(|(i, _)| i)
            .collect();
        if !stuck.is_empty() {
            problems.push(format!(
                "sessions {stuck:?} made no progress after {}",
                m.what
            ));
        }
    }
    if !b.ok() {
        problems.push(format!("pgbench failed:\n{}", b.log));
    }
    assert!(
        problems.is_empty(),
        "{name}:\n- {}{}",
        problems.join("\n- "),
        net.diagnostics()
    );
}

/// Waits for every session to make `min` more queries than at `since`; a session failing
/// or a timeout is a problem for the summary, not a panic (the run goes on to its end).
fn progress(load: &Load, since: &Mark, min: u64, problems: &mut Vec<String>) {
    if let Err(e) = load
        .sessions
        .wait_progress(&since.counts, min, Duration::from_secs(10))
    {
        problems.push(format!("after {}: {e}", since.what));
    }
}

/// A failure of edge1 under load (`fail`), then edge2 must take the VIP and keep it, every
/// session going on through it.
fn edge1_dies(prefix: &str, name: &str, fail: impl FnOnce(&mut Net)) {
    let mut net = setup(prefix);
    let load = start_load(&mut net, 12);
    fail(&mut net);
    let cut = Mark::now("the failure", &load);
    let took = wait_vip_on_edge2(&mut net, cut.at);
    let mut problems = vec![];
    progress(&load, &cut, 5, &mut problems);
    let out = finish(&mut net, load);
    problems.extend(vip_settled(&out.vip, cut.at, "the failure", |h| {
        h.contains(&1)
    }));
    println!("failure → VIP on edge2: {took:?}");
    check(name, &net, &out, &[cut], problems);
}

/// The master's link is cut under load; edge2 takes the VIP with every flow's state.
#[test]
fn dead_master_link_cut_loses_no_session() {
    edge1_dies("pgrs1", "dead master (link cut)", |n| n.cut(0));
}

/// The master's pgrouter is SIGKILLed (its XDP program stays attached, its VIP stays, its
/// adverts stop), then its link is cut.
#[test]
fn killed_controller_then_link_cut_loses_no_session() {
    edge1_dies("pgrs2", "killed controller, then link cut", |n| {
        let pid = n.pids[0];
        n.lab.kill(pid);
        n.cut(0);
    });
}

/// After the link-cut failover, edge1's link comes back: it gets edge2's state, then takes
/// the VIP back (its sync track lifts its priority over edge2's), the sessions going on.
#[test]
fn original_master_returns_and_preempts_without_loss() {
    let name = "original master returns and preempts";
    let mut net = setup("pgrs3");
    let mut load = start_load(&mut net, 25);
    net.cut(0);
    let cut = Mark::now("the cut", &load);
    let took = wait_vip_on_edge2(&mut net, cut.at);
    let mut problems = vec![];
    progress(&load, &cut, 10, &mut problems);
    // Sessions opened through edge2 while it is master: edge1 must get them before it takes
    // the VIP back (edge2's full sync when edge1 reconnects).
    let late = Sessions::start(&net.client, VIP, 5000, LATE_SESSIONS, PERIOD);
    if let Err(e) = late.wait_progress(&[], 3, Duration::from_secs(15)) {
        problems.push(format!("sessions opened through edge2: {e}"));
    }
    // Seen, not required: whether the cut-off edge1 notices it lost its peer (its sync no
    // longer ready) before the link comes back.
    let noticed = wait_for("edge1 to notice the cut", Duration::from_secs(5), || {
        net.status(0)
            .filter(|st| !sync_view::ready(st))
            .map(|_| cut.at.elapsed())
    })
    .ok();
    net.restore(0);
    let back = Mark::now("the link's return", &load);
    let took_back = net.wait("the VIP back on edge1 only", Duration::from_secs(15), |n| {
        (n.vip_holders() == vec![0]).then(|| back.at.elapsed())
    });
    // It preempted with its sync ready (the track holds its priority under edge2's until
    // then).
    if !net.status(0).is_some_and(|st| sync_view::ready(&st)) {
        problems.push("edge1 took the VIP back before its sync was ready".into());
    }
    let preempt = Mark::now("the VIP back on edge1", &load);
    progress(&load, &preempt, 5, &mut problems);
    let late_counts = late.counts();
    if let Err(e) = late.wait_progress(&late_counts, 5, Duration::from_secs(10)) {
        problems.push(format!(
            "sessions opened through edge2, after the preemption: {e}"
        ));
    }
    match late.stop(Duration::from_secs(10)) {
        Ok(reports) => {
            let lost = reports.iter().filter(|r| r.failure.is_some()).count();
            println!(
                "sessions opened through edge2 while it was master: {} kept, {lost} lost",
                reports.len() - lost
            );
            if lost > 0 {
                problems.push(format!(
                    "{lost} of {LATE_SESSIONS} sessions opened through edge2 were lost: {:?}",
                    reports
                        .iter()
                        .filter_map(|r| r.failure.as_ref())
                        .collect::<Vec<_>>()
                ));
            }
        }
        Err(e) => problems.push(format!("stopping the late sessions: {e}")),
    }
    if !load.pgbench.running(&mut net.lab) {
        problems.push(
            "pgbench ended before the return was over (aborted clients, or its -T is too short)"
                .into(),
        );
    }
    let out = finish(&mut net, load);
    problems.extend(vip_settled(&out.vip, back.at, "the link's return", |h| {
        h == [0]
    }));
    println!("cut → VIP on edge2: {took:?}; link back → VIP on edge1 only: {took_back:?}");
    println!(
        "edge1 noticed the cut (sync not ready): {}",
        noticed.map_or("not within 5 s".into(), |d| format!("after {d:?}"))
    );
    check(name, &net, &out, &[cut, back, preempt], problems);
}

/// `n` connections through the VIP from `client`, one after another, each closed by the
/// client at once (PostgreSQL waits for a startup packet; the client gives up with a FIN, as
/// a health probe or a failed login would) and waited on until PostgreSQL closes: how many
/// completed, and how long they all took.
fn short_connections(client: &str, n: u64) -> (u64, Duration) {
    use std::{
        io::Read,
        net::{SocketAddr, TcpStream},
    };
    let t0 = Instant::now();
    let ok = tests::netns::in_netns(client, move || {
        let addr: SocketAddr = format!("{VIP}:5000").parse().expect("vip");
        let mut ok = 0u64;
        for _ in 0..n {
            if let Ok(mut s) = TcpStream::connect_timeout(&addr, Duration::from_secs(2)) {
                let _ = s.shutdown(std::net::Shutdown::Write);
                s.set_read_timeout(Some(Duration::from_secs(2))).ok();
                let mut b = [0u8; 64];
                if matches!(s.read(&mut b), Ok(0)) {
                    ok += 1;
                }
            }
        }
        ok
    })
    .expect("client");
    (ok, t0.elapsed())
}

/// The backup's copies end with the master's flows: 2,000 short connections through edge1
/// (each opened, then closed by the client) are installed on edge2 and removed there again
/// when edge1 reports their close, so edge2's table and its `maxconn` slots return to zero
/// instead of growing with churn (each copy would otherwise hold a slot and a SNAT port
/// until the established timeout).
#[test]
fn churned_flows_are_removed_from_the_backup_too() {
    const CONNS: u64 = 2_000;
    let mut net = setup("pgrs4");
    let before = net
        .status(1)
        .map_or(0, |st| sync_view::installed_from(&st, EDGE_IPS[0]));
    let (ok, churn) = short_connections(&net.client, CONNS);
    let installed = |n: &Net| {
        n.status(1)
            .map_or(0, |st| sync_view::installed_from(&st, EDGE_IPS[0]))
    };
    let removed = |n: &Net| {
        n.status(1)
            .and_then(|st| st.sync)
            .and_then(|s| s.peers.first().map(|p| p.removed))
            .unwrap_or(0)
    };
    // Each flow's copy is removed on the master's close report; the GC's next full cycle
    // shows the table as it is.
    let st = net.wait(
        "edge2's copies of the churned flows to be gone",
        Duration::from_secs(20),
        |n| {
            let st = n.status(1)?;
            let slots: u32 = st
                .listeners
                .iter()
                .flat_map(|l| &l.backends)
                .map(|b| b.active_flows)
                .sum();
            (installed(n) >= before + ok && st.datapath.tracked_entries == 0 && slots == 0)
                .then_some(st)
        },
    );
    let sy = st.sync.clone().expect("sync");
    println!(
        "{ok}/{CONNS} connections in {churn:?} through edge1; edge2 installed {} and removed {}; \
         edge2 tracked entries {}, events lost on edge1 {:?}",
        installed(&net) - before,
        removed(&net),
        st.datapath.tracked_entries,
        net.status(0).and_then(|s| s.sync).map(|s| s.events_lost)
    );
    assert!(ok >= CONNS * 99 / 100, "the churn itself: {ok}/{CONNS}");
    assert!(
        removed(&net) >= ok,
        "every close reported: {}",
        sync_view::summary(&st)
    );
    assert_eq!(sy.peers[0].rejected, 0, "nothing refused");
}

/// `cargo xtask bench` (section "Edge-host failover"): the link-cut failover under the same
/// load with and without `[sync]`, in one run, and the cost of sync on new connections
/// (short connections per second through the master, sync on and off). One `BENCH` line.
#[test]
#[ignore = "benchmark: cargo xtask bench"]
fn bench_edge_failover_with_and_without_sync() {
    const CHURN: u64 = 1_000;
    let mut fields = Vec::new();
    for (tag, sync) in [("sync", true), ("nosync", false)] {
        let mut net = setup_with(&format!("pgrb{}", u8::from(sync)), sync);
        // Short connections through edge1 (each opened, closed by the client).
        let (ok, took) = short_connections(&net.client, CHURN);
        let secs = took.as_secs_f64();
        let vip = VipWatch::start(&net.edges);
        let sessions = Sessions::start(&net.client, VIP, 5000, SESSIONS, PERIOD);
        sessions
            .wait_progress(&[], 3, Duration::from_secs(15))
            .unwrap_or_else(|e| panic!("baseline: {e}{}", net.diagnostics()));
        let pgbench = Pgbench::start(
            &mut net.lab,
            &net.client,
            "pgbench",
            VIP,
            5000,
            PGBENCH_CLIENTS,
            2,
            10,
        )
        .expect("pgbench");
        let flows = (SESSIONS as u64) + u64::from(PGBENCH_CLIENTS);
        if sync {
            net.wait(
                "edge2 to hold edge1's flows",
                Duration::from_secs(15),
                |n| {
                    let st = n.status(1)?;
                    (sync_view::installed_from(&st, EDGE_IPS[0]) >= flows).then_some(())
                },
            );
        }
        std::thread::sleep(BEFORE_FAILURE);
        net.cut(0);
        let t0 = Instant::now();
        let took = wait_vip_on_edge2(&mut net, t0);
        let out = finish(
            &mut net,
            Load {
                sessions,
                pgbench,
                vip,
            },
        );
        let lost = out.reports.iter().filter(|r| r.failure.is_some()).count();
        let longest = out
            .reports
            .iter()
            .map(|r| r.max_gap)
            .max()
            .unwrap_or_default();
        println!(
            "{tag}: churn {ok}/{CHURN} in {secs:.2} s; takeover {took:?}; sessions lost {lost}/{SESSIONS}; \
             pgbench aborted {} of {PGBENCH_CLIENTS}, processed {:?}",
            out.bench.aborted_clients(),
            out.bench.processed
        );
        fields.push(format!("{tag}_churn_per_s={:.1}", ok as f64 / secs));
        fields.push(format!("{tag}_churn_ok={ok}"));
        fields.push(format!("{tag}_takeover_ms={:.0}", took.as_secs_f64() * 1e3));
        fields.push(format!("{tag}_sessions_lost={lost}"));
        fields.push(format!(
            "{tag}_longest_gap_ms={:.0}",
            longest.as_secs_f64() * 1e3
        ));
        fields.push(format!(
            "{tag}_pgbench_aborted={}",
            out.bench.aborted_clients()
        ));
        fields.push(format!(
            "{tag}_pgbench_processed={}",
            out.bench.processed.unwrap_or(0)
        ));
    }
    println!(
        "BENCH sessions={SESSIONS} pgbench_clients={PGBENCH_CLIENTS} churn={CHURN} {}",
        fields.join(" ")
    );
}

/// Key rotation as docs/vrrp.md describes it: add the new key second on both hosts and
/// reload, move it first and reload, then drop the old one and reload. After each step the
/// backup's controller is restarted (its connections are made anew, signed with whatever key
/// comes first) and both hosts must be ready again; a host still on the old key alone is
/// refused (auth failures) and its sync is not ready.
#[test]
fn keys_rotate_without_losing_the_sync() {
    use std::io::Read as _;
    let mut net = setup("pgrs5");
    let path = net.lab.dir.join("sync.key");
    let old = std::fs::read_to_string(&path).expect("key file");
    let old = old.trim().to_owned();
    let mut new = [0u8; 32];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut new))
        .expect("random key");
    let new: String = new.iter().map(|b| format!("{b:02x}")).collect();
    let reload = |net: &Net, i: usize| {
        let out = std::process::Command::new(tests::pgrouter_bin())
            .args(["reload", "--socket", &net.socket(i)])
            .output()
            .expect("pgrouter reload");
        assert!(
            out.status.success(),
            "edge{} reload: {}",
            i + 1,
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let restart_backup = |net: &mut Net| {
        let pid = net.pids[1];
        assert!(
            net.lab
                .signal_and_wait(pid, libc::SIGTERM, Duration::from_secs(10)),
            "edge2 stops"
        );
        // The same config and pins (already mounted: a new mount would hide the pinned link).
        let cfg = net.lab.dir.join("edge2.toml");
        let ns = net.edges[1].clone();
        net.pids[1] = net
            .lab
            .spawn_pgrouter(&ns, "edge2", &cfg)
            .expect("pgrouter");
        for i in 0..2 {
            net.wait_sync_ready(i, Duration::from_secs(20));
        }
    };
    for (step, text) in [
        ("new key accepted", format!("{old}\n{new}\n")),
        ("new key signs", format!("{new}\n{old}\n")),
        ("old key gone", format!("{new}\n")),
    ] {
        std::fs::write(&path, text).expect("key file");
        reload(&net, 0);
        reload(&net, 1);
        restart_backup(&mut net);
        println!("{step}: both ready again");
    }
    // A host left on the old key alone: its connections are refused, its sync not ready.
    let stale = net.lab.dir.join("stale.key");
    std::fs::write(&stale, format!("{old}\n")).expect("stale key file");
    let pid = net.pids[1];
    assert!(
        net.lab
            .signal_and_wait(pid, libc::SIGTERM, Duration::from_secs(10))
    );
    let cfg_text = edge_config(&net.lab, 1)
        .to_toml()
        .replace(&path.display().to_string(), &stale.display().to_string());
    let cfg_path = net.lab.dir.join("edge2-stale.toml");
    std::fs::write(&cfg_path, cfg_text).expect("config");
    let ns = net.edges[1].clone();
    net.pids[1] = net
        .lab
        .spawn_pgrouter(&ns, "edge2-stale", &cfg_path)
        .expect("pgrouter");
    let failures = net.wait(
        "edge1 to refuse edge2's stale key",
        Duration::from_secs(20),
        |n| {
            let st = n.status(0)?;
            let f = st.sync?.peers.first()?.auth_failures;
            (f > 0).then_some(f)
        },
    );
    // edge2 refuses edge1's connections too (signed with the new key), so it never gets
    // edge1's full sync.
    let st2 = net.wait(
        "edge2 to refuse edge1's new key",
        Duration::from_secs(20),
        |n| {
            let st = n.status(1)?;
            (st.sync.as_ref()?.peers.first()?.auth_failures > 0).then_some(st)
        },
    );
    println!(
        "stale key: edge1 counted {failures} auth failures; edge2 ready={}",
        sync_view::ready(&st2)
    );
    assert!(
        !sync_view::ready(&st2),
        "edge2 never got edge1's flows: edge1 signs with a key it lacks"
    );
}

/// The backup's copies of flows that closed while it was down end with its next full sync:
/// 20 sessions are installed on edge2, edge2's controller stops (its pinned copies stay), the
/// sessions close on edge1 (the removals cannot reach edge2), and when edge2 is back, the
/// sweep after edge1's full sync removes every copy edge1 no longer holds: edge2's table and
/// slots return to zero.
#[test]
fn copies_the_peer_no_longer_holds_are_swept_after_a_restart() {
    let mut net = setup("pgrs6");
    let sessions = Sessions::start(&net.client, VIP, 5000, 20, PERIOD);
    sessions
        .wait_progress(&[], 2, Duration::from_secs(15))
        .unwrap_or_else(|e| panic!("sessions: {e}{}", net.diagnostics()));
    net.wait("edge2 to hold the 20 flows", Duration::from_secs(10), |n| {
        let st = n.status(1)?;
        (st.datapath.tracked_entries >= 40).then_some(())
    });
    let pid = net.pids[1];
    assert!(
        net.lab
            .signal_and_wait(pid, libc::SIGTERM, Duration::from_secs(10)),
        "edge2 stops"
    );
    sessions
        .stop(Duration::from_secs(10))
        .expect("sessions stop");
    // The same config and pins (already mounted: a new mount would hide the pinned link).
    let cfg = net.lab.dir.join("edge2.toml");
    let ns = net.edges[1].clone();
    net.pids[1] = net
        .lab
        .spawn_pgrouter(&ns, "edge2", &cfg)
        .expect("pgrouter");
    net.wait_sync_ready(1, Duration::from_secs(20));
    let st = net.wait(
        "edge2's stale copies to be swept",
        Duration::from_secs(20),
        |n| {
            let st = n.status(1)?;
            let slots: u32 = st
                .listeners
                .iter()
                .flat_map(|l| &l.backends)
                .map(|b| b.active_flows)
                .sum();
            (st.datapath.tracked_entries == 0 && slots == 0).then_some(st)
        },
    );
    let removed = st
        .sync
        .as_ref()
        .and_then(|s| s.peers.first())
        .map_or(0, |p| p.removed);
    println!("edge2 swept {removed} copies after its restart");
    assert!(
        removed >= 20,
        "the sweep removed them: {}",
        sync_view::summary(&st)
    );
}
