//! What the probes mean: outages, failures, which nodes served, how new connections fared.
//! Pure functions of the recorded probes.
use super::{Failure, Probe};

/// Longest time during which every probe started in `[from, to)` failed: from the start of
/// the first failed probe to the start of the next successful one (or `to`). 0 if none
/// failed. Resolution: the probe interval.
pub fn outage(probes: &[Probe], from: u64, to: u64) -> u64 {
    let mut worst = 0;
    let mut first_fail: Option<u64> = None;
    for p in probes.iter().filter(|p| p.t_ms >= from && p.t_ms < to) {
        if p.ok {
            if let Some(f) = first_fail.take() {
                worst = worst.max(p.t_ms - f);
            }
        } else if first_fail.is_none() {
            first_fail = Some(p.t_ms);
        }
    }
    if let Some(f) = first_fail {
        worst = worst.max(to.saturating_sub(f));
    }
    worst
}

/// Failed probes in a window.
pub fn failures(probes: &[Probe], from: u64, to: u64) -> usize {
    probes
        .iter()
        .filter(|p| p.t_ms >= from && p.t_ms < to && !p.ok)
        .count()
}

/// Successful writes whose server said it was in recovery (must never happen).
pub fn non_primary_writes(probes: &[Probe]) -> usize {
    probes
        .iter()
        .filter(|p| p.ok && p.recovery == Some(true))
        .count()
}

/// Distinct serving nodes of successful probes in a window, in order of first appearance.
pub fn served(probes: &[Probe], from: u64, to: u64) -> Vec<String> {
    let mut v: Vec<String> = vec![];
    for p in probes
        .iter()
        .filter(|p| p.ok && p.t_ms >= from && p.t_ms < to)
    {
        if let Some(n) = &p.node
            && !v.contains(n)
        {
            v.push(n.clone());
        }
    }
    v
}

/// How the new connection attempts started in a window ended.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Attempts {
    pub total: usize,
    pub refused: usize,
    pub timed_out: usize,
    /// Connected, then PostgreSQL said no.
    pub server: usize,
    pub other: usize,
    /// The longest an attempt waited for its connect to end, connected or not (ms); a probe
    /// cut off at its deadline counts with its whole duration.
    pub longest_wait_ms: u64,
    /// The longest a refused attempt waited for the refusal (ms).
    pub longest_refusal_ms: u64,
    /// The first message of PostgreSQL's own refusals.
    pub server_error: Option<String>,
}

impl Attempts {
    pub fn failed(&self) -> usize {
        self.refused + self.timed_out + self.server + self.other
    }
}

/// [`Attempts`] of the probes started in `[from, to)`.
pub fn attempts(probes: &[Probe], from: u64, to: u64) -> Attempts {
    let mut a = Attempts::default();
    for p in probes.iter().filter(|p| p.t_ms >= from && p.t_ms < to) {
        a.total += 1;
        let wait = p.connect_ms.unwrap_or(p.dur_ms);
        a.longest_wait_ms = a.longest_wait_ms.max(wait);
        match (p.ok, p.failure) {
            (true, _) => {}
            (false, Some(Failure::Refused)) => {
                a.refused += 1;
                a.longest_refusal_ms = a.longest_refusal_ms.max(wait);
            }
            (false, Some(Failure::TimedOut)) => a.timed_out += 1,
            (false, Some(Failure::Server)) => {
                a.server += 1;
                if a.server_error.is_none() {
                    a.server_error.clone_from(&p.error);
                }
            }
            (false, _) => a.other += 1,
        }
    }
    a
}

/// The first error message seen in a window (for reports).
pub fn first_error(probes: &[Probe], from: u64, to: u64) -> Option<String> {
    probes
        .iter()
        .find(|p| p.t_ms >= from && p.t_ms < to && !p.ok)
        .map(|p| {
            format!(
                "{} (after {} ms)",
                p.error.as_deref().unwrap_or("?"),
                p.dur_ms
            )
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(t_ms: u64, ok: bool) -> Probe {
        Probe {
            t_ms,
            ok,
            node: Some("pg1".into()),
            dur_ms: 1,
            connect_ms: Some(1),
            recovery: Some(false),
            error: None,
            failure: (!ok).then_some(Failure::Refused),
        }
    }

    fn held(t_ms: u64, connect_ms: u64) -> Probe {
        Probe {
            connect_ms: Some(connect_ms),
            dur_ms: connect_ms + 5,
            ..p(t_ms, true)
        }
    }

    fn failed(t_ms: u64, f: Failure, wait_ms: u64) -> Probe {
        Probe {
            failure: Some(f),
            connect_ms: (f != Failure::TimedOut).then_some(wait_ms),
            dur_ms: wait_ms,
            error: Some(format!("{f:?}")),
            ..p(t_ms, false)
        }
    }
    /// The switchover's per-mode line rests on this: a held SYN is a slow success, a refusal
    /// a prompt failure, a probe cut off at its deadline a hang that counts with its duration.
    #[test]
    fn attempts_tell_held_refused_and_hung_apart() {
        let v = vec![
            held(0, 3),
            held(100, 1020),
            failed(200, Failure::Refused, 2),
            failed(300, Failure::Server, 4),
            failed(400, Failure::TimedOut, 12_000),
            held(900, 3),
        ];
        let a = attempts(&v, 0, 500);
        assert_eq!(
            (
                a.total,
                a.refused,
                a.server,
                a.timed_out,
                a.other,
                a.failed()
            ),
            (5, 1, 1, 1, 0, 3)
        );
        assert_eq!((a.longest_wait_ms, a.longest_refusal_ms), (12_000, 2));
        assert_eq!(a.server_error.as_deref(), Some("Server"));
        let a = attempts(&v, 0, 200);
        assert_eq!((a.total, a.failed(), a.longest_wait_ms), (2, 0, 1020));
    }
    #[test]
    fn outage_is_the_longest_failing_span() {
        let v = vec![
            p(0, true),
            p(100, false),
            p(200, false),
            p(300, true),
            p(400, false),
            p(500, true),
        ];
        assert_eq!(outage(&v, 0, 1000), 200);
        assert_eq!(outage(&v, 0, 250), 150);
        assert_eq!(outage(&[p(0, true), p(100, true)], 0, 1000), 0);
        assert_eq!(failures(&v, 0, 1000), 3);
    }
}
