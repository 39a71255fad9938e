//! A client prober in `pgrlab-client`: every 100 ms a NEW connection per target (writes:
//! `INSERT … RETURNING inet_server_addr(), pg_is_in_recovery()`; reads: `SELECT
//! inet_server_addr(), pg_is_in_recovery()`), and a Patroni leader poller (`GET /cluster`
//! every 50 ms). Threads join the client's network namespace with setns; threads they spawn
//! inherit it.
use crate::lab::cluster::{CLIENT_NS, PG_NODES, host};
use anyhow::{Context, Result, bail};
use std::fs::File;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

pub const PROBE_EVERY: Duration = Duration::from_millis(100);
const LEADER_EVERY: Duration = Duration::from_millis(50);
/// A probe that has not finished after this counts as failed.
const PROBE_DEADLINE: Duration = Duration::from_secs(3);

/// One time base for probes, events and leader changes.
#[derive(Clone, Copy)]
pub struct Clock {
    pub t0: Instant,
    pub t0_unix_ms: u64,
}

impl Clock {
    pub fn new() -> Self {
        Clock {
            t0: Instant::now(),
            t0_unix_ms: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_millis() as u64)
                .unwrap_or(0),
        }
    }
    pub fn ms(&self) -> u64 {
        self.t0.elapsed().as_millis() as u64
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Kind {
    Write,
    Read,
}

#[derive(Clone, Debug)]
pub struct Target {
    /// "pgrouter writes", "HAProxy reads", …
    pub label: String,
    pub addr: String,
    pub port: u16,
    pub kind: Kind,
}

#[derive(Clone, Debug)]
pub struct Probe {
    pub t_ms: u64,
    pub ok: bool,
    pub node: Option<String>,
    pub dur_ms: u64,
    /// `pg_is_in_recovery()` of the serving node (on success).
    pub recovery: Option<bool>,
    pub error: Option<String>,
}

type Shared<T> = Arc<Mutex<Vec<T>>>;

pub struct Prober {
    pub clock: Clock,
    stop: Arc<AtomicBool>,
    handles: Mutex<Vec<JoinHandle<()>>>,
    pub rows: Vec<(Target, Shared<Probe>)>,
    /// Leader as seen in Patroni's `GET /cluster` (only changes), `None` = no running leader.
    pub leader: Shared<(u64, Option<String>)>,
}

fn node_of(ip: &str) -> String {
    PG_NODES
        .iter()
        .find(|n| host(n).map(|h| h.addr == ip).unwrap_or(false))
        .map(|n| n.to_string())
        .unwrap_or_else(|| ip.to_string())
}

fn enter_client_ns() -> Result<()> {
    let path = format!("/run/netns/{CLIENT_NS}");
    let f = File::open(&path).with_context(|| format!("open {path}"))?;
    // SAFETY: plain syscall on a valid fd; affects only the calling thread.
    if unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
        bail!("setns({path}): {}", std::io::Error::last_os_error());
    }
    Ok(())
}

/// The probers' role: its password is stored as MD5, so each new connection costs one MD5
/// round instead of SCRAM-SHA-256's 4096 PBKDF2 iterations (which, in xtask's unoptimised
/// build, take long enough at 20 connections/s to starve the 2-core lab machine).
pub const PROBE_USER: &str = "pgrprobe";
pub const PROBE_PASSWORD: &str = "pgrprobe";
pub const PROBE_SETUP_SQL: &str = "SET password_encryption = 'md5'; \
    CREATE ROLE pgrprobe LOGIN SUPERUSER PASSWORD 'pgrprobe'; \
    CREATE TABLE IF NOT EXISTS pgrouter_probe(id bigserial PRIMARY KEY, \
    at timestamptz NOT NULL DEFAULT now(), via text)";

/// A sync PostgreSQL connection (call from a thread in the client namespace).
pub fn connect(addr: &str, port: u16, timeout: Duration) -> Result<postgres::Client> {
    let mut cfg = postgres::Config::new();
    cfg.host(addr)
        .port(port)
        .user(PROBE_USER)
        .password(PROBE_PASSWORD)
        .dbname("postgres")
        .application_name("pgrouter-demo")
        .connect_timeout(timeout);
    Ok(cfg.connect(postgres::NoTls)?)
}

/// `host(inet_server_addr())`, `pg_is_in_recovery()` of a simple query's first row.
fn server_row(msgs: &[postgres::SimpleQueryMessage]) -> Result<(String, bool)> {
    for m in msgs {
        if let postgres::SimpleQueryMessage::Row(r) = m {
            let ip = r.get(0).unwrap_or("?").to_string();
            let rec = r.get(1) == Some("t");
            return Ok((node_of(&ip), rec));
        }
    }
    bail!("no row")
}

fn probe_once(t: &Target, node: &mut Option<String>) -> Result<bool> {
    let mut c = connect(&t.addr, t.port, Duration::from_secs(1))?;
    let sql = match t.kind {
        Kind::Read => "SELECT host(inet_server_addr()), pg_is_in_recovery()".to_string(),
        Kind::Write => {
            // Which node answered, also when the write is refused (a demoted primary).
            let (n, _) = server_row(
                &c.simple_query("SELECT host(inet_server_addr()), pg_is_in_recovery()")?,
            )?;
            *node = Some(n);
            format!(
                "INSERT INTO pgrouter_probe(via) VALUES ('{}') RETURNING host(inet_server_addr()), pg_is_in_recovery()",
                t.label.replace('\'', "")
            )
        }
    };
    let (n, rec) = server_row(&c.simple_query(&sql)?)?;
    *node = Some(n);
    Ok(rec)
}

fn run_probe(t: &Target, t_ms: u64) -> Probe {
    let start = Instant::now();
    let mut node = None;
    let r = probe_once(t, &mut node);
    let dur_ms = start.elapsed().as_millis() as u64;
    match r {
        Ok(rec) => Probe {
            t_ms,
            ok: true,
            node,
            dur_ms,
            recovery: Some(rec),
            error: None,
        },
        Err(e) => Probe {
            t_ms,
            ok: false,
            node,
            dur_ms,
            recovery: None,
            error: Some(format!("{e:#}").lines().next().unwrap_or("").to_string()),
        },
    }
}

/// One HTTP GET (the calling thread is in the client namespace).
fn http_get(addr: &str, path: &str, timeout: Duration) -> Result<(u16, String)> {
    let sa: SocketAddr = addr.parse()?;
    let mut s = TcpStream::connect_timeout(&sa, timeout)?;
    s.set_read_timeout(Some(timeout))?;
    s.set_write_timeout(Some(timeout))?;
    s.write_all(
        format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\nConnection: close\r\n\r\n").as_bytes(),
    )?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf)?;
    let text = String::from_utf8_lossy(&buf);
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let code = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    Ok((code, body.to_string()))
}

/// The running leader in a `GET /cluster` body.
pub fn leader_in(body: &str) -> Option<String> {
    let v: serde_json::Value = serde_json::from_str(body).ok()?;
    v["members"].as_array()?.iter().find_map(|m| {
        let role = m["role"].as_str()?;
        ((role == "leader" || role == "standby_leader") && m["state"] == "running")
            .then(|| m["name"].as_str().unwrap_or("?").to_string())
    })
}

impl Prober {
    /// Starts one probing thread per target and the leader poller.
    pub fn start(clock: Clock, targets: Vec<Target>) -> Result<Prober> {
        let stop = Arc::new(AtomicBool::new(false));
        let mut handles = vec![];
        let mut rows = vec![];
        for t in targets {
            let probes: Shared<Probe> = Arc::new(Mutex::new(Vec::new()));
            rows.push((t.clone(), probes.clone()));
            let stop = stop.clone();
            handles.push(std::thread::spawn(move || {
                if let Err(e) = enter_client_ns() {
                    eprintln!("prober {}: {e:#}", t.label);
                    return;
                }
                let mut next = Instant::now();
                while !stop.load(Ordering::Relaxed) {
                    let t_ms = clock.ms();
                    let (tx, rx) = std::sync::mpsc::channel();
                    let tt = t.clone();
                    // The probe thread inherits this thread's network namespace.
                    std::thread::spawn(move || {
                        let _ = tx.send(run_probe(&tt, t_ms));
                    });
                    let probes = probes.clone();
                    // A waiter per probe, so a hanging one does not delay the next.
                    std::thread::spawn(move || {
                        let p = rx.recv_timeout(PROBE_DEADLINE).unwrap_or(Probe {
                            t_ms,
                            ok: false,
                            node: None,
                            dur_ms: PROBE_DEADLINE.as_millis() as u64,
                            recovery: None,
                            error: Some("no answer within 3 s".into()),
                        });
                        probes.lock().unwrap().push(p);
                    });
                    next += PROBE_EVERY;
                    let now = Instant::now();
                    if next > now {
                        std::thread::sleep(next - now);
                    } else {
                        next = now;
                    }
                }
            }));
        }
        let leader: Shared<(u64, Option<String>)> = Arc::new(Mutex::new(Vec::new()));
        {
            let leader = leader.clone();
            let stop = stop.clone();
            handles.push(std::thread::spawn(move || {
                if let Err(e) = enter_client_ns() {
                    eprintln!("leader poller: {e:#}");
                    return;
                }
                let apis: Vec<String> = PG_NODES
                    .iter()
                    .map(|n| format!("{}:8008", host(n).expect("lab node").addr))
                    .collect();
                let mut i = 0;
                let mut last: Option<Option<String>> = None;
                while !stop.load(Ordering::Relaxed) {
                    let started = Instant::now();
                    let t_ms = clock.ms();
                    // The first node that answers; start with the last one that did.
                    let mut seen = None;
                    for k in 0..apis.len() {
                        let j = (i + k) % apis.len();
                        if let Ok((200, body)) =
                            http_get(&apis[j], "/cluster", Duration::from_millis(300))
                        {
                            seen = Some(leader_in(&body));
                            i = j;
                            break;
                        }
                    }
                    if let Some(l) = seen
                        && last.as_ref() != Some(&l)
                    {
                        leader.lock().unwrap().push((t_ms, l.clone()));
                        last = Some(l);
                    }
                    let el = started.elapsed();
                    if el < LEADER_EVERY {
                        std::thread::sleep(LEADER_EVERY - el);
                    }
                }
            }));
        }
        Ok(Prober {
            clock,
            stop,
            handles: Mutex::new(handles),
            rows,
            leader,
        })
    }

    /// Probes of row `label` so far, sorted by start time.
    pub fn probes(&self, label: &str) -> Vec<Probe> {
        let mut v = self
            .rows
            .iter()
            .find(|(t, _)| t.label == label)
            .map(|(_, p)| p.lock().unwrap().clone())
            .unwrap_or_default();
        v.sort_by_key(|p| p.t_ms);
        v
    }

    pub fn leader_changes(&self) -> Vec<(u64, Option<String>)> {
        self.leader.lock().unwrap().clone()
    }

    /// Stops the probing threads and lets outstanding probes finish (bounded by their
    /// deadline).
    pub fn stop(&self) {
        self.stop.store(true, Ordering::Relaxed);
        let handles: Vec<_> = self.handles.lock().unwrap().drain(..).collect();
        for h in handles {
            let _ = h.join();
        }
        std::thread::sleep(PROBE_DEADLINE + Duration::from_millis(200));
    }
}

// ------------------------------------------------------------------------- analysis

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
            recovery: Some(false),
            error: None,
        }
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

    #[test]
    fn leader_from_cluster_json() {
        let body = r#"{"members":[{"name":"pg1","role":"replica","state":"streaming"},
            {"name":"pg2","role":"leader","state":"running"}]}"#;
        assert_eq!(leader_in(body).as_deref(), Some("pg2"));
        let body = r#"{"members":[{"name":"pg2","role":"leader","state":"stopped"}]}"#;
        assert_eq!(leader_in(body), None);
    }
}
