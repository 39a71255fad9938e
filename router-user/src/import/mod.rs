//! `pgrouter import`: HAProxy + Keepalived configurations → pgrouter config.
//!
//! - [`haproxy`]: haproxy.cfg as HAProxy reads it (sections, words, server options).
//! - [`keepalived`]: keepalived.conf as keepalived reads it (statements and blocks).
//! - [`translate`]: both models → a plan, with a [`Warning`] for everything that does not carry
//!   over exactly (and for problems in the input, like stale section names); `vrrp_plan` does
//!   the keepalived part.
//! - `render` (here): the plan → commented TOML that `config::parse` accepts.
//!
//! All of it is pure; only [`run`] touches files. Every warning goes to stderr *and* into the
//! output as a `# WARNING:` comment next to what it concerns. docs/import.md describes the
//! mapping.
pub mod haproxy;
pub mod keepalived;
pub mod translate;
mod vrrp_plan;

use std::fmt::{self, Write as _};
use std::path::PathBuf;

use anyhow::Context as _;

use translate::{ClusterPlan, Plan, Sink};

#[derive(clap::Args, Debug)]
pub struct ImportArgs {
    /// haproxy.cfg to translate.
    #[arg(long)]
    pub haproxy: PathBuf,
    /// keepalived.conf with the VRRP instance(s) to translate.
    #[arg(long)]
    pub keepalived: Option<PathBuf>,
    /// Write the config here instead of stdout.
    #[arg(short, long)]
    pub output: Option<PathBuf>,
}

/// One input file.
#[derive(Clone, Copy, Debug)]
pub struct Source<'a> {
    /// As shown in messages.
    pub path: &'a str,
    pub text: &'a str,
}

/// Where in the output a warning is written.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Place {
    Top,
    Datapath,
    Cluster(usize),
    Node(usize, usize),
    Listener(usize, usize),
    Vrrp(usize),
}

/// Something that does not carry over exactly, or a problem in the input.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Warning {
    pub file: String,
    /// 1-based; 0 when it concerns the whole output.
    pub line: usize,
    pub place: Place,
    pub message: String,
}

impl fmt::Display for Warning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.line == 0 {
            write!(f, "{}: {}", self.file, self.message)
        } else {
            write!(f, "{}:{}: {}", self.file, self.line, self.message)
        }
    }
}

/// The translation: TOML text and every warning (also inside the text).
#[derive(Clone, Debug)]
pub struct Imported {
    pub toml: String,
    pub warnings: Vec<Warning>,
}

/// Translates the sources. `Err` only when nothing usable comes out (no listener).
pub fn import(haproxy: &Source<'_>, keepalived: Option<&Source<'_>>) -> Result<Imported, String> {
    let mut sink = Sink {
        warnings: Vec::new(),
    };
    let plan = translate::plan(haproxy, keepalived, &mut sink)?;
    let mut warnings = sink.warnings;
    let mut toml = render(&plan, haproxy, keepalived, &warnings);
    // The output must be a config pgrouter accepts; if it is not, say exactly why.
    if let Err(e) = crate::config::parse(&toml, "<imported>") {
        for d in e.diagnostics {
            warnings.push(Warning {
                file: "<imported>".into(),
                line: 0,
                place: Place::Top,
                message: format!(
                    "the result does not pass `pgrouter check-config`: line {}: {}: {}",
                    d.line, d.field, d.message
                ),
            });
        }
        toml = render(&plan, haproxy, keepalived, &warnings);
    }
    Ok(Imported { toml, warnings })
}

/// `pgrouter import`: reads the files, prints warnings to stderr and the config to stdout (or
/// `--output`). Fails only when a file cannot be read or nothing can be translated.
pub fn run(args: ImportArgs) -> anyhow::Result<()> {
    let htext = std::fs::read_to_string(&args.haproxy)
        .with_context(|| format!("reading {}", args.haproxy.display()))?;
    let hpath = args.haproxy.display().to_string();
    let ktext = match &args.keepalived {
        Some(p) => {
            Some(std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?)
        }
        None => None,
    };
    let kpath = args
        .keepalived
        .as_ref()
        .map(|p| p.display().to_string())
        .unwrap_or_default();
    let hsrc = Source {
        path: &hpath,
        text: &htext,
    };
    let ksrc = ktext.as_deref().map(|text| Source { path: &kpath, text });
    let out = import(&hsrc, ksrc.as_ref()).map_err(|e| anyhow::anyhow!("{e}"))?;
    for w in &out.warnings {
        eprintln!("warning: {w}");
    }
    match &args.output {
        Some(p) => {
            std::fs::write(p, &out.toml).with_context(|| format!("writing {}", p.display()))?;
            eprintln!(
                "wrote {} ({} warning{}); check it with `pgrouter check-config {}`",
                p.display(),
                out.warnings.len(),
                if out.warnings.len() == 1 { "" } else { "s" },
                p.display()
            );
        }
        None => print!("{}", out.toml),
    }
    Ok(())
}

/// TOML string literal.
fn q(s: &str) -> String {
    toml::Value::String(s.to_owned()).to_string()
}

fn warnings_at(out: &mut String, warnings: &[Warning], place: &Place) {
    for w in warnings.iter().filter(|w| &w.place == place) {
        let _ = writeln!(out, "# WARNING: {w}");
    }
}

fn render(
    plan: &Plan,
    hsrc: &Source<'_>,
    ksrc: Option<&Source<'_>>,
    warnings: &[Warning],
) -> String {
    let mut o = String::new();
    let _ = writeln!(
        o,
        "# pgrouter configuration translated by `pgrouter import` from {}{}.",
        hsrc.path,
        ksrc.map(|k| format!(" and {}", k.path)).unwrap_or_default()
    );
    let _ = writeln!(
        o,
        "# Keys: docs/config.md; the mapping: docs/import.md. Check with `pgrouter check-config FILE`."
    );
    if warnings.is_empty() {
        let _ = writeln!(o, "# No warnings: everything carried over.");
    } else {
        let _ = writeln!(
            o,
            "# {} warning{}: search for \"WARNING:\" and decide each one before use.",
            warnings.len(),
            if warnings.len() == 1 { "" } else { "s" }
        );
    }
    if !plan.dropped.is_empty() {
        let _ = writeln!(
            o,
            "# Not translated, no meaning for pgrouter's XDP NAT (it keeps no proxy-side retries \
             or logs; sessions live in the conntrack map):"
        );
        for d in &plan.dropped {
            let _ = writeln!(o, "#   {d}");
        }
    }
    warnings_at(&mut o, warnings, &Place::Top);

    let _ = writeln!(o, "\n[datapath]");
    warnings_at(&mut o, warnings, &Place::Datapath);
    if plan.interfaces.is_empty() {
        let _ = writeln!(o, "interfaces = []");
    } else {
        let _ = writeln!(
            o,
            "# keepalived's `interface`: where traffic for the VIPs arrives."
        );
        let list: Vec<String> = plan.interfaces.iter().map(|i| q(i)).collect();
        let _ = writeln!(o, "interfaces = [{}]", list.join(", "));
    }
    let _ = writeln!(
        o,
        "mode = \"auto\"                      # auto | native | generic"
    );
    let _ = writeln!(
        o,
        "pin_path = \"/sys/fs/bpf/pgrouter\"  # maps survive controller restarts, so do sessions"
    );
    let r = crate::config::DEFAULT_SNAT_PORTS;
    let _ = writeln!(
        o,
        "snat_ports = \"{}-{}\"         # source ports towards the nodes",
        r.first, r.last
    );
    let t = &plan.timeouts;
    if t.handshake.is_some() || t.established.is_some() {
        let _ = writeln!(
            o,
            "\n# HAProxy's timeouts, one set for every listener (docs/maps.md, \"Life of a flow\")."
        );
        let _ = writeln!(o, "[datapath.timeouts]");
        for (key, from) in [("handshake", &t.handshake), ("established", &t.established)] {
            if let Some(f) = from {
                let _ = writeln!(
                    o,
                    "{key} = {}  # {} ({}:{})",
                    q(&crate::config::units::duration_text(f.value)),
                    f.directives,
                    hsrc.path,
                    f.line
                );
            }
        }
    }

    let _ = writeln!(o, "\n[control]");
    let _ = writeln!(o, "socket = \"/run/pgrouter/pgrouter.sock\"");
    let _ = writeln!(
        o,
        "metrics = \"127.0.0.1:9188\"         # Prometheus (HAProxy's stats page); \"\" disables"
    );

    for (ci, c) in plan.clusters.iter().enumerate() {
        render_cluster(&mut o, ci, c, warnings);
    }
    for (vi, v) in plan.vrrp.iter().enumerate() {
        let _ = writeln!(o);
        for s in &v.source {
            let _ = writeln!(o, "# {s}");
        }
        warnings_at(&mut o, warnings, &Place::Vrrp(vi));
        let _ = writeln!(o, "[[vrrp]]");
        let _ = writeln!(o, "name = {}", q(&v.name));
        let _ = writeln!(o, "interface = {}", q(&v.interface));
        if let Some(s) = &v.state {
            let _ = writeln!(o, "state = {}", q(s));
        }
        let _ = writeln!(o, "virtual_router_id = {}", v.virtual_router_id);
        let _ = writeln!(o, "priority = {}", v.priority);
        let _ = writeln!(o, "advert_int = {}", q(&v.advert_int));
        let _ = writeln!(
            o,
            "version = {}                        # {}",
            v.version,
            if v.version == 2 {
                "keepalived's default for IPv4 (vrrp_version); peers must agree"
            } else {
                "VRRPv3 (RFC 5798)"
            }
        );
        if let Some(p) = &v.auth_pass {
            let _ = writeln!(o, "auth_pass = {}", q(p));
        }
        if v.nopreempt {
            let _ = writeln!(o, "nopreempt = true");
        }
        if let Some(d) = &v.preempt_delay {
            let _ = writeln!(o, "preempt_delay = {}", q(d));
        }
        let vips: Vec<String> = v.vips.iter().map(|a| q(a)).collect();
        let _ = writeln!(o, "virtual_ipaddress = [{}]", vips.join(", "));
        if let Some(s) = &v.unicast_src_ip {
            let _ = writeln!(o, "unicast_src_ip = {}", q(s));
        }
        if !v.unicast_peer.is_empty() {
            let peers: Vec<String> = v.unicast_peer.iter().map(|a| q(a)).collect();
            let _ = writeln!(o, "unicast_peer = [{}]", peers.join(", "));
        }
        if let Some(d) = &v.garp_master_delay {
            let _ = writeln!(o, "garp_master_delay = {}", q(d));
        }
        if let Some(n) = v.garp_master_repeat {
            let _ = writeln!(o, "garp_master_repeat = {n}");
        }
        if let Some(d) = &v.garp_master_refresh {
            let _ = writeln!(o, "garp_master_refresh = {}", q(d));
        }
        for (k, cmd) in &v.notify {
            let _ = writeln!(o, "{k} = {}", q(cmd));
        }
        for (name, weight) in &v.tracks {
            let _ = writeln!(o, "\n[[vrrp.track]]");
            let _ = writeln!(o, "name = {}", q(name));
            let _ = writeln!(o, "weight = {weight}");
        }
    }
    o
}

fn render_cluster(o: &mut String, ci: usize, c: &ClusterPlan, warnings: &[Warning]) {
    let _ = writeln!(
        o,
        "\n# One Patroni cluster; the name is free (status and metrics use it)."
    );
    warnings_at(o, warnings, &Place::Cluster(ci));
    let _ = writeln!(o, "[[cluster]]");
    let _ = writeln!(o, "name = {}", q(&c.name));
    let _ = writeln!(o, "checks = \"patroni\"");
    let h = &c.health;
    let d = translate::duration_text;
    let _ = writeln!(
        o,
        "\n# HAProxy's check timing, carried over (pgrouter's own defaults are faster: 1s/200ms, fall 2, rise 1)."
    );
    let _ = writeln!(o, "[cluster.health]");
    let _ = writeln!(o, "interval = {}   # inter", q(&d(h.interval)));
    let _ = writeln!(
        o,
        "fastinter = {}  # fastinter (HAProxy: inter unless set)",
        q(&d(h.fastinter))
    );
    let _ = writeln!(
        o,
        "downinter = {}  # downinter (HAProxy: inter unless set)",
        q(&d(h.downinter))
    );
    let _ = writeln!(
        o,
        "timeout = {}    # {}",
        q(&d(h.timeout)),
        if h.timeout_from_check {
            "timeout check"
        } else {
            "no `timeout check`: HAProxy then bounds a check by inter"
        }
    );
    let _ = writeln!(o, "fall = {}", h.fall);
    let _ = writeln!(o, "rise = {}", h.rise);

    let _ = writeln!(
        o,
        "\n# HAProxy `check port N`: checks go to Patroni's REST API, traffic to PostgreSQL."
    );
    let _ = writeln!(o, "[cluster.api]");
    let _ = writeln!(
        o,
        "scheme = {}",
        q(if c.api.https { "https" } else { "http" })
    );
    let _ = writeln!(o, "port = {}", c.api.port);
    if let Some(ca) = &c.api.ca_file {
        let _ = writeln!(o, "ca_file = {}", q(ca));
    }
    if let Some(crt) = &c.api.cert_file {
        let _ = writeln!(o, "cert_file = {}", q(crt));
        let _ = writeln!(o, "key_file = {}", q(crt));
    }

    for (ni, n) in c.nodes.iter().enumerate() {
        let _ = writeln!(o, "\n# {}", n.source);
        warnings_at(o, warnings, &Place::Node(ci, ni));
        let _ = writeln!(o, "[[cluster.node]]");
        let _ = writeln!(o, "name = {}", q(&n.name));
        let _ = writeln!(o, "host = {}", q(&n.host));
        let _ = writeln!(o, "port = {}", n.port);
        if let Some(p) = n.api_port {
            let _ = writeln!(o, "api_port = {p}");
        }
    }

    for (li, l) in c.listeners.iter().enumerate() {
        let _ = writeln!(o);
        for s in &l.source {
            let _ = writeln!(o, "# {s}");
        }
        warnings_at(o, warnings, &Place::Listener(ci, li));
        let _ = writeln!(o, "[[cluster.listener]]");
        let _ = writeln!(o, "name = {}", q(&l.name));
        let _ = writeln!(o, "vip = {}", q(&l.vip));
        let _ = writeln!(o, "port = {}", l.port);
        let _ = writeln!(o, "kind = {}", q(l.kind));
        match l.fallback {
            Some(true) => {
                let _ = writeln!(
                    o,
                    "fallback = \"primary\"             # reads go to the primary while no replica is up"
                );
            }
            Some(false) => {
                let _ = writeln!(
                    o,
                    "# fallback = \"primary\"           # not in the source: reads fail while no replica is up"
                );
            }
            None => {}
        }
        if let Some(lag) = &l.lag {
            let _ = writeln!(o, "lag = {}                      # Patroni ?lag=", q(lag));
        }
        let _ = writeln!(
            o,
            "maxconn = {}{}",
            l.maxconn,
            if l.maxconn == 0 {
                "                       # per node; 0 = unlimited"
            } else {
                "                     # per node (HAProxy server maxconn)"
            }
        );
        let _ = writeln!(o, "balance = {}", q(l.balance));
        let _ = writeln!(
            o,
            "on_marked_down = {}{}",
            q(l.on_marked_down),
            if l.on_marked_down == "keep" {
                "   # HAProxy's default; the seed's setups use \"shutdown-sessions\""
            } else {
                ""
            }
        );
    }
}
