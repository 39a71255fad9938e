//! The file as written: serde structs with `deny_unknown_fields`. Values with their own syntax
//! (durations, lag, port ranges) stay strings here so that `validate` can report *all* bad
//! values at once; serde stops at the first error. `Serialize` is for `pgrouter import`, which
//! writes its translation as these types.
use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use super::{Checks, Fallback, ListenerKind, OnMarkedDown, Scheme, StaticRole, XdpMode};
use crate::model::Balance;

#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct File {
    #[serde(default)]
    pub datapath: Datapath,
    #[serde(default)]
    pub control: Control,
    #[serde(default)]
    pub cluster: Vec<Cluster>,
    #[serde(default)]
    pub vrrp: Vec<super::VrrpInstance>,
}

#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Datapath {
    #[serde(default)]
    pub interfaces: Vec<String>,
    #[serde(default)]
    pub mode: XdpMode,
    #[serde(default = "default_pin_path")]
    pub pin_path: String,
    #[serde(default = "default_conntrack_entries")]
    pub conntrack_entries: u32,
    #[serde(default = "default_snat_ports")]
    pub snat_ports: String,
    /// `None`: [`router_ebpf::DEFAULT_HS_ENTRIES`], or the SNAT port count if smaller.
    #[serde(default)]
    pub handshake_entries: Option<u32>,
    #[serde(default)]
    pub timeouts: Timeouts,
}

impl Default for Datapath {
    fn default() -> Self {
        Self {
            interfaces: Vec::new(),
            mode: XdpMode::default(),
            pin_path: default_pin_path(),
            conntrack_entries: default_conntrack_entries(),
            snat_ports: default_snat_ports(),
            handshake_entries: None,
            timeouts: Timeouts::default(),
        }
    }
}

fn default_pin_path() -> String {
    "/sys/fs/bpf/pgrouter".into()
}
fn default_conntrack_entries() -> u32 {
    router_ebpf::DEFAULT_CT_ENTRIES
}
fn default_snat_ports() -> String {
    let r = super::DEFAULT_SNAT_PORTS;
    format!("{}-{}", r.first, r.last)
}

/// `[datapath.timeouts]`: durations as written; `None` = the ABI default.
#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Timeouts {
    pub handshake: Option<String>,
    pub established: Option<String>,
    pub closing: Option<String>,
    pub closed: Option<String>,
}

#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Control {
    #[serde(default = "default_socket")]
    pub socket: String,
    #[serde(default = "default_metrics")]
    pub metrics: String,
}

impl Default for Control {
    fn default() -> Self {
        Self {
            socket: default_socket(),
            metrics: default_metrics(),
        }
    }
}

fn default_socket() -> String {
    "/run/pgrouter/pgrouter.sock".into()
}
fn default_metrics() -> String {
    "127.0.0.1:9188".into()
}

#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Cluster {
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

#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Health {
    #[serde(default = "d_interval")]
    pub interval: String,
    #[serde(default = "d_fastinter")]
    pub fastinter: String,
    #[serde(default = "d_downinter")]
    pub downinter: String,
    #[serde(default = "d_timeout")]
    pub timeout: String,
    #[serde(default = "d_fall")]
    pub fall: u32,
    #[serde(default = "d_rise")]
    pub rise: u32,
    #[serde(default = "d_true")]
    pub observe_refusals: bool,
}

impl Default for Health {
    fn default() -> Self {
        Self {
            interval: d_interval(),
            fastinter: d_fastinter(),
            downinter: d_downinter(),
            timeout: d_timeout(),
            fall: d_fall(),
            rise: d_rise(),
            observe_refusals: true,
        }
    }
}

fn d_interval() -> String {
    "1s".into()
}
fn d_fastinter() -> String {
    "200ms".into()
}
fn d_downinter() -> String {
    "1s".into()
}
fn d_timeout() -> String {
    "1s".into()
}
fn d_fall() -> u32 {
    2
}
fn d_rise() -> u32 {
    1
}
fn d_true() -> bool {
    true
}

#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Api {
    #[serde(default)]
    pub scheme: Scheme,
    #[serde(default = "d_api_port")]
    pub port: u16,
    #[serde(default)]
    pub ca_file: String,
    #[serde(default)]
    pub cert_file: String,
    #[serde(default)]
    pub key_file: String,
    #[serde(default)]
    pub username: String,
    #[serde(default)]
    pub password: String,
}

impl Default for Api {
    fn default() -> Self {
        Self {
            scheme: Scheme::default(),
            port: d_api_port(),
            ca_file: String::new(),
            cert_file: String::new(),
            key_file: String::new(),
            username: String::new(),
            password: String::new(),
        }
    }
}

fn d_api_port() -> u16 {
    8008
}

#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Node {
    pub name: String,
    pub host: IpAddr,
    #[serde(default = "d_pg_port")]
    pub port: u16,
    pub api_port: Option<u16>,
    pub role: Option<StaticRole>,
    pub tls_name: Option<String>,
}

fn d_pg_port() -> u16 {
    5432
}

#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Listener {
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
    pub empty_hold: Option<String>,
    pub fallback: Option<Fallback>,
    pub lag: Option<Lag>,
    pub snat: Option<IpAddr>,
}

/// `on_empty` as written; `validate` pairs it with `empty_hold` into [`super::OnEmpty`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum OnEmptyKind {
    #[default]
    Hold,
    Reject,
}

/// `lag = "10MB"` or `lag = 10485760`; both go through Patroni's parser.
#[derive(Debug, Deserialize, Serialize)]
#[serde(untagged)]
pub(crate) enum Lag {
    Int(i64),
    Text(String),
}
