//! The `sluice` command-line client run as a user runs it, against a real broker: topic create, list,
//! describe and delete; `cluster info`; produce from stdin and from a file, with and without a key
//! separator; consume in every format, with `-n`, `--offset`, `--partition`, `--timestamp` and
//! `--follow`; and the errors a user can cause: unknown topics and partitions, a broker that is down,
//! an existing topic, bad topic configs, input without the key separator (exit code 1, one
//! `sluice: ...` line on stderr), and bad flags (exit code 2, from clap).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::Value;
use sluice_tests::cli::{self, command, Run};
use sluice_tests::{sluice_bin, Broker};

/// Runs `sluice ARGS --broker ADDR` with `stdin` as its input.
fn sluice_in(addr: &str, args: &[&str], stdin: &str) -> Run {
    cli::sluice(addr, args, Some(stdin))
}

/// Runs `sluice ARGS --broker ADDR` with empty stdin.
fn sluice(addr: &str, args: &[&str]) -> Run {
    sluice_in(addr, args, "")
}

fn produce(addr: &str, args: &[&str], input: &str) -> String {
    let run = sluice_in(addr, args, input);
    assert_eq!(run.code, 0, "produce failed: {}", run.stderr);
    run.stderr
}

/// Every line of `consume ... --format json`, parsed.
fn consume_json(addr: &str, topic: &str, extra: &[&str]) -> Vec<Value> {
    let mut args = vec!["consume", topic, "--format", "json"];
    args.extend_from_slice(extra);
    sluice(addr, &args)
        .ok()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// A loopback port nothing listens on.
fn closed_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

#[test]
fn topics_create_list_describe_delete_and_cluster_info() {
    let broker = Broker::start(&[]);
    let addr = broker.addr.to_string();
    let a = addr.as_str();

    let out = sluice(
        a,
        &[
            "topic",
            "create",
            "orders",
            "--partitions",
            "3",
            "--config",
            "retention.ms=3600000",
            "--config",
            "cleanup.policy=compact",
        ],
    )
    .ok();
    assert!(out.contains("orders"), "{out}");
    sluice(a, &["topic", "create", "events"]).ok();

    // One line per topic: name and partition count.
    let list = sluice(a, &["topic", "list"]).ok();
    let rows: Vec<Vec<&str>> = list
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(rows, vec![vec!["events", "1"], vec!["orders", "3"]]);

    // The broker address also comes from SLUICE_BROKER (here without --broker).
    let out = Command::new(sluice_bin())
        .args(["topic", "list"])
        .env("SLUICE_BROKER", a)
        .output()
        .unwrap();
    assert_eq!(Run::from_output(out).ok(), list);

    let describe = sluice(a, &["topic", "describe", "orders"]).ok();
    assert!(describe.contains("Topic: orders"), "{describe}");
    assert!(describe.contains("Partitions: 3"), "{describe}");
    assert!(describe.contains("retention.ms=3600000"), "{describe}");
    assert!(describe.contains("cleanup.policy=compact"), "{describe}");
    let partitions: Vec<Vec<&str>> = describe
        .lines()
        .skip_while(|l| !l.starts_with("PARTITION"))
        .skip(1)
        .map(|l| l.split_whitespace().collect())
        .collect();
    // partition, leader, replicas, high watermark, log start offset (the high watermark counts
    // raft's first two entries: the initial membership and the leader's blank entry)
    assert_eq!(
        partitions,
        vec![
            vec!["0", "1", "1", "2", "0"],
            vec!["1", "1", "1", "2", "0"],
            vec!["2", "1", "1", "2", "0"],
        ]
    );

    // High watermarks show up in describe and cluster info.
    produce(a, &["produce", "events"], "x\ny\n");
    let describe = sluice(a, &["topic", "describe", "events"]).ok();
    let last = describe.lines().last().unwrap();
    assert_eq!(
        last.split_whitespace().collect::<Vec<_>>(),
        ["0", "1", "1", "4", "0"]
    );

    let info = sluice(a, &["cluster", "info"]).ok();
    assert!(info.contains(&format!("1     {a}")), "{info}");
    assert!(info.contains("Controller: 1"), "{info}");
    let partition_rows: Vec<Vec<&str>> = info
        .lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .filter(|r| r.first().is_some_and(|t| *t == "events" || *t == "orders"))
        .collect();
    // topic, partition, leader, replicas, high watermark
    assert_eq!(
        partition_rows,
        vec![
            vec!["events", "0", "1", "1", "4"],
            vec!["orders", "0", "1", "1", "2"],
            vec!["orders", "1", "1", "1", "2"],
            vec!["orders", "2", "1", "1", "2"],
        ]
    );

    let out = sluice(a, &["topic", "delete", "events"]).ok();
    assert!(out.contains("events"), "{out}");
    let list = sluice(a, &["topic", "list"]).ok();
    assert_eq!(list.split_whitespace().collect::<Vec<_>>(), ["orders", "3"]);
    let m = sluice(a, &["topic", "describe", "events"]).user_error();
    assert_eq!(m, "topic 'events' does not exist");
}

#[test]
fn produce_and_consume_in_every_format() {
    let broker = Broker::start(&[]);
    let addr = broker.addr.to_string();
    let a = addr.as_str();
    sluice(a, &["topic", "create", "t"]).ok();

    let summary = produce(a, &["produce", "t"], "a\nb\nc\n");
    assert!(summary.contains("produced 3 records"), "{summary}");
    let summary = produce(
        a,
        &[
            "produce",
            "t",
            "--key-separator",
            ":",
            "--compression",
            "lz4",
            "--acks",
            "leader",
        ],
        "k1:v1\nk2:v:2\n",
    );
    assert!(summary.contains("produced 2 records"), "{summary}");
    // From a file; the last line has no newline.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("input.txt");
    std::fs::write(&file, "f1\r\nf2").unwrap();
    let summary = produce(
        a,
        &[
            "produce",
            "t",
            "--file",
            file.to_str().unwrap(),
            "--compression",
            "zstd",
        ],
        "",
    );
    assert!(summary.contains("produced 2 records"), "{summary}");

    assert_eq!(
        sluice(a, &["consume", "t"]).ok(),
        "a\nb\nc\nv1\nv:2\nf1\nf2\n"
    );
    assert_eq!(
        sluice(
            a,
            &["consume", "t", "--from-beginning", "--format", "key-value"]
        )
        .ok(),
        "\ta\n\tb\n\tc\nk1\tv1\nk2\tv:2\n\tf1\n\tf2\n"
    );
    assert_eq!(sluice(a, &["consume", "t", "-n", "2"]).ok(), "a\nb\n");
    assert_eq!(
        // Offsets 0 and 1 hold raft's first entries (control batches consumers skip).
        sluice(a, &["consume", "t", "--offset", "5"]).ok(),
        "v1\nv:2\nf1\nf2\n"
    );
    assert_eq!(
        sluice(
            a,
            &[
                "consume",
                "t",
                "--offset",
                "3",
                "--count",
                "1",
                "--partition",
                "0"
            ]
        )
        .ok(),
        "b\n"
    );
    // The end of the log: nothing to print.
    assert_eq!(sluice(a, &["consume", "t", "--offset", "9"]).ok(), "");

    let records = consume_json(a, "t", &[]);
    assert_eq!(records.len(), 7);
    let before = now_ms();
    for (i, r) in records.iter().enumerate() {
        assert_eq!(r["topic"], "t");
        assert_eq!(r["partition"], 0);
        assert_eq!(r["offset"], i as u64 + 2);
        let ts = r["timestamp"].as_i64().unwrap();
        assert!(ts > 0 && ts <= before, "{r}");
        assert_eq!(r["headers"], Value::Array(vec![]));
    }
    assert_eq!(records[0]["key"], Value::Null);
    assert_eq!(records[0]["value"], "a");
    assert_eq!(records[4]["key"], "k2");
    assert_eq!(records[4]["value"], "v:2");
    let two = consume_json(a, "t", &["--offset", "5", "-n", "2"]);
    let pairs: Vec<(&str, &str)> = two
        .iter()
        .map(|r| (r["key"].as_str().unwrap(), r["value"].as_str().unwrap()))
        .collect();
    assert_eq!(pairs, [("k1", "v1"), ("k2", "v:2")]);

    // --follow with -n stops once it has printed N records, including ones produced after it
    // started (it is positioned explicitly at the current end, so the order does not matter).
    let mut follower = command(a, &["consume", "t", "--follow", "--offset", "9", "-n", "2"])
        .stdin(Stdio::null())
        .spawn()
        .unwrap();
    produce(a, &["produce", "t"], "late1\nlate2\nlate3\n");
    let out = wait_bounded(&mut follower);
    assert_eq!(out.ok(), "late1\nlate2\n");
}

/// Waits for a child that should end by itself; kills it (and fails) if it does not within a
/// minute, so a bug cannot hang the test run.
fn wait_bounded(child: &mut Child) -> Run {
    let deadline = Instant::now() + Duration::from_secs(60);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("sluice consume --follow did not stop after -n records");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let mut stdout = String::new();
    let mut stderr = String::new();
    use std::io::Read;
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut stdout)
        .unwrap();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    Run {
        code: child.wait().unwrap().code().unwrap(),
        stdout,
        stderr,
    }
}

#[test]
fn keyed_records_across_partitions() {
    let broker = Broker::start(&[]);
    let addr = broker.addr.to_string();
    let a = addr.as_str();
    sluice(a, &["topic", "create", "keyed", "--partitions", "3"]).ok();
    produce(
        a,
        &["produce", "keyed", "--key-separator", "=>"],
        "a=>1\nb=>2\nc=>3\na=>4\nb=>5\n",
    );
    // Without --partition every partition is read.
    let mut lines: Vec<String> = sluice(a, &["consume", "keyed", "--format", "key-value"])
        .ok()
        .lines()
        .map(str::to_string)
        .collect();
    lines.sort();
    assert_eq!(lines, ["a\t1", "a\t4", "b\t2", "b\t5", "c\t3"]);
    // Equal keys share a partition, and per partition the order is kept.
    let records = consume_json(a, "keyed", &[]);
    let partition_of = |key: &str| -> Vec<u64> {
        records
            .iter()
            .filter(|r| r["key"] == key)
            .map(|r| r["partition"].as_u64().unwrap())
            .collect()
    };
    let pa = partition_of("a");
    assert_eq!(pa.len(), 2);
    assert_eq!(pa[0], pa[1]);
    let p = pa[0].to_string();
    let values: Vec<String> = sluice(a, &["consume", "keyed", "--partition", &p])
        .ok()
        .lines()
        .map(str::to_string)
        .collect();
    let pos = |v: &str| values.iter().position(|x| x == v).unwrap();
    assert!(pos("1") < pos("4"), "{values:?}");
    // An explicit partition for produce.
    produce(a, &["produce", "keyed", "--partition", "2"], "p2\n");
    let last = consume_json(a, "keyed", &["--partition", "2"]);
    assert_eq!(last.last().unwrap()["value"], "p2");
}

#[test]
fn consume_from_a_timestamp() {
    let broker = Broker::start(&[]);
    let addr = broker.addr.to_string();
    let a = addr.as_str();
    sluice(a, &["topic", "create", "ts"]).ok();
    produce(a, &["produce", "ts"], "old1\nold2\n");
    let old = consume_json(a, "ts", &[]);
    let newest_old = old
        .iter()
        .map(|r| r["timestamp"].as_i64().unwrap())
        .max()
        .unwrap();
    // Records produced from now on have a later timestamp than every old one.
    while now_ms() <= newest_old {
        std::thread::sleep(Duration::from_millis(1));
    }
    produce(a, &["produce", "ts"], "new1\nnew2\n");

    let from = (newest_old + 1).to_string();
    assert_eq!(
        sluice(a, &["consume", "ts", "--timestamp", &from]).ok(),
        "new1\nnew2\n"
    );
    assert_eq!(
        sluice(a, &["consume", "ts", "--timestamp", "0"]).ok(),
        "old1\nold2\nnew1\nnew2\n"
    );
    // After every record: nothing.
    let future = (now_ms() + 3_600_000).to_string();
    assert_eq!(
        sluice(a, &["consume", "ts", "--timestamp", &future]).ok(),
        ""
    );
}

#[test]
fn user_errors_are_one_clear_line_with_exit_code_1() {
    let broker = Broker::start(&[]);
    let addr = broker.addr.to_string();
    let a = addr.as_str();
    sluice(a, &["topic", "create", "dup"]).ok();

    // Unknown topics.
    for args in [
        &["consume", "nosuch"][..],
        &["topic", "describe", "nosuch"],
        &["topic", "delete", "nosuch"],
    ] {
        assert_eq!(
            sluice(a, args).user_error(),
            "topic 'nosuch' does not exist",
            "{args:?}"
        );
    }
    assert_eq!(
        sluice_in(a, &["produce", "nosuch"], "x\n").user_error(),
        "topic 'nosuch' does not exist"
    );

    // Existing topic, bad configs, bad partition counts the broker refuses.
    assert_eq!(
        sluice(a, &["topic", "create", "dup"]).user_error(),
        "topic 'dup' already exists"
    );
    let m = sluice(
        a,
        &["topic", "create", "bad", "--config", "retention.ms=soon"],
    )
    .user_error();
    assert!(
        m.starts_with("invalid topic config") && m.contains("retention.ms"),
        "{m}"
    );
    let m = sluice(a, &["topic", "create", "bad", "--config", "colour=blue"]).user_error();
    assert!(
        m.starts_with("invalid topic config") && m.contains("colour"),
        "{m}"
    );
    let m = sluice(a, &["topic", "create", "bad", "--partitions", "100000"]).user_error();
    assert!(m.starts_with("invalid partition count"), "{m}");
    let m = sluice(a, &["topic", "create", "bad/name"]).user_error();
    assert!(m.starts_with("invalid topic name 'bad/name'"), "{m}");
    // Nothing was created by the failures.
    let list = sluice(a, &["topic", "list"]).ok();
    assert_eq!(list.split_whitespace().collect::<Vec<_>>(), ["dup", "1"]);

    // Partitions and offsets outside the topic.
    let m = sluice(a, &["consume", "dup", "--partition", "5"]).user_error();
    assert_eq!(m, "topic 'dup' has no partition 5 (it has 1 partition)");
    let m = sluice_in(a, &["produce", "dup", "--partition", "1"], "x\n").user_error();
    assert_eq!(m, "topic 'dup' has no partition 1 (it has 1 partition)");
    let m = sluice(a, &["consume", "dup", "--offset", "9"]).user_error();
    assert!(m.starts_with("offset 9 is out of range"), "{m}");

    // A line without the key separator fails the command; the lines before it were produced.
    let run = sluice_in(
        a,
        &["produce", "dup", "--key-separator", ":"],
        "k:v\nno separator\n",
    );
    assert!(run.stderr.contains("produced 1 record "), "{}", run.stderr);
    let m = run.user_error();
    assert!(m.contains("line 2") && m.contains("separator"), "{m}");
    assert_eq!(
        sluice(a, &["consume", "dup", "--format", "key-value"]).ok(),
        "k\tv\n"
    );

    // A file that is not there.
    let m = sluice(a, &["produce", "dup", "--file", "/nonexistent/input"]).user_error();
    assert!(m.starts_with("cannot open /nonexistent/input"), "{m}");
}

#[test]
fn bad_flags_are_usage_errors_with_exit_code_2() {
    // Rejected before any broker is contacted, so no broker is needed.
    let a = "127.0.0.1:9";
    for args in [
        &["consume", "t", "--format", "xml"][..],
        &["consume", "t", "--offset", "1", "--timestamp", "2"],
        &["consume", "t", "--from-beginning", "--offset", "1"],
        &["consume", "t", "--timestamp", "-5"],
        &["consume", "t", "-n", "many"],
        &["produce", "t", "--acks", "maybe"],
        &["produce", "t", "--compression", "gzip"],
        &["produce", "t", "--key-separator", ""],
        &["topic", "create", "t", "--partitions", "0"],
        &["topic", "create", "t", "--partitions", "three"],
        &["topic", "create", "t", "--config", "retention.ms"],
        &["topic", "frobnicate"],
        &["cluster"],
    ] {
        sluice(a, args).usage_error();
    }
    let out = Command::new(sluice_bin())
        .args(["topic", "list", "--broker", "no-port-here"])
        .output()
        .unwrap();
    Run::from_output(out).usage_error();
}

#[test]
fn broker_down_says_it_cannot_connect() {
    let port = closed_port();
    let a = format!("127.0.0.1:{port}");
    let expected = format!("cannot connect to broker at {a}: ");
    // Run concurrently: each retries a little before giving up.
    let children: Vec<(Vec<&str>, Child)> = [
        vec!["topic", "list"],
        vec!["topic", "create", "t"],
        vec!["produce", "t"],
        vec!["consume", "t"],
        vec!["cluster", "info"],
    ]
    .into_iter()
    .map(|args| {
        let child = command(&a, &args).stdin(Stdio::null()).spawn().unwrap();
        (args, child)
    })
    .collect();
    for (args, child) in children {
        let m = Run::from_output(child.wait_with_output().unwrap()).user_error();
        assert!(m.starts_with(&expected), "{args:?}: {m}");
    }
}
