//! The workspace dependency rule (docs/architecture.md): `protocol` <- `storage` <- `broker`
//! (whose binary also uses `client` for its command-line client commands),
//! `protocol` <- `client` <- `bench` (bench also drives storage for its micro-benchmarks), `window`
//! (pure, no workspace dependency) <- `broker`, `bench`; `tests` may use everything. Read from `cargo metadata`, so any new edge that breaks the rule fails this test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Command;

use serde_json::Value;

/// The workspace crates each workspace crate may depend on (any dependency kind).
const ALLOWED: &[(&str, &[&str])] = &[
    ("sluice-protocol", &[]),
    ("sluice-storage", &["sluice-protocol"]),
    // The window operator's semantics, pure: nothing of the workspace.
    ("sluice-window", &[]),
    // The `sluice` binary's client commands (topic, produce, consume) use the client library.
    (
        "sluice-broker",
        &[
            "sluice-protocol",
            "sluice-storage",
            "sluice-client",
            "sluice-window",
        ],
    ),
    ("sluice-client", &["sluice-protocol"]),
    (
        "sluice-bench",
        &[
            "sluice-protocol",
            "sluice-client",
            "sluice-storage",
            "sluice-window",
        ],
    ),
    (
        "sluice-tests",
        &[
            "sluice-protocol",
            "sluice-storage",
            "sluice-broker",
            "sluice-client",
            "sluice-bench",
            "sluice-window",
        ],
    ),
];

/// Every edge between workspace crates that the rule forbids, and every workspace crate the rule
/// does not know.
fn violations(metadata: &Value) -> Vec<String> {
    let mut out = Vec::new();
    let members: Vec<&str> = metadata["packages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    for pkg in metadata["packages"].as_array().unwrap() {
        let name = pkg["name"].as_str().unwrap();
        let Some((_, allowed)) = ALLOWED.iter().find(|(n, _)| *n == name) else {
            out.push(format!("{name} is not covered by the dependency rule"));
            continue;
        };
        for dep in pkg["dependencies"].as_array().unwrap() {
            let d = dep["name"].as_str().unwrap();
            if members.contains(&d) && !allowed.contains(&d) {
                out.push(format!("{name} -> {d} is forbidden"));
            }
        }
    }
    out
}

#[test]
fn workspace_follows_the_dependency_rule() {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let manifest = concat!(env!("CARGO_MANIFEST_DIR"), "/../Cargo.toml");
    let out = Command::new(cargo)
        .args([
            "metadata",
            "--format-version",
            "1",
            "--no-deps",
            "--offline",
            "--manifest-path",
            manifest,
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let metadata: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        metadata["packages"].as_array().unwrap().len(),
        ALLOWED.len()
    );
    assert_eq!(violations(&metadata), Vec::<String>::new());
}

#[test]
fn the_check_catches_a_forbidden_edge() {
    let metadata = serde_json::json!({ "packages": [
        { "name": "sluice-storage", "dependencies": [] },
        { "name": "sluice-client", "dependencies": [{ "name": "sluice-storage" }, { "name": "bytes" }] },
        { "name": "sluice-new", "dependencies": [] },
    ]});
    assert_eq!(
        violations(&metadata),
        vec![
            "sluice-client -> sluice-storage is forbidden".to_string(),
            "sluice-new is not covered by the dependency rule".to_string(),
        ]
    );
}
