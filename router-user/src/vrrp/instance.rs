//! One tokio task per virtual router: feeds socket reads, timer expiries, track changes and link
//! state into [`fsm::step`] and executes the returned actions (send, netlink, ARP/NA, hooks).

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context as _;
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::fsm::{self, Action, Event, State, Timer, TrackWeight};
use super::net::{self, Announcer, VrrpSocket};
use super::packet::{self, Auth, Packet};
use super::{Tracks, notify};
use crate::config::{Cidr, StateHint, VrrpInstance};

/// Reasons an advert can be rejected for; one counter each (see `DecodeError::reason`).
const REJECT_REASONS: &[&str] = &[
    "truncated",
    "not_vrrp",
    "ttl",
    "version",
    "type",
    "vrid",
    "length",
    "checksum",
    "auth",
    "vrid_mismatch",
    "adver_int",
    "unknown_peer",
];

/// How often the link's carrier is checked; a down link is a fault, as in keepalived.
const LINK_POLL: Duration = Duration::from_millis(100);

/// What `pgrouter status` shows for one instance: the status contract's type.
pub use router_ebpf::status::{InstanceStatus, VrrpCounters};

/// The instance's status, counters included (their only copy): written by the task, read by
/// [`InstanceHandle::status`].
struct Shared {
    status: Mutex<InstanceStatus>,
}

impl Shared {
    fn update(&self, f: impl FnOnce(&mut InstanceStatus)) {
        match self.status.lock() {
            Ok(mut s) => f(&mut s),
            Err(p) => f(&mut p.into_inner()),
        }
    }

    fn count(&self, f: impl FnOnce(&mut VrrpCounters)) {
        self.update(|s| f(&mut s.counters));
    }

    /// One rejected advert; `reason` is one of [`REJECT_REASONS`] (see `DecodeError::reason`).
    fn reject(&self, reason: &str) {
        self.count(|c| {
            if let Some(n) = c.adverts_rejected.get_mut(reason) {
                *n += 1;
            }
        });
    }
}

/// A running instance. Dropping it stops the instance like [`InstanceHandle::shutdown`], but
/// without waiting for it.
pub struct InstanceHandle {
    shared: Arc<Shared>,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<()>,
}

impl InstanceHandle {
    pub fn status(&self) -> InstanceStatus {
        match self.shared.status.lock() {
            Ok(s) => s.clone(),
            Err(p) => p.into_inner().clone(),
        }
    }

    /// Leaves the election: a master advertises priority 0 (the backup takes over after
    /// Skew_Time) and the VIPs are removed. Returns once done.
    pub async fn shutdown(mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        let _ = (&mut self.task).await;
    }
}

/// Starts one instance (as `config` validated it): opens its sockets now (so errors such as a
/// missing interface or no CAP_NET_RAW surface here), then runs on the current tokio runtime.
pub fn spawn(cfg: VrrpInstance, tracks: watch::Receiver<Tracks>) -> anyhow::Result<InstanceHandle> {
    let v6 = cfg.is_ipv6();
    let ifi =
        net::interface(&cfg.interface).with_context(|| format!("interface {}", cfg.interface))?;
    let primary = primary_ip(&cfg, &ifi).with_context(|| format!("interface {}", cfg.interface))?;
    let multicast = cfg.unicast_peer.is_empty();
    let sock = VrrpSocket::open(&cfg.interface, ifi.index, v6, multicast)
        .with_context(|| format!("opening VRRP raw socket on {}", cfg.interface))?;
    let announcer = match ifi.mac {
        Some(mac) => Some(Announcer::open(ifi.index, mac, v6).context("opening ARP/NA socket")?),
        None => None,
    };
    let params = fsm::Params {
        version: wire_version(&cfg),
        priority: cfg.priority,
        adver_int_cs: cfg.adver_int_cs(),
        preempt: !cfg.nopreempt,
        preempt_delay: cfg.preempt_delay.unwrap_or_default(),
        primary_ip: primary,
    };
    let status = InstanceStatus {
        name: cfg.name.clone(),
        interface: cfg.interface.clone(),
        virtual_router_id: cfg.virtual_router_id,
        version: cfg.version,
        state: State::Initialize.into(),
        configured_priority: cfg.priority,
        effective_priority: cfg.priority,
        master: None,
        primary_ip: primary,
        vips: cfg.virtual_ipaddress.iter().map(Cidr::to_string).collect(),
        last_transition_unix_ms: None,
        last_transition_reason: None,
        counters: VrrpCounters {
            adverts_rejected: REJECT_REASONS.iter().map(|r| (r.to_string(), 0)).collect(),
            ..VrrpCounters::default()
        },
    };
    let shared = Arc::new(Shared {
        status: Mutex::new(status),
    });
    let (stop_tx, stop_rx) = oneshot::channel();
    let runner = Runner {
        inst: fsm::Instance::new(params),
        sock,
        announcer,
        ifindex: ifi.index,
        link_up: ifi.running,
        shared: shared.clone(),
        timers: BTreeMap::new(),
        garp_again: None,
        garp_refresh: None,
        link_check: Instant::now() + LINK_POLL,
        tracks,
        tracks_open: true,
        fault: false,
        seen_transitions: 0,
        cfg,
    };
    let task = tokio::spawn(runner.run(stop_rx));
    Ok(InstanceHandle {
        shared,
        stop: Some(stop_tx),
        task,
    })
}

/// Our address for the §6.4.3 tie-break and as packet source: `unicast_src_ip`, else the first
/// IPv4 address on the interface that is not a VIP, else (IPv6) the link-local address, which
/// RFC 5798 §5.1.2.1 makes the source of IPv6 adverts.
fn primary_ip(cfg: &VrrpInstance, ifi: &net::IfInfo) -> anyhow::Result<IpAddr> {
    if let Some(s) = cfg.unicast_src_ip {
        return Ok(s);
    }
    let vips: Vec<IpAddr> = cfg.virtual_ipaddress.iter().map(|c| c.addr).collect();
    let found = if cfg.is_ipv6() {
        ifi.addrs
            .iter()
            .find(|a| matches!(a, IpAddr::V6(v) if v.segments()[0] & 0xffc0 == 0xfe80))
    } else {
        ifi.addrs.iter().find(|a| a.is_ipv4() && !vips.contains(a))
    };
    found.copied().ok_or_else(|| {
        let fam = if cfg.is_ipv6() {
            "IPv6 link-local"
        } else {
            "IPv4 (non-VIP)"
        };
        anyhow::anyhow!("no {fam} address to send VRRP from")
    })
}

/// The version on the wire (`config` accepts only 2 and 3).
fn wire_version(cfg: &VrrpInstance) -> packet::Version {
    if cfg.version == 2 {
        packet::Version::V2
    } else {
        packet::Version::V3
    }
}

struct Runner {
    cfg: VrrpInstance,
    inst: fsm::Instance,
    sock: VrrpSocket,
    announcer: Option<Announcer>,
    ifindex: u32,
    link_up: bool,
    shared: Arc<Shared>,
    timers: BTreeMap<Timer, Instant>,
    /// Second gratuitous burst after `garp_master_delay`.
    garp_again: Option<Instant>,
    /// Periodic re-announcement (`garp_master_refresh`).
    garp_refresh: Option<Instant>,
    link_check: Instant,
    tracks: watch::Receiver<Tracks>,
    tracks_open: bool,
    fault: bool,
    seen_transitions: u64,
}

enum Wake {
    Stop,
    Packet(std::io::Result<net::Received>),
    Tick,
    Tracks(bool),
}

impl Runner {
    async fn run(mut self, mut stop: oneshot::Receiver<()>) {
        let (prio, fault) = self.evaluate_tracks();
        self.inst.priority = prio;
        self.fault = fault || !self.link_up;
        if self.cfg.state == Some(StateHint::Master) && self.cfg.priority != fsm::PRIO_OWNER {
            tracing::debug!(instance = %self.cfg.name, "state MASTER is a start-up hint only; waiting for the election");
        }
        let first = if self.fault {
            Event::FaultSet
        } else {
            Event::Startup
        };
        self.apply(first).await;
        // A fault at start leaves us in FAULT; clearing it later starts the election.
        let mut buf = vec![0u8; 4096];
        loop {
            let next = self.next_deadline();
            let wake = tokio::select! {
                _ = &mut stop => Wake::Stop,
                r = self.sock.recv(&mut buf) => Wake::Packet(r),
                _ = tokio::time::sleep_until(next) => Wake::Tick,
                r = self.tracks.changed(), if self.tracks_open => Wake::Tracks(r.is_ok()),
            };
            match wake {
                Wake::Stop => {
                    self.apply(Event::Shutdown).await;
                    break;
                }
                Wake::Packet(Ok(r)) => {
                    let end = r.end.min(buf.len());
                    let start = r.start.min(end);
                    let payload = buf.get(start..end).unwrap_or_default().to_vec();
                    self.on_packet(r.info, &payload).await;
                }
                Wake::Packet(Err(e)) => {
                    tracing::warn!(instance = %self.cfg.name, "vrrp receive failed: {e}");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                Wake::Tick => self.on_tick().await,
                Wake::Tracks(open) => {
                    self.tracks_open = open;
                    self.reevaluate().await;
                }
            }
        }
    }

    fn next_deadline(&self) -> Instant {
        let mut next = self.link_check;
        for d in self
            .timers
            .values()
            .chain(self.garp_again.iter())
            .chain(self.garp_refresh.iter())
        {
            next = next.min(*d);
        }
        next
    }

    async fn on_tick(&mut self) {
        let now = Instant::now();
        // Fire expired protocol timers in a fixed order; each fires once per arming.
        let due: Vec<Timer> = self
            .timers
            .iter()
            .filter(|(_, d)| **d <= now)
            .map(|(k, _)| *k)
            .collect();
        for k in due {
            self.timers.remove(&k);
            let ev = match k {
                Timer::MasterDown => Event::MasterDownTimer,
                Timer::Adver => Event::AdverTimer,
                Timer::PreemptDelay => Event::PreemptDelayExpired,
            };
            self.apply(ev).await;
        }
        if self.garp_again.is_some_and(|d| d <= now) {
            self.garp_again = None;
            self.announce_burst();
        }
        if let Some(d) = self.garp_refresh
            && d <= now
        {
            self.announce_once();
            self.garp_refresh = self.cfg.garp_master_refresh.map(|r| now + r);
        }
        if self.link_check <= now {
            self.link_check = now + LINK_POLL;
            let up = net::interface(&self.cfg.interface)
                .map(|i| i.running)
                .unwrap_or(false);
            if up != self.link_up {
                tracing::info!(instance = %self.cfg.name, interface = %self.cfg.interface, up, "link state changed");
                self.link_up = up;
                self.reevaluate().await;
            }
        }
    }

    /// Effective priority and fatal-fault flag from the current track values.
    fn evaluate_tracks(&self) -> (u8, bool) {
        let t = self.tracks.borrow();
        let list: Vec<(TrackWeight, Option<bool>)> = self
            .cfg
            .track
            .iter()
            .map(|c| {
                let weight = if c.fatal { 0 } else { c.weight };
                (TrackWeight { weight }, t.named.get(&c.name).copied())
            })
            .collect();
        match fsm::effective_priority(self.cfg.priority, &list) {
            Some(p) => (p, false),
            None => (self.inst.priority, true),
        }
    }

    async fn reevaluate(&mut self) {
        let (prio, track_fault) = self.evaluate_tracks();
        let fault = track_fault || !self.link_up;
        if fault && !self.fault {
            self.fault = true;
            self.apply(Event::FaultSet).await;
        }
        if prio != self.inst.priority {
            self.apply(Event::PriorityChanged { priority: prio }).await;
        }
        if !fault && self.fault {
            self.fault = false;
            self.apply(Event::FaultCleared).await;
        }
    }

    async fn on_packet(&mut self, info: packet::IpInfo, payload: &[u8]) {
        let local = packet::Local {
            version: wire_version(&self.cfg),
            vrid: self.cfg.virtual_router_id,
            adver_int_cs: self.cfg.adver_int_cs(),
            auth: self.auth(),
            unicast_peers: &self.cfg.unicast_peer,
        };
        let res = Packet::decode(payload, &info)
            .and_then(|p| packet::check_local(&p, info.src, &local).map(|()| p));
        match res {
            Ok(p) => {
                if info.src == self.inst.params.primary_ip {
                    return; // our own, looped back
                }
                self.shared.count(|c| c.adverts_received += 1);
                let ev = Event::AdvertReceived {
                    priority: p.priority,
                    max_adver_int_cs: p.adver_int_cs,
                    src: info.src,
                };
                self.apply(ev).await;
            }
            Err(e) => {
                self.shared.reject(e.reason());
                if !matches!(e, packet::DecodeError::VridMismatch(_)) {
                    tracing::debug!(instance = %self.cfg.name, src = %info.src, "vrrp advert rejected: {e}");
                }
            }
        }
    }

    fn auth(&self) -> Auth {
        match &self.cfg.auth_pass {
            Some(p) if self.cfg.version == 2 => Auth::pass(p),
            _ => Auth::None,
        }
    }

    async fn apply(&mut self, ev: Event) {
        let actions = fsm::step(&mut self.inst, ev, std::time::Instant::now());
        for a in actions {
            self.execute(a).await;
        }
        if self.inst.state != State::Master {
            self.garp_again = None;
            self.garp_refresh = None;
        }
        self.publish();
    }

    async fn execute(&mut self, a: Action) {
        match a {
            Action::SendAdvert { priority } => self.send_advert(priority).await,
            Action::AddVips => self.set_vips(true),
            Action::RemoveVips => self.set_vips(false),
            Action::SendGratuitous => {
                self.announce_burst();
                let delay = self.cfg.garp_master_delay;
                self.garp_again = (!delay.is_zero()).then(|| Instant::now() + delay);
                self.garp_refresh = self.cfg.garp_master_refresh.map(|r| Instant::now() + r);
            }
            Action::StartTimer { timer, after } => {
                self.timers.insert(timer, Instant::now() + after);
            }
            Action::StopTimer(timer) => {
                self.timers.remove(&timer);
            }
            Action::Notify(state) => self.notify(state),
        }
    }

    async fn send_advert(&mut self, priority: u8) {
        let pkt = Packet {
            version: wire_version(&self.cfg),
            vrid: self.cfg.virtual_router_id,
            priority,
            adver_int_cs: self.cfg.adver_int_cs(),
            addrs: self.cfg.virtual_ipaddress.iter().map(|c| c.addr).collect(),
            auth: self.auth(),
        };
        let src = self.inst.params.primary_ip;
        let dsts: Vec<IpAddr> = if self.cfg.unicast_peer.is_empty() {
            vec![if self.cfg.is_ipv6() {
                packet::MCAST_V6.into()
            } else {
                packet::MCAST_V4.into()
            }]
        } else {
            self.cfg.unicast_peer.clone()
        };
        for dst in dsts {
            let bytes = pkt.encode(src, dst);
            match self.sock.send(src, dst, &bytes).await {
                Ok(()) => {
                    self.shared.count(|c| c.adverts_sent += 1);
                }
                Err(e) => {
                    self.shared.count(|c| c.send_errors += 1);
                    tracing::debug!(instance = %self.cfg.name, %dst, "vrrp send failed: {e}");
                }
            }
        }
    }

    fn set_vips(&self, present: bool) {
        for c in &self.cfg.virtual_ipaddress {
            if let Err(e) = net::set_address(self.ifindex, *c, present) {
                let verb = if present { "adding" } else { "removing" };
                tracing::error!(instance = %self.cfg.name, "{verb} VIP {c} on {}: {e}", self.cfg.interface);
            }
        }
    }

    /// keepalived's `garp_master_repeat` announcements per VIP.
    fn announce_burst(&self) {
        for _ in 0..self.cfg.garp_master_repeat.max(1) {
            self.announce_once();
        }
    }

    fn announce_once(&self) {
        let Some(a) = &self.announcer else { return };
        for c in &self.cfg.virtual_ipaddress {
            if let Err(e) = a.announce(c.addr) {
                tracing::debug!(instance = %self.cfg.name, "announcing {c}: {e}");
            }
        }
    }

    fn notify(&self, state: State) {
        tracing::info!(instance = %self.cfg.name, ?state, priority = self.inst.priority, "vrrp state change");
        let cmd = match state {
            State::Master => &self.cfg.notify_master,
            State::Backup => &self.cfg.notify_backup,
            State::Fault => &self.cfg.notify_fault,
            State::Initialize => &None,
        };
        if let Some(cmd) = cmd {
            notify::run(&self.cfg.name, cmd);
        }
    }

    fn publish(&mut self) {
        let inst = &self.inst;
        let changed = inst.counters.transitions != self.seen_transitions;
        self.seen_transitions = inst.counters.transitions;
        self.shared.update(|s| {
            s.counters.transitions = inst.counters.transitions;
            s.counters.two_masters_seen = inst.counters.two_masters;
            s.state = inst.state.into();
            s.effective_priority = inst.priority;
            s.master = inst.master;
            if changed {
                s.last_transition_unix_ms = SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .ok()
                    .and_then(|d| u64::try_from(d.as_millis()).ok());
                s.last_transition_reason = inst.last_change.as_ref().map(|(_, r)| r.clone());
            }
        });
    }
}
