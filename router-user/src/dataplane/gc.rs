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
use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    io,
    os::fd::{AsFd as _, BorrowedFd},
};

use aya::maps::IterableMap as _;
use router_ebpf::{
    BACKEND_SHUTDOWN, BACKEND_UNUSED, FLOW_F_CLOSED, FLOW_F_REPLY, FLOW_STATE_CLOSED,
    FLOW_STATE_HANDSHAKE, FLOW_STATE_NAMES, Flow, FlowKey, GC_OP_ADJUST, GC_OP_REAP, GcRequest,
    Timeouts, flow_state, state_timeout,
};
use serde::Serialize;
use tracing::{info, warn};

use super::{
    batch::{self, Batch, Cursor},
    plan::Applied,
    writer::Maps,
};

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

/// `XDP_DROP`: `pgrouter_gc` did what was asked.
const VERDICT_DONE: u32 = 1;

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
}

impl Tally {
    fn live(&mut self, f: &Flow, state: u8, table: Table) {
        match table {
            Table::Handshake => self.handshake_entries += 1,
            Table::Conntrack => self.conntrack_entries += 1,
        }
        if f.flags & FLOW_F_REPLY != 0 {
            return;
        }
        self.flows.entry(f.backend_id).or_default()[usize::from(state & 3)] += 1;
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
        self.flows.entry(r.backend_id).or_default()[usize::from(r.state & 3)] += 1;
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

/// Where the executor reads and acts: the kernel maps and the GC program, or a fake.
pub trait Tables {
    /// The next batch of at most about `max` entries from `cursor` (see
    /// [`batch::lookup_batch`]).
    fn walk(
        &mut self,
        table: Table,
        cursor: &mut Cursor,
        max: usize,
    ) -> io::Result<Batch<FlowKey, Flow>>;
    fn lookup(&self, table: Table, key: &FlowKey) -> Option<Flow>;
    /// Deletes handshake entries (gone ones skipped); returns how many were deleted.
    fn delete_handshake(&mut self, keys: &[FlowKey]) -> io::Result<usize>;
    /// Runs `pgrouter_gc` on `req`; returns its verdict.
    fn run_gc(&mut self, req: &GcRequest) -> io::Result<u32>;
    /// PGR_BACKEND_CONNS of a backend.
    fn conns(&self, backend_id: u32) -> u32;
    /// Capacity of the handshake table (entries).
    fn handshake_capacity(&self) -> u64;
}

/// The kernel: the pinned maps and the loaded, never-attached `pgrouter_gc`.
pub struct Kernel<'a> {
    pub maps: &'a mut Maps,
    /// `None` when the object has no GC program: walks and tallies still run, reaps fail.
    pub prog: Option<BorrowedFd<'a>>,
}

impl Tables for Kernel<'_> {
    fn walk(
        &mut self,
        table: Table,
        cursor: &mut Cursor,
        max: usize,
    ) -> io::Result<Batch<FlowKey, Flow>> {
        let map = match table {
            Table::Handshake => &self.maps.handshake,
            Table::Conntrack => &self.maps.conntrack,
        };
        batch::lookup_batch(map.map().fd().as_fd(), cursor, max)
    }

    fn lookup(&self, table: Table, key: &FlowKey) -> Option<Flow> {
        match table {
            Table::Handshake => self.maps.handshake.get(key, 0).ok(),
            Table::Conntrack => self.maps.conntrack.get(key, 0).ok(),
        }
    }

    fn delete_handshake(&mut self, keys: &[FlowKey]) -> io::Result<usize> {
        batch::delete_batch(self.maps.handshake.map().fd().as_fd(), keys)
    }

    fn run_gc(&mut self, req: &GcRequest) -> io::Result<u32> {
        let prog = self.prog.ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::NotFound,
                format!("program {} not loaded", router_ebpf::GC_PROGRAM_NAME),
            )
        })?;
        let bytes = request_bytes(req);
        batch::test_run(prog, &bytes)
    }

    fn conns(&self, backend_id: u32) -> u32 {
        self.maps.active_conns(backend_id)
    }

    fn handshake_capacity(&self) -> u64 {
        self.maps
            .handshake
            .map()
            .info()
            .map(|i| u64::from(i.max_entries()))
            .unwrap_or(0)
    }
}

/// A [`GcRequest`] as the 56 bytes `pgrouter_gc` reads (host order, the layout of the type).
pub fn request_bytes(r: &GcRequest) -> [u8; size_of::<GcRequest>()] {
    let mut b = [0u8; size_of::<GcRequest>()];
    b[0..4].copy_from_slice(&r.op.to_ne_bytes());
    b[4..8].copy_from_slice(&r.flags.to_ne_bytes());
    b[8..12].copy_from_slice(&r.backend_id.to_ne_bytes());
    b[12..16].copy_from_slice(&r.delta.to_ne_bytes());
    let k = &r.key;
    for (i, w) in k.saddr.iter().chain(k.daddr.iter()).enumerate() {
        b[16 + 4 * i..20 + 4 * i].copy_from_slice(&w.to_ne_bytes());
    }
    b[48..50].copy_from_slice(&k.sport.to_ne_bytes());
    b[50..52].copy_from_slice(&k.dport.to_ne_bytes());
    b[52] = k.proto;
    b[53] = k.family;
    b
}

/// Cumulative figures since the controller started: the status contract's type.
pub use router_ebpf::status::GcCounters;

/// The latest full cycle, as status and metrics show it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct CycleReport {
    pub tally: Tally,
    /// CLOCK_MONOTONIC ns when the cycle ended, and how long it took (it spans ticks on a big
    /// table).
    pub finished_ns: u64,
    pub duration_ns: u64,
    pub handshake_capacity: u64,
}

#[derive(Clone, Copy, Debug, Default)]
struct Walk {
    cursor: Cursor,
    done: bool,
}

/// The executor: bounded work per tick, resuming where the last tick stopped.
#[derive(Debug)]
pub struct Gc {
    per_tick: usize,
    walks: [Walk; 2],
    tally: Tally,
    /// Set when the current cycle started: its start time and PGR_BACKEND_CONNS then.
    started: Option<(u64, BTreeMap<u32, u32>)>,
    drifts: BTreeMap<u32, i64>,
    last_error: Option<String>,
    pub counters: GcCounters,
    pub last: Option<CycleReport>,
}

impl Default for Gc {
    fn default() -> Self {
        Self::new(ENTRIES_PER_TICK)
    }
}

/// A backend's (listener, node) names for logs.
fn backend_name(applied: &Applied, id: u32) -> (String, String) {
    applied
        .backend_ids
        .iter()
        .find(|(_, v)| **v == id)
        .map(|(k, _)| (k.listener.to_string(), k.node.clone()))
        .unwrap_or_else(|| ("?".into(), format!("backend {id}")))
}

impl Gc {
    pub fn new(per_tick: usize) -> Self {
        let mut counters = GcCounters::default();
        for n in FLOW_STATE_NAMES {
            counters.expiries.insert(n.to_string(), 0);
        }
        Self {
            per_tick: per_tick.max(1),
            walks: [Walk::default(); 2],
            tally: Tally::default(),
            started: None,
            drifts: BTreeMap::new(),
            last_error: None,
            counters,
            last: None,
        }
    }

    fn error(&mut self, what: &str, e: &io::Error) {
        self.counters.errors += 1;
        let msg = format!("{what}: {e}");
        // Once per distinct failure, not once per tick.
        if self.last_error.as_deref() != Some(&msg) {
            warn!("flow gc: {msg}");
            self.last_error = Some(msg);
        }
    }

    /// One tick: up to `per_tick` entries of each table, judged and acted on; at the end of
    /// a full cycle, the recount and a new report. Returns whether a full cycle ended.
    pub fn tick(
        &mut self,
        tables: &mut dyn Tables,
        applied: &Applied,
        t: &Timeouts,
        now_ns: u64,
    ) -> bool {
        if self.started.is_none() {
            let conns = applied
                .backends
                .keys()
                .map(|id| (*id, tables.conns(*id)))
                .collect();
            self.started = Some((now_ns, conns));
        }
        for (i, table) in [Table::Handshake, Table::Conntrack].into_iter().enumerate() {
            if self.walks[i].done {
                continue;
            }
            let mut cursor = self.walks[i].cursor;
            let b = match tables.walk(table, &mut cursor, self.per_tick) {
                Ok(b) => b,
                Err(e) => {
                    // Retried from the same cursor next tick; the other table goes on.
                    self.error(&format!("walking {table:?}"), &e);
                    continue;
                }
            };
            self.walks[i] = Walk {
                cursor,
                done: b.end,
            };
            self.counters.entries_walked += b.entries.len() as u64;
            let actions = {
                let tbl: &dyn Tables = tables;
                classify(
                    now_ns,
                    t,
                    table,
                    &b.entries,
                    &mut |tb, k| tbl.lookup(tb, k),
                    &mut self.tally,
                )
            };
            self.execute(tables, applied, &actions);
        }
        if !self.walks.iter().all(|w| w.done) {
            return false;
        }
        self.finish(tables, applied, now_ns);
        true
    }

    /// Ticks until `cycles` full cycles ended, or `max_ticks` ticks: the prompt recount at
    /// start.
    pub fn run_cycles(
        &mut self,
        tables: &mut dyn Tables,
        applied: &Applied,
        t: &Timeouts,
        clock: &dyn Fn() -> u64,
        cycles: u32,
        max_ticks: u32,
    ) -> u32 {
        let mut done = 0;
        for _ in 0..max_ticks {
            if done == cycles {
                break;
            }
            if self.tick(tables, applied, t, clock()) {
                done += 1;
            }
        }
        done
    }

    fn execute(&mut self, tables: &mut dyn Tables, applied: &Applied, actions: &[Action]) {
        let mut hs: Vec<FlowKey> = Vec::new();
        let mut hs_flows = 0u64;
        for a in actions {
            match a {
                Action::DeleteHandshake { key, forward } => {
                    hs.push(*key);
                    hs_flows += u64::from(*forward);
                }
                Action::Reap(r) => match tables.run_gc(&r.request()) {
                    Ok(VERDICT_DONE) => {
                        self.counters.reaped += 1;
                        if r.orphan {
                            self.counters.orphans += 1;
                        } else {
                            let name = FLOW_STATE_NAMES[usize::from(r.state & 3)];
                            *self.counters.expiries.entry(name.into()).or_default() += 1;
                        }
                    }
                    Ok(_) => {
                        self.counters.kept += 1;
                        self.tally.kept(r);
                    }
                    Err(e) => {
                        self.error("running pgrouter_gc", &e);
                        self.tally.kept(r);
                    }
                },
                Action::Adjust { backend_id, delta } => {
                    let (listener, node) = backend_name(applied, *backend_id);
                    let req = GcRequest {
                        op: GC_OP_ADJUST,
                        flags: 0,
                        backend_id: *backend_id,
                        delta: *delta,
                        key: FlowKey::default(),
                    };
                    match tables.run_gc(&req) {
                        Ok(VERDICT_DONE) => {
                            self.counters.drift_corrections += 1;
                            warn!(
                                %listener, %node, backend = backend_id, delta,
                                "open-flow count drifted from the flow table in two full \
                                 cycles in a row; corrected"
                            );
                        }
                        Ok(v) => warn!(
                            %listener, %node, delta, verdict = v,
                            "pgrouter_gc refused a drift correction"
                        ),
                        Err(e) => self.error("correcting a slot count", &e),
                    }
                }
            }
        }
        if !hs.is_empty() {
            match tables.delete_handshake(&hs) {
                Ok(_) => {
                    *self
                        .counters
                        .expiries
                        .entry(FLOW_STATE_NAMES[usize::from(FLOW_STATE_HANDSHAKE)].into())
                        .or_default() += hs_flows;
                }
                Err(e) => self.error("deleting expired handshakes", &e),
            }
        }
    }

    fn finish(&mut self, tables: &mut dyn Tables, applied: &Applied, now_ns: u64) {
        let (start_ns, conns_start) = self.started.take().unwrap_or_default();
        let recounts: BTreeMap<u32, Recount> = applied
            .backends
            .iter()
            .map(|(id, b)| {
                let r = Recount {
                    state: b.state,
                    counted: self.tally.open.get(id).copied().unwrap_or(0),
                    conns_start: conns_start.get(id).copied().unwrap_or(u32::MAX),
                    conns_end: tables.conns(*id),
                };
                (*id, r)
            })
            .collect();
        let adjust = drift(&recounts, &mut self.drifts);
        self.execute(tables, applied, &adjust);
        self.counters.full_cycles += 1;
        let tally = std::mem::take(&mut self.tally);
        if self.last.is_none() {
            info!(
                entries = tally.walked,
                established = tally.conntrack_entries,
                handshake = tally.handshake_entries,
                "flow gc: first full cycle"
            );
        }
        self.last = Some(CycleReport {
            tally,
            finished_ns: now_ns,
            duration_ns: now_ns.saturating_sub(start_ns),
            handshake_capacity: tables.handshake_capacity(),
        });
        self.walks = [Walk::default(); 2];
    }
}

#[cfg(test)]
mod tests;
