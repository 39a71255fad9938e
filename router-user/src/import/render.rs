//! A [`Plan`] → commented TOML. The config is serialised with `toml_edit` from pgrouter's own
//! types, then arranged for a reader: keys in the order docs/config.md explains them, defaults
//! that need no decision left out, and comments attached to the items — what a table is,
//! where an item came from ([`Notes`]), and every warning next to what it concerns.
use serde::Serialize;
use toml_edit::{Item, Table, Value};

use super::plan::{Notes, Plan, comment_text};
use super::{Place, Source, Warning};
use crate::config::raw;
use crate::config::units::DurationText;
use crate::config::vrrp::RawInstance;

/// Key order of each table; keys not listed follow in the order serde writes them.
const DATAPATH_KEYS: &[&str] = &["interfaces", "mode", "pin_path", "snat_ports"];
const LISTENER_KEYS: &[&str] = &[
    "name",
    "vip",
    "port",
    "kind",
    "fallback",
    "lag",
    "maxconn",
    "balance",
    "on_marked_down",
];

const VRRP_KEYS: &[&str] = &[
    "name",
    "interface",
    "state",
    "virtual_router_id",
    "priority",
    "advert_int",
    "version",
    "auth_pass",
    "nopreempt",
    "preempt_delay",
    "virtual_ipaddress",
    "unicast_src_ip",
    "unicast_peer",
    "garp_master_delay",
    "garp_master_repeat",
    "garp_master_refresh",
];

/// The whole output: header, `[datapath]`, `[control]`, clusters, VRRP instances.
pub fn render(
    plan: &Plan,
    hsrc: &Source<'_>,
    ksrc: Option<&Source<'_>>,
    warnings: &[Warning],
) -> Result<String, String> {
    let mut doc = toml_edit::ser::to_document(&plan.config)
        .map_err(|e| format!("cannot write the translated config: {e}"))?;
    for (_, item) in doc.as_table_mut().iter_mut() {
        expand(item);
    }
    let w = Warnings::new(warnings, &plan.config);
    let notes = &plan.notes;
    if !notes.left_out_items().is_empty() {
        let mut t = String::from(
            "\n# Left out: `pgrouter check-config` refuses these as translated (each has a WARNING \
             above); fix one and remove its `# ` to restore it.\n",
        );
        for item in notes.left_out_items() {
            t.push_str("#\n");
            t.push_str(item);
        }
        doc.set_trailing(t);
    }
    let root = doc.as_table_mut();

    if let Some(dp) = table(root, "datapath") {
        datapath(dp, &header(plan, hsrc, ksrc, warnings), &w, notes)?;
    }
    if let Some(control) = table(root, "control") {
        control.decor_mut().set_prefix("\n");
        after(
            control,
            "metrics",
            9,
            "Prometheus (HAProxy's stats page); \"\" disables",
        );
    }
    if let Some(Item::ArrayOfTables(clusters)) = root.get_mut("cluster") {
        for (ci, c) in clusters.iter_mut().enumerate() {
            cluster(c, ci, &w, notes)?;
        }
    }
    match root.get_mut("vrrp") {
        Some(Item::ArrayOfTables(list)) => {
            for (vi, v) in list.iter_mut().enumerate() {
                vrrp(v, vi, &w, notes)?;
            }
        }
        _ => {
            root.remove("vrrp");
        }
    }
    Ok(doc.to_string())
}

/// The warnings, written as `# WARNING:` lines at their place; a warning whose item is not
/// in the output (a listener left out, a node never written) goes to the nearest enclosing
/// place that is, so that none is lost.
struct Warnings<'a>(Vec<(Place, &'a Warning)>);

impl<'a> Warnings<'a> {
    fn new(warnings: &'a [Warning], cfg: &raw::File) -> Self {
        Self(
            warnings
                .iter()
                .map(|w| (written_place(&w.place, cfg), w))
                .collect(),
        )
    }

    fn at(&self, place: &Place) -> String {
        self.0
            .iter()
            .filter(|(p, _)| p == place)
            .map(|(_, w)| format!("# WARNING: {}\n", comment_text(&w.to_string())))
            .collect()
    }
}

/// `place`, or the nearest enclosing place the output has.
fn written_place(place: &Place, cfg: &raw::File) -> Place {
    let cluster = |c: usize| cfg.cluster.get(c);
    match place {
        Place::Top | Place::Datapath => place.clone(),
        Place::Cluster(c) if cluster(*c).is_some() => place.clone(),
        Place::Node(c, n) if cluster(*c).is_some_and(|x| *n < x.node.len()) => place.clone(),
        Place::Listener(c, l) if cluster(*c).is_some_and(|x| *l < x.listener.len()) => {
            place.clone()
        }
        Place::Node(c, _) | Place::Listener(c, _) if cluster(*c).is_some() => Place::Cluster(*c),
        Place::Vrrp(v) if *v < cfg.vrrp.len() => place.clone(),
        _ => Place::Top,
    }
}

/// The comment block the file starts with.
fn header(
    plan: &Plan,
    hsrc: &Source<'_>,
    ksrc: Option<&Source<'_>>,
    warnings: &[Warning],
) -> String {
    let mut o = format!(
        "# pgrouter configuration translated by `pgrouter import` from {}{}.\n\
         # Keys: docs/config.md; the mapping: docs/import.md. Check with `pgrouter check-config FILE`.\n",
        comment_text(hsrc.path),
        ksrc.map(|k| format!(" and {}", comment_text(k.path)))
            .unwrap_or_default()
    );
    if warnings.is_empty() {
        o.push_str("# No warnings: everything carried over.\n");
    } else {
        o.push_str(&format!(
            "# {} warning{}: search for \"WARNING:\" and decide each one before use.\n",
            warnings.len(),
            if warnings.len() == 1 { "" } else { "s" }
        ));
    }
    if !plan.dropped.is_empty() {
        o.push_str(
            "# Not translated, no meaning for pgrouter's XDP NAT (it keeps no proxy-side retries \
             or logs; sessions live in the conntrack map):\n",
        );
        for d in &plan.dropped {
            o.push_str(&format!("#   {}\n", comment_text(d)));
        }
    }
    o.push_str(&Warnings::new(warnings, &plan.config).at(&Place::Top));
    o
}

fn datapath(dp: &mut Table, header: &str, w: &Warnings<'_>, notes: &Notes) -> Result<(), String> {
    dp.decor_mut().set_prefix(format!("{header}\n"));
    drop_defaults(dp, &raw::Datapath::default(), &["conntrack_entries"])?;
    order(dp, DATAPATH_KEYS);
    let mut first = w.at(&Place::Datapath);
    if dp
        .get("interfaces")
        .and_then(Item::as_array)
        .is_some_and(|a| !a.is_empty())
    {
        first.push_str("# keepalived's `interface`: where traffic for the VIPs arrives.\n");
    }
    above(dp, "interfaces", &first);
    after(dp, "mode", 22, "auto | native | generic");
    after(
        dp,
        "pin_path",
        2,
        "maps survive controller restarts, so do sessions",
    );
    after(dp, "snat_ports", 9, "source ports towards the nodes");
    let empty = table(dp, "timeouts").is_none_or(|t| t.is_empty());
    if empty {
        dp.remove("timeouts");
    } else if let Some(t) = table(dp, "timeouts") {
        t.decor_mut().set_prefix(
            "\n# HAProxy's timeouts, one set for every listener (docs/maps.md, \"Life of a flow\").\n",
        );
        for key in ["handshake", "established"] {
            let path = if key == "handshake" {
                "timeouts.handshake"
            } else {
                "timeouts.established"
            };
            if let Some(n) = notes.after_at(&Place::Datapath, path) {
                after(t, key, 2, n);
            }
        }
    }
    Ok(())
}

fn cluster(c: &mut Table, ci: usize, w: &Warnings<'_>, notes: &Notes) -> Result<(), String> {
    c.decor_mut().set_prefix(format!(
        "\n# One Patroni cluster; the name is free (status and metrics use it).\n{}",
        w.at(&Place::Cluster(ci))
    ));
    let place = Place::Cluster(ci);
    if let Some(h) = table(c, "health") {
        let d = raw::Health::default();
        h.decor_mut().set_prefix(format!(
            "\n# HAProxy's check timing, carried over (pgrouter's own defaults are faster: {}/{}, fall {}, rise {}).\n",
            unquoted(&d.interval),
            unquoted(&d.fastinter),
            d.fall,
            d.rise
        ));
        drop_defaults(h, &d, &["observe_refusals"])?;
        after(h, "interval", 3, "inter");
        after(h, "fastinter", 2, "fastinter (HAProxy: inter unless set)");
        after(h, "downinter", 2, "downinter (HAProxy: inter unless set)");
        if let Some(n) = notes.after_at(&place, "health.timeout") {
            after(h, "timeout", 4, n);
        }
    }
    if let Some(api) = table(c, "api") {
        api.decor_mut().set_prefix(
            "\n# HAProxy `check port N`: checks go to Patroni's REST API, traffic to PostgreSQL.\n",
        );
        drop_defaults(
            api,
            &raw::Api::default(),
            &["ca_file", "cert_file", "key_file", "username", "password"],
        )?;
    }
    for (key, item_place) in [
        ("node", Place::Node as fn(usize, usize) -> Place),
        ("listener", Place::Listener),
    ] {
        let Some(Item::ArrayOfTables(list)) = c.get_mut(key) else {
            c.remove(key);
            continue;
        };
        for (i, t) in list.iter_mut().enumerate() {
            let at = item_place(ci, i);
            let mut prefix = String::from("\n");
            for line in notes.above_at(&at) {
                prefix.push_str(&format!("# {line}\n"));
            }
            prefix.push_str(&w.at(&at));
            t.decor_mut().set_prefix(prefix);
            if key == "listener" {
                listener(t, &at, notes)?;
            }
        }
    }
    Ok(())
}

fn listener(l: &mut Table, at: &Place, notes: &Notes) -> Result<(), String> {
    let on_empty = toml_edit::value(config_value(raw::OnEmptyKind::default())?);
    if l.get("on_empty").map(Item::to_string) == Some(on_empty.to_string()) {
        l.remove("on_empty");
    }
    order(l, LISTENER_KEYS);
    after(
        l,
        "fallback",
        13,
        "reads go to the primary while no replica is up",
    );
    if let Some(line) = notes.suggested_at(at, "fallback") {
        // Above the key that follows where `fallback` would be.
        let next = LISTENER_KEYS
            .iter()
            .skip_while(|k| **k != "fallback")
            .find(|k| l.contains_key(k));
        if let Some(next) = next {
            above(l, next, &format!("# {line}\n"));
        }
    }
    after(l, "lag", 22, "Patroni ?lag=");
    let unlimited = l
        .get("maxconn")
        .and_then(Item::as_integer)
        .is_some_and(|m| m == 0);
    if unlimited {
        after(l, "maxconn", 23, "per node; 0 = unlimited");
    } else {
        after(l, "maxconn", 21, "per node (HAProxy server maxconn)");
    }
    let keep = config_value(crate::config::OnMarkedDown::Keep)?;
    if l.get("on_marked_down").and_then(Item::as_str) == keep.as_str() {
        after(
            l,
            "on_marked_down",
            3,
            "HAProxy's default; the seed's setups use \"shutdown-sessions\"",
        );
    }
    Ok(())
}

/// `[[vrrp]]`: keepalived's keys in keepalived's order, the version explained.
fn vrrp(v: &mut Table, vi: usize, w: &Warnings<'_>, notes: &Notes) -> Result<(), String> {
    let at = Place::Vrrp(vi);
    let mut prefix = String::from("\n");
    for line in notes.above_at(&at) {
        prefix.push_str(&format!("# {line}\n"));
    }
    prefix.push_str(&w.at(&at));
    v.decor_mut().set_prefix(prefix);
    drop_defaults(
        v,
        &RawInstance::default(),
        &[
            "nopreempt",
            "unicast_peer",
            "garp_master_delay",
            "garp_master_repeat",
        ],
    )?;
    order(v, VRRP_KEYS);
    let version = v.get("version").and_then(Item::as_integer);
    after(
        v,
        "version",
        24,
        if version == Some(2) {
            "keepalived's default for IPv4 (vrrp_version); peers must agree"
        } else {
            "VRRPv3 (RFC 5798)"
        },
    );
    if let Some(Item::ArrayOfTables(tracks)) = v.get_mut("track") {
        for t in tracks.iter_mut() {
            t.decor_mut().set_prefix("\n");
            // `fatal` defaults to false (`#[serde(default)]`).
            if t.get("fatal").and_then(Item::as_bool) == Some(false) {
                t.remove("fatal");
            }
        }
    }
    Ok(())
}

/// Serde writes nested structs as inline tables; the file has `[table]`s and `[[arrays]]`.
fn expand(item: &mut Item) {
    let taken = std::mem::take(item);
    let taken = match taken.into_table() {
        Ok(t) => Item::Table(t),
        Err(i) => i,
    };
    *item = match taken.into_array_of_tables() {
        Ok(a) => Item::ArrayOfTables(a),
        Err(i) => i,
    };
    match item {
        Item::Table(t) => t.iter_mut().for_each(|(_, v)| expand(v)),
        Item::ArrayOfTables(a) => {
            for t in a.iter_mut() {
                t.iter_mut().for_each(|(_, v)| expand(v));
            }
        }
        _ => {}
    }
}

fn table<'a>(t: &'a mut Table, key: &str) -> Option<&'a mut Table> {
    t.get_mut(key).and_then(Item::as_table_mut)
}

/// Removes `keys` from `t` where they hold the value `defaults` (the type's `Default`) has:
/// the reader has nothing to decide there.
fn drop_defaults<T: Serialize>(t: &mut Table, defaults: &T, keys: &[&str]) -> Result<(), String> {
    let d = toml_edit::ser::to_document(defaults)
        .map_err(|e| format!("cannot write the config's defaults: {e}"))?;
    for key in keys {
        let default = d.get(key).map(Item::to_string);
        if t.get(key).map(Item::to_string) == default {
            t.remove(key);
        }
    }
    Ok(())
}

/// Puts the keys of `first` first, in that order.
fn order(t: &mut Table, first: &[&str]) {
    let rank = |k: &str| first.iter().position(|f| *f == k).unwrap_or(first.len());
    t.sort_values_by(|a, _, b, _| rank(a.get()).cmp(&rank(b.get())));
}

/// A comment after `key`'s value, `gap` spaces after it.
fn after(t: &mut Table, key: &str, gap: usize, text: &str) {
    if let Some(v) = t.get_mut(key).and_then(Item::as_value_mut) {
        v.decor_mut()
            .set_suffix(format!("{}# {text}", " ".repeat(gap)));
    }
}

/// Comment lines (each ending in a newline) above `key`.
fn above(t: &mut Table, key: &str, lines: &str) {
    if lines.is_empty() {
        return;
    }
    if let Some(mut k) = t.key_mut(key) {
        k.leaf_decor_mut().set_prefix(lines);
    }
}

/// A duration as written in the file, without TOML quotes (for comments).
fn unquoted(d: &DurationText) -> String {
    match d {
        DurationText::Text(t) => t.clone(),
        DurationText::Number(n) => n.to_string(),
    }
}

/// An enum value as the config writes it.
fn config_value(v: impl Serialize) -> Result<Value, String> {
    v.serialize(toml_edit::ser::ValueSerializer::new())
        .map_err(|e| format!("cannot write a config value: {e}"))
}
