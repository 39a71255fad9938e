//! Edge-host failover with the whole daemon: two edge hosts run `pgrouter run` (XDP data path
//! and VRRP at 100 ms adverts) in front of stand-in PostgreSQL nodes. A client opens a new
//! connection through the VIP every 5 ms; the master edge host dies (its link is cut, which
//! is what a dead host looks like; or its pgrouter is SIGKILLed) and new connections must
//! succeed again within Master_Down_Interval + 50 ms = 3 × 100 ms + (256 − 100) × 100 ms / 256
//! + 50 ms ≈ 411 ms.
use std::{
    io::Read,
    net::{SocketAddr, TcpStream},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use tests::{
    config::{Cluster, Config, Control, Datapath, Listener, Node, Vrrp},
    netns::{Lab, VIP, in_netns},
    wait_for,
};

const BUDGET: Duration = Duration::from_millis(300 + 61 + 50);

/// Generic XDP, static roles (pg1 primary), writes on :5000, and VRRP at 100 ms adverts
/// that faults when XDP is not attached.
fn edge_config(lab: &Lab, edge: &str, priority: u8) -> Config {
    Config::new()
        .datapath(
            Datapath::new("eth0", "generic", lab.dir.join(format!("{edge}-bpf")))
                .snat_ports("40000-44999"),
        )
        .control(Control::new(lab.dir.join(format!("{edge}.sock"))))
        .cluster(
            Cluster::new("pg")
                .checks("static")
                .node(Node::new("pg1", "198.18.0.11").role("primary"))
                .node(Node::new("pg2", "198.18.0.12").role("replica"))
                .listener(Listener::primary("PG1", VIP, 5000)),
        )
        .vrrp(
            Vrrp::new("VI_1", "eth0", 61, priority)
                .advert_int(Duration::from_millis(100))
                .vips([format!("{VIP}/24")])
                .tracks([("xdp-attached", 0)]),
        )
}

struct Net {
    lab: Lab,
    client: String,
    edges: [String; 2],
}

fn vip_holders(lab: &Lab, edges: &[String; 2]) -> Vec<usize> {
    (0..2)
        .filter(|i| {
            lab.exec(&edges[*i], "ip -o addr show dev eth0")
                .map(|o| o.contains(&format!("{VIP}/")))
                .unwrap_or(false)
        })
        .collect()
}

fn setup(prefix: &str) -> Net {
    let mut lab = Lab::new(prefix).expect("lab");
    let br = lab.add_bridge("br").expect("bridge");
    let client = lab.add_host("cl", &br, "198.18.0.30/24").expect("client");
    let edges = [
        lab.add_host("e1", &br, "198.18.0.21/24").expect("edge1"),
        lab.add_host("e2", &br, "198.18.0.22/24").expect("edge2"),
    ];
    for (name, ip) in [("pg1", "198.18.0.11"), ("pg2", "198.18.0.12")] {
        let ns = lab.add_host(name, &br, &format!("{ip}/24")).expect("node");
        lab.spawn_echo(&ns, name, &format!("{ip}:5432"))
            .expect("echo");
    }
    for (i, prio) in [(0usize, 150u8), (1, 100)] {
        let edge = format!("edge{}", i + 1);
        // Pins on a bpffs of the host's mount namespace (see datapath_net.rs).
        let pins = lab.dir.join(format!("{edge}-bpf"));
        let cfg = edge_config(&lab, &edge, prio);
        let ns = edges[i].clone();
        lab.run_pgrouter(&ns, &edge, &cfg, &pins).expect("pgrouter");
    }
    let n = Net { lab, client, edges };
    wait_for("the VIP on edge1 only", Duration::from_secs(20), || {
        (vip_holders(&n.lab, &n.edges) == vec![0]).then_some(())
    })
    .unwrap_or_else(|e| panic!("{e}\n{}\n{}", n.lab.log("edge1"), n.lab.log("edge2")));
    n
}

fn try_connect() -> Option<String> {
    let addr: SocketAddr = format!("{VIP}:5000").parse().ok()?;
    // Short timeouts: on one bridge a SYN-ACK and the banner take well under a millisecond,
    // and a probe stuck waiting would hide the moment service returns.
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_millis(20)).ok()?;
    s.set_read_timeout(Some(Duration::from_millis(100))).ok()?;
    let mut buf = [0u8; 8];
    let n = s.read(&mut buf).ok()?;
    Some(String::from_utf8_lossy(&buf[..n]).trim().to_string())
}

/// Successful probes' start instants, shared with the prober thread.
type Successes = Arc<Mutex<Vec<Instant>>>;

/// Starts a prober in the client namespace: a new connection every 5 ms.
fn prober(client: &str) -> (Arc<AtomicBool>, Successes, std::thread::JoinHandle<()>) {
    let stop = Arc::new(AtomicBool::new(false));
    let ok: Successes = Arc::default();
    let (s2, ok2) = (stop.clone(), ok.clone());
    let client = client.to_string();
    let h = std::thread::spawn(move || {
        in_netns(&client, move || {
            while !s2.load(Ordering::Relaxed) {
                let t = Instant::now();
                if try_connect().as_deref() == Some("pg1")
                    && let Ok(mut v) = ok2.lock()
                {
                    v.push(t);
                }
                std::thread::sleep(Duration::from_millis(5));
            }
        })
        .expect("prober")
    });
    (stop, ok, h)
}

fn outage(net: &mut Net, kill: impl FnOnce(&mut Net)) -> Duration {
    let (stop, ok, h) = prober(&net.client.clone());
    let count = |ok: &Successes| ok.lock().map(|v| v.len()).unwrap_or(0);
    wait_for(
        "the prober to succeed before the failure",
        Duration::from_secs(10),
        || (count(&ok) > 5).then_some(()),
    )
    .expect("healthy before");
    kill(net);
    // The failure is complete when the command returns; probes started earlier may still
    // have gone through the old master.
    let t0 = Instant::now();
    let first = wait_for(
        "a new connection after the failure",
        Duration::from_secs(10),
        || ok.lock().ok()?.iter().find(|t| **t >= t0).copied(),
    );
    wait_for("edge2 to take the VIP", Duration::from_secs(10), || {
        vip_holders(&net.lab, &net.edges).contains(&1).then_some(())
    })
    .unwrap_or_else(|e| panic!("{e}\n{}", net.lab.log("edge2")));
    stop.store(true, Ordering::Relaxed);
    h.join().expect("prober thread");
    first.expect("served again").duration_since(t0)
}

#[test]
fn dead_edge_host_link_cut_new_connections_succeed_within_master_down_interval() {
    let mut net = setup("pgrf1");
    let gap = outage(&mut net, |n| {
        // The bridge side of edge1's veth (edge1 was the second host connected).
        tests::run(
            "ip",
            &["link", "set", &format!("{}v2", n.lab.prefix), "down"],
        )
        .expect("cut");
    });
    println!("link cut: first new connection after {gap:?} (budget {BUDGET:?})");
    assert!(
        gap <= BUDGET,
        "took {gap:?} > {BUDGET:?}\n{}",
        net.lab.log("edge2")
    );
}

#[test]
fn killed_pgrouter_new_connections_succeed_within_master_down_interval() {
    let mut net = setup("pgrf2");
    let gap = outage(&mut net, |n| {
        let pid: u32 = std::fs::read_to_string(n.lab.dir.join("edge1.pid"))
            .expect("pid")
            .trim()
            .parse()
            .expect("pid number");
        n.lab.kill(pid);
    });
    // The killed host keeps its pinned data path (and, like keepalived after SIGKILL, its
    // VIP), so connections may keep succeeding through it; either way the client is served.
    println!("SIGKILL: first new connection after {gap:?} (budget {BUDGET:?})");
    assert!(
        gap <= BUDGET,
        "took {gap:?} > {BUDGET:?}\n{}",
        net.lab.log("edge2")
    );
}
