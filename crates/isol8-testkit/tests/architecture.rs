//! The layer rule of docs/ARCHITECTURE.md, checked on the source tree: which workspace
//! crate may depend on which (from each `Cargo.toml`), and that no two top-level modules
//! of one crate import each other, directly or through others (from the `crate::` paths
//! in every source file). Runs without Docker.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// The workspace root (this crate lives in `crates/isol8-testkit`).
fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .nth(2)
        .expect("workspace root")
        .to_path_buf()
}

/// Layer of each workspace crate: a crate's normal dependencies must all be on a lower
/// layer. `None`: a dev-only crate, which may appear only under `[dev-dependencies]`.
fn layer(krate: &str) -> Option<u8> {
    match krate {
        "isol8-protocol" => Some(0),
        "isol8-agent" | "isol8" => Some(1),
        "isol8-images" | "isol8-server" => Some(2),
        "isol8-bench" | "isol8-mcp" => Some(3),
        "isol8-cli" => Some(4),
        "isol8-testkit" | "isol8-testkit-macros" => None,
        other => panic!("crate `{other}` has no layer: add it to docs/ARCHITECTURE.md and here"),
    }
}

fn manifests() -> Vec<(String, toml::Table)> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(root().join("crates")).expect("crates/") {
        let path = entry.expect("entry").path().join("Cargo.toml");
        let text = std::fs::read_to_string(&path).expect("Cargo.toml");
        let table: toml::Table = text.parse().expect("valid Cargo.toml");
        let name = table["package"]["name"]
            .as_str()
            .expect("package.name")
            .to_string();
        out.push((name, table));
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

/// Workspace crates named in one dependency table.
fn workspace_deps(table: &toml::Table, section: &str) -> Vec<String> {
    table
        .get(section)
        .and_then(|d| d.as_table())
        .map(|deps| {
            deps.keys()
                .filter(|k| k.starts_with("isol8"))
                .cloned()
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn crates_depend_only_on_lower_layers_and_test_helpers_only_in_dev() {
    let mut broken = Vec::new();
    for (name, table) in manifests() {
        for dep in workspace_deps(&table, "dependencies") {
            match (layer(&name), layer(&dep)) {
                (_, None) if layer(&name).is_some() => {
                    broken.push(format!("{name} depends on the dev-only {dep}"))
                }
                (Some(a), Some(b)) if b >= a => {
                    broken.push(format!("{name} (layer {a}) depends on {dep} (layer {b})"))
                }
                _ => {}
            }
        }
    }
    assert!(
        broken.is_empty(),
        "layer rule broken:\n{}",
        broken.join("\n")
    );
}

fn rs_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = entry.path();
        if p.is_dir() {
            rs_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// The top-level module a file of `src/` belongs to; `None` for the crate root.
fn module_of(src: &Path, file: &Path) -> Option<String> {
    let first = file.strip_prefix(src).ok()?.components().next()?;
    let first = first.as_os_str().to_str()?;
    let name = first.strip_suffix(".rs").unwrap_or(first);
    (name != "lib" && name != "main").then(|| name.to_string())
}

fn ident(s: &str) -> String {
    s.trim()
        .chars()
        .take_while(|c| c.is_alphanumeric() || *c == '_')
        .collect()
}

/// The first path segment after every `crate::` in `text`, including each entry of a
/// `use crate::{a, b::c}` group.
fn crate_refs(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for (i, _) in text.match_indices("crate::") {
        let after = &text[i + "crate::".len()..];
        let Some(group) = after.strip_prefix('{') else {
            out.insert(ident(after));
            continue;
        };
        let (mut depth, mut start) = (1, 0);
        for (j, c) in group.char_indices() {
            match c {
                '{' => depth += 1,
                '}' => {
                    depth -= 1;
                    if depth == 0 {
                        out.insert(ident(&group[start..j]));
                        break;
                    }
                }
                ',' if depth == 1 => {
                    out.insert(ident(&group[start..j]));
                    start = j + 1;
                }
                _ => {}
            }
        }
    }
    out.remove("");
    out
}

/// Edges `module -> module it imports` of one crate. Items the crate root re-exports
/// (`pub use m::{A, B}` in lib.rs) count as imports of the module defining them.
fn module_graph(src: &Path) -> BTreeMap<String, BTreeSet<String>> {
    let mut files = Vec::new();
    rs_files(src, &mut files);
    let modules: BTreeSet<String> = files.iter().filter_map(|f| module_of(src, f)).collect();
    let mut reexported: BTreeMap<String, String> = BTreeMap::new();
    if let Ok(lib) = std::fs::read_to_string(src.join("lib.rs")) {
        for line in lib.lines() {
            let Some(rest) = line.trim().strip_prefix("pub use ") else {
                continue;
            };
            let module = ident(rest);
            if modules.contains(&module) {
                let items = rest[module.len()..].trim_start_matches("::");
                for item in crate_refs(&format!("crate::{}", items.trim_end_matches(';'))) {
                    reexported.insert(item, module.clone());
                }
            }
        }
    }
    let mut edges: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for file in &files {
        let Some(from) = module_of(src, file) else {
            continue;
        };
        let text = std::fs::read_to_string(file).expect("source file");
        for name in crate_refs(&text) {
            let to = if modules.contains(&name) {
                name
            } else if let Some(m) = reexported.get(&name) {
                m.clone()
            } else {
                continue;
            };
            if to != from {
                edges.entry(from.clone()).or_default().insert(to);
            }
        }
    }
    edges
}

/// Every cycle of the graph, each written once from its smallest module.
fn cycles(edges: &BTreeMap<String, BTreeSet<String>>) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    for start in edges.keys() {
        let mut stack = vec![vec![start.clone()]];
        let mut seen = BTreeSet::new();
        while let Some(path) = stack.pop() {
            let last = path.last().expect("non-empty path");
            for next in edges.get(last).into_iter().flatten() {
                if next == start {
                    let mut cycle = path.clone();
                    let smallest = cycle
                        .iter()
                        .enumerate()
                        .min_by_key(|(_, m)| *m)
                        .map(|(i, _)| i)
                        .unwrap_or(0);
                    cycle.rotate_left(smallest);
                    found.insert(cycle.join(" -> "));
                } else if seen.insert(next.clone()) {
                    let mut longer = path.clone();
                    longer.push(next.clone());
                    stack.push(longer);
                }
            }
        }
    }
    found
}

#[test]
fn no_crate_has_an_import_cycle_between_its_modules() {
    let mut report = Vec::new();
    for entry in std::fs::read_dir(root().join("crates")).expect("crates/") {
        let dir = entry.expect("entry").path();
        let found = cycles(&module_graph(&dir.join("src")));
        if !found.is_empty() {
            report.push(format!(
                "{}: {}",
                dir.file_name().unwrap_or_default().to_string_lossy(),
                found.into_iter().collect::<Vec<_>>().join("; ")
            ));
        }
    }
    assert!(report.is_empty(), "import cycles:\n{}", report.join("\n"));
}

/// Layer of each top-level module of the engine crate (`isol8`): a module imports only
/// modules of lower layers, except that the foundation (layer 0) modules may import each
/// other (without cycles). 0: types and pure logic; 1: the egress proxy; 2: turning a
/// request into what a sandbox runs; 3: the backends (Docker, a remote server); 4: the
/// housekeeping façade the CLI and server use.
fn engine_layer(module: &str) -> u8 {
    match module {
        "config" | "error" | "engine" | "control" | "runtime" | "seccomp" | "settings"
        | "output" | "outcome" | "stats" | "audit" | "trace" => 0,
        "egress" => 1,
        "prepare" | "code_url" => 2,
        "docker" | "remote" => 3,
        "maintenance" => 4,
        other => {
            panic!("module `isol8::{other}` has no layer: add it to docs/ARCHITECTURE.md and here")
        }
    }
}

#[test]
fn engine_modules_import_only_lower_layers() {
    let edges = module_graph(&root().join("crates/isol8/src"));
    let mut broken = Vec::new();
    for (from, tos) in &edges {
        for to in tos {
            let (a, b) = (engine_layer(from), engine_layer(to));
            if b > a || (a == b && a != 0) {
                broken.push(format!(
                    "isol8::{from} (layer {a}) imports isol8::{to} (layer {b})"
                ));
            }
        }
    }
    assert!(
        broken.is_empty(),
        "layer rule broken:\n{}",
        broken.join("\n")
    );
}

#[test]
fn the_checker_sees_groups_reexports_and_cycles() {
    let refs = crate_refs("use crate::{a::B, c, d::{e, f}};\nlet x = crate::g::h();");
    assert_eq!(refs.into_iter().collect::<Vec<_>>(), ["a", "c", "d", "g"]);
    let edges = BTreeMap::from([
        ("a".to_string(), BTreeSet::from(["b".to_string()])),
        ("b".to_string(), BTreeSet::from(["c".to_string()])),
        ("c".to_string(), BTreeSet::from(["a".to_string()])),
        ("d".to_string(), BTreeSet::from(["a".to_string()])),
    ]);
    assert_eq!(
        cycles(&edges).into_iter().collect::<Vec<_>>(),
        ["a -> b -> c"]
    );
}
