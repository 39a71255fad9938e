//! `[[vrrp]]`: keepalived-shaped TOML in, one positioned error per bad key out.
use std::path::Path;

use super::*;
use crate::config::validate::parse_vrrp_only;

const BASE: &str = "[[vrrp]]\nname = \"VI_1\"\ninterface = \"eth0\"\nvirtual_router_id = 51\n\
                    virtual_ipaddress = [\"198.18.0.100/24\"]\n";

/// One instance with `extra` keys, validated as a `[[vrrp]]`-only file.
fn parse(extra: &str) -> Result<VrrpInstance, String> {
    let text = format!("{BASE}{extra}");
    parse_vrrp_only(&text, Path::new("v.toml"))
        .map(|mut v| v.remove(0))
        .map_err(|e| e.to_string())
}

/// Defaults follow keepalived: v3, priority 100, 1 s adverts, preempt on, garp 5 × 5 s.
#[test]
fn defaults() {
    let c = parse("").expect("valid");
    assert_eq!(c.version, DEFAULT_VERSION);
    assert_eq!(c.priority, 100);
    assert_eq!(c.advert_int, Duration::from_secs(1));
    assert_eq!(c.adver_int_cs(), 100);
    assert!(!c.nopreempt);
    assert_eq!(c.garp_master_repeat, 5);
    assert_eq!(c.garp_master_delay, Duration::from_secs(5));
    assert_eq!(c.virtual_ipaddress[0].to_string(), "198.18.0.100/24");
    assert!(!c.is_ipv6());
}

/// advert_int takes the one duration grammar of the file, like every other duration key.
#[test]
fn advert_int_forms() {
    for (src, cs) in [
        ("\"100ms\"", 10),
        ("\"1s\"", 100),
        ("\"1s500ms\"", 150),
        ("\"40s950ms\"", 4095),
    ] {
        let c = parse(&format!("advert_int = {src}")).unwrap_or_else(|e| panic!("{src}: {e}"));
        assert_eq!(c.adver_int_cs(), cs, "{src}");
    }
}

/// keepalived's unit-less `advert_int 1` / `0.1` and a fraction are refused with the text to
/// write, at the key.
#[test]
fn bare_numbers_and_fractions_are_refused_with_the_fix() {
    for (src, fix) in [
        ("1", "write \"1s\" or \"1ms\""),
        ("0.1", "write \"100ms\""),
        ("\"1.5s\"", "write whole units: \"1s500ms\""),
    ] {
        let e = parse(&format!("advert_int = {src}")).expect_err(src);
        assert!(e.starts_with("v.toml:6:14: vrrp[0].advert_int: "), "{e}");
        assert!(e.contains(fix), "{src}: {e}");
    }
    let e = parse("preempt_delay = 5").expect_err("bare");
    assert!(e.contains("vrrp[0].preempt_delay: bare number 5"), "{e}");
}

/// The full keepalived mapping parses, including tracks, unicast and notify hooks.
#[test]
fn full_instance() {
    let c = parse(
        r#"
priority = 150
advert_int = "100ms"
state = "BACKUP"
nopreempt = true
preempt_delay = "5s"
unicast_src_ip = "198.18.0.1"
unicast_peer = ["198.18.0.2"]
garp_master_delay = "1s"
garp_master_repeat = 3
garp_master_refresh = "60s"
notify_master = "logger master"
notify_backup = "logger backup"
notify_fault = "logger fault"
track = [{ name = "xdp-attached" }, { name = "patroni:main", weight = -60 }]
"#,
    )
    .expect("valid");
    assert_eq!(c.state, Some(StateHint::Backup));
    assert_eq!(c.preempt_delay, Some(Duration::from_secs(5)));
    assert_eq!(c.garp_master_refresh, Some(Duration::from_secs(60)));
    assert_eq!(
        c.track[0],
        Track {
            name: "xdp-attached".into(),
            weight: 0,
            fatal: false
        }
    );
    assert_eq!(c.track[1].weight, -60);
}

/// Each invalid value is reported at its own key.
#[test]
fn errors_name_the_field() {
    let cases = [
        ("version = 4", "vrrp[0].version:"),
        ("priority = 0", "vrrp[0].priority:"),
        ("advert_int = \"5ms\"", "vrrp[0].advert_int:"),
        ("advert_int = \"15ms\"", "vrrp[0].advert_int:"),
        ("advert_int = \"41s\"", "vrrp[0].advert_int:"),
        ("version = 2\nadvert_int = \"100ms\"", "vrrp[0].advert_int:"),
        ("auth_pass = \"x\"", "vrrp[0].auth_pass:"),
        (
            "version = 2\nauth_pass = \"123456789\"",
            "vrrp[0].auth_pass:",
        ),
        ("unicast_peer = [\"198.18.0.2\"]", "vrrp[0].unicast_src_ip:"),
        (
            "unicast_src_ip = \"fd00:198:18::1\"",
            "vrrp[0].unicast_src_ip:",
        ),
        (
            "track = [{ name = \"a\" }, { name = \"a\" }]",
            "vrrp[0].track[1].name:",
        ),
        (
            "track = [{ name = \"a\", weight = 300 }]",
            "vrrp[0].track[0].weight:",
        ),
        ("garp_master_repeat = 1000", "vrrp[0].garp_master_repeat:"),
        (
            "garp_master_refresh = \"10ms\"",
            "vrrp[0].garp_master_refresh:",
        ),
        ("preempt_delay = \"2d\"", "vrrp[0].preempt_delay:"),
        ("bogus = 1", "unknown field `bogus`"),
        ("advert_int = \"fast\"", "invalid duration"),
    ];
    for (extra, want) in cases {
        let err = parse(extra).expect_err(extra);
        assert!(err.contains(want), "{extra:?}: {err}");
    }
    let vrid0 = BASE.replace("virtual_router_id = 51", "virtual_router_id = 0");
    let e = parse_vrrp_only(&vrid0, Path::new("v.toml")).expect_err("vrid 0");
    assert!(
        e.to_string()
            .contains("v.toml:4:21: vrrp[0].virtual_router_id: must be 1..=255"),
        "{e}"
    );
    let bad_if = BASE.replace("\"eth0\"", "\"a/b\"");
    let e = parse_vrrp_only(&bad_if, Path::new("v.toml")).expect_err("ifname");
    assert_eq!(e.diagnostics[0].field, "vrrp[0].interface");
    let bad = BASE.replace("198.18.0.100/24", "198.18.0.1/33");
    let e = parse_vrrp_only(&bad, Path::new("v.toml")).expect_err("prefix");
    assert_eq!(e.diagnostics[0].field, "vrrp[0].virtual_ipaddress[0]");
}

/// v2 is IPv4 only; families do not mix; IPv6 VIPs select VRRPv3 over IPv6.
#[test]
fn families() {
    let with_vips = |vips: &str, extra: &str| {
        parse_vrrp_only(
            &format!("{}{extra}\n", BASE.replace("[\"198.18.0.100/24\"]", vips)),
            Path::new("v.toml"),
        )
        .map(|mut v| v.remove(0))
        .map_err(|e| e.to_string())
    };
    let c = with_vips("[\"fd00:198:18::100/64\"]", "").expect("v6");
    assert!(c.is_ipv6());
    let e = with_vips("[\"fd00:198:18::100/64\"]", "version = 2").expect_err("v2 v6");
    assert!(e.contains("vrrp[0].version: 2 is IPv4 only"), "{e}");
    let e = with_vips("[\"198.18.0.1\", \"fd00:198:18::1\"]", "").expect_err("mixed");
    assert!(e.contains("vrrp[0].virtual_ipaddress[1]: "), "{e}");
    assert!(e.contains("mixes address families"), "{e}");
}

/// Whole-file checks: duplicate names and duplicate VRIDs per interface and family; a
/// `[[vrrp]]`-only file does not check `patroni:` tracks (it has no clusters).
#[test]
fn vrrp_only_file() {
    let one = |name: &str, vrid: u8| {
        format!(
            "[[vrrp]]\nname = \"{name}\"\ninterface = \"eth0\"\nvirtual_router_id = {vrid}\n\
             virtual_ipaddress = [\"198.18.0.1/24\"]\ntrack = [{{ name = \"patroni:x\" }}]\n"
        )
    };
    let file = |text: String| parse_vrrp_only(&text, Path::new("v.toml"));
    assert_eq!(
        file(format!("{}{}", one("a", 1), one("b", 2)))
            .expect("loads")
            .len(),
        2
    );
    let e = file(format!("{}{}", one("a", 1), one("b", 1))).expect_err("dup vrid");
    assert_eq!(e.diagnostics[0].field, "vrrp[1].virtual_router_id");
    assert_eq!(e.diagnostics[0].line, 10);
    let e = file(format!("{}{}", one("a", 1), one("a", 2))).expect_err("dup name");
    assert!(
        e.to_string()
            .contains("vrrp[1].name: duplicate vrrp instance name \"a\" (also vrrp[0])"),
        "{e}"
    );
}

/// The raw table serialises back to the same keys, and what it renders parses to the same
/// instance (`pgrouter import` builds and renders it).
#[test]
fn raw_instance_round_trips() {
    let raw = RawInstance {
        name: "VI_1".into(),
        interface: "eth0".into(),
        virtual_router_id: 51,
        advert_int: Duration::from_millis(100).into(),
        preempt_delay: Some(Duration::from_millis(1500).into()),
        virtual_ipaddress: vec!["198.18.0.100/24".into()],
        track: vec![RawTrack {
            name: "xdp-attached".into(),
            weight: 0,
            fatal: false,
        }],
        ..RawInstance::default()
    };
    #[derive(Serialize)]
    struct File<'a> {
        vrrp: [&'a RawInstance; 1],
    }
    let text = toml::to_string(&File { vrrp: [&raw] }).expect("serialise");
    assert!(text.contains("advert_int = \"100ms\""), "{text}");
    assert!(text.contains("preempt_delay = \"1s500ms\""), "{text}");
    let back: toml::Table = toml::from_str(&text).expect("toml");
    let parsed: Vec<RawInstance> = back["vrrp"].clone().try_into().expect("raw instances");
    assert_eq!(parsed[0], raw);
    let c = parse_vrrp_only(&text, Path::new("v.toml")).expect("valid");
    assert_eq!(c[0].preempt_delay, Some(Duration::from_millis(1500)));
}
