//! Patroni health checks: pure hysteresis and set computation, and the HTTP prober.
//!
//! ```text
//!  node task (probe.rs) ──NodeProbe──▶ cluster task ──watch<ClusterSnapshot>──▶ dataplane writer
//!   one per node: GET /primary,          owns ClusterState (state.rs, pure):       status socket
//!   /replica?lag=…, /read-only           hysteresis (verdict.rs), sets (sets.rs),   metrics
//!   as the listeners need              ◀──"probe now"── scheduling
//! ```
//! Per node per cycle the prober sends one request per distinct check the cluster's listeners
//! need (usually `/primary` and `/replica[?lag=…]`, concurrently): Patroni's own endpoint
//! decides replica health and lag exactly as HAProxy would see it, and the JSON body of every
//! answer gives role, state and timeline for the stricter primary rule and split-brain choice.
pub mod patroni;
pub mod probe;
pub mod sets;
pub mod state;
pub mod verdict;

use std::time::Instant;

use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use crate::config::{self, Checks, StaticRole};
use crate::model::DesiredListener;
use sets::NodeView;
use state::ClusterState;
use verdict::{CheckKind, Verdict};

/// What a cluster's listeners should serve now, and why.
#[derive(Clone, Debug, PartialEq)]
pub struct ClusterSnapshot {
    /// One per configured listener, in config order. Compare with the previous value before
    /// writing maps: `status` changes on every check, `listeners` only when a set changes.
    pub listeners: Vec<DesiredListener>,
    pub status: ClusterStatus,
}

/// The status types are the JSON contract's (`router_ebpf::status`): the health task builds them
/// directly, so what `pgrouter status` shows is what it decided on.
pub use router_ebpf::status::{
    CheckStatus, ClusterStatus, HealthCounters as Counters, LastCheck, NodeStatus,
};

/// A running cluster health task. Dropping the handle stops it too; once it has stopped,
/// receivers' `changed()` returns an error.
#[derive(Debug)]
pub struct ClusterHandle {
    desired: watch::Receiver<ClusterSnapshot>,
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
    refused: mpsc::UnboundedSender<usize>,
}

impl ClusterHandle {
    /// Latest snapshot; `changed()` wakes on every update.
    pub fn desired(&self) -> watch::Receiver<ClusterSnapshot> {
        self.desired.clone()
    }

    /// The data path saw node `idx` (config order) refuse a connection; see
    /// [`ClusterState::refused`]. Ignored by static clusters.
    pub fn refused(&self, idx: usize) {
        let _ = self.refused.send(idx);
    }

    /// Stops the cluster task and its probers (in-flight requests are dropped).
    pub fn shutdown(&self) {
        let _ = self.stop.send(true);
    }

    /// Waits for the task to finish after [`shutdown`](Self::shutdown).
    pub async fn join(self) {
        let _ = self.task.await;
    }
}

/// Starts health checking `cfg` (needs a Tokio runtime). Static clusters publish their
/// `node.role` sets once and never probe.
pub fn spawn_cluster(cfg: &config::Cluster) -> ClusterHandle {
    let (stop, mut stop_rx) = watch::channel(false);
    let (refused, mut refused_rx) = mpsc::unbounded_channel();
    if cfg.checks == Checks::Static {
        let (tx, desired) = watch::channel(static_snapshot(cfg));
        let task = tokio::spawn(async move {
            let _ = stop_rx.wait_for(|s| *s).await;
            drop(tx);
        });
        return ClusterHandle {
            desired,
            stop,
            task,
            refused,
        };
    }

    let mut state = ClusterState::new(cfg, Instant::now());
    let (tx, desired) = watch::channel(state.snapshot());
    let client = probe::client(cfg);
    if let Err(e) = &client {
        tracing::error!(cluster = %cfg.name, "cannot build the Patroni API client, every check will fail: {e}");
    }
    let (res_tx, mut res_rx) = mpsc::channel(cfg.nodes.len().max(1) * 2);
    let cmd_txs: Vec<mpsc::Sender<()>> = cfg
        .nodes
        .iter()
        .enumerate()
        .map(|(i, node)| {
            let (cmd_tx, cmd_rx) = mpsc::channel(1);
            let target = probe::Target::new(cfg, node, state.kinds().to_vec());
            tokio::spawn(probe::node_task(
                i,
                client.clone(),
                target,
                cmd_rx,
                res_tx.clone(),
            ));
            cmd_tx
        })
        .collect();
    drop(res_tx);

    let task = tokio::spawn(async move {
        loop {
            for i in state.take_due(Instant::now()) {
                // Capacity 1 and a node is never asked twice while in flight, so this only
                // fails if the node task is gone (shutdown).
                if let Some(cmd_tx) = cmd_txs.get(i) {
                    let _ = cmd_tx.try_send(());
                }
            }
            let wake = state.next_due();
            tokio::select! {
                r = res_rx.recv() => {
                    let Some((i, probe)) = r else { break };
                    state.apply(i, probe, Instant::now());
                    tx.send_replace(state.snapshot());
                }
                Some(i) = refused_rx.recv() => {
                    state.refused(i, Instant::now());
                    // Repeated refusals during a hold change nothing: no wake-up for them.
                    let snap = state.snapshot();
                    tx.send_if_modified(|cur| {
                        let changed = *cur != snap;
                        if changed {
                            *cur = snap;
                        }
                        changed
                    });
                }
                _ = sleep_until_opt(wake) => {}
                _ = stop_rx.wait_for(|s| *s) => break,
            }
        }
    });
    ClusterHandle {
        desired,
        stop,
        task,
        refused,
    }
}

async fn sleep_until_opt(t: Option<Instant>) {
    match t {
        Some(t) => tokio::time::sleep_until(t.into()).await,
        None => std::future::pending().await,
    }
}

/// The snapshot of a `checks = "static"` cluster: `node.role` mapped onto the verdicts a
/// healthy Patroni node of that role would earn, then the normal set rules.
pub fn static_snapshot(cfg: &config::Cluster) -> ClusterSnapshot {
    let kinds = sets::needed_checks(cfg);
    let views: Vec<NodeView> = cfg
        .nodes
        .iter()
        .map(|n| {
            let role = n.role.unwrap_or(StaticRole::Down);
            let verdicts = kinds
                .iter()
                .map(|k| {
                    let up = match (k, role) {
                        (_, StaticRole::Down) => false,
                        (CheckKind::Primary, r) => r == StaticRole::Primary,
                        (CheckKind::Replica { .. }, r) => r == StaticRole::Replica,
                        (CheckKind::ReadOnly { .. }, _) => true,
                    };
                    (k.clone(), if up { Verdict::Up } else { Verdict::Down })
                })
                .collect();
            NodeView {
                verdicts,
                timeline: None,
                demoted: false,
                refusing: false,
            }
        })
        .collect();
    let computed = sets::compute(cfg, &views);
    let role_name = |r: Option<StaticRole>| {
        r.map(|r| match r {
            StaticRole::Primary => "primary",
            StaticRole::Replica => "replica",
            StaticRole::Down => "down",
        })
    };
    ClusterSnapshot {
        listeners: computed.listeners,
        status: ClusterStatus {
            cluster: cfg.name.clone(),
            checks: cfg.checks.into(),
            primary: computed
                .primary
                .chosen
                .and_then(|i| cfg.nodes.get(i))
                .map(|n| n.name.clone()),
            split_brain: false,
            writes_blocked: false,
            nodes: cfg
                .nodes
                .iter()
                .map(|n| NodeStatus {
                    name: n.name.clone(),
                    addr: n.host,
                    port: n.port,
                    api_port: n.api_port,
                    role: role_name(n.role).map(str::to_owned),
                    state: None,
                    timeline: None,
                    replication_state: None,
                    lag_bytes: None,
                    demoted: false,
                    refusing: false,
                    checks: Vec::new(),
                })
                .collect(),
            listeners: computed.sets,
            counters: Counters::default(),
        },
    }
}
