//! HAProxy + Keepalived model → pgrouter plan, with a warning for everything that does not
//! carry over exactly. Pure; `render` turns the plan into TOML.
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::IpAddr;
use std::time::Duration;

use super::haproxy::{self, Directive, SectionKind, ServerOpts};
use super::keepalived;
use super::{Place, Source, Warning};
use crate::config::units::patroni_parse_bytes;

mod timeouts;
pub use timeouts::{FlowTimeoutsPlan, TimeoutFrom};

/// TEST-NET-1 (RFC 5737): placeholders that can never be a real host, so a forgotten one
/// fails loudly instead of routing somewhere.
pub const PLACEHOLDER_VIP: &str = "192.0.2.1";
const PLACEHOLDER_NODE_BASE: u8 = 101;
pub(super) const PLACEHOLDER_SRC: &str = "192.0.2.254";

// HAProxy's defaults (configuration manual, `inter`, `fall`, `rise`).
const HAPROXY_INTER: Duration = Duration::from_secs(2);
const HAPROXY_FALL: u32 = 3;
const HAPROXY_RISE: u32 = 2;
/// Weight of a `patroni:<cluster>` track (this host reaches some node's Patroni API) when
/// keepalived gives none (or 0). Never 0 (FAULT): a cluster whose APIs are all down fails the
/// track on every host, and FAULT on both would drop the VIP for every listener. A large
/// negative weight moves the VIP only to a peer that does reach the cluster.
pub const PATRONI_TRACK_WEIGHT: i32 = -50;

/// Everything `render` writes.
#[derive(Clone, Debug, Default)]
pub struct Plan {
    pub interfaces: Vec<String>,
    pub clusters: Vec<ClusterPlan>,
    pub vrrp: Vec<VrrpPlan>,
    /// Directives that have no meaning for an L4 NAT, listed once (not warnings).
    pub dropped: Vec<String>,
    /// `[datapath.timeouts]` from HAProxy's `timeout` directives.
    pub timeouts: FlowTimeoutsPlan,
}

#[derive(Clone, Debug)]
pub struct ClusterPlan {
    pub name: String,
    pub health: HealthPlan,
    pub api: ApiPlan,
    pub nodes: Vec<NodePlan>,
    pub listeners: Vec<ListenerPlan>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HealthPlan {
    pub interval: Duration,
    pub fastinter: Duration,
    pub downinter: Duration,
    pub timeout: Duration,
    pub fall: u32,
    pub rise: u32,
    /// Whether `timeout` came from `timeout check` (else from `inter`).
    pub timeout_from_check: bool,
}

#[derive(Clone, Debug, Default)]
pub struct ApiPlan {
    pub https: bool,
    pub port: u16,
    pub ca_file: Option<String>,
    pub cert_file: Option<String>,
}

#[derive(Clone, Debug)]
pub struct NodePlan {
    pub name: String,
    pub host: String,
    pub port: u16,
    /// Set only when it differs from `api.port`.
    pub api_port: Option<u16>,
    /// The HAProxy server line(s) it comes from.
    pub source: String,
}

#[derive(Clone, Debug)]
pub struct ListenerPlan {
    pub name: String,
    pub vip: String,
    pub port: u16,
    pub kind: &'static str,
    pub fallback: Option<bool>,
    pub lag: Option<String>,
    pub maxconn: u32,
    pub balance: &'static str,
    pub on_marked_down: &'static str,
    /// Human description of the HAProxy source (comment lines).
    pub source: Vec<String>,
}

#[derive(Clone, Debug, Default)]
pub struct VrrpPlan {
    pub name: String,
    pub line: usize,
    pub interface: String,
    pub version: u8,
    pub virtual_router_id: u8,
    pub priority: u8,
    pub advert_int: String,
    pub state: Option<String>,
    pub nopreempt: bool,
    pub preempt_delay: Option<String>,
    pub auth_pass: Option<String>,
    pub vips: Vec<String>,
    pub unicast_src_ip: Option<String>,
    pub unicast_peer: Vec<String>,
    pub garp_master_delay: Option<String>,
    pub garp_master_repeat: Option<u32>,
    pub garp_master_refresh: Option<String>,
    pub notify: Vec<(&'static str, String)>,
    pub tracks: Vec<(String, i32)>,
    pub source: Vec<String>,
}

/// Collects warnings with their file and place.
pub struct Sink {
    pub warnings: Vec<Warning>,
}

impl Sink {
    /// Records a warning, once: the same message at the same place (e.g. for each server of
    /// a pool) adds nothing but noise; the first line it applies to is kept.
    pub(super) fn warn(
        &mut self,
        file: &str,
        line: usize,
        place: Place,
        message: impl Into<String>,
    ) {
        let message = message.into();
        if self
            .warnings
            .iter()
            .any(|w| w.place == place && w.message == message && w.file == file)
        {
            return;
        }
        self.warnings.push(Warning {
            file: file.to_owned(),
            line,
            place,
            message,
        });
    }
}

/// A frontend/backend/listen with the directives pgrouter reads, defaults applied.
#[derive(Clone, Debug)]
struct Proxy {
    kind: SectionKind,
    name: String,
    line: usize,
    mode_http: bool,
    binds: Vec<(usize, String)>,
    check: Check,
    expect: Option<(usize, String)>,
    balance: Option<(usize, String)>,
    servers: Vec<Server>,
    default_backend: Option<(usize, String)>,
    use_backends: Vec<UseBackend>,
    acls: HashMap<String, Vec<String>>,
    timeout_check: Option<Duration>,
    /// `timeout connect|client|server|queue|tunnel|client-fin|server-fin`, the last of each
    /// (defaults first, then the section's own).
    timeouts: Vec<timeouts::Timeout>,
    maxconn: Option<(usize, String)>,
    unknown: Vec<Directive>,
    dropped: Vec<String>,
}

#[derive(Clone, Debug, Default)]
struct Check {
    line: usize,
    /// `option httpchk` seen (else TCP-only or no check).
    http: bool,
    method: Option<String>,
    uri: Option<String>,
    /// One lone argument that is a method name (`option httpchk GET`).
    lone_method: bool,
    tcp_only: bool,
}

#[derive(Clone, Debug)]
struct Server {
    name: String,
    line: usize,
    addr: String,
    opts: ServerOpts,
}

#[derive(Clone, Debug)]
struct UseBackend {
    line: usize,
    backend: String,
    cond: Vec<String>,
}

/// Directives that mean nothing to an L4 NAT; listed in one comment, not warned about.
fn l4_irrelevant(d: &Directive) -> bool {
    let w0 = d.word(0);
    let w1 = d.word(1);
    matches!(
        w0,
        "log" | "log-format" | "retries" | "description" | "id" | "disabled" | "enabled"
    ) || (w0 == "timeout" && matches!(w1, "http-request" | "http-keep-alive"))
        || (w0 == "option"
            && matches!(
                w1,
                "tcplog"
                    | "httplog"
                    | "dontlognull"
                    | "redispatch"
                    | "tcpka"
                    | "clitcpka"
                    | "srvtcpka"
                    | "log-health-checks"
                    | "http-use-htx"
            ))
        || (w0 == "no" && w1 == "option")
}

/// What a directive pgrouter reads lacks, if it is cut short (`use_backend` alone): such a
/// line is reported and skipped instead of being read as if its words were there.
fn missing_argument(d: &Directive) -> Option<&'static str> {
    let n = d.words.len();
    match d.word(0) {
        "use_backend" | "default_backend" if n < 2 => Some("a backend name"),
        "acl" if n < 3 => Some("a name and a criterion"),
        "bind" if n < 2 => Some("an address"),
        "server" if n < 3 => Some("a name and an address"),
        "balance" if n < 2 => Some("an algorithm"),
        "maxconn" if n < 2 => Some("a number"),
        "timeout" if n < 3 => Some("a name and a time"),
        _ => None,
    }
}

fn proxy_from(
    section: &haproxy::Section,
    defaults: &[Directive],
    src: &Source<'_>,
    sink: &mut Sink,
) -> Proxy {
    let mut p = Proxy {
        kind: section.kind,
        name: section.name.clone(),
        line: section.line,
        mode_http: false,
        binds: Vec::new(),
        check: Check::default(),
        expect: None,
        balance: None,
        servers: Vec::new(),
        default_backend: None,
        use_backends: Vec::new(),
        acls: HashMap::new(),
        timeout_check: None,
        timeouts: Vec::new(),
        maxconn: None,
        unknown: Vec::new(),
        dropped: Vec::new(),
    };
    if let Some(addr) = section.header_rest.first()
        && section.kind == SectionKind::Listen
    {
        p.binds.push((section.line, addr.clone()));
    }
    let place = Place::Top;
    let mut default_server = ServerOpts::default();
    let own_start = defaults.len();
    for (i, d) in defaults.iter().chain(section.directives.iter()).enumerate() {
        let from_defaults = i < own_start;
        if let Some(need) = missing_argument(d) {
            sink.warn(
                src.path,
                d.line,
                place.clone(),
                format!("`{}` without {need}; ignored", d.words.join(" ")),
            );
            continue;
        }
        let w = |k: usize| d.word(k);
        match (w(0), w(1)) {
            ("mode", m) => p.mode_http = m == "http",
            ("bind", addrs) if !from_defaults => {
                for a in addrs.split(',').filter(|a| !a.is_empty()) {
                    p.binds.push((d.line, a.to_owned()));
                }
                if d.words.len() > 2 {
                    sink.warn(
                        src.path,
                        d.line,
                        place.clone(),
                        format!(
                            "bind options `{}` are not translated (pgrouter's XDP NAT sees TCP, not TLS or PROXY protocol)",
                            d.rest(2)
                        ),
                    );
                }
            }
            ("option", "httpchk") => {
                let args: Vec<&str> = d
                    .words
                    .get(2..)
                    .unwrap_or_default()
                    .iter()
                    .map(String::as_str)
                    .collect();
                let mut c = Check {
                    line: d.line,
                    http: true,
                    ..Check::default()
                };
                match args.as_slice() {
                    [] => {}
                    [one] => {
                        c.uri = Some((*one).to_owned());
                        c.lone_method = matches!(*one, "GET" | "HEAD" | "OPTIONS" | "POST");
                    }
                    [m, u, ..] => {
                        c.method = Some((*m).to_owned());
                        c.uri = Some((*u).to_owned());
                    }
                }
                p.check = c;
            }
            ("option", "tcp-check") | ("option", "pgsql-check") => {
                if !p.check.http {
                    p.check = Check {
                        line: d.line,
                        tcp_only: true,
                        ..Check::default()
                    };
                }
            }
            ("http-check", "expect") => p.expect = Some((d.line, d.rest(2))),
            ("http-check", "send") => {
                // HAProxy ≥ 2.2: `http-check send meth GET uri /primary`.
                let mut k = 2;
                while k + 1 < d.words.len() {
                    match d.word(k) {
                        "meth" => p.check.method = Some(d.word(k + 1).to_owned()),
                        "uri" => {
                            p.check.uri = Some(d.word(k + 1).to_owned());
                            p.check.lone_method = false;
                        }
                        _ => {}
                    }
                    k += 2;
                }
                p.check.http = true;
                p.check.line = d.line;
            }
            ("http-check", _) => {}
            ("balance", b) => p.balance = Some((d.line, b.to_owned())),
            ("default-server", _) => {
                haproxy::parse_server_opts(
                    d.words.get(1..).unwrap_or_default(),
                    &mut default_server,
                );
            }
            ("server", name) if !from_defaults => {
                let mut opts = default_server.clone();
                opts.ignored.clear();
                opts.errors.clear();
                haproxy::parse_server_opts(d.words.get(3..).unwrap_or_default(), &mut opts);
                let mut all_ignored = default_server.ignored.clone();
                all_ignored.extend(opts.ignored.iter().cloned());
                opts.ignored = all_ignored;
                p.servers.push(Server {
                    name: name.to_owned(),
                    line: d.line,
                    addr: d.word(2).to_owned(),
                    opts,
                });
            }
            ("default_backend", b) => p.default_backend = Some((d.line, b.to_owned())),
            ("use_backend", b) if !from_defaults => p.use_backends.push(UseBackend {
                line: d.line,
                backend: b.to_owned(),
                cond: d.words.get(2..).unwrap_or_default().to_vec(),
            }),
            ("acl", name) => {
                p.acls
                    .entry(name.to_owned())
                    .or_default()
                    .extend(d.words.get(2..).unwrap_or_default().iter().cloned());
            }
            ("timeout", "check") => match haproxy::parse_time(d.word(2)) {
                Ok(t) => p.timeout_check = Some(t),
                Err(e) => sink.warn(
                    src.path,
                    d.line,
                    place.clone(),
                    format!("timeout check: {e}"),
                ),
            },
            ("timeout", k) if timeouts::KEYS.contains(&k) => {
                timeouts::record(&mut p.timeouts, d, src, sink);
            }
            ("maxconn", m) if !from_defaults => p.maxconn = Some((d.line, m.to_owned())),
            _ if l4_irrelevant(d) || from_defaults => {
                let text = d.words.join(" ");
                if !p.dropped.contains(&text) {
                    p.dropped.push(text);
                }
            }
            _ => p.unknown.push(d.clone()),
        }
    }
    p
}

/// What one listener serves, decided from the pool's check.
#[derive(Clone, Debug)]
struct Role {
    kind: &'static str,
    lag: Option<String>,
}

/// Patroni matches the request path by substring, in this order (api.py `do_GET`); we do
/// the same so the translation means what Patroni would have answered.
fn role_of(p: &Proxy, src: &Source<'_>, place: &Place, sink: &mut Sink) -> Role {
    let c = &p.check;
    let line = if c.line == 0 { p.line } else { c.line };
    if !c.http {
        let how = if c.tcp_only {
            "only a TCP check"
        } else {
            "no HTTP check (`option httpchk`)"
        };
        sink.warn(
            src.path,
            line,
            place.clone(),
            format!(
                "`{}` has {how}: HAProxy sends connections to any node that accepts TCP, whatever its role; \
                 pgrouter needs a Patroni role, so this became kind = \"primary\" — check that this is what clients expect",
                p.name
            ),
        );
        return Role {
            kind: "primary",
            lag: None,
        };
    }
    if c.lone_method {
        sink.warn(
            src.path,
            line,
            place.clone(),
            format!(
                "`option httpchk {}`: HAProxy reads a lone argument as the URI, so it requests the path {:?}, \
                 which Patroni answers with 503 on every node (this listener never had a server); \
                 translated as the intended leader check `GET /`",
                c.uri.as_deref().unwrap_or_default(),
                c.uri.as_deref().unwrap_or_default()
            ),
        );
        return Role {
            kind: "primary",
            lag: None,
        };
    }
    let uri = c.uri.clone().unwrap_or_else(|| "/".to_owned());
    let (path, query) = match uri.split_once('?') {
        Some((p, q)) => (p.to_owned(), Some(q.to_owned())),
        None => (uri.clone(), None),
    };
    let whole = if path == "/" {
        "/primary".to_owned()
    } else {
        uri.clone()
    };
    let mut role = if whole.contains("standby_leader") || whole.contains("standby-leader") {
        sink.warn(
            src.path,
            line,
            place.clone(),
            format!("`{uri}` follows a standby cluster's leader; pgrouter has no such listener kind, translated as kind = \"primary\""),
        );
        Role {
            kind: "primary",
            lag: None,
        }
    } else if whole.contains("leader")
        || whole.contains("master")
        || whole.contains("primary")
        || whole.contains("read-write")
    {
        Role {
            kind: "primary",
            lag: None,
        }
    } else if whole.contains("replica") {
        Role {
            kind: "replica",
            lag: None,
        }
    } else if whole.contains("read-only") {
        if whole.contains("sync") || whole.contains("quorum") {
            sink.warn(
                src.path,
                line,
                place.clone(),
                format!("`{uri}` serves the primary and synchronous/quorum standbys only; pgrouter's read-only kind includes every running replica"),
            );
        }
        Role {
            kind: "read-only",
            lag: None,
        }
    } else if whole.contains("health") {
        sink.warn(
            src.path,
            line,
            place.clone(),
            format!("`{uri}` passes on every node with PostgreSQL running; translated as kind = \"read-only\" (primary and running replicas)"),
        );
        Role {
            kind: "read-only",
            lag: None,
        }
    } else if matches!(
        path.as_str(),
        "/sync" | "/synchronous" | "/quorum" | "/async" | "/asynchronous"
    ) {
        sink.warn(
            src.path,
            line,
            place.clone(),
            format!("`{path}` selects only {} replicas; pgrouter cannot tell synchronous from asynchronous replicas, so this listener (kind = \"replica\") serves every replica Patroni reports",
                if path.contains("async") { "asynchronous" } else { "synchronous/quorum" }),
        );
        Role {
            kind: "replica",
            lag: None,
        }
    } else {
        sink.warn(
            src.path,
            line,
            place.clone(),
            format!("`{uri}` is not a Patroni health endpoint (Patroni answers 503 on every node, so HAProxy never had a server here); translated as kind = \"primary\""),
        );
        Role {
            kind: "primary",
            lag: None,
        }
    };
    if let Some(method) = &c.method
        && !matches!(method.as_str(), "GET" | "OPTIONS" | "HEAD")
    {
        sink.warn(
            src.path,
            line,
            place.clone(),
            format!("check method {method} is unusual for Patroni; pgrouter always sends GET"),
        );
    }
    for kv in query
        .iter()
        .flat_map(|q| q.split('&'))
        .filter(|kv| !kv.is_empty())
    {
        let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
        match k {
            "lag" if role.kind == "primary" => sink.warn(
                src.path,
                line,
                place.clone(),
                format!("`lag={v}` means nothing on a leader check; dropped"),
            ),
            "lag" => {
                if patroni_parse_bytes(v).is_some() {
                    role.lag = Some(v.to_owned());
                } else {
                    sink.warn(
                        src.path,
                        line,
                        place.clone(),
                        format!("`lag={v}` is not a size Patroni understands, so Patroni applies no limit at all; left out (no limit, as before)"),
                    );
                }
            }
            _ => sink.warn(
                src.path,
                line,
                place.clone(),
                format!("check parameter `{kv}` (Patroni tag or state filter) has no pgrouter equivalent; dropped, so nodes it excluded may serve this listener"),
            ),
        }
    }
    if let Some((eline, e)) = &p.expect
        && e != "status 200"
        && e != "rstatus ^2"
    {
        sink.warn(
            src.path,
            *eline,
            place.clone(),
            format!("`http-check expect {e}`: pgrouter passes a check on HTTP 200 with the Patroni JSON role, not on this expectation"),
        );
    }
    role
}

/// `host:port` of a server → (host, port).
fn split_host_port(addr: &str) -> (String, Option<u16>) {
    let a = addr
        .strip_prefix("ipv4@")
        .or_else(|| addr.strip_prefix("ipv6@"))
        .unwrap_or(addr);
    if let Some(rest) = a.strip_prefix('[') {
        if let Some((h, p)) = rest.split_once("]:") {
            return (h.to_owned(), p.parse().ok());
        }
        return (rest.trim_end_matches(']').to_owned(), None);
    }
    if a.parse::<IpAddr>().is_ok() {
        return (a.to_owned(), None);
    }
    match a.rsplit_once(':') {
        Some((h, p)) => (h.to_owned(), p.parse().ok()),
        None => (a.to_owned(), None),
    }
}

/// A name pgrouter accepts (`A-Z a-z 0-9 - _ .`, 1..=64).
pub(super) fn sanitize(name: &str) -> String {
    let mut s: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') {
                c
            } else {
                '_'
            }
        })
        .take(64)
        .collect();
    if s.is_empty() {
        s.push_str("unnamed");
    }
    s
}

pub(super) fn fmt_duration(d: Duration) -> String {
    let us = d.as_micros();
    if us == 0 {
        "0ms".into()
    } else if us.is_multiple_of(3_600_000_000) {
        format!("{}h", us / 3_600_000_000)
    } else if us.is_multiple_of(60_000_000) {
        format!("{}m", us / 60_000_000)
    } else if us.is_multiple_of(1_000_000) {
        format!("{}s", us / 1_000_000)
    } else if us.is_multiple_of(1_000) {
        format!("{}ms", us / 1_000)
    } else {
        format!("{us}us")
    }
}

pub fn duration_text(d: Duration) -> String {
    fmt_duration(d)
}

/// One pgrouter listener in the making: the frontend/listen that binds, its pool, and the
/// fallback rule if any.
struct Route {
    front: usize,
    pool: usize,
    fallback: Option<(UseBackend, Option<usize>, String)>,
}

/// Resolves a condition's words (`{ nbsrv(PG1_ro) eq 0 }` or ACL names) to the pool whose
/// emptiness it tests: `Some(pool name)` for `nbsrv(X) eq 0`, `lt 1`, `le 0`.
fn nbsrv_zero(cond: &[String], acls: &HashMap<String, Vec<String>>) -> Option<String> {
    let (neg, words): (bool, &[String]) = match cond.first().map(String::as_str) {
        Some("if") => (false, &cond[1..]),
        Some("unless") => (true, &cond[1..]),
        _ => return None,
    };
    if neg {
        return None;
    }
    let mut flat: Vec<String> = Vec::new();
    for w in words {
        match acls.get(w.as_str()) {
            Some(def) => flat.extend(def.iter().cloned()),
            None => flat.push(w.clone()),
        }
    }
    let flat: Vec<&str> = flat
        .iter()
        .map(String::as_str)
        .filter(|w| *w != "{" && *w != "}")
        .collect();
    if flat.len() != 3 {
        return None;
    }
    let pool = flat[0].strip_prefix("nbsrv(")?.strip_suffix(')')?;
    match (flat[1], flat[2]) {
        ("eq", "0") | ("lt", "1") | ("le", "0") => Some(pool.to_owned()),
        _ => None,
    }
}

/// What the per-cluster steps read: the sources and the HAProxy model.
#[derive(Clone, Copy)]
struct Inputs<'a> {
    hsrc: &'a Source<'a>,
    ksrc: Option<&'a Source<'a>>,
    proxies: &'a [Proxy],
    routes: &'a [Route],
    by_name: &'a HashMap<&'a str, usize>,
    /// keepalived VIPs (instance, address): what `bind *` means.
    vips: &'a [(String, IpAddr)],
}

/// What the per-cluster steps accumulate across clusters.
#[derive(Default)]
struct State {
    bind_seen: BTreeSet<(String, u16)>,
    placeholder_nodes: u8,
    /// Proxies whose unknown directives were already reported.
    reported: BTreeSet<usize>,
    dropped: Vec<String>,
}

/// Proxies with defaults applied (the last unnamed `defaults`, or `from NAME`).
fn build_proxies(hfile: &haproxy::File, hsrc: &Source<'_>, sink: &mut Sink) -> Vec<Proxy> {
    let mut proxies: Vec<Proxy> = Vec::new();
    let mut last_defaults: Vec<Directive> = Vec::new();
    let mut named_defaults: HashMap<String, Vec<Directive>> = HashMap::new();
    for s in &hfile.sections {
        match s.kind {
            SectionKind::Defaults => {
                let mut ds = match s.header_rest.as_slice() {
                    [from, base, ..] if from == "from" => {
                        named_defaults.get(base).cloned().unwrap_or_default()
                    }
                    _ if s.name == "from" => named_defaults
                        .get(s.header_rest.first().map_or("", String::as_str))
                        .cloned()
                        .unwrap_or_default(),
                    _ => Vec::new(),
                };
                ds.extend(s.directives.iter().cloned());
                if !s.name.is_empty() && s.name != "from" {
                    named_defaults.insert(s.name.clone(), ds.clone());
                }
                last_defaults = ds;
            }
            SectionKind::Frontend | SectionKind::Backend | SectionKind::Listen => {
                let defaults = match s.header_rest.as_slice() {
                    [from, base, ..] if from == "from" => {
                        named_defaults.get(base).cloned().unwrap_or_default()
                    }
                    _ => last_defaults.clone(),
                };
                // `listen NAME ADDR from X`: the address is not a `from`.
                proxies.push(proxy_from(s, &defaults, hsrc, sink));
            }
            SectionKind::Global => {}
            SectionKind::Other => sink.warn(
                hsrc.path,
                s.line,
                Place::Top,
                format!("`{} {}` section is not translated", s.keyword, s.name),
            ),
        }
    }
    proxies
}

/// Routes: every frontend/listen that binds, with its pool and fallback rule; flags names
/// that do not resolve and backends nothing uses.
fn build_routes(
    proxies: &[Proxy],
    by_name: &HashMap<&str, usize>,
    hsrc: &Source<'_>,
    sink: &mut Sink,
) -> Vec<Route> {
    let mut routes: Vec<Route> = Vec::new();
    let mut used_as_pool: BTreeSet<usize> = BTreeSet::new();
    for (fi, f) in proxies.iter().enumerate() {
        if f.kind == SectionKind::Backend || f.binds.is_empty() {
            continue;
        }
        let place = Place::Top;
        if f.mode_http {
            sink.warn(
                hsrc.path,
                f.line,
                place,
                format!(
                    "`{} {}` is `mode http` (stats page or web service), not PostgreSQL; not translated (pgrouter status and metrics: `pgrouter status`, [control] metrics)",
                    if f.kind == SectionKind::Listen { "listen" } else { "frontend" },
                    f.name
                ),
            );
            continue;
        }
        let mut pool = None;
        let mut fallback = None;
        for ub in &f.use_backends {
            let target = by_name.get(ub.backend.as_str()).copied();
            if target.is_none() {
                sink.warn(
                    hsrc.path,
                    ub.line,
                    Place::Top,
                    format!(
                        "`use_backend {}` in `{}` names a backend that does not exist (HAProxy refuses to start); check the section names",
                        ub.backend, f.name
                    ),
                );
            }
            if ub.cond.is_empty() {
                if pool.is_none() {
                    pool = target;
                }
                continue;
            }
            match nbsrv_zero(&ub.cond, &f.acls) {
                Some(counted) if fallback.is_none() => {
                    fallback = Some((ub.clone(), target, counted));
                }
                _ => sink.warn(
                    hsrc.path,
                    ub.line,
                    Place::Top,
                    format!(
                        "`use_backend {} {}` is not translated: pgrouter only expresses the fallback `use_backend X if {{ nbsrv(POOL) eq 0 }}`",
                        ub.backend,
                        ub.cond.join(" ")
                    ),
                ),
            }
        }
        if pool.is_none() {
            if f.kind == SectionKind::Listen && !f.servers.is_empty() {
                pool = Some(fi);
            } else if let Some((line, b)) = &f.default_backend {
                match by_name.get(b.as_str()) {
                    Some(&bi) => pool = Some(bi),
                    None => sink.warn(
                        hsrc.path,
                        *line,
                        Place::Top,
                        format!(
                            "`default_backend {b}` in `{}` names a backend that does not exist (HAProxy refuses to start)",
                            f.name
                        ),
                    ),
                }
            }
        }
        let Some(pool) = pool else {
            sink.warn(
                hsrc.path,
                f.line,
                Place::Top,
                format!(
                    "`{}` binds but has no servers and no usable backend; not translated",
                    f.name
                ),
            );
            continue;
        };
        used_as_pool.insert(pool);
        if let Some((_, Some(t), _)) = &fallback {
            used_as_pool.insert(*t);
        }
        routes.push(Route {
            front: fi,
            pool,
            fallback,
        });
    }
    for (i, p) in proxies.iter().enumerate() {
        if p.kind == SectionKind::Backend && !used_as_pool.contains(&i) && !p.mode_http {
            sink.warn(
                hsrc.path,
                p.line,
                Place::Top,
                format!(
                    "backend `{}` is not used by any frontend; not translated",
                    p.name
                ),
            );
        }
    }
    routes
}

/// Clusters: routes whose pools share a server address belong to one Patroni cluster.
fn group_routes(routes: &[Route], proxies: &[Proxy]) -> Vec<Vec<usize>> {
    let server_key = |s: &Server| s.addr.clone();
    let mut cluster_of: Vec<usize> = (0..routes.len()).collect();
    for a in 0..routes.len() {
        for b in 0..a {
            let sa: BTreeSet<String> = proxies[routes[a].pool]
                .servers
                .iter()
                .map(server_key)
                .collect();
            let sb: BTreeSet<String> = proxies[routes[b].pool]
                .servers
                .iter()
                .map(server_key)
                .collect();
            if !sa.is_disjoint(&sb) {
                let (from, to) = (cluster_of[a], cluster_of[b]);
                for c in cluster_of.iter_mut() {
                    if *c == from {
                        *c = to;
                    }
                }
            }
        }
    }
    let mut groups: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
    for (ri, c) in cluster_of.iter().enumerate() {
        groups.entry(*c).or_default().push(ri);
    }
    groups.into_values().collect()
}

/// Nodes: every server of every pool (and fallback pool) of a cluster, by address; the
/// API port most servers are checked on becomes `api.port`. Returns address → node index.
fn cluster_nodes(
    inp: &Inputs<'_>,
    st: &mut State,
    sink: &mut Sink,
    ci: usize,
    route_ids: &[usize],
    cluster: &mut ClusterPlan,
) -> BTreeMap<String, usize> {
    let Inputs {
        hsrc,
        proxies,
        routes,
        ..
    } = *inp;
    let mut pools: Vec<usize> = Vec::new();
    for &ri in route_ids {
        pools.push(routes[ri].pool);
        if let Some((_, Some(t), _)) = &routes[ri].fallback {
            pools.push(*t);
        }
    }
    let mut node_by_addr: BTreeMap<String, usize> = BTreeMap::new();
    let mut api_ports: Vec<(usize, u16)> = Vec::new();
    let mut https: Option<bool> = None;
    for &pi in &pools {
        let pool = &proxies[pi];
        for s in &pool.servers {
            let place = Place::Cluster(ci);
            for e in &s.opts.errors {
                sink.warn(
                    hsrc.path,
                    s.line,
                    place.clone(),
                    format!("server `{}`: {e}", s.name),
                );
            }
            if let Some(&ni) = node_by_addr.get(&s.addr) {
                // Same server in another pool: its check port must agree.
                // (No `port N`: HAProxy checks the server's own port.)
                let api = s.opts.check_port.or(split_host_port(&s.addr).1);
                if let Some(p) = api
                    && cluster.nodes[ni].api_port.is_some_and(|q| q != p)
                {
                    sink.warn(hsrc.path, s.line, place, format!(
                            "server `{}` ({}) is checked on port {p} here but on {} elsewhere; pgrouter checks each node on one API port",
                            s.name, s.addr, cluster.nodes[ni].api_port.unwrap_or_default()));
                }
                continue;
            }
            let (host, port) = split_host_port(&s.addr);
            let host = match host.parse::<IpAddr>() {
                Ok(ip) => {
                    if ip.is_loopback() {
                        sink.warn(hsrc.path, s.line, place.clone(), format!(
                                "server `{}` is on loopback ({ip}); pgrouter forwards packets over the network from the edge host, so the node needs an address the edge host routes to", s.name));
                    }
                    ip.to_string()
                }
                Err(_) => {
                    st.placeholder_nodes = st.placeholder_nodes.saturating_add(1);
                    let ph = format!(
                        "192.0.2.{}",
                        PLACEHOLDER_NODE_BASE.saturating_add(st.placeholder_nodes)
                    );
                    sink.warn(hsrc.path, s.line, Place::Node(ci, cluster.nodes.len()), format!(
                            "server `{}` address {host:?} is a name; pgrouter needs the node's IP address (no DNS in the data path): replace the placeholder {ph}", s.name));
                    ph
                }
            };
            let port = port.unwrap_or_else(|| {
                    sink.warn(hsrc.path, s.line, Place::Node(ci, cluster.nodes.len()), format!(
                        "server `{}` has no port (HAProxy then uses the client's destination port); set to 5432", s.name));
                    5432
                });
            let check_port = match (s.opts.check, s.opts.check_port) {
                (Some(false) | None, _) => {
                    sink.warn(hsrc.path, s.line, Place::Node(ci, cluster.nodes.len()), format!(
                            "server `{}` has no `check`: HAProxy always considers it up; pgrouter checks every node through Patroni", s.name));
                    s.opts.check_port.unwrap_or(8008)
                }
                (Some(true), Some(p)) => p,
                (Some(true), None) => {
                    sink.warn(hsrc.path, s.line, Place::Node(ci, cluster.nodes.len()), format!(
                            "server `{}` is checked on its PostgreSQL port {port} (no `check port N`), which is not Patroni's REST API; assumed Patroni's default 8008", s.name));
                    8008
                }
            };
            if let Some(a) = &s.opts.check_addr {
                sink.warn(hsrc.path, s.line, Place::Node(ci, cluster.nodes.len()), format!(
                        "server `{}` is checked at another address (`addr {a}`); pgrouter checks Patroni at the node's own address", s.name));
            }
            if s.opts.backup {
                sink.warn(hsrc.path, s.line, Place::Node(ci, cluster.nodes.len()), format!(
                        "server `{}` is `backup` (HAProxy used it only when every other server was down); pgrouter has no backup nodes: it serves whenever Patroni reports it in the listener's role", s.name));
            }
            if s.opts.disabled {
                sink.warn(hsrc.path, s.line, Place::Node(ci, cluster.nodes.len()), format!(
                        "server `{}` is `disabled`; pgrouter has no disabled nodes — remove the node if it must not serve", s.name));
            }
            if s.opts.weight.is_some_and(|w| w != 1) {
                sink.warn(
                    hsrc.path,
                    s.line,
                    Place::Node(ci, cluster.nodes.len()),
                    format!(
                        "server `{}` has `weight {}`; pgrouter balances nodes equally",
                        s.name,
                        s.opts.weight.unwrap_or(1)
                    ),
                );
            }
            if !s.opts.ignored.is_empty() {
                sink.warn(
                    hsrc.path,
                    s.line,
                    Place::Node(ci, cluster.nodes.len()),
                    format!(
                        "server `{}` options not translated: {}",
                        s.name,
                        s.opts.ignored.join(", ")
                    ),
                );
            }
            let https_here = s.opts.check_ssl;
            match https {
                    None => https = Some(https_here),
                    Some(h) if h != https_here => sink.warn(hsrc.path, s.line, Place::Cluster(ci),
                        "some servers are checked over TLS (`check-ssl`) and some not; pgrouter uses one scheme per cluster (https)"),
                    _ => {}
                }
            if https_here {
                if s.opts.verify.as_deref() == Some("none") && cluster.api.ca_file.is_none() {
                    sink.warn(hsrc.path, s.line, Place::Cluster(ci), "`verify none` on the servers' TLS checks: pgrouter always verifies Patroni's certificate; set api.ca_file to the CA that signed it");
                }
                if let Some(ca) = &s.opts.ca_file {
                    cluster.api.ca_file = Some(ca.clone());
                }
                if let Some(crt) = &s.opts.crt {
                    cluster.api.cert_file = Some(crt.clone());
                    sink.warn(hsrc.path, s.line, Place::Cluster(ci), format!(
                            "`crt {crt}`: HAProxy reads certificate and key from one PEM; cert_file and key_file both point to it — split them if pgrouter cannot read the key from it"));
                }
                if let Some(sni) = &s.opts.check_sni {
                    sink.warn(hsrc.path, s.line, Place::Node(ci, cluster.nodes.len()), format!(
                            "`check-sni {sni}`: set tls_name = {sni:?} on this node if its certificate has no IP SAN"));
                }
            }
            let mut name = sanitize(&s.name);
            if cluster.nodes.iter().any(|n| n.name == name) {
                name = format!("{name}-{}", cluster.nodes.len() + 1);
            }
            node_by_addr.insert(s.addr.clone(), cluster.nodes.len());
            api_ports.push((cluster.nodes.len(), check_port));
            cluster.nodes.push(NodePlan {
                name,
                host,
                port,
                api_port: Some(check_port),
                source: format!("{}:{} server {}", hsrc.path, s.line, s.words_for_comment()),
            });
        }
    }
    cluster.api.https = https.unwrap_or(false);
    // The most common API port becomes api.port; nodes keep api_port only when different.
    let mut counts: BTreeMap<u16, usize> = BTreeMap::new();
    for (_, p) in &api_ports {
        *counts.entry(*p).or_default() += 1;
    }
    if let Some((&p, _)) = counts
        .iter()
        .max_by_key(|(p, n)| (**n, std::cmp::Reverse(**p)))
    {
        cluster.api.port = p;
    }
    for n in &mut cluster.nodes {
        if n.api_port == Some(cluster.api.port) {
            n.api_port = None;
        }
    }

    node_by_addr
}

/// Health timing per pool; the cluster takes the first listener's, with a warning for others.
fn cluster_health(
    inp: &Inputs<'_>,
    sink: &mut Sink,
    ci: usize,
    route_ids: &[usize],
    cluster: &mut ClusterPlan,
) {
    let Inputs {
        hsrc,
        proxies,
        routes,
        ..
    } = *inp;
    let mut timings: Vec<(String, usize, HealthPlan)> = Vec::new();
    for &ri in route_ids {
        let pool = &proxies[routes[ri].pool];
        if let Some(h) = pool_health(pool, hsrc, ci, sink) {
            timings.push((pool.name.clone(), pool.line, h));
        }
    }
    if let Some((_, _, h)) = timings.first() {
        cluster.health = *h;
    }
    for (name, line, h) in timings.iter().skip(1) {
        if *h != cluster.health {
            sink.warn(hsrc.path, *line, Place::Cluster(ci), format!(
                    "`{name}` checks with different timing ({}) than `{}` ({}); pgrouter checks a cluster with one timing: `{}`'s",
                    describe_health(h), timings[0].0, describe_health(&cluster.health), timings[0].0));
        }
    }
}

/// Listeners of a cluster: kind, fallback, limits and one listener per bound VIP:port.
fn cluster_listeners(
    inp: &Inputs<'_>,
    st: &mut State,
    sink: &mut Sink,
    ci: usize,
    route_ids: &[usize],
    node_by_addr: &BTreeMap<String, usize>,
    cluster: &mut ClusterPlan,
) {
    let Inputs {
        hsrc,
        ksrc,
        proxies,
        routes,
        by_name,
        vips,
    } = *inp;
    let all_nodes: BTreeSet<String> = node_by_addr.keys().cloned().collect();
    for &ri in route_ids {
        let r = &routes[ri];
        let f = &proxies[r.front];
        let pool = &proxies[r.pool];
        let li0 = cluster.listeners.len();
        let place = Place::Listener(ci, li0);
        let role = role_of(pool, hsrc, &place, sink);
        let mut source = vec![if r.front == r.pool {
            format!("HAProxy `listen {}` ({}:{})", f.name, hsrc.path, f.line)
        } else {
            format!(
                "HAProxy `frontend {}` ({}:{}) → `backend {}` ({}:{})",
                f.name, hsrc.path, f.line, pool.name, hsrc.path, pool.line
            )
        }];
        let c = &pool.check;
        if c.http {
            source.push(format!(
                "check: {} {}{}",
                c.method.as_deref().unwrap_or("OPTIONS"),
                c.uri.as_deref().unwrap_or("/"),
                pool.expect
                    .as_ref()
                    .map(|(_, e)| format!(", expect {e}"))
                    .unwrap_or_default()
            ));
        }
        // Servers that differ from the cluster's node set.
        let mine: BTreeSet<String> = pool.servers.iter().map(|s| s.addr.clone()).collect();
        let missing: Vec<&String> = all_nodes.difference(&mine).collect();
        if !missing.is_empty() {
            sink.warn(hsrc.path, pool.line, place.clone(), format!(
                    "`{}` forwards only to {} of the cluster's {} servers (not to {}); pgrouter considers every node of the cluster for every listener, by the role Patroni reports",
                    pool.name, mine.len(), all_nodes.len(),
                    missing.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(", ")));
        }
        // maxconn: per server.
        let maxconns: BTreeSet<u32> = pool
            .servers
            .iter()
            .map(|s| s.opts.maxconn.unwrap_or(0))
            .collect();
        let maxconn = maxconns.iter().next_back().copied().unwrap_or(0);
        if maxconns.len() > 1 {
            sink.warn(hsrc.path, pool.line, place.clone(), format!(
                    "servers of `{}` have different maxconn ({:?}); pgrouter has one per listener, set to the largest, {maxconn}",
                    pool.name, maxconns));
        }
        let sections: Vec<&Proxy> = if r.front == r.pool {
            vec![f]
        } else {
            vec![f, pool]
        };
        for p in &sections {
            if let Some((line, m)) = &p.maxconn {
                sink.warn(hsrc.path, *line, place.clone(), format!(
                        "`maxconn {m}` on `{}` limits the whole proxy; pgrouter limits connections per node only (listener maxconn = {maxconn})", p.name));
            }
        }
        // on-marked-down.
        let omd: BTreeSet<Option<String>> = pool
            .servers
            .iter()
            .map(|s| s.opts.on_marked_down.clone())
            .collect();
        let on_marked_down = match omd.iter().next() {
            Some(Some(a)) if a == "shutdown-sessions" => "shutdown-sessions",
            Some(Some(a)) => {
                sink.warn(
                    hsrc.path,
                    pool.line,
                    place.clone(),
                    format!(
                        "`on-marked-down {a}` has no pgrouter equivalent; on_marked_down = \"keep\""
                    ),
                );
                "keep"
            }
            _ => "keep",
        };
        if omd.len() > 1 {
            sink.warn(hsrc.path, pool.line, place.clone(), format!(
                    "servers of `{}` differ in on-marked-down; pgrouter has one setting per listener: {on_marked_down}", pool.name));
        }
        if let Some(s) = pool.servers.iter().find(|s| s.opts.on_marked_up.is_some()) {
            sink.warn(
                hsrc.path,
                s.line,
                place.clone(),
                format!(
                    "`on-marked-up {}` has no pgrouter equivalent; dropped",
                    s.opts.on_marked_up.as_deref().unwrap_or_default()
                ),
            );
        }
        // balance.
        let balance = match pool.balance.as_ref().or(f.balance.as_ref()) {
            None => "roundrobin",
            Some((_, b)) => match b.as_str() {
                "roundrobin" => "roundrobin",
                "static-rr" => "roundrobin",
                "leastconn" => "leastconn",
                "source" => "source",
                other => {
                    let line = pool
                        .balance
                        .as_ref()
                        .or(f.balance.as_ref())
                        .map_or(pool.line, |(l, _)| *l);
                    sink.warn(hsrc.path, line, place.clone(), format!(
                            "`balance {other}` has no pgrouter equivalent (roundrobin, leastconn, source); set to roundrobin"));
                    "roundrobin"
                }
            },
        };
        // Fallback.
        let mut fallback = None;
        if let Some((ub, target, counted)) = &r.fallback {
            let own = &pool.name;
            if counted != own {
                let exists = by_name.contains_key(counted.as_str());
                sink.warn(hsrc.path, ub.line, place.clone(), format!(
                        "`use_backend {} if {{ nbsrv({counted}) eq 0 }}` counts `{counted}`{}, but `{}`'s servers are in `{own}`: HAProxy falls back on the wrong condition (stale name?). \
                         pgrouter's fallback always watches the listener's own replicas",
                        ub.backend,
                        if exists { "" } else { ", which does not exist" },
                        f.name));
            }
            match target {
                Some(t) => {
                    let tp = &proxies[*t];
                    let tplace = place.clone();
                    let mut scratch = Sink {
                        warnings: Vec::new(),
                    };
                    let trole = role_of(tp, hsrc, &tplace, &mut scratch);
                    if trole.kind == "primary" && tp.check.http && !tp.check.lone_method {
                        if role.kind == "replica" {
                            fallback = Some(true);
                            source.push(format!(
                                    "fallback: `use_backend {} {}` → `backend {}` ({}:{}, leader check)",
                                    ub.backend, ub.cond.join(" "), tp.name, hsrc.path, tp.line));
                            let theirs: BTreeSet<String> =
                                tp.servers.iter().map(|s| s.addr.clone()).collect();
                            if theirs != mine {
                                sink.warn(hsrc.path, tp.line, place.clone(), format!(
                                        "fallback backend `{}` has other servers than `{}`; pgrouter falls back to the cluster's primary, whichever node it is",
                                        tp.name, pool.name));
                            }
                        } else {
                            sink.warn(hsrc.path, ub.line, place.clone(), format!(
                                    "fallback to the leader on a {} listener: pgrouter has fallback only for kind = \"replica\"; dropped", role.kind));
                        }
                    } else {
                        sink.warn(hsrc.path, ub.line, place.clone(), format!(
                                "fallback backend `{}` does not check for the leader (`{}`); pgrouter can only fall back to the primary; left out",
                                tp.name, tp.check.uri.as_deref().unwrap_or("no http check")));
                    }
                }
                None => {
                    if role.kind == "replica" {
                        fallback = Some(false);
                    }
                }
            }
        }
        if role.kind == "replica" && fallback != Some(true) {
            sink.warn(hsrc.path, pool.line, place.clone(), format!(
                    "read listener `{}` has no fallback: reads fail while no replica is up, although the primary could serve them; consider fallback = \"primary\" (commented out below)",
                    f.name));
            fallback = Some(false);
        }
        // One listener per bind address (and per VIP for `*`).
        let mut made = 0usize;
        for (bline, b) in &f.binds {
            let addr = match haproxy::parse_bind_addr(b) {
                Ok(a) => a,
                Err(e) => {
                    sink.warn(
                        hsrc.path,
                        *bline,
                        place.clone(),
                        format!("bind {b}: {e}; not translated"),
                    );
                    continue;
                }
            };
            let (p0, p1) = addr.ports;
            if p1 != p0 {
                sink.warn(
                    hsrc.path,
                    *bline,
                    place.clone(),
                    format!("bind {b}: a port range becomes one listener per port ({p0}..={p1})"),
                );
            }
            let hosts: Vec<(String, bool)> = match &addr.host {
                Some(h) => match h.parse::<IpAddr>() {
                    Ok(ip) => {
                        if ksrc.is_some() && !vips.iter().any(|(_, v)| *v == ip) {
                            sink.warn(hsrc.path, *bline, place.clone(), format!(
                                        "HAProxy binds {ip}, which is not a keepalived virtual_ipaddress ({}); pgrouter serves it as a VIP anyway — check which address clients use",
                                        if vips.is_empty() { "none".to_owned() } else { vips.iter().map(|(_, v)| v.to_string()).collect::<Vec<_>>().join(", ") }));
                        } else if ksrc.is_none() {
                            sink.warn(hsrc.path, *bline, Place::Datapath, format!(
                                        "{ip} is used as the VIP; without a keepalived.conf no [[vrrp]] instance moves it (add one, or manage it elsewhere)"));
                        }
                        vec![(ip.to_string(), false)]
                    }
                    Err(_) => {
                        sink.warn(hsrc.path, *bline, place.clone(), format!(
                                    "bind {b}: {h:?} is not an IP address; replace the placeholder {PLACEHOLDER_VIP}"));
                        vec![(PLACEHOLDER_VIP.to_owned(), true)]
                    }
                },
                None if vips.is_empty() => {
                    sink.warn(hsrc.path, *bline, place.clone(), format!(
                            "bind {b} listens on every address; pgrouter serves one VIP per listener and no keepalived.conf names it (--keepalived): replace the placeholder {PLACEHOLDER_VIP}"));
                    vec![(PLACEHOLDER_VIP.to_owned(), true)]
                }
                None => {
                    let nodes_family = cluster
                        .nodes
                        .first()
                        .and_then(|n| n.host.parse::<IpAddr>().ok())
                        .map(|ip| ip.is_ipv4());
                    let mut v: Vec<(String, bool)> = vips
                        .iter()
                        .filter(|(_, ip)| nodes_family.is_none_or(|f4| ip.is_ipv4() == f4))
                        .map(|(_, ip)| (ip.to_string(), false))
                        .collect();
                    v.dedup();
                    if v.is_empty() {
                        sink.warn(hsrc.path, *bline, place.clone(), format!(
                                "bind {b}: keepalived has no VIP of the nodes' address family; replace the placeholder {PLACEHOLDER_VIP}"));
                        v.push((PLACEHOLDER_VIP.to_owned(), true));
                    } else {
                        source.push(format!("bind {b}: the VIP from keepalived's virtual_ipaddress (pgrouter serves only the VIP, not the host's own addresses)"));
                    }
                    v
                }
            };
            for (vip, _placeholder) in &hosts {
                for port in p0..=p1 {
                    if !st.bind_seen.insert((vip.clone(), port)) {
                        sink.warn(
                            hsrc.path,
                            *bline,
                            place.clone(),
                            format!("{vip}:{port} is bound twice; the second is left out"),
                        );
                        continue;
                    }
                    let snat = crate::config::DEFAULT_SNAT_PORTS;
                    if snat.contains(port) {
                        sink.warn(hsrc.path, *bline, Place::Datapath, format!(
                                "port {port} is inside pgrouter's default SNAT source ports {}-{}; set datapath.snat_ports to a range without it", snat.first, snat.last));
                    }
                    let base = sanitize(&f.name);
                    let name = if made == 0 {
                        base
                    } else {
                        format!("{base}-{}", made + 1)
                    };
                    made += 1;
                    cluster.listeners.push(ListenerPlan {
                        name,
                        vip: vip.clone(),
                        port,
                        kind: role.kind,
                        fallback,
                        lag: role.lag.clone(),
                        maxconn,
                        balance,
                        on_marked_down,
                        source: source.clone(),
                    });
                }
            }
        }
        // Warnings for directives pgrouter does not know: the frontend, its pool and its
        // fallback backend, each once even when several listeners share it.
        let mut involved = vec![r.front, r.pool];
        if let Some((_, Some(t), _)) = &r.fallback {
            involved.push(*t);
        }
        for pi in involved {
            if !st.reported.insert(pi) {
                continue;
            }
            let p = &proxies[pi];
            for d in &p.unknown {
                sink.warn(
                    hsrc.path,
                    d.line,
                    place.clone(),
                    format!("`{}` in `{}` is not translated", d.words.join(" "), p.name),
                );
            }
            for d in &p.dropped {
                if !st.dropped.contains(d) {
                    st.dropped.push(d.clone());
                }
            }
        }
        if f.binds.is_empty() || made == 0 {
            sink.warn(
                hsrc.path,
                f.line,
                place,
                format!("`{}`: no usable bind address; no listener", f.name),
            );
        }
    }
}

/// The translation: HAProxy (and keepalived) sources → a plan and its warnings.
pub fn plan(hsrc: &Source<'_>, ksrc: Option<&Source<'_>>, sink: &mut Sink) -> Result<Plan, String> {
    let hfile = haproxy::parse(hsrc.text);
    for e in &hfile.errors {
        sink.warn(hsrc.path, e.line, Place::Top, e.message.clone());
    }

    // keepalived first: its VIPs resolve `bind *:PORT`.
    let mut plan = Plan::default();
    let mut vips: Vec<(String, IpAddr)> = Vec::new();
    if let Some(k) = ksrc {
        let kfile = keepalived::parse(k.text);
        super::vrrp_plan::vrrp_plans(k, &kfile, &mut plan, sink);
        for v in &plan.vrrp {
            for a in &v.vips {
                let ip = a.split('/').next().unwrap_or_default();
                if let Ok(ip) = ip.parse::<IpAddr>() {
                    vips.push((v.name.clone(), ip));
                }
            }
        }
    }

    let proxies = build_proxies(&hfile, hsrc, sink);
    let by_name: HashMap<&str, usize> = proxies
        .iter()
        .enumerate()
        .filter(|(_, p)| p.kind != SectionKind::Frontend)
        .map(|(i, p)| (p.name.as_str(), i))
        .collect();

    let routes = build_routes(&proxies, &by_name, hsrc, sink);
    if routes.is_empty() {
        return Err(format!(
            "{}: no frontend or listen section that binds a TCP port and has servers; nothing to translate",
            hsrc.path
        ));
    }

    plan.timeouts = timeouts::flow_timeouts(&proxies, &routes, hsrc, sink);

    let groups = group_routes(&routes, &proxies);
    let multi = groups.len() > 1;
    let mut used_names = BTreeSet::new();
    let inp = Inputs {
        hsrc,
        ksrc,
        proxies: &proxies,
        routes: &routes,
        by_name: &by_name,
        vips: &vips,
    };
    let mut st = State::default();
    for (gi, route_ids) in groups.iter().enumerate() {
        let ci = plan.clusters.len();
        let first = &proxies[routes[route_ids[0]].front];
        let mut cname = sanitize(&first.name);
        if multi && !used_names.insert(cname.clone()) {
            cname = format!("{cname}-{gi}");
        }
        let mut cluster = ClusterPlan {
            name: cname,
            health: HealthPlan {
                interval: HAPROXY_INTER,
                fastinter: HAPROXY_INTER,
                downinter: HAPROXY_INTER,
                timeout: HAPROXY_INTER,
                fall: HAPROXY_FALL,
                rise: HAPROXY_RISE,
                timeout_from_check: false,
            },
            api: ApiPlan {
                port: 8008,
                ..ApiPlan::default()
            },
            nodes: Vec::new(),
            listeners: Vec::new(),
        };
        let node_by_addr = cluster_nodes(&inp, &mut st, sink, ci, route_ids, &mut cluster);

        cluster_health(&inp, sink, ci, route_ids, &mut cluster);

        cluster_listeners(
            &inp,
            &mut st,
            sink,
            ci,
            route_ids,
            &node_by_addr,
            &mut cluster,
        );
        plan.clusters.push(cluster);
    }

    plan.dropped = st.dropped;
    if plan.interfaces.is_empty() {
        sink.warn(
            hsrc.path,
            0,
            Place::Datapath,
            "no keepalived vrrp_instance (--keepalived) names the interface that receives the VIP traffic; set datapath.interfaces",
        );
    }

    // keepalived's scripts became pgrouter's tracks: `patroni:` stands for one track per
    // cluster (the VIP should leave a host that reaches no Patroni API of a cluster it serves).
    let cnames: Vec<String> = plan.clusters.iter().map(|c| c.name.clone()).collect();
    for v in &mut plan.vrrp {
        let mut tracks = Vec::new();
        for (name, weight) in std::mem::take(&mut v.tracks) {
            if name == "patroni:" {
                tracks.extend(cnames.iter().map(|c| (format!("patroni:{c}"), weight)));
            } else {
                tracks.push((name, weight));
            }
        }
        v.tracks = tracks;
    }
    if plan.clusters.iter().all(|c| c.listeners.is_empty()) {
        return Err(format!("{}: no listener could be translated", hsrc.path));
    }
    Ok(plan)
}

impl Server {
    fn words_for_comment(&self) -> String {
        format!("{} {}", self.name, self.addr)
    }
}

fn describe_health(h: &HealthPlan) -> String {
    format!(
        "inter {} fastinter {} downinter {} fall {} rise {}",
        fmt_duration(h.interval),
        fmt_duration(h.fastinter),
        fmt_duration(h.downinter),
        h.fall,
        h.rise
    )
}

/// HAProxy's check timing of a pool (from its servers, `default-server` applied).
fn pool_health(pool: &Proxy, src: &Source<'_>, ci: usize, sink: &mut Sink) -> Option<HealthPlan> {
    let mut seen: Vec<(usize, HealthPlan)> = Vec::new();
    for s in &pool.servers {
        let o = &s.opts;
        let inter = o.inter.unwrap_or(HAPROXY_INTER);
        let h = HealthPlan {
            interval: inter,
            fastinter: o.fastinter.unwrap_or(inter),
            downinter: o.downinter.unwrap_or(inter),
            timeout: pool.timeout_check.unwrap_or(inter),
            fall: o.fall.unwrap_or(HAPROXY_FALL),
            rise: o.rise.unwrap_or(HAPROXY_RISE),
            timeout_from_check: pool.timeout_check.is_some(),
        };
        seen.push((s.line, h));
    }
    let (_, first) = *seen.first()?;
    if let Some((line, h)) = seen.iter().find(|(_, h)| *h != first) {
        sink.warn(src.path, *line, Place::Cluster(ci), format!(
            "servers of `{}` check with different timing ({} vs {}); pgrouter uses one per cluster, the first server's",
            pool.name, describe_health(h), describe_health(&first)));
    }
    let mut h = first;
    for (what, d) in [
        ("inter", &mut h.interval),
        ("fastinter", &mut h.fastinter),
        ("downinter", &mut h.downinter),
        ("timeout check", &mut h.timeout),
    ] {
        if *d < Duration::from_millis(10) {
            sink.warn(
                src.path,
                pool.line,
                Place::Cluster(ci),
                format!(
                    "`{what} {}` is below pgrouter's 10ms minimum; raised to 10ms",
                    fmt_duration(*d)
                ),
            );
            *d = Duration::from_millis(10);
        }
    }
    if h.fall == 0 || h.rise == 0 || h.fall > 1000 || h.rise > 1000 {
        sink.warn(
            src.path,
            pool.line,
            Place::Cluster(ci),
            format!(
                "fall {} / rise {} outside pgrouter's 1..=1000; clamped",
                h.fall, h.rise
            ),
        );
        h.fall = h.fall.clamp(1, 1000);
        h.rise = h.rise.clamp(1, 1000);
    }
    Some(h)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn w(s: &str) -> Vec<String> {
        s.split_whitespace().map(String::from).collect()
    }

    /// The fallback condition in its spellings; anything else is not a fallback.
    #[test]
    fn nbsrv_conditions() {
        let acls = HashMap::from([("no_replicas".to_owned(), w("nbsrv(ro) lt 1"))]);
        assert_eq!(
            nbsrv_zero(&w("if { nbsrv(PG1_ro) eq 0 }"), &acls),
            Some("PG1_ro".into())
        );
        assert_eq!(nbsrv_zero(&w("if no_replicas"), &acls), Some("ro".into()));
        assert_eq!(nbsrv_zero(&w("unless { nbsrv(x) eq 0 }"), &acls), None);
        assert_eq!(nbsrv_zero(&w("if { nbsrv(x) gt 0 }"), &acls), None);
        assert_eq!(nbsrv_zero(&w("if { src 10.0.0.0/8 }"), &acls), None);
    }

    #[test]
    fn host_port() {
        assert_eq!(
            split_host_port("10.0.0.1:5432"),
            ("10.0.0.1".into(), Some(5432))
        );
        assert_eq!(
            split_host_port("[2001:db8::1]:5432"),
            ("2001:db8::1".into(), Some(5432))
        );
        assert_eq!(split_host_port("2001:db8::1"), ("2001:db8::1".into(), None));
        assert_eq!(split_host_port("pg-a:5432"), ("pg-a".into(), Some(5432)));
    }

    #[test]
    fn names_and_durations() {
        assert_eq!(
            sanitize("postgresql_10.5.5.147_5432"),
            "postgresql_10.5.5.147_5432"
        );
        assert_eq!(sanitize("pg a/b"), "pg_a_b");
        assert_eq!(fmt_duration(Duration::from_millis(3000)), "3s");
        assert_eq!(fmt_duration(Duration::from_millis(1500)), "1500ms");
        assert_eq!(fmt_duration(Duration::from_secs(120)), "2m");
    }
}
