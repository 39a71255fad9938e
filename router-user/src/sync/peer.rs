//! The sync channel's sockets (I/O only): one outbound TCP connection per peer carries this
//! host's flows to it, and the listener takes each peer's connection carrying its flows
//! here. Each direction is authenticated (`auth`); what the frames mean is the daemon's
//! (`super::Sync`).
use std::{
    net::SocketAddr,
    sync::{
        Arc, Mutex, RwLock,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
    sync::mpsc,
    time::timeout,
};
use tracing::{info, warn};

use super::{
    auth::{self, Keys, Session},
    wire::{KEY_ID_LEN, MAGIC, MAX_FRAME, Message, NONCE_LEN, TAG_LEN},
};
use crate::status::PeerStatus;

/// A connection attempt, a hello, or a frame write taking longer than this fails.
const IO_TIMEOUT: Duration = Duration::from_secs(2);
/// See `connect`.
const USER_TIMEOUT: Duration = Duration::from_secs(3);
/// An idle outbound connection sends a ping this often, so the receiver sees it alive.
const PING_EVERY: Duration = Duration::from_secs(1);
/// An inbound connection silent for this long (no frame, no ping) is dropped.
const RECV_TIMEOUT: Duration = Duration::from_secs(5);
/// Inbound connections open at once, per configured peer (a reconnecting peer briefly has
/// two; the rest of the cap absorbs probes and floods, which time out within seconds).
const MAX_INBOUND_PER_PEER: u64 = 8;
/// Frames queued for one peer beyond this: the peer is too slow (or the link too thin) to
/// follow; the connection is dropped and the next one starts with a full sync.
pub const MAX_PENDING: u64 = 100_000;

/// One encoded message on its way out.
pub struct Out {
    pub kind: u8,
    pub payload: Vec<u8>,
}

/// What a peer's tasks and the daemon share.
#[derive(Default)]
pub struct PeerShared {
    pub status: Mutex<PeerStatus>,
    pub pending: AtomicU64,
    /// Set by the daemon when the queue overflowed: the sender drops its connection.
    pub overflowed: AtomicBool,
    /// Queued time of the oldest frame not yet written (ms since `epoch`), 0 if none.
    pub oldest_ms: AtomicU64,
    /// The inbound connection that last verified a frame: only its end clears `receiving`.
    pub current_conn: AtomicU64,
}

impl PeerShared {
    pub fn update(&self, f: impl FnOnce(&mut PeerStatus)) {
        match self.status.lock() {
            Ok(mut s) => f(&mut s),
            Err(p) => f(&mut p.into_inner()),
        }
    }
}

/// What the connections tell the daemon.
pub enum Inbound {
    /// A verified message from peer `peer` on connection `conn`.
    Message {
        peer: usize,
        conn: u64,
        msg: Message,
    },
    /// Peer `peer`'s connection `conn` ended.
    Closed { peer: usize, conn: u64 },
    /// Our connection to peer `peer` is up: it needs a full sync of our flows.
    WantFull { peer: usize },
}

async fn write_all(s: &mut TcpStream, b: &[u8]) -> std::io::Result<()> {
    match timeout(IO_TIMEOUT, s.write_all(b)).await {
        Ok(r) => r,
        Err(_) => Err(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            "write timed out",
        )),
    }
}

async fn read_exact(s: &mut TcpStream, b: &mut [u8], within: Duration) -> std::io::Result<()> {
    match timeout(within, s.read_exact(b)).await {
        Ok(r) => r.map(|_| ()),
        Err(_) => Err(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            "read timed out",
        )),
    }
}

/// Connects to `addr` again and again, sending what the daemon queues. `id` is this host's
/// listen address, which names it to the peer.
pub async fn sender(
    peer: usize,
    addr: SocketAddr,
    id: String,
    keys: Arc<RwLock<Keys>>,
    shared: Arc<PeerShared>,
    mut rx: mpsc::UnboundedReceiver<Out>,
    to_daemon: mpsc::Sender<Inbound>,
) {
    let mut backoff = Duration::from_millis(100);
    loop {
        match connect(addr, &id, &keys).await {
            Ok((mut stream, session)) => {
                backoff = Duration::from_millis(100);
                // Whatever was queued while down is superseded by the full sync.
                drain(&mut rx, &shared);
                shared.overflowed.store(false, Ordering::Relaxed);
                shared.update(|s| {
                    s.sending = true;
                    s.last_error = None;
                });
                info!(peer = %addr, "sync: connected; sending a full sync");
                if to_daemon.send(Inbound::WantFull { peer }).await.is_err() {
                    return;
                }
                let e = pump(&mut stream, &session, &mut rx, &shared).await;
                shared.update(|s| {
                    s.sending = false;
                    s.last_error = Some(e.clone());
                });
                warn!(peer = %addr, error = %e, "sync: connection lost");
            }
            Err(e) => {
                shared.update(|s| {
                    if s.last_error.as_deref() != Some(e.as_str()) {
                        warn!(peer = %addr, error = %e, "sync: cannot connect");
                    }
                    s.last_error = Some(e);
                });
            }
        }
        // Down: nothing queued now will be wanted (a full sync follows the reconnect).
        let until = Instant::now() + backoff;
        while Instant::now() < until {
            drain(&mut rx, &shared);
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        backoff = (backoff * 2).min(Duration::from_secs(2));
        if rx.is_closed() {
            return;
        }
    }
}

fn drain(rx: &mut mpsc::UnboundedReceiver<Out>, shared: &PeerShared) {
    while rx.try_recv().is_ok() {
        shared.pending.fetch_sub(1, Ordering::Relaxed);
    }
    shared.oldest_ms.store(0, Ordering::Relaxed);
}

async fn connect(
    addr: SocketAddr,
    id: &str,
    keys: &RwLock<Keys>,
) -> Result<(TcpStream, Session), String> {
    let mut s = match timeout(IO_TIMEOUT, TcpStream::connect(addr)).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => return Err(format!("connect: {e}")),
        Err(_) => return Err("connect: timed out".into()),
    };
    let _ = s.set_nodelay(true);
    // Unacknowledged data older than this fails the connection: a peer that died (or whose
    // link was cut) is noticed in seconds, so the reconnect and its full sync come soon.
    let _ = socket2::SockRef::from(&s).set_tcp_user_timeout(Some(USER_TIMEOUT));
    let (key_id, key) = match keys.read() {
        Ok(k) => (k.signing_id(), k.signing().to_vec()),
        Err(_) => return Err("key store poisoned".into()),
    };
    let nonce = auth::nonce().map_err(|e| format!("random nonce: {e}"))?;
    let mut hello = Vec::with_capacity(64);
    hello.extend_from_slice(MAGIC);
    hello.extend_from_slice(&key_id);
    hello.extend_from_slice(&nonce);
    // One length byte: a longer id is cut.
    let claimed = id.as_bytes();
    let claimed = claimed.get(..255).unwrap_or(claimed);
    hello.push(claimed.len() as u8);
    hello.extend_from_slice(claimed);
    write_all(&mut s, &hello)
        .await
        .map_err(|e| format!("hello: {e}"))?;
    let mut answer = [0u8; 8 + NONCE_LEN];
    read_exact(&mut s, &mut answer, IO_TIMEOUT)
        .await
        .map_err(|e| format!("the peer's hello: {e} (a key it does not have?)"))?;
    if &answer[..8] != MAGIC {
        return Err("the peer's hello is not pgrouter sync".into());
    }
    let mut server_nonce = [0u8; NONCE_LEN];
    server_nonce.copy_from_slice(&answer[8..]);
    Ok((s, Session::derive(&key, &nonce, &server_nonce, id)))
}

/// Writes queued frames (a ping when idle) until an error or an overflow.
async fn pump(
    s: &mut TcpStream,
    session: &Session,
    rx: &mut mpsc::UnboundedReceiver<Out>,
    shared: &PeerShared,
) -> String {
    let mut seq = 0u64;
    let mut buf = Vec::new();
    loop {
        if shared.overflowed.load(Ordering::Relaxed) {
            return "too far behind (queue overflowed); reconnecting for a full sync".into();
        }
        let out = match timeout(PING_EVERY, rx.recv()).await {
            Ok(Some(o)) => {
                shared.pending.fetch_sub(1, Ordering::Relaxed);
                Some(o)
            }
            Ok(None) => return "shutting down".into(),
            Err(_) => None,
        };
        let (kind, payload) = match &out {
            Some(o) => (o.kind, o.payload.as_slice()),
            None => {
                let (k, _) = Message::Ping.encode();
                (k, &[][..])
            }
        };
        buf.clear();
        let len = 8 + 1 + payload.len() + TAG_LEN;
        buf.extend_from_slice(&(len as u32).to_be_bytes());
        buf.extend_from_slice(&seq.to_be_bytes());
        buf.push(kind);
        buf.extend_from_slice(payload);
        buf.extend_from_slice(&session.tag(seq, kind, payload));
        seq += 1;
        if let Err(e) = write_all(s, &buf).await {
            return format!("write: {e}");
        }
        shared.update(|st| st.bytes_sent += buf.len() as u64);
        if rx.is_empty() {
            shared.oldest_ms.store(0, Ordering::Relaxed);
        }
    }
}

/// Accepts the peers' connections on `listen`; each verified message goes to the daemon.
pub async fn listener(
    listen: TcpListener,
    peers: Vec<SocketAddr>,
    keys: Arc<RwLock<Keys>>,
    shared: Vec<Arc<PeerShared>>,
    unknown_failures: Arc<AtomicU64>,
    to_daemon: mpsc::Sender<Inbound>,
) {
    let conns = Arc::new(AtomicU64::new(0));
    let open = Arc::new(AtomicU64::new(0));
    let max_open = MAX_INBOUND_PER_PEER * peers.len().max(1) as u64;
    loop {
        let (stream, from) = match listen.accept().await {
            Ok(x) => x,
            Err(e) => {
                // EMFILE and the like: a local fault; back off instead of spinning.
                warn!(error = %e, "sync: accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        if open.load(Ordering::Relaxed) >= max_open {
            // Connections that never authenticate must not eat this host's descriptors (its
            // Patroni checks need them): beyond the cap, new ones are closed at once.
            unknown_failures.fetch_add(1, Ordering::Relaxed);
            drop(stream);
            continue;
        }
        open.fetch_add(1, Ordering::Relaxed);
        let conn = conns.fetch_add(1, Ordering::Relaxed) + 1;
        let (peers, keys, shared, unknown, tx) = (
            peers.clone(),
            keys.clone(),
            shared.clone(),
            unknown_failures.clone(),
            to_daemon.clone(),
        );
        let open = open.clone();
        tokio::spawn(async move {
            receive(stream, from, conn, &peers, &keys, &shared, &unknown, &tx).await;
            open.fetch_sub(1, Ordering::Relaxed);
        });
    }
}

#[allow(clippy::too_many_arguments)]
async fn receive(
    mut s: TcpStream,
    from: SocketAddr,
    conn: u64,
    peers: &[SocketAddr],
    keys: &RwLock<Keys>,
    shared: &[Arc<PeerShared>],
    unknown: &AtomicU64,
    tx: &mpsc::Sender<Inbound>,
) {
    let mut head = [0u8; 8 + KEY_ID_LEN + NONCE_LEN + 1];
    if read_exact(&mut s, &mut head, IO_TIMEOUT).await.is_err() || &head[..8] != MAGIC {
        unknown.fetch_add(1, Ordering::Relaxed);
        return;
    }
    let mut id = vec![0u8; usize::from(head[8 + KEY_ID_LEN + NONCE_LEN])];
    if read_exact(&mut s, &mut id, IO_TIMEOUT).await.is_err() {
        unknown.fetch_add(1, Ordering::Relaxed);
        return;
    }
    let id = String::from_utf8_lossy(&id).into_owned();
    let Some((peer, sh)) = id
        .parse::<SocketAddr>()
        .ok()
        .and_then(|a| peers.iter().position(|p| *p == a))
        .and_then(|i| shared.get(i).map(|sh| (i, sh)))
    else {
        warn!(%from, claimed = %id, "sync: connection from no configured peer refused");
        unknown.fetch_add(1, Ordering::Relaxed);
        return;
    };
    let fail = |why: &str| {
        warn!(peer = %id, %from, "sync: {why}; connection refused");
        sh.update(|st| st.auth_failures += 1);
    };
    let mut key_id = [0u8; KEY_ID_LEN];
    key_id.copy_from_slice(&head[8..8 + KEY_ID_LEN]);
    let mut client_nonce = [0u8; NONCE_LEN];
    client_nonce.copy_from_slice(&head[8 + KEY_ID_LEN..8 + KEY_ID_LEN + NONCE_LEN]);
    let key = match keys.read() {
        Ok(k) => k.by_id(&key_id).map(<[u8]>::to_vec),
        Err(_) => None,
    };
    let Some(key) = key else {
        fail("unknown key id");
        return;
    };
    let Ok(server_nonce) = auth::nonce() else {
        return;
    };
    let mut answer = Vec::with_capacity(8 + NONCE_LEN);
    answer.extend_from_slice(MAGIC);
    answer.extend_from_slice(&server_nonce);
    if write_all(&mut s, &answer).await.is_err() {
        return;
    }
    let session = Session::derive(&key, &client_nonce, &server_nonce, &id);
    let mut seq = 0u64;
    let mut verified_once = false;
    loop {
        let mut len = [0u8; 4];
        // Until a frame verified, the connection is a stranger's: it gets seconds, not more.
        let within = if verified_once {
            RECV_TIMEOUT
        } else {
            IO_TIMEOUT
        };
        if read_exact(&mut s, &mut len, within).await.is_err() {
            break;
        }
        let len = u32::from_be_bytes(len) as usize;
        if !(8 + 1 + TAG_LEN..=MAX_FRAME).contains(&len) {
            fail("frame length out of bounds");
            break;
        }
        let mut body = vec![0u8; len];
        if read_exact(&mut s, &mut body, RECV_TIMEOUT).await.is_err() {
            break;
        }
        let (head, tag) = body.split_at(len - TAG_LEN);
        let Some((seq_b, rest)) = head.split_first_chunk::<8>() else {
            break;
        };
        let Some((&kind, payload)) = rest.split_first() else {
            break;
        };
        if u64::from_be_bytes(*seq_b) != seq || !session.verify(seq, kind, payload, tag) {
            fail("bad frame tag or sequence");
            break;
        }
        seq += 1;
        if !verified_once {
            verified_once = true;
            sh.current_conn.store(conn, Ordering::Relaxed);
            sh.update(|st| st.receiving = true);
            info!(peer = %id, "sync: peer connected");
        }
        sh.update(|st| st.bytes_received += (len + 4) as u64);
        let msg = match Message::decode(kind, payload) {
            Ok(m) => m,
            Err(e) => {
                // Authentic but undecodable: a newer peer's message kind, or a bug.
                warn!(peer = %id, error = %e, "sync: undecodable message dropped");
                sh.update(|st| st.rejected += 1);
                continue;
            }
        };
        if matches!(msg, Message::Ping) {
            continue;
        }
        if tx.send(Inbound::Message { peer, conn, msg }).await.is_err() {
            return;
        }
    }
    if verified_once {
        if sh.current_conn.load(Ordering::Relaxed) == conn {
            sh.update(|st| st.receiving = false);
        }
        let _ = tx.send(Inbound::Closed { peer, conn }).await;
    }
}
