//! New connections during a switchover through the hold and the reject listener, with the
//! VRRP master's kernel counters of both.
use super::Env;
use super::Outcome;
use crate::demo::edges::{self, EmptySetCounters};
use crate::demo::prober::{self, Attempts, Kind, Prober, Target};
use crate::lab::VIP;
use anyhow::{Result, anyhow, bail};
use std::time::{Duration, Instant};

/// New connections through both `on_empty` modes during a switchover: a second prober opens a
/// connection every 100 ms to VIP:5000 (`hold`, the default) and to VIP:5010 (`reject`), each
/// with a real client's 10 s connect timeout (pgjdbc's `connectTimeout`), and runs a write; the
/// VRRP master's kernel counters of both listeners are read before and after.
pub struct OnEmptyProbe {
    prober: Prober,
    edge: &'static str,
    before: [EmptySetCounters; 2],
}

const HOLD_LABEL: &str = "new connections :5000 (hold)";
const REJECT_LABEL: &str = "new connections :5010 (reject)";
/// A refusal sooner than the kernel's first SYN retransmission (1 s) answered the first SYN:
/// none was dropped.
const PROMPT_MS: u64 = 1000;

impl OnEmptyProbe {
    pub(super) fn start(env: &Env) -> Result<Self> {
        let edge = *env
            .pgrouter_edges
            .first()
            .ok_or_else(|| anyhow!("no edge runs pgrouter"))?;
        let before = Self::counters(edge)?;
        let target = |label: &str, port| Target {
            label: label.into(),
            addr: VIP.into(),
            port,
            kind: Kind::Write,
            connect_timeout: prober::CLIENT_CONNECT_TIMEOUT,
        };
        let prober = Prober::start_probes(
            env.prober.clock,
            vec![
                target(HOLD_LABEL, 5000),
                target(REJECT_LABEL, edges::REJECT_PORT),
            ],
        )?;
        // Both listeners serve before the switchover starts.
        let t = Instant::now();
        while ![HOLD_LABEL, REJECT_LABEL]
            .iter()
            .all(|l| prober.probes(l).iter().any(|p| p.ok))
        {
            if t.elapsed() > Duration::from_secs(10) {
                let last = |l| prober.probes(l).last().and_then(|p| p.error.clone());
                bail!(
                    "no successful write through :5000 and :{} within 10 s (last errors: {:?}, {:?})",
                    edges::REJECT_PORT,
                    last(HOLD_LABEL),
                    last(REJECT_LABEL)
                );
            }
            Env::sleep(Duration::from_millis(50));
        }
        Ok(Self {
            prober,
            edge,
            before,
        })
    }

    /// The hold and the reject listener's counters on `edge`.
    fn counters(edge: &str) -> Result<[EmptySetCounters; 2]> {
        let v = edges::status(edge).ok_or_else(|| anyhow!("pgrouter on {edge}: no status"))?;
        let get = |l| {
            EmptySetCounters::of(&v, l).ok_or_else(|| {
                anyhow!(
                    "pgrouter on {edge}: no counters of listener {l} in status --json: {:.600}",
                    serde_json::to_string(&v.listeners).unwrap_or_default()
                )
            })
        };
        Ok([get(edges::WRITE_LISTENER)?, get(edges::REJECT_LISTENER)?])
    }

    /// Counts the attempts started in `[action, to)` once they have all ended, reports them
    /// and asserts what each mode promises.
    pub(super) fn finish(
        self,
        env: &Env,
        o: &mut Outcome,
        action: u64,
        to: u64,
        new: &str,
    ) -> Result<()> {
        let deadline = Duration::from_secs(1) + prober::CLIENT_CONNECT_TIMEOUT * 2;
        let ended = self.prober.wait_finished(to, deadline);
        self.prober.stop();
        let after = Self::counters(self.edge)?;
        let (kh, kr) = (
            after[0].since(self.before[0]),
            after[1].since(self.before[1]),
        );
        let hold = prober::attempts(&self.prober.probes(HOLD_LABEL), action, to);
        let rej = prober::attempts(&self.prober.probes(REJECT_LABEL), action, to);
        // What the first failed hold attempt saw: a rare one is the old primary's own doing
        // (its shutdown closing a connection in its startup phase), and the report says so.
        if hold.other + hold.server + hold.timed_out > 0
            && let Some(e) = prober::first_error(&self.prober.probes(HOLD_LABEL), action, to)
        {
            o.notes.push(format!("hold: first failed attempt: {e}"));
        }
        let line = format!(
            "switchover: new connections — hold: {}; reject: {}",
            mode_text(&hold, kh.rejected),
            mode_text(&rej, kr.rejected)
        );
        o.notes.push(line.clone());
        o.on_empty = Some(line);
        o.notes.push(format!(
            "pgrouter on {}: {} (hold) held {} SYNs, answered {} with a RST, its nodes refused {}; {} (reject) answered {} with a RST, held {}, its nodes refused {}",
            self.edge,
            edges::WRITE_LISTENER,
            kh.held,
            kh.rejected,
            kh.node_refusals,
            edges::REJECT_LISTENER,
            kr.rejected,
            kr.held,
            kr.node_refusals
        ));
        o.check(
            format!("every new connection attempt ended within its deadline ({ended})"),
            ended,
        );
        // The set was empty at most from the action until writes reached the new primary
        // (the 1 s outage probes); the hold promise applies when that is within the hold.
        let hold_ms = u64::from(router_ebpf::DEFAULT_EMPTY_HOLD_MS);
        let back_ms = env
            .prober
            .probes("pgrouter writes")
            .iter()
            .find(|p| p.ok && p.t_ms >= action && p.node.as_deref() == Some(new))
            .map(|p| p.t_ms - action);
        match back_ms {
            Some(b) if b < hold_ms => o.check(
                format!(
                    "hold: no attempt refused by pgrouter or hung, writes back {b} ms after the switchover began (< the {hold_ms} ms hold): pgrouter RSTs +{}, timed out {}, other {}, refused {} <= the nodes' own refusals {}",
                    kh.rejected, hold.timed_out, hold.other, hold.refused, kh.node_refusals
                ),
                kh.rejected == 0
                    && hold.timed_out == 0
                    && hold.other == 0
                    && hold.refused as u64 <= kh.node_refusals,
            ),
            _ => o.notes.push(format!(
                "hold: not asserted, writes back {back_ms:?} ms after the switchover began (hold {hold_ms} ms): RSTs after the hold are expected"
            )),
        }
        o.check(
            format!(
                "reject: every failed attempt was refused at once or by PostgreSQL: refused {} (the longest after {} ms < {PROMPT_MS} ms), timed out {}, other {}",
                rej.refused, rej.longest_refusal_ms, rej.timed_out, rej.other
            ),
            rej.timed_out == 0 && rej.other == 0 && rej.longest_refusal_ms < PROMPT_MS,
        );
        // While the hold listener held a SYN the same set was empty for the reject one, which
        // the prober hit every 100 ms.
        if hold.longest_wait_ms >= PROMPT_MS {
            o.check(
                format!(
                    "reject: pgrouter refused at once while the set was empty (RSTs +{}, refused attempts {})",
                    kr.rejected, rej.refused
                ),
                kr.rejected > 0 && rej.refused > 0,
            );
        }
        Ok(())
    }
}

/// "0 of 37 failed (longest connect 1.02 s)", with the failures by kind. `rsts`: the RSTs
/// pgrouter sent for want of a backend on the listener meanwhile; refusals beyond them came
/// from a node (the old primary's closed port, before that refusal took it out of the set).
fn mode_text(a: &Attempts, rsts: u64) -> String {
    let mut kinds = vec![];
    if a.refused > 0 {
        let by_router = (a.refused as u64).min(rsts);
        let by_node = a.refused as u64 - by_router;
        kinds.push(format!(
            "{} refused {} ({by_router} by pgrouter, {by_node} by a node)",
            a.refused,
            if a.longest_refusal_ms < PROMPT_MS {
                "at once".to_string()
            } else {
                format!("after up to {:.2} s", a.longest_refusal_ms as f64 / 1000.0)
            }
        ));
    }
    if a.timed_out > 0 {
        kinds.push(format!("{} timed out", a.timed_out));
    }
    if a.server > 0 {
        kinds.push(format!(
            "{} by PostgreSQL: {}",
            a.server,
            a.server_error
                .as_deref()
                .map_or("?", |e| e.trim_start_matches("db error: "))
        ));
    }
    if a.other > 0 {
        kinds.push(format!("{} other", a.other));
    }
    format!(
        "{} of {} failed{} (longest connect {:.2} s)",
        a.failed(),
        a.total,
        if kinds.is_empty() {
            String::new()
        } else {
            format!(": {}", kinds.join(", "))
        },
        a.longest_wait_ms as f64 / 1000.0
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_mode_line_attributes_refusals_to_pgrouter_or_a_node() {
        let a = Attempts {
            total: 56,
            refused: 25,
            longest_wait_ms: 8,
            longest_refusal_ms: 3,
            ..Default::default()
        };
        assert_eq!(
            mode_text(&a, 24),
            "25 of 56 failed: 25 refused at once (24 by pgrouter, 1 by a node) (longest connect 0.01 s)"
        );
        let held = Attempts {
            total: 37,
            longest_wait_ms: 1020,
            ..Default::default()
        };
        assert_eq!(
            mode_text(&held, 0),
            "0 of 37 failed (longest connect 1.02 s)"
        );
    }
}
