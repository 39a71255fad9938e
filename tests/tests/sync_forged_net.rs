//! Forged sync messages change nothing: an edge host runs `pgrouter run` with `[sync]`, a
//! session through its VIP is open, and an attacker on the LAN connects to the sync port with
//! garbage, an unknown key, the right key id but a wrong key, a replay of a recorded
//! authentic session, and (as a compromised peer holding the key) a flow for a VIP this host
//! does not serve. Each is refused and counted; no flow is installed or removed; the session
//! keeps working.
use std::{
    io::{Read, Write},
    net::{SocketAddr, TcpStream},
    time::Duration,
};

use pgrouter::sync::{
    auth::{Keys, Session, key_id},
    wire::{Endpoint, MAGIC, Message, NONCE_LEN, Record, Side},
};
use tests::{
    config::{Cluster, Config, Control, Datapath, Listener, Node, Sync},
    netns::{Lab, Topology, VIP, in_netns},
    wait_for,
};

const KEY: &str = "5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a";
const WRONG: &str = "a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5";
const SYNC_ADDR: &str = "198.18.0.21:7800";
const PEER: &str = "198.18.0.22:7800";

fn hex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex"))
        .collect()
}

/// A hello as a peer sends it; returns the stream and the server's nonce (if it answered).
fn hello(id_key: &[u8], nonce: [u8; NONCE_LEN], id: &str) -> (TcpStream, Option<[u8; NONCE_LEN]>) {
    let addr: SocketAddr = SYNC_ADDR.parse().expect("addr");
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(2))).ok();
    let mut h = Vec::new();
    h.extend_from_slice(MAGIC);
    h.extend_from_slice(&key_id(id_key));
    h.extend_from_slice(&nonce);
    h.push(id.len() as u8);
    h.extend_from_slice(id.as_bytes());
    s.write_all(&h).expect("hello");
    let mut answer = [0u8; 8 + NONCE_LEN];
    let got = s.read_exact(&mut answer).ok().map(|_| {
        let mut n = [0u8; NONCE_LEN];
        n.copy_from_slice(&answer[8..]);
        n
    });
    (s, got)
}

fn frame(session: &Session, seq: u64, msg: &Message) -> Vec<u8> {
    let (kind, payload) = msg.encode();
    let mut b = Vec::new();
    b.extend_from_slice(&((8 + 1 + payload.len() + 32) as u32).to_be_bytes());
    b.extend_from_slice(&seq.to_be_bytes());
    b.push(kind);
    b.extend_from_slice(&payload);
    b.extend_from_slice(&session.tag(seq, kind, &payload));
    b
}

/// The server closed the connection (EOF or reset) within 2 s.
fn closed(s: &mut TcpStream) -> bool {
    let mut b = [0u8; 1];
    matches!(s.read(&mut b), Ok(0) | Err(_))
}

/// A flow record as a peer would send it for `vip`.
fn record(vip: &str) -> Record {
    let ep = |a: &str, port| Endpoint {
        addr: a.parse().expect("addr"),
        port,
    };
    Record {
        client: ep("198.18.0.30", 50123),
        vip: ep(vip, 5000),
        node: ep("198.18.0.11", 5432),
        snat: ep(vip, 43000),
        fwd: Side::default(),
        reply: Side {
            flags: router_ebpf::FLOW_F_ANSWERED,
            ..Side::default()
        },
    }
}

/// One edge host with `[sync]` (its peer never connects), pg1 behind the VIP.
fn setup(prefix: &str) -> (Lab, String, String) {
    let (mut lab, br, client, edge, _peer_xdp) = Topology::new(prefix, false).expect("lab").parts();
    let pg1 = lab.add_host("pg1", &br, "198.18.0.11/24").expect("node");
    lab.spawn_echo(&pg1, "pg1", "198.18.0.11:5432")
        .expect("echo");
    let key_file = lab.dir.join("sync.key");
    std::fs::write(&key_file, format!("{KEY}\n")).expect("key file");
    let socket = lab.dir.join("pgrouter.sock").display().to_string();
    let cfg = Config::new()
        .datapath(Datapath::new("eth0", "generic", lab.dir.join("bpf")).snat_ports("40000-44999"))
        .control(Control::new(lab.dir.join("pgrouter.sock")))
        .sync(Sync::new(SYNC_ADDR, [PEER], &key_file))
        .cluster(
            Cluster::new("pg")
                .checks("static")
                .node(Node::new("pg1", "198.18.0.11").role("primary"))
                .listener(Listener::primary("PG1", VIP, 5000)),
        );
    let pins = lab.dir.join("bpf");
    lab.run_pgrouter(&edge, "pgrouter", &cfg, &pins)
        .expect("pgrouter");
    wait_for(
        "sets published and sync up",
        Duration::from_secs(20),
        || {
            let st = tests::status(&socket)?;
            (st.listeners.iter().all(|l| l.generation > 0) && st.sync.is_some()).then_some(())
        },
    )
    .unwrap_or_else(|e| panic!("{e}\n{}", lab.log("pgrouter")));

    (lab, client, socket)
}

#[test]
fn forged_and_unauthenticated_sync_messages_change_nothing() {
    let (lab, client, socket) = setup("pgrsf");
    let log = |lab: &Lab| lab.log("pgrouter");
    let outcome = in_netns(&client, move || {
        // A held session through the VIP.
        let vip: SocketAddr = format!("{VIP}:5000").parse().expect("vip");
        let mut session = TcpStream::connect_timeout(&vip, Duration::from_secs(2)).expect("vip");
        session.set_read_timeout(Some(Duration::from_secs(2))).ok();
        let mut banner = [0u8; 4];
        session.read_exact(&mut banner).expect("banner");

        let key = hex(KEY);
        let wrong = hex(WRONG);
        let mut refused = Vec::new();

        // 1. Not a sync hello at all.
        let addr: SocketAddr = SYNC_ADDR.parse().expect("addr");
        let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(2))).ok();
        s.write_all(&[0x47u8; 64]).expect("garbage");
        refused.push(("garbage", closed(&mut s)));

        // 2. The configured peer's name with a key this host does not have.
        let (mut s, answered) = hello(&wrong, [1; NONCE_LEN], PEER);
        refused.push(("unknown key id", answered.is_none() && closed(&mut s)));

        // 3. The right key id (ids are not secret) but frames tagged with another key.
        let (mut s, answered) = hello(&key, [2; NONCE_LEN], PEER);
        let server = answered.expect("a hello with a known key id is answered");
        let forged = Session::derive(&wrong, &[2; NONCE_LEN], &server, PEER);
        s.write_all(&frame(&forged, 0, &Message::Upsert(vec![record(VIP)])))
            .expect("frame");
        refused.push(("wrong key", closed(&mut s)));

        // 4. An authentic session recorded and replayed: the server's nonce differs.
        let (mut s, answered) = hello(&key, [3; NONCE_LEN], PEER);
        let server = answered.expect("answered");
        let real = Session::derive(&key, &[3; NONCE_LEN], &server, PEER);
        let recorded = frame(&real, 0, &Message::FullStart);
        s.write_all(&recorded).expect("frame");
        drop(s);
        let (mut s, _) = hello(&key, [3; NONCE_LEN], PEER);
        s.write_all(&recorded).expect("replay");
        refused.push(("replayed", closed(&mut s)));

        // 5. A frame out of sequence on an authentic connection.
        let (mut s, answered) = hello(&key, [4; NONCE_LEN], PEER);
        let real = Session::derive(&key, &[4; NONCE_LEN], &answered.expect("answered"), PEER);
        s.write_all(&frame(&real, 7, &Message::FullStart))
            .expect("frame");
        refused.push(("out of sequence", closed(&mut s)));

        // 6. A compromised peer (it holds the key): a flow for a VIP this host lacks.
        let (mut s, answered) = hello(&key, [5; NONCE_LEN], PEER);
        let real = Session::derive(&key, &[5; NONCE_LEN], &answered.expect("answered"), PEER);
        s.write_all(&frame(
            &real,
            0,
            &Message::Upsert(vec![record("198.18.0.199")]),
        ))
        .expect("frame");
        std::thread::sleep(Duration::from_millis(300));
        drop(s);

        // The held session is intact.
        session.write_all(b"still here").expect("write");
        let mut back = [0u8; 10];
        session.read_exact(&mut back).expect("echo");
        (refused, &back == b"still here")
    })
    .expect("client");
    let (refused, intact) = outcome;
    for (what, ok) in &refused {
        assert!(ok, "{what}: the connection was not refused\n{}", log(&lab));
    }
    assert!(intact, "the held session broke");
    let st = wait_for(
        "the rejected record counted",
        Duration::from_secs(5),
        || {
            let st = tests::status(&socket)?;
            let sy = st.sync.clone()?;
            (sy.peers.first()?.rejected >= 1).then_some(st)
        },
    )
    .unwrap_or_else(|e| panic!("{e}\n{}", log(&lab)));
    let sy = st.sync.expect("sync status");
    let peer = &sy.peers[0];
    println!(
        "refused: {:?}; auth_failures {}, unknown_peer_failures {}, rejected {}, installed {}, removed {}",
        refused.iter().map(|(w, _)| *w).collect::<Vec<_>>(),
        peer.auth_failures,
        sy.unknown_peer_failures,
        peer.rejected,
        peer.installed,
        peer.removed
    );
    assert!(sy.unknown_peer_failures >= 1, "garbage counted");
    assert!(
        peer.auth_failures >= 4,
        "unknown key, wrong key, replay, out of sequence: {}",
        peer.auth_failures
    );
    assert_eq!(peer.installed, 0, "nothing installed");
    assert_eq!(peer.removed, 0, "nothing removed");
    assert_eq!(peer.rejected, 1, "the compromised peer's record refused");
    let _ = Keys::parse(KEY).expect("the test key is valid");
}

/// Connections that never say hello are capped (8 per configured peer) and closed within
/// seconds, so a flood on the sync port cannot take this host's descriptors, and the port
/// answers a real hello again once they are gone.
#[test]
fn a_flood_of_silent_sync_connections_is_capped_and_ends_within_seconds() {
    let (lab, client, socket) = setup("pgrsc");
    let before = tests::status(&socket)
        .and_then(|s| s.sync)
        .map_or(0, |s| s.unknown_peer_failures);
    let (refused_at_once, answered_after) = in_netns(&client, move || {
        let addr: SocketAddr = SYNC_ADDR.parse().expect("addr");
        let mut silent = Vec::new();
        for _ in 0..8 {
            silent
                .push(TcpStream::connect_timeout(&addr, Duration::from_secs(2)).expect("connect"));
        }
        std::thread::sleep(Duration::from_millis(200));
        // Beyond the cap: closed at once.
        let mut refused = 0;
        for _ in 0..20 {
            let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).expect("connect");
            s.set_read_timeout(Some(Duration::from_millis(500))).ok();
            let mut b = [0u8; 1];
            if matches!(s.read(&mut b), Ok(0)) {
                refused += 1;
            }
        }
        // The silent ones time out (2 s without a hello); a real hello is answered again.
        std::thread::sleep(Duration::from_millis(2500));
        let (_s, answered) = hello(&hex(KEY), [9; NONCE_LEN], PEER);
        drop(silent);
        (refused, answered.is_some())
    })
    .expect("client");
    let after = tests::status(&socket)
        .and_then(|s| s.sync)
        .map_or(0, |s| s.unknown_peer_failures);
    println!(
        "refused at once beyond the cap: {refused_at_once}/20; unknown_peer_failures {before} -> {after}"
    );
    assert_eq!(
        refused_at_once,
        20,
        "beyond the cap, connections are closed at once\n{}",
        lab.log("pgrouter")
    );
    assert!(after >= before + 20, "counted");
    assert!(
        answered_after,
        "a real hello is answered once the silent connections are gone"
    );
}
