//! Flow-state sync between the edge hosts of one VRRP group, so a session survives the loss
//! of the host it runs through: the data path reports established and closed flows
//! (`PGR_FLOW_EVENTS`), this module sends them to every peer (and a full sync when a peer
//! connects, and a refresh of the flows active since the last pass every `refresh`), and
//! installs the peers' flows into this host's conntrack with the same rewrite (node, SNAT
//! address and port), through `pgrouter_gc` so the `maxconn` slot is taken atomically.
//!
//! ```text
//!  XDP ──ring──▶ events ─▶ records ─▶ peer::sender ══TCP+HMAC══▶ peer's listener ─▶ install
//!  conntrack walk (full sync, refresh) ─┘                                       (pgrouter_gc)
//! ```
//!
//! Modules: `wire` (messages, pure), `auth` (keys, per-connection key, tags), `records`
//! (entries ↔ records, pure), `peer` (sockets). Safety: a record names a VIP, listener and
//! node this host must have, or it is refused; a peer can never remove a flow that is live
//! here (the kernel checks); SNAT ports are split per host (`config::sync::Sync::snat_share`).
pub mod auth;
mod peer;
pub mod records;
pub mod wire;

use std::{
    collections::HashSet,
    net::SocketAddr,
    sync::{
        Arc, RwLock,
        atomic::{AtomicU64, Ordering},
    },
    time::Instant,
};

use anyhow::Context as _;
use aya::maps::{Array, IterableMap as _, MapData, PerCpuArray, RingBuf};
use router_ebpf::{
    FLOW_EVENT_CLOSED, FLOW_EVENT_ESTABLISHED, FLOW_F_CLOSED, FLOW_F_REPLY, FLOW_F_SYNCED, Flow,
    FlowEvent, FlowKey, SYNC_F_EVENTS, SyncRequest, SyncState, SyncStats, gc_verdict,
};
use tokio::{io::unix::AsyncFd, net::TcpListener, sync::mpsc};
use tracing::{info, warn};

use crate::{
    config::{self, PortRange},
    dataplane::{Applied, Maps, batch},
    status::{PeerStatus, SyncStatus},
};
use auth::Keys;
use peer::{Inbound, Out, PeerShared};
use records::Local;
use wire::{Message, RECORDS_PER_FRAME};

/// Entries read per batch when walking the conntrack table (full sync, refresh, sweep).
const WALK_BATCH: usize = 4096;

struct Peer {
    addr: SocketAddr,
    tx: mpsc::UnboundedSender<Out>,
    shared: Arc<PeerShared>,
    /// The inbound connection whose full sync counts.
    conn: u64,
    /// During its full sync: the reply keys it sent, to remove its flows that were not among
    /// them at the end. Freed at the end or when the connection drops.
    full: Option<HashSet<FlowKey>>,
    ready: bool,
    last_full: Option<Instant>,
}

/// The sync channel's receivers, owned by the event loop apart from [`Sync`] so it can wait
/// on them while handling other events with [`Sync`].
pub struct SyncIo {
    rx: mpsc::Receiver<Inbound>,
    ring: AsyncFd<RingBuf<MapData>>,
}

/// What [`next`] hands the event loop.
pub enum SyncEvent {
    Flows(Vec<FlowEvent>),
    Inbound(Inbound),
}

/// The next sync event; never resolves without sync.
pub async fn next(io: &mut Option<SyncIo>) -> SyncEvent {
    let Some(io) = io.as_mut() else {
        return std::future::pending().await;
    };
    tokio::select! {
        Some(m) = io.rx.recv() => SyncEvent::Inbound(m),
        r = io.ring.readable_mut() => {
            let mut out = Vec::new();
            if let Ok(mut guard) = r {
                let ring = guard.get_inner_mut();
                while let Some(item) = ring.next() {
                    if item.len() >= size_of::<FlowEvent>() {
                        // SAFETY: FlowEvent is plain data and the item holds at least its size.
                        out.push(unsafe { std::ptr::read_unaligned(item.as_ptr().cast::<FlowEvent>()) });
                    }
                    if out.len() >= 4096 {
                        break;
                    }
                }
                if out.len() < 4096 {
                    guard.clear_ready();
                }
            }
            SyncEvent::Flows(out)
        }
    }
}

/// The daemon's side of sync.
pub struct Sync {
    cfg: config::sync::Sync,
    /// The whole `snat_ports` (every host's share).
    snat_all: PortRange,
    keys: Arc<RwLock<Keys>>,
    peers: Vec<Peer>,
    unknown_failures: Arc<AtomicU64>,
    state: Array<MapData, SyncState>,
    stats: PerCpuArray<MapData, SyncStats>,
    grace_until_ns: u64,
    /// Per VRRP instance: master at the last poll.
    masters: Vec<bool>,
    /// Flows active after this (CLOCK_MONOTONIC ns) are sent at the next refresh.
    refreshed_ns: u64,
    next_refresh: Instant,
    epoch: Instant,
}

impl Sync {
    /// Loads the keys, binds the listener, starts the peer tasks and turns on the data path's
    /// flow events. `ebpf` gives the sync maps (taken out of it).
    pub async fn start(
        cfg: &config::sync::Sync,
        snat_all: PortRange,
        ebpf: &mut aya::Ebpf,
    ) -> anyhow::Result<(Sync, SyncIo)> {
        let keys = Keys::load(&cfg.key_file).map_err(|e| anyhow::anyhow!("{e}"))?;
        let keys = Arc::new(RwLock::new(keys));
        let take = |ebpf: &mut aya::Ebpf, name: &str| {
            ebpf.take_map(name)
                .ok_or_else(|| anyhow::anyhow!("map {name} missing from the object"))
        };
        let ring = RingBuf::try_from(take(ebpf, router_ebpf::map_names::FLOW_EVENTS)?)?;
        let mut state: Array<MapData, SyncState> =
            Array::try_from(take(ebpf, router_ebpf::map_names::SYNC)?)?;
        let stats = PerCpuArray::try_from(take(ebpf, router_ebpf::map_names::SYNC_STATS)?)?;
        let share = cfg.snat_share(snat_all);
        state
            .set(0, sync_state(snat_all, 0), 0)
            .context("enabling flow events (PGR_SYNC)")?;
        let listener = TcpListener::bind(cfg.listen)
            .await
            .with_context(|| format!("sync: listening on {}", cfg.listen))?;
        let (to_daemon, rx) = mpsc::channel(1024);
        let unknown_failures = Arc::new(AtomicU64::new(0));
        let mut peers = Vec::new();
        for (i, addr) in cfg.peers.iter().enumerate() {
            let shared = Arc::new(PeerShared::default());
            shared.update(|s| s.addr = addr.to_string());
            let (tx, out_rx) = mpsc::unbounded_channel();
            tokio::spawn(peer::sender(
                i,
                *addr,
                cfg.listen.to_string(),
                keys.clone(),
                shared.clone(),
                out_rx,
                to_daemon.clone(),
            ));
            peers.push(Peer {
                addr: *addr,
                tx,
                shared,
                conn: 0,
                full: None,
                ready: false,
                last_full: None,
            });
        }
        tokio::spawn(peer::listener(
            listener,
            cfg.peers.clone(),
            keys.clone(),
            peers.iter().map(|p| p.shared.clone()).collect(),
            unknown_failures.clone(),
            to_daemon,
        ));
        info!(
            listen = %cfg.listen,
            peers = ?cfg.peers,
            snat_share = %format!("{}-{}", share.first, share.last),
            "flow-state sync started"
        );
        // SAFETY: the ring owns its map's fd, which stays open and the same for as long as
        // the `AsyncFd` owns the ring.
        let ring = unsafe { AsyncFd::register_with_interest(ring, tokio::io::Interest::READABLE) }
            .map_err(|e| anyhow::anyhow!("polling the flow-event ring: {e}"))?;
        Ok((
            Sync {
                cfg: cfg.clone(),
                snat_all,
                keys,
                peers,
                unknown_failures,
                state,
                stats,
                grace_until_ns: 0,
                masters: Vec::new(),
                refreshed_ns: 0,
                next_refresh: Instant::now() + cfg.refresh,
                epoch: Instant::now(),
            },
            SyncIo { rx, ring },
        ))
    }

    /// Every peer's full sync is complete on its current connection.
    pub fn ready(&self) -> bool {
        self.peers.iter().all(|p| p.ready)
    }

    /// Re-reads the key file (`pgrouter reload`): the running keys stay on error.
    pub fn reload_keys(&self) -> Result<(), String> {
        let k = Keys::load(&self.cfg.key_file)?;
        if let Ok(mut cur) = self.keys.write() {
            *cur = k;
        }
        Ok(())
    }

    /// Queues one message for every connected peer (or for `only`).
    fn send(&self, msg: &Message, only: Option<usize>) {
        let (kind, payload) = msg.encode();
        for (i, p) in self.peers.iter().enumerate() {
            if only.is_some_and(|o| o != i) {
                continue;
            }
            let st_sending = p.shared.status.lock().map(|s| s.sending).unwrap_or(false);
            if !st_sending {
                continue;
            }
            if p.shared.pending.load(Ordering::Relaxed) >= peer::MAX_PENDING {
                p.shared.overflowed.store(true, Ordering::Relaxed);
                continue;
            }
            p.shared.pending.fetch_add(1, Ordering::Relaxed);
            let _ = p.shared.oldest_ms.compare_exchange(
                0,
                self.epoch.elapsed().as_millis() as u64 + 1,
                Ordering::Relaxed,
                Ordering::Relaxed,
            );
            let _ = p.tx.send(Out {
                kind,
                payload: payload.clone(),
            });
        }
    }

    fn send_chunks<T>(&self, items: Vec<T>, wrap: fn(Vec<T>) -> Message, only: Option<usize>) {
        let mut items = items.into_iter().peekable();
        while items.peek().is_some() {
            let chunk: Vec<T> = items.by_ref().take(RECORDS_PER_FRAME).collect();
            self.send(&wrap(chunk), only);
        }
    }

    /// Flow events from the data path → the peers.
    pub fn on_flows(&self, events: &[FlowEvent], now_ns: u64) {
        let mut ups = Vec::new();
        let mut rms = Vec::new();
        for e in events {
            match e.kind {
                FLOW_EVENT_ESTABLISHED => {
                    ups.push(records::record(&e.key, &e.fwd, &e.reply, now_ns))
                }
                FLOW_EVENT_CLOSED => rms.push(records::removal(&e.key, &e.fwd, now_ns)),
                _ => {}
            }
        }
        self.send_chunks(ups, Message::Upsert, None);
        self.send_chunks(rms, Message::Remove, None);
    }

    /// One message from a peer's connection, or the news that one is up or down.
    pub fn on_inbound(
        &mut self,
        ev: Inbound,
        maps: &mut Maps,
        prog: Option<std::os::fd::BorrowedFd<'_>>,
        applied: &Applied,
        now_ns: u64,
    ) {
        match ev {
            Inbound::WantFull { peer } => self.full_sync(peer, maps, now_ns),
            Inbound::Closed { peer, conn } => {
                if let Some(p) = self.peers.get_mut(peer)
                    && p.conn == conn
                {
                    p.ready = false;
                    p.full = None;
                }
            }
            Inbound::Message { peer, conn, msg } => {
                let Some(p) = self.peers.get_mut(peer) else {
                    return;
                };
                if conn != p.conn {
                    // A new connection: its full sync is what makes the peer ready.
                    p.conn = conn;
                    p.ready = false;
                    p.full = None;
                }
                match msg {
                    Message::FullStart => p.full = Some(HashSet::new()),
                    Message::FullEnd => {
                        if let Some(seen) = p.full.take() {
                            self.sweep(peer, &seen, maps, prog);
                        }
                        if let Some(p) = self.peers.get_mut(peer) {
                            p.ready = true;
                            p.last_full = Some(Instant::now());
                            p.shared.update(|s| s.full_syncs += 1);
                            info!(peer = %p.addr, "sync: full sync from peer complete");
                        }
                    }
                    Message::Upsert(rs) => {
                        let local = Local::new(applied, self.snat_all);
                        let (mut ok, mut bad) = (0u64, 0u64);
                        for r in &rs {
                            match local.install(r, now_ns) {
                                Ok(req) => {
                                    if let Some(seen) = p.full.as_mut() {
                                        seen.insert(req.fwd.peer_key());
                                    }
                                    match run(prog, &req) {
                                        Some(gc_verdict::CONFLICT) => bad += 1,
                                        Some(_) => ok += 1,
                                        None => bad += 1,
                                    }
                                }
                                Err(_) => bad += 1,
                            }
                        }
                        p.shared.update(|s| {
                            s.installed += ok;
                            s.rejected += bad;
                        });
                    }
                    Message::Remove(rs) => {
                        let mut n = 0u64;
                        for r in &rs {
                            if let Ok(req) = records::remove(r, now_ns)
                                && run(prog, &req) == Some(gc_verdict::DONE)
                            {
                                n += 1;
                            }
                        }
                        p.shared.update(|s| s.removed += n);
                    }
                    Message::Ping => {}
                }
            }
        }
    }

    /// After peer `i`'s full sync: its flows (synced entries in its share of the SNAT ports)
    /// that it no longer holds are removed; the kernel keeps any that are live here.
    fn sweep(
        &mut self,
        i: usize,
        seen: &HashSet<FlowKey>,
        maps: &mut Maps,
        prog: Option<std::os::fd::BorrowedFd<'_>>,
    ) {
        let Some(peer) = self.peers.get(i) else {
            return;
        };
        let share = self.cfg.share_of(peer.addr, self.snat_all);
        let mut gone = Vec::new();
        walk(maps, |_, f| {
            if f.flags & FLOW_F_REPLY == 0 && f.flags & FLOW_F_SYNCED != 0 {
                let rkey = f.peer_key();
                let port = u16::from_be(rkey.dport);
                if port >= share.first && port <= share.last && !seen.contains(&rkey) {
                    gone.push(records::remove_request(rkey, f.last_seen));
                }
            }
        });
        let removed = gone
            .iter()
            .filter(|req| run(prog, req) == Some(gc_verdict::DONE))
            .count() as u64;
        if removed > 0 {
            info!(peer = %peer.addr, removed, "sync: removed the peer's flows its full sync no longer holds");
        }
        peer.shared.update(|s| s.removed += removed);
    }

    /// Every established flow of this host's (not a peer's unclaimed copy) → peer `peer`.
    fn full_sync(&self, peer: usize, maps: &mut Maps, now_ns: u64) {
        let Some(p) = self.peers.get(peer) else {
            return;
        };
        let recs = own_flows(maps, now_ns, 0);
        info!(peer = %p.addr, flows = recs.len(), "sync: full sync");
        self.send(&Message::FullStart, Some(peer));
        self.send_chunks(recs, Message::Upsert, Some(peer));
        self.send(&Message::FullEnd, Some(peer));
    }

    /// Once a second: the refresh when due.
    pub fn tick(&mut self, maps: &mut Maps, now_ns: u64) {
        if Instant::now() >= self.next_refresh {
            self.next_refresh = Instant::now() + self.cfg.refresh;
            let since = self.refreshed_ns;
            self.refreshed_ns = now_ns;
            let recs = own_flows(maps, now_ns, since);
            self.send_chunks(recs, Message::Upsert, None);
        }
    }

    /// Opens the grace window while no instance is master (no VIP here, so nothing to drop
    /// wrongly) and when one becomes master; the kernel drops instead of resetting until it
    /// closes.
    pub fn grace(&mut self, masters: &[bool], now_ns: u64) {
        let became = masters
            .iter()
            .enumerate()
            .any(|(i, m)| *m && !self.masters.get(i).copied().unwrap_or(false));
        let none = !masters.iter().any(|m| *m);
        self.masters = masters.to_vec();
        if !(became || none) {
            return;
        }
        let until = now_ns + self.cfg.grace.as_nanos() as u64;
        if became {
            info!(grace = ?self.cfg.grace, "sync: became master; mid-flow packets without a flow are dropped, not reset, for the grace window");
        }
        self.grace_until_ns = until;
        if let Err(e) = self.state.set(0, sync_state(self.snat_all, until), 0) {
            warn!(error = %e, "sync: writing the grace window");
        }
    }

    pub fn status(&self, now_ns: u64) -> SyncStatus {
        let share = self.cfg.snat_share(self.snat_all);
        let mut counters = SyncStats::default();
        if let Ok(v) = self.stats.get(&0, 0) {
            v.iter().for_each(|s| counters.accumulate(s));
        }
        let now_ms = self.epoch.elapsed().as_millis() as u64;
        SyncStatus {
            ready: self.ready(),
            snat_first: share.first,
            snat_last: share.last,
            grace_open: now_ns < self.grace_until_ns,
            peers: self
                .peers
                .iter()
                .map(|p| {
                    let mut s: PeerStatus = p
                        .shared
                        .status
                        .lock()
                        .map(|s| s.clone())
                        .unwrap_or_default();
                    s.ready = p.ready;
                    s.last_full_sync_s = p.last_full.map(|t| t.elapsed().as_secs());
                    s.pending = p.shared.pending.load(Ordering::Relaxed);
                    let oldest = p.shared.oldest_ms.load(Ordering::Relaxed);
                    s.lag_ms = if oldest == 0 {
                        0
                    } else {
                        now_ms.saturating_sub(oldest - 1)
                    };
                    s
                })
                .collect(),
            events: counters.events,
            events_lost: counters.events_lost,
            grace_drops: counters.grace_drops,
            adopted: counters.adopted,
            unknown_peer_failures: self.unknown_failures.load(Ordering::Relaxed),
        }
    }
}

/// `PGR_SYNC` with flow events on: the grace window until `grace_until_ns`, over every
/// host's SNAT ports (a taken-over flow's port lies in its peer's share).
fn sync_state(snat_all: PortRange, grace_until_ns: u64) -> SyncState {
    SyncState {
        flags: SYNC_F_EVENTS,
        grace_port_min: snat_all.first,
        grace_port_max: snat_all.last,
        grace_until_ns,
    }
}

/// Turns the data path's flow events off (a run without `[sync]`; the pinned `PGR_SYNC` may
/// hold an earlier run's setting).
pub fn disable(ebpf: &mut aya::Ebpf) -> anyhow::Result<()> {
    let Some(map) = ebpf.take_map(router_ebpf::map_names::SYNC) else {
        return Ok(());
    };
    let mut state: Array<MapData, SyncState> = Array::try_from(map)?;
    state
        .set(0, SyncState::default(), 0)
        .context("turning flow events off (PGR_SYNC)")
}

fn run(prog: Option<std::os::fd::BorrowedFd<'_>>, req: &SyncRequest) -> Option<u32> {
    let prog = prog?;
    batch::test_run(prog, &records::request_bytes(req)).ok()
}

/// Calls `f` on every conntrack entry (a batch walk; entries changing meanwhile may be seen
/// once, twice or not at all).
fn walk(maps: &Maps, mut f: impl FnMut(&FlowKey, &Flow)) {
    let fd = maps.conntrack.map().fd();
    let mut cursor = None;
    loop {
        match batch::lookup_batch::<FlowKey, Flow>(
            std::os::fd::AsFd::as_fd(fd),
            &mut cursor,
            WALK_BATCH,
        ) {
            Ok(b) => {
                for (k, v) in &b.entries {
                    f(k, v);
                }
                if b.end {
                    return;
                }
            }
            Err(e) => {
                warn!(error = %e, "sync: walking the conntrack table");
                return;
            }
        }
    }
}

/// This host's established, open flows active after `since_ns` (0: all), as records.
fn own_flows(maps: &Maps, now_ns: u64, since_ns: u64) -> Vec<wire::Record> {
    let mut fwd = Vec::new();
    let mut replies = std::collections::HashMap::new();
    walk(maps, |k, v| {
        if v.flags & FLOW_F_REPLY != 0 {
            replies.insert(*k, *v);
        } else if v.flags & (FLOW_F_CLOSED | FLOW_F_SYNCED) == 0 {
            fwd.push((*k, *v));
        }
    });
    fwd.into_iter()
        .filter_map(|(k, f)| {
            let r = replies.get(&f.peer_key())?;
            if r.peer_key() != k {
                return None;
            }
            if f.last_seen.max(r.last_seen) <= since_ns {
                return None;
            }
            Some(records::record(&k, &f, r, now_ns))
        })
        .collect()
}
