//! The local control socket: one request line (`status` or `reload`), one answer, then close:
//! a [`Status`](crate::status::Status) or an [`Answer`], as JSON.
//! Unix-socket permissions (root only) are the access control.
use std::path::Path;

use anyhow::Context as _;
use tokio::{
    io::{AsyncBufReadExt as _, AsyncReadExt as _, AsyncWriteExt as _, BufReader},
    net::{UnixListener, UnixStream},
    sync::{mpsc, oneshot},
};
use tracing::warn;

use crate::status::{Answer, Status};

/// A request read from the socket, for the controller's event loop to answer. Defined here,
/// with the protocol, so the controller depends on the socket and not the other way round.
pub enum Request {
    Status(oneshot::Sender<Status>),
    Reload(oneshot::Sender<Result<String, String>>),
}

/// Listens on `path` (replacing a stale socket left by a killed daemon).
pub fn serve(
    path: &Path,
    requests: mpsc::Sender<Request>,
) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let _ = std::fs::remove_file(path);
    let listener = UnixListener::bind(path)
        .with_context(|| format!("binding control socket {}", path.display()))?;
    Ok(tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let requests = requests.clone();
            tokio::spawn(async move {
                if let Err(e) = handle(stream, requests).await {
                    warn!("control socket: {e:#}");
                }
            });
        }
    }))
}

async fn handle(stream: UnixStream, requests: mpsc::Sender<Request>) -> anyhow::Result<()> {
    let (r, mut w) = stream.into_split();
    let mut line = String::new();
    BufReader::new(r).take(256).read_line(&mut line).await?;
    let answer = match line.trim() {
        "status" => {
            let (tx, rx) = oneshot::channel();
            requests.send(Request::Status(tx)).await?;
            serde_json::to_string(&rx.await?)?
        }
        "reload" => {
            let (tx, rx) = oneshot::channel();
            requests.send(Request::Reload(tx)).await?;
            let answer = match rx.await? {
                Ok(message) => Answer { ok: true, message },
                Err(message) => Answer { ok: false, message },
            };
            serde_json::to_string(&answer)?
        }
        other => serde_json::to_string(&Answer {
            ok: false,
            message: format!("unknown request {other:?}"),
        })?,
    };
    w.write_all(answer.as_bytes()).await?;
    w.write_all(b"\n").await?;
    Ok(())
}

/// Client side: sends one request and returns the answer.
pub async fn request(path: &Path, what: &str) -> anyhow::Result<String> {
    let mut s = tokio::time::timeout(std::time::Duration::from_secs(5), UnixStream::connect(path))
        .await
        .context("timed out connecting to the control socket")?
        .with_context(|| format!("connecting to {} (is pgrouter running?)", path.display()))?;
    s.write_all(format!("{what}\n").as_bytes()).await?;
    let mut out = String::new();
    tokio::time::timeout(
        std::time::Duration::from_secs(10),
        s.read_to_string(&mut out),
    )
    .await
    .context("timed out waiting for pgrouter's answer")??;
    Ok(out)
}
