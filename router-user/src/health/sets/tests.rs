//! Set rules, one scenario per test (see the module doc of `sets`).
use super::*;
use crate::config::{self, Cluster};
use crate::model::BackendState::{Active, Drain, Shutdown};
use crate::test_config as builder;

const MB10: u64 = 10 * 1024 * 1024;

/// Three nodes; listeners: W primary, R replica+fallback, RL replica lag=10MB (no fallback),
/// RO read-only, WK primary with on_marked_down = "keep".
fn cluster() -> Cluster {
    use builder::{Config, Listener, Node, Section as _};
    const VIP: &str = "198.18.0.100";
    let text = Config::new()
        .cluster(
            builder::Cluster::new("pg")
                .node(Node::new("a", "198.18.0.11"))
                .node(Node::new("b", "198.18.0.12"))
                .node(Node::new("c", "198.18.0.13"))
                .listener(Listener::primary("W", VIP, 5000))
                .listener(Listener::replica_or_primary("R", VIP, 5001))
                .listener(Listener::new("RL", VIP, 5002, "replica").set("lag", "10MB"))
                .listener(Listener::new("RO", VIP, 5003, "read-only"))
                .listener(Listener::primary("WK", VIP, 5004).set("on_marked_down", "keep")),
        )
        .to_toml();
    match config::parse(&text, "test.toml") {
        Ok(mut c) => c.clusters.remove(0),
        Err(e) => panic!("{e}"),
    }
}

const P: CheckKind = CheckKind::Primary;
const R: CheckKind = CheckKind::Replica { lag: None };
const RL: CheckKind = CheckKind::Replica { lag: Some(MB10) };
const O: CheckKind = CheckKind::ReadOnly { lag: None };

use Verdict::{Down as D, Unknown as U, Up as Y};

/// A node's verdicts for P, R, RL, O.
fn v(p: Verdict, r: Verdict, rl: Verdict, o: Verdict) -> NodeView {
    NodeView {
        verdicts: vec![(P, p), (R, r), (RL, rl), (O, o)],
        timeline: Some(1),
        demoted: false,
        refusing: false,
    }
}
fn refusing(mut view: NodeView) -> NodeView {
    view.refusing = true;
    view
}
fn primary() -> NodeView {
    v(Y, D, D, Y)
}
fn replica() -> NodeView {
    v(D, Y, Y, Y)
}
fn dead() -> NodeView {
    v(D, D, D, D)
}

fn states(c: &Computed, listener: &str) -> Vec<BackendState> {
    let l = c
        .listeners
        .iter()
        .find(|l| l.key.to_string() == format!("pg/{listener}"))
        .unwrap_or_else(|| panic!("no listener {listener}"));
    l.backends.iter().map(|b| b.state).collect()
}
fn set<'a>(c: &'a Computed, listener: &str) -> &'a ListenerSet {
    c.sets
        .iter()
        .find(|s| s.name == listener)
        .unwrap_or_else(|| panic!("no set {listener}"))
}

#[test]
fn fresh_start_sends_nothing_anywhere_and_kills_nothing() {
    let c = compute(
        &cluster(),
        &[
            NodeView::default(),
            NodeView::default(),
            NodeView::default(),
        ],
    );
    for l in &c.listeners {
        assert!(
            l.backends.iter().all(|b| b.state == Drain),
            "{}: {:?}",
            l.key,
            l.backends
        );
    }
    assert_eq!(c.primary.chosen, None);
}

#[test]
fn writes_go_to_the_primary_only() {
    let c = compute(&cluster(), &[replica(), primary(), dead()]);
    assert_eq!(states(&c, "W"), vec![Shutdown, Active, Shutdown]);
    assert_eq!(set(&c, "W").members, vec!["b"]);
    assert_eq!(c.primary.chosen, Some(1));
    assert!(!c.primary.split_brain);
}

#[test]
fn reads_go_to_replicas_and_the_primary_is_drained_not_killed() {
    let c = compute(&cluster(), &[replica(), primary(), replica()]);
    assert_eq!(states(&c, "R"), vec![Active, Drain, Active]);
    assert!(!set(&c, "R").fallback_active);
}

#[test]
fn reads_fall_back_to_primary_when_last_replica_dies() {
    let c = compute(&cluster(), &[dead(), primary(), dead()]);
    assert_eq!(states(&c, "R"), vec![Shutdown, Active, Shutdown]);
    assert!(set(&c, "R").fallback_active);
    assert_eq!(set(&c, "R").members, vec!["b"]);
    // RL has no fallback: the read set is empty, like the naive HAProxy config.
    assert!(set(&c, "RL").members.is_empty());
    assert!(!set(&c, "RL").fallback_active);
    assert_eq!(states(&c, "RL"), vec![Shutdown, Shutdown, Shutdown]);
}

#[test]
fn reads_return_to_a_replica_as_soon_as_one_passes() {
    let c = compute(&cluster(), &[replica(), primary(), dead()]);
    assert_eq!(states(&c, "R"), vec![Active, Drain, Shutdown]);
    assert!(!set(&c, "R").fallback_active);
}

#[test]
fn fallback_serves_nothing_without_a_primary() {
    let c = compute(&cluster(), &[dead(), dead(), dead()]);
    assert!(set(&c, "R").fallback_active);
    assert!(set(&c, "R").members.is_empty());
}

#[test]
fn lagging_replica_leaves_only_the_lag_limited_listener() {
    // a: replica within 10MB; c: replica but lagging (Patroni answers 503 to ?lag=10485760).
    let lagging = v(D, Y, D, Y);
    let c = compute(&cluster(), &[replica(), primary(), lagging]);
    assert_eq!(set(&c, "R").members, vec!["a", "c"]);
    assert_eq!(set(&c, "RL").members, vec!["a"]);
    assert_eq!(states(&c, "RL"), vec![Active, Shutdown, Shutdown]);
}

#[test]
fn read_only_serves_primary_and_replicas() {
    let c = compute(&cluster(), &[replica(), primary(), dead()]);
    assert_eq!(set(&c, "RO").members, vec!["a", "b"]);
    assert_eq!(states(&c, "RO"), vec![Active, Active, Shutdown]);
}

#[test]
fn split_brain_keeps_the_higher_timeline() {
    let mut old = primary();
    old.timeline = Some(4);
    let mut new = primary();
    new.timeline = Some(5);
    let c = compute(&cluster(), &[old, new, replica()]);
    assert!(c.primary.split_brain);
    assert!(!c.primary.undecided);
    assert_eq!(c.primary.chosen, Some(1));
    // The stale side loses its write sessions, even with on_marked_down = "keep".
    assert_eq!(states(&c, "W"), vec![Shutdown, Active, Shutdown]);
    assert_eq!(states(&c, "WK"), vec![Shutdown, Active, Drain]);
}

#[test]
fn split_brain_with_equal_timelines_admits_no_writes() {
    let c = compute(&cluster(), &[primary(), primary(), replica()]);
    assert!(c.primary.split_brain);
    assert!(c.primary.undecided);
    assert_eq!(c.primary.chosen, None);
    assert!(set(&c, "W").members.is_empty());
    // No new writes, but existing sessions are not guessed at either.
    assert_eq!(states(&c, "W"), vec![Drain, Drain, Shutdown]);
    // The read fallback does not pick a side either.
    let c = compute(&cluster(), &[primary(), primary(), dead()]);
    assert!(set(&c, "R").members.is_empty());
}

#[test]
fn split_brain_with_an_unknown_timeline_admits_no_writes() {
    let mut a = primary();
    a.timeline = None;
    let mut b = primary();
    b.timeline = Some(9);
    let c = compute(&cluster(), &[a, b, replica()]);
    assert!(c.primary.undecided);
    assert!(set(&c, "W").members.is_empty());
}

#[test]
fn demoted_primary_is_shut_down_on_write_listeners_even_with_keep() {
    let mut demoted = replica();
    demoted.demoted = true;
    let c = compute(&cluster(), &[demoted, primary(), dead()]);
    assert_eq!(states(&c, "W")[0], Shutdown);
    assert_eq!(states(&c, "WK")[0], Shutdown);
}

#[test]
fn keep_drains_a_node_marked_down() {
    let c = compute(&cluster(), &[dead(), primary(), dead()]);
    assert_eq!(states(&c, "WK"), vec![Drain, Active, Drain]);
    assert_eq!(states(&c, "W"), vec![Shutdown, Active, Shutdown]);
}

#[test]
fn unknown_verdict_drains() {
    // b has passed nothing yet, a is a known replica.
    let c = compute(&cluster(), &[replica(), v(U, U, U, U), dead()]);
    assert_eq!(states(&c, "W"), vec![Shutdown, Drain, Shutdown]);
    assert_eq!(states(&c, "R"), vec![Active, Drain, Shutdown]);
}

/// A refusal is no verdict on established sessions (the RST may be forged, or PostgreSQL may
/// be restarting): the node leaves every set, its sessions stay.
#[test]
fn a_refusing_replica_leaves_every_set_but_is_only_drained() {
    let c = compute(&cluster(), &[refusing(replica()), primary(), replica()]);
    assert_eq!(set(&c, "R").members, vec!["c"]);
    assert_eq!(set(&c, "RO").members, vec!["b", "c"]);
    assert_eq!(states(&c, "R"), vec![Drain, Drain, Active]);
    assert_eq!(states(&c, "RL"), vec![Drain, Shutdown, Active]);
    assert_eq!(states(&c, "RO"), vec![Drain, Active, Active]);
}

#[test]
fn a_refusing_primary_gets_no_writes_and_keeps_its_sessions() {
    let c = compute(&cluster(), &[refusing(primary()), replica(), dead()]);
    assert_eq!(c.primary.chosen, None);
    assert!(!c.primary.split_brain);
    assert!(set(&c, "W").members.is_empty());
    assert_eq!(states(&c, "W"), vec![Drain, Shutdown, Shutdown]);
    assert_eq!(states(&c, "WK"), vec![Drain, Drain, Drain]);
    // The read fallback does not send reads to it either.
    let c = compute(&cluster(), &[refusing(primary()), dead(), dead()]);
    assert!(set(&c, "R").members.is_empty());
}

#[test]
fn a_refusing_node_its_checks_mark_down_gets_on_marked_down() {
    let c = compute(&cluster(), &[refusing(dead()), primary(), replica()]);
    assert_eq!(states(&c, "R"), vec![Shutdown, Drain, Active]);
    assert_eq!(states(&c, "WK"), vec![Drain, Active, Drain]);
}

#[test]
fn a_refusing_stale_primary_still_loses_a_split_brain() {
    let mut old = refusing(primary());
    old.timeline = Some(4);
    let mut new = primary();
    new.timeline = Some(5);
    let c = compute(&cluster(), &[old, new, replica()]);
    assert_eq!(c.primary.chosen, Some(1));
    assert_eq!(states(&c, "W"), vec![Shutdown, Active, Shutdown]);
}

#[test]
fn a_split_brain_whose_newest_side_refuses_admits_no_writes() {
    let mut old = primary();
    old.timeline = Some(4);
    let mut new = refusing(primary());
    new.timeline = Some(5);
    let c = compute(&cluster(), &[old, new, replica()]);
    assert!(c.primary.undecided);
    assert!(set(&c, "W").members.is_empty());
    assert_eq!(states(&c, "W"), vec![Drain, Drain, Shutdown]);
}

#[test]
fn listener_fields_come_from_config() {
    let c = compute(&cluster(), &[replica(), primary(), dead()]);
    let w = &c.listeners[0];
    assert_eq!(w.key.to_string(), "pg/W");
    assert_eq!(w.port, 5000);
    assert!(w.shutdown_sessions);
    assert_eq!(w.snat_addr, w.vip);
    assert_eq!(w.backends[1].port, 5432);
    assert!(!c.listeners[4].shutdown_sessions);
    assert_eq!(w.empty_hold_ms, router_ebpf::DEFAULT_EMPTY_HOLD_MS);
}

#[test]
fn needed_checks_are_deduplicated_and_include_primary_for_fallback() {
    let mut cl = cluster();
    assert_eq!(needed_checks(&cl), vec![P, R, RL, O]);
    cl.listeners.retain(|l| l.name == "R");
    assert_eq!(needed_checks(&cl), vec![P, R]);
}
