//! keepalived `vrrp_instance` → `[[vrrp]]`: the same keys where pgrouter has them, a warning
//! for every other one, and keepalived's `track_script`s replaced by pgrouter's own tracks
//! (`xdp-attached`, `patroni:<cluster>`). Writes `config::vrrp::RawInstance`, the schema
//! `config` reads. Pure, like the rest of the translation.
use std::net::IpAddr;
use std::time::Duration;

use super::keepalived;
use super::plan::{Plan, Sink};
use super::translate::{
    PATRONI_TRACK_WEIGHT, PLACEHOLDER_SRC, PLACEHOLDER_VIP, fmt_duration, sanitize,
};
use super::{Place, Source};
use crate::config::units::DurationText;
use crate::config::vrrp::{
    MAX_GARP_MASTER_REPEAT, MAX_TRACK_WEIGHT, MAX_VIPS, RawInstance, RawTrack,
};
use crate::config::{Cidr, StateHint};

/// keepalived `vrrp_instance`s → `[[vrrp]]` plans. Scripts become pgrouter's own tracks.
pub(super) fn vrrp_plans(
    k: &Source<'_>,
    file: &keepalived::File,
    plan: &mut Plan,
    sink: &mut Sink,
) {
    for (line, e) in &file.errors {
        sink.warn(k.path, *line, Place::Top, e.clone());
    }
    let scripts = keepalived::scripts(file);
    let global_version = match keepalived::global_vrrp_version(file) {
        Some((_, n @ (2 | 3))) => Some(n),
        Some((line, n)) => {
            sink.warn(
                k.path,
                line,
                Place::Top,
                format!("`vrrp_version {n}` in global_defs: not 2 or 3; ignored"),
            );
            None
        }
        None => None,
    };
    // keepalived.conf line of each instance written.
    let mut lines: Vec<usize> = Vec::new();
    for item in &file.items {
        match item.key() {
            "vrrp_instance" => {}
            "global_defs" | "vrrp_script" => continue,
            "include" => {
                sink.warn(
                    k.path,
                    item.line,
                    Place::Top,
                    format!(
                        "`include {}` is not followed; translate the included file's instances too",
                        item.arg(1).unwrap_or_default()
                    ),
                );
                continue;
            }
            "vrrp_sync_group" => {
                sink.warn(k.path, item.line, Place::Top, format!(
                    "`vrrp_sync_group {}`: pgrouter's instances move independently (put the VIPs that must move together into one instance)", item.arg(1).unwrap_or_default()));
                continue;
            }
            other => {
                sink.warn(
                    k.path,
                    item.line,
                    Place::Top,
                    format!(
                        "`{other}` {} is not translated (pgrouter only takes vrrp_instance)",
                        if item.block.is_some() {
                            "block"
                        } else {
                            "statement"
                        }
                    ),
                );
                continue;
            }
        }
        let vi = plan.config.vrrp.len();
        let place = Place::Vrrp(vi);
        let first_warning = sink.warnings.len();
        let mut v = RawInstance {
            name: sanitize(item.arg(1).unwrap_or("VI")),
            ..RawInstance::default()
        };
        sink.notes.above(
            place.clone(),
            format!(
                "keepalived `vrrp_instance {}` ({}:{})",
                item.arg(1).unwrap_or_default(),
                k.path,
                item.line
            ),
        );
        let mut version: Option<u8> = global_version;
        let mut advert: Option<(usize, f64)> = None;
        let mut auth: Option<(usize, String, Option<String>)> = None;
        let mut track_scripts: Vec<(usize, String, Option<i32>)> = Vec::new();
        for c in item.block.iter().flatten() {
            let a1 = c.arg(1).unwrap_or_default();
            let bad = |sink: &mut Sink, what: &str| {
                sink.warn(
                    k.path,
                    c.line,
                    place.clone(),
                    format!("`{} {a1}`: not {what}; ignored", c.key()),
                );
            };
            match c.key() {
                "interface" => v.interface = a1.to_owned(),
                "state" => match a1 {
                    "MASTER" => v.state = Some(StateHint::Master),
                    "BACKUP" => v.state = Some(StateHint::Backup),
                    _ => bad(sink, "MASTER or BACKUP"),
                },
                "virtual_router_id" => match a1.parse::<u8>() {
                    Ok(n) if n > 0 => v.virtual_router_id = n,
                    _ => bad(sink, "1..=255"),
                },
                "priority" => match a1.parse::<u8>() {
                    Ok(n) if n > 0 => v.priority = n,
                    _ => bad(sink, "1..=255"),
                },
                "advert_int" => match a1.parse::<f64>() {
                    Ok(x) if x > 0.0 && x.is_finite() => {
                        advert = Some((c.line, x));
                        v.advert_int = seconds(x);
                    }
                    _ => bad(sink, "a number of seconds"),
                },
                "version" => match a1.parse::<u8>() {
                    Ok(n @ (2 | 3)) => version = Some(n),
                    _ => bad(sink, "2 or 3"),
                },
                "nopreempt" => v.nopreempt = true,
                "preempt" => v.nopreempt = false,
                "preempt_delay" => match a1.parse::<f64>() {
                    Ok(x) if x >= 0.0 => v.preempt_delay = Some(seconds(x)),
                    _ => bad(sink, "a number of seconds"),
                },
                "authentication" => {
                    let mut t = String::from("PASS");
                    let mut p = None;
                    for a in c.block.iter().flatten() {
                        match a.key() {
                            "auth_type" => t = a.arg(1).unwrap_or_default().to_owned(),
                            "auth_pass" => p = a.arg(1).map(str::to_owned),
                            _ => {}
                        }
                    }
                    auth = Some((c.line, t, p));
                }
                "virtual_ipaddress" => {
                    for a in c.block.iter().flatten() {
                        let addr = a.key();
                        let ok = addr.split('/').next().is_some_and(|h| h.parse::<IpAddr>().is_ok());
                        if !ok {
                            sink.warn(k.path, a.line, place.clone(), format!("virtual_ipaddress {addr:?} is not an address; left out"));
                            continue;
                        }
                        // What `[[vrrp]]` accepts: the config's own parser, one family (the
                        // first address's), at most 20 (RFC 5798).
                        let cidr = match addr.parse::<Cidr>() {
                            Ok(c) => c,
                            Err(e) => {
                                sink.warn(k.path, a.line, place.clone(), format!("virtual_ipaddress {addr}: {e}; left out"));
                                continue;
                            }
                        };
                        let first_v6 = v.virtual_ipaddress.first().and_then(|f| f.parse::<Cidr>().ok()).map(|f| f.addr.is_ipv6());
                        if first_v6.is_some_and(|f6| f6 != cidr.addr.is_ipv6()) {
                            sink.warn(k.path, a.line, place.clone(), format!(
                                "virtual_ipaddress {addr}: another address family than the instance's first VIP; pgrouter runs one family per instance: left out (give it an instance of its own)"));
                            continue;
                        }
                        if v.virtual_ipaddress.len() >= MAX_VIPS {
                            sink.warn(k.path, a.line, place.clone(), format!(
                                "virtual_ipaddress {addr}: more than {MAX_VIPS} addresses (a VRRP advert carries {MAX_VIPS}); left out"));
                            continue;
                        }
                        let mut i = 1;
                        while let Some(word) = a.arg(i) {
                            match word {
                                "dev" => {
                                    let dev = a.arg(i + 1).unwrap_or_default();
                                    if !v.interface.is_empty() && dev != v.interface {
                                        sink.warn(k.path, a.line, place.clone(), format!(
                                            "{addr} is put on `dev {dev}`, not on the instance's interface {}; pgrouter puts every VIP on the instance's interface", v.interface));
                                    }
                                    i += 2;
                                }
                                "label" | "brd" | "scope" | "broadcast" => {
                                    sink.warn(k.path, a.line, place.clone(), format!(
                                        "{addr}: `{word} {}` is not translated", a.arg(i + 1).unwrap_or_default()));
                                    i += 2;
                                }
                                w => {
                                    sink.warn(k.path, a.line, place.clone(), format!("{addr}: `{w}` is not translated"));
                                    i += 1;
                                }
                            }
                        }
                        v.virtual_ipaddress.push(addr.to_owned());
                    }
                }
                "unicast_src_ip" => match a1.parse::<IpAddr>() {
                    Ok(ip) => v.unicast_src_ip = Some(ip),
                    Err(_) => bad(sink, "an IP address"),
                },
                "unicast_peer" => {
                    for a in c.block.iter().flatten() {
                        match a.key().parse::<IpAddr>() {
                            Ok(ip) => v.unicast_peer.push(ip),
                            Err(_) => {
                                sink.warn(k.path, a.line, place.clone(), format!("unicast_peer {:?} is not an IP address; left out", a.key()));
                                continue;
                            }
                        }
                        if a.words.len() > 1 {
                            sink.warn(k.path, a.line, place.clone(), format!("unicast_peer {}: `{}` is not translated", a.key(), a.args().join(" ")));
                        }
                    }
                }
                "track_script" => {
                    for a in c.block.iter().flatten() {
                        let w = match (a.arg(1), a.arg(2)) {
                            (Some("weight"), Some(n)) => n.parse().ok(),
                            _ => None,
                        };
                        track_scripts.push((a.line, a.key().to_owned(), w));
                    }
                }
                "garp_master_delay" => match a1.parse::<f64>() {
                    Ok(x) if x >= 0.0 => v.garp_master_delay = seconds(x),
                    _ => bad(sink, "a number of seconds"),
                },
                "garp_master_repeat" => match a1.parse::<u32>() {
                    Ok(n) if n > MAX_GARP_MASTER_REPEAT => {
                        sink.warn(k.path, c.line, place.clone(), format!(
                            "`garp_master_repeat {n}`: pgrouter sends at most {MAX_GARP_MASTER_REPEAT} per burst; set to {MAX_GARP_MASTER_REPEAT}"));
                        v.garp_master_repeat = MAX_GARP_MASTER_REPEAT;
                    }
                    Ok(n) => v.garp_master_repeat = n,
                    Err(_) => bad(sink, "a count"),
                },
                "garp_master_refresh" => v.garp_master_refresh = a1.parse::<f64>().ok().filter(|x| *x > 0.0).map(seconds),
                "notify_master" => v.notify_master = Some(c.args().join(" ")),
                "notify_backup" => v.notify_backup = Some(c.args().join(" ")),
                "notify_fault" => v.notify_fault = Some(c.args().join(" ")),
                "track_interface" => sink.warn(k.path, c.line, place.clone(),
                    "track_interface: pgrouter watches only the instance's own interface carrier (FAULT when it is down); other interfaces are not tracked"),
                "virtual_ipaddress_excluded" | "virtual_routes" | "virtual_rules" => sink.warn(k.path, c.line, place.clone(), format!(
                    "`{}` is not translated; add those addresses/routes outside pgrouter", c.key())),
                "smtp_alert" | "dont_track_primary" | "garp_master_refresh_repeat" | "notify_stop" | "notify" | "use_vmac" | "vmac_xmit_base" | "native_ipv6" | "accept" | "no_accept" | "lvs_sync_daemon_interface" | "debug" => {
                    sink.warn(k.path, c.line, place.clone(), format!("`{}` is not translated", c.words.join(" ")));
                }
                other => sink.warn(k.path, c.line, place.clone(), format!("`{other}` is not translated")),
            }
        }
        if v.interface.is_empty() {
            sink.warn(
                k.path,
                item.line,
                place.clone(),
                "no `interface`; set one (placeholder eth0)",
            );
            v.interface = "eth0".into();
        }
        if v.virtual_router_id == 0 {
            sink.warn(
                k.path,
                item.line,
                place.clone(),
                "no `virtual_router_id`; set the one the other hosts use (placeholder 51)",
            );
            v.virtual_router_id = 51;
        }
        if v.virtual_ipaddress.is_empty() {
            sink.warn(
                k.path,
                item.line,
                place.clone(),
                format!("no virtual_ipaddress; replace the placeholder {PLACEHOLDER_VIP}"),
            );
            v.virtual_ipaddress.push(PLACEHOLDER_VIP.to_string());
        }
        let v6 = v
            .virtual_ipaddress
            .first()
            .and_then(|a| a.split('/').next()?.parse::<IpAddr>().ok())
            .is_some_and(|ip| ip.is_ipv6());
        // keepalived's default is VRRPv2 for IPv4 (vrrp_version), v3 for IPv6.
        v.version = if v6 { 3 } else { version.unwrap_or(2) };
        if let Some((aline, x)) = advert {
            fit_advert_int(k, aline, &place, &mut v, x, sink);
        }
        if let Some(src) = v.unicast_src_ip
            && src.is_ipv6() != v6
        {
            sink.warn(
                k.path,
                item.line,
                place.clone(),
                format!("unicast_src_ip {src} is not of the VIPs' address family; left out"),
            );
            v.unicast_src_ip = None;
        }
        let mut peers = std::mem::take(&mut v.unicast_peer);
        peers.retain(|p| {
            let same = p.is_ipv6() == v6;
            if !same {
                sink.warn(
                    k.path,
                    item.line,
                    place.clone(),
                    format!("unicast_peer {p} is not of the VIPs' address family; left out"),
                );
            }
            same
        });
        v.unicast_peer = peers;
        if let Some((aline, t, pass)) = auth {
            match (t.as_str(), pass, v.version) {
                ("PASS", Some(p), 2) => {
                    if p.len() > 8 {
                        sink.warn(k.path, aline, place.clone(), "auth_pass is longer than 8 bytes; keepalived sends only the first 8, and so does this translation");
                    }
                    // The first 8 bytes, on a character boundary.
                    let mut cut = p.len().min(8);
                    while !p.is_char_boundary(cut) {
                        cut -= 1;
                    }
                    v.auth_pass = Some(p[..cut].to_owned());
                }
                ("PASS", _, 3) => sink.warn(k.path, aline, place.clone(),
                    "authentication with VRRPv3: keepalived ignores it (RFC 5798 has none); dropped"),
                ("AH", _, _) => sink.warn(k.path, aline, place.clone(),
                    "auth_type AH is not supported by pgrouter; dropped — every peer must then run without authentication"),
                (_, None, _) => sink.warn(k.path, aline, place.clone(), "authentication without auth_pass; dropped"),
                (other, _, _) => sink.warn(k.path, aline, place.clone(), format!("auth_type {other} is not supported; dropped")),
            }
        }
        if !v.unicast_peer.is_empty() && v.unicast_src_ip.is_none() {
            let ph: IpAddr = if v6 {
                PLACEHOLDER_SRC6.into()
            } else {
                PLACEHOLDER_SRC.into()
            };
            sink.warn(k.path, item.line, place.clone(), format!(
                "unicast_peer without unicast_src_ip: keepalived uses the interface's address, pgrouter needs it written down; replace the placeholder {ph}"));
            v.unicast_src_ip = Some(ph);
        }
        if v.priority == 255 && v.state == Some(StateHint::Backup) {
            sink.warn(k.path, item.line, place.clone(), "priority 255 makes this host the address owner (MASTER at once), whatever `state BACKUP` says");
        }
        // Scripts: pgrouter tracks the data path and Patroni itself.
        if let [(tline, tname, tweight), others @ ..] = track_scripts.as_slice() {
            let script = scripts.iter().find(|s| &s.name == tname);
            let mut weight = tweight.or(script.and_then(|s| s.weight)).unwrap_or(0);
            if weight.abs() > MAX_TRACK_WEIGHT {
                let clamped = weight.clamp(-MAX_TRACK_WEIGHT, MAX_TRACK_WEIGHT);
                sink.warn(k.path, *tline, place.clone(), format!(
                    "track_script {tname}: weight {weight} is outside -{MAX_TRACK_WEIGHT}..={MAX_TRACK_WEIGHT}; set to {clamped}"));
                weight = clamped;
            }
            let what = script
                .and_then(|s| s.script.clone())
                .unwrap_or_else(|| "(vrrp_script not found)".into());
            sink.warn(k.path, *tline, place.clone(), format!(
                "track_script {tname} (`{what}`, weight {weight}) is not run: pgrouter tracks its own health instead — `xdp-attached` and `patroni:<cluster>` with {}",
                if weight == 0 {
                    format!("weight 0 for the data path (FAULT while failing, as in keepalived) and {PATRONI_TRACK_WEIGHT} for Patroni (FAULT there would drop the VIP on both hosts while a failover leaves the cluster without a leader)")
                } else {
                    "the same weight".to_owned()
                }));
            for (line, name, _) in others {
                sink.warn(k.path, *line, place.clone(), format!(
                    "track_script {name} is not run either; pgrouter's two built-in tracks replace every script"));
            }
            v.track.push(track(XDP_TRACK, weight));
            let pw = if weight == 0 {
                PATRONI_TRACK_WEIGHT
            } else {
                weight
            };
            v.track.push(track(PATRONI_TRACKS, pw));
        } else {
            sink.notes.above(place.clone(),
                "no track_script: pgrouter still tracks its data path (FAULT while the XDP program is not attached) and Patroni (lower priority while this host reaches no node's Patroni API)",
            );
            v.track.push(track(XDP_TRACK, 0));
            v.track.push(track(PATRONI_TRACKS, PATRONI_TRACK_WEIGHT));
        }
        // `[[vrrp]]` needs one instance per name and per VRID on an interface (and family):
        // a second one is left out before its VIPs become listeners.
        let family = |o: &RawInstance| {
            o.virtual_ipaddress
                .first()
                .and_then(|a| a.parse::<Cidr>().ok())
                .is_some_and(|c| c.addr.is_ipv6())
        };
        let clash = plan.config.vrrp.iter().zip(&lines).find_map(|(o, l)| {
            if o.name == v.name {
                Some(format!(
                    "its name is the one of the vrrp_instance at line {l}"
                ))
            } else if o.interface == v.interface
                && o.virtual_router_id == v.virtual_router_id
                && family(o) == v6
            {
                Some(format!(
                    "virtual_router_id {} on {} is already the one of vrrp_instance {} (line {l})",
                    v.virtual_router_id, v.interface, o.name
                ))
            } else {
                None
            }
        });
        if let Some(why) = clash {
            // Not written: what was said about it goes to the top, its notes with the text.
            for w in sink.warnings.iter_mut().skip(first_warning) {
                if w.place == place {
                    w.place = Place::Top;
                }
            }
            sink.notes.remap(|p| (p != &place).then(|| p.clone()));
            sink.warn(k.path, item.line, Place::Top, format!(
                "vrrp_instance {}: {why}; pgrouter needs one instance per name and per VRID on an interface: left out (commented out at the end of the file)",
                item.arg(1).unwrap_or_default()));
            #[derive(serde::Serialize)]
            struct One<'a> {
                vrrp: [&'a RawInstance; 1],
            }
            let shown = RawInstance {
                track: Vec::new(),
                ..v
            };
            if let Ok(text) = toml::to_string(&One { vrrp: [&shown] }) {
                sink.notes.left_out(&format!(
                    "# keepalived `vrrp_instance {}` ({}:{}); tracks as for the others:\n{text}",
                    item.arg(1).unwrap_or_default(),
                    k.path,
                    item.line
                ));
            }
            continue;
        }
        if !plan.config.datapath.interfaces.contains(&v.interface) {
            plan.config.datapath.interfaces.push(v.interface.clone());
        }
        plan.config.vrrp.push(v);
        lines.push(item.line);
    }
    if plan.config.vrrp.is_empty() {
        sink.warn(
            k.path,
            1,
            Place::Top,
            "no vrrp_instance found; no [[vrrp]] written",
        );
    }
}

/// RFC 3849 documentation prefix: the IPv6 counterpart of `PLACEHOLDER_SRC`.
const PLACEHOLDER_SRC6: std::net::Ipv6Addr =
    std::net::Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0xfe);

/// `advert_int` as the version can carry it: VRRPv2 whole seconds 1..=255, VRRPv3
/// centiseconds 10ms..=40.95s; anything else is rounded into that range, with a warning.
fn fit_advert_int(
    k: &Source<'_>,
    line: usize,
    place: &Place,
    v: &mut RawInstance,
    x: f64,
    sink: &mut Sink,
) {
    let (fitted, what) = if v.version == 2 {
        (
            x.round().clamp(1.0, 255.0),
            "VRRPv2 carries whole seconds 1..=255",
        )
    } else {
        (
            (x * 100.0).round().clamp(1.0, 4095.0) / 100.0,
            "VRRPv3 carries centiseconds, 10ms..=40.95s",
        )
    };
    if (fitted * 1e6).round() != (x * 1e6).round() {
        v.advert_int = seconds(fitted);
        sink.warn(
            k.path,
            line,
            place.clone(),
            format!(
                "advert_int {x}: {what}; set to {} — the other hosts must use the same",
                fmt_duration(Duration::from_micros((fitted * 1e6).round() as u64))
            ),
        );
    }
}

/// pgrouter's data-path track (FAULT while the XDP program is not attached).
const XDP_TRACK: &str = "xdp-attached";
/// Stands for `patroni:<cluster>`, one per translated cluster; `translate::plan` expands it
/// once the clusters are known.
pub(super) const PATRONI_TRACKS: &str = "patroni:";

fn track(name: &str, weight: i32) -> RawTrack {
    RawTrack {
        name: name.to_owned(),
        weight,
        fatal: false,
    }
}

/// keepalived's seconds (`0.5`) as a duration the config reads (`500ms`).
fn seconds(x: f64) -> DurationText {
    fmt_duration(Duration::from_micros((x * 1e6).round() as u64)).into()
}
