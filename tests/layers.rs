//! The layering rule, checked against the code: every top-level module of `src/` belongs to
//! one layer of the table in docs/architecture.md ("Layers"), and a module names only modules
//! of lower layers (`crate::x` paths in its code, tests excluded). So the import ring the
//! project once had cannot come back unnoticed, and the document cannot drift from the code:
//! a module missing from the table, or listed but gone, fails too.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

/// The layer table: `| N | `a`, `b` | ... |` rows under the heading "## Layers".
fn layers() -> BTreeMap<String, usize> {
    let doc = std::fs::read_to_string(Path::new(ROOT).join("docs/architecture.md"))
        .expect("docs/architecture.md is readable");
    let section = doc
        .split("\n## Layers")
        .nth(1)
        .expect("docs/architecture.md has a \"## Layers\" section");
    let section = section.split("\n## ").next().unwrap_or(section);
    let mut out = BTreeMap::new();
    for line in section.lines() {
        let cells: Vec<&str> = line.split('|').map(str::trim).collect();
        let Some(layer) = cells.get(1).and_then(|c| c.parse::<usize>().ok()) else {
            continue;
        };
        for name in cells[2].split(',') {
            let name = name.trim().trim_matches('`').trim_end_matches('/');
            let name = name.strip_suffix(".rs").unwrap_or(name);
            assert!(
                out.insert(name.to_owned(), layer).is_none(),
                "{name} is listed twice in the layer table"
            );
        }
    }
    assert!(!out.is_empty(), "the layer table has no rows");
    out
}

/// The top-level modules of `src/` and their files (lib.rs and main.rs are the crate roots).
fn modules() -> BTreeMap<String, Vec<PathBuf>> {
    let src = Path::new(ROOT).join("src");
    let mut out: BTreeMap<String, Vec<PathBuf>> = BTreeMap::new();
    for entry in std::fs::read_dir(&src).expect("src/ is readable") {
        let path = entry.expect("a directory entry").path();
        let name = path.file_stem().unwrap().to_string_lossy().into_owned();
        if path.is_dir() {
            out.insert(name, rust_files(&path));
        } else if path.extension().is_some_and(|e| e == "rs") && name != "lib" && name != "main" {
            out.insert(name, vec![path]);
        }
    }
    out
}

fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            files.extend(rust_files(&path));
        } else if path.extension().is_some_and(|e| e == "rs") {
            files.push(path);
        }
    }
    files
}

/// A file's code without its unit tests (the `#[cfg(test)]` module closes every file here)
/// and without comments.
fn code_of(text: &str) -> String {
    let text = match text.find("#[cfg(test)]\nmod ") {
        Some(at) => &text[..at],
        None => text,
    };
    text.lines()
        .map(|l| match l.find("//") {
            Some(at) => &l[..at],
            None => l,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// The top-level modules a piece of code names: `crate::x::...` and `crate::{x, y::...}`.
fn named_modules(code: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut rest = code;
    while let Some(at) = rest.find("crate::") {
        let before = rest[..at].chars().last();
        rest = &rest[at + "crate::".len()..];
        if before.is_some_and(|c| c.is_alphanumeric() || c == '_') {
            continue; // `boundary_realtime::crate::`-like text is not a path of ours
        }
        if let Some(group) = rest.strip_prefix('{') {
            let end = group.find('}').unwrap_or(group.len());
            for item in group[..end].split(',') {
                out.insert(ident(item.trim()));
            }
        } else {
            out.insert(ident(rest));
        }
    }
    out.retain(|m| !m.is_empty());
    out
}

fn ident(s: &str) -> String {
    s.chars()
        .take_while(|c| c.is_alphanumeric() || *c == '_')
        .collect()
}

#[test]
fn every_module_names_only_lower_layers() {
    let layers = layers();
    let modules = modules();
    let listed: BTreeSet<&String> = layers.keys().collect();
    let present: BTreeSet<&String> = modules.keys().collect();
    assert_eq!(
        listed, present,
        "docs/architecture.md's layer table and the modules of src/ differ"
    );
    let mut wrong = Vec::new();
    for (module, files) in &modules {
        let layer = layers[module];
        for file in files {
            let code = code_of(&std::fs::read_to_string(file).unwrap());
            for other in named_modules(&code) {
                if other == *module || other == "proto" {
                    continue; // itself, and the generated types declared in lib.rs
                }
                match layers.get(&other) {
                    Some(&l) if l < layer => {}
                    Some(&l) => wrong.push(format!(
                        "{} (layer {layer}) names {other} (layer {l})",
                        file.strip_prefix(ROOT).unwrap().display()
                    )),
                    None => wrong.push(format!(
                        "{} names crate::{other}, which is no module",
                        file.strip_prefix(ROOT).unwrap().display()
                    )),
                }
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "imports against the layers:\n{}",
        wrong.join("\n")
    );
}

/// The doors reach this node's state only through the hub: they register, unregister and
/// count through it, never through `hub.local()`.
#[test]
fn the_doors_go_through_the_hub() {
    let modules = modules();
    let mut wrong = Vec::new();
    for door in ["ws", "centrifuge", "websocket", "grpc", "http"] {
        for file in &modules[door] {
            let code = code_of(&std::fs::read_to_string(file).unwrap());
            if code.contains(".local()") {
                wrong.push(file.strip_prefix(ROOT).unwrap().display().to_string());
            }
        }
    }
    assert!(wrong.is_empty(), "doors calling hub.local(): {wrong:?}");
}

#[test]
fn the_checker_sees_what_it_must() {
    let code = "use crate::hub::Hub;\nuse crate::{node::WsConn, core};\nlet x = crate::cluster::build();\n// crate::server\n";
    let names: Vec<String> = named_modules(&code_of(code)).into_iter().collect();
    assert_eq!(names, ["cluster", "core", "hub", "node"]);
    let tested = "use crate::a;\n#[cfg(test)]\nmod tests {\n use crate::b;\n}\n";
    let names: Vec<String> = named_modules(&code_of(tested)).into_iter().collect();
    assert_eq!(names, ["a"]);
}
