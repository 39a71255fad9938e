//! HAProxy's check timing (`inter`, `fastinter`, `downinter`, `fall`, `rise` on the servers,
//! `timeout check` on the pool) → `[cluster.health]`, within the limits `config` accepts.
use std::time::Duration;

use super::proxies::Proxy;
use super::{Inputs, Place, Sink, Source, fmt_duration};
use crate::config::{MAX_RISE_FALL, MIN_CHECK_PERIOD, raw};

// HAProxy's defaults (configuration manual, `inter`, `fall`, `rise`).
const HAPROXY_INTER: Duration = Duration::from_secs(2);
const HAPROXY_FALL: u32 = 3;
const HAPROXY_RISE: u32 = 2;

/// One pool's check timing, as HAProxy applies it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Timing {
    interval: Duration,
    fastinter: Duration,
    downinter: Duration,
    timeout: Duration,
    fall: u32,
    rise: u32,
    /// Whether `timeout` came from `timeout check` (else from `inter`).
    timeout_from_check: bool,
}

const HAPROXY_DEFAULT: Timing = Timing {
    interval: HAPROXY_INTER,
    fastinter: HAPROXY_INTER,
    downinter: HAPROXY_INTER,
    timeout: HAPROXY_INTER,
    fall: HAPROXY_FALL,
    rise: HAPROXY_RISE,
    timeout_from_check: false,
};

impl Timing {
    fn to_raw(self) -> raw::Health {
        raw::Health {
            interval: fmt_duration(self.interval).into(),
            fastinter: fmt_duration(self.fastinter).into(),
            downinter: fmt_duration(self.downinter).into(),
            timeout: fmt_duration(self.timeout).into(),
            fall: self.fall,
            rise: self.rise,
            observe_refusals: raw::Health::default().observe_refusals,
        }
    }

    fn describe(&self) -> String {
        format!(
            "inter {} fastinter {} downinter {} fall {} rise {}",
            fmt_duration(self.interval),
            fmt_duration(self.fastinter),
            fmt_duration(self.downinter),
            self.fall,
            self.rise
        )
    }
}

/// HAProxy's timing when no server says otherwise.
pub(super) fn haproxy_default() -> raw::Health {
    HAPROXY_DEFAULT.to_raw()
}

/// Health timing per pool; the cluster takes the first listener's, with a warning for others.
pub(super) fn cluster_health(
    inp: &Inputs<'_>,
    sink: &mut Sink,
    ci: usize,
    route_ids: &[usize],
    cluster: &mut raw::Cluster,
) {
    let Inputs { hsrc, .. } = *inp;
    let mut timings: Vec<(String, usize, Timing)> = Vec::new();
    for &ri in route_ids {
        let Some((_, _, pool)) = inp.route(ri) else {
            continue;
        };
        if let Some(h) = pool_health(pool, hsrc, ci, sink) {
            timings.push((pool.name.clone(), pool.line, h));
        }
    }
    let chosen = timings.first().map_or(HAPROXY_DEFAULT, |(_, _, h)| *h);
    cluster.health = chosen.to_raw();
    sink.notes.after(
        Place::Cluster(ci),
        "health.timeout",
        if chosen.timeout_from_check {
            "timeout check"
        } else {
            "no `timeout check`: HAProxy then bounds a check by inter"
        },
    );
    let Some((first, _, _)) = timings.first() else {
        return;
    };
    for (name, line, h) in timings.iter().skip(1) {
        if *h != chosen {
            sink.warn(hsrc.path, *line, Place::Cluster(ci), format!(
                    "`{name}` checks with different timing ({}) than `{first}` ({}); pgrouter checks a cluster with one timing: `{first}`'s",
                    h.describe(), chosen.describe()));
        }
    }
}

/// HAProxy's check timing of a pool (from its servers, `default-server` applied).
fn pool_health(pool: &Proxy, src: &Source<'_>, ci: usize, sink: &mut Sink) -> Option<Timing> {
    let mut seen: Vec<(usize, Timing)> = Vec::new();
    for s in &pool.servers {
        let o = &s.opts;
        let inter = o.inter.unwrap_or(HAPROXY_INTER);
        let h = Timing {
            interval: inter,
            fastinter: o.fastinter.unwrap_or(inter),
            downinter: o.downinter.unwrap_or(inter),
            timeout: pool.timeout_check.unwrap_or(inter),
            fall: o.fall.unwrap_or(HAPROXY_FALL),
            rise: o.rise.unwrap_or(HAPROXY_RISE),
            timeout_from_check: pool.timeout_check.is_some(),
        };
        seen.push((s.line, h));
    }
    let (_, first) = *seen.first()?;
    if let Some((line, h)) = seen.iter().find(|(_, h)| *h != first) {
        sink.warn(src.path, *line, Place::Cluster(ci), format!(
            "servers of `{}` check with different timing ({} vs {}); pgrouter uses one per cluster, the first server's",
            pool.name, h.describe(), first.describe()));
    }
    let mut h = first;
    for (what, d) in [
        ("inter", &mut h.interval),
        ("fastinter", &mut h.fastinter),
        ("downinter", &mut h.downinter),
        ("timeout check", &mut h.timeout),
    ] {
        if *d < MIN_CHECK_PERIOD {
            sink.warn(
                src.path,
                pool.line,
                Place::Cluster(ci),
                format!(
                    "`{what} {}` is below pgrouter's {} minimum; raised to {}",
                    fmt_duration(*d),
                    fmt_duration(MIN_CHECK_PERIOD),
                    fmt_duration(MIN_CHECK_PERIOD)
                ),
            );
            *d = MIN_CHECK_PERIOD;
        }
    }
    if h.fall == 0 || h.rise == 0 || h.fall > MAX_RISE_FALL || h.rise > MAX_RISE_FALL {
        sink.warn(
            src.path,
            pool.line,
            Place::Cluster(ci),
            format!(
                "fall {} / rise {} outside pgrouter's 1..={MAX_RISE_FALL}; clamped",
                h.fall, h.rise
            ),
        );
        h.fall = h.fall.clamp(1, MAX_RISE_FALL);
        h.rise = h.rise.clamp(1, MAX_RISE_FALL);
    }
    Some(h)
}
