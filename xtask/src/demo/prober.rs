//! A client prober in `pgrlab-client`: every 100 ms a NEW connection per target (writes:
//! `INSERT … RETURNING inet_server_addr(), pg_is_in_recovery()`; reads: `SELECT
//! inet_server_addr(), pg_is_in_recovery()`), and a Patroni leader poller (`GET /cluster`
//! every 50 ms). Threads join the client's network namespace with setns; threads they spawn
//! inherit it. Each probe records how its connection attempt ended ([`Failure`]) and how long
//! the connect took, so a scenario can tell a held SYN from a refusal or a hang. What the
//! probes mean (outages, attempts) is `prober/analysis.rs`.
mod analysis;

use crate::lab::{CLIENT_NS, PG_NODES, host};
pub use analysis::{Attempts, attempts, failures, first_error, non_primary_writes, outage, served};
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
/// The outage probes' connect timeout: short, so an outage shows at 100 ms resolution.
pub const OUTAGE_CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// What a real client waits for a connection (pgjdbc's `connectTimeout` default: 10 s).
pub const CLIENT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// After its connect timeout a probe has this long for its queries; a probe that has not
/// finished by then counts as failed.
const QUERY_TIME: Duration = Duration::from_secs(2);

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
    /// The client's connect timeout (TCP handshake; the kernel retransmits a dropped SYN after
    /// 1 s, 3 s, 7 s meanwhile).
    pub connect_timeout: Duration,
}

impl Target {
    /// A probe that has not finished after this counts as failed ([`Failure::TimedOut`]).
    pub fn deadline(&self) -> Duration {
        self.connect_timeout + QUERY_TIME
    }
}

/// How a failed probe failed, as a client sees it.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Failure {
    /// The TCP connect got a RST: "connection refused" (from pgrouter with an empty set past
    /// its hold or with `on_empty = "reject"`, or from a node whose port is closed).
    Refused,
    /// No connection within the connect timeout, or no answer within the probe's deadline: a
    /// hang, what `on_empty = "hold"` must never turn into.
    TimedOut,
    /// Connected, but PostgreSQL said no (e.g. "the database system is shutting down", a
    /// read-only transaction on a demoted primary).
    Server,
    /// Anything else (a reset mid-session, a protocol error).
    Other,
}

#[derive(Clone, Debug)]
pub struct Probe {
    pub t_ms: u64,
    pub ok: bool,
    pub node: Option<String>,
    pub dur_ms: u64,
    /// Time until the connection attempt ended (connected, or failed to connect).
    pub connect_ms: Option<u64>,
    /// `pg_is_in_recovery()` of the serving node (on success).
    pub recovery: Option<bool>,
    pub error: Option<String>,
    /// Set when `!ok`.
    pub failure: Option<Failure>,
}

type Shared<T> = Arc<Mutex<Vec<T>>>;

pub struct Prober {
    pub clock: Clock,
    stop: Arc<AtomicBool>,
    handles: Mutex<Vec<JoinHandle<()>>>,
    pub rows: Vec<(Target, Shared<Probe>)>,
    /// Start times of the probes still running (any row).
    pending: Shared<u64>,
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

/// What a failed `postgres` call means to a client: its error chain names an I/O error kind
/// for transport failures, a `DbError` for PostgreSQL's own answer.
fn classify(e: &postgres::Error) -> Failure {
    if e.as_db_error().is_some() {
        return Failure::Server;
    }
    let mut src: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(e);
    while let Some(s) = src {
        if let Some(io) = s.downcast_ref::<std::io::Error>() {
            return match io.kind() {
                std::io::ErrorKind::ConnectionRefused => Failure::Refused,
                std::io::ErrorKind::TimedOut => Failure::TimedOut,
                _ => Failure::Other,
            };
        }
        src = s.source();
    }
    Failure::Other
}

/// A probe's error: the message and what kind of failure it is.
struct ProbeError(anyhow::Error, Failure);

impl<E: Into<anyhow::Error>> From<E> for ProbeError {
    fn from(e: E) -> Self {
        let e = e.into();
        let f = e
            .downcast_ref::<postgres::Error>()
            .map(classify)
            .unwrap_or(Failure::Other);
        ProbeError(e, f)
    }
}

fn probe_once(
    t: &Target,
    node: &mut Option<String>,
    connect_ms: &mut Option<u64>,
) -> std::result::Result<bool, ProbeError> {
    let start = Instant::now();
    let c = connect(&t.addr, t.port, t.connect_timeout);
    *connect_ms = Some(start.elapsed().as_millis() as u64);
    let mut c = c?;
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
    let (mut node, mut connect_ms) = (None, None);
    let r = probe_once(t, &mut node, &mut connect_ms);
    let dur_ms = start.elapsed().as_millis() as u64;
    match r {
        Ok(rec) => Probe {
            t_ms,
            ok: true,
            node,
            dur_ms,
            connect_ms,
            recovery: Some(rec),
            error: None,
            failure: None,
        },
        Err(ProbeError(e, f)) => Probe {
            t_ms,
            ok: false,
            node,
            dur_ms,
            connect_ms,
            recovery: None,
            error: Some(format!("{e:#}").lines().next().unwrap_or("").to_string()),
            failure: Some(f),
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
        Self::spawn(clock, targets, true)
    }

    /// Starts one probing thread per target, without a leader poller (a second prober for
    /// one scenario beside the main one).
    pub fn start_probes(clock: Clock, targets: Vec<Target>) -> Result<Prober> {
        Self::spawn(clock, targets, false)
    }

    fn spawn(clock: Clock, targets: Vec<Target>, poll_leader: bool) -> Result<Prober> {
        let stop = Arc::new(AtomicBool::new(false));
        let pending: Shared<u64> = Arc::new(Mutex::new(Vec::new()));
        let mut handles = vec![];
        let mut rows = vec![];
        for t in targets {
            let probes: Shared<Probe> = Arc::new(Mutex::new(Vec::new()));
            rows.push((t.clone(), probes.clone()));
            let stop = stop.clone();
            let pending = pending.clone();
            handles.push(std::thread::spawn(move || {
                if let Err(e) = enter_client_ns() {
                    eprintln!("prober {}: {e:#}", t.label);
                    return;
                }
                let deadline = t.deadline();
                let mut next = Instant::now();
                while !stop.load(Ordering::Relaxed) {
                    let t_ms = clock.ms();
                    pending.lock().unwrap().push(t_ms);
                    let (tx, rx) = std::sync::mpsc::channel();
                    let tt = t.clone();
                    // The probe thread inherits this thread's network namespace.
                    std::thread::spawn(move || {
                        let _ = tx.send(run_probe(&tt, t_ms));
                    });
                    let probes = probes.clone();
                    let pending = pending.clone();
                    // A waiter per probe, so a hanging one does not delay the next.
                    std::thread::spawn(move || {
                        let p = rx.recv_timeout(deadline).unwrap_or(Probe {
                            t_ms,
                            ok: false,
                            node: None,
                            dur_ms: deadline.as_millis() as u64,
                            connect_ms: None,
                            recovery: None,
                            error: Some(format!("no answer within {deadline:?}")),
                            failure: Some(Failure::TimedOut),
                        });
                        probes.lock().unwrap().push(p);
                        let mut pending = pending.lock().unwrap();
                        if let Some(i) = pending.iter().position(|s| *s == t_ms) {
                            pending.swap_remove(i);
                        }
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
        if poll_leader {
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
            pending,
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

    /// Waits until every probe started before `t_ms` has finished (each is bounded by its
    /// target's deadline); false if some still run after `timeout`.
    pub fn wait_finished(&self, t_ms: u64, timeout: Duration) -> bool {
        let t = Instant::now();
        loop {
            if !self.pending.lock().unwrap().iter().any(|s| *s < t_ms) {
                return true;
            }
            if t.elapsed() > timeout {
                return false;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Stops the probing threads and lets outstanding probes finish (bounded by their
    /// deadline).
    pub fn stop(&self) {
        self.stop.store(true, Ordering::Relaxed);
        let handles: Vec<_> = self.handles.lock().unwrap().drain(..).collect();
        for h in handles {
            let _ = h.join();
        }
        let longest = self
            .rows
            .iter()
            .map(|(t, _)| t.deadline())
            .max()
            .unwrap_or_default();
        self.wait_finished(u64::MAX, longest + Duration::from_millis(200));
    }
}

impl Drop for Prober {
    /// A scenario that fails half-way drops its own prober: its threads must not run on.
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn refused_and_timed_out_connects_are_classified() {
        // Nothing listens on a fresh port of the loopback: a RST, "connection refused".
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .unwrap();
        let e = connect("127.0.0.1", port, Duration::from_secs(2))
            .err()
            .and_then(|e| e.downcast::<postgres::Error>().ok())
            .expect("a refused connect");
        assert_eq!(classify(&e), Failure::Refused);
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
