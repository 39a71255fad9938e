//! Semantic validation: raw file → typed [`Config`], collecting every error with its position.
use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::span::{Seg, Spans, render};
use super::units::{parse_duration, parse_port_range, patroni_parse_bytes};
use super::{
    Api, Checks, Cluster, Config, ConfigError, Control, Datapath, Diagnostic, Fallback,
    FlowTimeouts, Health, Lag, Listener, ListenerKind, Node, OnEmpty, PortRange, Scheme, raw,
};

/// Shorter than this and checks become a self-inflicted load test of Patroni.
pub(crate) const MIN_CHECK_PERIOD: Duration = Duration::from_millis(10);
/// Fewer handshake entries than this (32 half-open flows) would refuse ordinary bursts.
const MIN_HS_ENTRIES: u32 = 64;
/// A held SYN is retransmitted by the client (1 s, 3 s, 7 s, …); beyond a minute every
/// client library has given up anyway, and the hold only hides the outage.
const MAX_EMPTY_HOLD: Duration = Duration::from_secs(60);
/// More than this many consecutive results is almost certainly a typo (HAProxy has no limit).
pub(crate) const MAX_RISE_FALL: u32 = 1000;

struct Ctx<'a> {
    file: String,
    spans: &'a Spans,
    diags: Vec<Diagnostic>,
}

/// Builds a path from segments: `p!["cluster", 0, "name"]`.
macro_rules! p {
    ($($seg:expr),* $(,)?) => { vec![$(Seg::from($seg)),*] };
}

impl From<&str> for Seg {
    fn from(s: &str) -> Self {
        Seg::Key(s.to_owned())
    }
}
impl From<usize> for Seg {
    fn from(i: usize) -> Self {
        Seg::Index(i)
    }
}

impl Ctx<'_> {
    fn err(&mut self, path: Vec<Seg>, message: impl Into<String>) {
        self.err_near(path, &[], message);
    }

    /// Like `err`, but when `path` is not written in the file (a default), points at the
    /// first of `near` that is: the key whose value makes the default wrong.
    fn err_near(&mut self, path: Vec<Seg>, near: &[Vec<Seg>], message: impl Into<String>) {
        let (line, col) = std::iter::once(&path)
            .chain(near)
            .find_map(|p| self.spans.written(p))
            .or_else(|| self.spans.span_of(&path))
            .map_or((1, 1), |s| self.spans.line_col(s.start));
        self.diags.push(Diagnostic {
            file: self.file.clone(),
            line,
            col,
            field: render(&path),
            message: message.into(),
        });
    }

    fn duration(&mut self, path: Vec<Seg>, text: &str) -> Duration {
        match parse_duration(text) {
            Ok(d) if d < MIN_CHECK_PERIOD => {
                self.err(path, format!("{text:?} is too short; the minimum is 10ms"));
                MIN_CHECK_PERIOD
            }
            Ok(d) => d,
            Err(e) => {
                self.err(path, e);
                MIN_CHECK_PERIOD
            }
        }
    }

    /// A flow timeout: any positive duration (tests use 1s; `check-config` warns about an
    /// `established` below RFC 5382's 2h4m, see `summarize`).
    fn timeout(&mut self, key: &str, text: Option<&str>, default: Duration) -> Duration {
        let Some(text) = text else {
            return default;
        };
        let path = p!["datapath", "timeouts", key];
        match parse_duration(text) {
            Ok(d) if d.is_zero() => {
                self.err(path, format!("{text:?} must be more than 0"));
                default
            }
            Ok(d) => d,
            Err(e) => {
                self.err(path, e);
                default
            }
        }
    }

    fn nonzero_port(&mut self, path: Vec<Seg>, port: u16) {
        if port == 0 {
            self.err(path, "port 0 is not a usable port");
        }
    }

    fn opt_path(&mut self, path: Vec<Seg>, text: &str) -> Option<PathBuf> {
        if text.is_empty() {
            return None;
        }
        let p = PathBuf::from(text);
        if !p.is_file() {
            self.err(path, format!("{text:?} is not a readable file"));
        }
        Some(p)
    }
}

pub(super) fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
    let spans = Spans::new(text);
    let mut ctx = Ctx {
        file: path.display().to_string(),
        spans: &spans,
        diags: Vec::new(),
    };
    let file: raw::File = match toml::from_str(text) {
        Ok(f) => f,
        Err(e) => {
            let (line, col, field) = match e.span() {
                Some(s) => {
                    let (l, c) = spans.line_col(s.start);
                    let field = render(&spans.path_at(s.start));
                    (
                        l,
                        c,
                        if field.is_empty() {
                            "(top level)".to_owned()
                        } else {
                            field
                        },
                    )
                }
                None => (1, 1, "(top level)".to_owned()),
            };
            let message = e.message().trim().replace('\n', " ");
            return Err(ConfigError {
                diagnostics: vec![Diagnostic {
                    file: ctx.file,
                    line,
                    col,
                    field,
                    message,
                }],
            });
        }
    };
    let cfg = build(&mut ctx, file, path);
    if ctx.diags.is_empty() {
        Ok(cfg)
    } else {
        let mut diagnostics = ctx.diags;
        diagnostics.sort_by_key(|d| (d.line, d.col));
        Err(ConfigError { diagnostics })
    }
}

fn build(ctx: &mut Ctx<'_>, file: raw::File, path: &Path) -> Config {
    let datapath = datapath(ctx, file.datapath);
    let control = control(ctx, file.control);
    let clusters: Vec<Cluster> = file
        .cluster
        .into_iter()
        .enumerate()
        .map(|(i, c)| cluster(ctx, i, c, &datapath))
        .collect();
    cross_cluster(ctx, &clusters);
    vrrp(ctx, &file.vrrp, &clusters);
    Config {
        path: path.to_owned(),
        datapath,
        control,
        clusters,
        vrrp: file.vrrp,
    }
}

fn datapath(ctx: &mut Ctx<'_>, d: raw::Datapath) -> Datapath {
    let mut seen = HashSet::new();
    for (i, ifname) in d.interfaces.iter().enumerate() {
        // IFNAMSIZ is 16 including the NUL.
        if ifname.is_empty() || ifname.len() > 15 || ifname.contains(['/', ' ']) {
            ctx.err(
                p!["datapath", "interfaces", i],
                format!("{ifname:?} is not a valid interface name"),
            );
        }
        if !seen.insert(ifname) {
            ctx.err(
                p!["datapath", "interfaces", i],
                format!("interface {ifname:?} is listed twice"),
            );
        }
    }
    let pin_path = PathBuf::from(&d.pin_path);
    if !pin_path.is_absolute() {
        ctx.err(
            p!["datapath", "pin_path"],
            "must be an absolute path (under /sys/fs/bpf)",
        );
    }
    if d.conntrack_entries < 1024 {
        ctx.err(
            p!["datapath", "conntrack_entries"],
            format!(
                "{} is too small; at least 1024 (two entries per connection)",
                d.conntrack_entries
            ),
        );
    }
    let snat_ports = match parse_port_range(&d.snat_ports) {
        Ok((first, last)) => {
            if first > last {
                ctx.err(
                    p!["datapath", "snat_ports"],
                    format!("first port {first} is above last port {last}"),
                );
            } else if first < 1024 {
                ctx.err(
                    p!["datapath", "snat_ports"],
                    "must not include privileged ports (below 1024)",
                );
            }
            PortRange { first, last }
        }
        Err(e) => {
            ctx.err(p!["datapath", "snat_ports"], e);
            super::DEFAULT_SNAT_PORTS
        }
    };
    let ports = u32::from(snat_ports.last.saturating_sub(snat_ports.first)) + 1;
    // Unset: the default, capped so half-open flows can hold at most half the ports.
    let handshake_entries = d.handshake_entries.unwrap_or_else(|| {
        router_ebpf::DEFAULT_HS_ENTRIES
            .min(ports)
            .max(MIN_HS_ENTRIES)
    });
    if handshake_entries < MIN_HS_ENTRIES {
        ctx.err(
            p!["datapath", "handshake_entries"],
            format!(
                "{handshake_entries} is too small; at least {MIN_HS_ENTRIES} (two entries per \
                 half-open connection)"
            ),
        );
    } else if handshake_entries / 2 >= ports {
        // Half-open flows each hold a SNAT port: as many as the ports would let a SYN flood
        // take every port and leave none for connections that complete.
        ctx.err_near(
            p!["datapath", "handshake_entries"],
            &[p!["datapath", "snat_ports"]],
            format!(
                "{} entries hold {} half-open connections, not fewer than the {ports} ports of \
                 snat_ports {}-{}; a SYN flood could take every port",
                handshake_entries,
                handshake_entries / 2,
                snat_ports.first,
                snat_ports.last
            ),
        );
    }
    let t = &d.timeouts;
    let def = FlowTimeouts::default();
    let timeouts = FlowTimeouts {
        handshake: ctx.timeout("handshake", t.handshake.as_deref(), def.handshake),
        established: ctx.timeout("established", t.established.as_deref(), def.established),
        closing: ctx.timeout("closing", t.closing.as_deref(), def.closing),
        closed: ctx.timeout("closed", t.closed.as_deref(), def.closed),
    };
    Datapath {
        interfaces: d.interfaces,
        mode: d.mode,
        pin_path,
        conntrack_entries: d.conntrack_entries,
        snat_ports,
        handshake_entries,
        timeouts,
    }
}

fn control(ctx: &mut Ctx<'_>, c: raw::Control) -> Control {
    let socket = PathBuf::from(&c.socket);
    if !socket.is_absolute() {
        ctx.err(p!["control", "socket"], "must be an absolute path");
    }
    let metrics = if c.metrics.is_empty() {
        None
    } else {
        match c.metrics.parse::<SocketAddr>() {
            Ok(a) => Some(a),
            Err(_) => {
                ctx.err(
                    p!["control", "metrics"],
                    format!(
                        "{:?} is not ADDRESS:PORT (e.g. \"127.0.0.1:9188\"; \"\" disables)",
                        c.metrics
                    ),
                );
                None
            }
        }
    };
    Control { socket, metrics }
}

fn health(ctx: &mut Ctx<'_>, ci: usize, h: raw::Health) -> Health {
    let at = |k: &str| p!["cluster", ci, "health", k];
    let out = Health {
        interval: ctx.duration(at("interval"), &h.interval),
        fastinter: ctx.duration(at("fastinter"), &h.fastinter),
        downinter: ctx.duration(at("downinter"), &h.downinter),
        timeout: ctx.duration(at("timeout"), &h.timeout),
        fall: h.fall,
        rise: h.rise,
        observe_refusals: h.observe_refusals,
    };
    for (k, v) in [("fall", h.fall), ("rise", h.rise)] {
        if v == 0 {
            ctx.err(at(k), "must be at least 1");
        } else if v > MAX_RISE_FALL {
            ctx.err(
                at(k),
                format!("{v} is implausibly large (at most {MAX_RISE_FALL})"),
            );
        }
    }
    out
}

fn api(ctx: &mut Ctx<'_>, ci: usize, a: raw::Api) -> Api {
    let at = |k: &str| p!["cluster", ci, "api", k];
    ctx.nonzero_port(at("port"), a.port);
    let ca_file = ctx.opt_path(at("ca_file"), &a.ca_file);
    let cert_file = ctx.opt_path(at("cert_file"), &a.cert_file);
    let key_file = ctx.opt_path(at("key_file"), &a.key_file);
    if a.scheme == Scheme::Http {
        for (k, v) in [
            ("ca_file", &ca_file),
            ("cert_file", &cert_file),
            ("key_file", &key_file),
        ] {
            if v.is_some() {
                ctx.err(at(k), "only meaningful with scheme = \"https\"");
            }
        }
    }
    if cert_file.is_some() != key_file.is_some() {
        let k = if cert_file.is_some() {
            "cert_file"
        } else {
            "key_file"
        };
        ctx.err(
            at(k),
            "client certificates need both cert_file and key_file",
        );
    }
    let username = (!a.username.is_empty()).then_some(a.username);
    let password = (!a.password.is_empty()).then_some(a.password);
    if username.is_some() != password.is_some() {
        let k = if username.is_some() {
            "username"
        } else {
            "password"
        };
        ctx.err(at(k), "basic auth needs both username and password");
    }
    Api {
        scheme: a.scheme,
        port: a.port,
        ca_file,
        cert_file,
        key_file,
        username,
        password,
    }
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

fn cluster(ctx: &mut Ctx<'_>, ci: usize, c: raw::Cluster, dp: &Datapath) -> Cluster {
    if !valid_name(&c.name) {
        ctx.err(
            p!["cluster", ci, "name"],
            format!("{:?}: use 1-64 characters from A-Z a-z 0-9 - _ .", c.name),
        );
    }
    let health = health(ctx, ci, c.health);
    let api = api(ctx, ci, c.api);
    if c.node.is_empty() {
        ctx.err(p!["cluster", ci, "name"], "cluster has no [[cluster.node]]");
    }
    if c.listener.is_empty() {
        ctx.err(
            p!["cluster", ci, "name"],
            "cluster has no [[cluster.listener]]",
        );
    }

    let mut names = HashMap::new();
    let mut endpoints = HashMap::new();
    let mut tls_names = HashMap::new();
    let mut primaries = 0;
    let mut nodes = Vec::new();
    for (ni, n) in c.node.into_iter().enumerate() {
        let at = |k: &str| p!["cluster", ci, "node", ni, k];
        if !valid_name(&n.name) {
            ctx.err(
                at("name"),
                format!("{:?}: use 1-64 characters from A-Z a-z 0-9 - _ .", n.name),
            );
        }
        if let Some(prev) = names.insert(n.name.clone(), ni) {
            ctx.err(
                at("name"),
                format!("duplicate node name {:?} (also node[{prev}])", n.name),
            );
        }
        ctx.nonzero_port(at("port"), n.port);
        if let Some(0) = n.api_port {
            ctx.nonzero_port(at("api_port"), 0);
        }
        if let Some(prev) = endpoints.insert((n.host, n.port), ni) {
            ctx.err(at("host"), format!("same address and port as node[{prev}]"));
        }
        if n.host.is_unspecified() || n.host.is_multicast() {
            ctx.err(
                at("host"),
                format!("{} is not a unicast host address", n.host),
            );
        }
        match (c.checks, n.role) {
            (Checks::Patroni, Some(_)) => {
                ctx.err(at("role"), "role is only allowed with checks = \"static\"; Patroni decides roles")
            }
            (Checks::Static, None) => ctx.err(
                at("name"),
                "checks = \"static\" needs role = \"primary\" | \"replica\" | \"down\" on every node",
            ),
            (Checks::Static, Some(super::StaticRole::Primary)) => primaries += 1,
            _ => {}
        }
        if let Some(t) = &n.tls_name {
            if api.scheme != Scheme::Https {
                ctx.err(
                    at("tls_name"),
                    "only meaningful with api.scheme = \"https\"",
                );
            }
            let ok = !t.is_empty()
                && t.len() <= 253
                && t.parse::<IpAddr>().is_err()
                && t.split('.').all(|l| {
                    !l.is_empty()
                        && l.len() <= 63
                        && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
                });
            if !ok {
                ctx.err(at("tls_name"), format!("{t:?} is not a DNS name"));
            } else if let Some(prev) = tls_names.insert(t.to_ascii_lowercase(), ni) {
                ctx.err(at("tls_name"), format!("same tls_name as node[{prev}]"));
            }
        }
        nodes.push(Node {
            name: n.name,
            host: n.host,
            port: n.port,
            api_port: n.api_port.unwrap_or(api.port),
            role: n.role,
            tls_name: n.tls_name,
        });
    }
    if primaries > 1 {
        ctx.err(
            p!["cluster", ci, "checks"],
            format!("{primaries} nodes have role = \"primary\"; at most one may"),
        );
    }

    let mut lnames = HashMap::new();
    let mut listeners = Vec::new();
    for (li, l) in c.listener.into_iter().enumerate() {
        let at = |k: &str| p!["cluster", ci, "listener", li, k];
        if !valid_name(&l.name) {
            ctx.err(
                at("name"),
                format!("{:?}: use 1-64 characters from A-Z a-z 0-9 - _ .", l.name),
            );
        }
        if let Some(prev) = lnames.insert(l.name.clone(), li) {
            ctx.err(
                at("name"),
                format!(
                    "duplicate listener name {:?} (also listener[{prev}])",
                    l.name
                ),
            );
        }
        ctx.nonzero_port(at("port"), l.port);
        if dp.snat_ports.contains(l.port) {
            ctx.err(
                at("port"),
                format!(
                    "{} is inside datapath.snat_ports {}-{}; replies to SNATed flows would hit the listener",
                    l.port, dp.snat_ports.first, dp.snat_ports.last
                ),
            );
        }
        if l.vip.is_unspecified() || l.vip.is_multicast() || l.vip.is_loopback() {
            ctx.err(at("vip"), format!("{} cannot be a virtual IP", l.vip));
        }
        let fallback = match (l.kind, l.fallback) {
            (ListenerKind::Replica, f) => f.unwrap_or(Fallback::None),
            (_, Some(_)) => {
                ctx.err(at("fallback"), "fallback is only for kind = \"replica\"");
                Fallback::None
            }
            (_, None) => Fallback::None,
        };
        let lag = match (&l.lag, l.kind) {
            (None, _) => None,
            (Some(_), ListenerKind::Primary) => {
                ctx.err(
                    at("lag"),
                    "lag is only for kind = \"replica\" or \"read-only\"",
                );
                None
            }
            (Some(lag), _) => {
                let text = match lag {
                    raw::Lag::Int(i) => i.to_string(),
                    raw::Lag::Text(t) => t.clone(),
                };
                match patroni_parse_bytes(&text) {
                    Some(b) if b >= 0 => Some(Lag {
                        bytes: b as u64,
                        text,
                    }),
                    Some(_) => {
                        ctx.err(
                            at("lag"),
                            format!("{text:?} is negative; every replica would count as lagging"),
                        );
                        None
                    }
                    None => {
                        ctx.err(
                            at("lag"),
                            format!(
                                "{text:?} is not a size Patroni understands (bytes, or a number with \
                                 B, kB, MB, GB or TB, case-sensitive); Patroni would silently ignore it"
                            ),
                        );
                        None
                    }
                }
            }
        };
        let on_empty = match (l.on_empty, &l.empty_hold) {
            (raw::OnEmptyKind::Reject, Some(_)) => {
                ctx.err(
                    at("empty_hold"),
                    "only meaningful with on_empty = \"hold\"; on_empty = \"reject\" answers at once",
                );
                OnEmpty::Reject
            }
            (raw::OnEmptyKind::Reject, None) => OnEmpty::Reject,
            (raw::OnEmptyKind::Hold, None) => OnEmpty::default(),
            (raw::OnEmptyKind::Hold, Some(text)) => match parse_duration(text) {
                Ok(d) if d > MAX_EMPTY_HOLD => {
                    ctx.err(
                        at("empty_hold"),
                        format!(
                            "{text:?} is too long; at most {}s (clients have given up by then)",
                            MAX_EMPTY_HOLD.as_secs()
                        ),
                    );
                    OnEmpty::default()
                }
                Ok(d) if d < Duration::from_millis(1) => {
                    ctx.err(
                        at("empty_hold"),
                        format!(
                            "{text:?} is below 1ms; to answer at once write on_empty = \"reject\""
                        ),
                    );
                    OnEmpty::default()
                }
                Ok(d) => OnEmpty::Hold(d),
                Err(e) => {
                    ctx.err(at("empty_hold"), e);
                    OnEmpty::default()
                }
            },
        };
        let snat = l.snat.unwrap_or(l.vip);
        if let Some(s) = l.snat
            && (s.is_unspecified() || s.is_multicast())
        {
            ctx.err(at("snat"), format!("{s} cannot be a source address"));
        }
        for (ni, n) in nodes.iter().enumerate() {
            if n.host.is_ipv4() != l.vip.is_ipv4() || n.host.is_ipv4() != snat.is_ipv4() {
                ctx.err(
                    at("vip"),
                    format!(
                        "address family differs from node[{ni}] {} (no NAT between IPv4 and IPv6)",
                        n.host
                    ),
                );
                break;
            }
            if n.host == l.vip {
                ctx.err(at("vip"), format!("the VIP is node[{ni}]'s own address"));
            }
        }
        listeners.push(Listener {
            name: l.name,
            vip: l.vip,
            port: l.port,
            kind: l.kind,
            maxconn: l.maxconn,
            balance: l.balance,
            on_marked_down: l.on_marked_down,
            on_empty,
            fallback,
            lag,
            snat,
        });
    }
    Cluster {
        name: c.name,
        checks: c.checks,
        health,
        api,
        nodes,
        listeners,
    }
}

fn cross_cluster(ctx: &mut Ctx<'_>, clusters: &[Cluster]) {
    let mut names: HashMap<&str, usize> = HashMap::new();
    let mut binds: HashMap<(IpAddr, u16), (usize, usize)> = HashMap::new();
    for (ci, c) in clusters.iter().enumerate() {
        if let Some(prev) = names.insert(&c.name, ci) {
            ctx.err(
                p!["cluster", ci, "name"],
                format!("duplicate cluster name {:?} (also cluster[{prev}])", c.name),
            );
        }
        for (li, l) in c.listeners.iter().enumerate() {
            if let Some((pc, pl)) = binds.insert((l.vip, l.port), (ci, li)) {
                ctx.err(
                    p!["cluster", ci, "listener", li, "port"],
                    format!(
                        "{}:{} is already used by cluster[{pc}].listener[{pl}] ({}/{})",
                        l.vip, l.port, clusters[pc].name, clusters[pc].listeners[pl].name
                    ),
                );
            }
        }
    }
}

/// `[[vrrp]]`: the VRRP module's own checks (its messages start with the field's key), plus
/// what only the whole file can tell: unique names and VRIDs, and `patroni:<cluster>` tracks
/// that name a configured cluster.
fn vrrp(ctx: &mut Ctx<'_>, instances: &[super::VrrpInstance], clusters: &[Cluster]) {
    let mut names: HashMap<&str, usize> = HashMap::new();
    let mut vrids: HashMap<(&str, bool, u8), usize> = HashMap::new();
    for (i, inst) in instances.iter().enumerate() {
        if let Err(e) = inst.validate() {
            let (key, msg) = e.split_once(": ").unwrap_or(("name", e.as_str()));
            // `track.name` → the `track` array; other keys are top-level in the instance.
            let key = key.split('.').next().unwrap_or(key);
            ctx.err(p!["vrrp", i, key], msg.to_owned());
        }
        if let Some(prev) = names.insert(&inst.name, i) {
            ctx.err(
                p!["vrrp", i, "name"],
                format!(
                    "duplicate vrrp instance name {:?} (also vrrp[{prev}])",
                    inst.name
                ),
            );
        }
        if let Some(prev) =
            vrids.insert((&inst.interface, inst.is_ipv6(), inst.virtual_router_id), i)
        {
            ctx.err(
                p!["vrrp", i, "virtual_router_id"],
                format!(
                    "virtual_router_id {} is already used on {} by vrrp[{prev}]",
                    inst.virtual_router_id, inst.interface
                ),
            );
        }
        for (t, track) in inst.track.iter().enumerate() {
            if let Some(cluster) = track.name.strip_prefix("patroni:")
                && !clusters.iter().any(|c| c.name == cluster)
            {
                ctx.err(
                    p!["vrrp", i, "track", t, "name"],
                    format!("no [[cluster]] named {cluster:?}"),
                );
            }
        }
    }
}
