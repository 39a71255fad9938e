//! The controller's two decisions of its own, pure so they are tested without a daemon:
//! when a reloaded cluster's checks have warmed up (its sets replace the old ones), and what
//! the VRRP tracks say.
use crate::{config::Checks, status::ClusterStatus, vrrp::Tracks};

/// Track name: the XDP program is attached on this host.
pub const TRACK_XDP: &str = "xdp-attached";
/// With `[sync]`: true while this host is master (it holds the flows) or holds every peer's
/// full sync; a host that weights it negatively preempts only when it holds the flows it is
/// about to serve.
pub const TRACK_SYNC: &str = "sync";

/// Track name of a cluster: this host reaches its Patroni API.
pub fn patroni_track(cluster: &str) -> String {
    format!("patroni:{cluster}")
}

/// A reloaded cluster is ready once every check of every node has answered and none is part
/// way up (HAProxy's rise): until then the old sets stay in force.
pub fn warmed_up(s: &ClusterStatus) -> bool {
    s.nodes.iter().all(|n| {
        n.checks
            .iter()
            .all(|c| c.last.is_some() && (c.up || c.successes == 0))
    })
}

/// One cluster as the tracks see it.
pub struct ClusterView<'a> {
    pub name: &'a str,
    pub checks: Checks,
    pub status: &'a ClusterStatus,
}

/// The `sync` track: a master holds the flows it serves; a backup is ready to take over once
/// every peer's full sync is here (`ready`). So a returning master waits for its peer's flows,
/// and a master never loses priority because its peer went away.
pub fn sync_track(ready: bool, masters: &[bool]) -> bool {
    ready || masters.iter().any(|m| *m)
}

/// The tracks the controller publishes: `xdp-attached`, and per cluster `patroni:<name>`,
/// healthy when some node's Patroni API gave an HTTP answer to its last check, whatever the
/// role (a static cluster is always reachable: nothing is checked).
pub fn tracks<'a>(
    attached: bool,
    sync_ready: Option<bool>,
    clusters: impl IntoIterator<Item = ClusterView<'a>>,
) -> Tracks {
    let mut t = Tracks::default();
    t.named.insert(TRACK_XDP.into(), attached);
    if let Some(ready) = sync_ready {
        t.named.insert(TRACK_SYNC.into(), ready);
    }
    for c in clusters {
        let reachable = c.status.nodes.iter().any(|n| {
            n.checks
                .iter()
                .any(|ch| ch.last.as_ref().is_some_and(|l| l.http_status.is_some()))
        });
        t.named.insert(
            patroni_track(c.name),
            c.checks == Checks::Static || reachable,
        );
    }
    t
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::status::{CheckStatus, HealthCounters, LastCheck, NodeStatus, Verdict};

    fn check(up: bool, successes: u32, http_status: Option<Option<u16>>) -> CheckStatus {
        CheckStatus {
            check: "/primary".into(),
            verdict: if up { Verdict::Up } else { Verdict::Unknown },
            up,
            successes,
            failures: 0,
            last: http_status.map(|http_status| LastCheck {
                ok: http_status == Some(200),
                http_status,
                latency_ms: 1.0,
                detail: String::new(),
            }),
        }
    }

    fn cluster(checks: Vec<Vec<CheckStatus>>) -> ClusterStatus {
        ClusterStatus {
            cluster: "pg".into(),
            checks: crate::status::Checks::Patroni,
            primary: None,
            split_brain: false,
            writes_blocked: false,
            nodes: checks
                .into_iter()
                .enumerate()
                .map(|(i, checks)| NodeStatus {
                    name: format!("pg{i}"),
                    addr: [198, 18, 0, 10 + i as u8].into(),
                    port: 5432,
                    api_port: 8008,
                    role: None,
                    state: None,
                    timeline: None,
                    replication_state: None,
                    lag_bytes: None,
                    demoted: false,
                    refusing: false,
                    checks,
                })
                .collect(),
            listeners: Vec::new(),
            counters: HealthCounters::default(),
        }
    }

    fn view(status: &ClusterStatus, checks: Checks) -> ClusterView<'_> {
        ClusterView {
            name: "pg",
            checks,
            status,
        }
    }

    /// Every check answered, each either up or not rising: the new sets may take over.
    #[test]
    fn a_cluster_is_warm_once_every_check_answered_and_none_is_rising() {
        let c = cluster(vec![
            vec![check(true, 3, Some(Some(200)))],
            vec![check(false, 0, Some(Some(503)))],
        ]);
        assert!(warmed_up(&c));
    }

    /// A check not yet answered keeps the old sets in force.
    #[test]
    fn an_unanswered_check_is_not_warm() {
        let c = cluster(vec![
            vec![check(true, 3, Some(Some(200)))],
            vec![check(false, 0, None)],
        ]);
        assert!(!warmed_up(&c));
    }

    /// A node part way up (some successes, not yet `rise`) is not warm: it would join soon.
    #[test]
    fn a_rising_check_is_not_warm() {
        let c = cluster(vec![vec![check(false, 1, Some(Some(200)))]]);
        assert!(!warmed_up(&c));
    }

    /// `xdp-attached` follows the data path; a cluster whose nodes gave any HTTP answer is
    /// reachable, whatever the answer.
    #[test]
    fn a_cluster_is_reachable_when_any_node_answered_over_http() {
        let answered = cluster(vec![
            vec![check(false, 0, Some(Some(503)))],
            vec![check(false, 0, Some(None))],
        ]);
        let t = tracks(true, None, [view(&answered, Checks::Patroni)]);
        assert_eq!(t.named.get(TRACK_XDP), Some(&true));
        assert_eq!(t.named.get("patroni:pg"), Some(&true));
        let t = tracks(false, None, []);
        assert_eq!(t.named.get(TRACK_XDP), Some(&false));
    }

    /// Connection errors only, or no answer yet: the cluster is unreachable from this host.
    #[test]
    fn a_cluster_without_http_answers_is_unreachable() {
        let silent = cluster(vec![
            vec![check(false, 0, Some(None))],
            vec![check(false, 0, None)],
        ]);
        let t = tracks(true, None, [view(&silent, Checks::Patroni)]);
        assert_eq!(t.named.get("patroni:pg"), Some(&false));
    }

    /// A static cluster has no API to reach: its track is always healthy.
    #[test]
    fn a_static_cluster_is_always_reachable() {
        let none = cluster(vec![vec![]]);
        let t = tracks(true, None, [view(&none, Checks::Static)]);
        assert_eq!(t.named.get("patroni:pg"), Some(&true));
    }

    /// With `[sync]`, the `sync` track says whether every peer's flows are here; without it
    /// there is no such track (a configured `sync` track then stays unknown, as any other).
    #[test]
    fn the_sync_track_exists_only_with_sync() {
        let t = tracks(true, Some(false), []);
        assert_eq!(t.named.get(TRACK_SYNC), Some(&false));
        let t = tracks(true, Some(true), []);
        assert_eq!(t.named.get(TRACK_SYNC), Some(&true));
        let t = tracks(true, None, []);
        assert_eq!(t.named.get(TRACK_SYNC), None);
    }

    /// A master keeps its `sync` track whatever its peers do; a backup needs their flows.
    #[test]
    fn the_sync_track_holds_on_a_master_and_waits_on_a_backup() {
        assert!(sync_track(false, &[true]));
        assert!(!sync_track(false, &[false]));
        assert!(!sync_track(false, &[]));
        assert!(sync_track(true, &[false]));
    }
}
