//! The broker's in-crate layering rule (docs/architecture.md, "Inside the broker"), read from the
//! source: each top-level module of `broker/src` may use only the modules of lower layers, so there
//! is no import cycle between them; and below the `api/` adapters nothing names the wire protocol's
//! `Request`/`Response` enums, except raft's own network and metadata forwarding, which *are* wire
//! round trips. Both fail on a new violating line (each was seen failing: `use crate::api::...` in
//! `replica/mod.rs`, and `Response::Metadata` in `admin/view.rs`).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};

/// The broker library's layers, top first. A module may use modules of later (lower) entries only.
const LAYERS: &[&[&str]] = &[
    &["node"],
    &["net"],
    &["api", "http"],
    &["admin"],
    &["broker"],
    &["groups", "operators"],
    &["cluster"],
    &["replica"],
    &["raft"],
    &["metrics"],
    &["config", "error"],
];

/// Files below `api/` allowed to name the wire `Request`/`Response` enums, and why.
const WIRE_ENUM_EXCEPTIONS: &[(&str, &str)] = &[
    (
        "raft/network.rs",
        "raft RPCs are Raft frames on the peer connection",
    ),
    (
        "raft/append_stream.rs",
        "pipelined appends are Raft frames on the peer connection",
    ),
    (
        "cluster/forward.rs",
        "forwarding to the metadata leader is a wire round trip",
    ),
    (
        "operators/send.rs",
        "a window operator's output is produced to its targets' leaders: a wire round trip",
    ),
];

/// Files of the binary, not the library: they sit above every layer.
const BINARY: &[&str] = &["main.rs", "broker_cmd.rs", "power_hook.rs", "cli"];

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../broker/src")
}

/// Every `.rs` file under `dir`, with its path relative to `broker/src`.
fn files(dir: &Path, root: &Path, out: &mut Vec<(String, String)>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            files(&p, root, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            let rel = p
                .strip_prefix(root)
                .unwrap()
                .to_string_lossy()
                .replace('\\', "/");
            out.push((rel, std::fs::read_to_string(&p).unwrap()));
        }
    }
}

/// The library's files (the binary's left out) and their top-level module.
fn library() -> Vec<(String, String, String)> {
    let root = src();
    let mut all = Vec::new();
    files(&root, &root, &mut all);
    assert!(
        all.len() > 20,
        "broker sources not found at {}",
        root.display()
    );
    all.into_iter()
        .filter(|(rel, _)| rel != "lib.rs")
        .filter(|(rel, _)| {
            !BINARY
                .iter()
                .any(|b| rel == b || rel.starts_with(&format!("{b}/")))
        })
        .map(|(rel, text)| {
            let top = rel
                .split('/')
                .next()
                .unwrap()
                .trim_end_matches(".rs")
                .to_string();
            (rel, top, text)
        })
        .collect()
}

fn layer_of(module: &str) -> usize {
    LAYERS
        .iter()
        .position(|l| l.contains(&module))
        .unwrap_or_else(|| panic!("module {module} is in no layer: add it to LAYERS"))
}

/// Code without comments (line comments and doc comments), so prose may name anything.
fn code_lines(text: &str) -> impl Iterator<Item = (usize, &str)> {
    text.lines().enumerate().filter_map(|(i, l)| {
        let code = l.split("//").next().unwrap_or("");
        (!code.trim().is_empty()).then_some((i + 1, code))
    })
}

/// `crate::<module>` references in code.
fn crate_refs(code: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = code;
    while let Some(i) = rest.find("crate::") {
        let after = &rest[i + "crate::".len()..];
        let name: String = after
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        if !name.is_empty() {
            out.push(name);
        }
        rest = after;
    }
    out
}

#[test]
fn broker_modules_use_only_lower_layers() {
    let mut violations = Vec::new();
    for (rel, top, text) in library() {
        let mine = layer_of(&top);
        for (line, code) in code_lines(&text) {
            for used in crate_refs(code) {
                if used == top {
                    continue;
                }
                let theirs = layer_of(&used);
                if theirs <= mine {
                    violations.push(format!("{rel}:{line}: {top} uses {used}: {}", code.trim()));
                }
            }
        }
    }
    assert!(
        violations.is_empty(),
        "layering violations (a module may use only lower layers):\n{}",
        violations.join("\n")
    );
}

/// Whether `code` names the identifier `word` (not as part of a longer identifier).
fn names(code: &str, word: &str) -> bool {
    code.match_indices(word).any(|(i, _)| {
        let before = code[..i].chars().next_back();
        let after = code[i + word.len()..].chars().next();
        let ident = |c: Option<char>| c.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_');
        !ident(before) && !ident(after)
    })
}

#[test]
fn below_api_nothing_names_the_wire_request_or_response_enums() {
    let mut violations = Vec::new();
    for (rel, top, text) in library() {
        if layer_of(&top) <= layer_of("api") || WIRE_ENUM_EXCEPTIONS.iter().any(|(f, _)| *f == rel)
        {
            continue;
        }
        for (line, code) in code_lines(&text) {
            if names(code, "Request") || names(code, "Response") {
                violations.push(format!("{rel}:{line}: {}", code.trim()));
            }
        }
    }
    assert!(
        violations.is_empty(),
        "wire Request/Response named below api/ (translate in api/ instead):\n{}",
        violations.join("\n")
    );
}

#[test]
fn no_broker_source_file_is_over_500_lines() {
    let root = src();
    let mut all = Vec::new();
    files(&root, &root, &mut all);
    let long: Vec<String> = all
        .iter()
        .filter(|(_, text)| text.lines().count() > 500)
        .map(|(rel, text)| format!("{rel}: {} lines", text.lines().count()))
        .collect();
    assert!(long.is_empty(), "split these files:\n{}", long.join("\n"));
}
