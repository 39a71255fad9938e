//! The pgbench comparison's report (Markdown for BENCHMARKS.md); every lab section adds its
//! notes to it.
use std::{fmt::Write as _, fs};

use super::pgbench::{Mode, Params, Sample, Target};
use super::session::HAPROXY_ADDR;
use crate::lab::VIP;

/// Results of the comparison.
#[derive(Clone, Debug, Default)]
pub struct Report {
    pub params: Option<Params>,
    /// (mode, target, sample) in run order.
    pub samples: Vec<(Mode, Target, Sample)>,
    pub leader: String,
    pub xdp_mode: String,
    /// /proc/loadavg (1, 5, 15 min) before and after the runs: other work on the machine.
    pub load: (String, String),
    pub notes: Vec<String>,
}

pub(super) fn loadavg() -> String {
    fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

fn mean(v: &[f64]) -> f64 {
    if v.is_empty() {
        f64::NAN
    } else {
        v.iter().sum::<f64>() / v.len() as f64
    }
}

impl Report {
    fn of(&self, mode: Mode, target: Target) -> Vec<&Sample> {
        self.samples
            .iter()
            .filter(|(m, t, _)| *m == mode && *t == target)
            .map(|(_, _, s)| s)
            .collect()
    }

    /// Mean TPS of a mode/target.
    pub fn tps(&self, mode: Mode, target: Target) -> f64 {
        mean(
            &self
                .of(mode, target)
                .iter()
                .map(|s| s.tps)
                .collect::<Vec<_>>(),
        )
    }

    /// The markdown section for BENCHMARKS.md.
    pub fn markdown(&self) -> String {
        let mut md = String::new();
        let _ = writeln!(md, "## pgbench: direct vs HAProxy vs pgrouter\n");
        if let Some(p) = &self.params {
            let _ = writeln!(
                md,
                "Patroni lab (`cargo xtask lab`), PostgreSQL 15, `pgbench -i -s {}`, leader {}; pgbench from `pgrlab-client`: \
                 `pgbench -n -S -c {} -j {} -T {}` (and the same with `-C`), {} repetitions per target and mode, targets \
                 alternating in rotated order; a {} s warm-up run per target is not counted. **direct** = `{}:5432`, \
                 **HAProxy** = the seed's configuration (`lab/haproxy.cfg.tmpl`) on edge2, `{HAPROXY_ADDR}:5000`, \
                 **pgrouter** = `pgrouter run` on edge1 ({}{}), `{VIP}:5000`{}. Everything (client, proxies, three \
                 PostgreSQL nodes, etcd) shares this machine's cores, so the figures compare paths, not hardware. \
                 Method: [docs/benchmarks.md](docs/benchmarks.md).\n",
                p.scale,
                self.leader.split(' ').next().unwrap_or("?"),
                p.clients,
                p.threads,
                p.seconds,
                p.reps,
                p.warmup_seconds,
                self.leader.split(' ').nth(1).unwrap_or("?"),
                self.xdp_mode,
                if self.xdp_mode.starts_with("native") {
                    "; an XDP_PASS program on the root-side veth peer, see the method"
                } else {
                    ""
                },
                if p.generic_too {
                    "; **pgrouter, generic XDP** = the same with `mode = \"generic\"` (pgrouter is \
                     restarted with the other mode between runs as the rotation needs)"
                } else {
                    ""
                },
            );
            if p.hairpin {
                let _ = writeln!(
                    md,
                    "**hairpin floor** = direct to `{}:5432`, but the client's and the leader's \
                     neighbour entries for each other point at edge2, where a generic-XDP program \
                     rewrites the two MAC addresses and bounces the frame (XDP_TX; \
                     `xtask/src/bench/hairpin.rs`): the same extra hop as pgrouter's (every packet \
                     crosses the bridge twice and an edge host's veth) with no NAT, no conntrack, no \
                     lookups — the floor for any router on an edge host in this lab. Each run checks \
                     that edge2's own IP stack did not carry the traffic.\n",
                    self.leader.split(' ').nth(1).unwrap_or("?"),
                );
            }
        }
        for mode in Mode::ALL {
            if self.of(mode, Target::Direct).is_empty() {
                continue;
            }
            let _ = writeln!(md, "### {}\n", mode.name());
            let conn = mode == Mode::Connect;
            let _ = writeln!(
                md,
                "| target | TPS (mean) | runs | mean latency ms{} | vs direct |\n|---|---:|---|---:|{}---:|",
                if conn { " | connection ms" } else { "" },
                if conn { "---:|" } else { "" }
            );
            let direct = self.tps(mode, Target::Direct);
            for t in Target::ALL {
                let s = self.of(mode, t);
                if s.is_empty() {
                    continue;
                }
                let runs: Vec<String> = s.iter().map(|s| format!("{:.0}", s.tps)).collect();
                let lat = mean(&s.iter().map(|s| s.latency_ms).collect::<Vec<_>>());
                let conn_ms = mean(&s.iter().filter_map(|s| s.conn_ms).collect::<Vec<_>>());
                let failed: u64 = s.iter().map(|s| s.failed).sum();
                let _ = writeln!(
                    md,
                    "| {}{} | {:.0} | {} | {:.3}{} | {:.3}× |",
                    t.name(),
                    if failed > 0 {
                        format!(" ({failed} failed)")
                    } else {
                        String::new()
                    },
                    self.tps(mode, t),
                    runs.join(", "),
                    lat,
                    if conn {
                        format!(" | {conn_ms:.3}")
                    } else {
                        String::new()
                    },
                    self.tps(mode, t) / direct
                );
            }
            let r = |a: Target, b: Target| self.tps(mode, a) / self.tps(mode, b);
            let _ = writeln!(
                md,
                "\nRatios (TPS): pgrouter/direct **{:.3}×**, pgrouter/HAProxy **{:.3}×**, HAProxy/direct {:.3}×.\n",
                r(Target::Pgrouter, Target::Direct),
                r(Target::Pgrouter, Target::Haproxy),
                r(Target::Haproxy, Target::Direct),
            );
            if !self.of(mode, Target::PgrouterGeneric).is_empty() {
                let _ = writeln!(
                    md,
                    "Generic XDP: pgrouter/direct {:.3}×, pgrouter/HAProxy {:.3}×.\n",
                    r(Target::PgrouterGeneric, Target::Direct),
                    r(Target::PgrouterGeneric, Target::Haproxy),
                );
            }
            if !self.of(mode, Target::Hairpin).is_empty() {
                let _ = writeln!(
                    md,
                    "Hairpin floor/direct **{:.3}×**: what the extra hop through an edge host costs in \
                     this lab with no router logic at all. pgrouter/floor: {:.3}× native{}.\n",
                    r(Target::Hairpin, Target::Direct),
                    r(Target::Pgrouter, Target::Hairpin),
                    if self.of(mode, Target::PgrouterGeneric).is_empty() {
                        String::new()
                    } else {
                        format!(
                            ", **{:.3}×** generic (same XDP mode as the floor)",
                            r(Target::PgrouterGeneric, Target::Hairpin)
                        )
                    },
                );
            }
        }
        if !self.load.0.is_empty() {
            let _ = writeln!(
                md,
                "Load average (1/5/15 min) before the runs: {}; after: {}.\n",
                self.load.0, self.load.1
            );
        }
        for n in &self.notes {
            let _ = writeln!(md, "Note: {n}\n");
        }
        md
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markdown_has_ratios_per_mode() {
        let mut r = Report {
            params: Some(Params {
                seconds: 10,
                reps: 2,
                clients: 8,
                threads: 2,
                scale: 10,
                warmup_seconds: 3,
                generic_too: true,
                hairpin: true,
            }),
            leader: "pg1 198.18.0.11".into(),
            xdp_mode: "native XDP on eth0".into(),
            ..Report::default()
        };
        for (mode, base) in [(Mode::Persistent, 10_000.0), (Mode::Connect, 400.0)] {
            for (t, f) in [
                (Target::Direct, 1.0),
                (Target::Haproxy, 0.8),
                (Target::Pgrouter, 0.97),
            ] {
                for _ in 0..2 {
                    r.samples.push((
                        mode,
                        t,
                        Sample {
                            tps: base * f,
                            latency_ms: 1.0 / f,
                            conn_ms: (mode == Mode::Connect).then_some(2.0),
                            txns: 1,
                            failed: 0,
                        },
                    ));
                }
            }
        }
        let md = r.markdown();
        assert!(md.contains("| pgrouter | 9700 | 9700, 9700 |"), "{md}");
        assert!(md.contains("pgrouter/direct **0.970×**"), "{md}");
        assert!(md.contains("pgrouter/HAProxy **1.212×**"), "{md}");
        assert!(md.contains("HAProxy/direct 0.800×"), "{md}");
        assert_eq!(md.matches("### ").count(), 2);
        assert!(md.contains("| 2.000 |"), "connection time column: {md}");
    }
}
