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
use crate::config::StateHint;
use crate::config::units::DurationText;
use crate::config::vrrp::{RawInstance, RawTrack};

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
    let global_version = keepalived::global_vrrp_version(file);
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
        let mut version: Option<u8> = global_version.map(|(_, n)| n);
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
                    Ok(x) if x > 0.0 => v.advert_int = seconds(x),
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
                        let mut i = 1;
                        while i < a.words.len() {
                            match a.words[i].as_str() {
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
                                        "{addr}: `{} {}` is not translated", a.words[i], a.arg(i + 1).unwrap_or_default()));
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
                            sink.warn(k.path, a.line, place.clone(), format!("unicast_peer {}: `{}` is not translated", a.key(), a.words[1..].join(" ")));
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
                "garp_master_repeat" => match a1.parse() {
                    Ok(n) => v.garp_master_repeat = n,
                    Err(_) => bad(sink, "a count"),
                },
                "garp_master_refresh" => v.garp_master_refresh = a1.parse::<f64>().ok().filter(|x| *x > 0.0).map(seconds),
                "notify_master" => v.notify_master = Some(c.words[1..].join(" ")),
                "notify_backup" => v.notify_backup = Some(c.words[1..].join(" ")),
                "notify_fault" => v.notify_fault = Some(c.words[1..].join(" ")),
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
        if let Some((aline, t, pass)) = auth {
            match (t.as_str(), pass, v.version) {
                ("PASS", Some(p), 2) => {
                    if p.len() > 8 {
                        sink.warn(k.path, aline, place.clone(), "auth_pass is longer than 8 bytes; keepalived sends only the first 8, and so does this translation");
                    }
                    v.auth_pass = Some(p.chars().take(8).collect());
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
            sink.warn(k.path, item.line, place.clone(), format!(
                "unicast_peer without unicast_src_ip: keepalived uses the interface's address, pgrouter needs it written down; replace the placeholder {PLACEHOLDER_SRC}"));
            v.unicast_src_ip = Some(PLACEHOLDER_SRC.into());
        }
        if v.priority == 255 && v.state == Some(StateHint::Backup) {
            sink.warn(k.path, item.line, place.clone(), "priority 255 makes this host the address owner (MASTER at once), whatever `state BACKUP` says");
        }
        // Scripts: pgrouter tracks the data path and Patroni itself.
        if !track_scripts.is_empty() {
            let (tline, tname, tweight) = &track_scripts[0];
            let script = scripts.iter().find(|s| &s.name == tname);
            let weight = tweight.or(script.and_then(|s| s.weight)).unwrap_or(0);
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
            for (line, name, _) in track_scripts.iter().skip(1) {
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
        if !plan.config.datapath.interfaces.contains(&v.interface) {
            plan.config.datapath.interfaces.push(v.interface.clone());
        }
        plan.config.vrrp.push(v);
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
