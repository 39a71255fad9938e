//! The fuzz corpus and the crashes found, replayed on stable through the same properties the
//! targets check (`cargo test --manifest-path fuzz/Cargo.toml`). Generator targets' corpora are
//! replayed through their generators. Each crash the fuzzers found is a test below, named after
//! what it proves (docs/fuzzing.md, *Found and fixed*).
use std::path::{Path, PathBuf};

use arbitrary::Unstructured;
use pgrouter_fuzz::{gen_config, gen_import, props};

fn corpus(target: &str) -> Vec<(PathBuf, Vec<u8>)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("corpus")
        .join(target);
    let mut out = Vec::new();
    for e in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let p = e.expect("dir entry").path();
        let data = std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
        out.push((p, data));
    }
    assert!(!out.is_empty(), "{} is empty", dir.display());
    out
}

#[test]
fn config_corpus_keeps_its_properties() {
    for (p, data) in corpus("config") {
        if let Ok(text) = std::str::from_utf8(&data) {
            props::config_text(text).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
        }
    }
}

#[test]
fn config_gen_corpus_keeps_its_properties() {
    for (p, data) in corpus("config_gen") {
        let mut u = Unstructured::new(&data);
        if let Ok(text) = gen_config::config(&mut u) {
            props::config_text(&text).unwrap_or_else(|e| panic!("{}: {e}\n{text}", p.display()));
        }
    }
}

#[test]
fn import_corpus_keeps_its_properties() {
    for (p, data) in corpus("import") {
        let (h, k) = props::split_import_input(&data);
        props::import_texts(&h, k.as_deref()).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    }
}

#[test]
fn import_gen_corpus_keeps_its_properties() {
    for (p, data) in corpus("import_gen") {
        let mut u = Unstructured::new(&data);
        let Ok(h) = gen_import::haproxy(&mut u) else {
            continue;
        };
        let k = match u.ratio(1, 2) {
            Ok(true) => gen_import::keepalived(&mut u).ok(),
            _ => None,
        };
        props::import_texts(&h, k.as_deref()).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    }
}

#[test]
fn units_corpus_keeps_its_properties() {
    for (p, data) in corpus("units") {
        if let Ok(s) = std::str::from_utf8(&data) {
            props::units_text(s).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
        }
    }
}

/// The shipped example config plans into maps and re-plans to nothing (the config property on
/// a known-good input, so a property that rejects everything cannot pass unnoticed).
#[test]
fn the_example_config_is_accepted_and_applies() {
    let text = include_str!("../../examples/pgrouter.toml");
    let cfg = pgrouter::config::parse(text, "examples/pgrouter.toml").expect("example parses");
    props::config_applies(&cfg).expect("example applies");
}

/// Every import fixture's output passes check-config and applies.
#[test]
fn every_import_fixture_passes_the_import_property() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../router-user/tests/fixtures/import");
    for e in std::fs::read_dir(&dir).expect("fixtures") {
        let p = e.expect("entry").path();
        if p.to_string_lossy().ends_with(".haproxy.cfg") {
            let text = std::fs::read_to_string(&p).expect("fixture");
            props::import_texts(&text, None).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
        }
    }
}

// --- Crashes the fuzzers found, with their reproducers (docs/fuzzing.md, *Found and fixed*). ---

/// Issue 16's own report: a frontend with a bare `use_backend` (or `acl`) line panicked in
/// import/translate.rs (slicing `words[2..]`). Fixed in 81a2dac: a warning naming the line.
#[test]
fn a_bare_use_backend_or_acl_line_is_a_warning_not_a_panic() {
    for line in ["use_backend", "acl"] {
        let h = format!(
            "frontend f\n    bind 198.18.0.100:5000\n    {line}\n    default_backend b\nbackend b\n    server a 198.18.0.11:5432 check port 8008\n"
        );
        let r = std::panic::catch_unwind(|| props::import_texts(&h, None));
        assert!(matches!(r, Ok(Ok(()))), "{line}: {r:?}");
    }
}

/// Found by `config`: a control character in a comment was a TOML error reported with an
/// empty message (`f.toml:1:4: (top level): `). The message now names the character.
#[test]
fn a_control_character_in_a_comment_is_named_in_the_error() {
    let e = pgrouter::config::parse("# a\u{1}\n", "f.toml").expect_err("invalid TOML");
    assert!(e.diagnostics.iter().all(|d| !d.message.is_empty()), "{e:?}");
    assert!(e.to_string().contains("control character U+0001"), "{e}");
}

/// Found by `import`: a control character in an ignored keepalived.conf statement was copied
/// into a `# WARNING:` comment, which TOML forbids, so the output failed check-config. Comments
/// and warnings now carry it escaped (`\u{0}`).
#[test]
fn control_characters_in_the_input_do_not_break_the_output() {
    let h = include_str!("../../router-user/tests/fixtures/import/seed_simple.haproxy.cfg");
    let k = "\u{0}\u{0}08\nvrrp_instance VI_1 {\n    interface eth0\n    virtual_router_id 51\n    virtual_ipaddress {\n        198.18.0.100\n    }\n}\n";
    let out = pgrouter::import::import(
        &pgrouter::import::Source { path: "h", text: h },
        Some(&pgrouter::import::Source { path: "k", text: k }),
    )
    .expect("imports");
    pgrouter::config::parse(&out.toml, "o.toml").expect("output passes check-config");
    props::import_texts(h, Some(k)).expect("the import property");
    // The same through haproxy.cfg, and in the middle of a section name.
    let h2 = h.replacen("listen PG1\n", "listen PG\u{7}1\n\u{1b}[2J\n", 1);
    props::import_texts(&h2, Some(k)).expect("the import property");
}

/// Found by `import_gen`: a `bind [::]:5000` / `bind [fd00::100]:5000` listener over IPv4
/// servers was written as is and check-config refused it ("address family differs"). The
/// data path serves IPv4 only: the listener is commented out with a warning (here nothing is
/// left, so import refuses with the reason), or takes keepalived's only IPv4 VIP.
#[test]
fn an_ipv6_bind_over_ipv4_servers_is_not_written_as_a_listener() {
    let h = "listen pg\n    bind [fd00:198:18::100]:5000\n    option httpchk GET /primary\n    server a 198.18.0.11:5432 check port 8008\n";
    props::import_texts(h, None).expect("imported output passes check-config");
    let e = pgrouter::import::import(&pgrouter::import::Source { path: "h", text: h }, None)
        .map(|o| o.toml)
        .expect_err("no listener pgrouter can serve");
    assert!(
        e.contains("IPv6 listeners are not served by the data path yet"),
        "{e}"
    );
    let both = h.replace(
        "    bind [fd00",
        "    bind 198.18.0.100:5001\n    bind [fd00",
    );
    props::import_texts(&both, None).expect("imported output passes check-config");
}

/// Found by `import_gen`: keepalived values check-config refuses (`vrrp_version 4`, two
/// instances with one name or VRID, a VIP prefix length of 33, mixed families, an `advert_int`
/// v2 cannot carry, a track weight beyond ±254) were written as is. They are now fitted (with
/// a warning) or left out, commented out, with check-config's reason.
#[test]
fn two_keepalived_instances_with_one_name_are_not_both_written() {
    let h = include_str!("../../router-user/tests/fixtures/import/seed_simple.haproxy.cfg");
    let inst = "vrrp_instance VI_1 {\n    interface eth0\n    virtual_router_id 51\n    virtual_ipaddress {\n        198.18.0.100\n    }\n}\n";
    let k = format!("{inst}{inst}");
    props::import_texts(h, Some(&k)).expect("imported output passes check-config");
    let odd = "global_defs {\n    vrrp_version 4\n}\nvrrp_instance VI_2 {\n    interface eth0\n    \
               virtual_router_id 52\n    advert_int 0.5\n    unicast_src_ip fd00::1\n    \
               unicast_peer {\n        fd00::2\n        198.18.0.3\n    }\n    virtual_ipaddress {\n        \
               198.18.0.100/33\n        198.18.0.101/24\n        fd00::100/64\n    }\n    \
               track_script {\n        chk weight 300\n    }\n}\n";
    props::import_texts(h, Some(&format!("{inst}{odd}"))).expect("passes check-config");
}

/// Found by `import_gen` (strict mode): check-config accepted an IPv6 VIP, which the data
/// path's planner refuses ("IPv6 is not served by the data path yet"): the daemon started and
/// served nothing. check-config now refuses it at the VIP.
#[test]
fn an_accepted_config_with_an_ipv6_vip_applies() {
    let text = "[[cluster]]\nname = \"pg\"\nchecks = \"static\"\n[[cluster.node]]\nname = \"a\"\nhost = \"fd00:198:18::11\"\nrole = \"primary\"\n[[cluster.listener]]\nname = \"w\"\nvip = \"fd00:198:18::100\"\nport = 5000\nkind = \"primary\"\n";
    props::config_text(text).expect("refused with positions, or accepted and applied");
    let e = pgrouter::config::parse(text, "v6.toml").expect_err("IPv6 VIP refused");
    assert!(
        e.to_string()
            .contains("v6.toml:10:7: cluster[0].listener[0].vip: fd00:198:18::100: IPv6 listeners are not served by the data path yet"),
        "{e}"
    );
}

/// Found while listing the planner's limits: check-config accepted 33 nodes behind a listener
/// and 257 listeners, which the data-path planner refuses (`MAX_SET`, `MAX_SERVICES`), and as
/// many backend entries as the listeners' nodes add up to (`MAX_BACKENDS`). check-config now
/// refuses each, at the first node or listener beyond the limit.
#[test]
fn an_accepted_config_stays_within_the_planner_limits() {
    let mut nodes = String::from("[[cluster]]\nname = \"pg\"\nchecks = \"static\"\n");
    for i in 0..33 {
        nodes.push_str(&format!(
            "[[cluster.node]]\nname = \"n{i}\"\nhost = \"198.18.0.{}\"\nrole = \"replica\"\n",
            i + 1
        ));
    }
    nodes.push_str(
        "[[cluster.listener]]\nname = \"r\"\nvip = \"198.18.1.100\"\nport = 5001\nkind = \"replica\"\n",
    );
    let mut listeners = String::from(
        "[[cluster]]\nname = \"pg\"\nchecks = \"static\"\n[[cluster.node]]\nname = \"a\"\nhost = \"198.18.0.1\"\nrole = \"primary\"\n",
    );
    for i in 0..257 {
        listeners.push_str(&format!(
            "[[cluster.listener]]\nname = \"l{i}\"\nvip = \"198.18.1.100\"\nport = {}\nkind = \"primary\"\n",
            1000 + i
        ));
    }
    for (text, limit) in [
        (nodes, "more than 32 nodes"),
        (listeners, "more than 256 listeners"),
    ] {
        props::config_text(&text).expect("refused with positions, or accepted and applied");
        let e = pgrouter::config::parse(&text, "big.toml").expect_err("beyond a limit");
        assert!(e.to_string().contains(limit), "{e}");
    }
}
