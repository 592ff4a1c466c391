//! `sluice group list|describe|reset-offsets|delete` run as a user runs them, against a real
//! broker whose group is driven with raw heartbeat and commit frames (a member thread that
//! heartbeats every 100 ms and gives up what it is told to). What is checked: the group is listed;
//! `describe` shows the member, its partitions, the committed offset, the high watermark, the lag
//! and the age of the oldest unconsumed record (records written with known old timestamps); resets
//! on a live group and on an empty one move the committed offsets; bad resets, deleting a live
//! group and describing a deleted one fail with one clear `sluice: ...` line and exit code 1.
//!
//! Failures provoked once to see these tests catch them (each reverted):
//! - the oldest unconsumed record looked for at the log start instead of the committed offset
//!   (`partition_log::first_unconsumed`): `lag_ms` came out ≈ 3 h (10800119) instead of ≈ 1 h;
//! - `lag` counted from the log start despite the commit: `lag == hw - 3` failed;
//! - `--shift-by` shifting from 0 instead of the committed offset: `5 -> 4` came out 0;
//! - `allow_negative_numbers` dropped from `--shift-by`: `--shift-by -1` became a usage error
//!   (exit code 2);
//! - `NON_EMPTY_GROUP` left to the generic message: the `still has members` check failed;
//! - a timestamp after every record resolved to the log start instead of the high watermark;
//! - describe leaving out assigned partitions without a commit: the row of `t/1` was missing;
//! - the client's range check on `--to-offset` disabled: the broker accepted offset 999 (past
//!   the high watermark of 10) and the command exited 0.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::Value;
use sluice_protocol::wire::*;
use sluice_tests::cli::{sluice, Run};
use sluice_tests::groups::{group_config, heartbeat};
use sluice_tests::{batch_at, Broker, RawConn};

fn group(addr: SocketAddr, args: &[&str]) -> Run {
    let mut all = vec!["group"];
    all.extend_from_slice(args);
    sluice(addr, &all, None)
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// One group member on its own connection, heartbeating from a thread every 100 ms and owning
/// what the last answer gave it (which acknowledges revocations).
struct Member {
    last: Arc<Mutex<GroupHeartbeatResponse>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    conn: Arc<Mutex<RawConn>>,
    group: String,
}

impl Member {
    fn join(addr: SocketAddr, group: &str, topic: &str) -> Member {
        let mut c = RawConn::connect(addr);
        let base = GroupHeartbeatRequest {
            group: group.into(),
            client_id: "cli-test".into(),
            topics: vec![topic.into()],
            ..Default::default()
        };
        let first = heartbeat(
            &mut c,
            GroupHeartbeatRequest {
                member_epoch: JOIN_EPOCH,
                ..base.clone()
            },
        );
        assert!(first.error.is_ok(), "{first:?}");
        let last = Arc::new(Mutex::new(first));
        let stop = Arc::new(AtomicBool::new(false));
        let conn = Arc::new(Mutex::new(c));
        let thread = {
            let (last, stop, conn) = (last.clone(), stop.clone(), conn.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    let prev = last.lock().unwrap().clone();
                    let r = heartbeat(
                        &mut conn.lock().unwrap(),
                        GroupHeartbeatRequest {
                            member_id: prev.member_id.clone(),
                            member_epoch: prev.member_epoch,
                            owned: prev.assignment.clone(),
                            ..base.clone()
                        },
                    );
                    assert!(r.error.is_ok(), "member heartbeat failed: {r:?}");
                    *last.lock().unwrap() = r;
                    std::thread::sleep(Duration::from_millis(100));
                }
            })
        };
        Member {
            last,
            stop,
            thread: Some(thread),
            conn,
            group: group.into(),
        }
    }

    fn last(&self) -> GroupHeartbeatResponse {
        self.last.lock().unwrap().clone()
    }

    /// Commits `offset` for `topic`/`partition` as this member.
    fn commit(&self, topic: &str, partition: u32, offset: u64) {
        let m = self.last();
        let Response::OffsetCommit(r) = self
            .conn
            .lock()
            .unwrap()
            .call(&Request::OffsetCommit(OffsetCommitRequest {
                group: self.group.clone(),
                member_id: m.member_id.clone(),
                member_epoch: m.member_epoch,
                topics: vec![OffsetCommitTopic {
                    topic: topic.into(),
                    partitions: vec![OffsetCommitPartition {
                        partition,
                        offset,
                        metadata: String::new(),
                    }],
                }],
            }))
            .unwrap()
        else {
            panic!("wrong answer")
        };
        assert!(r.error.is_ok(), "{r:?}");
        assert!(r.topics[0].partitions[0].error.is_ok(), "{r:?}");
    }

    /// Stops heartbeating and leaves the group.
    fn leave(mut self) {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.take().unwrap().join().expect("member thread");
        let m = self.last();
        let r = heartbeat(
            &mut self.conn.lock().unwrap(),
            GroupHeartbeatRequest {
                group: self.group.clone(),
                member_id: m.member_id,
                member_epoch: LEAVE_EPOCH,
                ..Default::default()
            },
        );
        assert!(r.error.is_ok(), "{r:?}");
    }
}

impl Drop for Member {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// The offsets row of `topic`/`partition` in a `describe --format json`.
fn row<'a>(d: &'a Value, topic: &str, partition: u64) -> &'a Value {
    d["offsets"]
        .as_array()
        .unwrap()
        .iter()
        .find(|o| o["topic"] == topic && o["partition"] == partition)
        .unwrap_or_else(|| panic!("no row for {topic}/{partition}: {d}"))
}

fn latest(c: &mut RawConn, topic: &str, partition: u32) -> u64 {
    let r = c.list_offset(topic, partition, LATEST);
    assert!(r.error.is_ok(), "{r:?}");
    r.offset as u64
}

const HOUR: i64 = 3_600_000;

/// The whole life of a group through the CLI: listed, described with its lag, reset while live
/// and while empty, not deletable while live, deleted once empty.
#[test]
fn group_admin_through_the_cli() {
    let (_dir, config) = group_config();
    let broker = Broker::start(&["--config", &config]);
    let addr = broker.addr;
    let mut c = RawConn::connect(addr);
    c.create("t", 2);

    // Partition 0: records 0..3 three hours old, 3..7 one hour old, 7..10 a minute old (offsets
    // shifted by whatever the log holds already, e.g. a leader's control entry).
    let start = latest(&mut c, "t", 0);
    assert!(start < 3, "{start}");
    let now = now_ms();
    let (ts_a, ts_b, ts_c) = (now - 3 * HOUR, now - HOUR, now - 60_000);
    for (tag, n, ts) in [
        ("a", 3 - start as usize, ts_a),
        ("b", 4, ts_b),
        ("c", 3, ts_c),
    ] {
        let r = c.produce("t", 0, batch_at(tag, n, ts));
        assert!(r.error.is_ok(), "{r:?}");
    }
    let hw0 = latest(&mut c, "t", 0);
    assert_eq!(hw0, 10);
    // Partition 1: four records now, through the CLI.
    sluice(
        addr,
        &["produce", "t", "--partition", "1"],
        Some("w\nx\ny\nz\n"),
    )
    .ok();
    let hw1 = latest(&mut c, "t", 1);
    assert!(hw1 >= 4, "{hw1}");

    // Unknown group: a clear error (this also creates the offsets topic).
    let e = group(addr, &["describe", "g"]).user_error();
    assert_eq!(e, "group 'g' does not exist");

    // One member takes both partitions and commits offset 3 of partition 0.
    let member = Member::join(addr, "g", "t");
    let deadline = Instant::now() + Duration::from_secs(10);
    while member
        .last()
        .assignment
        .iter()
        .map(|t| t.partitions.len())
        .sum::<usize>()
        < 2
    {
        assert!(
            Instant::now() < deadline,
            "no assignment: {:?}",
            member.last()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    member.commit("t", 0, 3);
    let member_id = member.last().member_id;

    let list = group(addr, &["list", "--format", "json"]).json();
    assert_eq!(
        list.as_array()
            .unwrap()
            .iter()
            .filter(|g| g["group"] == "g")
            .count(),
        1,
        "{list}"
    );
    let g = list
        .as_array()
        .unwrap()
        .iter()
        .find(|g| g["group"] == "g")
        .unwrap();
    assert_eq!(g["members"], 1, "{list}");
    assert!(
        ["Stable", "Reconciling"].contains(&g["state"].as_str().unwrap()),
        "{list}"
    );

    let d = group(addr, &["describe", "g", "--format", "json"]).json();
    let asked = now_ms();
    assert_eq!(d["group"], "g");
    assert_eq!(d["assignor"], "uniform");
    assert!(d["epoch"].as_i64().unwrap() > 0, "{d}");
    let members = d["members"].as_array().unwrap();
    assert_eq!(members.len(), 1, "{d}");
    assert_eq!(members[0]["member_id"], member_id.as_str());
    assert_eq!(members[0]["client_id"], "cli-test");
    assert_eq!(members[0]["host"], "127.0.0.1");
    assert!(members[0]["instance_id"].is_null());
    assert_eq!(
        members[0]["partitions"],
        serde_json::json!([{"topic": "t", "partition": 0}, {"topic": "t", "partition": 1}])
    );
    let p0 = row(&d, "t", 0);
    assert_eq!(p0["committed_offset"], 3, "{d}");
    assert_eq!(p0["high_watermark"], hw0, "{d}");
    assert_eq!(p0["lag"], hw0 - 3, "{d}");
    assert_eq!(p0["owner"], member_id.as_str());
    // The oldest unconsumed record is b-0, one hour old (not a-*, three hours; not c-*).
    let lag_ms = p0["lag_ms"].as_i64().unwrap();
    assert!(
        lag_ms >= asked - ts_b - 60_000 && lag_ms <= asked - ts_b,
        "{lag_ms} {d}"
    );
    // Partition 1: no commit, so the lag counts from the log start; its records are fresh.
    let p1 = row(&d, "t", 1);
    assert!(p1["committed_offset"].is_null(), "{d}");
    assert_eq!(p1["high_watermark"], hw1);
    assert_eq!(p1["lag"], hw1 - p1["log_start_offset"].as_u64().unwrap());
    assert!(p1["lag_ms"].as_i64().unwrap() < 60_000, "{d}");
    assert_eq!(d["offsets"].as_array().unwrap().len(), 2, "{d}");

    let table = group(addr, &["describe", "g"]).ok();
    assert!(table.starts_with("Group: g\nState: "), "{table}");
    assert!(
        table.contains("TOPIC  PARTITION  COMMITTED  HIGH-WATERMARK  LAG"),
        "{table}"
    );
    assert!(table.contains(&member_id), "{table}");

    // A live group cannot be deleted.
    let e = group(addr, &["delete", "g"]).user_error();
    assert!(e.starts_with("group 'g' still has members"), "{e}");
    // An offset outside the log is refused before anything moves.
    let e = group(
        addr,
        &[
            "reset-offsets",
            "g",
            "--topic",
            "t",
            "--partition",
            "0",
            "--to-offset",
            "999",
        ],
    )
    .user_error();
    assert_eq!(
        e,
        format!("offset 999 is out of range for partition 0 of topic 't' (log start offset 0, high watermark {hw0})")
    );
    let e = group(
        addr,
        &[
            "reset-offsets",
            "g",
            "--topic",
            "t",
            "--partition",
            "7",
            "--to-earliest",
        ],
    )
    .user_error();
    assert_eq!(e, "topic 't' has no partition 7 (it has 2)");
    let e = group(
        addr,
        &["reset-offsets", "g", "--topic", "nope", "--to-earliest"],
    )
    .user_error();
    assert_eq!(e, "topic 'nope' does not exist");

    // A reset on the live group: the member gives partition 0 up, it moves, it comes back.
    let out = group(
        addr,
        &[
            "reset-offsets",
            "g",
            "--topic",
            "t",
            "--partition",
            "0",
            "--to-offset",
            "5",
        ],
    )
    .ok();
    assert_eq!(out, "TOPIC  PARTITION  NEW-OFFSET\nt      0          5\n");
    let d = group(addr, &["describe", "g", "--format", "json"]).json();
    assert_eq!(row(&d, "t", 0)["committed_offset"], 5, "{d}");
    assert_eq!(row(&d, "t", 0)["lag"], hw0 - 5, "{d}");

    member.leave();
    let d = group(addr, &["describe", "g", "--format", "json"]).json();
    assert_eq!(d["state"], "Empty", "{d}");
    assert_eq!(d["members"], serde_json::json!([]), "{d}");

    // Resets on the empty group.
    let moved = group(
        addr,
        &[
            "reset-offsets",
            "g",
            "--topic",
            "t",
            "--to-earliest",
            "--format",
            "json",
        ],
    )
    .json();
    assert_eq!(
        moved,
        serde_json::json!([{"topic": "t", "partition": 0, "offset": 0}, {"topic": "t", "partition": 1, "offset": 0}])
    );
    let d = group(addr, &["describe", "g", "--format", "json"]).json();
    assert_eq!(row(&d, "t", 0)["committed_offset"], 0, "{d}");
    assert_eq!(row(&d, "t", 1)["committed_offset"], 0, "{d}");
    assert_eq!(row(&d, "t", 0)["lag"], hw0, "{d}");

    let reset = |args: &[&str]| -> Value {
        let mut all = vec![
            "reset-offsets",
            "g",
            "--topic",
            "t",
            "--partition",
            "0",
            "--format",
            "json",
        ];
        all.extend_from_slice(args);
        group(addr, &all).json()[0]["offset"].clone()
    };
    assert_eq!(reset(&["--to-offset", "5"]), 5);
    assert_eq!(reset(&["--shift-by", "-1"]), 4);
    assert_eq!(reset(&["--shift-by", "-100"]), 0);
    assert_eq!(reset(&["--shift-by", "100"]), hw0);
    assert_eq!(reset(&["--to-timestamp", &ts_b.to_string()]), 3);
    assert_eq!(reset(&["--to-timestamp", &(now + HOUR).to_string()]), hw0);
    assert_eq!(reset(&["--to-earliest"]), 0);
    assert_eq!(reset(&["--to-latest"]), hw0);
    let d = group(addr, &["describe", "g", "--format", "json"]).json();
    assert_eq!(row(&d, "t", 0)["committed_offset"], hw0, "{d}");
    assert_eq!(row(&d, "t", 0)["lag"], 0, "{d}");
    assert_eq!(row(&d, "t", 0)["lag_ms"], 0, "{d}");

    // Shifting needs a commit.
    let e = group(
        addr,
        &["reset-offsets", "fresh", "--topic", "t", "--shift-by", "1"],
    )
    .user_error();
    assert!(e.contains("has no committed offset to shift"), "{e}");

    // Once empty, the group can be deleted; then it is gone.
    assert_eq!(group(addr, &["delete", "g"]).ok(), "deleted group 'g'\n");
    let e = group(addr, &["describe", "g"]).user_error();
    assert_eq!(e, "group 'g' does not exist");
    let e = group(addr, &["delete", "g"]).user_error();
    assert_eq!(e, "group 'g' does not exist");
    let list = group(addr, &["list", "--format", "json"]).json();
    assert!(
        !list.as_array().unwrap().iter().any(|g| g["group"] == "g"),
        "{list}"
    );
}

/// Groups on several offsets partitions all appear in the list (on one broker it leads them all),
/// in the table and in JSON.
#[test]
fn list_shows_every_group() {
    let (_dir, config) = group_config();
    let broker = Broker::start(&["--config", &config]);
    let addr = broker.addr;
    let mut c = RawConn::connect(addr);
    c.create("t", 1);
    assert_eq!(group(addr, &["list"]).ok(), "GROUP  STATE  MEMBERS\n");
    let names = ["alpha", "beta", "gamma", "delta", "epsilon"];
    for g in names {
        // An offset reset creates a group without members.
        group(addr, &["reset-offsets", g, "--topic", "t", "--to-earliest"]).ok();
    }
    let list = group(addr, &["list", "--format", "json"]).json();
    let mut listed: Vec<&str> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|g| g["group"].as_str().unwrap())
        .collect();
    listed.sort_unstable();
    let mut want = names.to_vec();
    want.sort_unstable();
    assert_eq!(listed, want, "{list}");
    assert!(list
        .as_array()
        .unwrap()
        .iter()
        .all(|g| g["state"] == "Empty" && g["members"] == 0));
    let table = group(addr, &["list"]).ok();
    assert_eq!(table.lines().count(), 1 + names.len(), "{table}");
    assert!(
        table
            .lines()
            .any(|l| l.split_whitespace().collect::<Vec<_>>() == ["alpha", "Empty", "0"]),
        "{table}"
    );
}
