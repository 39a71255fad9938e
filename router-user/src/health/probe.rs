//! The HTTP edge: one task per node that runs that node's checks when the cluster task says so.
//!
//! Patroni's API is a Python `http.server`: HTTP/1.0-style, one request per connection. The
//! client therefore keeps no idle connections (`pool_max_idle_per_host(0)`), asks for
//! `Connection: close`, and bounds every request (connect + answer + body) by `timeout`.
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use tokio::task::JoinSet;

use super::patroni;
use super::state::{CheckOutcome, NodeProbe};
use super::verdict::CheckKind;
use crate::config::{Cluster, Node, Scheme};

/// Bodies are a few hundred bytes; anything much larger is not Patroni.
const MAX_BODY: usize = 64 * 1024;

/// Builds the cluster's HTTP client (TLS roots/identity from `[cluster.api]`).
pub fn client(cfg: &Cluster) -> Result<reqwest::Client, String> {
    let api = &cfg.api;
    let mut b = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .timeout(cfg.health.timeout)
        .connect_timeout(cfg.health.timeout)
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("pgrouter/", env!("CARGO_PKG_VERSION")))
        .no_proxy();
    if api.scheme == Scheme::Https {
        // Certificates often carry DNS names only: connect to the configured address but
        // verify (and send SNI for) the node's tls_name, without asking a resolver.
        for n in &cfg.nodes {
            if let Some(name) = &n.tls_name {
                b = b.resolve(name, std::net::SocketAddr::new(n.host, n.api_port));
            }
        }
        if let Some(ca) = &api.ca_file {
            let pem = std::fs::read(ca).map_err(|e| format!("ca_file {}: {e}", ca.display()))?;
            for cert in reqwest::Certificate::from_pem_bundle(&pem)
                .map_err(|e| format!("ca_file {}: {e}", ca.display()))?
            {
                b = b.add_root_certificate(cert);
            }
        }
        if let (Some(cert), Some(key)) = (&api.cert_file, &api.key_file) {
            let mut pem =
                std::fs::read(key).map_err(|e| format!("key_file {}: {e}", key.display()))?;
            pem.push(b'\n');
            pem.extend(
                std::fs::read(cert).map_err(|e| format!("cert_file {}: {e}", cert.display()))?,
            );
            let id = reqwest::Identity::from_pem(&pem)
                .map_err(|e| format!("cert_file/key_file: {e}"))?;
            b = b.identity(id);
        }
    }
    b.build().map_err(|e| format!("http client: {e}"))
}

/// Everything a node task needs to probe one node.
#[derive(Clone, Debug)]
pub struct Target {
    pub node: String,
    /// `http://198.18.0.11:8008`
    pub base: String,
    pub kinds: Vec<CheckKind>,
    pub timeout: Duration,
    pub auth: Option<(String, String)>,
}

impl Target {
    pub fn new(cfg: &Cluster, node: &Node, kinds: Vec<CheckKind>) -> Self {
        let scheme = match cfg.api.scheme {
            Scheme::Http => "http",
            Scheme::Https => "https",
        };
        let host = match (&node.tls_name, node.host) {
            (Some(name), _) if cfg.api.scheme == Scheme::Https => name.clone(),
            (_, std::net::IpAddr::V4(a)) => a.to_string(),
            (_, std::net::IpAddr::V6(a)) => format!("[{a}]"),
        };
        Self {
            node: node.name.clone(),
            base: format!("{scheme}://{host}:{}", node.api_port),
            kinds,
            timeout: cfg.health.timeout,
            auth: cfg.api.username.clone().zip(cfg.api.password.clone()),
        }
    }
}

/// Runs `target`'s checks once per `()` received on `cmd`, reporting to `results`. Ends when
/// either channel closes.
pub async fn node_task(
    idx: usize,
    client: Result<reqwest::Client, String>,
    target: Target,
    mut cmd: mpsc::Receiver<()>,
    results: mpsc::Sender<(usize, NodeProbe)>,
) {
    let client = client.map(Arc::new);
    let target = Arc::new(target);
    while cmd.recv().await.is_some() {
        let started = Instant::now();
        let outcomes = match &client {
            Ok(c) => probe_node(c, &target).await,
            Err(e) => target
                .kinds
                .iter()
                .map(|_| CheckOutcome {
                    ok: false,
                    not_primary: false,
                    http_status: None,
                    latency: Duration::ZERO,
                    detail: e.clone(),
                    info: None,
                })
                .collect(),
        };
        if results
            .send((idx, NodeProbe { started, outcomes }))
            .await
            .is_err()
        {
            break;
        }
    }
}

/// All of a node's checks, concurrently, in `target.kinds` order.
pub async fn probe_node(client: &Arc<reqwest::Client>, target: &Arc<Target>) -> Vec<CheckOutcome> {
    let mut set = JoinSet::new();
    for (i, kind) in target.kinds.iter().cloned().enumerate() {
        let (client, target) = (client.clone(), target.clone());
        set.spawn(async move { (i, check(&client, &target, &kind).await) });
    }
    let mut out: Vec<Option<CheckOutcome>> = vec![None; target.kinds.len()];
    while let Some(r) = set.join_next().await {
        if let Ok((i, o)) = r
            && let Some(slot) = out.get_mut(i)
        {
            *slot = Some(o);
        }
    }
    out.into_iter()
        .map(|o| {
            o.unwrap_or_else(|| CheckOutcome {
                ok: false,
                not_primary: false,
                http_status: None,
                latency: Duration::ZERO,
                detail: "check task failed".into(),
                info: None,
            })
        })
        .collect()
}

/// One request, judged.
pub async fn check(client: &reqwest::Client, target: &Target, kind: &CheckKind) -> CheckOutcome {
    let start = Instant::now();
    // reqwest's timeout covers connect, headers and body; the outer one is a backstop.
    let fetched = tokio::time::timeout(
        target.timeout + Duration::from_millis(50),
        fetch(client, target, kind),
    )
    .await
    .unwrap_or_else(|_| Err(format!("timeout after {:?}", target.timeout)));
    let latency = start.elapsed();
    match fetched {
        Ok((status, body)) => {
            let j = patroni::judge(kind, status, &body);
            CheckOutcome {
                ok: j.ok,
                not_primary: j.not_primary,
                http_status: Some(status),
                latency,
                detail: j.reason,
                info: j.info,
            }
        }
        Err(e) => CheckOutcome {
            ok: false,
            not_primary: false,
            http_status: None,
            latency,
            detail: e,
            info: None,
        },
    }
}

async fn fetch(
    client: &reqwest::Client,
    target: &Target,
    kind: &CheckKind,
) -> Result<(u16, Vec<u8>), String> {
    let url = format!("{}{}", target.base, kind.path());
    let mut req = client
        .get(&url)
        .header(reqwest::header::CONNECTION, "close");
    if let Some((u, p)) = &target.auth {
        req = req.basic_auth(u, Some(p));
    }
    let mut resp = req.send().await.map_err(|e| describe(&e, target.timeout))?;
    let status = resp.status().as_u16();
    let mut body = Vec::new();
    while let Some(chunk) = resp
        .chunk()
        .await
        .map_err(|e| describe(&e, target.timeout))?
    {
        if body.len() + chunk.len() > MAX_BODY {
            return Err(format!("body larger than {MAX_BODY} bytes"));
        }
        body.extend_from_slice(&chunk);
    }
    Ok((status, body))
}

/// reqwest's top-level message ("error sending request for url …") hides the cause; show the
/// whole chain, innermost last.
fn describe(e: &reqwest::Error, timeout: Duration) -> String {
    if e.is_timeout() {
        return format!("timeout after {timeout:?}");
    }
    let mut parts = Vec::new();
    let kind = if e.is_connect() {
        "connect"
    } else if e.is_body() || e.is_decode() {
        "body"
    } else {
        "request"
    };
    let mut src: Option<&dyn std::error::Error> = std::error::Error::source(e);
    while let Some(s) = src {
        let t = s.to_string();
        if !parts.contains(&t) {
            parts.push(t);
        }
        src = s.source();
    }
    if parts.is_empty() {
        parts.push(e.to_string());
    }
    format!("{kind}: {}", parts.join(": "))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config;

    /// A cluster whose node has an IPv6 address (its URL needs brackets). The data path
    /// serves IPv4 listeners only, so the config is IPv4 and the address set afterwards: the
    /// checks themselves reach Patroni over either family.
    fn cluster(api: &str, node_extra: &str) -> Cluster {
        let text = format!(
            "[[cluster]]\nname = \"pg\"\n{api}\n[[cluster.node]]\nname = \"a\"\n\
             host = \"198.18.0.11\"\napi_port = 8443\n{node_extra}\n[[cluster.listener]]\n\
             name = \"W\"\nvip = \"198.18.0.100\"\nport = 5000\nkind = \"primary\"\n"
        );
        match config::parse(&text, "t.toml") {
            Ok(mut c) => {
                let mut c = c.clusters.remove(0);
                c.nodes[0].host = std::net::IpAddr::V6(std::net::Ipv6Addr::new(
                    0x2001, 0xdb8, 0, 0, 0, 0, 0, 0x11,
                ));
                c
            }
            Err(e) => panic!("{e}"),
        }
    }

    #[test]
    fn urls_use_the_address_or_the_tls_name() {
        let c = cluster("", "");
        let t = Target::new(&c, &c.nodes[0], vec![CheckKind::Primary]);
        assert_eq!(t.base, "http://[2001:db8::11]:8443");
        let c = cluster(
            "[cluster.api]\nscheme = \"https\"",
            "tls_name = \"pg-a.db.example\"",
        );
        let t = Target::new(&c, &c.nodes[0], vec![CheckKind::Primary]);
        assert_eq!(t.base, "https://pg-a.db.example:8443");
        assert!(client(&c).is_ok());
    }

    #[test]
    fn unreadable_ca_file_is_a_client_error() {
        let mut c = cluster("[cluster.api]\nscheme = \"https\"", "");
        c.api.ca_file = Some("/nonexistent/ca.pem".into());
        assert!(client(&c).is_err_and(|e| e.contains("ca_file")));
    }
}
