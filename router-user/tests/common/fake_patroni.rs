//! A scriptable fake of Patroni's REST API for tests: one per node, on 127.0.0.1 with an
//! ephemeral port, answering like Patroni's `http.server` (HTTP/1.0, no Content-Length, one
//! request per connection).
//!
//! Either it *simulates* a node ([`Sim`]: role, state, timeline, lag, leader lock — answers to
//! `/primary`, `/replica?lag=`, `/read-only` follow Patroni's `do_GET` rules), or it misbehaves
//! on purpose ([`Mode`]: fixed answers, garbage, truncated bodies, closed connections), with an
//! optional delay before answering. [`FakePatroni::refuse`] closes the port (connection
//! refused) until [`FakePatroni::resume`].
#![allow(dead_code, reason = "each test binary uses a different subset")]

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// A simulated Patroni node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Sim {
    /// `primary`, `master` (Patroni < 4), `replica`, `standby_leader`, ...
    pub role: String,
    /// `running`, `starting`, `stopped`, ...
    pub state: String,
    pub timeline: u64,
    /// Holds the leader lock: `/primary` answers 200 (even when PostgreSQL is not running,
    /// patroni#2756).
    pub leader: bool,
    /// Replica: bytes behind the leader (compared against `?lag=`).
    pub lag: u64,
}

impl Sim {
    pub fn primary(timeline: u64) -> Self {
        Self {
            role: "primary".into(),
            state: "running".into(),
            timeline,
            leader: true,
            lag: 0,
        }
    }

    pub fn replica(timeline: u64) -> Self {
        Self {
            role: "replica".into(),
            state: "running".into(),
            timeline,
            leader: false,
            lag: 0,
        }
    }

    /// Status code Patroni would give for `path` (with query).
    pub fn status_for(&self, path_and_query: &str) -> u16 {
        let (path, query) = path_and_query
            .split_once('?')
            .unwrap_or((path_and_query, ""));
        let max_lag = query
            .split('&')
            .find_map(|kv| kv.strip_prefix("lag="))
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(u64::MAX);
        let running = self.state == "running";
        let replica_ok = self.role == "replica" && running && self.lag <= max_lag;
        let primary_ok = self.leader;
        let ok = match path {
            "/" | "/primary" | "/master" | "/read-write" => primary_ok,
            "/replica" => replica_ok,
            "/read-only" => primary_ok || replica_ok,
            "/health" => running,
            _ => false,
        };
        if ok { 200 } else { 503 }
    }

    pub fn body(&self) -> String {
        let xlog = if self.role == "replica" {
            format!(
                r#"{{"received_location": {0}, "replayed_location": {0}, "paused": false}}"#,
                1_000_000_000u64.saturating_sub(self.lag)
            )
        } else {
            r#"{"location": 1000000000}"#.to_owned()
        };
        format!(
            r#"{{"state": "{}", "postmaster_start_time": "2026-01-01 00:00:00.000000+00:00", "role": "{}", "server_version": 160004, "xlog": {xlog}, "timeline": {}, "replication_state": "streaming", "dcs_last_seen": 1767225600, "database_system_identifier": "7000000000000000000", "patroni": {{"version": "4.0.4", "scope": "pg1", "name": "fake"}}}}"#,
            self.state, self.role, self.timeline
        )
    }
}

/// How the fake answers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Answer like Patroni would for this node.
    Sim(Sim),
    /// The same status and body to every request.
    Fixed { status: u16, body: String },
    /// These raw bytes instead of an HTTP response.
    Garbage(Vec<u8>),
    /// A status line and `Content-Length` longer than the body sent, then close.
    Truncated { status: u16, body: String },
    /// Accept, read the request, close without a byte.
    Close,
}

#[derive(Debug)]
struct Shared {
    mode: Mode,
    delay: Duration,
    /// (when, request path) of every request read.
    requests: Vec<(Instant, String)>,
    /// Authorization header of the last request.
    last_auth: Option<String>,
}

/// One fake Patroni node.
pub struct FakePatroni {
    addr: SocketAddr,
    shared: Arc<Mutex<Shared>>,
    task: Option<JoinHandle<()>>,
}

impl FakePatroni {
    pub async fn start(mode: Mode) -> Self {
        let listener = match TcpListener::bind("127.0.0.1:0").await {
            Ok(l) => l,
            Err(e) => panic!("bind fake patroni: {e}"),
        };
        let addr = match listener.local_addr() {
            Ok(a) => a,
            Err(e) => panic!("local_addr: {e}"),
        };
        let shared = Arc::new(Mutex::new(Shared {
            mode,
            delay: Duration::ZERO,
            requests: Vec::new(),
            last_auth: None,
        }));
        let task = Some(tokio::spawn(serve(listener, shared.clone())));
        Self { addr, shared, task }
    }

    pub async fn sim(sim: Sim) -> Self {
        Self::start(Mode::Sim(sim)).await
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Shared> {
        self.shared.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn set(&self, mode: Mode) {
        self.lock().mode = mode;
    }

    pub fn set_sim(&self, sim: Sim) {
        self.set(Mode::Sim(sim));
    }

    /// Wait this long after reading a request before answering.
    pub fn set_delay(&self, delay: Duration) {
        self.lock().delay = delay;
    }

    /// Requests seen so far (path with query).
    pub fn requests(&self) -> Vec<String> {
        self.lock()
            .requests
            .iter()
            .map(|(_, p)| p.clone())
            .collect()
    }

    /// Time of the first request at or after `since`.
    pub fn first_request_since(&self, since: Instant) -> Option<Instant> {
        self.lock()
            .requests
            .iter()
            .map(|(t, _)| *t)
            .find(|t| *t >= since)
    }

    pub fn last_auth(&self) -> Option<String> {
        self.lock().last_auth.clone()
    }

    /// Close the port: connections are refused until [`resume`](Self::resume).
    pub async fn refuse(&mut self) {
        if let Some(t) = self.task.take() {
            t.abort();
            let _ = t.await;
        }
    }

    /// Listen again on the same port.
    pub async fn resume(&mut self) {
        if self.task.is_some() {
            return;
        }
        let listener = match TcpListener::bind(self.addr).await {
            Ok(l) => l,
            Err(e) => panic!("rebind {}: {e}", self.addr),
        };
        self.task = Some(tokio::spawn(serve(listener, self.shared.clone())));
    }
}

impl Drop for FakePatroni {
    fn drop(&mut self) {
        if let Some(t) = self.task.take() {
            t.abort();
        }
    }
}

async fn serve(listener: TcpListener, shared: Arc<Mutex<Shared>>) {
    let mut conns = tokio::task::JoinSet::new();
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                conns.spawn(handle(stream, shared.clone()));
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(5)).await,
        }
        while conns.try_join_next().is_some() {}
    }
}

async fn handle(mut stream: TcpStream, shared: Arc<Mutex<Shared>>) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 1024];
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") && buf.len() < 16 * 1024 {
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
    let head = String::from_utf8_lossy(&buf).into_owned();
    let path = head.split_whitespace().nth(1).unwrap_or("/").to_owned();
    let auth = head
        .lines()
        .find_map(|l| {
            l.strip_prefix("authorization: ")
                .or_else(|| l.strip_prefix("Authorization: "))
        })
        .map(str::to_owned);
    let (mode, delay) = {
        let mut s = shared.lock().unwrap_or_else(|p| p.into_inner());
        s.requests.push((Instant::now(), path.clone()));
        s.last_auth = auth;
        (s.mode.clone(), s.delay)
    };
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    let out: Vec<u8> = match mode {
        Mode::Sim(sim) => response(sim.status_for(&path), &sim.body(), None),
        Mode::Fixed { status, body } => response(status, &body, None),
        Mode::Truncated { status, body } => response(status, &body, Some(body.len() + 100)),
        Mode::Garbage(bytes) => bytes,
        Mode::Close => Vec::new(),
    };
    let _ = stream.write_all(&out).await;
    let _ = stream.shutdown().await;
}

fn response(status: u16, body: &str, content_length: Option<usize>) -> Vec<u8> {
    let reason = match status {
        200 => "OK",
        401 => "Unauthorized",
        503 => "Service Unavailable",
        _ => "Whatever",
    };
    let mut s = format!(
        "HTTP/1.0 {status} {reason}\r\nServer: BaseHTTP/0.6 Python/3.11.2\r\n\
         Date: Thu, 01 Jan 2026 00:00:00 GMT\r\nContent-Type: application/json\r\n"
    );
    if let Some(n) = content_length {
        s.push_str(&format!("Content-Length: {n}\r\n"));
    }
    s.push_str("\r\n");
    s.push_str(body);
    s.into_bytes()
}
