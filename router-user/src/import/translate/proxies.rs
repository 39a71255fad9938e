//! HAProxy sections → [`Proxy`]: the directives pgrouter reads from a frontend, backend or
//! listen, with its `defaults` applied; everything else is kept to be warned about.
use std::collections::HashMap;
use std::time::Duration;

use super::super::haproxy::{self, Directive, SectionKind, ServerOpts};
use super::timeouts;
use super::{Place, Sink, Source};

/// A frontend/backend/listen with the directives pgrouter reads, defaults applied.
#[derive(Clone, Debug)]
pub(super) struct Proxy {
    pub(super) kind: SectionKind,
    pub(super) name: String,
    pub(super) line: usize,
    pub(super) mode_http: bool,
    pub(super) binds: Vec<(usize, String)>,
    pub(super) check: Check,
    pub(super) expect: Option<(usize, String)>,
    pub(super) balance: Option<(usize, String)>,
    pub(super) servers: Vec<Server>,
    pub(super) default_backend: Option<(usize, String)>,
    pub(super) use_backends: Vec<UseBackend>,
    pub(super) acls: HashMap<String, Vec<String>>,
    pub(super) timeout_check: Option<Duration>,
    /// `timeout connect|client|server|queue|tunnel|client-fin|server-fin`, the last of each
    /// (defaults first, then the section's own).
    pub(super) timeouts: Vec<timeouts::Timeout>,
    pub(super) maxconn: Option<(usize, String)>,
    pub(super) unknown: Vec<Directive>,
    pub(super) dropped: Vec<String>,
}

#[derive(Clone, Debug, Default)]
pub(super) struct Check {
    pub(super) line: usize,
    /// `option httpchk` seen (else TCP-only or no check).
    pub(super) http: bool,
    pub(super) method: Option<String>,
    pub(super) uri: Option<String>,
    /// One lone argument that is a method name (`option httpchk GET`).
    pub(super) lone_method: bool,
    pub(super) tcp_only: bool,
}

#[derive(Clone, Debug)]
pub(super) struct Server {
    pub(super) name: String,
    pub(super) line: usize,
    pub(super) addr: String,
    pub(super) opts: ServerOpts,
}

#[derive(Clone, Debug)]
pub(super) struct UseBackend {
    pub(super) line: usize,
    pub(super) backend: String,
    pub(super) cond: Vec<String>,
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

/// Proxies with defaults applied (the last unnamed `defaults`, or `from NAME`).
pub(super) fn build_proxies(
    hfile: &haproxy::File,
    hsrc: &Source<'_>,
    sink: &mut Sink,
) -> Vec<Proxy> {
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

impl Server {
    pub(super) fn words_for_comment(&self) -> String {
        format!("{} {}", self.name, self.addr)
    }
}
