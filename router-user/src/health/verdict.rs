//! Pure hysteresis: HAProxy's `rise`/`fall` per node per check kind.
use serde::Serialize;

use crate::config::{Listener, ListenerKind};

/// Which Patroni endpoint a check asks. Listeners with the same kind and lag share one check.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum CheckKind {
    /// `GET /primary`, judged on status *and* body (see `patroni::judge`).
    Primary,
    /// `GET /replica[?lag=BYTES]`.
    Replica { lag: Option<u64> },
    /// `GET /read-only[?lag=BYTES]`.
    ReadOnly { lag: Option<u64> },
}

impl CheckKind {
    /// The check a listener's membership depends on.
    pub fn for_listener(l: &Listener) -> Self {
        let lag = l.lag.as_ref().map(|l| l.bytes);
        match l.kind {
            ListenerKind::Primary => CheckKind::Primary,
            ListenerKind::Replica => CheckKind::Replica { lag },
            ListenerKind::ReadOnly => CheckKind::ReadOnly { lag },
        }
    }

    /// Request path and query. Lag is sent as plain bytes, which Patroni's `parse_int` reads
    /// back unchanged, so our parse of the config value is the one that counts.
    pub fn path(&self) -> String {
        match self {
            CheckKind::Primary => "/primary".into(),
            CheckKind::Replica { lag: None } => "/replica".into(),
            CheckKind::Replica { lag: Some(b) } => format!("/replica?lag={b}"),
            CheckKind::ReadOnly { lag: None } => "/read-only".into(),
            CheckKind::ReadOnly { lag: Some(b) } => format!("/read-only?lag={b}"),
        }
    }
}

impl std::fmt::Display for CheckKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.path())
    }
}

/// A node's standing for one check kind; the status contract's type.
pub use router_ebpf::status::Verdict;

/// A change of verdict.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transition {
    Up,
    Down,
}

/// Consecutive-result counter. Every node starts `Unknown` (treated as down for selection):
/// a fresh controller sends nothing anywhere before `rise` passing checks.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Hysteresis {
    pub successes: u32,
    pub failures: u32,
    pub verdict: Verdict,
}

impl Hysteresis {
    /// Records one result: `rise` consecutive successes mark up, `fall` consecutive failures
    /// mark down. Returns the transition, if any.
    pub fn observe(&mut self, ok: bool, rise: u32, fall: u32) -> Option<Transition> {
        if ok {
            self.successes = self.successes.saturating_add(1);
            self.failures = 0;
            if self.verdict != Verdict::Up && self.successes >= rise {
                self.verdict = Verdict::Up;
                return Some(Transition::Up);
            }
        } else {
            self.failures = self.failures.saturating_add(1);
            self.successes = 0;
            if self.verdict != Verdict::Down && self.failures >= fall {
                self.verdict = Verdict::Down;
                return Some(Transition::Down);
            }
        }
        None
    }

    /// Records a failure that needs no confirmation (Patroni itself said "not primary"):
    /// `fall` guards against flaky networks, not against a node telling us its role.
    pub fn force_down(&mut self) -> Option<Transition> {
        self.failures = self.failures.saturating_add(1);
        self.successes = 0;
        if self.verdict != Verdict::Down {
            self.verdict = Verdict::Down;
            return Some(Transition::Down);
        }
        None
    }

    pub fn is_up(&self) -> bool {
        self.verdict == Verdict::Up
    }

    /// Counting towards a different verdict: HAProxy then checks at `fastinter`.
    pub fn transitioning(&self) -> bool {
        (self.verdict != Verdict::Up && self.successes > 0)
            || (self.verdict != Verdict::Down && self.failures > 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(h: &mut Hysteresis, results: &[bool], rise: u32, fall: u32) -> Vec<Option<Transition>> {
        results
            .iter()
            .map(|&ok| h.observe(ok, rise, fall))
            .collect()
    }

    #[test]
    fn starts_unknown_and_not_up() {
        let h = Hysteresis::default();
        assert_eq!(h.verdict, Verdict::Unknown);
        assert!(!h.is_up());
        assert!(!h.transitioning());
    }

    #[test]
    fn rise_needs_consecutive_successes() {
        let mut h = Hysteresis::default();
        let t = run(&mut h, &[true, false, true, true], 2, 3);
        assert_eq!(t, vec![None, None, None, Some(Transition::Up)]);
        assert!(h.is_up());
    }

    #[test]
    fn fall_needs_consecutive_failures() {
        let mut h = Hysteresis::default();
        h.observe(true, 1, 3);
        let t = run(&mut h, &[false, false, true, false, false, false], 1, 3);
        assert_eq!(
            t,
            vec![None, None, None, None, None, Some(Transition::Down)]
        );
        assert_eq!(h.verdict, Verdict::Down);
    }

    #[test]
    fn rise_one_goes_up_on_first_success() {
        let mut h = Hysteresis::default();
        assert_eq!(h.observe(true, 1, 2), Some(Transition::Up));
        assert_eq!(h.observe(true, 1, 2), None);
    }

    #[test]
    fn unknown_goes_down_after_fall_failures() {
        let mut h = Hysteresis::default();
        assert_eq!(h.observe(false, 1, 2), None);
        assert!(h.transitioning());
        assert_eq!(h.observe(false, 1, 2), Some(Transition::Down));
        assert!(!h.transitioning());
        assert_eq!(h.observe(false, 1, 2), None);
    }

    #[test]
    fn transitioning_while_counting() {
        let mut h = Hysteresis::default();
        h.observe(true, 1, 3);
        assert!(!h.transitioning());
        h.observe(false, 1, 3);
        assert!(h.transitioning());
        h.observe(true, 1, 3);
        assert!(!h.transitioning());
    }

    #[test]
    fn force_down_skips_fall() {
        let mut h = Hysteresis::default();
        h.observe(true, 1, 3);
        assert_eq!(h.force_down(), Some(Transition::Down));
        assert_eq!(h.force_down(), None);
        assert_eq!(h.observe(true, 2, 3), None);
        assert_eq!(h.observe(true, 2, 3), Some(Transition::Up));
    }

    #[test]
    fn paths_carry_lag_in_bytes() {
        assert_eq!(CheckKind::Primary.path(), "/primary");
        assert_eq!(
            CheckKind::Replica {
                lag: Some(10485760)
            }
            .path(),
            "/replica?lag=10485760"
        );
        assert_eq!(CheckKind::ReadOnly { lag: None }.path(), "/read-only");
    }
}
