//! `pgrouter import` output, byte for byte, for every fixture: the TOML it prints and the
//! warnings it writes to stderr. A change in the translation shows up here as a diff to read.
//! `UPDATE_GOLDEN=1 cargo test -p router-user --test import_golden` rewrites the files.
use std::path::{Path, PathBuf};

use pgrouter::import::{self, Source};

/// (golden name, haproxy.cfg, keepalived.conf), paths under fixtures/import/.
const CASES: &[(&str, &str, Option<&str>)] = &[
    (
        "seed_simple",
        "seed_simple.haproxy.cfg",
        Some("seed.keepalived.conf"),
    ),
    (
        "seed_fallback",
        "seed_fallback.haproxy.cfg",
        Some("seed.keepalived.conf"),
    ),
    (
        "seed_stale_names",
        "seed_stale_names.haproxy.cfg",
        Some("seed.keepalived.conf"),
    ),
    ("patroni", "patroni.haproxy.cfg", None),
    ("patroni_lone_get", "patroni_lone_get.haproxy.cfg", None),
    (
        "patroni_confd",
        "patroni_confd.haproxy.cfg",
        Some("seed.keepalived.conf"),
    ),
    (
        "vitabaks",
        "vitabaks.haproxy.cfg",
        Some("vitabaks.keepalived.conf"),
    ),
    ("frontend_backend", "frontend_backend.haproxy.cfg", None),
    ("guide_write_read", "guide_write_read.haproxy.cfg", None),
    ("edge_seed_rw", "edge/seed_rw.haproxy.cfg", None),
    (
        "edge_keepalived_variants",
        "edge/seed_rw.haproxy.cfg",
        Some("edge/variants.keepalived.conf"),
    ),
    (
        "edge_ipv6",
        "edge/ipv6.haproxy.cfg",
        Some("edge/ipv6.keepalived.conf"),
    ),
    (
        "edge_check_variants",
        "edge/check_variants.haproxy.cfg",
        None,
    ),
    ("edge_hostnames", "edge/hostnames.haproxy.cfg", None),
    (
        "edge_two_clusters",
        "edge/two_clusters.haproxy.cfg",
        Some("edge/two_clusters.keepalived.conf"),
    ),
    ("edge_timeouts", "edge/timeouts.haproxy.cfg", None),
    ("edge_tunnel", "edge/tunnel.haproxy.cfg", None),
    ("edge_two_timeouts", "edge/two_timeouts.haproxy.cfg", None),
    ("edge_tls", "edge/tls.haproxy.cfg", None),
    // Added after the refactor to toml_edit (its output was not pinned before).
    (
        "edge_vrrp_values",
        "edge/seed_rw.haproxy.cfg",
        Some("edge/vrrp_values.keepalived.conf"),
    ),
];

fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/import")
}

fn read(p: &Path) -> String {
    std::fs::read_to_string(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// What `pgrouter import` prints: the config on stdout, one `warning:` line per warning on
/// stderr; for an input it refuses, no config and its `error:` line.
fn output(haproxy: &str, keepalived: Option<&str>) -> (Option<String>, String) {
    let htext = read(&dir().join(haproxy));
    let ktext = keepalived.map(|k| read(&dir().join(k)));
    let h = Source {
        path: haproxy,
        text: &htext,
    };
    let k = keepalived
        .zip(ktext.as_deref())
        .map(|(path, text)| Source { path, text });
    let out = match import::import(&h, k.as_ref()) {
        Ok(out) => out,
        Err(e) => return (None, format!("error: {e}\n")),
    };
    let stderr: String = out
        .warnings
        .iter()
        .map(|w| format!("warning: {w}\n"))
        .collect();
    (Some(out.toml), stderr)
}

/// Every fixture's output equals its golden file (or rewrites it with UPDATE_GOLDEN=1).
#[test]
fn import_output_matches_the_golden_files() {
    let update = std::env::var_os("UPDATE_GOLDEN").is_some_and(|v| v == "1");
    let mut failed = Vec::new();
    for &(name, haproxy, keepalived) in CASES {
        let (toml, stderr) = output(haproxy, keepalived);
        let toml_path = dir().join("golden").join(format!("{name}.toml"));
        let Some(toml) = toml else {
            // Refused: the golden is the error, and there is no config to compare.
            if update && toml_path.exists() {
                std::fs::remove_file(&toml_path)
                    .unwrap_or_else(|e| panic!("{}: {e}", toml_path.display()));
            }
            if toml_path.exists() {
                failed.push(format!(
                    "{}: import refused the input ({}), but the golden config exists",
                    toml_path.display(),
                    stderr.trim_end()
                ));
            }
            check(
                update,
                &dir().join("golden").join(format!("{name}.stderr")),
                &stderr,
                &mut failed,
            );
            continue;
        };
        for (ext, got) in [("toml", &toml), ("stderr", &stderr)] {
            let path = dir().join("golden").join(format!("{name}.{ext}"));
            if update {
                std::fs::write(&path, got).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
                continue;
            }
            let want = read(&path);
            if &want != got {
                let line = want
                    .lines()
                    .zip(got.lines())
                    .position(|(a, b)| a != b)
                    .unwrap_or_else(|| want.lines().count().min(got.lines().count()));
                failed.push(format!(
                    "{}: first difference at line {}\n  want: {:?}\n  got:  {:?}",
                    path.display(),
                    line + 1,
                    want.lines().nth(line).unwrap_or("<end>"),
                    got.lines().nth(line).unwrap_or("<end>")
                ));
            }
        }
    }
    assert!(
        failed.is_empty(),
        "import output differs from the golden files (UPDATE_GOLDEN=1 rewrites them):\n{}",
        failed.join("\n")
    );
}

/// Compares one golden file (or rewrites it).
fn check(update: bool, path: &Path, got: &str, failed: &mut Vec<String>) {
    if update {
        std::fs::write(path, got).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        return;
    }
    let want = read(path);
    if want != got {
        failed.push(format!(
            "{}: differs\n  want: {want:?}\n  got:  {got:?}",
            path.display()
        ));
    }
}
