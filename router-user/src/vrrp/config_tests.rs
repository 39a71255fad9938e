//! Config parsing and validation: keepalived-shaped TOML in, one named field per error out.
use super::*;

fn parse(extra: &str) -> Result<InstanceConfig, String> {
    let text = format!(
        "name = \"VI_1\"\ninterface = \"eth0\"\nvirtual_router_id = 51\nvirtual_ipaddress = [\"198.18.0.100/24\"]\n{extra}"
    );
    let c: InstanceConfig = toml::from_str(&text).map_err(|e| e.to_string())?;
    c.validate()?;
    Ok(c)
}

/// Defaults follow keepalived: v3, priority 100, 1 s adverts, preempt on, garp 5 × 5 s.
#[test]
fn defaults() {
    let c = parse("").expect("valid");
    assert_eq!(c.version, 3);
    assert_eq!(c.priority, 100);
    assert_eq!(c.advert_int, Interval(Duration::from_secs(1)));
    assert_eq!(c.adver_int_cs(), 100);
    assert!(!c.nopreempt);
    assert_eq!(c.garp_master_repeat, 5);
    assert_eq!(c.garp_master_delay, Interval(Duration::from_secs(5)));
    assert_eq!(c.virtual_ipaddress[0].to_string(), "198.18.0.100/24");
    assert!(!c.is_ipv6());
}

/// Every accepted form of advert_int.
#[test]
fn advert_int_forms() {
    for (src, cs) in [
        ("\"100ms\"", 10),
        ("\"1s\"", 100),
        ("0.1", 10),
        ("1", 100),
        ("\"1.5s\"", 150),
        ("\"40.95s\"", 4095),
    ] {
        let c = parse(&format!("advert_int = {src}")).unwrap_or_else(|e| panic!("{src}: {e}"));
        assert_eq!(c.adver_int_cs(), cs, "{src}");
    }
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
    assert_eq!(
        c.track[0],
        TrackConfig {
            name: "xdp-attached".into(),
            weight: 0,
            fatal: false
        }
    );
    assert_eq!(c.track[1].weight, -60);
}

/// Each invalid config names its field.
#[test]
fn errors_name_the_field() {
    let cases = [
        ("version = 4", "version:"),
        ("priority = 0", "priority:"),
        ("advert_int = \"5ms\"", "advert_int:"),
        ("advert_int = \"15ms\"", "advert_int:"),
        ("advert_int = \"41s\"", "advert_int:"),
        ("version = 2\nadvert_int = \"100ms\"", "advert_int:"),
        ("auth_pass = \"x\"", "auth_pass:"),
        ("version = 2\nauth_pass = \"123456789\"", "auth_pass:"),
        ("unicast_peer = [\"198.18.0.2\"]", "unicast_src_ip:"),
        ("unicast_src_ip = \"fd00:198:18::1\"", "unicast_src_ip:"),
        (
            "track = [{ name = \"a\" }, { name = \"a\" }]",
            "track.name:",
        ),
        ("garp_master_repeat = 1000", "garp_master_repeat:"),
        ("bogus = 1", "unknown field `bogus`"),
        ("advert_int = \"fast\"", "invalid duration"),
    ];
    for (extra, want) in cases {
        let err = parse(extra).expect_err(extra);
        assert!(err.contains(want), "{extra:?}: {err}");
    }
    let text = "name = \"x\"\ninterface = \"eth0\"\nvirtual_router_id = 0\nvirtual_ipaddress = [\"198.18.0.1\"]";
    let c: InstanceConfig = toml::from_str(text).expect("parses");
    assert!(
        c.validate()
            .expect_err("vrid 0")
            .starts_with("virtual_router_id:")
    );
    let bad: Result<InstanceConfig, _> = toml::from_str(
        "name = \"x\"\ninterface = \"eth0\"\nvirtual_router_id = 1\nvirtual_ipaddress = [\"198.18.0.1/33\"]",
    );
    assert!(bad.is_err());
}

/// v2 is IPv4 only; families do not mix; IPv6 VIPs select VRRPv3 over IPv6.
#[test]
fn families() {
    let text = |vips: &str, extra: &str| {
        format!(
            "name = \"x\"\ninterface = \"eth0\"\nvirtual_router_id = 1\nvirtual_ipaddress = {vips}\n{extra}"
        )
    };
    let c: InstanceConfig = toml::from_str(&text("[\"fd00:198:18::100/64\"]", "")).expect("parses");
    assert!(c.validate().is_ok() && c.is_ipv6());
    let c: InstanceConfig =
        toml::from_str(&text("[\"fd00:198:18::100/64\"]", "version = 2")).expect("parses");
    assert!(c.validate().expect_err("v2 v6").starts_with("version:"));
    let c: InstanceConfig =
        toml::from_str(&text("[\"198.18.0.1\", \"fd00:198:18::1\"]", "")).expect("parses");
    assert!(
        c.validate()
            .expect_err("mixed")
            .starts_with("virtual_ipaddress:")
    );
}

/// Whole-file checks: duplicate names and duplicate VRIDs per interface and family.
#[test]
fn vrrp_only_file() {
    let dir = std::env::temp_dir().join(format!("pgrv-cfg-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("tmp dir");
    let p = dir.join("vrrp.toml");
    let one = |name: &str, vrid: u8| {
        format!(
            "[[vrrp]]\nname = \"{name}\"\ninterface = \"eth0\"\nvirtual_router_id = {vrid}\nvirtual_ipaddress = [\"198.18.0.1/24\"]\n"
        )
    };
    std::fs::write(&p, format!("{}{}", one("a", 1), one("b", 2))).expect("write");
    assert_eq!(load_vrrp_only(&p).expect("loads").len(), 2);
    std::fs::write(&p, format!("{}{}", one("a", 1), one("b", 1))).expect("write");
    let e = load_vrrp_only(&p).expect_err("dup vrid").to_string();
    assert!(e.contains("virtual_router_id"), "{e}");
    std::fs::write(&p, format!("{}{}", one("a", 1), one("a", 2))).expect("write");
    assert!(
        load_vrrp_only(&p)
            .expect_err("dup name")
            .to_string()
            .contains("name: used twice")
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// A parsed config serialises back to the same TOML keys and values (the status page shows it).
#[test]
fn serialises_round_trip() {
    let c = parse("advert_int = \"100ms\"\npreempt_delay = 1.5").expect("valid");
    let text = toml::to_string(&c).expect("serialise");
    assert!(text.contains("advert_int = \"100ms\""), "{text}");
    assert!(text.contains("preempt_delay = \"1500ms\""), "{text}");
    let back: InstanceConfig = toml::from_str(&text).expect("parse back");
    assert_eq!(back, c);
}
