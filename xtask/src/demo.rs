//! `cargo xtask demo`: the newcomer's demo on the Patroni lab (docs/demo.md);
//! `cargo xtask scenarios`: the same scenarios with assertions (CI);
//! [`bench_failover`]: failover outages of pgrouter and the seed's HAProxy side by side.
//!
//! Every entry point takes the lab session lock (`crate::lab::lock`) before it
//! touches the lab: the lab is a singleton shared with the benchmarks.
pub mod edges;
pub mod prober;
pub mod scenario;

use crate::lab::{Lab, Timing, VIP};
use anyhow::{Context, Result, bail};
use prober::{Clock, Prober};
use scenario::{Env, Outcome, Router};
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::{Duration, Instant};

#[derive(clap::Args, Debug, Default)]
pub struct DemoArgs {
    /// Leave the lab (and pgrouter on both edges) running at the end.
    #[arg(long)]
    pub keep: bool,
    /// Skip `cargo xtask setup` (already done on this machine).
    #[arg(long)]
    pub no_setup: bool,
}

#[derive(clap::Args, Debug, Default)]
pub struct ScenarioArgs {
    /// Leave the lab running at the end.
    #[arg(long)]
    pub keep: bool,
    /// Skip `cargo xtask setup`.
    #[arg(long)]
    pub no_setup: bool,
    /// Instead: the failover measurements of pgrouter against HAProxy (what `cargo xtask
    /// bench` runs; writes target/bench/failover-*.json).
    #[arg(long)]
    pub failover_bench: bool,
    /// Only scenarios whose name contains this.
    pub filter: Option<String>,
}

/// Brings the lab up, starts pgrouter on `pgrouter_edges` (VRRP; the first one becomes
/// master), optionally the seed's HAProxy on edge2's own address, and the probers. Without
/// HAProxy the switchover also measures new connections per `on_empty` mode (the failover
/// bench keeps its probe load as it was).
fn bring_up(lab: &Lab, pgrouter_edges: &[&'static str], haproxy: bool, slow: bool) -> Result<Env> {
    lab.up(Duration::from_secs(180))?;
    scenario::create_probe_table(lab)?;
    let mode = edges::xdp_mode();
    let mut peers = vec![];
    if mode == "native" {
        for e in pgrouter_edges {
            peers.push(crate::lab::peer_xdp::PeerXdpPass::attach(&format!(
                "pgrlab-{e}"
            ))?);
        }
    }
    let leader = lab.leader()?.name;
    for e in pgrouter_edges {
        edges::prepare(e, &mode)?;
        edges::start(lab, e)?;
    }
    for e in pgrouter_edges {
        edges::wait_ready(lab, e, &leader, Duration::from_secs(30))?;
    }
    let t = edges::wait_vip(lab, pgrouter_edges[0], Duration::from_secs(15))?;
    println!(
        "demo: pgrouter ({mode} XDP) on {}; VIP {VIP} on {} ({} ms after the sets were published)",
        pgrouter_edges.join(", "),
        pgrouter_edges[0],
        t.as_millis()
    );
    let mut routers = vec![Router {
        name: "pgrouter".into(),
        addr: VIP.into(),
    }];
    if haproxy {
        let addr = edges::start_haproxy(lab, "edge2")?;
        println!(
            "demo: HAProxy (lab/haproxy.cfg.tmpl, the seed's config) on edge2 {addr}:5000/5001"
        );
        routers.push(Router {
            name: "HAProxy".into(),
            addr,
        });
    }
    let targets = routers.iter().flat_map(|r| r.targets()).collect();
    let prober = Prober::start(Clock::new(), targets)?;
    let env = Env {
        lab: Lab::new(lab.timing),
        prober,
        routers,
        pgrouter_edges: pgrouter_edges.to_vec(),
        events: Mutex::new(vec![]),
        slow,
        on_empty_probes: !haproxy,
        _peers: peers,
    };
    scenario::wait_serving(&env)?;
    Ok(env)
}

/// Runs `f` with the session lock and a fresh lab; tears the lab down afterwards (also on
/// error) unless `keep`.
fn with_lab<T>(keep: bool, f: impl FnOnce(&Lab) -> Result<T>) -> Result<T> {
    let _lock = crate::lab::lock::session_lock()?;
    let lab = Lab::new(Timing::from_env()?);
    edges::cleanup();
    let r = f(&lab);
    if keep {
        println!(
            "demo: --keep: lab left up (pgrouter status --socket {}; `cargo xtask lab down` to remove it, then umount {}/*/bpf)",
            edges::socket("edge1"),
            edges::RUN_DIR
        );
    } else {
        // Keep the routers' logs: `lab down` removes the lab dir.
        let keep_dir = edges::workspace().join("target/demo-logs");
        if std::fs::create_dir_all(&keep_dir).is_ok() {
            for e in crate::lab::EDGES {
                for n in [edges::proc_name(e), format!("haproxy-{e}")] {
                    let _ = std::fs::copy(
                        lab.dir.join(format!("{n}.log")),
                        keep_dir.join(format!("{n}.log")),
                    );
                }
            }
            println!("demo: router logs saved in {}", keep_dir.display());
        }
        println!("demo: tearing the lab down");
        if let Err(e) = lab.down() {
            eprintln!("demo: lab down: {e:#}");
        }
        edges::cleanup();
    }
    r
}

fn summary(outcomes: &[Outcome]) -> String {
    let mut s = format!(
        "{:<31} {:<9} {:>14} {:>13} {:>10} {:<15} {:<15}\n",
        "scenario", "router", "write outage", "read outage", "bad writes", "writes", "reads"
    );
    let list = |a: &[String], b: &[String]| {
        let j = |v: &[String]| {
            if v.is_empty() {
                "-".to_string()
            } else {
                v.join("+")
            }
        };
        format!("{}->{}", j(a), j(b))
    };
    for o in outcomes {
        for st in &o.stats {
            s.push_str(&format!(
                "{:<31} {:<9} {:>11} ms {:>10} ms {:>10} {:<15} {:<15}\n",
                o.name,
                st.router,
                st.write_outage_ms,
                st.read_outage_ms,
                st.non_primary_writes,
                list(&st.writes_before, &st.writes_after),
                list(&st.reads_before, &st.reads_after)
            ));
        }
        if o.stats.is_empty() {
            s.push_str(&format!("{:<31} (no measurement)\n", o.name));
        }
    }
    for l in outcomes.iter().filter_map(|o| o.on_empty.as_ref()) {
        s.push_str(&format!("\n{l}\n"));
    }
    s
}

fn play(env: &Env, all: bool, filter: Option<&str>) -> Vec<Outcome> {
    type Play = fn(&Env) -> Outcome;
    let mut list: Vec<(&str, Play)> = vec![
        ("switchover", Env::switchover),
        ("kill-primary", Env::kill_primary),
        ("replicas-stopped", Env::replicas_stopped),
        ("lagging-replica", Env::lagging_replica),
        ("edge-failure", Env::edge_failure),
    ];
    if all {
        list.push(("controller-restart", Env::controller_restart));
        list.push(("upgrade-under-pgbench", Env::upgrade_under_pgbench));
    }
    list.into_iter()
        .filter(|(n, _)| filter.is_none_or(|f| n.contains(f)))
        .map(|(_, f)| f(env))
        .collect()
}

/// `cargo xtask demo`.
pub fn run(args: DemoArgs) -> Result<()> {
    let t = Instant::now();
    if !args.no_setup {
        crate::setup::run_setup()?;
    }
    edges::build_release()?;
    let outcomes = with_lab(args.keep, |lab| {
        let env = bring_up(lab, &["edge1", "edge2"], false, false)?;
        println!(
            "\n$ pgrouter status   (edge1)\n{}",
            edges::status_text("edge1")
        );
        println!("$ cargo xtask lab vip\n{}\n", lab.vip_holders().join(" "));
        println!(
            "A client in pgrlab-client opens a new connection every 100 ms to {VIP}:5000 (INSERT) and to {VIP}:5001 (SELECT)."
        );
        let outcomes = play(&env, true, None);
        env.prober.stop();
        Ok(outcomes)
    })?;
    println!("\n=== what the client saw ===\n{}", summary(&outcomes));
    let failed: Vec<&str> = outcomes
        .iter()
        .filter(|o| !o.passed())
        .map(|o| o.name.as_str())
        .collect();
    println!(
        "demo finished in {:.0?}{}",
        t.elapsed(),
        if failed.is_empty() {
            String::new()
        } else {
            format!("; not as expected: {}", failed.join(", "))
        }
    );
    Ok(())
}

/// `cargo xtask scenarios`: every scenario with assertions; ends with `N passed, M failed`
/// and fails if any scenario failed.
pub fn scenarios(args: ScenarioArgs) -> Result<()> {
    let t = Instant::now();
    if !args.no_setup {
        crate::setup::run_setup()?;
    }
    if args.failover_bench {
        bench_failover()?;
        println!("failover bench took {:.0?}", t.elapsed());
        return Ok(());
    }
    edges::build_release()?;
    let filter = args.filter.clone();
    let r = with_lab(args.keep, |lab| {
        let env = bring_up(lab, &["edge1", "edge2"], false, false)?;
        let outcomes = play(&env, true, filter.as_deref());
        env.prober.stop();
        Ok(outcomes)
    });
    let outcomes = match r {
        Ok(o) => o,
        Err(e) => {
            println!("scenarios: setup failed: {e:#}");
            println!("0 passed, 1 failed");
            return Err(e);
        }
    };
    println!("\n{}", summary(&outcomes));
    for o in &outcomes {
        println!("{} {}", if o.passed() { "PASS" } else { "FAIL" }, o.name);
    }
    let passed = outcomes.iter().filter(|o| o.passed()).count();
    let failed = outcomes.len() - passed;
    println!("scenarios took {:.0?}", t.elapsed());
    println!("{passed} passed, {failed} failed");
    if failed > 0 {
        bail!("{failed} scenario(s) failed");
    }
    Ok(())
}

// ------------------------------------------------------------------- failover bench

/// One router's outage numbers in a failover scenario (ms).
#[derive(Clone, Debug, Default)]
pub struct RouterOutage {
    pub write_outage_ms: u64,
    pub read_outage_ms: u64,
    /// Patroni's new leader visible in `GET /cluster` → first successful write through the
    /// router served by it (negative: the router was first).
    pub new_leader_to_first_write_ms: Option<i64>,
    pub non_primary_writes: usize,
}

#[derive(Clone, Debug)]
pub struct FailoverResult {
    /// `switchover`, `kill-primary`, `replicas-stopped`.
    pub scenario: String,
    pub pgrouter: RouterOutage,
    pub haproxy: RouterOutage,
    /// Raw probes: `target/bench/failover-<scenario>.json`.
    pub json: PathBuf,
}

fn outage_of(o: &Outcome, router: &str) -> RouterOutage {
    o.stat(router)
        .map(|s| RouterOutage {
            write_outage_ms: s.write_outage_ms,
            read_outage_ms: s.read_outage_ms,
            new_leader_to_first_write_ms: s.new_leader_to_first_write_ms,
            non_primary_writes: s.non_primary_writes,
        })
        .unwrap_or_default()
}

/// The probe data of one scenario window, in the schema the SVG timelines read.
fn timeline_json(env: &Env, slug: &str, o: &Outcome) -> serde_json::Value {
    let (from, to) = (o.from_ms, o.to_ms);
    let mut events: Vec<(u64, String)> = env
        .events
        .lock()
        .unwrap()
        .iter()
        .filter(|(t, _)| *t >= from && *t <= to)
        .cloned()
        .collect();
    for (t, l) in env.prober.leader_changes() {
        if t >= from && t <= to {
            events.push((
                t,
                match l {
                    Some(n) => format!("Patroni: leader {n} visible"),
                    None => "Patroni: no running leader".into(),
                },
            ));
        }
    }
    events.sort();
    let rows: Vec<serde_json::Value> = env
        .routers
        .iter()
        .flat_map(|r| r.targets())
        .map(|t| {
            let probes: Vec<serde_json::Value> = env
                .prober
                .probes(&t.label)
                .into_iter()
                .filter(|p| p.t_ms >= from && p.t_ms <= to)
                .map(|p| serde_json::json!({"t_ms": p.t_ms - from, "ok": p.ok, "node": p.node}))
                .collect();
            serde_json::json!({"label": t.label, "probes": probes})
        })
        .collect();
    serde_json::json!({
        "scenario": slug,
        "t0_unix_ms": env.prober.clock.t0_unix_ms + from,
        "events": events.iter().map(|(t, l)| serde_json::json!({"t_ms": t - from, "label": l})).collect::<Vec<_>>(),
        "rows": rows,
    })
}

/// Failover outages of pgrouter (VIP on edge1, VRRP) and the seed's HAProxy (edge2's own
/// address, same config as lab/haproxy.cfg.tmpl) measured by two probers at once through the
/// same switchover, primary crash and replicas stop. Writes `target/bench/failover-*.json`.
pub fn bench_failover() -> Result<Vec<FailoverResult>> {
    edges::build_release()?;
    let out_dir = edges::workspace().join("target/bench");
    std::fs::create_dir_all(&out_dir)?;
    let results = with_lab(false, |lab| {
        let env = bring_up(lab, &["edge1"], true, true)?;
        type Play = fn(&Env) -> Outcome;
        let list: [(&str, Play); 3] = [
            ("switchover", Env::switchover),
            ("kill-primary", Env::kill_primary),
            ("replicas-stopped", Env::replicas_stopped),
        ];
        let mut outcomes = vec![];
        for (slug, f) in list {
            outcomes.push((slug, f(&env)));
        }
        env.prober.stop();
        let mut results = vec![];
        for (slug, o) in &outcomes {
            let path = out_dir.join(format!("failover-{slug}.json"));
            let v = timeline_json(&env, slug, o);
            std::fs::write(&path, serde_json::to_string_pretty(&v)?)
                .with_context(|| format!("write {}", path.display()))?;
            if let Some(e) = &o.error {
                bail!("failover bench: {slug}: {e}");
            }
            results.push(FailoverResult {
                scenario: slug.to_string(),
                pgrouter: outage_of(o, "pgrouter"),
                haproxy: outage_of(o, "HAProxy"),
                json: path,
            });
        }
        Ok(results)
    })?;
    println!("{}", markdown(&results));
    Ok(results)
}

/// The failover table for BENCHMARKS.md.
pub fn markdown(results: &[FailoverResult]) -> String {
    let mut s = String::from(
        "### Outages seen by a client (Patroni lab)\n\n\
         Two probers in the lab's client namespace, running at the same time through the same \
         events: each opens a new connection every 100 ms for a write (`INSERT … RETURNING \
         inet_server_addr()`, port 5000) and for a read (port 5001). pgrouter (VIP on edge1, \
         `interval 1s`, `fastinter 200ms`, `fall 2`, `rise 1`) against the seed's HAProxy \
         (`inter 3s fall 3 rise 2`, lab/haproxy.cfg.tmpl, on edge2). Outage: the longest span \
         in which every probe failed (100 ms resolution). \"New leader → first write\": from \
         Patroni's `GET /cluster` first showing the new leader running (polled every 50 ms) to \
         the first write through the router that it served — the router's own share of the \
         write outage. Patroni's own share (ttl 20 s on a crash) is in the outage, not in \
         that column.\n\n\
         | scenario | router | write outage | read outage | new leader → first write | writes accepted by a non-primary |\n\
         |---|---|---|---|---|---|\n",
    );
    let ms = |v: u64| format!("{:.1} s", v as f64 / 1000.0);
    for r in results {
        for (name, o) in [("pgrouter", &r.pgrouter), ("HAProxy", &r.haproxy)] {
            s.push_str(&format!(
                "| {} | {name} | {} | {} | {} | {} |\n",
                r.scenario,
                ms(o.write_outage_ms),
                ms(o.read_outage_ms),
                o.new_leader_to_first_write_ms
                    .map(|v| format!("{v} ms"))
                    .unwrap_or_else(|| "–".into()),
                o.non_primary_writes
            ));
        }
    }
    let files: Vec<String> = results
        .iter()
        .filter_map(|r| r.json.file_name())
        .map(|f| format!("`target/bench/{}`", f.to_string_lossy()))
        .collect();
    s.push_str(&format!(
        "\nRaw probes (per probe: start, success, serving node) and events: {}.\n",
        files.join(", ")
    ));
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markdown_has_a_row_per_router() {
        let r = FailoverResult {
            scenario: "switchover".into(),
            pgrouter: RouterOutage {
                write_outage_ms: 2700,
                new_leader_to_first_write_ms: Some(300),
                ..Default::default()
            },
            haproxy: RouterOutage::default(),
            json: PathBuf::from("target/bench/failover-switchover.json"),
        };
        let md = markdown(&[r]);
        assert!(md.contains("| switchover | pgrouter | 2.7 s | 0.0 s | 300 ms | 0 |"));
        assert!(md.contains("| switchover | HAProxy |"));
        assert!(md.contains("`target/bench/failover-switchover.json`"));
    }
}
