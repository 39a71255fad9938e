//! The flow garbage collector: gives every flow a bounded life (docs/maps.md, *Life of a flow*).
//!
//! A pure core judges batches of table entries (`classify`) and the recount at the end of a
//! full cycle (`drift`), returning [`Action`]s; the executor ([`Gc::tick`]) walks both tables a
//! bounded number of entries per tick through a [`Tables`] implementation (the kernel maps, or
//! a fake in tests) and carries the actions out:
//! - an expired handshake entry is deleted from userspace (it holds no maxconn slot);
//! - an expired or orphaned conntrack flow is reaped by running `pgrouter_gc` under
//!   `BPF_PROG_TEST_RUN`, so its slot comes back through the same atomic close as on the packet
//!   path, after the kernel re-checks expiry with its own clock;
//! - a drift between the open flows counted in PGR_CONNTRACK and PGR_BACKEND_CONNS, seen with
//!   the same value in two consecutive full cycles, is corrected with `GC_OP_ADJUST`.
//!
//! A full cycle ends when the batch walks of both tables have reached their end; its tally
//! (flows by state per backend, SNAT ports per service, table usage) is what `pgrouter status`
//! and the metrics show, so neither walks a table itself.
use std::collections::{BTreeMap, BTreeSet, HashMap};

use router_ebpf::{
    BACKEND_SHUTDOWN, BACKEND_UNUSED, FLOW_F_CLOSED, FLOW_F_REPLY, FLOW_STATE_CLOSED,
    FLOW_STATE_HANDSHAKE, Flow, FlowKey, GC_OP_REAP, GcRequest, Timeouts, flow_state,
    state_timeout,
};
use serde::Serialize;

mod executor;

pub use executor::{CycleReport, Gc, GcCounters, Kernel, Tables, request_bytes};

/// Entries walked per table per tick (one tick a second). Bounded work: one batch syscall
/// of this size took ≤ 35 ms on the shared 2-core test machine (a 1M-entry hash walked in
/// 0.46 s, debug build), so a tick costs a few percent of one core and delays the event loop
/// by tens of ms at most; a full cycle of a million-entry table takes ~16 s, far below the
/// established timeout and no limit on SNAT ports (the kernel takes closed and expired
/// flows' ports over at once, without waiting for the GC).
pub const ENTRIES_PER_TICK: usize = 65_536;

/// Userspace reads CLOCK_MONOTONIC, the kernel `bpf_ktime_get_coarse_ns`, which lags by up
/// to a jiffy (10 ms at HZ=100). A handshake entry is deleted from userspace without the
/// kernel's re-check, so it must be expired by the kernel's clock too: judge it this much
/// later. (Reaps are re-checked by the kernel and need no slack.)
const CLOCK_SLACK_NS: u64 = 50_000_000;

use router_ebpf::gc_verdict::DONE as VERDICT_DONE;

/// How many full cycles the controller runs back to back at start, so the recount (which
/// needs the same drift twice) settles before the first tick.
pub const START_CYCLES: u32 = 2;

/// The two flow tables.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Table {
    Handshake,
    Conntrack,
}

/// One flow to hand to `pgrouter_gc`, with what the tally needs if the kernel keeps it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Reap {
    /// The forward entry's key, or an orphaned reply entry's.
    pub key: FlowKey,
    pub backend_id: u32,
    pub service_id: u32,
    /// `FLOW_STATE_*` of the flow (closed for an orphan).
    pub state: u8,
    /// A reply entry whose forward entry is gone.
    pub orphan: bool,
    /// A forward entry without `FLOW_F_CLOSED`: it holds a slot until reaped.
    pub open: bool,
}

impl Reap {
    /// The request frame. Never forced, orphans included: between our judgement and the
    /// run, the kernel may have given the entry's port to a new flow, and only its own
    /// re-check (expiry by its clock, the claim bit, whether a forward entry now points at
    /// the key) can tell.
    pub fn request(&self) -> GcRequest {
        GcRequest {
            op: GC_OP_REAP,
            flags: 0,
            backend_id: self.backend_id,
            delta: 0,
            key: self.key,
        }
    }
}

/// What the collector does, decided by the pure core.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// Delete an expired handshake entry (`forward`: the client → VIP one, counted as one
    /// expired flow).
    DeleteHandshake { key: FlowKey, forward: bool },
    /// Reap an expired (or orphaned) established-table flow through `pgrouter_gc`.
    Reap(Reap),
    /// Add `delta` to a backend's open-flow count (`GC_OP_ADJUST`).
    Adjust { backend_id: u32, delta: i32 },
}

/// What one full cycle found, after its deletions and reaps.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Tally {
    /// Backend id → flows by `FLOW_STATE_*` (forward entries, live ones).
    pub flows: BTreeMap<u32, [u64; 4]>,
    /// Backend id → forward entries in PGR_CONNTRACK without `FLOW_F_CLOSED`: what
    /// PGR_BACKEND_CONNS should hold.
    pub open: BTreeMap<u32, u64>,
    /// Service id → SNAT ports held by flows that are not closed (half-open or open), in
    /// either table: the ports a new flow cannot take. A closed flow's port is reusable at
    /// once (the kernel takes it over), so it is not counted. Counted at forward entries,
    /// whose flags carry the close state, so no lookup is needed.
    pub snat_ports: BTreeMap<u32, u64>,
    pub handshake_entries: u64,
    pub conntrack_entries: u64,
    /// Entries read from both tables.
    pub walked: u64,
    /// Backend ids named by any entry read, live or not, either direction: a retired id
    /// none names in a whole cycle can be given to a new backend (`plan::free_retired`).
    pub referenced: BTreeSet<u32>,
}

impl Tally {
    /// One more flow of `backend_id` in `state` (its two bits index the per-state counts).
    fn count(&mut self, backend_id: u32, state: u8) {
        let counts = self.flows.entry(backend_id).or_default();
        if let Some(n) = counts.get_mut(usize::from(state & 3)) {
            *n += 1;
        }
    }

    fn live(&mut self, f: &Flow, state: u8, table: Table) {
        match table {
            Table::Handshake => self.handshake_entries += 1,
            Table::Conntrack => self.conntrack_entries += 1,
        }
        if f.flags & FLOW_F_REPLY != 0 {
            return;
        }
        self.count(f.backend_id, state);
        if f.flags & FLOW_F_CLOSED == 0 {
            *self.snat_ports.entry(f.service_id).or_default() += 1;
            if table == Table::Conntrack {
                *self.open.entry(f.backend_id).or_default() += 1;
            }
        }
    }

    /// The kernel kept a flow the core judged expired (a packet came meanwhile, or the
    /// coarse clock had not got there yet): it is still live.
    pub fn kept(&mut self, r: &Reap) {
        self.conntrack_entries += 1;
        if r.orphan {
            return;
        }
        self.count(r.backend_id, r.state);
        if r.open {
            *self.open.entry(r.backend_id).or_default() += 1;
            *self.snat_ports.entry(r.service_id).or_default() += 1;
        }
    }
}

fn expired(now_ns: u64, last_seen: u64, timeout_ns: u64) -> bool {
    now_ns.saturating_sub(last_seen) > timeout_ns
}

/// Judges one batch of `table` at `now_ns` (CLOCK_MONOTONIC): the actions to take, and the
/// live entries added to `tally`. A flow's other entry is taken from the batch when it is
/// there, else from `lookup`, and only when the entry at hand looks expired by itself (an
/// entry refreshed recently keeps the flow alive whatever the other says), so a cycle costs
/// one lookup per stale entry, not per entry.
pub fn classify(
    now_ns: u64,
    t: &Timeouts,
    table: Table,
    batch: &[(FlowKey, Flow)],
    lookup: &mut dyn FnMut(Table, &FlowKey) -> Option<Flow>,
    tally: &mut Tally,
) -> Vec<Action> {
    let in_batch: HashMap<FlowKey, Flow> = batch.iter().copied().collect();
    // The flow's other entry, if it is still this flow's (a port taken over belongs to
    // another flow now).
    let mut other = |key: &FlowKey, f: &Flow| -> Option<Flow> {
        let pk = f.peer_key();
        in_batch
            .get(&pk)
            .copied()
            .or_else(|| lookup(table, &pk))
            .filter(|p| p.peer_key() == *key)
    };
    let mut out = Vec::new();
    let mut deleted: BTreeSet<FlowKey> = BTreeSet::new();
    for (key, f) in batch {
        tally.walked += 1;
        tally.referenced.insert(f.backend_id);
        let reply = f.flags & FLOW_F_REPLY != 0;
        match table {
            Table::Handshake => {
                if deleted.contains(key) {
                    continue;
                }
                let timeout = state_timeout(t, FLOW_STATE_HANDSHAKE) + CLOCK_SLACK_NS;
                if !expired(now_ns, f.last_seen, timeout) {
                    tally.live(f, FLOW_STATE_HANDSHAKE, table);
                    continue;
                }
                out.push(Action::DeleteHandshake {
                    key: *key,
                    forward: !reply,
                });
                deleted.insert(*key);
                // Both entries of the flow at once, so its port comes back this cycle. One in
                // this batch is judged on its own turn.
                let pk = f.peer_key();
                if !in_batch.contains_key(&pk)
                    && let Some(p) = other(key, f)
                    && expired(now_ns, p.last_seen, timeout)
                {
                    out.push(Action::DeleteHandshake {
                        key: pk,
                        forward: reply,
                    });
                    deleted.insert(pk);
                }
            }
            Table::Conntrack if reply => {
                // A reply entry refreshed within the closed timeout is no orphan worth a
                // lookup: an orphan that young may be a flow being inserted right now.
                let grace = state_timeout(t, FLOW_STATE_CLOSED);
                if expired(now_ns, f.last_seen, grace) && other(key, f).is_none() {
                    out.push(Action::Reap(Reap {
                        key: *key,
                        backend_id: f.backend_id,
                        service_id: f.service_id,
                        state: FLOW_STATE_CLOSED,
                        orphan: true,
                        open: false,
                    }));
                    continue;
                }
                tally.live(f, FLOW_STATE_CLOSED, table);
            }
            Table::Conntrack => {
                let state = flow_state(f.flags);
                let timeout = state_timeout(t, state);
                let gone = expired(now_ns, f.last_seen, timeout)
                    && other(key, f).is_none_or(|r| expired(now_ns, r.last_seen, timeout));
                if gone {
                    out.push(Action::Reap(Reap {
                        key: *key,
                        backend_id: f.backend_id,
                        service_id: f.service_id,
                        state,
                        orphan: false,
                        open: f.flags & FLOW_F_CLOSED == 0,
                    }));
                } else {
                    tally.live(f, state, table);
                }
            }
        }
    }
    out
}

/// One backend's counts at the end of a full cycle.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Recount {
    /// `BACKEND_*` state.
    pub state: u8,
    /// Open flows counted in the table this cycle.
    pub counted: u64,
    /// PGR_BACKEND_CONNS when the cycle started and when it ended.
    pub conns_start: u32,
    pub conns_end: u32,
}

/// The recount: a backend whose table count and slot count differ by the same non-zero
/// amount at the end of two consecutive full cycles gets an [`Action::Adjust`]. Skipped (and
/// forgotten) while the count moved during the cycle (churn makes the comparison a race),
/// and for shut-down backends, whose count belongs to userspace. `seen` carries the last
/// cycle's drifts.
pub fn drift(recounts: &BTreeMap<u32, Recount>, seen: &mut BTreeMap<u32, i64>) -> Vec<Action> {
    seen.retain(|id, _| recounts.contains_key(id));
    let mut out = Vec::new();
    for (id, r) in recounts {
        let comparable = r.state != BACKEND_SHUTDOWN
            && r.state != BACKEND_UNUSED
            && r.conns_start == r.conns_end;
        let d = r.counted as i64 - i64::from(r.conns_end);
        if !comparable || d == 0 {
            seen.remove(id);
            continue;
        }
        if seen.get(id) == Some(&d) {
            seen.remove(id);
            out.push(Action::Adjust {
                backend_id: *id,
                delta: d.clamp(i64::from(i32::MIN), i64::from(i32::MAX)) as i32,
            });
        } else {
            seen.insert(*id, d);
        }
    }
    out
}

#[cfg(test)]
mod tests;
