//! VRRP (RFC 5798 v3, RFC 3768 v2): codec, pure state machine, and the socket/netlink edge.
//!
//! - [`packet`]: the wire format and the packet-only receive checks.
//! - [`fsm`]: the state machine, pure (`step(&mut Instance, Event, now) -> Vec<Action>`).
//! - [`net`]: raw sockets, rtnetlink addresses, gratuitous ARP / unsolicited NA.
//! - [`instance`]: one tokio task per virtual router that joins them.
//!
//! The controller embeds `vrrp: Vec<InstanceConfig>` (TOML `[[vrrp]]`), calls [`spawn`] per
//! instance with a `watch::Receiver<Tracks>`, and reads [`InstanceHandle::status`].

pub mod fsm;
pub mod instance;
pub mod net;
pub mod packet;

use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;
use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use anyhow::Context as _;
use serde::de::{self, Deserializer, Visitor};
use tokio::sync::watch;

pub use instance::{InstanceHandle, InstanceStatus, spawn};

/// Track results the controller publishes: name → healthy. Names pgrouter uses:
/// `xdp-attached` (the XDP program is attached on this host) and `patroni:<cluster>` (this host
/// reaches the cluster: some node's Patroni API answered its last check, whatever the role). A name absent from the map counts as failing, so nothing
/// claims a VIP before the controller has checked.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct Tracks {
    pub named: BTreeMap<String, bool>,
}

/// keepalived `state`: only the start-up hint; the election decides after that.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum StateHint {
    Master,
    Backup,
}

/// A duration written as `"1s"`, `"100ms"`, `"1.5s"`, or a number of seconds (`1`, `0.1`),
/// so keepalived's `advert_int 0.1` carries over unchanged.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Interval(pub Duration);

/// Written back in the shortest exact unit ("1s", "100ms", "1500us").
impl serde::Serialize for Interval {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let us = self.0.as_micros();
        if us.is_multiple_of(1_000_000) {
            s.collect_str(&format_args!("{}s", us / 1_000_000))
        } else if us.is_multiple_of(1_000) {
            s.collect_str(&format_args!("{}ms", us / 1_000))
        } else {
            s.collect_str(&format_args!("{us}us"))
        }
    }
}

impl FromStr for Interval {
    type Err = String;
    fn from_str(s: &str) -> Result<Interval, String> {
        let s = s.trim();
        let (num, scale) = if let Some(n) = s.strip_suffix("ms") {
            (n, 1e-3)
        } else if let Some(n) = s.strip_suffix("us") {
            (n, 1e-6)
        } else if let Some(n) = s.strip_suffix('s') {
            (n, 1.0)
        } else if let Some(n) = s.strip_suffix('m') {
            (n, 60.0)
        } else {
            (s, 1.0)
        };
        let v: f64 = num
            .trim()
            .parse()
            .map_err(|_| format!("invalid duration {s:?} (use e.g. \"1s\", \"100ms\", 0.5)"))?;
        Interval::from_secs(v * scale)
    }
}

impl Interval {
    fn from_secs(v: f64) -> Result<Interval, String> {
        if !v.is_finite() || !(0.0..=86_400.0).contains(&v) {
            return Err(format!("duration {v}s out of range"));
        }
        Ok(Interval(Duration::from_micros((v * 1e6).round() as u64)))
    }
}

impl<'de> serde::Deserialize<'de> for Interval {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Interval, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Interval;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a duration like \"1s\" or \"100ms\", or seconds as a number")
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<Interval, E> {
                s.parse().map_err(E::custom)
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Interval, E> {
                Interval::from_secs(v).map_err(E::custom)
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Interval, E> {
                Interval::from_secs(v as f64).map_err(E::custom)
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Interval, E> {
                Interval::from_secs(v as f64).map_err(E::custom)
            }
        }
        d.deserialize_any(V)
    }
}

/// An address with prefix length, written `"198.18.0.100/24"` (no prefix: /32 or /128, as
/// keepalived).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cidr(pub net::AddrPrefix);

impl FromStr for Cidr {
    type Err = String;
    fn from_str(s: &str) -> Result<Cidr, String> {
        let (a, p) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let addr: IpAddr = a
            .trim()
            .parse()
            .map_err(|_| format!("invalid address {a:?}"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match p {
            Some(p) => p
                .trim()
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= max)
                .ok_or_else(|| format!("invalid prefix length {p:?} in {s:?}"))?,
            None => max,
        };
        Ok(Cidr(net::AddrPrefix { addr, prefix }))
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.0.addr, self.0.prefix)
    }
}

impl<'de> serde::Deserialize<'de> for Cidr {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Cidr, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(de::Error::custom)
    }
}

impl serde::Serialize for Cidr {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// One tracked input of an instance (keepalived `track_script` with `weight`).
#[derive(Clone, Debug, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct TrackConfig {
    /// A key of [`Tracks::named`], e.g. `"xdp-attached"` or `"patroni:main"`.
    pub name: String,
    /// keepalived semantics: `< 0` subtracts `|weight|` while failing, `> 0` adds `weight`
    /// while succeeding, `0` (the default, as in keepalived) puts the instance in FAULT while
    /// failing.
    #[serde(default)]
    pub weight: i32,
    /// FAULT while failing, whatever the weight.
    #[serde(default)]
    pub fatal: bool,
}

/// One virtual router, mirroring keepalived's `vrrp_instance` (names kept where they exist).
#[derive(Clone, Debug, PartialEq, serde::Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct InstanceConfig {
    pub name: String,
    pub interface: String,
    /// 3 (RFC 5798, default) or 2 (RFC 3768, IPv4 only, needed for `auth_pass`).
    #[serde(default = "default_version")]
    pub version: u8,
    pub virtual_router_id: u8,
    /// 1..=255; 255 = address owner (master at once). keepalived's default is 100.
    #[serde(default = "default_priority")]
    pub priority: u8,
    /// v3: 10 ms steps up to 40.95 s; v2: whole seconds.
    #[serde(default = "default_advert_int")]
    pub advert_int: Interval,
    /// keepalived `state`: start-up hint only.
    #[serde(default)]
    pub state: Option<StateHint>,
    #[serde(default)]
    pub nopreempt: bool,
    #[serde(default)]
    pub preempt_delay: Option<Interval>,
    /// v2 `auth_type PASS` password (at most 8 bytes).
    #[serde(default)]
    pub auth_pass: Option<String>,
    /// VIPs; all of one family, which picks IPv4 or IPv6 VRRP.
    pub virtual_ipaddress: Vec<Cidr>,
    /// Unicast mode: our source address; required with `unicast_peer`.
    #[serde(default)]
    pub unicast_src_ip: Option<IpAddr>,
    /// Unicast mode: peers we send to and the only sources we accept.
    #[serde(default)]
    pub unicast_peer: Vec<IpAddr>,
    /// Second burst of gratuitous ARPs this long after becoming master (keepalived: 5 s).
    #[serde(default = "default_garp_delay")]
    pub garp_master_delay: Interval,
    /// Gratuitous ARPs per burst (keepalived: 5).
    #[serde(default = "default_garp_repeat")]
    pub garp_master_repeat: u32,
    /// Re-announce this often while master (keepalived: off).
    #[serde(default)]
    pub garp_master_refresh: Option<Interval>,
    /// Commands run with `sh -c` on entering each state (keepalived `notify_*`).
    #[serde(default)]
    pub notify_master: Option<String>,
    #[serde(default)]
    pub notify_backup: Option<String>,
    #[serde(default)]
    pub notify_fault: Option<String>,
    #[serde(default)]
    pub track: Vec<TrackConfig>,
}

fn default_version() -> u8 {
    3
}
fn default_priority() -> u8 {
    100
}
fn default_advert_int() -> Interval {
    Interval(Duration::from_secs(1))
}
fn default_garp_delay() -> Interval {
    Interval(Duration::from_secs(5))
}
fn default_garp_repeat() -> u32 {
    5
}

impl InstanceConfig {
    /// True when the VIPs are IPv6 (VRRPv3 over IPv6).
    pub fn is_ipv6(&self) -> bool {
        self.virtual_ipaddress
            .first()
            .is_some_and(|c| c.0.addr.is_ipv6())
    }

    /// Wire version.
    pub fn wire_version(&self) -> packet::Version {
        if self.version == 2 {
            packet::Version::V2
        } else {
            packet::Version::V3
        }
    }

    /// Advertisement interval in centiseconds.
    pub fn adver_int_cs(&self) -> u16 {
        u16::try_from(self.advert_int.0.as_millis() / 10).unwrap_or(u16::MAX)
    }

    /// Checks what serde cannot; the error starts with the offending field's key.
    pub fn validate(&self) -> Result<(), String> {
        if self.name.trim().is_empty() {
            return Err("name: must not be empty".into());
        }
        if self.interface.trim().is_empty() || self.interface.len() >= libc::IFNAMSIZ {
            return Err(format!(
                "interface: {:?} is not a valid interface name",
                self.interface
            ));
        }
        if self.version != 2 && self.version != 3 {
            return Err(format!("version: {} is not 2 or 3", self.version));
        }
        if self.virtual_router_id == 0 {
            return Err("virtual_router_id: must be 1..=255".into());
        }
        if self.priority == 0 {
            return Err("priority: must be 1..=255 (0 is reserved for a leaving master)".into());
        }
        let int = self.advert_int.0;
        if self.version == 3 {
            if int < Duration::from_millis(10) || int > Duration::from_millis(40_950) {
                return Err(format!("advert_int: {int:?} outside 10ms..=40.95s (v3)"));
            }
            if !int.as_micros().is_multiple_of(10_000) {
                return Err(format!(
                    "advert_int: {int:?} is not a multiple of 10ms (v3 carries centiseconds)"
                ));
            }
        } else if int.subsec_nanos() != 0
            || int < Duration::from_secs(1)
            || int > Duration::from_secs(255)
        {
            return Err(format!(
                "advert_int: {int:?} must be whole seconds 1..=255 with version 2"
            ));
        }
        let Some(first) = self.virtual_ipaddress.first() else {
            return Err("virtual_ipaddress: at least one address is required".into());
        };
        let v6 = first.0.addr.is_ipv6();
        if self.virtual_ipaddress.len() > 20 {
            return Err("virtual_ipaddress: at most 20 addresses per instance".into());
        }
        if let Some(c) = self
            .virtual_ipaddress
            .iter()
            .find(|c| c.0.addr.is_ipv6() != v6)
        {
            return Err(format!(
                "virtual_ipaddress: {c} mixes address families (use one instance per family)"
            ));
        }
        if self.version == 2 && v6 {
            return Err("version: 2 is IPv4 only; use version 3 for IPv6 addresses".into());
        }
        match &self.auth_pass {
            Some(_) if self.version != 2 => {
                return Err(
                    "auth_pass: only valid with version 2 (RFC 5798 removed authentication)".into(),
                );
            }
            Some(p) if p.is_empty() || p.len() > 8 => {
                return Err(
                    "auth_pass: must be 1..=8 bytes (keepalived uses only the first 8)".into(),
                );
            }
            _ => {}
        }
        if let Some(s) = self.unicast_src_ip
            && s.is_ipv6() != v6
        {
            return Err(format!("unicast_src_ip: {s} is not of the VIPs' family"));
        }
        if let Some(p) = self.unicast_peer.iter().find(|p| p.is_ipv6() != v6) {
            return Err(format!("unicast_peer: {p} is not of the VIPs' family"));
        }
        if !self.unicast_peer.is_empty() && self.unicast_src_ip.is_none() {
            return Err("unicast_src_ip: required with unicast_peer".into());
        }
        if self.garp_master_repeat > 100 {
            return Err("garp_master_repeat: at most 100".into());
        }
        if let Some(r) = self.garp_master_refresh
            && r.0 < Duration::from_secs(1)
        {
            return Err("garp_master_refresh: at least 1s".into());
        }
        let mut seen = std::collections::BTreeSet::new();
        for t in &self.track {
            if t.name.trim().is_empty() {
                return Err("track.name: must not be empty".into());
            }
            if !seen.insert(t.name.as_str()) {
                return Err(format!("track.name: {:?} listed twice", t.name));
            }
            if !(-254..=254).contains(&t.weight) {
                return Err(format!("track.weight: {} outside -254..=254", t.weight));
            }
        }
        Ok(())
    }
}

/// Checks a set of instances together: each one, plus unique names and unique (interface,
/// family, VRID).
pub fn validate_all(instances: &[InstanceConfig]) -> Result<(), String> {
    let mut names = std::collections::BTreeSet::new();
    let mut vrids = std::collections::BTreeSet::new();
    for i in instances {
        i.validate()
            .map_err(|e| format!("vrrp instance {:?}: {e}", i.name))?;
        if !names.insert(i.name.as_str()) {
            return Err(format!("vrrp instance {:?}: name: used twice", i.name));
        }
        if !vrids.insert((i.interface.as_str(), i.is_ipv6(), i.virtual_router_id)) {
            return Err(format!(
                "vrrp instance {:?}: virtual_router_id: {} already used on {} for this family",
                i.name, i.virtual_router_id, i.interface
            ));
        }
    }
    Ok(())
}

/// A TOML file with only `[[vrrp]]` tables, for `pgrouter vrrp --config FILE`.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct VrrpOnlyFile {
    #[serde(default)]
    vrrp: Vec<InstanceConfig>,
}

/// Reads and validates a `[[vrrp]]`-only TOML file.
pub fn load_vrrp_only(path: impl AsRef<Path>) -> anyhow::Result<Vec<InstanceConfig>> {
    let path = path.as_ref();
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let file: VrrpOnlyFile =
        toml::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
    validate_all(&file.vrrp).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    Ok(file.vrrp)
}

/// Runs the instances until SIGTERM or SIGINT, then shuts each down (priority 0, VIPs removed).
/// Tracks are fixed to "all healthy" for the configured names: standalone mode has no
/// controller.
pub async fn run_standalone(instances: Vec<InstanceConfig>) -> anyhow::Result<()> {
    validate_all(&instances).map_err(|e| anyhow::anyhow!(e))?;
    let mut all = Tracks::default();
    for i in &instances {
        for t in &i.track {
            all.named.insert(t.name.clone(), true);
        }
    }
    let (_tx, rx) = watch::channel(all);
    let mut handles = Vec::new();
    for cfg in instances {
        let name = cfg.name.clone();
        handles.push(
            spawn(cfg, rx.clone()).with_context(|| format!("starting vrrp instance {name:?}"))?,
        );
    }
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = term.recv() => {}
        r = tokio::signal::ctrl_c() => r?,
    }
    tracing::info!("signal received, shutting down vrrp instances");
    for h in handles {
        h.shutdown().await;
    }
    Ok(())
}

#[cfg(test)]
#[path = "config_tests.rs"]
mod config_tests;
