//! Changing a live topic's settings (`sluice topic alter`, wire API AlterTopicConfigs) against real
//! brokers: a retention lowered on a topic with several segments moves its log start at the next
//! maintenance, without reopening the replicas; the change survives a restart (`topic.json` too);
//! bad keys and values are refused with their code and a message naming the key; and on a
//! three-broker cluster every replica's log start moves.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use sluice_protocol::wire::{Acks, AlterTopicConfigsRequest, ErrorCode, Request, Response, LATEST};
use sluice_tests::cli::sluice;
use sluice_tests::cluster::{create, eventually, leaders, Cluster};
use sluice_tests::{batch_at, Broker, RawConn};

/// Maintenance every 100 ms, and raft snapshots often enough that retention may delete what raft
/// no longer needs.
const MAINTAIN: &[&str] = &[
    "--maintenance-interval-ms",
    "100",
    "--raft-snapshot-entries",
    "20",
    "--raft-keep-entries",
    "5",
];

/// What a broker logs (at debug) after each maintenance round, and the harness's log filter
/// (`sluice_tests::DEFAULT_LOG`) with that line.
const ROUND_DONE: &str = "maintenance round done";
const MAINTAIN_LOG: &str =
    "warn,openraft=error,sluice_broker::replica::services=info,sluice_broker::node::maintenance=debug";

/// 4 KiB segments; a retention that never deletes any of what the tests write.
const TOPIC_CONFIGS: &[&str] = &[
    "--config",
    "segment.bytes=4096",
    "--config",
    "retention.bytes=1000000000",
];

/// Produces `n` batches of 5 records stamped now (so the default `retention.ms` keeps them) to
/// `topic`/0 (acks `all`) and returns the log end.
fn fill(c: &mut RawConn, topic: &str, tag: &str, n: usize) -> u64 {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    for i in 0..n {
        let b = batch_at(&format!("{tag}{i}"), 5, now);
        let r = c.produce_acks(topic, 0, b, Acks::All);
        assert_eq!(r.error, ErrorCode::NONE, "{}", r.message);
    }
    c.list_offset(topic, 0, LATEST).offset as u64
}

/// Partition 0's log start on the broker at `addr` (its own replica's).
fn log_start(addr: std::net::SocketAddr, topic: &str) -> Option<u64> {
    let mut c = RawConn::try_connect(addr)?;
    let m = c.try_metadata(Some(vec![topic.to_string()]))?;
    Some(m.topics.first()?.partitions.first()?.log_start_offset)
}

/// The wire answer to an AlterTopicConfigs request.
fn alter_raw(c: &mut RawConn, name: &str, set: &[(&str, &str)], delete: &[&str]) -> Response {
    c.call(&Request::AlterTopicConfigs(AlterTopicConfigsRequest {
        name: name.into(),
        set: set
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        delete: delete.iter().map(|k| k.to_string()).collect(),
    }))
    .unwrap()
}

fn topic_json(broker: &Broker, topic: &str) -> String {
    std::fs::read_to_string(
        broker
            .data_dir()
            .join("topics")
            .join(topic)
            .join("topic.json"),
    )
    .unwrap()
}

/// Seen failing (the log start never passed half the log) with the reconciler's call to
/// `update_settings` left out: the metadata had the new retention, the open replica did not.
#[test]
fn lowered_retention_moves_the_log_start_survives_a_restart_and_bad_changes_are_refused() {
    let mut broker = Broker::start_logging(MAINTAIN, MAINTAIN_LOG);
    let a = broker.addr;
    let mut args = vec!["topic", "create", "t"];
    args.extend_from_slice(TOPIC_CONFIGS);
    sluice(a, &args, None).ok();
    let mut c = RawConn::connect(a);
    let end = fill(&mut c, "t", "a", 200);
    // Several maintenance rounds with the creation's retention delete none of the records (only
    // a first segment of raft's own entries, stamped long ago, may go by `retention.ms`): three
    // more rounds done, so at least two ran wholly after the fill.
    let rounds = broker.log_lines(ROUND_DONE).len();
    eventually(Duration::from_secs(30), "maintenance rounds", || {
        (broker.log_lines(ROUND_DONE).len() >= rounds + 3).then_some(())
    });
    let before = log_start(a, "t").unwrap();
    assert!(before < end / 10, "{before} of {end}");

    let out = sluice(
        a,
        &["topic", "alter", "t", "--config", "retention.bytes=8192"],
        None,
    )
    .ok();
    assert!(out.starts_with("Topic: t\nConfigs:\n"), "{out}");
    assert!(out.contains("  retention.bytes=8192\n"), "{out}");
    assert!(out.contains("  segment.bytes=4096\n"), "{out}");
    let moved = eventually(
        Duration::from_secs(30),
        "retention by the new limit",
        || log_start(a, "t").filter(|s| *s > end / 2),
    );
    assert!(moved < end, "the active segment stays: {moved} of {end}");
    let described = sluice(a, &["topic", "describe", "t"], None).ok();
    assert!(
        described.contains("  retention.bytes=8192\n"),
        "{described}"
    );
    assert!(topic_json(&broker, "t").contains("\"8192\""));

    // After a restart the replica opens with the new settings and keeps applying them.
    assert_eq!(broker.terminate(), Some(0));
    broker.restart();
    let a = broker.addr;
    assert!(topic_json(&broker, "t").contains("\"8192\""));
    let described = eventually(Duration::from_secs(30), "describe after restart", || {
        let r = sluice(a, &["topic", "describe", "t"], None);
        (r.code == 0).then_some(r.stdout)
    });
    assert!(
        described.contains("  retention.bytes=8192\n"),
        "{described}"
    );
    let mut c = RawConn::connect(a);
    let end = fill(&mut c, "t", "b", 200);
    eventually(
        Duration::from_secs(30),
        "retention after the restart",
        || log_start(a, "t").filter(|s| *s > moved + (end - moved) / 2),
    );

    // Back to the default (unlimited), which describe shows.
    let out = sluice(
        a,
        &["topic", "alter", "t", "--delete-config", "retention.bytes"],
        None,
    )
    .ok();
    assert!(out.contains("  retention.bytes=-1\n"), "{out}");

    // Refusals: a message naming the key (exit code 1), the right code on the wire, and no change.
    for (args, needle) in [
        (
            vec!["--config", "segment.bytes=8192"],
            "segment.bytes cannot change on a live topic",
        ),
        (
            vec!["--config", "retention.ms=soon"],
            "invalid topic config: retention.ms must be an integer",
        ),
        (vec!["--config", "nope=1"], "unknown topic config \"nope\""),
        (
            vec!["--delete-config", "nope"],
            "unknown topic config \"nope\"",
        ),
        (
            vec!["--config", "producer.ids.max=5"],
            "producer.ids.max cannot change on a live topic",
        ),
    ] {
        let mut full = vec!["topic", "alter", "t"];
        full.extend_from_slice(&args);
        let message = sluice(a, &full, None).user_error();
        assert!(message.contains(needle), "{args:?}: {message}");
    }
    let message = sluice(
        a,
        &["topic", "alter", "missing", "--config", "retention.ms=1"],
        None,
    )
    .user_error();
    assert_eq!(message, "topic 'missing' does not exist");
    let message = sluice(
        a,
        &["topic", "alter", "__offsets", "--config", "retention.ms=1"],
        None,
    )
    .user_error();
    assert!(message.contains("internal topic"), "{message}");
    // Nothing to change is a usage error.
    sluice(a, &["topic", "alter", "t"], None).usage_error();
    for (name, set, code) in [
        ("t", ("segment.ms", "1000"), ErrorCode::INVALID_CONFIG),
        ("t", ("retention.ms", "-5"), ErrorCode::INVALID_CONFIG),
        (
            "missing",
            ("retention.ms", "1"),
            ErrorCode::UNKNOWN_TOPIC_OR_PARTITION,
        ),
        ("__offsets", ("retention.ms", "1"), ErrorCode::INVALID_TOPIC),
    ] {
        let Response::AlterTopicConfigs(r) = alter_raw(&mut c, name, &[set], &[]) else {
            panic!("wrong response")
        };
        assert_eq!(r.error, code, "{name} {set:?}: {}", r.message);
        assert!(r.configs.is_empty());
    }
    let described = sluice(a, &["topic", "describe", "t"], None).ok();
    assert!(described.contains("  segment.bytes=4096\n"), "{described}");
    assert!(
        described.contains("  retention.ms=604800000\n"),
        "{described}"
    );
}

/// On three brokers a change sent to any of them reaches every replica: each one's log start
/// moves and each one's `topic.json` holds the new retention. Seen failing (the first broker's
/// log start never passed half the log) with maintenance applying the retention the logs were
/// opened with.
#[test]
fn a_change_reaches_every_replica_of_a_cluster() {
    let mut flags = vec![
        "--raft-heartbeat-ms",
        "100",
        "--raft-election-timeout-ms",
        "800",
    ];
    flags.extend_from_slice(MAINTAIN);
    let cluster = Cluster::start(3, &flags);
    create(
        &cluster,
        "r",
        1,
        3,
        &[("segment.bytes", "4096"), ("retention.bytes", "1000000000")],
    );
    let leader = leaders(&cluster, "r", 1).unwrap()[0];
    let mut c = RawConn::connect(cluster.addr(leader));
    let end = fill(&mut c, "r", "a", 200);
    for m in &cluster.members {
        eventually(Duration::from_secs(60), "every replica caught up", || {
            let mut f = RawConn::try_connect(m.proxy.addr)?;
            let meta = f.try_metadata(Some(vec!["r".to_string()]))?;
            let p = meta.topics.first()?.partitions.first()?;
            (p.high_watermark >= end).then_some(())
        });
    }
    for m in &cluster.members {
        let before = log_start(m.proxy.addr, "r").unwrap();
        assert!(before < end / 10, "broker {}: {before} of {end}", m.id);
    }
    // Through a follower: the change is forwarded to the metadata leader.
    let via = (leader % 3) + 1;
    let out = sluice(
        cluster.addr(via),
        &["topic", "alter", "r", "--config", "retention.bytes=8192"],
        None,
    )
    .ok();
    assert!(out.contains("  retention.bytes=8192\n"), "{out}");
    for m in &cluster.members {
        eventually(
            Duration::from_secs(60),
            &format!("retention on broker {}", m.id),
            || log_start(m.proxy.addr, "r").filter(|s| *s > end / 2),
        );
        eventually(
            Duration::from_secs(30),
            &format!("topic.json on broker {}", m.id),
            || {
                topic_json(&m.broker, "r")
                    .contains("\"8192\"")
                    .then_some(())
            },
        );
    }
}
