//! `[[vrrp]]`: one keepalived `vrrp_instance` per table; the schema, its defaults and its
//! checks. The VRRP runtime (`crate::vrrp`) only consumes the validated [`VrrpInstance`].
//!
//! [`RawInstance`] is the table as written (serde, both ways, so `pgrouter import` can build and
//! render it); [`validate`] turns a file's instances into [`VrrpInstance`]s, every error
//! positioned at its own key.
use std::collections::{HashMap, HashSet};
use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::Cluster;
use super::units::DurationText;
use super::validate::{Ctx, p, valid_ifname};

/// RFC 5798 (VRRPv3); keepalived's own default is 2 for IPv4.
pub const DEFAULT_VERSION: u8 = 3;
/// keepalived's default priority.
pub const DEFAULT_PRIORITY: u8 = 100;
/// keepalived's default `advert_int`.
pub const DEFAULT_ADVERT_INT: Duration = Duration::from_secs(1);
/// keepalived's default second gratuitous burst after becoming master.
pub const DEFAULT_GARP_MASTER_DELAY: Duration = Duration::from_secs(5);
/// keepalived's default announcements per burst.
pub const DEFAULT_GARP_MASTER_REPEAT: u32 = 5;

/// RFC 5798 §5.2.1: at most 20 addresses per advert.
pub const MAX_VIPS: usize = 20;
/// Gratuitous ARPs per burst: more is a typo (and a flood).
pub const MAX_GARP_MASTER_REPEAT: u32 = 100;
/// The longest `preempt_delay` / `garp_master_*` accepted: a day is already a typo.
const MAX_DELAY: Duration = Duration::from_secs(86_400);
/// keepalived clamps track weights to ±254.
pub const MAX_TRACK_WEIGHT: i32 = 254;

/// keepalived `state`: only the start-up hint; the election decides after that.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum StateHint {
    Master,
    Backup,
}

/// An address with prefix length, written `"198.18.0.100/24"` (no prefix: /32 or /128, as
/// keepalived): a VIP, and what the runtime adds to the interface.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cidr {
    pub addr: IpAddr,
    pub prefix: u8,
}

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
        Ok(Cidr { addr, prefix })
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

impl<'de> Deserialize<'de> for Cidr {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Cidr, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

impl Serialize for Cidr {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// One tracked input of an instance (keepalived `track_script` with `weight`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Track {
    /// A name the controller publishes: `"xdp-attached"` or `"patroni:<cluster>"`.
    pub name: String,
    /// keepalived semantics: `< 0` subtracts `|weight|` while failing, `> 0` adds `weight`
    /// while succeeding, `0` (the default, as in keepalived) puts the instance in FAULT while
    /// failing.
    pub weight: i32,
    /// FAULT while failing, whatever the weight.
    pub fatal: bool,
}

/// One validated virtual router, mirroring keepalived's `vrrp_instance` (names kept where they
/// exist). Every field holds a value [`validate`] accepted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VrrpInstance {
    pub name: String,
    pub interface: String,
    /// 3 (RFC 5798) or 2 (RFC 3768, IPv4 only, needed for `auth_pass`).
    pub version: u8,
    pub virtual_router_id: u8,
    /// 1..=255; 255 = address owner (master at once).
    pub priority: u8,
    /// v3: 10 ms steps, 10 ms..=40.95 s; v2: whole seconds 1..=255.
    pub advert_int: Duration,
    pub state: Option<StateHint>,
    pub nopreempt: bool,
    pub preempt_delay: Option<Duration>,
    /// v2 `auth_type PASS` password (1..=8 bytes).
    pub auth_pass: Option<String>,
    /// VIPs; 1..=20, all of one family, which picks IPv4 or IPv6 VRRP.
    pub virtual_ipaddress: Vec<Cidr>,
    /// Unicast mode: our source address; set whenever `unicast_peer` is.
    pub unicast_src_ip: Option<IpAddr>,
    /// Unicast mode: peers we send to and the only sources we accept.
    pub unicast_peer: Vec<IpAddr>,
    /// Second burst of gratuitous ARPs this long after becoming master; zero = none.
    pub garp_master_delay: Duration,
    /// Gratuitous ARPs per burst.
    pub garp_master_repeat: u32,
    /// Re-announce this often while master (at least 1 s).
    pub garp_master_refresh: Option<Duration>,
    /// Commands run with `sh -c` on entering each state (keepalived `notify_*`).
    pub notify_master: Option<String>,
    pub notify_backup: Option<String>,
    pub notify_fault: Option<String>,
    pub track: Vec<Track>,
}

impl VrrpInstance {
    /// True when the VIPs are IPv6 (VRRPv3 over IPv6).
    pub fn is_ipv6(&self) -> bool {
        self.virtual_ipaddress
            .first()
            .is_some_and(|c| c.addr.is_ipv6())
    }

    /// Advertisement interval in centiseconds, as the v3 header carries it.
    pub fn adver_int_cs(&self) -> u16 {
        u16::try_from(self.advert_int.as_millis() / 10).unwrap_or(u16::MAX)
    }
}

/// One `[[vrrp]]` table as written. Durations and VIPs stay text so that every bad value is
/// reported at once, with its position.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawInstance {
    pub name: String,
    pub interface: String,
    #[serde(default = "d_version")]
    pub version: u8,
    pub virtual_router_id: u8,
    #[serde(default = "d_priority")]
    pub priority: u8,
    #[serde(default = "d_advert_int")]
    pub advert_int: DurationText,
    #[serde(default)]
    pub state: Option<StateHint>,
    #[serde(default)]
    pub nopreempt: bool,
    #[serde(default)]
    pub preempt_delay: Option<DurationText>,
    #[serde(default)]
    pub auth_pass: Option<String>,
    /// `"ADDRESS[/PREFIX]"`.
    pub virtual_ipaddress: Vec<String>,
    #[serde(default)]
    pub unicast_src_ip: Option<IpAddr>,
    #[serde(default)]
    pub unicast_peer: Vec<IpAddr>,
    #[serde(default = "d_garp_master_delay")]
    pub garp_master_delay: DurationText,
    #[serde(default = "d_garp_master_repeat")]
    pub garp_master_repeat: u32,
    #[serde(default)]
    pub garp_master_refresh: Option<DurationText>,
    #[serde(default)]
    pub notify_master: Option<String>,
    #[serde(default)]
    pub notify_backup: Option<String>,
    #[serde(default)]
    pub notify_fault: Option<String>,
    #[serde(default)]
    pub track: Vec<RawTrack>,
}

/// One `track` entry as written.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawTrack {
    pub name: String,
    #[serde(default)]
    pub weight: i32,
    #[serde(default)]
    pub fatal: bool,
}

/// Every optional key at its default; the importer fills in the required ones.
impl Default for RawInstance {
    fn default() -> Self {
        Self {
            name: String::new(),
            interface: String::new(),
            version: DEFAULT_VERSION,
            virtual_router_id: 0,
            priority: DEFAULT_PRIORITY,
            advert_int: d_advert_int(),
            state: None,
            nopreempt: false,
            preempt_delay: None,
            auth_pass: None,
            virtual_ipaddress: Vec::new(),
            unicast_src_ip: None,
            unicast_peer: Vec::new(),
            garp_master_delay: d_garp_master_delay(),
            garp_master_repeat: DEFAULT_GARP_MASTER_REPEAT,
            garp_master_refresh: None,
            notify_master: None,
            notify_backup: None,
            notify_fault: None,
            track: Vec::new(),
        }
    }
}

fn d_version() -> u8 {
    DEFAULT_VERSION
}
fn d_priority() -> u8 {
    DEFAULT_PRIORITY
}
fn d_advert_int() -> DurationText {
    DEFAULT_ADVERT_INT.into()
}
fn d_garp_master_delay() -> DurationText {
    DEFAULT_GARP_MASTER_DELAY.into()
}
fn d_garp_master_repeat() -> u32 {
    DEFAULT_GARP_MASTER_REPEAT
}

/// Checks a file's instances: each one, unique names, a unique VRID per interface and family,
/// and, when the file has clusters (`Some`), that `patroni:<cluster>` tracks name one. A
/// `[[vrrp]]`-only file (`pgrouter vrrp`) passes `None`: there the tracks are fixed.
pub(super) fn validate(
    ctx: &mut Ctx<'_>,
    raw: Vec<RawInstance>,
    clusters: Option<&[Cluster]>,
) -> Vec<VrrpInstance> {
    let out: Vec<VrrpInstance> = raw
        .into_iter()
        .enumerate()
        .map(|(i, r)| instance(ctx, i, r))
        .collect();
    let mut names: HashMap<&str, usize> = HashMap::new();
    let mut vrids: HashMap<(&str, bool, u8), usize> = HashMap::new();
    for (i, inst) in out.iter().enumerate() {
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
        let Some(clusters) = clusters else { continue };
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
    out
}

/// One instance on its own; every problem is reported at its key.
fn instance(ctx: &mut Ctx<'_>, i: usize, r: RawInstance) -> VrrpInstance {
    let at = |k: &str| p!["vrrp", i, k];
    if r.name.trim().is_empty() {
        ctx.err(at("name"), "must not be empty");
    }
    if !valid_ifname(&r.interface) {
        ctx.err(
            at("interface"),
            format!("{:?} is not a valid interface name", r.interface),
        );
    }
    let version = match r.version {
        2 | 3 => r.version,
        v => {
            ctx.err(at("version"), format!("{v} is not 2 or 3"));
            DEFAULT_VERSION
        }
    };
    if r.virtual_router_id == 0 {
        ctx.err(at("virtual_router_id"), "must be 1..=255");
    }
    if r.priority == 0 {
        ctx.err(
            at("priority"),
            "must be 1..=255 (0 is reserved for a leaving master)",
        );
    }
    let advert_int = match r.advert_int.parse() {
        Ok(d) => {
            if let Err(e) = advert_int_fits(d, version) {
                ctx.err_near(at("advert_int"), &[at("version")], e);
            }
            d
        }
        Err(e) => {
            ctx.err(at("advert_int"), e);
            DEFAULT_ADVERT_INT
        }
    };
    let virtual_ipaddress = vips(ctx, i, &r.virtual_ipaddress);
    let v6 = virtual_ipaddress.first().is_some_and(|c| c.addr.is_ipv6());
    if version == 2 && v6 {
        ctx.err(
            at("version"),
            "2 is IPv4 only; use version 3 for IPv6 addresses",
        );
    }
    match &r.auth_pass {
        Some(_) if version != 2 => ctx.err(
            at("auth_pass"),
            "only valid with version 2 (RFC 5798 removed authentication)",
        ),
        Some(p) if p.is_empty() || p.len() > 8 => ctx.err(
            at("auth_pass"),
            "must be 1..=8 bytes (keepalived uses only the first 8)",
        ),
        _ => {}
    }
    if let Some(s) = r.unicast_src_ip
        && s.is_ipv6() != v6
    {
        ctx.err(
            at("unicast_src_ip"),
            format!("{s} is not of the VIPs' family"),
        );
    }
    for (j, peer) in r.unicast_peer.iter().enumerate() {
        if peer.is_ipv6() != v6 {
            ctx.err(
                p!["vrrp", i, "unicast_peer", j],
                format!("{peer} is not of the VIPs' family"),
            );
        }
    }
    if !r.unicast_peer.is_empty() && r.unicast_src_ip.is_none() {
        ctx.err_near(
            at("unicast_src_ip"),
            &[at("unicast_peer")],
            "required with unicast_peer",
        );
    }
    if r.garp_master_repeat > MAX_GARP_MASTER_REPEAT {
        ctx.err(
            at("garp_master_repeat"),
            format!("at most {MAX_GARP_MASTER_REPEAT}"),
        );
    }
    let preempt_delay = r
        .preempt_delay
        .as_ref()
        .map(|d| delay(ctx, at("preempt_delay"), d, Duration::ZERO));
    let garp_master_delay = delay(
        ctx,
        at("garp_master_delay"),
        &r.garp_master_delay,
        Duration::ZERO,
    );
    let garp_master_refresh = r
        .garp_master_refresh
        .as_ref()
        .map(|d| delay(ctx, at("garp_master_refresh"), d, Duration::from_secs(1)));
    let track = tracks(ctx, i, r.track);
    VrrpInstance {
        name: r.name,
        interface: r.interface,
        version,
        virtual_router_id: r.virtual_router_id,
        priority: r.priority,
        advert_int,
        state: r.state,
        nopreempt: r.nopreempt,
        preempt_delay,
        auth_pass: r.auth_pass,
        virtual_ipaddress,
        unicast_src_ip: r.unicast_src_ip,
        unicast_peer: r.unicast_peer,
        garp_master_delay,
        garp_master_repeat: r.garp_master_repeat,
        garp_master_refresh,
        notify_master: r.notify_master,
        notify_backup: r.notify_backup,
        notify_fault: r.notify_fault,
        track,
    }
}

/// What the wire can carry: v3 centiseconds up to 4095, v2 whole seconds up to 255.
fn advert_int_fits(d: Duration, version: u8) -> Result<(), String> {
    if version == 3 {
        if d < Duration::from_millis(10) || d > Duration::from_millis(40_950) {
            return Err(format!("{d:?} outside 10ms..=40.95s (v3)"));
        }
        if !d.as_micros().is_multiple_of(10_000) {
            return Err(format!(
                "{d:?} is not a multiple of 10ms (v3 carries centiseconds)"
            ));
        }
    } else if d.subsec_nanos() != 0 || d < Duration::from_secs(1) || d > Duration::from_secs(255) {
        return Err(format!(
            "{d:?} must be whole seconds 1..=255 with version 2"
        ));
    }
    Ok(())
}

/// A delay key: `min..=1d`; an error falls back to `min`.
fn delay(
    ctx: &mut Ctx<'_>,
    path: Vec<super::span::Seg>,
    text: &DurationText,
    min: Duration,
) -> Duration {
    match text.parse() {
        Ok(d) if d < min => {
            ctx.err(path, format!("{d:?} is too short; at least {min:?}"));
            min
        }
        Ok(d) if d > MAX_DELAY => {
            ctx.err(path, format!("{d:?} is too long; at most 1d"));
            MAX_DELAY
        }
        Ok(d) => d,
        Err(e) => {
            ctx.err(path, e);
            min
        }
    }
}

/// The VIPs: each parsed, 1..=20 of them, one family (the first address's).
fn vips(ctx: &mut Ctx<'_>, i: usize, raw: &[String]) -> Vec<Cidr> {
    let at = |j: usize| p!["vrrp", i, "virtual_ipaddress", j];
    if raw.is_empty() {
        ctx.err(
            p!["vrrp", i, "virtual_ipaddress"],
            "at least one address is required",
        );
    } else if raw.len() > MAX_VIPS {
        ctx.err(
            p!["vrrp", i, "virtual_ipaddress"],
            format!("at most {MAX_VIPS} addresses per instance"),
        );
    }
    let mut out: Vec<Cidr> = Vec::new();
    for (j, text) in raw.iter().enumerate() {
        match text.parse::<Cidr>() {
            Ok(c) => {
                if let Some(first) = out.first()
                    && first.addr.is_ipv6() != c.addr.is_ipv6()
                {
                    ctx.err(
                        at(j),
                        format!("{c} mixes address families (use one instance per family)"),
                    );
                }
                out.push(c);
            }
            Err(e) => ctx.err(at(j), e),
        }
    }
    out
}

fn tracks(ctx: &mut Ctx<'_>, i: usize, raw: Vec<RawTrack>) -> Vec<Track> {
    let mut seen = HashSet::new();
    for (t, track) in raw.iter().enumerate() {
        let at = |k: &str| p!["vrrp", i, "track", t, k];
        if track.name.trim().is_empty() {
            ctx.err(at("name"), "must not be empty");
        } else if !seen.insert(track.name.as_str()) {
            ctx.err(at("name"), format!("{:?} listed twice", track.name));
        }
        if !(-MAX_TRACK_WEIGHT..=MAX_TRACK_WEIGHT).contains(&track.weight) {
            ctx.err(
                at("weight"),
                format!(
                    "{} outside -{MAX_TRACK_WEIGHT}..={MAX_TRACK_WEIGHT}",
                    track.weight
                ),
            );
        }
    }
    raw.into_iter()
        .map(|t| Track {
            name: t.name,
            weight: t.weight,
            fatal: t.fatal,
        })
        .collect()
}

#[cfg(test)]
#[path = "vrrp_tests.rs"]
mod tests;
