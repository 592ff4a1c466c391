//! Fixed out-of-order streams through each window kind, with the exact sink records (keys, values,
//! timestamps), late and bad records they must produce, worked out by hand from the rules in
//! docs/operators.md.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use sluice_window::spec::{parse_aggregates, parse_window};
use sluice_window::{Input, Operator, Output, Spec, TimeSource, ValueSource};

fn spec(window: &str, aggregates: &str, ooo: i64, lateness: i64) -> Spec {
    Spec {
        window: parse_window(window).unwrap(),
        time: TimeSource::Field("ts".into()),
        value: ValueSource::Field("v".into()),
        aggregates: parse_aggregates(aggregates).unwrap(),
        out_of_orderness_ms: ooo,
        allowed_lateness_ms: lateness,
        idle_timeout_ms: None,
        max_state_bytes: 1 << 20,
    }
}

/// What came out, readably: `key=value` (value `null` for a tombstone), `late@offset`,
/// `bad@offset`.
fn run(spec: Spec, records: &[(&str, &str)]) -> Vec<String> {
    let mut op = Operator::new(spec);
    let mut out = Vec::new();
    for (offset, (key, value)) in records.iter().enumerate() {
        op.process(
            Input {
                offset: offset as u64,
                timestamp_ms: 0,
                processing_ms: 0,
                key: Some(key.as_bytes()),
                value: Some(value.as_bytes()),
            },
            &mut out,
        )
        .unwrap();
    }
    out.into_iter()
        .map(|o| match o {
            Output::Sink {
                key,
                value,
                timestamp_ms,
            } => format!(
                "{}={} ts={timestamp_ms}",
                String::from_utf8_lossy(&key),
                value.map_or("null".into(), |v| String::from_utf8_lossy(&v).into_owned())
            ),
            Output::Late { offset } => format!("late@{offset}"),
            Output::Bad { offset, .. } => format!("bad@{offset}"),
        })
        .collect()
}

fn ev(ts: i64, v: &str) -> String {
    format!(r#"{{"ts":{ts},"v":{v}}}"#)
}

#[test]
fn tumbling_fires_at_the_watermark_updates_within_lateness_and_refuses_after() {
    let r = [
        ("a", ev(1, "1")),
        ("a", ev(3, "2")),
        ("b", ev(12, "5")), // W 12: a@0 fires
        ("a", ev(5, "4")),  // [0,10) + lateness 5 = 15 > 12: accepted, an update
        ("a", ev(24, "1")), // W 24: b@10 fires, [0,10) dropped (15 <= 24)
        ("a", ev(6, "9")),  // too late
        ("a", r#"{"ts":30}"#.to_string()),
        ("a", "{not json".to_string()),
    ];
    let r: Vec<(&str, &str)> = r.iter().map(|(k, v)| (*k, v.as_str())).collect();
    assert_eq!(
        run(spec("tumbling:10ms", "count,sum,first,last", 0, 5), &r),
        vec![
            r#"a@0={"key":"a","window_start":0,"window_end":10,"count":2,"sum":3.0,"first":1.0,"last":2.0} ts=9"#,
            r#"a@0={"key":"a","window_start":0,"window_end":10,"count":3,"sum":7.0,"first":1.0,"last":4.0} ts=9"#,
            r#"b@10={"key":"b","window_start":10,"window_end":20,"count":1,"sum":5.0,"first":5.0,"last":5.0} ts=19"#,
            "late@5",
            "bad@6",
            "bad@7",
        ]
    );
}

#[test]
fn out_of_orderness_holds_the_watermark_back() {
    let r = [
        ("a", ev(1, "1")),
        ("a", ev(12, "1")), // W 7 (ooo 5): nothing fires
        ("a", ev(4, "1")),  // still accepted, still not fired
        ("a", ev(15, "1")), // W 10: a@0 fires with 2 records
    ];
    let r: Vec<(&str, &str)> = r.iter().map(|(k, v)| (*k, v.as_str())).collect();
    assert_eq!(
        run(spec("tumbling:10ms", "count", 5, 0), &r),
        vec![r#"a@0={"key":"a","window_start":0,"window_end":10,"count":2} ts=9"#]
    );
}

#[test]
fn sliding_windows_each_fire_once_with_every_record_they_hold() {
    let r = [
        ("a", ev(1, "1")),  // [-5,5) and [0,10)
        ("a", ev(7, "2")),  // [0,10) and [5,15); W 7: [-5,5) fires
        ("a", ev(16, "4")), // [10,20), [15,25); W 16: [0,10), [5,15) fire
    ];
    let r: Vec<(&str, &str)> = r.iter().map(|(k, v)| (*k, v.as_str())).collect();
    assert_eq!(
        run(spec("sliding:10ms:5ms", "sum,max", 0, 0), &r),
        vec![
            r#"a@-5={"key":"a","window_start":-5,"window_end":5,"sum":1.0,"max":1.0} ts=4"#,
            r#"a@0={"key":"a","window_start":0,"window_end":10,"sum":3.0,"max":2.0} ts=9"#,
            r#"a@5={"key":"a","window_start":5,"window_end":15,"sum":2.0,"max":2.0} ts=14"#,
        ]
    );
}

#[test]
fn sessions_merge_and_tombstone_the_windows_they_absorb() {
    let r = [
        ("a", ev(1, "1")),  // [1,6)
        ("a", ev(4, "1")),  // merged: [1,9)
        ("a", ev(20, "1")), // [20,25); W 20: a@1 [1,9) fires
        ("a", ev(10, "1")), // [10,15): 15 + 15 > 20, accepted; W >= 15: written at once
        ("a", ev(7, "1")),  // [7,12) bridges [1,9) and [10,15): a@10 tombstoned, a@1 = [1,15)
        ("a", ev(2, "1")),  // inside [1,15): an update of a@1
        ("b", ev(40, "1")), // W 40: a@20 fires; [1,15) dropped (30 <= 40)
        ("a", ev(3, "1")),  // [3,8) + 15 <= 40: too late
    ];
    let r: Vec<(&str, &str)> = r.iter().map(|(k, v)| (*k, v.as_str())).collect();
    assert_eq!(
        run(spec("session:5ms", "count,min", 0, 15), &r),
        vec![
            r#"a@1={"key":"a","window_start":1,"window_end":9,"count":2,"min":1.0} ts=8"#,
            r#"a@10={"key":"a","window_start":10,"window_end":15,"count":1,"min":1.0} ts=14"#,
            "a@10=null ts=14",
            r#"a@1={"key":"a","window_start":1,"window_end":15,"count":4,"min":1.0} ts=14"#,
            r#"a@1={"key":"a","window_start":1,"window_end":15,"count":5,"min":1.0} ts=14"#,
            r#"a@20={"key":"a","window_start":20,"window_end":25,"count":1,"min":1.0} ts=24"#,
            "late@7",
        ]
    );
}

#[test]
fn an_advance_closes_the_last_windows_of_a_quiet_partition() {
    let mut op = Operator::new(spec("tumbling:10ms", "count", 0, 0));
    let mut out = Vec::new();
    let v = ev(3, "1");
    op.process(
        Input {
            offset: 0,
            timestamp_ms: 0,
            processing_ms: 0,
            key: Some(b"k"),
            value: Some(v.as_bytes()),
        },
        &mut out,
    )
    .unwrap();
    assert!(out.is_empty());
    op.advance(9, &mut out).unwrap();
    assert!(out.is_empty(), "W 9 has not reached the end 10");
    op.advance(10, &mut out).unwrap();
    assert_eq!(out.len(), 1, "{out:?}");
    let s = op.stats();
    assert_eq!((s.keys, s.windows, s.emitted), (0, 0, 1), "dropped: {s:?}");
    assert_eq!(s.state_bytes, 0, "nothing left is counted: {s:?}");
}

/// Seen failing with the limit check removed.
#[test]
fn an_operator_past_its_state_limit_fails_and_stays_failed() {
    let mut s = spec("tumbling:1000ms", "count", 0, 0);
    s.max_state_bytes = 10_000;
    let mut op = Operator::new(s);
    let mut out = Vec::new();
    let mut failed = None;
    for i in 0..1000u64 {
        let key = format!("key-{i}");
        let v = ev(5, "1");
        let r = op.process(
            Input {
                offset: i,
                timestamp_ms: 0,
                processing_ms: 0,
                key: Some(key.as_bytes()),
                value: Some(v.as_bytes()),
            },
            &mut out,
        );
        if let Err(e) = r {
            failed = Some((i, e));
            break;
        }
    }
    let (at, e) = failed.expect("the limit is reached");
    assert!(at < 100, "failed only at record {at}");
    assert!(e.to_string().contains("limit"), "{e}");
    assert!(op.stats().failed.is_some());
    assert!(op.advance(10_000, &mut out).is_err(), "it stays failed");
}
