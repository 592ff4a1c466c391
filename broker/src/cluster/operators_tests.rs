//! Tests of the operator commands: every refusal the issue lists changes nothing; a creation makes
//! the compacted sink with the source's partitions, the late and dead-letter topics, and one
//! producer id per source partition; pause, resume and delete; and all of it survives the log
//! encoding and a snapshot.
#![allow(clippy::unwrap_used)]
use super::*;

const BROKERS: [u32; 3] = [1, 2, 3];

fn def(name: &str, source: &str, sink: &str) -> OperatorDef {
    OperatorDef {
        name: name.into(),
        source: source.into(),
        sink: sink.into(),
        window: "tumbling:10s".into(),
        time: "record".into(),
        value: "number".into(),
        aggregates: vec!["sum".into(), "count".into()],
        ..OperatorDef::default()
    }
}

fn create(def: OperatorDef) -> Command {
    Command::CreateOperator {
        def: Box::new(def),
        created_ms: 1_700_000_000_000,
    }
}

/// A state with topics `src` (4 partitions, 2 replicas each), `plain` (not compacted) and
/// `compacted`.
fn state() -> ClusterState {
    let mut s = ClusterState::default();
    for (name, partitions, configs) in [
        ("src", 4, vec![]),
        ("plain", 1, vec![]),
        (
            "compacted",
            4,
            vec![("cleanup.policy".into(), "compact".into())],
        ),
        ("__internal", 1, vec![]),
    ] {
        s.apply(
            &Command::CreateTopic {
                name: name.into(),
                partitions,
                replication_factor: 2,
                configs,
            },
            &BROKERS,
        )
        .unwrap();
    }
    s.next_producer_id = 100;
    s
}

#[test]
fn bad_definitions_are_refused_with_the_reason_and_change_nothing() {
    let with = |f: &dyn Fn(&mut OperatorDef)| {
        let mut d = def("op", "src", "out");
        f(&mut d);
        d
    };
    let cases: Vec<(OperatorDef, ErrorCode, &str)> = vec![
        (
            with(&|d| d.name = String::new()),
            ErrorCode::INVALID_OPERATOR,
            "1 to 249",
        ),
        (
            with(&|d| d.name = "a".repeat(250)),
            ErrorCode::INVALID_OPERATOR,
            "1 to 249",
        ),
        (
            with(&|d| d.name = "..".into()),
            ErrorCode::INVALID_OPERATOR,
            "not an operator name",
        ),
        (
            with(&|d| d.name = "bad name".into()),
            ErrorCode::INVALID_OPERATOR,
            "may only contain",
        ),
        (
            with(&|d| d.window = "tumbling:0s".into()),
            ErrorCode::INVALID_OPERATOR,
            "positive",
        ),
        (
            with(&|d| d.window = "tumbling:-5s".into()),
            ErrorCode::INVALID_OPERATOR,
            "not a duration",
        ),
        (
            with(&|d| d.window = "sliding:1m:7s".into()),
            ErrorCode::INVALID_OPERATOR,
            "must divide",
        ),
        (
            with(&|d| d.window = "hopping:1s".into()),
            ErrorCode::INVALID_OPERATOR,
            "not a window",
        ),
        (
            with(&|d| d.time = "wall".into()),
            ErrorCode::INVALID_OPERATOR,
            "time source",
        ),
        (
            with(&|d| d.value = "field:".into()),
            ErrorCode::INVALID_OPERATOR,
            "value source",
        ),
        (
            with(&|d| d.aggregates = vec!["median".into()]),
            ErrorCode::INVALID_OPERATOR,
            "median",
        ),
        (
            with(&|d| d.aggregates = vec![]),
            ErrorCode::INVALID_OPERATOR,
            "at least one",
        ),
        (
            with(&|d| d.out_of_orderness_ms = -1),
            ErrorCode::INVALID_OPERATOR,
            "out-of-orderness",
        ),
        (
            with(&|d| d.idle_timeout_ms = Some(0)),
            ErrorCode::INVALID_OPERATOR,
            "idle timeout",
        ),
        (
            with(&|d| d.source = "missing".into()),
            ErrorCode::INVALID_OPERATOR,
            "does not exist",
        ),
        (
            with(&|d| d.source = "__internal".into()),
            ErrorCode::INVALID_OPERATOR,
            "internal",
        ),
        (
            with(&|d| d.sink = "src".into()),
            ErrorCode::INVALID_OPERATOR,
            "differ from the source",
        ),
        (
            with(&|d| d.sink = String::new()),
            ErrorCode::INVALID_OPERATOR,
            "sink topic is needed",
        ),
        (
            with(&|d| d.sink = "plain".into()),
            ErrorCode::INVALID_OPERATOR,
            "not compacted",
        ),
        (
            with(&|d| d.sink = "__x".into()),
            ErrorCode::INVALID_OPERATOR,
            "internal",
        ),
        (
            with(&|d| d.sink = "bad name".into()),
            ErrorCode::INVALID_OPERATOR,
            "cannot create topic",
        ),
        (
            with(&|d| d.late_topic = Some("out".into())),
            ErrorCode::INVALID_OPERATOR,
            "differ from the sink",
        ),
        (
            with(&|d| d.dead_letter_topic = Some("out".into())),
            ErrorCode::INVALID_OPERATOR,
            "differ from the sink",
        ),
        (
            with(&|d| d.late_topic = Some("src".into())),
            ErrorCode::INVALID_OPERATOR,
            "differ from the source",
        ),
    ];
    for (d, code, needle) in cases {
        let mut s = state();
        let before = s.clone();
        let e = s.apply(&create(d.clone()), &BROKERS).unwrap_err();
        assert_eq!(e.code, code, "{d:?}: {e}");
        assert!(
            e.message.contains(needle),
            "{d:?}: {:?} lacks {needle:?}",
            e.message
        );
        assert_eq!(s, before, "{d:?}: a refusal changed the state");
    }
    // A duplicate name.
    let mut s = state();
    s.apply(&create(def("op", "src", "out")), &BROKERS).unwrap();
    let before = s.clone();
    let e = s
        .apply(&create(def("op", "src", "other")), &BROKERS)
        .unwrap_err();
    assert_eq!(e.code, ErrorCode::OPERATOR_ALREADY_EXISTS, "{e}");
    assert_eq!(s, before);
    assert!(!s.topics.contains_key("other"));
}

#[test]
fn a_creation_makes_the_missing_topics_and_one_producer_id_per_source_partition() {
    let mut s = state();
    let mut d = def("op", "src", "out");
    d.window = "sliding:60000ms:10s".into();
    d.late_topic = Some("late".into());
    d.dead_letter_topic = Some("bad".into());
    s.apply(&create(d), &BROKERS).unwrap();
    let sink = &s.topics["out"];
    assert_eq!(sink.replicas.len(), 4, "as many partitions as the source");
    assert_eq!(sink.replicas[0].len(), 2, "the source's replication factor");
    assert!(TopicSettings::from_pairs(&sink.configs).unwrap().compact);
    for t in ["late", "bad"] {
        assert_eq!(s.topics[t].replicas.len(), 4);
        assert!(
            !TopicSettings::from_pairs(&s.topics[t].configs)
                .unwrap()
                .compact
        );
    }
    let o = &s.operators["op"];
    assert_eq!(o.producer_ids, vec![100, 101, 102, 103]);
    assert_eq!(
        s.next_producer_id, 104,
        "the ids are taken from the allocator"
    );
    assert_eq!(o.source_id, s.topics["src"].id);
    assert_eq!(o.created_ms, 1_700_000_000_000);
    assert!(!o.paused);
    // Stored canonical.
    assert_eq!(o.def.window, "sliding:1m:10s");
    assert_eq!(o.def.aggregates, vec!["count", "sum"]);
    assert_eq!(o.def.max_state_bytes, DEFAULT_MAX_STATE_BYTES);

    // An existing compacted sink is used as it is.
    let before = s.topics["compacted"].clone();
    s.apply(&create(def("op2", "src", "compacted")), &BROKERS)
        .unwrap();
    assert_eq!(s.topics["compacted"], before);
}

#[test]
fn pause_resume_and_delete_and_the_state_survives_the_log_encoding_and_a_snapshot() {
    let mut s = state();
    let cmds = [
        create(def("a", "src", "out")),
        create(def("b", "src", "out")),
        Command::AlterOperator {
            name: "a".into(),
            paused: true,
        },
        Command::AlterOperator {
            name: "b".into(),
            paused: true,
        },
        Command::AlterOperator {
            name: "b".into(),
            paused: false,
        },
        Command::DeleteOperator { name: "b".into() },
    ];
    let mut replayed = s.clone();
    for c in &cmds {
        s.apply(c, &BROKERS).unwrap();
        let json = serde_json::to_vec(c).unwrap();
        let back: Command = serde_json::from_slice(&json).unwrap();
        replayed.apply(&back, &BROKERS).unwrap();
    }
    assert!(s.operators["a"].paused);
    assert!(!s.operators.contains_key("b"));
    assert!(
        s.topics.contains_key("out"),
        "deleting an operator keeps its sink"
    );
    assert_eq!(s, replayed);
    let snapshot: ClusterState = serde_json::from_slice(&serde_json::to_vec(&s).unwrap()).unwrap();
    assert_eq!(snapshot, s);
    // An older snapshot without operators still reads.
    let mut old = serde_json::to_value(&s).unwrap();
    old.as_object_mut().unwrap().remove("operators");
    let old: ClusterState = serde_json::from_value(old).unwrap();
    assert!(old.operators.is_empty());

    for c in [
        Command::AlterOperator {
            name: "b".into(),
            paused: true,
        },
        Command::DeleteOperator { name: "b".into() },
    ] {
        let e = s.apply(&c, &BROKERS).unwrap_err();
        assert_eq!(e.code, ErrorCode::OPERATOR_NOT_FOUND, "{e}");
    }
}

#[test]
fn durations_print_in_their_largest_exact_unit() {
    assert_eq!(format_duration(10_000), "10s");
    assert_eq!(format_duration(300_000), "5m");
    assert_eq!(format_duration(1500), "1500ms");
    assert_eq!(format_duration(86_400_000), "1d");
    assert_eq!(format_duration(0), "0ms");
}
