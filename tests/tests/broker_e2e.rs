//! The broker end to end over raw protocol connections: restarts (SIGTERM, and SIGKILL with flush
//! `always` and acks `all`), long-poll fetch, offsets by timestamp, topic deletion.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use sluice_protocol::wire::*;
use sluice_tests::cluster::eventually;
use sluice_tests::{batch, batch_at, Broker, RawConn};

/// What the broker logs (at debug) when a fetch finds no data and starts to wait.
const PARKED: &str = "fetch parked";

/// The harness's log filter (`sluice_tests::DEFAULT_LOG`) plus the fetch handler's debug lines.
const PARKED_LOG: &str =
    "warn,openraft=error,sluice_broker::replica::services=info,sluice_broker::api::fetch=debug";

fn produce_rounds(
    conn: &mut RawConn,
    topic: &str,
    partitions: u32,
    rounds: usize,
    acks: Acks,
) -> Vec<Vec<(u64, String)>> {
    let mut expected = vec![Vec::new(); partitions as usize];
    for i in 0..rounds {
        let p = (i as u32) % partitions;
        let r = conn.produce_acks(topic, p, batch(&format!("r{i}"), 4), acks);
        assert_eq!(r.error, ErrorCode::NONE, "{}", r.message);
        for j in 0..4 {
            expected[p as usize].push((r.base_offset + j, format!("r{i}-{j}")));
        }
    }
    expected
}

/// One produce answer read off the pipelined connection: correlation id, when it arrived, result.
type Answer = (u32, Instant, ProducePartitionResult);

/// What came back on the pipelined connection until the broker closed it: the produce answers,
/// the long-poll fetch's answer (when it arrived, its error), and whether the connection ended
/// with EOF or a reset (anything else, e.g. a read timeout, is `false`).
type Answers = (Vec<Answer>, Option<(Instant, ErrorCode)>, bool);

/// Reads answers off `stream` until the broker closes it; `fetch_corr` is the long-poll fetch's
/// correlation id, every other one a produce's.
fn read_answers(mut stream: std::net::TcpStream, fetch_corr: u32) -> Answers {
    use std::io::{ErrorKind, Read};
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let mut out = Vec::new();
    let mut fetch = None;
    loop {
        let mut len = [0u8; 4];
        let end = match stream.read_exact(&mut len) {
            Ok(()) => None,
            Err(e) => Some(e.kind()),
        };
        if let Some(kind) = end {
            let closed = matches!(
                kind,
                ErrorKind::UnexpectedEof
                    | ErrorKind::ConnectionReset
                    | ErrorKind::ConnectionAborted
            );
            return (out, fetch, closed);
        }
        let mut buf = vec![0u8; u32::from_le_bytes(len) as usize];
        stream.read_exact(&mut buf).unwrap();
        let buf = bytes::Bytes::from(buf);
        let corr = u32::from_le_bytes(buf[..4].try_into().unwrap());
        if corr == fetch_corr {
            let (_, resp) = decode_response(ApiKey::Fetch, buf).unwrap();
            let Ok(Response::Fetch(mut f)) = resp else {
                panic!("fetch: {resp:?}")
            };
            fetch = Some((
                Instant::now(),
                f.topics.remove(0).partitions.remove(0).error,
            ));
            continue;
        }
        let (corr, resp) = decode_response(ApiKey::Produce, buf).unwrap();
        let Ok(Response::Produce(mut r)) = resp else {
            panic!("request {corr}: {resp:?}")
        };
        out.push((
            corr,
            Instant::now(),
            r.topics.remove(0).partitions.remove(0),
        ));
    }
}

/// SIGTERM with requests in flight: `PIPELINED` acks-`all` produces and then a long-poll fetch
/// (5 s, on an empty partition) are written at once on one connection; once the broker logs the
/// fetch as parked (a debug line: produces run in connection order, so every produce before it was
/// read and proposed; not necessarily answered), the broker gets SIGTERM. Fails if: the fetch is answered before the signal (nothing surely in flight) or
/// not at all; a produce goes unanswered or is answered with an error before the broker closes
/// the connection; a partition's offsets do not follow the send order; the connection is not closed (EOF or reset); the broker does not exit 0; after the
/// restart a partition holds anything but the answered records, in order, at their offsets.
#[test]
fn sigterm_drains_flushes_and_restart_keeps_everything() {
    const PIPELINED: u32 = 300;
    let mut broker = Broker::start_logging(&[], PARKED_LOG);
    let mut conn = RawConn::connect(broker.addr);
    conn.create("orders", 3);
    conn.create("quiet", 1);
    let quiet_end = first_record_offset(&mut conn, "quiet");
    let mut expected = produce_rounds(&mut conn, "orders", 3, 60, Acks::Leader);
    drop(conn);

    let mut bytes = Vec::new();
    for i in 0..PIPELINED {
        let req = Request::Produce(ProduceRequest {
            acks: Acks::All,
            timeout_ms: 10_000,
            topics: vec![ProduceTopic {
                name: "orders".into(),
                partitions: vec![ProducePartition {
                    partition: i % 3,
                    records: batch(&format!("f{i}"), 4),
                }],
            }],
        });
        for chunk in encode_request(&req, i + 1) {
            bytes.extend_from_slice(&chunk);
        }
    }
    let fetch_corr = PIPELINED + 1;
    let long_poll = Request::Fetch(FetchRequest {
        max_wait_ms: 5_000,
        min_bytes: 1,
        max_bytes: 1 << 20,
        topics: vec![FetchTopic {
            name: "quiet".into(),
            partitions: vec![FetchPartition {
                partition: 0,
                offset: quiet_end,
                max_bytes: 1 << 20,
            }],
        }],
    });
    for chunk in encode_request(&long_poll, fetch_corr) {
        bytes.extend_from_slice(&chunk);
    }
    let mut pipe = RawConn::connect(broker.addr);
    let reader = {
        let stream = pipe.stream.try_clone().unwrap();
        std::thread::spawn(move || read_answers(stream, fetch_corr))
    };
    pipe.send_raw(&bytes).unwrap();
    eventually(Duration::from_secs(60), "the long poll parked", || {
        (!broker.log_lines(PARKED).is_empty()).then_some(())
    });
    let signalled = Instant::now();
    assert_eq!(broker.terminate(), Some(0), "SIGTERM must exit 0");
    let (answers, fetch, closed) = reader.join().unwrap();
    assert!(closed, "the broker exited without closing the connection");
    let (fetch_at, fetch_error) = fetch.expect("the in-flight long poll was never answered");
    assert!(
        fetch_at >= signalled,
        "the long poll was answered before SIGTERM: nothing surely in flight"
    );
    assert_eq!(fetch_error, ErrorCode::NONE);
    // Answers come in any order (docs/protocol.md): each request answered exactly once.
    let mut answers = answers;
    answers.sort_by_key(|a| a.0);
    let corrs: Vec<u32> = answers.iter().map(|a| a.0).collect();
    assert_eq!(
        corrs,
        (1..=PIPELINED).collect::<Vec<_>>(),
        "every pipelined request answered exactly once before the close"
    );
    // Produces answered after the signal were in flight too (how many depends on timing).
    let late = answers.iter().filter(|a| a.1 >= signalled).count();
    // Produces on one connection are appended in the order sent: per partition, offsets grow
    // with the correlation id (expected[p] already ends below the first pipelined offset).
    for (corr, _, r) in &answers {
        assert_eq!(r.error, ErrorCode::NONE, "request {corr}: {}", r.message);
        let last = expected[r.partition as usize].last().map(|e| e.0);
        assert!(
            last < Some(r.base_offset),
            "request {corr}: partition {} offset {} not after {last:?}",
            r.partition,
            r.base_offset
        );
        let i = corr - 1;
        for j in 0..4 {
            expected[r.partition as usize].push((r.base_offset + j, format!("f{i}-{j}")));
        }
    }
    eprintln!(
        "sigterm drain: {late} of {PIPELINED} produce answers and the long poll's after the signal \
         (the long poll {:?} after it)",
        fetch_at - signalled
    );

    broker.restart();
    let mut conn = RawConn::connect(broker.addr);
    for p in 0..3 {
        assert_eq!(conn.consume_all("orders", p), expected[p as usize]);
    }
    // The topic's settings came back too.
    let m = conn.metadata(Some(vec!["orders".into()]));
    assert_eq!(m.topics[0].partitions.len(), 3);
}

#[test]
fn sigkill_loses_nothing_acknowledged_with_acks_all() {
    let mut broker = Broker::start(&["--flush", "always"]);
    let mut conn = RawConn::connect(broker.addr);
    conn.create("k", 2);
    let mut expected = produce_rounds(&mut conn, "k", 2, 40, Acks::All);
    broker.kill();
    broker.restart();
    let mut conn = RawConn::connect(broker.addr);
    for p in 0..2 {
        assert_eq!(conn.consume_all("k", p), expected[p as usize]);
    }
    // And once more, after more writes.
    let more = produce_rounds(&mut conn, "k", 2, 10, Acks::All);
    for p in 0..2 {
        expected[p].extend(more[p].iter().cloned());
    }
    broker.kill();
    broker.restart();
    let mut conn = RawConn::connect(broker.addr);
    for p in 0..2 {
        assert_eq!(conn.consume_all("k", p), expected[p as usize]);
    }
}

/// The offset the first record of a new one-broker topic gets: raft's own entries (the first
/// membership at 0, the leader's blank entry at 1) come first, and the blank one may be committed
/// just after the create is answered, so this waits until partition 0's end is past both.
fn first_record_offset(conn: &mut RawConn, topic: &str) -> u64 {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let end = conn.list_offset(topic, 0, LATEST).offset as u64;
        if end >= 2 || Instant::now() > deadline {
            assert_eq!(end, 2, "a new topic holds its membership and blank entries");
            return end;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A long poll parked at the log end is answered by the produce that follows, before its deadline.
/// The produce is sent once the broker logged the fetch as parked (it once slept 200 ms and hoped).
/// Seen to fail (answered only at its 20 s deadline) with `Replica::wait_beyond` deaf to the high
/// watermark.
#[test]
fn long_poll_fetch_returns_when_data_arrives() {
    let broker = Broker::start_logging(&[], PARKED_LOG);
    let mut conn = RawConn::connect(broker.addr);
    conn.create("lp", 1);
    // Wait at the end, after raft's own entries.
    let end = first_record_offset(&mut conn, "lp");
    let addr = broker.addr;
    // Below the broker's 30 s cap (`max_fetch_wait`), so "answered before max_wait" means "answered
    // by the data": a fetch that only its deadline ended would have waited all of it.
    let max_wait = Duration::from_secs(20);
    let waiter = std::thread::spawn(move || {
        let mut c = RawConn::connect(addr);
        c.stream
            .set_read_timeout(Some(Duration::from_secs(120)))
            .unwrap();
        let start = Instant::now();
        let p = c.fetch("lp", 0, end, max_wait.as_millis() as u32);
        (p, start.elapsed())
    });
    // The produce goes out once the fetch is parked (the broker's debug line), so the fetch is
    // answered by the data arriving, never by finding it already there.
    eventually(Duration::from_secs(60), "the long poll parked", || {
        (!broker.log_lines(PARKED).is_empty()).then_some(())
    });
    let r = conn.produce("lp", 0, batch("late", 2));
    assert_eq!(r.error, ErrorCode::NONE);
    let (p, waited) = waiter.join().unwrap();
    assert_eq!(p.error, ErrorCode::NONE);
    assert!(
        !p.records.is_empty(),
        "the parked fetch must return the new data"
    );
    assert!(
        waited < max_wait,
        "the fetch was answered by the data, not by its deadline"
    );

    // With nothing to wait for, max_wait bounds the fetch and it returns empty.
    assert_eq!(r.base_offset, end);
    let p = conn.fetch("lp", 0, r.base_offset + 2, 50);
    assert!(
        p.records.is_empty(),
        "a fetch at the log end ({}) returned {} bytes",
        r.base_offset + 2,
        p.records.len()
    );
}

#[test]
fn offsets_by_timestamp_earliest_and_latest() {
    let broker = Broker::start(&[]);
    let mut conn = RawConn::connect(broker.addr);
    conn.create("ts", 1);
    // Records follow raft's first entries (control batches, which take one offset each).
    let first = first_record_offset(&mut conn, "ts") as i64;
    for (i, ts) in [1_000i64, 2_000, 3_000].into_iter().enumerate() {
        let r = conn.produce("ts", 0, batch_at(&format!("b{i}"), 5, ts));
        assert_eq!(r.base_offset, first as u64 + i as u64 * 5);
    }
    assert_eq!(conn.list_offset("ts", 0, EARLIEST).offset, 0);
    assert_eq!(conn.list_offset("ts", 0, LATEST).offset, first + 15);
    assert_eq!(
        conn.list_offset("ts", 0, 0).offset,
        first,
        "control batches carry no time"
    );
    assert_eq!(conn.list_offset("ts", 0, 1_500).offset, first + 5);
    assert_eq!(conn.list_offset("ts", 0, 3_000).offset, first + 10);
    assert_eq!(conn.list_offset("ts", 0, 3_001).offset, -1);
    assert_eq!(
        conn.list_offset("nope", 0, LATEST).error,
        ErrorCode::UNKNOWN_TOPIC_OR_PARTITION
    );
}

#[test]
fn topic_deletion_removes_data_and_survives_restart() {
    let mut broker = Broker::start(&[]);
    let mut conn = RawConn::connect(broker.addr);
    conn.create("gone", 2);
    conn.create("kept", 1);
    assert_eq!(
        conn.produce("gone", 1, batch("x", 3)).error,
        ErrorCode::NONE
    );
    assert_eq!(
        conn.produce("kept", 0, batch("y", 3)).error,
        ErrorCode::NONE
    );
    assert_eq!(
        conn.create_topic("gone", 1, &[]).error,
        ErrorCode::TOPIC_ALREADY_EXISTS
    );

    let Response::DeleteTopics(r) = conn
        .call(&Request::DeleteTopics(DeleteTopicsRequest {
            names: vec!["gone".into(), "never".into()],
        }))
        .unwrap()
    else {
        panic!("wrong response")
    };
    assert_eq!(r.results[0].error, ErrorCode::NONE);
    assert_eq!(r.results[1].error, ErrorCode::UNKNOWN_TOPIC_OR_PARTITION);
    assert_eq!(
        conn.produce("gone", 0, batch("z", 1)).error,
        ErrorCode::UNKNOWN_TOPIC_OR_PARTITION
    );
    let m = conn.metadata(None);
    assert_eq!(
        m.topics.iter().map(|t| t.name.as_str()).collect::<Vec<_>>(),
        vec!["kept"]
    );
    assert!(!broker.data_dir().join("topics/gone").exists());

    // A new topic of the same name starts empty.
    conn.create("gone", 1);
    assert!(conn.consume_all("gone", 0).is_empty());
    drop(conn);
    assert_eq!(broker.terminate(), Some(0));
    broker.restart();
    let mut conn = RawConn::connect(broker.addr);
    let m = conn.metadata(None);
    let names: Vec<_> = m
        .topics
        .iter()
        .map(|t| (t.name.clone(), t.partitions.len()))
        .collect();
    assert_eq!(
        names,
        vec![("gone".to_string(), 1), ("kept".to_string(), 1)]
    );
    assert_eq!(conn.consume_all("kept", 0).len(), 3);
}

#[test]
fn invalid_topic_requests_get_clear_errors() {
    let broker = Broker::start(&[]);
    let mut conn = RawConn::connect(broker.addr);
    assert_eq!(
        conn.create_topic("bad name!", 1, &[]).error,
        ErrorCode::INVALID_TOPIC
    );
    assert_eq!(
        conn.create_topic("zero", 0, &[]).error,
        ErrorCode::INVALID_PARTITIONS
    );
    let r = conn.create_topic("cfg", 1, &[("retention.ms", "soon")]);
    assert_eq!(r.error, ErrorCode::INVALID_CONFIG);
    assert!(r.message.contains("retention.ms"), "{}", r.message);
    let r = conn.create_topic(
        "cfg",
        1,
        &[("cleanup.policy", "compact"), ("retention.ms", "60000")],
    );
    assert_eq!(r.error, ErrorCode::NONE);
    let m = conn.metadata(Some(vec!["cfg".into()]));
    assert!(m.topics[0]
        .configs
        .contains(&("cleanup.policy".into(), "compact".into())));
    assert!(m.topics[0]
        .configs
        .contains(&("retention.ms".into(), "60000".into())));
    // Fetching past the end is an error, not a hang.
    assert_eq!(
        conn.fetch("cfg", 0, 5, 0).error,
        ErrorCode::OFFSET_OUT_OF_RANGE
    );
}

/// Settings from a TOML file, and the environment over the file. Fails if: node id or data dir
/// are not the file's; `SLUICE_FLUSH` is not read or does not override the file (the file's
/// `flush = "sometimes"` is invalid, so a broker that used it would not start); a bad
/// `SLUICE_FLUSH` or a bad `flush` in the file starts a broker or gives no error naming the value.
/// (That `always` then fsyncs every write has no observable from outside: the broker would need to
/// log its effective settings or count its fsyncs.)
#[test]
fn settings_come_from_a_toml_file_and_the_environment() {
    use std::io::{BufRead, BufReader};
    use std::process::{Command, Stdio};
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("from-file");
    let cfg = tmp.path().join("broker.toml");
    std::fs::write(
        &cfg,
        format!(
            "data_dir = {:?}\nlisten = \"127.0.0.1:0\"\nnode_id = 7\nflush = \"sometimes\"\n",
            data.display().to_string()
        ),
    )
    .unwrap();
    let mut child = Command::new(sluice_tests::sluice_bin())
        .args(["broker", "--config"])
        .arg(&cfg)
        .env("SLUICE_FLUSH", "always")
        .env("SLUICE_LOG", "warn")
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let line = lines
        .next()
        .expect("no listening line: SLUICE_FLUSH=always did not override the file's bad flush")
        .unwrap();
    let addr: std::net::SocketAddr = line
        .strip_prefix("sluice broker listening on ")
        .unwrap()
        .parse()
        .unwrap();
    let mut conn = RawConn::connect(addr);
    conn.create("t", 1);
    let m = conn.metadata(None);
    assert_eq!(m.brokers[0].node_id, 7, "node_id from the file");
    assert!(
        data.join("topics/t/topic.json").exists(),
        "data_dir from the file"
    );
    // Stopped before the checks below, so a failing one does not leave it running.
    let _ = child.kill();
    let _ = child.wait();
    // A bad value in the file is a clear startup error.
    std::fs::write(&cfg, "flush = \"sometimes\"\n").unwrap();
    let out = Command::new(sluice_tests::sluice_bin())
        .args(["broker", "--config"])
        .arg(&cfg)
        .env_remove("SLUICE_FLUSH")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("sometimes"));
    // So is a bad value in the environment: SLUICE_FLUSH is read, whatever the file says.
    let other = tmp.path().join("other");
    std::fs::write(&cfg, "listen = \"127.0.0.1:0\"\nflush = \"always\"\n").unwrap();
    let mut bad = Command::new(sluice_tests::sluice_bin())
        .args(["broker", "--config"])
        .arg(&cfg)
        .arg("--data-dir")
        .arg(&other)
        .env("SLUICE_FLUSH", "seldom")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // A broker that ignored the variable would start and keep running: bounded wait, then fail.
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(status) = bad.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = bad.kill();
            let _ = bad.wait();
            panic!("SLUICE_FLUSH=seldom was accepted: the broker started");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut bad.stderr.take().unwrap(), &mut stderr).unwrap();
    assert!(!status.success(), "SLUICE_FLUSH=seldom was accepted");
    assert!(stderr.contains("seldom"), "{stderr}");
}

/// The storage crash test through the raft path: with the default flush policy (`interval`), acks
/// `all` still means fsynced (the raft log acknowledges an entry only after the fsync covering it).
/// A writer produces with acks `all` while the broker is SIGKILLed at random moments, round after
/// round; every acknowledged record must be there after each restart, at its offset.
/// `SLUICE_CRASH_ROUNDS` sets the rounds (default 5).
#[test]
fn sigkill_mid_write_through_raft_loses_nothing_acknowledged() {
    let rounds: usize = std::env::var("SLUICE_CRASH_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5);
    let mut broker = Broker::start(&[]);
    let mut conn = RawConn::connect(broker.addr);
    conn.create("crash", 2);
    drop(conn);
    let mut acked: Vec<(u32, u64, String)> = Vec::new();
    let mut seq = 0usize;
    for round in 0..rounds {
        let addr = broker.addr;
        let start = seq;
        let writer = std::thread::spawn(move || {
            let mut out = Vec::new();
            let Ok(stream) = std::net::TcpStream::connect(addr) else {
                return out;
            };
            drop(stream);
            let mut c = RawConn::connect(addr);
            for i in start.. {
                let p = (i % 2) as u32;
                let records = batch(&format!("c{i}"), 3);
                // The broker dies under us at some point: stop at the first failure.
                let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    c.produce_acks("crash", p, records, Acks::All)
                }));
                match r {
                    Ok(r) if r.error == ErrorCode::NONE => {
                        for j in 0..3u64 {
                            out.push((p, r.base_offset + j, format!("c{i}-{j}")));
                        }
                    }
                    _ => break,
                }
            }
            out
        });
        std::thread::sleep(Duration::from_millis(150 + (round as u64 * 97) % 400));
        broker.kill();
        let got = writer.join().unwrap();
        seq += got.len() / 3 + 1;
        acked.extend(got);
        broker.restart();
        let mut conn = RawConn::connect(broker.addr);
        for p in 0..2u32 {
            let stored: std::collections::HashMap<u64, String> =
                conn.consume_all("crash", p).into_iter().collect();
            for (ap, off, v) in acked.iter().filter(|a| a.0 == p) {
                assert_eq!(
                    stored.get(off),
                    Some(v),
                    "round {round}: acknowledged {v} at {ap}/{off} lost"
                );
            }
        }
    }
    assert!(
        acked.len() > 100,
        "only {} records acknowledged",
        acked.len()
    );
}
