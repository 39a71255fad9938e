//! The properties every fuzz target checks, as plain functions: `Err` names the property that
//! failed. The targets panic on `Err` (libFuzzer records the input); `tests/corpus.rs` replays
//! the committed corpus and the regression inputs through the same functions on stable.
use std::net::IpAddr;
use std::time::Duration;

use pgrouter::config::{self, Checks, Config, StaticRole};
use pgrouter::dataplane::{Applied, plan};
use pgrouter::health::patroni;
use pgrouter::health::verdict::CheckKind;
use pgrouter::import::{self, Source, haproxy};
use pgrouter::vrrp::packet::{self, Auth, DecodeError, IpInfo, Local, Packet, Version};

pub type Outcome = Result<(), String>;

/// Config text: a rejected file names line, column and field for every problem; an accepted
/// file plans into data-path maps (with every node up in its likely role) and planning the same
/// listeners again changes nothing.
pub fn config_text(text: &str) -> Outcome {
    match config::parse(text, "fuzz.toml") {
        Err(e) => {
            if e.diagnostics.is_empty() {
                return Err("rejected without a diagnostic".into());
            }
            for d in &e.diagnostics {
                if d.line == 0 || d.col == 0 || d.field.is_empty() || d.message.is_empty() {
                    return Err(format!("diagnostic without position or field: {d:?}"));
                }
            }
            Ok(())
        }
        Ok(cfg) => config_applies(&cfg),
    }
}

/// An accepted config is applied without error: planning its listeners (every cluster as if
/// all its nodes answered, the first as primary) succeeds, and re-planning is a no-op.
pub fn config_applies(cfg: &Config) -> Outcome {
    let mut desired = Vec::new();
    for c in &cfg.clusters {
        let mut c = c.clone();
        if c.checks == Checks::Patroni {
            for (i, n) in c.nodes.iter_mut().enumerate() {
                n.role = Some(if i == 0 {
                    StaticRole::Primary
                } else {
                    StaticRole::Replica
                });
            }
        }
        desired.extend(pgrouter::health::static_snapshot(&c).listeners);
    }
    let snat = (cfg.datapath.snat_ports.first, cfg.datapath.snat_ports.last);
    let (_, applied) = plan(&desired, &Applied::default(), snat, 1)
        .map_err(|e| format!("accepted config does not plan: {e}"))?;
    let (again, _) = plan(&desired, &applied, snat, 2)
        .map_err(|e| format!("re-planning an applied config fails: {e}"))?;
    if !again.is_empty() {
        return Err(format!(
            "re-planning the same listeners changes maps: {again:?}"
        ));
    }
    Ok(())
}

/// `pgrouter import`: what it writes passes `check-config` (and then applies), and every
/// warning is in the output as a comment.
pub fn import_texts(haproxy_text: &str, keepalived_text: Option<&str>) -> Outcome {
    let h = Source {
        path: "haproxy.cfg",
        text: haproxy_text,
    };
    let k = keepalived_text.map(|text| Source {
        path: "keepalived.conf",
        text,
    });
    let Ok(out) = import::import(&h, k.as_ref()) else {
        return Ok(()); // nothing usable: refused with a message, which is allowed
    };
    let cfg = config::parse(&out.toml, "imported.toml").map_err(|e| {
        format!(
            "imported config fails check-config:\n{e}\n---\n{}",
            out.toml
        )
    })?;
    for w in &out.warnings {
        let line = format!("# WARNING: {w}");
        if !out.toml.contains(&line) {
            return Err(format!("warning missing from the output: {w}"));
        }
    }
    config_applies(&cfg)
}

/// Splits one fuzz input into haproxy.cfg and (after the first NUL) keepalived.conf.
pub fn split_import_input(data: &[u8]) -> (String, Option<String>) {
    match data.iter().position(|b| *b == 0) {
        Some(i) => (
            String::from_utf8_lossy(&data[..i]).into_owned(),
            Some(String::from_utf8_lossy(&data[i + 1..]).into_owned()),
        ),
        None => (String::from_utf8_lossy(data).into_owned(), None),
    }
}

/// VRRP receive path on arbitrary bytes: decoding never panics, a decoded packet re-encodes to
/// the same bytes' meaning (decode(encode(p)) == p), and `check_local` accepts a packet exactly
/// when it matches the instance it is compared with.
pub fn vrrp_bytes(buf: &[u8], ip: &IpInfo) -> Outcome {
    if let Ok((info, payload)) = packet::split_ipv4(buf) {
        vrrp_decoded(payload, &info)?;
    }
    if let Ok((info, payload)) = packet::split_ipv6(buf) {
        vrrp_decoded(payload, &info)?;
    }
    vrrp_decoded(buf, ip)
}

fn vrrp_decoded(buf: &[u8], ip: &IpInfo) -> Outcome {
    let Ok(p) = Packet::decode(buf, ip) else {
        return Ok(());
    };
    if p.addrs.iter().any(|a| a.is_ipv6() != ip.src.is_ipv6()) {
        return Err(format!(
            "addresses of another family than the header: {p:?}"
        ));
    }
    if p.version == Version::V3 && p.auth != Auth::None {
        return Err("v3 packet with authentication".into());
    }
    if p.len() != buf.len() {
        return Err(format!("len() {} for {} bytes", p.len(), buf.len()));
    }
    vrrp_round_trip(&p, ip)?;
    // Against an instance built from the packet itself every local check passes.
    let local = Local {
        version: p.version,
        vrid: p.vrid,
        adver_int_cs: p.adver_int_cs,
        auth: p.auth,
        unicast_peers: &[],
    };
    packet::check_local(&p, ip.src, &local).map_err(|e| format!("own instance refused: {e}"))?;
    let other = Local {
        vrid: p.vrid.wrapping_add(1),
        ..local.clone()
    };
    match packet::check_local(&p, ip.src, &other) {
        Err(DecodeError::VridMismatch(_)) => {}
        r => return Err(format!("other VRID not refused: {r:?}")),
    }
    let peers = [unspecified_like(ip.src)];
    let unicast = Local {
        unicast_peers: &peers,
        ..local
    };
    match packet::check_local(&p, ip.src, &unicast) {
        Err(DecodeError::UnknownPeer(_)) if ip.src != peers[0] => {}
        Ok(()) if ip.src == peers[0] => {}
        r => return Err(format!("unknown unicast peer not refused: {r:?}")),
    }
    Ok(())
}

fn unspecified_like(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED),
        IpAddr::V6(_) => IpAddr::V6(std::net::Ipv6Addr::UNSPECIFIED),
    }
}

/// decode(encode(p)) == p for every packet the encoder can represent; `ip` supplies the
/// addresses of the pseudo-header and the family.
pub fn vrrp_round_trip(p: &Packet, ip: &IpInfo) -> Outcome {
    let bytes = p.encode(ip.src, ip.dst);
    if bytes.len() != p.len() {
        return Err(format!(
            "encoded {} bytes, len() says {}",
            bytes.len(),
            p.len()
        ));
    }
    let info = IpInfo {
        ttl: packet::TTL,
        ..*ip
    };
    match Packet::decode(&bytes, &info) {
        Ok(q) if q == *p => Ok(()),
        r => Err(format!("decode(encode(p)) = {r:?}, p = {p:?}")),
    }
}

/// Whether the encoder can represent `p` exactly: one family matching the header's, at most
/// 255 addresses, a v3 interval within 12 bits, a v2 interval of whole seconds (1..=255), v2
/// only over IPv4, v3 without authentication, VRID not 0.
pub fn vrrp_representable(p: &Packet, ip: &IpInfo) -> bool {
    let v6 = ip.src.is_ipv6();
    let family_ok = p.addrs.iter().all(|a| a.is_ipv6() == v6) && ip.dst.is_ipv6() == v6;
    let int_ok = match p.version {
        Version::V3 => p.adver_int_cs <= packet::MAX_ADVER_INT_CS && p.auth == Auth::None,
        Version::V2 => {
            !v6 && p.adver_int_cs.is_multiple_of(100) && (100..=25_500).contains(&p.adver_int_cs)
        }
    };
    family_ok && int_ok && p.vrid != 0 && p.addrs.len() <= 255
}

/// Patroni's answer judge: a verdict is one of the defined ones and consistent: `ok` only with
/// HTTP 200 and a parsed body, `not_primary` only for the primary check and never with `ok`,
/// a primary passes only with role primary/master and state running, a reason always given.
pub fn patroni_answer(kind: &CheckKind, status: u16, body: &[u8]) -> Outcome {
    let j = patroni::judge(kind, status, body);
    if j.reason.is_empty() {
        return Err("judgement without a reason".into());
    }
    if j.ok && j.not_primary {
        return Err("both ok and not_primary".into());
    }
    if j.not_primary && *kind != CheckKind::Primary {
        return Err(format!("not_primary for {kind}"));
    }
    if j.ok {
        let Some(info) = &j.info else {
            return Err("ok without a parsed body".into());
        };
        if status != 200 || !info.is_running() {
            return Err(format!("ok with HTTP {status} and {info:?}"));
        }
        let role_ok = match kind {
            CheckKind::Primary => info.is_primary_role(),
            CheckKind::Replica { .. } => info.role.as_deref() == Some("replica"),
            CheckKind::ReadOnly { .. } => true,
        };
        if !role_ok {
            return Err(format!("{kind} passed with role {:?}", info.role));
        }
    }
    if j.info.is_some() != patroni::parse_body(body).is_ok() {
        return Err("info present exactly when the body parses".into());
    }
    Ok(())
}

/// Durations, sizes and port ranges: parsing never panics; a parsed duration prints back to
/// text that parses to the same value (to the microsecond, the grammar's smallest unit); the
/// size parser's result is whole bytes within i64; a port range parses to its two numbers.
pub fn units_text(s: &str) -> Outcome {
    if let Ok(d) = config::units::parse_duration(s) {
        let text = config::units::duration_text(d);
        let back = config::units::parse_duration(&text)
            .map_err(|e| format!("duration_text({d:?}) = {text:?} does not parse: {e}"))?;
        let truncated = Duration::from_micros(u64::try_from(d.as_micros()).unwrap_or(u64::MAX));
        if back != truncated && d.as_micros() <= u128::from(u64::MAX) {
            return Err(format!("{s:?} -> {d:?} -> {text:?} -> {back:?}"));
        }
    }
    if let Some(b) = config::units::patroni_parse_bytes(s) {
        // Patroni's own parser gives the same number for the value printed back.
        let again = config::units::patroni_parse_bytes(&b.to_string());
        if again != Some(b) {
            return Err(format!("{s:?} -> {b} -> {again:?}"));
        }
    }
    if let Ok((a, b)) = config::units::parse_port_range(s) {
        let again = config::units::parse_port_range(&format!("{a}-{b}"));
        if again != Ok((a, b)) {
            return Err(format!("{s:?} -> {a}-{b} -> {again:?}"));
        }
    }
    if let Ok(d) = haproxy::parse_time(s) {
        // HAProxy's grammar: unit-less is milliseconds, so whole milliseconds print back bare.
        if d.as_nanos() % 1_000_000 == 0 && d.as_millis() <= u128::from(u64::MAX) {
            let ms = d.as_millis();
            let again = haproxy::parse_time(&ms.to_string());
            if again != Ok(d) {
                return Err(format!("haproxy {s:?} -> {d:?} -> {ms} -> {again:?}"));
            }
        }
    }
    Ok(())
}
