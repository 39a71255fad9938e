//! The collector's rules, one scenario per test: the pure core (`classify`, `drift`) and the
//! executor over a fake pair of tables.
use std::{collections::BTreeMap, io, net::Ipv4Addr};

use router_ebpf::{
    BACKEND_ACTIVE, BACKEND_SHUTDOWN, Backend, DEFAULT_TIMEOUT_ESTABLISHED_NS,
    DEFAULT_TIMEOUT_HANDSHAKE_NS, FLOW_F_CLIENT_FIN_SEEN, FLOW_F_CLOSED, FLOW_F_REPLY,
    FLOW_STATE_CLOSED, FLOW_STATE_CLOSING, FLOW_STATE_ESTABLISHED, FLOW_STATE_HANDSHAKE,
    GC_OP_ADJUST,
};

use super::*;
use crate::dataplane::{
    Applied,
    batch::{Batch, Cursor},
};
use crate::model::{BackendKey, ListenerKey};
use crate::test_flows::Tuple;

const S: u64 = 1_000_000_000;
/// A clock far from zero, so "long ago" fits in a u64.
const NOW: u64 = 100_000 * S;
const VIP: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 100);
const CLIENT: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 30);
const NODE: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 11);

fn timeouts() -> Timeouts {
    Timeouts {
        handshake_ns: 5 * S,
        established_ns: 100 * S,
        closing_ns: 20 * S,
        closed_ns: 10 * S,
    }
}

/// A flow's two entries: forward (client:cport → VIP:5000, rewritten to VIP:sport → node:5432)
/// and reply (node:5432 → VIP:sport, rewritten to VIP:5000 → client:cport).
fn flow(
    cport: u16,
    sport: u16,
    backend: u32,
    fwd_seen: u64,
    reply_seen: u64,
    flags: u64,
) -> [(FlowKey, Flow); 2] {
    let tuple = Tuple {
        client: (CLIENT, cport),
        vip: (VIP, 5000),
        snat: (VIP, sport),
        node: (NODE, 5432),
    };
    let [(fk, fwd), (rk, reply)] = tuple.entries(backend, flags, fwd_seen, reply_seen);
    assert_eq!(reply.peer_key(), fk, "the entries point at each other");
    [(fk, fwd), (rk, reply)]
}

fn run(table: Table, batch: &[(FlowKey, Flow)], rest: &[(FlowKey, Flow)]) -> (Vec<Action>, Tally) {
    let others: BTreeMap<FlowKey, Flow> = rest.iter().copied().collect();
    let mut tally = Tally::default();
    let actions = classify(
        NOW,
        &timeouts(),
        table,
        batch,
        &mut |_, k| others.get(k).copied(),
        &mut tally,
    );
    (actions, tally)
}

fn reaped(actions: &[Action]) -> Vec<(FlowKey, u8, bool)> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Reap(r) => Some((r.key, r.state, r.orphan)),
            _ => None,
        })
        .collect()
}

/// A SYN nobody completed (a spoofed source, a vanished client) frees its port once the
/// handshake timeout has passed: both entries are deleted, the forward one counted.
#[test]
fn a_handshake_older_than_its_timeout_is_deleted() {
    let [f, r] = flow(40000, 20000, 1, NOW - 6 * S, NOW - 6 * S, 0);
    let (actions, tally) = run(Table::Handshake, &[f], &[r]);
    assert_eq!(
        actions,
        vec![
            Action::DeleteHandshake {
                key: f.0,
                forward: true
            },
            Action::DeleteHandshake {
                key: r.0,
                forward: false
            },
        ]
    );
    assert_eq!(tally.handshake_entries, 0);
    assert!(tally.flows.is_empty());
}

/// A handshake within its timeout stays, counted under its backend with its port.
#[test]
fn a_handshake_within_its_timeout_is_kept_and_counted() {
    let [f, r] = flow(40000, 20000, 3, NOW - 4 * S, NOW - 4 * S, 0);
    let (actions, tally) = run(Table::Handshake, &[f, r], &[]);
    assert!(actions.is_empty(), "{actions:?}");
    assert_eq!(tally.flows[&3][usize::from(FLOW_STATE_HANDSHAKE)], 1);
    assert_eq!(tally.handshake_entries, 2);
    assert_eq!(tally.snat_ports[&0], 1);
    assert!(tally.open.is_empty(), "a handshake holds no slot");
}

/// Both entries of an expired handshake in one batch are deleted once each, without lookups.
#[test]
fn an_expired_handshake_in_one_batch_is_deleted_once() {
    let [f, r] = flow(40000, 20000, 1, NOW - 9 * S, NOW - 9 * S, 0);
    let (actions, _) = run(Table::Handshake, &[f, r], &[]);
    assert_eq!(actions.len(), 2, "{actions:?}");
}

/// The kernel's coarse clock lags; a handshake just past its timeout by our clock may still
/// complete by the kernel's, so userspace waits a little longer before deleting it.
#[test]
fn a_handshake_just_past_its_timeout_waits_for_the_kernel_clock() {
    let [f, r] = flow(40000, 20000, 1, NOW - 5 * S - 1_000_000, NOW, 0);
    let (actions, _) = run(Table::Handshake, &[f, r], &[]);
    assert!(actions.is_empty(), "{actions:?}");
}

/// An established flow idle past its timeout (both directions) is reaped through the kernel.
#[test]
fn an_idle_established_flow_is_reaped_after_its_timeout() {
    let [f, r] = flow(40000, 20000, 1, NOW - 101 * S, NOW - 101 * S, 0);
    let (actions, tally) = run(Table::Conntrack, &[f], &[r]);
    assert_eq!(reaped(&actions), vec![(f.0, FLOW_STATE_ESTABLISHED, false)]);
    assert!(matches!(actions[0], Action::Reap(Reap { open: true, .. })));
    assert!(tally.open.is_empty(), "counted only if the kernel keeps it");
}

/// Traffic in either direction keeps a flow alive: a recent reply entry saves an old forward.
#[test]
fn a_flow_whose_reply_side_is_recent_is_not_expired() {
    let [f, r] = flow(40000, 20000, 1, NOW - 500 * S, NOW - S, 0);
    let (actions, tally) = run(Table::Conntrack, &[f], &[r]);
    assert!(actions.is_empty(), "{actions:?}");
    assert_eq!(tally.open[&1], 1);
    assert_eq!(tally.flows[&1][usize::from(FLOW_STATE_ESTABLISHED)], 1);
}

/// Each state has its own timeout: a closing flow idle 21 s and a closed one idle 11 s go,
/// an established one idle 21 s stays.
#[test]
fn each_state_expires_after_its_own_timeout() {
    let [closing, _] = flow(40001, 20001, 1, NOW - 21 * S, 0, FLOW_F_CLIENT_FIN_SEEN);
    let [closed, _] = flow(40002, 20002, 1, NOW - 11 * S, 0, FLOW_F_CLOSED);
    let [est, _] = flow(40003, 20003, 1, NOW - 21 * S, 0, 0);
    let (actions, tally) = run(Table::Conntrack, &[closing, closed, est], &[]);
    assert_eq!(
        reaped(&actions),
        vec![
            (closing.0, FLOW_STATE_CLOSING, false),
            (closed.0, FLOW_STATE_CLOSED, false)
        ]
    );
    assert!(
        matches!(actions[1], Action::Reap(Reap { open: false, .. })),
        "a closed flow gave its slot back already"
    );
    assert_eq!(tally.open[&1], 1);
}

/// A zero field in PGR_TIMEOUTS means the default: an established flow idle an hour stays.
#[test]
fn zero_timeouts_mean_the_defaults() {
    let mut tally = Tally::default();
    let t = Timeouts::default();
    // One entry alone in `table`, judged with all-zero timeouts.
    let mut alone = |table: Table, entry: (FlowKey, Flow)| {
        classify(NOW, &t, table, &[entry], &mut |_, _| None, &mut tally)
    };
    let [f, _] = flow(40000, 20000, 1, NOW - 3600 * S, 0, 0);
    let a = alone(Table::Conntrack, f);
    assert!(a.is_empty());
    let old = NOW - DEFAULT_TIMEOUT_ESTABLISHED_NS - S;
    let [f, _] = flow(40000, 20000, 1, old, 0, 0);
    let a = alone(Table::Conntrack, f);
    assert_eq!(a.len(), 1);
    let young = NOW - DEFAULT_TIMEOUT_HANDSHAKE_NS + S;
    let [h, _] = flow(40000, 20000, 1, young, 0, 0);
    let a = alone(Table::Handshake, h);
    assert!(a.is_empty());
}

/// A reply entry whose forward entry is gone holds a port for nothing: handed to the kernel
/// once it is older than the closed timeout (unforced: the kernel re-checks).
#[test]
fn an_orphaned_reply_entry_is_reaped_past_its_grace() {
    let [_, r] = flow(40000, 20000, 1, 0, NOW - 11 * S, 0);
    let (actions, tally) = run(Table::Conntrack, &[r], &[]);
    assert_eq!(reaped(&actions), vec![(r.0, FLOW_STATE_CLOSED, true)]);
    let Action::Reap(reap) = actions[0] else {
        panic!("{actions:?}")
    };
    assert_eq!(reap.request().flags, 0);
    assert_eq!(reap.request().op, GC_OP_REAP);
    assert!(tally.snat_ports.is_empty());
}

/// A young reply entry without its forward entry may be a flow being inserted this very
/// moment: left alone.
#[test]
fn a_young_orphan_is_left_alone() {
    let [_, r] = flow(40000, 20000, 1, 0, NOW - S, 0);
    let (actions, tally) = run(Table::Conntrack, &[r], &[]);
    assert!(actions.is_empty());
    assert_eq!(tally.conntrack_entries, 1);
}

/// An entry at the forward's peer key that belongs to another flow (its port was taken over)
/// does not keep the old flow alive, nor does a live reply of another flow count as the
/// forward of an orphan.
#[test]
fn another_flows_entry_at_the_peer_key_is_not_this_flows() {
    let [f, _] = flow(40000, 20000, 1, NOW - 200 * S, 0, 0);
    // A new flow from another client port owns node:5432 → VIP:20000 now.
    let [_, mut taken] = flow(41000, 20000, 2, NOW, NOW, 0);
    taken.1.last_seen = NOW;
    let (actions, _) = run(Table::Conntrack, &[f], &[taken]);
    assert_eq!(reaped(&actions), vec![(f.0, FLOW_STATE_ESTABLISHED, false)]);
}

/// The recount's basis: forward entries without CLOSED, per backend. SNAT ports in use are
/// those of flows not closed, in both tables (a closed flow's port is reusable at once).
#[test]
fn open_flows_and_snat_ports_are_counted_from_the_tables() {
    let [a, ar] = flow(40001, 20001, 1, NOW, NOW, 0);
    let [b, br] = flow(40002, 20002, 1, NOW, NOW, FLOW_F_CLOSED);
    let [c, cr] = flow(40003, 20003, 2, NOW, NOW, FLOW_F_CLIENT_FIN_SEEN);
    let (_, ct) = run(Table::Conntrack, &[a, ar, b, br, c, cr], &[]);
    assert_eq!(ct.open, BTreeMap::from([(1, 1), (2, 1)]));
    assert_eq!(ct.flows[&1][usize::from(FLOW_STATE_CLOSED)], 1);
    assert_eq!(ct.flows[&2][usize::from(FLOW_STATE_CLOSING)], 1);
    assert_eq!(ct.snat_ports[&0], 2, "the closed flow's port is free");
    assert_eq!(ct.conntrack_entries, 6);
    let [h, hr] = flow(40004, 20004, 1, NOW, NOW, 0);
    let (_, hs) = run(Table::Handshake, &[h, hr], &[]);
    assert_eq!(hs.snat_ports[&0], 1);
    assert!(hs.open.is_empty());
}

fn recount(state: u8, counted: u64, conns: u32) -> Recount {
    Recount {
        state,
        counted,
        conns_start: conns,
        conns_end: conns,
    }
}

/// A leaked slot (count 5, 3 flows in the table) is corrected by −2, but only on the second
/// full cycle that sees it.
#[test]
fn drift_is_corrected_only_when_seen_twice() {
    let mut seen = BTreeMap::new();
    let r = BTreeMap::from([(7, recount(BACKEND_ACTIVE, 3, 5))]);
    assert!(drift(&r, &mut seen).is_empty(), "first sighting");
    assert_eq!(
        drift(&r, &mut seen),
        vec![Action::Adjust {
            backend_id: 7,
            delta: -2
        }]
    );
    assert!(
        drift(&r, &mut seen).is_empty(),
        "starts over after a correction"
    );
}

/// A drift that changes between cycles is churn, not a leak: nothing is corrected.
#[test]
fn a_changing_drift_is_not_corrected() {
    let mut seen = BTreeMap::new();
    let a = BTreeMap::from([(7, recount(BACKEND_ACTIVE, 3, 5))]);
    let b = BTreeMap::from([(7, recount(BACKEND_ACTIVE, 4, 5))]);
    assert!(drift(&a, &mut seen).is_empty());
    assert!(drift(&b, &mut seen).is_empty());
    assert_eq!(drift(&b, &mut seen).len(), 1, "−1 seen twice now");
}

/// A drift interrupted by a cycle without it starts over.
#[test]
fn a_drift_must_be_seen_in_consecutive_cycles() {
    let mut seen = BTreeMap::new();
    let off = BTreeMap::from([(7, recount(BACKEND_ACTIVE, 3, 5))]);
    let ok = BTreeMap::from([(7, recount(BACKEND_ACTIVE, 5, 5))]);
    assert!(drift(&off, &mut seen).is_empty());
    assert!(drift(&ok, &mut seen).is_empty());
    assert!(drift(&off, &mut seen).is_empty());
}

/// While a backend is shut down its count belongs to userspace (sweep): never adjusted.
#[test]
fn a_shut_down_backend_is_never_adjusted() {
    let mut seen = BTreeMap::new();
    let r = BTreeMap::from([(7, recount(BACKEND_SHUTDOWN, 0, 4))]);
    assert!(drift(&r, &mut seen).is_empty());
    assert!(drift(&r, &mut seen).is_empty());
}

/// A count that moved while the cycle walked cannot be compared with the walk's tally.
#[test]
fn drift_is_not_judged_while_the_count_moves() {
    let mut seen = BTreeMap::new();
    let moving = Recount {
        state: BACKEND_ACTIVE,
        counted: 3,
        conns_start: 4,
        conns_end: 5,
    };
    let r = BTreeMap::from([(7, moving)]);
    assert!(drift(&r, &mut seen).is_empty());
    assert!(drift(&r, &mut seen).is_empty());
}

/// The request frame is the `repr(C)` layout of `GcRequest`, 56 bytes.
#[test]
fn the_request_frame_is_the_abi_layout() {
    let [f, _] = flow(40000, 20000, 1, 0, 0, 0);
    let req = GcRequest {
        op: GC_OP_ADJUST,
        flags: 0,
        backend_id: 9,
        delta: -2,
        key: f.0,
    };
    let b = request_bytes(&req);
    // SAFETY: `GcRequest` is `repr(C)` with explicit padding; reading its bytes is sound.
    let raw: [u8; 56] = unsafe { std::mem::transmute(req) };
    assert_eq!(b, raw);
    assert_eq!(b[12..16], (-2i32).to_ne_bytes());
}

/// Two fake tables walked in key order, a cursor being an index; `pgrouter_gc` reaps by
/// removing both entries and giving the slot back, unless told to keep a key.
#[derive(Default)]
struct Fake {
    hs: BTreeMap<FlowKey, Flow>,
    ct: BTreeMap<FlowKey, Flow>,
    conns: BTreeMap<u32, u32>,
    keep: Vec<FlowKey>,
    /// Walks of the conntrack table that fail before one succeeds.
    failing_walks: u32,
    walks: usize,
    runs: Vec<GcRequest>,
}

impl Fake {
    fn table(&self, t: Table) -> &BTreeMap<FlowKey, Flow> {
        match t {
            Table::Handshake => &self.hs,
            Table::Conntrack => &self.ct,
        }
    }
}

impl Tables for Fake {
    fn walk(
        &mut self,
        t: Table,
        cursor: &mut Cursor,
        max: usize,
    ) -> io::Result<Batch<FlowKey, Flow>> {
        self.walks += 1;
        if t == Table::Conntrack && self.failing_walks > 0 {
            self.failing_walks -= 1;
            return Err(io::Error::from_raw_os_error(libc::EINVAL));
        }
        let from = cursor.unwrap_or(0) as usize;
        let entries: Vec<_> = self
            .table(t)
            .iter()
            .skip(from)
            .take(max)
            .map(|(k, v)| (*k, *v))
            .collect();
        let end = from + entries.len() >= self.table(t).len();
        *cursor = if end { None } else { Some((from + max) as u32) };
        Ok(Batch { entries, end })
    }
    fn lookup(&self, t: Table, key: &FlowKey) -> Option<Flow> {
        self.table(t).get(key).copied()
    }
    fn delete_handshake(&mut self, keys: &[FlowKey]) -> io::Result<usize> {
        Ok(keys.iter().filter(|k| self.hs.remove(k).is_some()).count())
    }
    fn run_gc(&mut self, req: &GcRequest) -> io::Result<u32> {
        self.runs.push(*req);
        if req.op == GC_OP_ADJUST {
            let c = self.conns.entry(req.backend_id).or_default();
            *c = c.saturating_add_signed(req.delta);
            return Ok(1);
        }
        if self.keep.contains(&req.key) {
            return Ok(2);
        }
        let Some(f) = self.ct.remove(&req.key) else {
            return Ok(2);
        };
        self.ct.remove(&f.peer_key());
        if f.flags & (FLOW_F_REPLY | FLOW_F_CLOSED) == 0 {
            let c = self.conns.entry(f.backend_id).or_default();
            *c = c.saturating_sub(1);
        }
        Ok(1)
    }
    fn conns(&self, id: u32) -> u32 {
        self.conns.get(&id).copied().unwrap_or(0)
    }
    fn handshake_capacity(&self) -> u64 {
        16_384
    }
}

fn applied(ids: &[(u32, u8)]) -> Applied {
    let mut a = Applied::default();
    for (id, state) in ids {
        a.backends.insert(
            *id,
            Backend {
                state: *state,
                ..Backend::default()
            },
        );
        a.backend_ids.insert(
            BackendKey::new(ListenerKey::new("pg", "PG1"), format!("pg{id}")),
            *id,
        );
    }
    a
}

/// Work per tick is bounded: 10 established flows (20 entries) walked 8 at a time take three
/// ticks, and only the third ends the cycle and publishes its report.
#[test]
fn work_per_tick_is_bounded_and_resumes_from_the_cursor() {
    let mut fake = Fake::default();
    for i in 0..10 {
        fake.ct.extend(flow(40000 + i, 20000 + i, 1, NOW, NOW, 0));
    }
    fake.conns.insert(1, 10);
    let a = applied(&[(1, BACKEND_ACTIVE)]);
    let mut gc = Gc::new(8);
    assert!(!gc.tick(&mut fake, &a, &timeouts(), NOW));
    assert!(!gc.tick(&mut fake, &a, &timeouts(), NOW));
    assert!(gc.last.is_none(), "no report before a full cycle");
    assert!(gc.tick(&mut fake, &a, &timeouts(), NOW + S));
    let r = gc.last.as_ref().expect("report");
    assert_eq!(r.tally.walked, 20);
    assert_eq!(r.tally.open[&1], 10);
    assert_eq!(r.duration_ns, S);
    assert_eq!(gc.counters.entries_walked, 20);
    assert!(fake.runs.is_empty(), "nothing expired, no drift");
}

/// A full cycle at the controller's start reaps what expired while it was away, counts the
/// expiries by state and leaves only live flows in the report.
#[test]
fn a_full_cycle_reaps_expired_flows_and_reports_the_live_ones() {
    let mut fake = Fake::default();
    fake.ct
        .extend(flow(40001, 20001, 1, NOW - 200 * S, NOW - 200 * S, 0));
    fake.ct.extend(flow(
        40002,
        20002,
        1,
        NOW - 11 * S,
        NOW - 11 * S,
        FLOW_F_CLOSED,
    ));
    fake.ct.extend(flow(40003, 20003, 1, NOW, NOW, 0));
    fake.hs
        .extend(flow(40004, 20004, 1, NOW - 60 * S, NOW - 60 * S, 0));
    fake.conns.insert(1, 2);
    let a = applied(&[(1, BACKEND_ACTIVE)]);
    let mut gc = Gc::default();
    assert!(gc.tick(&mut fake, &a, &timeouts(), NOW));
    assert_eq!(fake.ct.len(), 2, "only the live flow is left");
    assert!(fake.hs.is_empty());
    assert_eq!(fake.conns[&1], 1);
    assert_eq!(gc.counters.expiries["established"], 1);
    assert_eq!(gc.counters.expiries["closed"], 1);
    assert_eq!(gc.counters.expiries["handshake"], 1);
    assert_eq!(gc.counters.reaped, 2);
    let r = gc.last.as_ref().expect("report");
    assert_eq!(r.tally.open[&1], 1);
    assert_eq!(r.handshake_capacity, 16_384);
}

/// A flow the kernel refuses to reap (a packet came, by its clock) stays in the tally as open.
#[test]
fn a_reap_the_kernel_refuses_keeps_the_flow_counted() {
    let mut fake = Fake::default();
    let [f, r] = flow(40001, 20001, 1, NOW - 200 * S, NOW - 200 * S, 0);
    fake.ct.extend([f, r]);
    fake.keep.push(f.0);
    fake.conns.insert(1, 1);
    let a = applied(&[(1, BACKEND_ACTIVE)]);
    let mut gc = Gc::default();
    assert!(gc.tick(&mut fake, &a, &timeouts(), NOW));
    assert_eq!(gc.counters.kept, 1);
    assert_eq!(gc.counters.reaped, 0);
    assert_eq!(gc.last.as_ref().map(|r| r.tally.open[&1]), Some(1));
}

/// A slot leaked by an earlier bug (count 3, one flow) is corrected after two full cycles,
/// through `GC_OP_ADJUST`, and counted.
#[test]
fn a_leaked_slot_comes_back_after_two_full_cycles() {
    let mut fake = Fake::default();
    fake.ct.extend(flow(40001, 20001, 1, NOW, NOW, 0));
    fake.conns.insert(1, 3);
    let a = applied(&[(1, BACKEND_ACTIVE)]);
    let mut gc = Gc::default();
    let done = gc.run_cycles(&mut fake, &a, &timeouts(), &|| NOW, START_CYCLES, 10);
    assert_eq!(done, 2);
    assert_eq!(fake.conns[&1], 1);
    assert_eq!(gc.counters.drift_corrections, 1);
    assert_eq!(
        fake.runs.last().map(|r| (r.op, r.backend_id, r.delta)),
        Some((GC_OP_ADJUST, 1, -2))
    );
}

/// A failed walk is retried from the same place on the next tick and counted; no report is
/// published from a cycle that did not see the whole table.
#[test]
fn a_failed_walk_is_retried_and_never_yields_a_partial_report() {
    let mut fake = Fake {
        failing_walks: 2,
        ..Fake::default()
    };
    fake.ct.extend(flow(40001, 20001, 1, NOW, NOW, 0));
    fake.conns.insert(1, 1);
    let a = applied(&[(1, BACKEND_ACTIVE)]);
    let mut gc = Gc::default();
    assert!(!gc.tick(&mut fake, &a, &timeouts(), NOW));
    assert!(!gc.tick(&mut fake, &a, &timeouts(), NOW));
    assert!(gc.last.is_none());
    assert_eq!(gc.counters.errors, 2);
    assert!(gc.tick(&mut fake, &a, &timeouts(), NOW));
    assert_eq!(gc.last.as_ref().map(|r| r.tally.open[&1]), Some(1));
}
