//! Cluster state: hysteresis wiring, scheduling (inter/fastinter/downinter, cluster-wide
//! re-check on a changed result), counters and logs-free snapshots.
use std::time::{Duration, Instant};

use super::*;
use crate::config;
use crate::test_config as builder;

/// Nodes a, b; W primary, R replica with the primary as fallback; checks every 1 s,
/// fastinter 200 ms, downinter 3 s, fall 2, rise 2.
fn cluster() -> Cluster {
    use builder::{Config, Health, Listener, Node};
    const VIP: &str = "198.18.0.100";
    let text = Config::new()
        .cluster(
            builder::Cluster::new("pg")
                .health(
                    Health::new()
                        .interval(Duration::from_secs(1))
                        .fastinter(Duration::from_millis(200))
                        .downinter(Duration::from_secs(3))
                        .fall(2)
                        .rise(2),
                )
                .node(Node::new("a", "198.18.0.11"))
                .node(Node::new("b", "198.18.0.12"))
                .listener(Listener::primary("W", VIP, 5000))
                .listener(Listener::replica_or_primary("R", VIP, 5001)),
        )
        .to_toml();
    match config::parse(&text, "t.toml") {
        Ok(mut c) => c.clusters.remove(0),
        Err(e) => panic!("{e}"),
    }
}

/// A fresh state whose first checks of every node have just been taken (are in flight).
fn checking() -> (ClusterState, Instant) {
    let t0 = Instant::now();
    let mut s = ClusterState::new(&cluster(), t0);
    s.take_due(t0);
    (s, t0)
}

fn outcome(ok: bool, role: &str, tl: u64) -> CheckOutcome {
    CheckOutcome {
        ok,
        not_primary: false,
        http_status: Some(if ok { 200 } else { 503 }),
        latency: Duration::from_millis(3),
        detail: String::new(),
        info: Some(PatroniInfo {
            role: Some(role.into()),
            state: Some("running".into()),
            timeline: Some(tl),
            ..Default::default()
        }),
    }
}

/// Primary node answers: /primary 200, /replica 503. Kinds are sorted [Primary, Replica].
fn as_primary(started: Instant) -> NodeProbe {
    NodeProbe {
        started,
        outcomes: vec![outcome(true, "primary", 2), outcome(false, "primary", 2)],
    }
}
fn as_replica(started: Instant) -> NodeProbe {
    let mut p = outcome(false, "replica", 2);
    p.not_primary = true;
    NodeProbe {
        started,
        outcomes: vec![p, outcome(true, "replica", 2)],
    }
}
fn unreachable(started: Instant) -> NodeProbe {
    let o = CheckOutcome {
        ok: false,
        not_primary: false,
        http_status: None,
        latency: Duration::from_secs(1),
        detail: "connect: refused".into(),
        info: None,
    };
    NodeProbe {
        started,
        outcomes: vec![o.clone(), o],
    }
}

/// Two cycles (rise = 2) from `t0`: a primary, b replica. Returns the next cycle's time.
fn both_up(s: &mut ClusterState, t0: Instant) -> Instant {
    let mut t = t0;
    for _ in 0..2 {
        s.take_due(t);
        s.apply(0, as_primary(t), t);
        s.apply(1, as_replica(t), t);
        t += Duration::from_millis(200);
    }
    t
}

fn members(s: &ClusterState, listener: usize) -> Vec<String> {
    s.snapshot().status.listeners[listener].members.clone()
}

#[test]
fn all_nodes_are_due_at_start_and_not_twice() {
    let t0 = Instant::now();
    let mut s = ClusterState::new(&cluster(), t0);
    assert_eq!(s.take_due(t0), vec![0, 1]);
    assert!(
        s.take_due(t0).is_empty(),
        "in-flight nodes are not asked again"
    );
    assert_eq!(s.next_due(), None);
}

#[test]
fn rise_two_needs_two_cycles_and_uses_fastinter_meanwhile() {
    let (mut s, t0) = checking();
    assert!(
        !s.apply(0, as_primary(t0), t0),
        "one success of rise=2 changes nothing"
    );
    assert!(members(&s, 0).is_empty());
    // Transitioning → next check at fastinter.
    assert_eq!(s.nodes[0].due, t0 + Duration::from_millis(200));
    let t1 = t0 + Duration::from_millis(200);
    assert_eq!(s.take_due(t1), vec![0]);
    assert!(s.apply(0, as_primary(t1), t1));
    assert_eq!(members(&s, 0), vec!["a"]);
    // Stable and up → interval.
    assert_eq!(s.nodes[0].due, t1 + Duration::from_secs(1));
}

#[test]
fn a_node_down_for_every_check_uses_downinter() {
    let (mut s, t0) = checking();
    s.apply(1, unreachable(t0), t0);
    assert_eq!(
        s.nodes[1].due,
        t0 + Duration::from_millis(200),
        "counting towards down"
    );
    let t1 = t0 + Duration::from_millis(200);
    s.take_due(t1);
    s.apply(1, unreachable(t1), t1);
    assert_eq!(s.nodes[1].due, t1 + Duration::from_secs(3));
}

#[test]
fn a_changed_result_rechecks_the_whole_cluster_at_fastinter() {
    let t0 = Instant::now();
    let mut s = ClusterState::new(&cluster(), t0);
    // Bring both up: a primary, b replica.
    let t = both_up(&mut s, t0);
    assert_eq!(members(&s, 0), vec!["a"]);
    // One more check of b so that a and b are on different schedules.
    s.take_due(t);
    s.apply(1, as_replica(t), t);
    let tb = s.nodes[1].due;
    assert!(
        tb > t + Duration::from_millis(500),
        "b is stable: checked at interval"
    );
    // Switchover: a now answers as a replica → its result changed.
    let ta = s.nodes[0].due;
    assert_eq!(s.take_due(ta), vec![0]);
    s.apply(0, as_replica(ta), ta);
    assert!(
        members(&s, 0).is_empty(),
        "Patroni says a is not primary: out at once"
    );
    // b is pulled in to fastinter after its last check, not left at interval.
    assert!(
        s.nodes[1].due <= ta,
        "b due {:?} after a's change at {:?}",
        s.nodes[1].due,
        ta
    );
    assert_eq!(s.take_due(ta), vec![1]);
}

#[test]
fn without_a_primary_every_node_stays_at_fastinter_until_one_is_found() {
    let t0 = Instant::now();
    let mut s = ClusterState::new(&cluster(), t0);
    both_up(&mut s, t0);
    // Settle into interval.
    for _ in 0..3 {
        let due = s.nodes.iter().map(|n| n.due).min().unwrap();
        for i in s.take_due(due) {
            if i == 0 {
                s.apply(0, as_primary(due), due);
            } else {
                s.apply(1, as_replica(due), due);
            }
        }
    }
    // The primary steps down; b is not promoted yet (Patroni still promoting): no leader.
    // Every later round stays at fastinter, not just the one-off re-check.
    let mut now = s.nodes[0].due;
    for _ in 0..4 {
        for i in s.take_due(now) {
            s.apply(i, as_replica(now), now);
        }
        assert!(members(&s, 0).is_empty(), "no primary yet");
        for n in &s.nodes {
            assert!(
                n.due <= now + Duration::from_millis(200),
                "node due {:?} after {:?}: should be fastinter while leaderless",
                n.due - now,
                now - t0
            );
        }
        now += Duration::from_millis(200);
    }
    // b is promoted: found within a fastinter, then back to interval once stable.
    for i in s.take_due(now) {
        if i == 1 {
            s.apply(1, as_primary(now), now);
        } else {
            s.apply(0, as_replica(now), now);
        }
    }
    now += Duration::from_millis(200);
    for i in s.take_due(now) {
        if i == 1 {
            s.apply(1, as_primary(now), now);
        } else {
            s.apply(0, as_replica(now), now);
        }
    }
    assert_eq!(members(&s, 0), vec!["b"]);
}

#[test]
fn a_recheck_request_during_a_probe_applies_after_it() {
    let (mut s, t0) = checking();
    s.apply(0, as_primary(t0), t0);
    s.apply(1, as_replica(t0), t0);
    let t1 = t0 + Duration::from_millis(200);
    s.take_due(t1);
    // b is in flight when a's result changes.
    s.apply(0, unreachable(t1), t1);
    assert!(s.nodes[1].hurry);
    s.apply(1, as_replica(t1), t1);
    assert_eq!(s.nodes[1].due, t1 + Duration::from_millis(200));
}

#[test]
fn counters_count_checks_failures_and_set_changes() {
    let (mut s, t0) = checking();
    s.apply(0, as_primary(t0), t0);
    s.apply(0, as_primary(t0), t0);
    let c = s.snapshot().status.counters;
    assert_eq!(c.checks_total, 4);
    assert_eq!(c.checks_failed, 2);
    assert_eq!(
        c.set_changes, 1,
        "W gained a and R fell back to a in one change"
    );
}

#[test]
fn snapshot_reports_node_facts_and_check_results() {
    let (mut s, t0) = checking();
    s.apply(1, as_replica(t0), t0);
    let st = s.snapshot().status;
    let b = &st.nodes[1];
    assert_eq!(b.role.as_deref(), Some("replica"));
    assert_eq!(b.timeline, Some(2));
    assert!(b.demoted);
    assert_eq!(b.checks[0].check, "/primary");
    assert_eq!(b.checks[0].verdict, Verdict::Down);
    assert_eq!(b.checks[1].successes, 1);
    assert_eq!(
        b.checks[1].last.as_ref().and_then(|l| l.http_status),
        Some(200)
    );
}

/// A node whose PostgreSQL refused a connection leaves every set at once and is checked at
/// once; a passing check within the hold (Patroni's API lags a stopping PostgreSQL) does not
/// bring it back, the first one finishing after the hold does.
#[test]
fn a_refused_connection_takes_the_node_out_until_a_check_after_the_hold() {
    let t0 = Instant::now();
    let ms = Duration::from_millis;
    let mut s = ClusterState::new(&cluster(), t0);
    let mut t = t0;
    for _ in 0..2 {
        s.take_due(t);
        s.apply(0, as_primary(t), t);
        s.apply(1, as_replica(t), t);
        t += ms(200);
    }
    assert_eq!(members(&s, 0), vec!["a"]);
    assert_eq!(members(&s, 1), vec!["b"]);

    let tr = t;
    assert!(s.refused(1, tr), "a set changed");
    assert_eq!(members(&s, 1), vec!["a"], "reads fall back to the primary");
    assert!(s.snapshot().status.nodes[1].refusing);
    assert_eq!(
        s.take_due(tr),
        vec![1],
        "the refusing node is checked at once"
    );
    assert!(!s.apply(1, as_replica(tr), tr + ms(5)));
    assert_eq!(
        members(&s, 1),
        vec!["a"],
        "a stale API answer within the hold"
    );

    let th = tr + ms(1000);
    assert_eq!(s.take_due(th), vec![0, 1]);
    assert!(s.apply(1, as_replica(th), th + ms(5)));
    assert_eq!(members(&s, 1), vec!["b"], "back after the hold");
    assert!(!s.snapshot().status.nodes[1].refusing);

    // The primary refusing: writes go nowhere rather than to a node that refuses them.
    assert!(s.refused(0, th + ms(10)));
    assert!(members(&s, 0).is_empty());
    assert_eq!(members(&s, 1), vec!["b"]);
}

fn backend_states(s: &ClusterState, listener: usize) -> Vec<crate::model::BackendState> {
    s.snapshot().listeners[listener]
        .backends
        .iter()
        .map(|b| b.state)
        .collect()
}

/// A RST answering a SYN (maybe forged, maybe a restart) takes the node out of every set but
/// leaves its established sessions alone: Drain, never Shutdown, on every listener. Only the
/// node's checks marking it down apply `on_marked_down`.
#[test]
fn a_refusal_never_resets_established_sessions_by_itself() {
    use crate::model::BackendState::{Drain, Shutdown};
    let t0 = Instant::now();
    let ms = Duration::from_millis;
    let mut s = ClusterState::new(&cluster(), t0);
    let t = both_up(&mut s, t0);

    assert!(s.refused(0, t), "the primary refused");
    assert!(members(&s, 0).is_empty());
    assert_eq!(backend_states(&s, 0), vec![Drain, Shutdown]);
    assert!(s.refused(1, t), "the replica refused");
    assert_eq!(backend_states(&s, 1), vec![Drain, Drain]);

    // Its checks then mark it down (fall = 2): now on_marked_down applies.
    let mut u = t;
    for _ in 0..2 {
        s.take_due(u);
        s.apply(1, unreachable(u), u);
        u += ms(200);
    }
    assert!(s.snapshot().status.nodes[1].refusing);
    assert_eq!(backend_states(&s, 1), vec![Drain, Shutdown]);
}

#[test]
fn refusals_are_ignored_when_observe_refusals_is_off() {
    let t0 = Instant::now();
    let mut cfg = cluster();
    cfg.health.observe_refusals = false;
    let mut s = ClusterState::new(&cfg, t0);
    let t = both_up(&mut s, t0);
    assert!(!s.refused(1, t));
    assert_eq!(members(&s, 1), vec!["b"]);
    assert!(!s.snapshot().status.nodes[1].refusing);
}
