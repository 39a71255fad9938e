//! The file as written: serde structs with `deny_unknown_fields`. Values with their own syntax
//! (durations, lag, port ranges) stay text here so that `validate` can report *all* bad
//! values at once; serde stops at the first error.
//!
//! Every type serialises back to the same keys, and `Default` holds the documented defaults
//! (taken from the one constant per default in `config`), so `pgrouter import` can build a
//! [`File`] and render it. `[[vrrp]]` tables are [`RawInstance`](super::vrrp::RawInstance).
use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use super::units::DurationText;
use super::vrrp::RawInstance;
use super::{
    Checks, DEFAULT_API_PORT, DEFAULT_METRICS, DEFAULT_PG_PORT, DEFAULT_PIN_PATH,
    DEFAULT_SNAT_PORTS, DEFAULT_SOCKET, Fallback, ListenerKind, OnMarkedDown, Scheme, StaticRole,
    XdpMode,
};
use crate::model::Balance;

/// The whole file.
#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct File {
    #[serde(default)]
    pub datapath: Datapath,
    #[serde(default)]
    pub control: Control,
    #[serde(default)]
    pub cluster: Vec<Cluster>,
    #[serde(default)]
    pub vrrp: Vec<RawInstance>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sync: Option<super::sync::RawSync>,
}

/// `[datapath]`; a missing key takes its value from `Default`.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct Datapath {
    pub interfaces: Vec<String>,
    pub mode: XdpMode,
    pub pin_path: String,
    pub conntrack_entries: u32,
    /// `"FIRST-LAST"`.
    pub snat_ports: String,
    /// `None`: [`router_ebpf::DEFAULT_HS_ENTRIES`], or the SNAT port count if smaller.
    pub handshake_entries: Option<u32>,
    pub timeouts: Timeouts,
}

impl Default for Datapath {
    fn default() -> Self {
        Self {
            interfaces: Vec::new(),
            mode: XdpMode::default(),
            pin_path: DEFAULT_PIN_PATH.into(),
            conntrack_entries: router_ebpf::DEFAULT_CT_ENTRIES,
            snat_ports: DEFAULT_SNAT_PORTS.to_string(),
            handshake_entries: None,
            timeouts: Timeouts::default(),
        }
    }
}

/// `[datapath.timeouts]`: durations as written; `None` = the ABI default.
#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Timeouts {
    pub handshake: Option<DurationText>,
    pub established: Option<DurationText>,
    pub closing: Option<DurationText>,
    pub closed: Option<DurationText>,
}

/// `[control]`; a missing key takes its value from `Default`.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct Control {
    pub socket: String,
    /// `"ADDRESS:PORT"`, or `""` for none.
    pub metrics: String,
}

impl Default for Control {
    fn default() -> Self {
        Self {
            socket: DEFAULT_SOCKET.into(),
            metrics: DEFAULT_METRICS.into(),
        }
    }
}

/// One `[[cluster]]`.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Cluster {
    pub name: String,
    #[serde(default)]
    pub checks: Checks,
    #[serde(default)]
    pub health: Health,
    #[serde(default)]
    pub api: Api,
    #[serde(default)]
    pub node: Vec<Node>,
    #[serde(default)]
    pub listener: Vec<Listener>,
}

/// `[cluster.health]`; a missing key takes its value from `Default`.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct Health {
    pub interval: DurationText,
    pub fastinter: DurationText,
    pub downinter: DurationText,
    pub timeout: DurationText,
    pub fall: u32,
    pub rise: u32,
    pub observe_refusals: bool,
}

/// [`super::Health::default`], as written.
impl Default for Health {
    fn default() -> Self {
        let h = super::Health::default();
        Self {
            interval: h.interval.into(),
            fastinter: h.fastinter.into(),
            downinter: h.downinter.into(),
            timeout: h.timeout.into(),
            fall: h.fall,
            rise: h.rise,
            observe_refusals: h.observe_refusals,
        }
    }
}

/// `[cluster.api]`; a missing key takes its value from `Default` (`""`: not set).
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct Api {
    pub scheme: Scheme,
    pub port: u16,
    pub ca_file: String,
    pub cert_file: String,
    pub key_file: String,
    pub username: String,
    pub password: String,
}

impl Default for Api {
    fn default() -> Self {
        Self {
            scheme: Scheme::default(),
            port: DEFAULT_API_PORT,
            ca_file: String::new(),
            cert_file: String::new(),
            key_file: String::new(),
            username: String::new(),
            password: String::new(),
        }
    }
}

/// One `[[cluster.node]]`.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Node {
    pub name: String,
    pub host: IpAddr,
    #[serde(default = "d_pg_port")]
    pub port: u16,
    pub api_port: Option<u16>,
    pub role: Option<StaticRole>,
    pub tls_name: Option<String>,
}

fn d_pg_port() -> u16 {
    DEFAULT_PG_PORT
}

/// One `[[cluster.listener]]`.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Listener {
    pub name: String,
    pub vip: IpAddr,
    pub port: u16,
    pub kind: ListenerKind,
    #[serde(default)]
    pub maxconn: u32,
    #[serde(default)]
    pub balance: Balance,
    #[serde(default)]
    pub on_marked_down: OnMarkedDown,
    #[serde(default)]
    pub on_empty: OnEmptyKind,
    pub empty_hold: Option<DurationText>,
    pub fallback: Option<Fallback>,
    pub lag: Option<Lag>,
    pub snat: Option<IpAddr>,
}

/// `on_empty` as written; `validate` pairs it with `empty_hold` into [`super::OnEmpty`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum OnEmptyKind {
    #[default]
    Hold,
    Reject,
}

/// `lag = "10MB"` or `lag = 10485760`; both go through Patroni's parser.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(untagged)]
pub enum Lag {
    Int(i64),
    Text(String),
}
