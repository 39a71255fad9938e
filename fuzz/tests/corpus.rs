//! The fuzz corpus and the crashes found, replayed on stable through the same properties the
//! targets check (`cargo test --manifest-path fuzz/Cargo.toml`). Generator targets' corpora are
//! replayed through their generators. Each crash the fuzzers found is a test below, named after
//! what it proves; those whose fix belongs to another change are `#[ignore]` with the reason
//! until it lands (docs/fuzzing.md, *Known gaps*).
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

// --- Crashes found by the fuzzers whose fix belongs to another change (reproducers). ---

/// Issue 16's own report: a frontend with a bare `use_backend` (or `acl`) line panicked in
/// import/translate.rs (slicing `words[2..]`). Fixed by the import refactor.
#[test]
#[ignore = "fix in the import refactor (issue 14/16): bare use_backend/acl panics"]
fn a_bare_use_backend_or_acl_line_is_a_warning_not_a_panic() {
    for line in ["use_backend", "acl"] {
        let h = format!(
            "frontend f\n    bind 198.18.0.100:5000\n    {line}\n    default_backend b\nbackend b\n    server a 198.18.0.11:5432 check port 8008\n"
        );
        let r = std::panic::catch_unwind(|| props::strictly(|| props::import_texts(&h, None)));
        assert!(matches!(r, Ok(Ok(()))), "{line}: {r:?}");
    }
}

/// Found by `config`: a control character in a comment is a TOML error reported with an empty
/// message (`f.toml:1:4: (top level): `).
#[test]
#[ignore = "fix in config/ (config refactor): empty message for a control character"]
fn a_control_character_in_a_comment_is_named_in_the_error() {
    let e = pgrouter::config::parse("# a\u{1}\n", "f.toml").expect_err("invalid TOML");
    assert!(e.diagnostics.iter().all(|d| !d.message.is_empty()), "{e:?}");
}

/// Found by `import`: a control character in an ignored keepalived.conf statement is copied
/// into a `# WARNING:` comment, which TOML forbids, so the output fails check-config.
#[test]
#[ignore = "fix in import/ (import refactor): control characters copied into comments"]
fn control_characters_in_the_input_do_not_break_the_output() {
    let h = include_str!("../../router-user/tests/fixtures/import/seed_simple.haproxy.cfg");
    let k = "\u{0}\u{0}08\nvrrp_instance VI_1 {\n    interface eth0\n    virtual_router_id 51\n    virtual_ipaddress {\n        198.18.0.100\n    }\n}\n";
    let out = pgrouter::import::import(
        &pgrouter::import::Source { path: "h", text: h },
        Some(&pgrouter::import::Source { path: "k", text: k }),
    )
    .expect("imports");
    pgrouter::config::parse(&out.toml, "o.toml").expect("output passes check-config");
}

/// Found by `import_gen`: a `bind [::]:5000` listener over IPv4 servers is written as is and
/// check-config refuses it ("address family differs").
#[test]
#[ignore = "fix in import/ (import refactor): IPv6 bind over IPv4 servers"]
fn an_ipv6_bind_over_ipv4_servers_is_not_written_as_a_listener() {
    let h = "listen pg\n    bind [fd00:198:18::100]:5000\n    option httpchk GET /primary\n    server a 198.18.0.11:5432 check port 8008\n";
    let r = props::strictly(|| props::import_texts(h, None));
    r.expect("imported output passes check-config");
}

/// Found by `import_gen`: keepalived values check-config refuses (`vrrp_version 4`, two
/// instances with one name or VRID) are written as is (import warns that its output fails).
#[test]
#[ignore = "fix in import/ (import refactor): keepalived values written unchecked"]
fn two_keepalived_instances_with_one_name_are_not_both_written() {
    let h = include_str!("../../router-user/tests/fixtures/import/seed_simple.haproxy.cfg");
    let inst = "vrrp_instance VI_1 {\n    interface eth0\n    virtual_router_id 51\n    virtual_ipaddress {\n        198.18.0.100\n    }\n}\n";
    let k = format!("{inst}{inst}");
    let r = props::strictly(|| props::import_texts(h, Some(&k)));
    r.expect("imported output passes check-config");
}

/// Found by `import_gen` (strict mode): check-config accepts an IPv6 VIP, which the data path's planner
/// refuses ("IPv6 is not served by the data path yet"): the daemon starts and serves nothing.
#[test]
#[ignore = "fix in config/ (config refactor): IPv6 VIPs accepted but not served"]
fn an_accepted_config_with_an_ipv6_vip_applies() {
    let text = "[[cluster]]\nname = \"pg\"\nchecks = \"static\"\n[[cluster.node]]\nname = \"a\"\nhost = \"fd00:198:18::11\"\nrole = \"primary\"\n[[cluster.listener]]\nname = \"w\"\nvip = \"fd00:198:18::100\"\nport = 5000\nkind = \"primary\"\n";
    let r = props::strictly(|| props::config_text(text));
    r.expect("accepted and applied");
}

/// Found while listing the planner's limits: check-config accepts 33 nodes behind a listener
/// and 257 listeners, which the data-path planner refuses (`MAX_SET`, `MAX_SERVICES`).
#[test]
#[ignore = "fix in config/ (config refactor): planner limits not checked by check-config"]
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
    for text in [nodes, listeners] {
        props::strictly(|| props::config_text(&text)).expect("accepted and applied");
    }
}
