//! The executor: walks both tables a bounded number of entries per tick through [`Tables`]
//! (the kernel maps and `pgrouter_gc`, or a fake in tests) and carries out the core's actions.
use std::{
    collections::BTreeMap,
    io,
    os::fd::{AsFd as _, BorrowedFd},
};

use aya::maps::IterableMap as _;
use router_ebpf::{
    FLOW_STATE_HANDSHAKE, FLOW_STATE_NAMES, Flow, FlowKey, GC_OP_ADJUST, GcRequest, Timeouts,
};
use serde::Serialize;
use tracing::{info, warn};

use super::*;
use crate::dataplane::{
    batch::{self, Batch, Cursor},
    plan::Applied,
    writer::Maps,
};

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
    let (addr_words, _) = b[16..48].as_chunks_mut::<4>();
    for (slot, w) in addr_words.iter_mut().zip(k.saddr.iter().chain(&k.daddr)) {
        *slot = w.to_ne_bytes();
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

/// The name of a flow state's expiry counter: `FLOW_STATE_NAMES` by the state's two bits.
fn state_name(state: u8) -> Option<&'static str> {
    FLOW_STATE_NAMES.get(usize::from(state & 3)).copied()
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
            let Some(walk) = self.walks.get(i).copied() else {
                continue;
            };
            if walk.done {
                continue;
            }
            let mut cursor = walk.cursor;
            let b = match tables.walk(table, &mut cursor, self.per_tick) {
                Ok(b) => b,
                Err(e) => {
                    // Retried from the same cursor next tick; the other table goes on.
                    self.error(&format!("walking {table:?}"), &e);
                    continue;
                }
            };
            if let Some(walk) = self.walks.get_mut(i) {
                *walk = Walk {
                    cursor,
                    done: b.end,
                };
            }
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
                        } else if let Some(name) = state_name(r.state) {
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
                    if let Some(name) = state_name(FLOW_STATE_HANDSHAKE) {
                        *self.counters.expiries.entry(name.into()).or_default() += hs_flows;
                    }
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
