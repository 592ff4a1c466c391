//! Tests of `AlterTopicConfig`: the merge (set, delete back to the default, normalised values),
//! every refusal with its code and changing nothing, and replay through the log encoding and a
//! snapshot.
#![allow(clippy::unwrap_used)]
use super::*;
use crate::cluster::operators::OperatorDef;
use crate::cluster::state::Command;

const BROKERS: [u32; 3] = [1, 2, 3];

fn pairs(p: &[(&str, &str)]) -> Vec<(String, String)> {
    p.iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn alter(name: &str, set: &[(&str, &str)], delete: &[&str]) -> Command {
    Command::AlterTopicConfig {
        name: name.into(),
        set: pairs(set),
        delete: delete.iter().map(|k| k.to_string()).collect(),
    }
}

fn create(name: &str, configs: &[(&str, &str)]) -> Command {
    Command::CreateTopic {
        name: name.into(),
        partitions: 2,
        replication_factor: 2,
        configs: pairs(configs),
    }
}

/// `key`'s value in topic `name`'s configs.
fn config(s: &ClusterState, name: &str, key: &str) -> String {
    value(&s.topics[name].configs, key).unwrap().to_string()
}

/// A state with topic `t` (large retention, small segments), an internal topic and an operator
/// whose sink `sink` is compacted.
fn state() -> ClusterState {
    let mut s = ClusterState::default();
    for c in [
        create(
            "t",
            &[("retention.bytes", "1000000000"), ("segment.bytes", "4096")],
        ),
        create("src", &[]),
        create("__consumer_offsets", &[("cleanup.policy", "compact")]),
        Command::CreateOperator {
            def: Box::new(OperatorDef {
                name: "op".into(),
                source: "src".into(),
                sink: "sink".into(),
                window: "tumbling:10s".into(),
                time: "record".into(),
                value: "number".into(),
                aggregates: vec!["count".into()],
                ..OperatorDef::default()
            }),
            created_ms: 1,
        },
    ] {
        s.apply(&c, &BROKERS).unwrap();
    }
    s
}

/// Seen failing with the [`FIXED_KEYS`] check left out (`segment.bytes` then changes).
#[test]
fn refusals_carry_their_code_name_the_key_and_change_nothing() {
    let s = state();
    let cases: Vec<(Command, ErrorCode, &str)> = vec![
        (
            alter("nope", &[("retention.ms", "1")], &[]),
            ErrorCode::UNKNOWN_TOPIC_OR_PARTITION,
            "nope",
        ),
        (
            alter("__consumer_offsets", &[("retention.ms", "1")], &[]),
            ErrorCode::INVALID_TOPIC,
            "internal",
        ),
        (
            alter("t", &[("retention.ms", "soon")], &[]),
            ErrorCode::INVALID_CONFIG,
            "retention.ms must be an integer",
        ),
        (
            alter("t", &[("retention.bytes", "0")], &[]),
            ErrorCode::INVALID_CONFIG,
            "retention.bytes must be positive or -1",
        ),
        (
            alter("t", &[("retention.size", "1")], &[]),
            ErrorCode::INVALID_CONFIG,
            "unknown topic config \"retention.size\"",
        ),
        (
            alter("t", &[], &["retention.size"]),
            ErrorCode::INVALID_CONFIG,
            "unknown topic config \"retention.size\"",
        ),
        (
            alter("t", &[("retention.ms", "1"), ("retention.ms", "2")], &[]),
            ErrorCode::INVALID_CONFIG,
            "retention.ms is named twice",
        ),
        (
            alter("t", &[("retention.ms", "1")], &["retention.ms"]),
            ErrorCode::INVALID_CONFIG,
            "retention.ms is named twice",
        ),
        (
            alter("t", &[("segment.bytes", "8192")], &[]),
            ErrorCode::INVALID_CONFIG,
            "segment.bytes cannot change on a live topic",
        ),
        (
            alter("t", &[], &["segment.bytes"]),
            ErrorCode::INVALID_CONFIG,
            "segment.bytes cannot change on a live topic",
        ),
        (
            alter("t", &[("segment.ms", "60000")], &[]),
            ErrorCode::INVALID_CONFIG,
            "segment.ms cannot change on a live topic",
        ),
        (
            alter("t", &[("producer.ids.max", "5")], &[]),
            ErrorCode::INVALID_CONFIG,
            "producer.ids.max cannot change on a live topic",
        ),
        (
            alter("t", &[("producer.id.expiration.ms", "5")], &[]),
            ErrorCode::INVALID_CONFIG,
            "producer.id.expiration.ms cannot change on a live topic",
        ),
        (
            alter("sink", &[("cleanup.policy", "delete")], &[]),
            ErrorCode::INVALID_CONFIG,
            "sink of window operator \"op\"",
        ),
        (
            alter("sink", &[], &["cleanup.policy"]),
            ErrorCode::INVALID_CONFIG,
            "sink of window operator \"op\"",
        ),
    ];
    for (cmd, code, needle) in cases {
        let mut after = s.clone();
        let e = after.apply(&cmd, &BROKERS).unwrap_err();
        assert_eq!(e.code, code, "{cmd:?}: {e:?}");
        assert!(e.message.contains(needle), "{cmd:?}: {}", e.message);
        assert_eq!(after, s, "{cmd:?} changed the state");
    }
}

#[test]
fn changes_merge_normalise_and_replay_through_the_log_encoding_and_a_snapshot() {
    let mut a = state();
    let mut b = state();
    let cmds = [
        // A fixed key at its current value is no change, so it passes.
        alter(
            "t",
            &[("retention.bytes", "08192"), ("segment.bytes", "4096")],
            &[],
        ),
        alter("t", &[("retention.ms", "60000")], &[]),
        alter("t", &[("segment.bytes", "65536")], &[]),
        alter("t", &[("cleanup.policy", "compact")], &["retention.bytes"]),
        // The sink may stay compacted; other keys of it change.
        alter("sink", &[("retention.ms", "1000")], &[]),
    ];
    let results: Vec<bool> = cmds.iter().map(|c| a.apply(c, &BROKERS).is_ok()).collect();
    assert_eq!(results, vec![true, true, false, true, true]);
    // Another replica reads the commands from the log (JSON) and restarts half way from a
    // snapshot (JSON): it ends in the same state. Seen failing with `set` marked
    // `#[serde(skip)]`.
    for (i, c) in cmds.iter().enumerate() {
        if i == 2 {
            b = serde_json::from_slice(&serde_json::to_vec(&b).unwrap()).unwrap();
        }
        let c: Command = serde_json::from_str(&serde_json::to_string(c).unwrap()).unwrap();
        let _ = b.apply(&c, &BROKERS);
    }
    assert_eq!(a, b);
    assert_eq!(config(&a, "t", "retention.ms"), "60000");
    // Deleted: back to the default (unlimited), not removed.
    assert_eq!(config(&a, "t", "retention.bytes"), "-1");
    assert_eq!(config(&a, "t", "cleanup.policy"), "compact");
    assert_eq!(config(&a, "t", "segment.bytes"), "4096");
    assert_eq!(config(&a, "sink", "retention.ms"), "1000");
    assert_eq!(
        a.topics["t"].configs.len(),
        TopicSettings::default().to_pairs().len(),
        "every key once"
    );
    // Values are normalised as on create.
    let mut c = state();
    c.apply(&cmds[0], &BROKERS).unwrap();
    assert_eq!(config(&c, "t", "retention.bytes"), "8192");
    // The command as the log carries it; one without `set` or `delete` still reads.
    let json = serde_json::to_string(&cmds[1]).unwrap();
    assert!(json.contains("\"op\":\"alter_topic_config\""), "{json}");
    let bare: Command = serde_json::from_str(r#"{"op":"alter_topic_config","name":"t"}"#).unwrap();
    assert_eq!(bare, alter("t", &[], &[]));
}
