//! A test that keeps the crate's top-level modules free of import cycles: it reads every
//! source file, collects the paths that start at the crate root (`crate::m`, grouped
//! imports, items re-exported by `lib.rs`, doc links included) and fails on any cycle
//! between top-level modules, naming it. Layers then stay layers: `config` and `error`
//! at the bottom, the pure logic (`limits`, `runtime`, `seccomp`, `output`, `egress`,
//! `prepare`, `remote_code`, `control`) on them, `engine` and `docker` on top, and the
//! front-end paths (`maintenance`, `remote`) above those.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// The top-level module a source file belongs to (`None` for `lib.rs`).
fn module_of(src: &Path, file: &Path) -> Option<String> {
    let first = file.strip_prefix(src).ok()?.components().next()?;
    let name = first.as_os_str().to_str()?;
    let name = name.strip_suffix(".rs").unwrap_or(name);
    (name != "lib").then(|| name.to_string())
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let entries = std::fs::read_dir(dir).expect("readable source directory");
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

fn ident(text: &str) -> String {
    text.trim()
        .chars()
        .take_while(|c| c.is_alphanumeric() || *c == '_')
        .collect()
}

/// The first path segment after every `crate::` in `text`, including each member of a
/// grouped import (`crate::{a, b::c}` gives `a` and `b`).
fn root_names(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let prefix = ["crate", "::"].concat();
    for (at, _) in text.match_indices(&prefix) {
        let after = &text[at + prefix.len()..];
        match after.strip_prefix('{') {
            Some(group) => {
                let mut depth = 1;
                let mut start = 0;
                for (i, c) in group.char_indices() {
                    match c {
                        '{' => depth += 1,
                        '}' | ',' if depth == 1 => {
                            names.insert(ident(&group[start..i]));
                            start = i + 1;
                            if c == '}' {
                                break;
                            }
                        }
                        '}' => depth -= 1,
                        _ => {}
                    }
                }
            }
            None => {
                names.insert(ident(after));
            }
        }
    }
    names.remove("");
    names
}

/// The module → modules it uses, for this crate.
fn edges() -> BTreeMap<String, BTreeSet<String>> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let modules: BTreeSet<String> = files.iter().filter_map(|f| module_of(&src, f)).collect();
    // Items `lib.rs` re-exports (`pub use docker::DockerEngine`) belong to their module.
    let lib = std::fs::read_to_string(src.join("lib.rs")).expect("lib.rs");
    let mut owners = BTreeMap::new();
    for line in lib.lines() {
        let Some(rest) = line.trim().strip_prefix("pub use ") else {
            continue;
        };
        let module = ident(rest);
        if !modules.contains(&module) {
            continue;
        }
        let items = rest[module.len()..].trim_start_matches("::");
        let items = items
            .trim_end_matches(';')
            .trim_matches(|c| c == '{' || c == '}');
        for item in items.split(',').map(ident).filter(|i| !i.is_empty()) {
            owners.insert(item, module.clone());
        }
    }
    let mut edges: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for file in &files {
        let Some(from) = module_of(&src, file) else {
            continue;
        };
        if from == "architecture" {
            continue;
        }
        let text = std::fs::read_to_string(file).expect("readable source file");
        for name in root_names(&text) {
            let to = match modules.contains(&name) {
                true => name,
                false => match owners.get(&name) {
                    Some(m) => m.clone(),
                    None => continue,
                },
            };
            if to != from {
                edges.entry(from.clone()).or_default().insert(to);
            }
        }
    }
    edges
}

/// A cycle through `start`, if there is one.
fn cycle_through(start: &str, edges: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    let mut stack = vec![vec![start.to_string()]];
    let mut seen = BTreeSet::new();
    while let Some(path) = stack.pop() {
        let last = path.last()?;
        for next in edges.get(last).into_iter().flatten() {
            if next == start {
                let mut cycle = path.clone();
                cycle.push(start.to_string());
                return Some(cycle);
            }
            if seen.insert(next.clone()) {
                let mut longer = path.clone();
                longer.push(next.clone());
                stack.push(longer);
            }
        }
    }
    None
}

#[test]
fn the_crates_top_level_modules_have_no_import_cycle() {
    let edges = edges();
    assert!(
        edges.get("docker").is_some_and(|d| d.contains("error")),
        "the scan sees the crate's imports: {edges:?}"
    );
    let cycles: Vec<String> = edges
        .keys()
        .filter_map(|m| cycle_through(m, &edges))
        .map(|c| c.join(" -> "))
        .collect();
    assert!(cycles.is_empty(), "import cycles: {cycles:#?}");
}

#[test]
fn grouped_and_nested_imports_are_all_counted() {
    let names = root_names("use crate::{a, b::{c, d}, e::f}; x(crate::g::h); crate::{ i }");
    let want: BTreeSet<String> = ["a", "b", "e", "g", "i"].map(String::from).into();
    assert_eq!(names, want);
}
