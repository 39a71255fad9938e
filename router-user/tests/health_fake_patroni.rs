//! Health checking against fake Patroni servers on 127.0.0.1 (no root). Each test scripts the
//! nodes' answers and waits, with a deadline, for the published sets to match what a user of
//! the VIP should experience. No fixed sleeps: every wait polls the watch channel.
mod common;

use std::time::{Duration, Instant};

use common::{
    builder::{self, Config, Health, Listener, Node, Section as _},
    fake_patroni::{FakePatroni, Mode, Sim},
};
use pgrouter::config::{self, Cluster};
use pgrouter::health::{self, ClusterSnapshot};
use pgrouter::model::BackendState;
use tokio::sync::watch;

/// Generous: the machine is shared with compilers.
const WITHIN: Duration = Duration::from_secs(10);

const VIP: &str = "198.18.0.100";

/// interval 300ms, fastinter 100ms, downinter 300ms, timeout 300ms, fall 2, rise 1.
/// Listeners: W (primary, 5000), R (replica + fallback primary, 5001), plus `extra`.
fn cluster(nodes: &[&FakePatroni], extra: &[Listener]) -> Cluster {
    let mut c = builder::Cluster::new("pg1")
        .health(
            Health::new()
                .interval(Duration::from_millis(300))
                .fastinter(Duration::from_millis(100))
                .downinter(Duration::from_millis(300))
                .timeout(Duration::from_millis(300))
                .fall(2)
                .rise(1),
        )
        .listener(Listener::primary("W", VIP, 5000))
        .listener(Listener::replica_or_primary("R", VIP, 5001));
    for l in extra {
        c = c.listener(l.clone());
    }
    for (i, n) in nodes.iter().enumerate() {
        let port = 5432 + i as u16;
        c = c.node(
            Node::new(&format!("n{i}"), "127.0.0.1")
                .set("port", port)
                .set("api_port", n.port()),
        );
    }
    match config::parse(&Config::new().cluster(c).to_toml(), "test.toml") {
        Ok(mut c) => c.clusters.remove(0),
        Err(e) => panic!("test config invalid:\n{e}"),
    }
}

async fn wait_for(
    rx: &mut watch::Receiver<ClusterSnapshot>,
    what: &str,
    pred: impl Fn(&ClusterSnapshot) -> bool,
) -> ClusterSnapshot {
    let deadline = tokio::time::Instant::now() + WITHIN;
    loop {
        {
            let s = rx.borrow_and_update();
            if pred(&s) {
                return s.clone();
            }
        }
        match tokio::time::timeout_at(deadline, rx.changed()).await {
            Ok(Ok(())) => {}
            Ok(Err(_)) => panic!("snapshot channel closed while waiting for {what}"),
            Err(_) => panic!(
                "timed out after {WITHIN:?} waiting for {what}; last status:\n{}",
                serde_json::to_string_pretty(&rx.borrow().status).unwrap_or_default()
            ),
        }
    }
}

fn members(s: &ClusterSnapshot, listener: &str) -> Vec<String> {
    s.status
        .listeners
        .iter()
        .find(|l| l.name == listener)
        .map(|l| l.members.clone())
        .unwrap_or_default()
}

fn state(s: &ClusterSnapshot, listener: &str, node: &str) -> Option<BackendState> {
    s.listeners
        .iter()
        .find(|l| l.key.to_string() == format!("pg1/{listener}"))?
        .backends
        .iter()
        .find(|b| b.node == node)
        .map(|b| b.state)
}

fn is(s: &ClusterSnapshot, listener: &str, want: &[&str]) -> bool {
    members(s, listener) == want
}

/// The normal cluster: writes to the primary, reads to the replica, nothing before checks.
#[tokio::test]
async fn writes_reach_the_primary_and_reads_the_replica() {
    let a = FakePatroni::sim(Sim::primary(3)).await;
    let b = FakePatroni::sim(Sim::replica(3)).await;
    let h = health::spawn_cluster(&cluster(&[&a, &b], &[]));
    let mut rx = h.desired();
    // A fresh controller sends nothing anywhere before its first passing checks.
    let first = rx.borrow().clone();
    assert!(
        first
            .listeners
            .iter()
            .flat_map(|l| &l.backends)
            .all(|b| b.state != BackendState::Active),
        "{first:?}"
    );
    let s = wait_for(&mut rx, "W=[n0] R=[n1]", |s| {
        is(s, "W", &["n0"]) && is(s, "R", &["n1"])
    })
    .await;
    assert_eq!(
        state(&s, "W", "n1"),
        Some(BackendState::Shutdown),
        "replica never takes writes"
    );
    assert_eq!(
        state(&s, "R", "n0"),
        Some(BackendState::Drain),
        "primary not chosen for reads"
    );
    assert_eq!(s.status.primary.as_deref(), Some("n0"));
    assert!(!s.status.split_brain);
    assert_eq!(s.status.nodes[0].timeline, Some(3));
    assert!(a.requests().iter().any(|p| p == "/primary"));
    assert!(b.requests().iter().any(|p| p == "/replica"));
    h.shutdown();
    h.join().await;
}

/// `patronictl switchover`: the write set follows within about one fastinter after the first
/// check that sees the change.
#[tokio::test]
async fn switchover_moves_writes_within_a_fastinter() {
    let a = FakePatroni::sim(Sim::primary(3)).await;
    let b = FakePatroni::sim(Sim::replica(3)).await;
    let mut cfg = cluster(&[&a, &b], &[]);
    // A long interval, so that only the cluster-wide re-check can explain a fast move.
    cfg.health.interval = Duration::from_secs(2);
    let h = health::spawn_cluster(&cfg);
    let mut rx = h.desired();
    wait_for(&mut rx, "steady state", |s| {
        is(s, "W", &["n0"]) && is(s, "R", &["n1"])
    })
    .await;

    let flip = Instant::now();
    a.set_sim(Sim::replica(4));
    b.set_sim(Sim::primary(4));
    wait_for(&mut rx, "W=[n1]", |s| is(s, "W", &["n1"])).await;
    let done = Instant::now();
    let seen = [a.first_request_since(flip), b.first_request_since(flip)]
        .into_iter()
        .flatten()
        .min()
        .unwrap_or(done);
    let took = done - seen;
    // One fastinter until the other node is re-checked, plus that check and scheduling slack.
    let bound = cfg.health.fastinter + Duration::from_millis(250);
    assert!(
        took <= bound,
        "write set moved {took:?} after the first changed answer (bound {bound:?})"
    );
    let s = wait_for(&mut rx, "R=[n0]", |s| is(s, "R", &["n0"])).await;
    assert_eq!(
        state(&s, "W", "n0"),
        Some(BackendState::Shutdown),
        "demoted primary loses writes"
    );
    h.shutdown();
}

/// The seed's fix: reads go to the primary while no replica passes, and back to the replica
/// as soon as it does; the primary's read sessions are drained, not killed.
#[tokio::test]
async fn reads_fall_back_to_primary_when_the_replica_answers_503() {
    let a = FakePatroni::sim(Sim::primary(3)).await;
    let b = FakePatroni::sim(Sim::replica(3)).await;
    let h = health::spawn_cluster(&cluster(&[&a, &b], &[]));
    let mut rx = h.desired();
    wait_for(&mut rx, "R=[n1]", |s| is(s, "R", &["n1"])).await;

    b.set(Mode::Fixed {
        status: 503,
        body: Sim::replica(3).body(),
    });
    let s = wait_for(&mut rx, "fallback to n0", |s| is(s, "R", &["n0"])).await;
    assert!(s.status.listeners[1].fallback_active);
    assert_eq!(state(&s, "R", "n1"), Some(BackendState::Shutdown));
    assert_eq!(
        s.status.nodes[1]
            .checks
            .iter()
            .find(|c| c.check == "/replica")
            .map(|c| c.up),
        Some(false)
    );

    b.set_sim(Sim::replica(3));
    let s = wait_for(&mut rx, "back to n1", |s| is(s, "R", &["n1"])).await;
    assert!(!s.status.listeners[1].fallback_active);
    assert_eq!(state(&s, "R", "n0"), Some(BackendState::Drain));
    h.shutdown();
}

/// A replica more than `lag` behind leaves the lag-limited listener; Patroni's own `?lag=`
/// decides, with the limit sent in bytes.
#[tokio::test]
async fn lagging_replica_leaves_the_lag_limited_listener() {
    let a = FakePatroni::sim(Sim::primary(3)).await;
    let mut lagging = Sim::replica(3);
    lagging.lag = 20 * 1024 * 1024;
    let b = FakePatroni::sim(lagging).await;
    let extra = [Listener::new("RL", VIP, 5002, "replica").set("lag", "10MB")];
    let h = health::spawn_cluster(&cluster(&[&a, &b], &extra));
    let mut rx = h.desired();
    let s = wait_for(&mut rx, "R=[n1], RL=[] with n1 down for it", |s| {
        is(s, "R", &["n1"])
            && s.status.nodes[1]
                .checks
                .iter()
                .any(|c| c.check == "/replica?lag=10485760" && c.failures >= 2)
    })
    .await;
    assert!(members(&s, "RL").is_empty());
    assert!(
        b.requests().iter().any(|p| p == "/replica?lag=10485760"),
        "{:?}",
        b.requests()
    );

    let mut caught_up = Sim::replica(3);
    caught_up.lag = 1024 * 1024;
    b.set_sim(caught_up);
    wait_for(&mut rx, "RL=[n1]", |s| is(s, "RL", &["n1"])).await;
    h.shutdown();
}

/// Slow answers within `timeout` are fine; slower ones count as failures.
#[tokio::test]
async fn timeouts_mark_down_and_slow_answers_do_not() {
    let a = FakePatroni::sim(Sim::primary(3)).await;
    let b = FakePatroni::sim(Sim::replica(3)).await;
    b.set_delay(Duration::from_millis(100));
    let h = health::spawn_cluster(&cluster(&[&a, &b], &[]));
    let mut rx = h.desired();
    let s = wait_for(&mut rx, "R=[n1] despite 100ms answers", |s| {
        is(s, "R", &["n1"])
    })
    .await;
    let lat = s.status.nodes[1].checks[1]
        .last
        .as_ref()
        .map(|l| l.latency_ms)
        .unwrap_or(0.0);
    assert!(lat >= 90.0, "latency {lat}ms should include the delay");

    b.set_delay(Duration::from_millis(1500));
    let s = wait_for(&mut rx, "fallback after timeouts", |s| is(s, "R", &["n0"])).await;
    let detail = s.status.nodes[1].checks[1]
        .last
        .as_ref()
        .map(|l| l.detail.clone())
        .unwrap_or_default();
    assert!(detail.contains("timeout"), "{detail}");
    h.shutdown();
}

/// Patroni down (port closed) → node down; back → node up.
#[tokio::test]
async fn refused_connections_mark_down_until_patroni_is_back() {
    let a = FakePatroni::sim(Sim::primary(3)).await;
    let mut b = FakePatroni::sim(Sim::replica(3)).await;
    let h = health::spawn_cluster(&cluster(&[&a, &b], &[]));
    let mut rx = h.desired();
    wait_for(&mut rx, "R=[n1]", |s| is(s, "R", &["n1"])).await;
    b.refuse().await;
    let s = wait_for(&mut rx, "fallback", |s| is(s, "R", &["n0"])).await;
    let last = s.status.nodes[1].checks[1].last.clone();
    assert!(
        last.as_ref()
            .is_some_and(|l| l.http_status.is_none() && l.detail.contains("connect")),
        "{last:?}"
    );
    b.resume().await;
    wait_for(&mut rx, "R=[n1] again", |s| is(s, "R", &["n1"])).await;
    h.shutdown();
}

/// Anything that is not a complete Patroni answer is a failed check.
#[tokio::test]
async fn garbage_truncated_and_closed_answers_fail() {
    let broken = [
        Mode::Garbage(b"SSH-2.0-OpenSSH_9.2\r\n\r\n".to_vec()),
        Mode::Truncated {
            status: 200,
            body: Sim::replica(3).body(),
        },
        // Close-delimited (no Content-Length) but cut mid-JSON: 200 alone is not enough.
        Mode::Fixed {
            status: 200,
            body: r#"{"state": "running", "role": "repl"#.into(),
        },
        Mode::Fixed {
            status: 200,
            body: "<html>ok</html>".into(),
        },
        Mode::Close,
    ];
    for mode in broken {
        let a = FakePatroni::sim(Sim::primary(3)).await;
        let b = FakePatroni::sim(Sim::replica(3)).await;
        let h = health::spawn_cluster(&cluster(&[&a, &b], &[]));
        let mut rx = h.desired();
        wait_for(&mut rx, "R=[n1]", |s| is(s, "R", &["n1"])).await;
        b.set(mode.clone());
        let s = wait_for(&mut rx, &format!("fallback with {mode:?}"), |s| {
            is(s, "R", &["n0"])
        })
        .await;
        let c = &s.status.nodes[1].checks[1];
        assert!(!c.up, "{mode:?}: {c:?}");
        h.shutdown();
    }
}

/// patroni#2756: `/primary` is 200 while the leader lock holder's PostgreSQL is not running.
#[tokio::test]
async fn leader_lock_without_running_postgres_gets_no_writes() {
    let mut starting = Sim::primary(3);
    starting.state = "starting".into();
    let a = FakePatroni::sim(starting).await;
    let b = FakePatroni::sim(Sim::replica(3)).await;
    let h = health::spawn_cluster(&cluster(&[&a, &b], &[]));
    let mut rx = h.desired();
    let s = wait_for(&mut rx, "n0 primary check failing twice", |s| {
        s.status.nodes[0].checks[0].failures >= 2 && is(s, "R", &["n1"])
    })
    .await;
    assert!(members(&s, "W").is_empty());
    assert_eq!(
        s.status.nodes[0].checks[0]
            .last
            .as_ref()
            .and_then(|l| l.http_status),
        Some(200)
    );
    a.set_sim(Sim::primary(3));
    wait_for(&mut rx, "W=[n0] once running", |s| is(s, "W", &["n0"])).await;
    h.shutdown();
}

/// Patroni before 4.0 says "master".
#[tokio::test]
async fn master_role_name_counts_as_primary() {
    let mut old = Sim::primary(3);
    old.role = "master".into();
    let a = FakePatroni::sim(old).await;
    let b = FakePatroni::sim(Sim::replica(3)).await;
    let h = health::spawn_cluster(&cluster(&[&a, &b], &[]));
    let mut rx = h.desired();
    wait_for(&mut rx, "W=[n0]", |s| is(s, "W", &["n0"])).await;
    h.shutdown();
}

/// Two nodes pass the primary check: the higher timeline wins; equal timelines → no writes.
#[tokio::test]
async fn two_primaries_never_both_get_writes() {
    let a = FakePatroni::sim(Sim::primary(3)).await;
    let b = FakePatroni::sim(Sim::primary(4)).await;
    let h = health::spawn_cluster(&cluster(&[&a, &b], &[]));
    let mut rx = h.desired();
    let s = wait_for(&mut rx, "split brain resolved to n1", |s| {
        s.status.split_brain && is(s, "W", &["n1"])
    })
    .await;
    assert!(!s.status.writes_blocked);
    assert_eq!(state(&s, "W", "n0"), Some(BackendState::Shutdown));

    a.set_sim(Sim::primary(4));
    let s = wait_for(&mut rx, "writes blocked", |s| s.status.writes_blocked).await;
    assert!(members(&s, "W").is_empty());
    assert!(
        members(&s, "R").is_empty(),
        "fallback must not pick a side either"
    );
    assert!(
        s.listeners[0]
            .backends
            .iter()
            .all(|b| b.state != BackendState::Active)
    );

    a.set_sim(Sim::replica(4));
    let s = wait_for(&mut rx, "n0 steps down", |s| {
        !s.status.split_brain && is(s, "W", &["n1"])
    })
    .await;
    assert!(!s.status.writes_blocked);
    h.shutdown();
}

/// Nothing answers: nodes go down, and no connection is ever sent anywhere.
#[tokio::test]
async fn unreachable_cluster_never_gets_connections() {
    let mut a = FakePatroni::sim(Sim::primary(3)).await;
    let mut b = FakePatroni::sim(Sim::replica(3)).await;
    a.refuse().await;
    b.refuse().await;
    let h = health::spawn_cluster(&cluster(&[&a, &b], &[]));
    let mut rx = h.desired();
    let s = wait_for(&mut rx, "every check down", |s| {
        s.status
            .nodes
            .iter()
            .flat_map(|n| &n.checks)
            .all(|c| c.verdict == health::verdict::Verdict::Down)
    })
    .await;
    assert!(
        s.listeners
            .iter()
            .flat_map(|l| &l.backends)
            .all(|b| b.state != BackendState::Active)
    );
    assert!(s.status.counters.checks_failed >= 4);
    assert_eq!(
        s.status.counters.checks_total,
        s.status.counters.checks_failed
    );
    h.shutdown();
}

/// Basic auth is sent when configured.
#[tokio::test]
async fn basic_auth_is_sent() {
    let a = FakePatroni::sim(Sim::primary(3)).await;
    let mut c = cluster(&[&a], &[]);
    c.api.username = Some("patroni".into());
    c.api.password = Some("secret".into());
    let h = health::spawn_cluster(&c);
    let mut rx = h.desired();
    wait_for(&mut rx, "W=[n0]", |s| is(s, "W", &["n0"])).await;
    // base64("patroni:secret")
    assert_eq!(a.last_auth().as_deref(), Some("Basic cGF0cm9uaTpzZWNyZXQ="));
    h.shutdown();
}

/// `checks = "static"`: roles from the config, no probes.
#[tokio::test]
async fn static_cluster_publishes_config_roles() {
    let text = Config::new()
        .cluster(
            builder::Cluster::new("pg1")
                .checks("static")
                .node(Node::new("a", "198.18.0.11").role("replica"))
                .node(Node::new("b", "198.18.0.12").role("primary"))
                .listener(Listener::primary("W", VIP, 5000))
                .listener(Listener::replica_or_primary("R", VIP, 5001)),
        )
        .to_toml();
    let cfg = match config::parse(&text, "static.toml") {
        Ok(c) => c,
        Err(e) => panic!("{e}"),
    };
    let h = health::spawn_cluster(&cfg.clusters[0]);
    let s = h.desired().borrow().clone();
    assert_eq!(members(&s, "W"), vec!["b"]);
    assert_eq!(members(&s, "R"), vec!["a"]);
    assert_eq!(
        health::static_snapshot(&cfg.clusters[0]).listeners,
        s.listeners
    );
    h.shutdown();
    h.join().await;
}

/// `kind = "read-only"` (Patroni's `/read-only`): primary and replicas alike.
#[tokio::test]
async fn read_only_listener_serves_primary_and_replicas() {
    let a = FakePatroni::sim(Sim::primary(3)).await;
    let b = FakePatroni::sim(Sim::replica(3)).await;
    let extra = [Listener::new("RO", VIP, 5003, "read-only")];
    let h = health::spawn_cluster(&cluster(&[&a, &b], &extra));
    let mut rx = h.desired();
    wait_for(&mut rx, "RO=[n0,n1]", |s| is(s, "RO", &["n0", "n1"])).await;
    assert!(
        b.requests().iter().any(|p| p == "/read-only"),
        "{:?}",
        b.requests()
    );
    let mut stopped = Sim::replica(3);
    stopped.state = "stopped".into();
    b.set_sim(stopped);
    let s = wait_for(&mut rx, "RO=[n0]", |s| is(s, "RO", &["n0"])).await;
    assert_eq!(state(&s, "RO", "n1"), Some(BackendState::Shutdown));
    h.shutdown();
}

/// `shutdown()` (or dropping the handle) stops probing and closes the snapshot channel.
#[tokio::test]
async fn shutdown_stops_probing() {
    let a = FakePatroni::sim(Sim::primary(3)).await;
    let h = health::spawn_cluster(&cluster(&[&a], &[]));
    let mut rx = h.desired();
    wait_for(&mut rx, "W=[n0]", |s| is(s, "W", &["n0"])).await;
    drop(h);
    let closed = tokio::time::timeout(WITHIN, async { while rx.changed().await.is_ok() {} }).await;
    assert!(
        closed.is_ok(),
        "snapshot channel still open after the handle was dropped"
    );
    // Let a request that was already in flight finish (timeout is 300ms), then expect
    // silence for more than two intervals.
    let mut tick = tokio::time::interval(Duration::from_millis(50));
    for _ in 0..8 {
        tick.tick().await;
    }
    let seen = a.requests().len();
    for _ in 0..14 {
        tick.tick().await;
    }
    assert_eq!(a.requests().len(), seen, "checks continued after shutdown");
}
