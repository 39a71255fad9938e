//! A stand-in Patroni REST API for network tests, run inside a node's namespace:
//!
//! ```text
//! pgr-fake-patroni NAME LISTEN_ADDR STATE_FILE
//! ```
//!
//! The node's state lives in `STATE_FILE` (the test rewrites it atomically: temp + rename) and
//! is re-read on every request, so a role switch takes effect on the very next check. One
//! line of whitespace-separated words:
//!
//! - `primary`, `replica`, `down` or `hang` first;
//! - then any of `tl=N` (timeline, default 1), `lag=BYTES` (replica lag behind the leader,
//!   default 0), `state=S` (Patroni's PostgreSQL state, default `running`).
//!
//! `down` closes the port (connection refused), like a stopped Patroni; the file is polled
//! every 10 ms for that. `hang` accepts and reads requests but never answers (a frozen host). Answers follow Patroni's `do_GET` rules through the shared
//! [`fake_patroni::Sim`] (`/primary`, `/replica?lag=`, `/read-only`, ...), HTTP/1.0 style, one
//! request per connection. Every request is logged to stderr (`NAME: GET /path`).
#[path = "../../../router-user/tests/common/fake_patroni.rs"]
mod fake_patroni;

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use fake_patroni::Sim;
use tokio::{
    io::{AsyncReadExt as _, AsyncWriteExt as _},
    net::{TcpListener, TcpStream},
};

enum State {
    Down,
    Hang,
    Up(Sim),
}

/// The parsed state file. A missing or unreadable file counts as down (the test writes it
/// before starting us).
fn read_state(path: &PathBuf) -> State {
    let Ok(text) = std::fs::read_to_string(path) else {
        return State::Down;
    };
    let mut words = text.split_whitespace();
    let mut sim = match words.next() {
        Some("primary") => Sim::primary(1),
        Some("replica") => Sim::replica(1),
        Some("hang") => return State::Hang,
        _ => return State::Down,
    };
    for w in words {
        if let Some(v) = w.strip_prefix("tl=") {
            sim.timeline = v.parse().unwrap_or(sim.timeline);
        } else if let Some(v) = w.strip_prefix("lag=") {
            sim.lag = v.parse().unwrap_or(sim.lag);
        } else if let Some(v) = w.strip_prefix("state=") {
            sim.state = v.to_owned();
        }
    }
    State::Up(sim)
}

fn response(status: u16, body: &str) -> Vec<u8> {
    let reason = if status == 200 {
        "OK"
    } else {
        "Service Unavailable"
    };
    format!(
        "HTTP/1.0 {status} {reason}\r\nServer: BaseHTTP/0.6 Python/3.11.2\r\n\
         Content-Type: application/json\r\n\r\n{body}"
    )
    .into_bytes()
}

async fn handle(mut s: TcpStream, state: PathBuf, name: String) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 1024];
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") && buf.len() < 16 * 1024 {
        match tokio::time::timeout(Duration::from_secs(5), s.read(&mut chunk)).await {
            Ok(Ok(n)) if n > 0 => buf.extend_from_slice(&chunk[..n]),
            _ => return,
        }
    }
    let head = String::from_utf8_lossy(&buf);
    let path = head.split_whitespace().nth(1).unwrap_or("/").to_owned();
    // The test reads this log to act right after a check.
    eprintln!("{name}: GET {path}");
    let out = match read_state(&state) {
        State::Up(sim) => {
            let body = sim
                .body()
                .replace(r#""name": "fake""#, &format!(r#""name": "{name}""#));
            response(sim.status_for(&path), &body)
        }
        // Raced with a switch to down: answer like a node whose PostgreSQL is gone.
        State::Down => response(503, ""),
        // Never answer; hold the connection until the client gives up (bounded).
        State::Hang => {
            let _ = tokio::time::timeout(Duration::from_secs(60), s.read(&mut chunk)).await;
            return;
        }
    };
    let _ = s.write_all(&out).await;
    let _ = s.shutdown().await;
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> std::io::Result<()> {
    let mut args = std::env::args().skip(1);
    let name = args.next().unwrap_or_else(|| "node".into());
    let addr: SocketAddr = args
        .next()
        .unwrap_or_else(|| "0.0.0.0:8008".into())
        .parse()
        .map_err(std::io::Error::other)?;
    let state = PathBuf::from(args.next().unwrap_or_else(|| "patroni.state".into()));
    let mut listener: Option<TcpListener> = None;
    let mut poll = tokio::time::interval(Duration::from_millis(10));
    loop {
        let down = matches!(read_state(&state), State::Down);
        if down && listener.is_some() {
            listener = None;
            eprintln!("{name}: down, port {addr} closed");
        } else if !down && listener.is_none() {
            // The old socket is gone; SO_REUSEADDR (tokio sets it) allows an immediate rebind.
            match TcpListener::bind(addr).await {
                Ok(l) => {
                    eprintln!("{name}: listening on {addr}");
                    listener = Some(l);
                }
                Err(e) => eprintln!("{name}: bind {addr}: {e}"),
            }
        }
        match &listener {
            Some(l) => tokio::select! {
                r = l.accept() => {
                    if let Ok((s, _)) = r {
                        tokio::spawn(handle(s, state.clone(), name.clone()));
                    }
                }
                _ = poll.tick() => {}
            },
            None => {
                poll.tick().await;
            }
        }
    }
}
