//! The TOML configs tests hand to the daemon (`pgrouter run -c`, `pgrouter vrrp --config`) and
//! to `config::parse`: built, not hand-written, so a test states only what differs from the
//! others, and every duration is written as the daemon reads it, a string with a unit ("1s",
//! "200ms"); bare numbers are refused there.
//!
//! Std only, on purpose: router-user's own tests include this file by path (they cannot depend
//! on this crate, which depends on router-user).
//!
//! ```text
//! Config::new()
//!     .datapath(Datapath::new("eth0", "native", dir.join("bpf")))
//!     .control(Control::new(dir.join("pgrouter.sock")))
//!     .cluster(Cluster::new("pg").checks("static")
//!         .node(Node::new("pg1", "198.18.0.11").role("primary"))
//!         .listener(Listener::primary("PG1", "198.18.0.100", 5000)))
//! ```
use std::{fmt, path::Path, time::Duration};

/// One TOML value.
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    Str(String),
    Int(i64),
    Bool(bool),
    /// Written as a string with a unit: `"1s"`, `"200ms"`, `"1s500ms"`.
    Duration(Duration),
    Array(Vec<Value>),
    /// `{ key = value, … }`, e.g. one VRRP track.
    Inline(Table),
}

impl From<&str> for Value {
    fn from(s: &str) -> Self {
        Value::Str(s.to_owned())
    }
}
impl From<String> for Value {
    fn from(s: String) -> Self {
        Value::Str(s)
    }
}
impl From<&Path> for Value {
    fn from(p: &Path) -> Self {
        Value::Str(p.display().to_string())
    }
}
impl From<std::net::Ipv4Addr> for Value {
    fn from(a: std::net::Ipv4Addr) -> Self {
        Value::Str(a.to_string())
    }
}
impl From<bool> for Value {
    fn from(b: bool) -> Self {
        Value::Bool(b)
    }
}
impl From<Duration> for Value {
    fn from(d: Duration) -> Self {
        Value::Duration(d)
    }
}
macro_rules! int_value {
    ($($t:ty),*) => {$(
        impl From<$t> for Value {
            fn from(n: $t) -> Self {
                Value::Int(i64::from(n))
            }
        }
    )*};
}
int_value!(u8, u16, u32, i8, i32, i64);
impl<V: Into<Value>> From<Vec<V>> for Value {
    fn from(v: Vec<V>) -> Self {
        Value::Array(v.into_iter().map(Into::into).collect())
    }
}
impl<V: Into<Value>, const N: usize> From<[V; N]> for Value {
    fn from(v: [V; N]) -> Self {
        Value::Array(v.into_iter().map(Into::into).collect())
    }
}

/// A duration in the daemon's syntax, largest unit first: `"2s"`, `"200ms"`, `"1s500ms"`.
pub fn duration_text(d: Duration) -> String {
    let us = d.as_micros();
    if us == 0 {
        return "0s".into();
    }
    let mut out = String::new();
    for (n, unit) in [
        (us / 1_000_000, "s"),
        (us / 1000 % 1000, "ms"),
        (us % 1000, "us"),
    ] {
        if n > 0 {
            out.push_str(&format!("{n}{unit}"));
        }
    }
    out
}

/// A TOML string literal.
fn quoted(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            c if c.is_control() => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Str(s) => f.write_str(&quoted(s)),
            Value::Int(n) => write!(f, "{n}"),
            Value::Bool(b) => write!(f, "{b}"),
            Value::Duration(d) => f.write_str(&quoted(&duration_text(*d))),
            Value::Array(items) => {
                let items: Vec<String> = items.iter().map(ToString::to_string).collect();
                write!(f, "[{}]", items.join(", "))
            }
            Value::Inline(t) => {
                let items: Vec<String> = t.0.iter().map(|(k, v)| format!("{k} = {v}")).collect();
                write!(f, "{{ {} }}", items.join(", "))
            }
        }
    }
}

/// Keys in the order they were first set.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Table(Vec<(String, Value)>);

impl Table {
    /// Sets `key`, replacing an earlier value in place.
    pub fn set(&mut self, key: impl Into<String>, value: impl Into<Value>) {
        let (key, value) = (key.into(), value.into());
        match self.0.iter_mut().find(|(k, _)| *k == key) {
            Some(slot) => slot.1 = value,
            None => self.0.push((key, value)),
        }
    }

    /// `[header]` (or `[[header]]`) and one `key = value` line per key; nothing for an empty
    /// plain table.
    fn write(&self, out: &mut String, header: &str) {
        if self.0.is_empty() && !header.starts_with("[[") {
            return;
        }
        out.push_str(header);
        out.push('\n');
        for (k, v) in &self.0 {
            out.push_str(&format!("{k} = {v}\n"));
        }
    }
}

/// A section of the config: any key can be set (`set`), the common ones have their own
/// method.
pub trait Section: Sized {
    fn table(&mut self) -> &mut Table;

    /// Sets a key not covered by a named method (`maxconn`, `nopreempt`, …).
    fn set(mut self, key: &str, value: impl Into<Value>) -> Self {
        self.table().set(key, value);
        self
    }
}

macro_rules! section {
    ($t:ident) => {
        impl Section for $t {
            fn table(&mut self) -> &mut Table {
                &mut self.table
            }
        }
    };
}

/// A whole config file.
#[derive(Clone, Debug, Default)]
pub struct Config {
    datapath: Option<Datapath>,
    control: Option<Control>,
    sync: Option<Sync>,
    clusters: Vec<Cluster>,
    vrrp: Vec<Vrrp>,
}

impl Config {
    pub fn new() -> Self {
        Self::default()
    }
    pub fn datapath(mut self, d: Datapath) -> Self {
        self.datapath = Some(d);
        self
    }
    pub fn control(mut self, c: Control) -> Self {
        self.control = Some(c);
        self
    }
    /// `[sync]`: flow-state sync with the other edge hosts.
    pub fn sync(mut self, s: Sync) -> Self {
        self.sync = Some(s);
        self
    }
    pub fn cluster(mut self, c: Cluster) -> Self {
        self.clusters.push(c);
        self
    }
    pub fn vrrp(mut self, v: Vrrp) -> Self {
        self.vrrp.push(v);
        self
    }

    /// The TOML text.
    pub fn to_toml(&self) -> String {
        let mut out = String::new();
        if let Some(d) = &self.datapath {
            d.table.write(&mut out, "[datapath]");
            d.timeouts.write(&mut out, "[datapath.timeouts]");
            out.push('\n');
        }
        if let Some(c) = &self.control {
            c.table.write(&mut out, "[control]");
            out.push('\n');
        }
        if let Some(s) = &self.sync {
            s.table.write(&mut out, "[sync]");
            out.push('\n');
        }
        for c in &self.clusters {
            c.write(&mut out);
        }
        for v in &self.vrrp {
            v.table.write(&mut out, "[[vrrp]]");
            out.push('\n');
        }
        out
    }

    /// Writes the TOML text to `path`.
    pub fn write(&self, path: &Path) -> std::io::Result<()> {
        std::fs::write(path, self.to_toml())
    }
}

/// `[datapath]`, with `[datapath.timeouts]`.
#[derive(Clone, Debug, Default)]
pub struct Datapath {
    table: Table,
    timeouts: Table,
}
section!(Datapath);

impl Datapath {
    /// XDP on `iface` in `mode` (`native`, `generic`), maps pinned under `pin_path`.
    pub fn new(iface: &str, mode: &str, pin_path: impl AsRef<Path>) -> Self {
        let mut table = Table::default();
        table.set("interfaces", [iface]);
        table.set("mode", mode);
        table.set("pin_path", pin_path.as_ref());
        Self {
            table,
            timeouts: Table::default(),
        }
    }
    /// `snat_ports = "FIRST-LAST"`.
    pub fn snat_ports(self, range: &str) -> Self {
        self.set("snat_ports", range)
    }
    /// One flow state's idle timeout (`handshake`, `established`, …).
    pub fn timeout(mut self, state: &str, d: Duration) -> Self {
        self.timeouts.set(state, d);
        self
    }
}

/// `[control]`.
#[derive(Clone, Debug, Default)]
pub struct Control {
    table: Table,
}
section!(Control);

impl Control {
    /// The status socket at `socket`, no metrics endpoint.
    pub fn new(socket: impl AsRef<Path>) -> Self {
        let mut table = Table::default();
        table.set("socket", socket.as_ref());
        table.set("metrics", "");
        Self { table }
    }
    /// Serves `/metrics` on `addr` (`"127.0.0.1:9188"`).
    pub fn metrics(self, addr: &str) -> Self {
        self.set("metrics", addr)
    }
}

/// `[sync]`: this edge host's flow-state sync with its peers (the other edge hosts).
#[derive(Clone, Debug, Default)]
pub struct Sync {
    table: Table,
}
section!(Sync);

impl Sync {
    /// Listens on `listen` (`IP:PORT`, this host's own address), syncs with `peers`
    /// (`IP:PORT` each), authenticated with the keys in `key_file` (one hex key a line: the
    /// first signs what is sent, every line is accepted).
    pub fn new<'a>(
        listen: &str,
        peers: impl IntoIterator<Item = &'a str>,
        key_file: impl AsRef<Path>,
    ) -> Self {
        let mut table = Table::default();
        table.set("listen", listen);
        let peers: Vec<Value> = peers.into_iter().map(Into::into).collect();
        table.set("peers", peers);
        table.set("key_file", key_file.as_ref());
        Self { table }
    }
    /// `grace`.
    pub fn grace(self, d: Duration) -> Self {
        self.set("grace", d)
    }
    /// `refresh`.
    pub fn refresh(self, d: Duration) -> Self {
        self.set("refresh", d)
    }
}

/// One `[[cluster]]` with its health settings, nodes and listeners.
#[derive(Clone, Debug, Default)]
pub struct Cluster {
    table: Table,
    health: Table,
    nodes: Vec<Node>,
    listeners: Vec<Listener>,
}
section!(Cluster);

impl Cluster {
    pub fn new(name: &str) -> Self {
        let mut table = Table::default();
        table.set("name", name);
        Self {
            table,
            ..Self::default()
        }
    }
    /// `checks = "patroni"` or `"static"`.
    pub fn checks(self, checks: &str) -> Self {
        self.set("checks", checks)
    }
    /// `[cluster.health]`.
    pub fn health(mut self, h: Health) -> Self {
        self.health = h.table;
        self
    }
    pub fn node(mut self, n: Node) -> Self {
        self.nodes.push(n);
        self
    }
    pub fn listener(mut self, l: Listener) -> Self {
        self.listeners.push(l);
        self
    }

    fn write(&self, out: &mut String) {
        self.table.write(out, "[[cluster]]");
        self.health.write(out, "[cluster.health]");
        for n in &self.nodes {
            n.table.write(out, "[[cluster.node]]");
        }
        for l in &self.listeners {
            l.table.write(out, "[[cluster.listener]]");
        }
        out.push('\n');
    }
}

/// `[cluster.health]`: only what is set is written, the rest keeps the daemon's defaults.
#[derive(Clone, Debug, Default)]
pub struct Health {
    table: Table,
}
section!(Health);

impl Health {
    pub fn new() -> Self {
        Self::default()
    }
    pub fn interval(self, d: Duration) -> Self {
        self.set("interval", d)
    }
    pub fn fastinter(self, d: Duration) -> Self {
        self.set("fastinter", d)
    }
    pub fn downinter(self, d: Duration) -> Self {
        self.set("downinter", d)
    }
    pub fn timeout(self, d: Duration) -> Self {
        self.set("timeout", d)
    }
    pub fn fall(self, n: u32) -> Self {
        self.set("fall", n)
    }
    pub fn rise(self, n: u32) -> Self {
        self.set("rise", n)
    }
}

/// One `[[cluster.node]]`.
#[derive(Clone, Debug, Default)]
pub struct Node {
    table: Table,
}
section!(Node);

impl Node {
    pub fn new(name: &str, host: impl Into<Value>) -> Self {
        let mut table = Table::default();
        table.set("name", name);
        table.set("host", host);
        Self { table }
    }
    /// The role of a `checks = "static"` cluster's node.
    pub fn role(self, role: &str) -> Self {
        self.set("role", role)
    }
}

/// One `[[cluster.listener]]`.
#[derive(Clone, Debug, Default)]
pub struct Listener {
    table: Table,
}
section!(Listener);

impl Listener {
    /// `kind` is `primary`, `replica` or `read-only`.
    pub fn new(name: &str, vip: impl Into<Value>, port: u16, kind: &str) -> Self {
        let mut table = Table::default();
        table.set("name", name);
        table.set("vip", vip);
        table.set("port", port);
        table.set("kind", kind);
        Self { table }
    }
    pub fn primary(name: &str, vip: impl Into<Value>, port: u16) -> Self {
        Self::new(name, vip, port, "primary")
    }
    /// Replicas, falling back to the primary when none is up.
    pub fn replica_or_primary(name: &str, vip: impl Into<Value>, port: u16) -> Self {
        Self::new(name, vip, port, "replica").set("fallback", "primary")
    }
}

/// One `[[vrrp]]` instance.
#[derive(Clone, Debug, Default)]
pub struct Vrrp {
    table: Table,
}
section!(Vrrp);

impl Vrrp {
    pub fn new(name: &str, iface: &str, vrid: u8, priority: u8) -> Self {
        let mut table = Table::default();
        table.set("name", name);
        table.set("interface", iface);
        table.set("virtual_router_id", vrid);
        table.set("priority", priority);
        Self { table }
    }
    pub fn advert_int(self, d: Duration) -> Self {
        self.set("advert_int", d)
    }
    /// `virtual_ipaddress`, each `ADDR/PREFIX`.
    pub fn vips<V: Into<Value>>(self, vips: impl IntoIterator<Item = V>) -> Self {
        let v: Vec<Value> = vips.into_iter().map(Into::into).collect();
        self.set("virtual_ipaddress", v)
    }
    /// `track = [{ name = … }, { name = …, weight = … }]`; weight 0 is written as none.
    pub fn tracks<'a>(self, tracks: impl IntoIterator<Item = (&'a str, i32)>) -> Self {
        let v: Vec<Value> = tracks
            .into_iter()
            .map(|(name, weight)| {
                let mut t = Table::default();
                t.set("name", name);
                if weight != 0 {
                    t.set("weight", weight);
                }
                Value::Inline(t)
            })
            .collect();
        self.set("track", v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Durations are strings with the largest units first, never bare numbers.
    #[test]
    fn durations_are_strings_with_units() {
        for (d, text) in [
            (Duration::from_secs(1), "\"1s\""),
            (Duration::from_millis(200), "\"200ms\""),
            (Duration::from_millis(1500), "\"1s500ms\""),
            (Duration::from_micros(50), "\"50us\""),
            (Duration::ZERO, "\"0s\""),
        ] {
            assert_eq!(Value::from(d).to_string(), text);
        }
    }

    /// Sections come out in the daemon's shape, sub-tables after their keys.
    #[test]
    fn a_config_renders_as_toml() {
        let text = Config::new()
            .datapath(
                Datapath::new("eth0", "native", "/x/bpf")
                    .timeout("handshake", Duration::from_secs(2)),
            )
            .control(Control::new("/x/s.sock"))
            .cluster(
                Cluster::new("pg")
                    .checks("patroni")
                    .health(Health::new().interval(Duration::from_secs(1)).fall(2))
                    .node(Node::new("pg1", "198.18.0.11"))
                    .listener(Listener::primary("PG1", "198.18.0.100", 5000).set("maxconn", 4u32)),
            )
            .vrrp(
                Vrrp::new("VI_1", "eth0", 61, 150)
                    .advert_int(Duration::from_millis(100))
                    .vips(["198.18.0.100/24"])
                    .tracks([("xdp-attached", 0), ("patroni:pg", -60)]),
            )
            .to_toml();
        assert_eq!(
            text,
            "[datapath]\ninterfaces = [\"eth0\"]\nmode = \"native\"\npin_path = \"/x/bpf\"\n\
             [datapath.timeouts]\nhandshake = \"2s\"\n\n\
             [control]\nsocket = \"/x/s.sock\"\nmetrics = \"\"\n\n\
             [[cluster]]\nname = \"pg\"\nchecks = \"patroni\"\n\
             [cluster.health]\ninterval = \"1s\"\nfall = 2\n\
             [[cluster.node]]\nname = \"pg1\"\nhost = \"198.18.0.11\"\n\
             [[cluster.listener]]\nname = \"PG1\"\nvip = \"198.18.0.100\"\nport = 5000\n\
             kind = \"primary\"\nmaxconn = 4\n\n\
             [[vrrp]]\nname = \"VI_1\"\ninterface = \"eth0\"\nvirtual_router_id = 61\n\
             priority = 150\nadvert_int = \"100ms\"\nvirtual_ipaddress = [\"198.18.0.100/24\"]\n\
             track = [{ name = \"xdp-attached\" }, { name = \"patroni:pg\", weight = -60 }]\n\n"
        );
    }

    /// `[sync]` comes after `[control]`, before the clusters.
    #[test]
    fn a_sync_section_renders_as_toml() {
        let text = Config::new()
            .control(Control::new("/x/s.sock"))
            .sync(
                Sync::new("198.18.0.21:7800", ["198.18.0.22:7800"], "/x/sync.key")
                    .grace(Duration::from_secs(2))
                    .refresh(Duration::from_secs(5)),
            )
            .cluster(Cluster::new("pg").checks("static"))
            .to_toml();
        assert_eq!(
            text,
            "[control]\nsocket = \"/x/s.sock\"\nmetrics = \"\"\n\n\
             [sync]\nlisten = \"198.18.0.21:7800\"\npeers = [\"198.18.0.22:7800\"]\n\
             key_file = \"/x/sync.key\"\ngrace = \"2s\"\nrefresh = \"5s\"\n\n\
             [[cluster]]\nname = \"pg\"\nchecks = \"static\"\n\n"
        );
    }

    #[test]
    fn strings_are_escaped() {
        assert_eq!(Value::from("a\"b\\c").to_string(), r#""a\"b\\c""#);
    }
}
