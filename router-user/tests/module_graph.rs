//! The module graph docs/architecture.md draws: which top-level module of the `pgrouter` lib
//! uses which (`crate::…` paths in non-test code), that it has no cycle, and that `config`
//! and `model` stay at the bottom. A new dependency that closes a cycle fails here with the
//! path it closes.
use std::{
    collections::{BTreeMap, BTreeSet},
    fs,
    path::Path,
};

type Graph = BTreeMap<String, BTreeSet<String>>;

/// Top-level module names after `crate::` in `text`, including those inside
/// `use crate::{a::…, b, …};` groups.
fn crate_refs(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut rest = text;
    while let Some(i) = rest.find("crate::") {
        rest = &rest[i + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            // Names at depth 0 of the group.
            let mut depth = 0usize;
            let mut item = String::new();
            for c in group.chars() {
                match c {
                    '{' => depth += 1,
                    '}' if depth == 0 => break,
                    '}' => depth -= 1,
                    ',' if depth == 0 => {
                        out.extend(head(&item));
                        item.clear();
                        continue;
                    }
                    _ => {}
                }
                item.push(c);
            }
            out.extend(head(&item));
        } else {
            out.extend(head(rest));
        }
    }
    out
}

fn head(path: &str) -> Option<String> {
    let name: String = path
        .trim_start()
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
        .collect();
    (!name.is_empty() && name != "self").then_some(name)
}

/// Source without comments and without a trailing `#[cfg(test)] mod tests`.
fn code(text: &str) -> String {
    let text = match text.find("#[cfg(test)]\nmod tests") {
        Some(i) => &text[..i],
        None => text,
    };
    text.lines()
        .map(|l| l.split("//").next().unwrap_or(""))
        .collect::<Vec<_>>()
        .join("\n")
}

fn walk(dir: &Path, top: Option<&str>, graph: &mut Graph) {
    let Ok(entries) = fs::read_dir(dir) else {
        panic!("reading {}", dir.display())
    };
    for e in entries.flatten() {
        let path = e.path();
        let name = e.file_name().to_string_lossy().into_owned();
        if path.is_dir() {
            walk(&path, Some(top.unwrap_or(&name)), graph);
            continue;
        }
        let Some(stem) = name.strip_suffix(".rs") else {
            continue;
        };
        if stem == "tests" || stem.ends_with("_tests") || stem == "lib" || stem == "main" {
            continue;
        }
        let module = top.unwrap_or(stem).to_owned();
        let text = fs::read_to_string(&path).unwrap_or_default();
        let refs = crate_refs(&code(&text));
        graph
            .entry(module.clone())
            .or_default()
            .extend(refs.into_iter().filter(|r| *r != module));
    }
}

fn graph() -> Graph {
    let mut g = Graph::new();
    walk(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("src"),
        None,
        &mut g,
    );
    g
}

/// A cycle through `from`, as the path of module names, if there is one.
fn cycle(g: &Graph, from: &str, path: &mut Vec<String>) -> Option<Vec<String>> {
    if let Some(i) = path.iter().position(|m| m == from) {
        let mut c = path[i..].to_vec();
        c.push(from.to_owned());
        return Some(c);
    }
    path.push(from.to_owned());
    for next in g.get(from).into_iter().flatten() {
        if let Some(c) = cycle(g, next, path) {
            return Some(c);
        }
    }
    path.pop();
    None
}

#[test]
fn the_module_graph_has_no_cycle() {
    let g = graph();
    for m in g.keys() {
        if let Some(c) = cycle(&g, m, &mut Vec::new()) {
            panic!("module cycle: {}\ngraph: {g:#?}", c.join(" → "));
        }
    }
}

#[test]
fn config_and_model_are_at_the_bottom() {
    let g = graph();
    let deps = |m: &str| g.get(m).cloned().unwrap_or_default();
    assert_eq!(
        deps("config"),
        BTreeSet::from(["model".to_owned()]),
        "config imports only model"
    );
    assert!(
        deps("model").is_empty(),
        "model imports nothing: {:?}",
        deps("model")
    );
    for m in ["health", "vrrp", "dataplane", "import"] {
        assert!(
            !deps(m).contains("controller"),
            "{m} must not depend on the controller"
        );
    }
}

#[test]
fn the_parser_sees_grouped_and_plain_paths() {
    let refs = crate_refs(
        "use crate::{config::{self, Config}, control::{self, Request},\n    model};\nlet x = crate::status::Status;",
    );
    let want: BTreeSet<String> = ["config", "control", "model", "status"]
        .map(str::to_owned)
        .into();
    assert_eq!(refs, want);
}
