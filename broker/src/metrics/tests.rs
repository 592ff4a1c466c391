//! The rendering: what the hot paths count and a snapshot holds comes out under the documented
//! names, as Prometheus text that parses line by line.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::time::Duration;

use bytes::Bytes;
use prometheus_parse::{Scrape, Value};
use sluice_protocol::wire::ApiKey;
use sluice_protocol::{BatchBuilder, Compression};

// The strict Prometheus-text reader the end-to-end test uses too (one source; by path because the
// broker may not depend on the tests crate).
#[path = "../../../tests/src/prometheus.rs"]
mod prometheus;
use prometheus::parse;

use super::snapshot::{BufferSample, LagSample, OperatorSample, PartitionSample, RaftSample};
use super::*;

/// The value of `metric` with exactly `labels`.
fn value(s: &Scrape, metric: &str, labels: &[(&str, &str)]) -> Option<Value> {
    let want: HashMap<String, String> = labels
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    s.samples
        .iter()
        .find(|x| x.metric == metric && *x.labels == want)
        .map(|x| x.value.clone())
}

fn number(s: &Scrape, metric: &str, labels: &[(&str, &str)]) -> f64 {
    match value(s, metric, labels) {
        Some(Value::Counter(v) | Value::Gauge(v) | Value::Untyped(v)) => v,
        other => panic!("{metric} {labels:?}: {other:?}"),
    }
}

fn batch(records: usize, control: bool) -> Bytes {
    let mut b = BatchBuilder::new(Compression::None);
    if control {
        b = b.control();
    }
    for i in 0..records {
        b.append(i as i64, None, Some(b"value"), &[]);
    }
    b.seal().unwrap()
}

/// Hot-path counts come out under their names: produced and fetched bytes and records per topic
/// (fetched records from data batches only), request latencies by API, refusals, connections.
/// Seen failing with control batches counted in `data_records` (records out 6, not 5).
#[test]
fn hot_path_counts_are_rendered() {
    let m = Metrics::new();
    let p = m.partition(7, "orders", 0);
    p.produced(100, 3);
    p.produced(50, 2);
    let mut fetched = batch(2, false).to_vec();
    fetched.extend_from_slice(&batch(1, true));
    fetched.extend_from_slice(&batch(3, false));
    let fetched = Bytes::from(fetched);
    p.fetched(&fetched);
    p.commit_latency().record(Duration::from_millis(2));
    m.request_latency(ApiKey::Produce)
        .record(Duration::from_micros(300));
    m.request_latency(ApiKey::Produce)
        .record(Duration::from_secs(30));
    m.request_latency(ApiKey::ListOffsets)
        .record(Duration::ZERO);
    m.rejected(Rejection::MessageTooLarge);
    m.throttled_produce();
    m.waited(Bound::Produce);
    let c1 = m.connection();
    let c2 = m.connection();
    drop(c1);
    let held = m.inflight(1000);
    assert_eq!(m.inflight_bytes(), 1000);
    drop(held);
    assert_eq!(m.inflight_bytes(), 0);

    let s = parse(&m.render(&Snapshot::default()).unwrap());
    let topic = [("topic", "orders")];
    assert_eq!(number(&s, "sluice_topic_bytes_in_total", &topic), 150.0);
    assert_eq!(number(&s, "sluice_topic_records_in_total", &topic), 5.0);
    assert_eq!(
        number(&s, "sluice_topic_bytes_out_total", &topic),
        fetched.len() as f64
    );
    assert_eq!(number(&s, "sluice_topic_records_out_total", &topic), 5.0);
    assert_eq!(
        number(
            &s,
            "sluice_request_duration_seconds_count",
            &[("api", "produce")]
        ),
        2.0
    );
    assert_eq!(
        number(
            &s,
            "sluice_request_duration_seconds_count",
            &[("api", "list_offsets")]
        ),
        1.0
    );
    // Only APIs that were used have series.
    assert!(value(
        &s,
        "sluice_request_duration_seconds_count",
        &[("api", "fetch")]
    )
    .is_none());
    let Some(Value::Histogram(h)) =
        value(&s, "sluice_request_duration_seconds", &[("api", "produce")])
    else {
        panic!("no produce histogram");
    };
    let le = |bound: f64| h.iter().find(|b| b.less_than == bound).unwrap().count;
    assert_eq!(
        (le(0.00025), le(0.0005), le(10.0), le(f64::INFINITY)),
        (0.0, 1.0, 1.0, 2.0)
    );
    let partition = [("group", "7"), ("topic", "orders"), ("partition", "0")];
    assert_eq!(
        number(&s, "sluice_raft_commit_latency_seconds_count", &partition),
        1.0
    );
    assert_eq!(
        number(
            &s,
            "sluice_requests_rejected_total",
            &[("reason", "message_too_large")]
        ),
        1.0
    );
    assert_eq!(
        number(
            &s,
            "sluice_requests_rejected_total",
            &[("reason", "frame_too_large")]
        ),
        0.0
    );
    assert_eq!(
        number(&s, "sluice_requests_throttled_total", &[("api", "produce")]),
        1.0
    );
    assert_eq!(
        number(
            &s,
            "sluice_backpressure_waits_total",
            &[("buffer", "produce")]
        ),
        1.0
    );
    assert_eq!(number(&s, "sluice_connections_total", &[]), 2.0);
    assert_eq!(number(&s, "sluice_connections_open", &[]), 1.0);
    drop(c2);
    // The fsync histogram is always there (process-wide).
    assert!(value(&s, "sluice_fsync_duration_seconds", &[]).is_some());

    // A deleted topic's traffic and a moved replica's latency leave the output.
    m.forget_topic("orders");
    m.forget_partition(7, "orders", 0);
    let text = m.render(&Snapshot::default()).unwrap();
    assert!(!text.contains("orders"), "{text}");
}

/// Every histogram is cumulative and its `+Inf` bucket is its count.
#[test]
fn histograms_are_cumulative() {
    let m = Metrics::new();
    let l = m.request_latency(ApiKey::Fetch);
    for us in [1, 80, 80, 700, 3_000, 40_000, 2_000_000, 20_000_000] {
        l.record(Duration::from_micros(us));
    }
    let s = parse(&m.render(&Snapshot::default()).unwrap());
    let Some(Value::Histogram(h)) =
        value(&s, "sluice_request_duration_seconds", &[("api", "fetch")])
    else {
        panic!("no fetch histogram");
    };
    assert!(h
        .windows(2)
        .all(|w| w[0].less_than < w[1].less_than && w[0].count <= w[1].count));
    assert_eq!(h.last().unwrap().less_than, f64::INFINITY);
    assert_eq!(h.last().unwrap().count, 8.0);
    assert_eq!(
        number(
            &s,
            "sluice_request_duration_seconds_count",
            &[("api", "fetch")]
        ),
        8.0
    );
    let sum = number(
        &s,
        "sluice_request_duration_seconds_sum",
        &[("api", "fetch")],
    );
    assert!((sum - 22.043861).abs() < 1e-9, "{sum}");
}

fn snapshot() -> Snapshot {
    Snapshot {
        partitions: vec![PartitionSample {
            topic: "orders".into(),
            partition: 1,
            leader: true,
            log_start_offset: 10,
            log_end_offset: 50,
            high_watermark: 48,
            size_bytes: 4096,
        }],
        raft: vec![
            RaftSample {
                group: 0,
                partition: None,
                term: 3,
                leader: true,
                leader_changes: 2,
                last_log_index: 9,
                committed_index: 9,
                applied_index: 8,
            },
            RaftSample {
                group: 5,
                partition: Some(("orders".into(), 1)),
                term: 4,
                leader: false,
                leader_changes: 1,
                last_log_index: 50,
                committed_index: 48,
                applied_index: 48,
            },
        ],
        lag: vec![LagSample {
            group: "billing".into(),
            topic: "orders".into(),
            partition: 1,
            committed_offset: 40,
            lag_records: 8,
            lag_seconds: Some(1.5),
        }],
        operators: vec![OperatorSample {
            operator: "counts".into(),
            partition: 1,
            leader: true,
            watermark_ms: Some(1_700_000_000_500),
            lag_ms: 250,
            lag_records: 6,
            state_bytes: 777,
            keys: 3,
            windows: 4,
            late: 2,
            bad: 1,
            emitted: 9,
            failed: false,
        }],
        buffers: vec![BufferSample {
            buffer: "produce",
            used_bytes: 5,
            limit_bytes: 100,
        }],
        produce_pending_limit: Some(64),
    }
}

/// A snapshot's state comes out as gauges (and the counters the state keeps) under the
/// documented names and labels.
#[test]
fn state_is_rendered_with_its_labels() {
    let s = parse(&Metrics::new().render(&snapshot()).unwrap());
    let tp = [("topic", "orders"), ("partition", "1")];
    assert_eq!(number(&s, "sluice_partition_log_start_offset", &tp), 10.0);
    assert_eq!(number(&s, "sluice_partition_log_end_offset", &tp), 50.0);
    assert_eq!(number(&s, "sluice_partition_high_watermark", &tp), 48.0);
    assert_eq!(number(&s, "sluice_partition_size_bytes", &tp), 4096.0);
    assert_eq!(number(&s, "sluice_partition_leader", &tp), 1.0);
    assert_eq!(number(&s, "sluice_raft_term", &[("group", "0")]), 3.0);
    assert_eq!(
        number(&s, "sluice_raft_leader_changes_total", &[("group", "0")]),
        2.0
    );
    let g5 = [("group", "5"), ("topic", "orders"), ("partition", "1")];
    assert_eq!(number(&s, "sluice_raft_term", &g5), 4.0);
    assert_eq!(number(&s, "sluice_raft_leader", &g5), 0.0);
    assert_eq!(number(&s, "sluice_raft_committed_index", &g5), 48.0);
    let lag = [
        ("group", "billing"),
        ("topic", "orders"),
        ("partition", "1"),
    ];
    assert_eq!(number(&s, "sluice_consumer_group_lag_records", &lag), 8.0);
    assert_eq!(number(&s, "sluice_consumer_group_lag_seconds", &lag), 1.5);
    assert_eq!(
        number(&s, "sluice_consumer_group_committed_offset", &lag),
        40.0
    );
    let op = [("operator", "counts"), ("partition", "1")];
    assert_eq!(
        number(&s, "sluice_operator_watermark_timestamp_seconds", &op),
        1_700_000_000.5
    );
    assert_eq!(number(&s, "sluice_operator_lag_seconds", &op), 0.25);
    assert_eq!(number(&s, "sluice_operator_lag_records", &op), 6.0);
    assert_eq!(number(&s, "sluice_operator_state_bytes", &op), 777.0);
    assert_eq!(number(&s, "sluice_operator_late_records_total", &op), 2.0);
    assert_eq!(number(&s, "sluice_operator_bad_records_total", &op), 1.0);
    assert_eq!(
        number(&s, "sluice_operator_emitted_records_total", &op),
        9.0
    );
    assert_eq!(
        number(&s, "sluice_buffer_used_bytes", &[("buffer", "produce")]),
        5.0
    );
    assert_eq!(
        number(&s, "sluice_buffer_limit_bytes", &[("buffer", "produce")]),
        100.0
    );
    assert_eq!(number(&s, "sluice_produce_pending_limit", &[]), 64.0);
}

/// Label values a client chose (group ids) are escaped, so they cannot break the format.
#[test]
fn label_values_are_escaped() {
    let mut snap = Snapshot::default();
    snap.lag.push(LagSample {
        group: "a\"b\\c\nd".into(),
        topic: "t".into(),
        lag_seconds: Some(0.0),
        ..LagSample::default()
    });
    let text = Metrics::new().render(&snap).unwrap();
    assert!(text.contains(r#"group="a\"b\\c\nd""#), "{text}");
    parse(&text);
}

#[test]
fn data_records_stop_at_a_bad_header() {
    let mut bytes = batch(4, false).to_vec();
    bytes.extend_from_slice(
        b"garbage that is no batch header at all, long enough to be read as one........",
    );
    bytes.extend_from_slice(&batch(2, false));
    assert_eq!(data_records(&bytes), 4);
    assert_eq!(data_records(&[]), 0);
    assert_eq!(api_label(ApiKey::InitProducerId), "init_producer_id");
}
