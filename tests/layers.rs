//! The layer rule, checked on the source (docs/architecture.md, "Layers"): each folder of
//! `src/` may import only the layers below it, and no two modules import each other, directly
//! or around a circle. The protocol layer is a crate of its own (`proto/`), so the compiler
//! already keeps it from importing the server; this test covers the layers inside `herald`.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

/// Each layer (a folder of `src/`, or a top-level file) and the layers it may import.
const RULE: &[(&str, &[&str])] = &[
    ("proto", &[]),
    ("feed", &["proto"]),
    ("ops", &["proto"]),
    ("policy", &["proto", "ops"]),
    ("site", &["proto", "ops"]),
    ("cluster", &["proto", "feed", "ops"]),
    ("hooks", &[]),
    (
        "worker",
        &["proto", "feed", "ops", "policy", "site", "cluster", "hooks"],
    ),
    (
        "server",
        &[
            "proto", "feed", "ops", "policy", "site", "cluster", "hooks", "worker",
        ],
    ),
];

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in fs::read_dir(dir).expect("read src") {
        let path = entry.expect("entry").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The module a file is (`feed::fanout`, `worker`): a worker's files are one module split
/// by concern (`impl Worker` in each), so they count as one.
fn module_of(src: &Path, file: &Path) -> String {
    let rel = file.strip_prefix(src).expect("under src");
    let mut parts: Vec<String> = rel
        .iter()
        .map(|p| p.to_string_lossy().trim_end_matches(".rs").to_string())
        .collect();
    if parts.last().is_some_and(|p| p == "mod") {
        parts.pop();
    }
    if parts.first().is_some_and(|p| p == "worker") {
        parts.truncate(1);
    }
    parts.join("::")
}

/// The code of a file without comments, string literals and its unit tests (doc comments
/// name other modules freely, and a module's tests may use its users: only the code the
/// module is built from counts).
fn code_only(text: &str) -> String {
    let text = text.split("#[cfg(test)]").next().unwrap_or(text);
    text.lines()
        .map(|line| {
            let line = line.split("//").next().unwrap_or("");
            // Drop string literals: take every other piece between quotes.
            line.split('"').step_by(2).collect::<Vec<_>>().join(" ")
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Every `crate::a::b` path in `code`, as the module it names (`a::b` when `a/b` is a
/// module, else `a`), mapped through `modules`.
fn imports(code: &str, modules: &BTreeSet<String>) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    for (i, _) in code.match_indices("crate::") {
        let rest = &code[i + "crate::".len()..];
        let path: Vec<&str> = rest
            .split(|c: char| !(c.is_alphanumeric() || c == '_' || c == ':'))
            .next()
            .unwrap_or("")
            .split("::")
            .filter(|p| !p.is_empty())
            .collect();
        let Some(first) = path.first() else { continue };
        let two = path.get(1).map(|second| format!("{first}::{second}"));
        match two {
            Some(two) if modules.contains(&two) => found.insert(two),
            _ => found.insert((*first).to_string()),
        };
    }
    found
}

fn layer_of(module: &str) -> &str {
    let top = module.split("::").next().unwrap_or(module);
    match top {
        "lib" | "main" | "server" | "fuzz" => "server",
        other => other,
    }
}

#[test]
fn every_import_points_down_the_layers() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    assert!(files.len() > 20, "found only {} source files", files.len());
    let modules: BTreeSet<String> = files.iter().map(|f| module_of(&src, f)).collect();
    let rule: BTreeMap<&str, &[&str]> = RULE.iter().copied().collect();

    let mut violations = Vec::new();
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for file in &files {
        let module = module_of(&src, file);
        let layer = layer_of(&module);
        let allowed = rule
            .get(layer)
            .unwrap_or_else(|| panic!("{}: folder {layer} is in no layer", file.display()));
        let text = fs::read_to_string(file).expect("read");
        for target in imports(&code_only(&text), &modules) {
            let to = layer_of(&target);
            if to != layer && !allowed.contains(&to) {
                violations.push(format!("{} imports crate::{target}", file.display()));
            }
            if target != module {
                graph.entry(module.clone()).or_default().insert(target);
            }
        }
    }
    assert!(
        violations.is_empty(),
        "imports against the layer rule:\n{}",
        violations.join("\n")
    );

    // No cycles between modules: a depth-first search that finds no back edge.
    fn visit(
        m: &str,
        graph: &BTreeMap<String, BTreeSet<String>>,
        state: &mut BTreeMap<String, bool>,
        stack: &mut Vec<String>,
    ) -> Option<Vec<String>> {
        match state.get(m) {
            Some(true) => return None,
            Some(false) => {
                let start = stack.iter().position(|s| s == m).unwrap_or(0);
                let mut cycle = stack[start..].to_vec();
                cycle.push(m.to_string());
                return Some(cycle);
            }
            None => {}
        }
        state.insert(m.to_string(), false);
        stack.push(m.to_string());
        for next in graph.get(m).into_iter().flatten() {
            if let Some(cycle) = visit(next, graph, state, stack) {
                return Some(cycle);
            }
        }
        stack.pop();
        state.insert(m.to_string(), true);
        None
    }
    let mut state = BTreeMap::new();
    for module in graph.keys() {
        let cycle = visit(module, &graph, &mut state, &mut Vec::new());
        assert!(
            cycle.is_none(),
            "import cycle: {}",
            cycle.unwrap().join(" -> ")
        );
    }
}

#[test]
fn the_protocol_crate_imports_nothing_of_the_server() {
    let manifest =
        fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("proto/Cargo.toml"))
            .expect("proto/Cargo.toml");
    let deps = manifest
        .split("[dependencies]")
        .nth(1)
        .expect("a [dependencies] table");
    assert!(
        !deps.contains("herald"),
        "proto/Cargo.toml depends on the server:\n{deps}"
    );
}

#[test]
fn the_checker_sees_a_wrong_import() {
    // The rule above must be able to fail: a feed module importing the worker is caught.
    let modules: BTreeSet<String> = ["feed::fanout", "worker", "proto"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    let code = code_only(
        "use crate::worker::conn::Conn; // crate::ops in a comment\nlet s = \"crate::site\";\n\
         #[cfg(test)]\nmod tests { use crate::cluster; }",
    );
    let found = imports(&code, &modules);
    assert_eq!(found, BTreeSet::from(["worker".to_string()]));
    let allowed = RULE.iter().find(|(l, _)| *l == "feed").unwrap().1;
    assert!(!allowed.contains(&layer_of("worker")));
}
