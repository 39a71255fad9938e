//! The daemon: wires configuration, health tasks, the data path, VRRP, the control socket and
//! metrics. Health decides sets (pure), `dataplane::plan` decides map writes (pure), the flow
//! GC's policy lives in `dataplane::gc`; this loop moves events between them. Its own two
//! decisions are pure functions in `policy`: when a reloaded cluster has warmed up (then
//! `Daemon::promote_warmed` retires the old health task, an explicit step of `sync`), and
//! what the VRRP tracks say. Getters (`snapshots`, `desired`) only read.
//!
//! ```text
//!  health::ClusterHandle ──watch──┐
//!  SIGHUP / `pgrouter reload` ────┼──▶ loop ──promote warmed──plan──▶ Maps::apply ──▶ XDP maps
//!  control socket (status) ───────┤                          └──▶ sweep (shutdown-sessions RSTs)
//!  1 s tick ──────────────────────┘──▶ flow gc (bounded batch), vrrp tracks, neighbour
//!                                       warm-up, kernel logs, status
//!  100 ms ────────────────────────────▶ refusals seen by the data path → health tasks
//! ```
use std::{
    collections::{BTreeMap, BTreeSet},
    net::IpAddr,
    path::PathBuf,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use anyhow::Context as _;
use router_ebpf::Timeouts;
use tokio::{
    signal::unix::{SignalKind, signal},
    sync::{mpsc, watch},
};
use tracing::{error, info, warn};

mod peers;
mod policy;

use crate::{
    config::{self, Config},
    control::{self, Request},
    dataplane::{
        self, Applied, Datapath, LoadOptions, Maps,
        gc::{self, Gc},
    },
    health::{self, ClusterHandle, ClusterSnapshot},
    metrics,
    model::DesiredListener,
    sdnotify,
    status::{self, Status},
    vrrp::{self, InstanceHandle, Tracks},
};
use policy::ClusterView;

struct Cluster {
    cfg: config::Cluster,
    handle: ClusterHandle,
    /// The previous handle while a reloaded cluster's checks warm up: its sets stay in force
    /// so a reload never sends traffic nowhere or resets sessions.
    previous: Option<ClusterHandle>,
}

impl Cluster {
    /// The latest snapshot of the current health task.
    fn latest(&self) -> ClusterSnapshot {
        self.handle.desired().borrow().clone()
    }

    /// The snapshot whose sets are in force: the previous task's while the reloaded one warms
    /// up.
    fn in_force(&self) -> ClusterSnapshot {
        match &self.previous {
            Some(prev) => prev.desired().borrow().clone(),
            None => self.latest(),
        }
    }
}

struct Daemon {
    cfg: Config,
    dp: Datapath,
    maps: Maps,
    applied: Applied,
    attached: Vec<(String, String)>,
    clusters: Vec<Cluster>,
    vrrp: Vec<InstanceHandle>,
    tracks: watch::Sender<Tracks>,
    changed_tx: mpsc::UnboundedSender<()>,
    started: Instant,
    shared: Arc<Mutex<Status>>,
    last_error: Option<String>,
    /// Set when pinned state from an earlier run was adopted: nothing is published until every
    /// cluster's first checks are in, so a restart never marks healthy nodes down (which
    /// would reset their sessions).
    hold_until_warm: bool,
    /// Backend id → the data path's `refused` count at the last poll.
    refused_seen: std::collections::HashMap<u32, u64>,
    /// The flow garbage collector (expiry, reaping, slot recount) and its last full cycle.
    gc: Gc,
    /// The flow timeouts written to PGR_TIMEOUTS.
    timeouts: Timeouts,
    /// Flow-state sync with the peer edge hosts (`[sync]`).
    sync: Option<crate::sync::Sync>,
    /// Retired backend id → the GC's full-cycle count when it was first seen retired: freed
    /// once a whole later cycle found no entry naming it (`free_retired`).
    retired_at: BTreeMap<u32, u64>,
}

/// Runs until SIGTERM/SIGINT. The XDP program and its maps stay pinned afterwards, so a
/// restarted (or upgraded) controller takes over without dropping a session; `pgrouter
/// detach` removes them.
pub async fn run(config_path: PathBuf) -> anyhow::Result<()> {
    let cfg = config::load(&config_path).map_err(|e| anyhow::anyhow!("{e}"))?;
    let snat = (cfg.datapath.snat_ports.first, cfg.datapath.snat_ports.last);
    dataplane::host::prepare(&cfg.datapath.interfaces, snat)?;
    let mut dp = Datapath::load(&LoadOptions {
        pin_path: Some(cfg.datapath.pin_path.clone()),
        conntrack_entries: cfg.datapath.conntrack_entries,
        handshake_entries: cfg.datapath.handshake_entries,
    })?;
    let mut maps = Maps::take(&mut dp.ebpf)?;
    let (sync, mut sync_io) = match &cfg.sync {
        Some(sc) => {
            let (s, io) = crate::sync::Sync::start(sc, cfg.datapath.snat_ports, &mut dp.ebpf)
                .await
                .context("starting flow-state sync")?;
            (Some(s), Some(io))
        }
        None => {
            // A pinned PGR_SYNC from a run with [sync] would keep filling the event ring.
            crate::sync::disable(&mut dp.ebpf)?;
            (None, None)
        }
    };
    let timeouts = cfg.datapath.timeouts.to_abi();
    maps.set_timeouts(&timeouts)?;
    let mode = cfg.datapath.mode;
    let mut attached = Vec::new();
    for iface in &cfg.datapath.interfaces {
        let how = dp.attach(iface, mode)?;
        let idx = ifindex(iface)?;
        maps.allow_iface(idx, dataplane::host::iface_mac(iface))?;
        attached.push((iface.clone(), how.to_string()));
    }
    // Whatever an earlier controller left in the pinned maps is adopted, not rewritten.
    let applied = maps.read_applied();
    if !applied.services.is_empty() {
        info!(
            services = applied.services.len(),
            "found pinned state from an earlier run"
        );
    }

    let (changed_tx, mut changed_rx) = mpsc::unbounded_channel();
    let mut clusters = Vec::new();
    for c in &cfg.clusters {
        clusters.push(start_cluster(c, &changed_tx, None));
    }
    let (tracks, tracks_rx) = watch::channel(Tracks::default());
    let mut vrrp_handles = Vec::new();
    for v in &cfg.vrrp {
        vrrp_handles.push(
            vrrp::spawn(v.clone(), tracks_rx.clone())
                .with_context(|| format!("starting vrrp instance {:?}", v.name))?,
        );
    }
    let shared = Arc::new(Mutex::new(Status::default()));
    let mut d = Daemon {
        cfg,
        dp,
        maps,
        applied,
        attached,
        clusters,
        vrrp: vrrp_handles,
        tracks,
        changed_tx,
        started: Instant::now(),
        shared: shared.clone(),
        last_error: None,
        hold_until_warm: false,
        refused_seen: Default::default(),
        gc: Gc::default(),
        timeouts,
        sync,
        retired_at: BTreeMap::new(),
    };
    d.hold_until_warm = !d.applied.services.is_empty();
    d.adopt_pinned();
    // The recount at start: what expired while no controller ran is reaped, and a slot
    // count that drifted (a crash between a close and its release, an older build) is
    // corrected before the first tick.
    d.collect_flows_at_start();

    let (req_tx, mut req_rx) = mpsc::channel(16);
    let socket = d.cfg.control.socket.clone();
    let _control = control::serve(&socket, req_tx)?;
    if let Some(addr) = d.cfg.control.metrics {
        metrics::serve(addr, shared.clone()).await?;
    }

    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let mut hup = signal(SignalKind::hangup())?;
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    // Refusals seen by the data path reach the health checks within this period.
    let mut refusals = tokio::time::interval(Duration::from_millis(100));
    refusals.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut ticks = 0u64;
    let _ = d.sync();
    // systemd's Type=notify: the program is attached and the control socket listens.
    sdnotify::notify_ready();
    info!(config = %config_path.display(), "pgrouter running");
    loop {
        tokio::select! {
            Some(()) = changed_rx.recv() => {
                while changed_rx.try_recv().is_ok() {}
                let _ = d.sync();
            }
            Some(req) = req_rx.recv() => match req {
                Request::Status(reply) => {
                    d.refresh_status();
                    let _ = reply.send(d.snapshot_status());
                }
                Request::Reload(reply) => {
                    sdnotify::notify_reloading();
                    let _ = reply.send(d.reload(&config_path));
                    sdnotify::notify_ready();
                }
            },
            _ = hup.recv() => {
                sdnotify::notify_reloading();
                let _ = d.reload(&config_path);
                sdnotify::notify_ready();
            }
            _ = tick.tick() => {
                ticks += 1;
                // Kernel aya-log records (rare events such as SNAT exhaustion) → tracing.
                if let Some(l) = d.dp.logger.as_mut() {
                    l.flush();
                }
                d.collect_flows();
                d.free_retired();
                d.sync_tick();
                d.update_tracks();
                if ticks % 5 == 1 {
                    dataplane::host::warm_neighbours(&d.backend_addrs());
                }
                d.refresh_status();
            }
            _ = refusals.tick() => {
                d.poll_refusals();
                d.sync_grace();
            }
            ev = crate::sync::next(&mut sync_io) => d.on_sync(ev),
            _ = term.recv() => break,
            _ = int.recv() => break,
        }
    }
    sdnotify::notify_stopping();
    info!("shutting down: leaving VRRP; the XDP program and maps stay pinned");
    for h in d.vrrp.drain(..) {
        h.shutdown().await;
    }
    for c in &d.clusters {
        c.handle.shutdown();
    }
    let _ = std::fs::remove_file(&socket);
    Ok(())
}

fn start_cluster(
    cfg: &config::Cluster,
    changed: &mpsc::UnboundedSender<()>,
    previous: Option<ClusterHandle>,
) -> Cluster {
    let handle = health::spawn_cluster(cfg);
    let mut rx = handle.desired();
    let tx = changed.clone();
    tokio::spawn(async move {
        while rx.changed().await.is_ok() {
            if tx.send(()).is_err() {
                break;
            }
        }
    });
    Cluster {
        cfg: cfg.clone(),
        handle,
        previous,
    }
}

fn ifindex(iface: &str) -> anyhow::Result<u32> {
    let c = std::ffi::CString::new(iface)?;
    let idx = unsafe { libc::if_nametoindex(c.as_ptr()) };
    if idx == 0 {
        anyhow::bail!("interface {iface} not found");
    }
    Ok(idx)
}

impl Daemon {
    /// Every cluster's snapshot in force.
    fn snapshots(&self) -> Vec<ClusterSnapshot> {
        self.clusters.iter().map(Cluster::in_force).collect()
    }

    fn desired(&self) -> Vec<DesiredListener> {
        self.snapshots()
            .into_iter()
            .flat_map(|s| s.listeners)
            .collect()
    }

    /// Retires the previous health task of every reloaded cluster whose checks have warmed up
    /// ([`policy::warmed_up`]): from now on its new sets are the ones in force.
    fn promote_warmed(&mut self) {
        for c in &mut self.clusters {
            if c.previous.is_none() || !policy::warmed_up(&c.latest().status) {
                continue;
            }
            if let Some(prev) = c.previous.take() {
                prev.shutdown();
            }
            info!(cluster = %c.cfg.name, "reloaded cluster warmed up; its sets are now in force");
        }
    }

    fn adopt_pinned(&mut self) {
        let desired = self.desired();
        self.applied.adopt(&desired);
    }

    /// Tells each cluster's health task which nodes refused connections (a RST answering the
    /// data path's SYN) since the last poll: that node's PostgreSQL is not listening, which
    /// Patroni's API shows only a second or more later.
    fn poll_refusals(&mut self) {
        // Static clusters and `observe_refusals = false` ignore refusals: nothing to read.
        if !self
            .clusters
            .iter()
            .any(|c| c.cfg.checks != config::Checks::Static && c.cfg.health.observe_refusals)
        {
            return;
        }
        for (key, id) in &self.applied.backend_ids {
            let n = self.maps.backend_stats(*id).refused;
            // The first reading of an id (start, adoption, new listener) is a baseline.
            match self.refused_seen.insert(*id, n) {
                Some(prev) if n > prev => {}
                _ => continue,
            }
            for c in self
                .clusters
                .iter()
                .filter(|c| c.cfg.name == key.listener.cluster)
            {
                if let Some(idx) = c.cfg.nodes.iter().position(|x| x.name == key.node) {
                    c.handle.refused(idx);
                }
            }
        }
    }

    /// Publishes the current desired sets; on failure the running maps stay as they are and
    /// the error is returned (a reload reports it) and shown in status until a publication
    /// succeeds.
    fn sync(&mut self) -> Result<(), String> {
        self.promote_warmed();
        if self.hold_until_warm {
            let warm = self
                .clusters
                .iter()
                .all(|c| policy::warmed_up(&c.handle.desired().borrow().status));
            if !warm {
                return Ok(());
            }
            self.hold_until_warm = false;
            info!("first checks complete; taking over the pinned data path");
        }
        let desired = self.desired();
        // With sync, each host allocates from its own share of the range.
        let share = match &self.cfg.sync {
            Some(s) => s.snat_share(self.cfg.datapath.snat_ports),
            None => self.cfg.datapath.snat_ports,
        };
        let snat = (share.first, share.last);
        let (delta, next) = match dataplane::plan(
            &desired,
            &self.applied,
            snat,
            dataplane::host::monotonic_ns(),
        ) {
            Ok(p) => p,
            Err(e) => {
                error!("cannot publish backend sets: {e}; keeping the running ones");
                let e = format!("cannot publish backend sets: {e}; the running ones stay");
                self.last_error = Some(e.clone());
                return Err(e);
            }
        };
        if delta.is_empty() {
            self.last_error = None;
            return Ok(());
        }
        if let Err(e) = self.maps.apply(&delta) {
            error!("writing maps: {e:#}");
            let e = format!("writing maps: {e:#}");
            self.last_error = Some(e.clone());
            return Err(e);
        }
        for l in &desired {
            let active: Vec<&str> = l
                .backends
                .iter()
                .filter(|b| b.state == crate::model::BackendState::Active)
                .map(|b| b.node.as_str())
                .collect();
            info!(listener = %l.key, active = ?active, "published set");
        }
        self.applied = next;
        let down: BTreeSet<u32> = delta.newly_shutdown.iter().copied().collect();
        dataplane::sweep::shutdown_sessions(&mut self.maps, &down);
        self.last_error = None;
        Ok(())
    }

    fn reload(&mut self, path: &std::path::Path) -> Result<String, String> {
        let new = match config::load(path) {
            Ok(c) => c,
            Err(e) => {
                error!("reload refused, running configuration kept:\n{e}");
                return Err(e.to_string());
            }
        };
        // Timeouts apply at once: the kernel and the GC read them on every judgement.
        let timeouts = new.datapath.timeouts.to_abi();
        if timeouts != self.timeouts {
            if let Err(e) = self.maps.set_timeouts(&timeouts) {
                error!("reload refused, running configuration kept: {e:#}");
                return Err(format!("{e:#}"));
            }
            info!(?timeouts, "flow timeouts updated");
            self.timeouts = timeouts;
        }
        // wt-cfg: leave `timeouts` out of this comparison (they apply on reload, above).
        if new.datapath != self.cfg.datapath {
            warn!("datapath settings changed; they apply at the next restart");
        }
        let mut old: BTreeMap<String, Cluster> = self
            .clusters
            .drain(..)
            .map(|c| (c.cfg.name.clone(), c))
            .collect();
        let mut clusters = Vec::new();
        for c in &new.clusters {
            match old.remove(&c.name) {
                Some(o) if o.cfg == *c => clusters.push(o),
                Some(o) => {
                    if let Some(p) = o.previous {
                        p.shutdown();
                    }
                    clusters.push(start_cluster(c, &self.changed_tx, Some(o.handle)));
                }
                None => clusters.push(start_cluster(c, &self.changed_tx, None)),
            }
        }
        for (_, o) in old {
            o.handle.shutdown();
        }
        self.clusters = clusters;
        if new.vrrp != self.cfg.vrrp {
            warn!("vrrp settings changed; they apply at the next restart");
        }
        if new.sync != self.cfg.sync {
            warn!("sync settings changed; they apply at the next restart");
        }
        // Key rotation: the key file is read again on every reload.
        if let Some(s) = &self.sync
            && let Err(e) = s.reload_keys()
        {
            error!("reload refused, running configuration kept: {e}");
            return Err(e);
        }
        self.cfg = new;
        // The file is in force, but if its sets cannot be published, `reload` must not say
        // "reloaded": failovers would silently stop being followed.
        if let Err(e) = self.sync() {
            error!(config = %path.display(), "reloaded, but not applied: {e}");
            return Err(format!("{} loaded, but not applied: {e}", path.display()));
        }
        info!(config = %path.display(), "reloaded");
        Ok(format!("reloaded {}", path.display()))
    }

    fn update_tracks(&mut self) {
        let snaps: Vec<ClusterSnapshot> = self.clusters.iter().map(Cluster::latest).collect();
        let t = policy::tracks(
            !self.attached.is_empty(),
            self.sync
                .as_ref()
                .map(|s| policy::sync_track(s.ready(), &self.masters())),
            self.clusters.iter().zip(&snaps).map(|(c, s)| ClusterView {
                name: &c.cfg.name,
                checks: c.cfg.checks,
                status: &s.status,
            }),
        );
        self.tracks.send_if_modified(|cur| {
            if *cur == t {
                false
            } else {
                *cur = t;
                true
            }
        });
    }

    fn backend_addrs(&self) -> Vec<IpAddr> {
        let mut v: Vec<IpAddr> = self
            .cfg
            .clusters
            .iter()
            .flat_map(|c| c.nodes.iter().map(|n| n.host))
            .collect();
        v.sort();
        v.dedup();
        v
    }

    /// One bounded GC tick (see `dataplane::gc::ENTRIES_PER_TICK`).
    fn collect_flows(&mut self) {
        let prog = self.dp.gc_program_fd().ok();
        let mut k = gc::Kernel {
            maps: &mut self.maps,
            prog,
        };
        self.gc.tick(
            &mut k,
            &self.applied,
            &self.timeouts,
            dataplane::host::monotonic_ns(),
        );
    }

    /// Frees the ids of retired backends that no flow names any more, so reloads that
    /// remove nodes never use ids up. Safe: a retired backend is in no set, so no new flow
    /// can name it, and the GC cycle judged started after its retirement.
    fn free_retired(&mut self) {
        let cycles = self.gc.counters.full_cycles;
        let retired = dataplane::plan::retired(&self.applied);
        self.retired_at.retain(|id, _| retired.contains(id));
        for id in &retired {
            self.retired_at.entry(*id).or_insert(cycles);
        }
        let Some(last) = &self.gc.last else {
            return;
        };
        let free: BTreeSet<u32> = self
            .retired_at
            .iter()
            .filter(|(id, at)| cycles >= **at + 2 && !last.tally.referenced.contains(id))
            .map(|(id, _)| *id)
            .collect();
        if free.is_empty() {
            return;
        }
        let (delta, next) = dataplane::plan::free_retired(&self.applied, &free);
        match self.maps.apply(&delta) {
            Ok(()) => {
                self.applied = next;
                for id in &free {
                    self.retired_at.remove(id);
                    self.refused_seen.remove(id);
                }
                info!(ids = ?free, "retired backend ids freed (no flow names them)");
            }
            Err(e) => warn!("freeing retired backend ids: {e:#}"),
        }
    }

    /// Full cycles back to back at start, bounded by the table sizes.
    fn collect_flows_at_start(&mut self) {
        let prog = match self.dp.gc_program_fd() {
            Ok(p) => Some(p),
            Err(e) => {
                warn!("flow gc cannot reap (expired flows wait for a packet): {e:#}");
                None
            }
        };
        let entries = self.cfg.datapath.conntrack_entries as usize
            + self.cfg.datapath.handshake_entries as usize;
        let ticks_per_cycle = (entries / gc::ENTRIES_PER_TICK + 2) as u32;
        let mut k = gc::Kernel {
            maps: &mut self.maps,
            prog,
        };
        let started = Instant::now();
        let done = self.gc.run_cycles(
            &mut k,
            &self.applied,
            &self.timeouts,
            &dataplane::host::monotonic_ns,
            gc::START_CYCLES,
            gc::START_CYCLES * ticks_per_cycle,
        );
        info!(
            cycles = done,
            ms = started.elapsed().as_millis() as u64,
            "flow tables recounted"
        );
    }

    fn refresh_status(&self) {
        let snaps = self.snapshots();
        let st = status::collect(
            &self.cfg,
            &snaps,
            &self.applied,
            &self.maps,
            &self.attached,
            self.vrrp.iter().map(|h| h.status()).collect(),
            status::GcView {
                cycle: self.gc.last.as_ref(),
                totals: &self.gc.counters,
                now_ns: dataplane::host::monotonic_ns(),
            },
            self.started.elapsed(),
            self.last_error.clone(),
        );
        let mut st = st;
        st.sync = self
            .sync
            .as_ref()
            .map(|s| s.status(dataplane::host::monotonic_ns()));
        if let Ok(mut s) = self.shared.lock() {
            *s = st;
        }
    }

    fn snapshot_status(&self) -> Status {
        match self.shared.lock() {
            Ok(s) => s.clone(),
            Err(p) => p.into_inner().clone(),
        }
    }
}
