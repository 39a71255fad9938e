//! Configuration (TOML): every schema, its defaults and its validation, with file:line:field
//! errors.
//!
//! `raw` mirrors the file (serde both ways, `deny_unknown_fields`); `validate` turns it into the
//! typed [`Config`] below, collecting every semantic error with the position of the offending
//! field (looked up in a spanned parse, see `span`). `vrrp` holds the `[[vrrp]]` schema and its
//! checks; `units` the value syntaxes (one duration grammar for every duration key); `summary`
//! what `check-config` prints. The meaning of every key, its default and its
//! HAProxy/Keepalived equivalent are in `docs/config.md`.
//!
//! `config` depends on nothing of the health checks, the VRRP runtime or the controller: they
//! consume its types.
pub mod raw;
mod span;
mod summary;
pub mod sync;
pub mod units;
mod validate;
pub mod vrrp;

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::model::Balance;
pub use summary::Summary;
/// What the data path's maps hold, checked by validation (`router_ebpf::MAX_SET`,
/// `MAX_SERVICES`, `MAX_BACKENDS`).
pub use validate::{MAX_BACKEND_ENTRIES, MAX_LISTENERS, MAX_NODES};
/// Limits `pgrouter import` clamps to, so that what it writes passes validation.
pub use validate::{MAX_RISE_FALL, MIN_CHECK_PERIOD};
pub use vrrp::{Cidr, StateHint, Track, VrrpInstance};

/// `[datapath] pin_path` when unset.
pub const DEFAULT_PIN_PATH: &str = "/sys/fs/bpf/pgrouter";
/// `[control] socket` when unset, and where the CLI looks for it.
pub const DEFAULT_SOCKET: &str = "/run/pgrouter/pgrouter.sock";
/// `[control] metrics` when unset.
pub const DEFAULT_METRICS: &str = "127.0.0.1:9188";
/// `[cluster.api] port` when unset: Patroni's REST API.
pub const DEFAULT_API_PORT: u16 = 8008;
/// `[[cluster.node]] port` when unset: PostgreSQL's.
pub const DEFAULT_PG_PORT: u16 = 5432;

/// The whole validated configuration.
#[derive(Clone, Debug, PartialEq)]
pub struct Config {
    /// Path the config was read from (for messages).
    pub path: PathBuf,
    pub datapath: Datapath,
    pub control: Control,
    pub clusters: Vec<Cluster>,
    pub vrrp: Vec<VrrpInstance>,
    /// `[sync]`: flow-state sync with the other edge hosts; `None` without the section.
    pub sync: Option<sync::Sync>,
}

/// `[datapath]`: where and how the XDP program runs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Datapath {
    /// XDP attach points.
    pub interfaces: Vec<String>,
    pub mode: XdpMode,
    /// bpffs directory where maps are pinned (they survive controller restarts).
    pub pin_path: PathBuf,
    pub conntrack_entries: u32,
    /// Inclusive source-port range for the SNAT leg to the backends.
    pub snat_ports: PortRange,
    /// Size of `PGR_HANDSHAKE` (two entries per half-open flow): bounds the SNAT ports a SYN
    /// flood can hold.
    pub handshake_entries: u32,
    pub timeouts: FlowTimeouts,
}

/// `[datapath.timeouts]`: how long a flow lives in each state without traffic (see
/// `docs/maps.md`, *Life of a flow*).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct FlowTimeouts {
    /// From the SYN until the client's ACK completes the handshake (HAProxy `timeout connect`,
    /// and the longest a SYN waits for a maxconn slot, like `timeout queue`).
    pub handshake: Duration,
    /// Idle time of an established flow; RFC 5382 REQ-5 asks for at least 2 h 4 min.
    pub established: Duration,
    /// Idle time once either side sent a FIN.
    pub closing: Duration,
    /// How long a closed flow keeps translating late retransmissions.
    pub closed: Duration,
}

impl Default for FlowTimeouts {
    fn default() -> Self {
        Self {
            handshake: Duration::from_nanos(router_ebpf::DEFAULT_TIMEOUT_HANDSHAKE_NS),
            established: Duration::from_nanos(router_ebpf::DEFAULT_TIMEOUT_ESTABLISHED_NS),
            closing: Duration::from_nanos(router_ebpf::DEFAULT_TIMEOUT_CLOSING_NS),
            closed: Duration::from_nanos(router_ebpf::DEFAULT_TIMEOUT_CLOSED_NS),
        }
    }
}

impl FlowTimeouts {
    /// The `PGR_TIMEOUTS` value (ns; every field set, so the kernel defaults never apply).
    pub fn to_abi(&self) -> router_ebpf::Timeouts {
        let ns = |d: Duration| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        router_ebpf::Timeouts {
            handshake_ns: ns(self.handshake),
            established_ns: ns(self.established),
            closing_ns: ns(self.closing),
            closed_ns: ns(self.closed),
        }
    }

    /// RFC 5382 REQ-5: an established flow must not expire in less than 2 h 4 min.
    pub fn established_below_rfc5382(&self) -> bool {
        self.established < Duration::from_nanos(router_ebpf::DEFAULT_TIMEOUT_ESTABLISHED_NS)
    }
}

/// XDP attach mode.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum XdpMode {
    /// Native (driver) mode where supported, generic (skb) otherwise.
    #[default]
    Auto,
    Native,
    Generic,
}

/// Inclusive port range.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct PortRange {
    pub first: u16,
    pub last: u16,
}

/// `[datapath] snat_ports` when unset: above Linux's default ephemeral range start (32768)
/// but reserved from it at start (`ip_local_reserved_ports`).
pub const DEFAULT_SNAT_PORTS: PortRange = PortRange {
    first: 40000,
    last: 59999,
};

impl PortRange {
    pub fn contains(&self, port: u16) -> bool {
        (self.first..=self.last).contains(&port)
    }
}

/// As written in the file: `"40000-59999"`.
impl fmt::Display for PortRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.first, self.last)
    }
}

/// `[control]`: the local control socket and the metrics endpoint.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Control {
    pub socket: PathBuf,
    /// `None` when `metrics = ""`.
    pub metrics: Option<SocketAddr>,
}

/// One `[[cluster]]`: a Patroni cluster and the listeners in front of it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cluster {
    pub name: String,
    pub checks: Checks,
    pub health: Health,
    pub api: Api,
    pub nodes: Vec<Node>,
    pub listeners: Vec<Listener>,
}

/// Where roles come from.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Checks {
    /// Patroni's REST API on every node.
    #[default]
    Patroni,
    /// `node.role` decides; no checks are sent (tests, clusters without Patroni).
    Static,
}

/// `[cluster.health]`, with HAProxy's meanings (`inter`, `fastinter`, `downinter`,
/// `timeout check`, `fall`, `rise`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct Health {
    /// Between checks of a node whose verdicts are stable and not all down.
    pub interval: Duration,
    /// While any verdict of a node is transitioning, and after any check of the cluster
    /// changed result.
    pub fastinter: Duration,
    /// Between checks of a node that is down for every check.
    pub downinter: Duration,
    /// Per HTTP request (connect + response).
    pub timeout: Duration,
    /// Consecutive failures to mark a node down.
    pub fall: u32,
    /// Consecutive successes to mark a node up.
    pub rise: u32,
    /// A node whose PostgreSQL refuses a connection through the data path leaves every set
    /// at once (`ClusterState::refused`). On by default; off leaves it to the checks alone.
    pub observe_refusals: bool,
}

impl Default for Health {
    fn default() -> Self {
        Self {
            interval: Duration::from_secs(1),
            fastinter: Duration::from_millis(200),
            downinter: Duration::from_secs(1),
            timeout: Duration::from_secs(1),
            fall: 2,
            rise: 1,
            observe_refusals: true,
        }
    }
}

/// `[cluster.api]`: how to reach Patroni's REST API.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Api {
    pub scheme: Scheme,
    /// Default for nodes without `api_port`.
    pub port: u16,
    pub ca_file: Option<PathBuf>,
    pub cert_file: Option<PathBuf>,
    pub key_file: Option<PathBuf>,
    /// Basic auth (`restapi.authentication` in Patroni); both or neither.
    pub username: Option<String>,
    pub password: Option<String>,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Scheme {
    #[default]
    Http,
    Https,
}

/// One `[[cluster.node]]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Node {
    pub name: String,
    pub host: IpAddr,
    /// PostgreSQL port (where connections are forwarded).
    pub port: u16,
    /// Patroni REST API port (where checks go), `api.port` unless set.
    pub api_port: u16,
    /// Only with `checks = "static"`.
    pub role: Option<StaticRole>,
    /// HTTPS only: the name to send as SNI and verify in the node's certificate, for
    /// certificates without an IP SAN. Mapped to `host` without DNS (HAProxy `check-sni` +
    /// `verifyhost`).
    pub tls_name: Option<String>,
}

/// A node's role when `checks = "static"`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum StaticRole {
    Primary,
    Replica,
    /// Listed but never selected.
    Down,
}

/// What a listener serves.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ListenerKind {
    /// The node passing `GET /primary` (HAProxy `option httpchk` / `GET /primary`).
    Primary,
    /// Nodes passing `GET /replica[?lag=…]`.
    Replica,
    /// Nodes passing `GET /read-only[?lag=…]` (primary and replicas).
    ReadOnly,
}

/// What a replica listener serves when no replica is up.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Fallback {
    /// Serve the primary (HAProxy `use_backend X_leader if { nbsrv(X) eq 0 }`).
    Primary,
    /// Refuse connections (the naive HAProxy setup).
    None,
}

/// HAProxy's `on-marked-down`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum OnMarkedDown {
    /// Reset the sessions of a node marked down (`on-marked-down shutdown-sessions`).
    #[default]
    ShutdownSessions,
    /// Leave its sessions alone (HAProxy's default).
    Keep,
}

/// What a listener does with a SYN while its set is empty.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OnEmpty {
    /// Drop SYNs silently (the client retransmits and connects once a backend exists) for
    /// this long after the set became empty, then answer them with a RST.
    Hold(Duration),
    /// Answer with a RST at once.
    Reject,
}

impl Default for OnEmpty {
    fn default() -> Self {
        Self::Hold(Duration::from_millis(
            router_ebpf::DEFAULT_EMPTY_HOLD_MS.into(),
        ))
    }
}

impl OnEmpty {
    /// `Service.empty_hold_ms`: 0 for `Reject`. Validation keeps a hold within 60 s.
    pub fn hold_ms(&self) -> u32 {
        match self {
            Self::Hold(d) => u32::try_from(d.as_millis()).unwrap_or(u32::MAX),
            Self::Reject => 0,
        }
    }
}

/// One `[[cluster.listener]]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Listener {
    pub name: String,
    pub vip: IpAddr,
    pub port: u16,
    pub kind: ListenerKind,
    /// Per backend, 0 = unlimited (HAProxy's per-server `maxconn`).
    pub maxconn: u32,
    pub balance: Balance,
    pub on_marked_down: OnMarkedDown,
    /// `on_empty` + `empty_hold`.
    pub on_empty: OnEmpty,
    /// Replica listeners only; `Fallback::None` when unset.
    pub fallback: Fallback,
    /// Replica/read-only listeners: maximum lag in bytes, as Patroni's `?lag=`.
    pub lag: Option<Lag>,
    /// Source address of the backend leg; the VIP unless set.
    pub snat: IpAddr,
}

/// A lag limit: the bytes sent to Patroni and the text the user wrote (for status output).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Lag {
    pub bytes: u64,
    pub text: String,
}

/// One config problem, positioned at the field that causes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Diagnostic {
    pub file: String,
    /// 1-based.
    pub line: usize,
    /// 1-based, in characters.
    pub col: usize,
    /// `cluster[0].listener[1].lag`.
    pub field: String,
    pub message: String,
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}:{}: {}: {}",
            self.file, self.line, self.col, self.field, self.message
        )
    }
}

/// Every problem found in a config file, displayed one per line as
/// `FILE:LINE:COL: field.path: message`.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub struct ConfigError {
    pub diagnostics: Vec<Diagnostic>,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, d) in self.diagnostics.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{d}")?;
        }
        Ok(())
    }
}

/// Reads and validates a config file.
pub fn load(path: impl AsRef<Path>) -> Result<Config, ConfigError> {
    let path = path.as_ref();
    let text = read(path)?;
    parse(&text, path)
}

fn read(path: &Path) -> Result<String, ConfigError> {
    std::fs::read_to_string(path).map_err(|e| ConfigError {
        diagnostics: vec![Diagnostic {
            file: path.display().to_string(),
            line: 1,
            col: 1,
            field: "-".into(),
            message: format!("cannot read config: {e}"),
        }],
    })
}

/// Validates config text; `path` is only used in messages and in [`Config::path`].
pub fn parse(text: &str, path: impl AsRef<Path>) -> Result<Config, ConfigError> {
    validate::parse(text, path.as_ref())
}

/// Reads and validates a file of `[[vrrp]]` tables only, for `pgrouter vrrp --config FILE`
/// (no clusters: `patroni:<cluster>` tracks are not checked against any).
pub fn load_vrrp_only(path: impl AsRef<Path>) -> Result<Vec<VrrpInstance>, ConfigError> {
    let path = path.as_ref();
    let text = read(path)?;
    validate::parse_vrrp_only(&text, path)
}

/// Loads `path` and returns a short human summary, or every error (for `pgrouter check-config`).
pub fn check(path: impl AsRef<Path>) -> Result<Summary, ConfigError> {
    let config = load(path)?;
    Ok(summary::summarize(&config))
}
