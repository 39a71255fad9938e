//! Network tests of the data path: a client, an edge host running `pgrouter run` and three
//! stand-in PostgreSQL nodes, each in its own network namespace on one bridge, with real TCP
//! through the VIP in native and generic XDP mode.
use std::{
    io::{ErrorKind, Read, Write},
    net::{Shutdown, SocketAddr, TcpStream},
    time::Duration,
};

use tests::{
    config::{Cluster, Config, Control, Datapath, Listener, Node},
    netns::{Lab, NODES, Topology, VIP, in_netns},
    wait_for,
};

struct Setup {
    lab: Lab,
    client: String,
    socket: String,
    config: std::path::PathBuf,
    /// The running `pgrouter run`.
    pgrouter: u32,
    _peer_xdp: Option<aya::Ebpf>,
}

/// XDP in `mode` on the edge; static roles, `primary` the primary and the others replicas;
/// writes on :5000, reads on :5001 with the primary as fallback.
fn config(lab: &Lab, mode: &str, primary: &str) -> Config {
    let mut cluster = Cluster::new("pg").checks("static");
    for (name, ip) in NODES {
        let role = if name == primary {
            "primary"
        } else {
            "replica"
        };
        cluster = cluster.node(Node::new(name, ip).role(role));
    }
    Config::new()
        .datapath(Datapath::new("eth0", mode, lab.dir.join("bpf")).snat_ports("40000-44999"))
        .control(Control::new(lab.dir.join("pgrouter.sock")))
        .cluster(
            cluster
                .listener(Listener::primary("PG1", VIP, 5000))
                .listener(Listener::replica_or_primary("PG1_ro", VIP, 5001)),
        )
}

fn setup(prefix: &str, mode: &str) -> Setup {
    // Native XDP on a veth needs a program on the peer to accept XDP_TX frames.
    let (mut lab, br, client, edge, peer_xdp) = Topology::new(prefix, mode == "native")
        .expect("lab")
        .parts();
    for (name, ip) in NODES {
        let ns = lab.add_host(name, &br, &format!("{ip}/24")).expect("node");
        lab.spawn_echo(&ns, name, &format!("{ip}:5432"))
            .expect("echo");
    }
    // `ip netns exec` gives pgrouter a private mount namespace: a bpffs it mounted itself
    // would vanish with it (and the pinned link with it). `run_pgrouter` mounts it here, in
    // ours, as systemd would on a host.
    let cfg = config(&lab, mode, "pg1");
    let pins = lab.dir.join("bpf");
    let (pgrouter, cfg_path) = lab
        .run_pgrouter(&edge, "pgrouter", &cfg, &pins)
        .expect("pgrouter");
    let socket = lab.dir.join("pgrouter.sock").display().to_string();
    let s2 = socket.clone();
    wait_for("pgrouter to publish sets", Duration::from_secs(20), || {
        let v = tests::status(&s2)?;
        let ready = v.listeners.iter().all(|l| l.generation > 0);
        ready.then_some(())
    })
    .unwrap_or_else(|e| panic!("{e}\n{}", lab.log("pgrouter")));
    Setup {
        lab,
        client,
        socket,
        config: cfg_path,
        pgrouter,
        _peer_xdp: peer_xdp,
    }
}

/// Connects from the client host and returns the node name the backend announces.
fn who(stream: &mut TcpStream) -> std::io::Result<String> {
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    tests::read_banner(stream)
}

fn connect(port: u16) -> std::io::Result<TcpStream> {
    let addr: SocketAddr = format!("{VIP}:{port}").parse().expect("addr");
    TcpStream::connect_timeout(&addr, Duration::from_secs(5))
}

fn routes_and_moves(prefix: &str, mode: &str) {
    let s = setup(prefix, mode);
    let client = s.client.clone();
    // Writes reach the primary; reads the replicas; bytes come back intact.
    let (writes, reads) = in_netns(&client, || {
        let mut w = Vec::new();
        let mut r = Vec::new();
        for _ in 0..6 {
            let mut c = connect(5000).expect("connect 5000");
            w.push(who(&mut c).expect("banner 5000"));
            let mut c = connect(5001).expect("connect 5001");
            r.push(who(&mut c).expect("banner 5001"));
        }
        (w, r)
    })
    .expect("client");
    assert!(
        writes.iter().all(|n| n == "pg1"),
        "writes went to {writes:?}"
    );
    assert!(
        reads.iter().all(|n| n == "pg2" || n == "pg3"),
        "reads went to {reads:?}"
    );
    assert!(
        reads.iter().any(|n| n == "pg2") && reads.iter().any(|n| n == "pg3"),
        "reads spread: {reads:?}"
    );

    // Hold a write session open, then move the primary to pg2 (reload with a new config).
    let (tx, rx) = std::sync::mpsc::channel::<()>();
    let (res_tx, res_rx) = std::sync::mpsc::channel();
    let client2 = client.clone();
    let holder = std::thread::spawn(move || {
        in_netns(&client2, move || {
            let mut c = connect(5000).expect("connect");
            let first = who(&mut c).expect("banner");
            res_tx.send(first).expect("send");
            rx.recv().expect("go");
            // The old primary's session must be reset promptly, without us sending anything.
            c.set_read_timeout(Some(Duration::from_secs(5)))
                .expect("timeout");
            let mut b = [0u8; 16];
            match c.read(&mut b) {
                Err(e) if e.kind() == ErrorKind::ConnectionReset => Ok(()),
                other => Err(format!("expected a reset, got {other:?}")),
            }
        })
        .expect("client thread")
    });
    assert_eq!(
        res_rx
            .recv_timeout(Duration::from_secs(10))
            .expect("session open"),
        "pg1"
    );
    config(&s.lab, mode, "pg2")
        .write(&s.config)
        .expect("config");
    let out = std::process::Command::new(tests::pgrouter_bin())
        .args(["reload", "--socket", &s.socket])
        .output()
        .expect("reload");
    assert!(
        out.status.success(),
        "reload: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    tx.send(()).expect("go");
    let reset = holder.join().expect("holder");
    assert_eq!(
        reset,
        Ok(()),
        "old write session reset\n{}",
        s.lab.log("pgrouter")
    );
    let writes = in_netns(&client, || {
        (0..4)
            .map(|_| who(&mut connect(5000).expect("connect")).expect("banner"))
            .collect::<Vec<_>>()
    })
    .expect("client");
    assert!(
        writes.iter().all(|n| n == "pg2"),
        "after the move writes went to {writes:?}"
    );

    // A bad config is refused and the running one stays.
    std::fs::write(&s.config, "[datapath\n").expect("config");
    let out = std::process::Command::new(tests::pgrouter_bin())
        .args(["reload", "--socket", &s.socket])
        .output()
        .expect("reload");
    assert!(!out.status.success(), "bad config must be refused");
    let w = in_netns(&client, || {
        who(&mut connect(5000).expect("connect")).expect("banner")
    })
    .expect("client");
    assert_eq!(w, "pg2");
}

#[test]
fn native_xdp_routes_writes_and_reads_and_follows_a_moved_primary() {
    routes_and_moves("pgrn", "native");
}

#[test]
fn generic_xdp_routes_writes_and_reads_and_follows_a_moved_primary() {
    routes_and_moves("pgrg", "generic");
}

#[test]
fn thousand_concurrent_connections_keep_their_bytes() {
    let s = setup("pgrk", "native");
    let result = in_netns(&s.client, || -> Result<usize, String> {
        let mut conns = Vec::new();
        for i in 0..1000u32 {
            let port = if i % 2 == 0 { 5000 } else { 5001 };
            let mut c = connect(port).map_err(|e| format!("connect #{i}: {e}"))?;
            who(&mut c).map_err(|e| format!("banner #{i}: {e}"))?;
            conns.push((i, c));
        }
        let mut ok = 0;
        for (i, c) in &mut conns {
            let payload: Vec<u8> = (0..4096u32)
                .map(|j| (j.wrapping_mul(31) ^ *i) as u8)
                .collect();
            c.write_all(&payload)
                .map_err(|e| format!("write #{i}: {e}"))?;
            let mut back = vec![0u8; payload.len()];
            c.read_exact(&mut back)
                .map_err(|e| format!("read #{i}: {e}"))?;
            if back != payload {
                return Err(format!("connection #{i}: bytes differ"));
            }
            ok += 1;
        }
        for (_, c) in &conns {
            let _ = c.shutdown(Shutdown::Both);
        }
        Ok(ok)
    })
    .expect("client");
    assert_eq!(result, Ok(1000), "{}", s.lab.log("pgrouter"));
}

/// `kill -9` of the controller while sessions are open: the pinned program and maps keep
/// forwarding, and a restarted controller adopts them without resetting anything.
#[test]
fn killed_controller_keeps_sessions_and_restart_adopts_the_pinned_data_path() {
    let mut s = setup("pgrr", "native");
    let client = s.client.clone();
    let (go_tx, go_rx) = std::sync::mpsc::channel::<()>();
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let holder = std::thread::spawn(move || {
        in_netns(&client, move || -> Result<(), String> {
            let mut sessions = Vec::new();
            for port in [5000, 5001, 5000, 5001] {
                let mut c = connect(port).map_err(|e| e.to_string())?;
                let name = who(&mut c).map_err(|e| e.to_string())?;
                sessions.push((name, c));
            }
            ready_tx.send(()).map_err(|e| e.to_string())?;
            for round in 0..2 {
                go_rx.recv().map_err(|e| e.to_string())?;
                for (i, (name, c)) in sessions.iter_mut().enumerate() {
                    let msg = format!("round {round} session {i} on {name}");
                    c.write_all(msg.as_bytes())
                        .map_err(|e| format!("{msg}: {e}"))?;
                    let mut back = vec![0u8; msg.len()];
                    c.read_exact(&mut back).map_err(|e| format!("{msg}: {e}"))?;
                    if back != msg.as_bytes() {
                        return Err(format!("{msg}: bytes differ"));
                    }
                }
            }
            Ok(())
        })
        .expect("client thread")
    });
    ready_rx
        .recv_timeout(Duration::from_secs(10))
        .expect("sessions open");
    s.lab.kill(s.pgrouter);
    // Controller gone: the pinned data path still carries the sessions.
    let _ = go_tx.send(());
    let edge = s.lab.ns("edge");
    s.lab
        .spawn_pgrouter(&edge, "pgrouter2", &s.config)
        .expect("restart");
    let sock = s.socket.clone();
    wait_for(
        "restarted pgrouter to answer",
        Duration::from_secs(20),
        || tests::status(&sock).map(|_| ()),
    )
    .expect("restart answers");
    // If the sessions already failed, the holder is gone and its result says why.
    let _ = go_tx.send(());
    let r = holder.join().expect("holder");
    assert_eq!(
        r,
        Ok(()),
        "{}\n{}",
        s.lab.log("pgrouter"),
        s.lab.log("pgrouter2")
    );
    assert!(
        s.lab.log("pgrouter2").contains("pinned"),
        "restart adopted the pinned state:\n{}",
        s.lab.log("pgrouter2")
    );
    let w = in_netns(&s.client, || {
        who(&mut connect(5000).expect("connect")).expect("banner")
    })
    .expect("client");
    assert_eq!(w, "pg1", "new connections after the restart");
}

/// An upgrade to a build with another map layout: it must not read the old maps (they live in
/// another `v<N>` folder), must replace the program through the old pinned link without a gap,
/// and must say what happens to the old flows.
#[test]
fn new_map_layout_takes_over_the_link_and_says_so() {
    let mut s = setup("pgrl", "generic");
    s.lab.kill(s.pgrouter);
    // Pretend the running data path was pinned by a build with layout v0.
    let bpf = s.lab.dir.join("bpf");
    std::fs::rename(
        bpf.join(format!("v{}", router_ebpf::ABI_VERSION)),
        bpf.join("v0"),
    )
    .expect("rename pins");
    let edge = s.lab.ns("edge");
    s.lab
        .spawn_pgrouter(&edge, "pgrouter2", &s.config)
        .expect("restart");
    let sock = s.socket.clone();
    wait_for("the new build to answer", Duration::from_secs(20), || {
        let v = tests::status(&sock)?;
        (v.listeners.first()?.generation > 0).then_some(())
    })
    .unwrap_or_else(|e| panic!("{e}\n{}", s.lab.log("pgrouter2")));
    let log = s.lab.log("pgrouter2");
    assert!(
        log.contains("another map layout"),
        "says what it does:\n{log}"
    );
    assert!(
        !bpf.join("v0").join("link_eth0").exists(),
        "the link moved to the new folder"
    );
    assert!(
        bpf.join(format!("v{}", router_ebpf::ABI_VERSION))
            .join("link_eth0")
            .exists()
    );
    let w = in_netns(&s.client, || {
        who(&mut connect(5000).expect("connect")).expect("banner")
    })
    .expect("client");
    assert_eq!(w, "pg1");
    let attached = s
        .lab
        .exec(&edge, "ip -d link show dev eth0")
        .expect("ip link");
    assert_eq!(
        attached.matches("prog/xdp").count(),
        1,
        "exactly one XDP program attached:\n{attached}"
    );
}
