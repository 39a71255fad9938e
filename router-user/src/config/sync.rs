//! `[sync]`: flow-state sync between the edge hosts of one VRRP group (schema, defaults and
//! checks). What the keys mean at run time: `crate::sync` and docs/vrrp.md *Flow-state sync*.
use std::{net::SocketAddr, path::PathBuf, time::Duration};

use serde::{Deserialize, Serialize};

use super::PortRange;
use super::units::DurationText;
use super::validate::{Ctx, p};

/// After becoming VRRP master, mid-flow packets without a flow are dropped (the client
/// retransmits) instead of reset for this long: a sync in flight lands meanwhile.
pub const DEFAULT_GRACE: Duration = Duration::from_secs(2);
/// How often flows active since the last pass are sent again (sequence numbers, last
/// activity), so a peer's copy of a long-lived flow neither expires nor falls far behind.
pub const DEFAULT_REFRESH: Duration = Duration::from_secs(30);
/// The grace window is a drop window for clients: longer than a client's retransmission
/// backoff would turn a lost sync into a hang instead of a reset.
const MAX_GRACE: Duration = Duration::from_secs(10);

/// `[sync]` as written.
#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawSync {
    /// `ADDRESS:PORT` this host accepts its peers' connections on (its own address).
    pub listen: String,
    /// The other edge hosts' `listen` addresses.
    pub peers: Vec<String>,
    /// One hex key per line (at least 32 bytes); the first signs, every one is accepted.
    pub key_file: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub grace: Option<DurationText>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub refresh: Option<DurationText>,
}

/// `[sync]`, validated.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Sync {
    pub listen: SocketAddr,
    pub peers: Vec<SocketAddr>,
    pub key_file: PathBuf,
    pub grace: Duration,
    pub refresh: Duration,
}

impl Sync {
    /// The part of `range` the host listening on `addr` (this one or a peer) allocates SNAT
    /// ports from: hosts ordered by listen address take equal consecutive shares, so every
    /// host derives the same split and no two ever hand out the same port (a host that takes
    /// over a peer's flows keeps the peer's ports taken by those flows).
    pub fn share_of(&self, addr: SocketAddr, range: PortRange) -> PortRange {
        let mut all: Vec<SocketAddr> = self.peers.clone();
        all.push(self.listen);
        all.sort();
        let i = all.iter().position(|a| *a == addr).unwrap_or(0);
        share(range, i as u16, all.len() as u16)
    }

    /// This host's share of `range` (see [`Sync::share_of`]).
    pub fn snat_share(&self, range: PortRange) -> PortRange {
        self.share_of(self.listen, range)
    }

    /// How many hosts the group has (this one and its peers).
    pub fn hosts(&self) -> u32 {
        self.peers.len() as u32 + 1
    }
}

/// Share `i` of `n` of `range` (the last share takes the remainder).
pub fn share(range: PortRange, i: u16, n: u16) -> PortRange {
    let n = u32::from(n.max(1));
    let i = u32::from(i).min(n - 1);
    let len = u32::from(range.last - range.first) + 1;
    let each = len / n;
    let first = u32::from(range.first) + i * each;
    let last = if i + 1 == n {
        u32::from(range.last)
    } else {
        first + each - 1
    };
    PortRange {
        first: first as u16,
        last: last as u16,
    }
}

/// Fewer SNAT ports per host than this is a range too small to split.
const MIN_SHARE: u32 = 64;

pub(super) fn validate(ctx: &mut Ctx<'_>, raw: Option<RawSync>, snat: PortRange) -> Option<Sync> {
    let raw = raw?;
    let listen = match raw.listen.parse::<SocketAddr>() {
        Ok(a) if a.ip().is_unspecified() || a.port() == 0 => {
            ctx.err(
                p!["sync", "listen"],
                "must be this host's own ADDRESS:PORT (peers connect to it; the split of the \
                 SNAT ports is derived from it)",
            );
            None
        }
        Ok(a) => Some(a),
        Err(_) => {
            ctx.err(
                p!["sync", "listen"],
                format!(
                    "{:?} is not ADDRESS:PORT (e.g. \"198.18.0.21:7800\")",
                    raw.listen
                ),
            );
            None
        }
    };
    if raw.peers.is_empty() {
        ctx.err(
            p!["sync", "peers"],
            "lists no peer (the other edge hosts' listen addresses)",
        );
    }
    let mut peers = Vec::new();
    for (i, text) in raw.peers.iter().enumerate() {
        match text.parse::<SocketAddr>() {
            Ok(a) if Some(a) == listen => ctx.err(
                p!["sync", "peers", i],
                format!("{a} is this host's own listen address"),
            ),
            Ok(a) if peers.contains(&a) => {
                ctx.err(p!["sync", "peers", i], format!("{a} is listed twice"))
            }
            Ok(a) => peers.push(a),
            Err(_) => ctx.err(
                p!["sync", "peers", i],
                format!("{text:?} is not ADDRESS:PORT"),
            ),
        }
    }
    let key_file = PathBuf::from(&raw.key_file);
    if !key_file.is_absolute() {
        ctx.err(
            p!["sync", "key_file"],
            "must be an absolute path (a file of hex keys, one per line)",
        );
    }
    let grace = ctx.positive_duration(p!["sync", "grace"], raw.grace.as_ref(), DEFAULT_GRACE);
    if grace > MAX_GRACE {
        ctx.err(
            p!["sync", "grace"],
            format!(
                "{} is longer than {}s: a client whose flow never arrives would hang instead of \
                 being reset",
                DurationText::from(grace),
                MAX_GRACE.as_secs()
            ),
        );
    }
    let refresh =
        ctx.positive_duration(p!["sync", "refresh"], raw.refresh.as_ref(), DEFAULT_REFRESH);
    let sync = Sync {
        listen: listen?,
        peers,
        key_file,
        grace,
        refresh,
    };
    let n = sync.hosts();
    let ports = u32::from(snat.last - snat.first) + 1;
    if ports / n < MIN_SHARE {
        ctx.err_near(
            p!["sync", "peers"],
            &[p!["datapath", "snat_ports"]],
            format!(
                "snat_ports {}-{} split between {n} hosts leaves fewer than {MIN_SHARE} ports each",
                snat.first, snat.last
            ),
        );
    }
    Some(sync)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn range(first: u16, last: u16) -> PortRange {
        PortRange { first, last }
    }

    #[test]
    fn shares_cover_the_range_without_overlap() {
        for n in 1..=5u16 {
            let r = range(40000, 44999);
            let parts: Vec<PortRange> = (0..n).map(|i| share(r, i, n)).collect();
            assert_eq!(parts[0].first, 40000);
            assert_eq!(parts[n as usize - 1].last, 44999);
            for w in parts.windows(2) {
                assert_eq!(w[0].last + 1, w[1].first, "{n} hosts: {parts:?}");
            }
        }
    }

    #[test]
    fn every_host_derives_the_same_split() {
        let a: SocketAddr = "198.18.0.21:7800".parse().unwrap();
        let b: SocketAddr = "198.18.0.22:7800".parse().unwrap();
        let mk = |listen, peer| Sync {
            listen,
            peers: vec![peer],
            key_file: "/k".into(),
            grace: DEFAULT_GRACE,
            refresh: DEFAULT_REFRESH,
        };
        let r = range(40000, 44999);
        assert_eq!(mk(a, b).snat_share(r), range(40000, 42499));
        assert_eq!(mk(b, a).snat_share(r), range(42500, 44999));
    }
}
