//! The HTTP admin API on a 3-broker cluster: every broker is ready and answers for the whole
//! cluster, including what only other brokers hold — the offsets of partitions it hosts no replica
//! of (asked of their leaders), groups coordinated elsewhere — and a replica move started over
//! HTTP completes.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use reqwest::{Client, StatusCode};
use serde_json::{json, Value};
use sluice_tests::cli::sluice;
use sluice_tests::cluster::Cluster;

async fn get(http: &Client, base: &str, path: &str) -> (StatusCode, Value) {
    let r = http.get(format!("{base}{path}")).send().await.unwrap();
    let status = r.status();
    (status, r.json().await.unwrap())
}

/// Polls `f` until it returns `Some`, for at most `secs` seconds.
async fn until<T, F: std::future::Future<Output = Option<T>>>(
    secs: u64,
    what: &str,
    mut f: impl FnMut() -> F,
) -> T {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Broken once: not asking the leader for a partition this broker does not host (leaving
/// `high_watermark: null`) made it fail ("timed out waiting for offsets from every broker").
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_broker_answers_for_the_whole_cluster() {
    let cluster = Cluster::start(3, &[]);
    let http = Client::new();
    let bases: Vec<String> = cluster
        .members
        .iter()
        .map(|m| m.broker.admin_url())
        .collect();
    for base in &bases {
        until(60, "readiness", || async {
            (get(&http, base, "/readyz").await.0 == StatusCode::OK).then_some(())
        })
        .await;
    }
    let created = http
        .post(format!("{}/v1/topics", bases[2]))
        .json(&json!({"name": "t", "partitions": 3, "replication_factor": 2}))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), StatusCode::CREATED);
    for p in 0..3 {
        let lines: String = (0..=p).map(|i| format!("r{i}\n")).collect();
        let run = sluice(
            cluster.bootstrap(),
            &["produce", "t", "--partition", &p.to_string()],
            Some(&lines),
        );
        assert_eq!(run.code, 0, "{}", run.stderr);
    }
    // Every broker gives the same high watermarks, whether it hosts the partition or not; only
    // its own replicas have a size.
    let mut seen: Option<Vec<Value>> = None;
    for (i, base) in bases.iter().enumerate() {
        let node = i as u64 + 1;
        let t = until(30, "offsets from every broker", || async {
            let (s, t) = get(&http, base, "/v1/topics/t").await;
            let ps = t["partitions"].as_array()?.clone();
            (s == StatusCode::OK && ps.iter().all(|p| p["high_watermark"].is_u64())).then_some(t)
        })
        .await;
        let partitions = t["partitions"].as_array().unwrap();
        let mut remote = 0;
        for p in partitions {
            let hosted = p["replicas"]
                .as_array()
                .unwrap()
                .iter()
                .any(|r| r.as_u64() == Some(node));
            assert_eq!(p["size_bytes"].is_u64(), hosted, "broker {node}: {p}");
            assert!(p["error"].is_null(), "{p}");
            remote += usize::from(!hosted);
        }
        assert!(
            remote > 0,
            "with RF 2 of 3, broker {node} lacks a partition: {t}"
        );
        let hws: Vec<Value> = partitions
            .iter()
            .map(|p| p["high_watermark"].clone())
            .collect();
        match &seen {
            None => seen = Some(hws),
            Some(first) => assert_eq!(first, &hws, "broker {node} disagrees: {t}"),
        }
    }
    let hws = seen.unwrap();
    assert!(
        hws[1].as_u64() > hws[0].as_u64(),
        "partition 1 holds one more record: {hws:?}"
    );

    // The cluster view: three brokers, and the leaders it counts are the partitions' leaders.
    let (s, c) = get(&http, &bases[0], "/v1/cluster").await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(c["brokers"].as_array().unwrap().len(), 3, "{c}");

    // A group coordinated by whichever broker, listed and described from every broker.
    let run = sluice(
        cluster.bootstrap(),
        &["consume", "t", "--group", "g", "--count", "6"],
        None,
    );
    assert_eq!(run.code, 0, "{}", run.stderr);
    for base in &bases {
        let (s, groups) = get(&http, base, "/v1/groups").await;
        assert_eq!(s, StatusCode::OK, "{groups}");
        assert!(
            groups["groups"]
                .as_array()
                .unwrap()
                .iter()
                .any(|g| g["group"] == "g"),
            "{groups}"
        );
        let (s, g) = get(&http, base, "/v1/groups/g").await;
        assert_eq!(s, StatusCode::OK, "{g}");
        let lag: u64 = g["offsets"]
            .as_array()
            .unwrap()
            .iter()
            .map(|o| o["lag"].as_u64().unwrap())
            .sum();
        assert_eq!(lag, 0, "6 records consumed and committed: {g}");
    }

    // A replica move over HTTP: partition 0 to the broker that does not have it and one that does.
    let (_, t) = get(&http, &bases[0], "/v1/topics/t").await;
    let old: Vec<u64> = t["partitions"][0]["replicas"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r.as_u64().unwrap())
        .collect();
    let missing = (1..=3).find(|b| !old.contains(b)).unwrap();
    let target = vec![missing, old[0]];
    let moved = http
        .post(format!(
            "{}/v1/topics/t/partitions/0/reassignment",
            bases[1]
        ))
        .json(&json!({"replicas": target}))
        .send()
        .await
        .unwrap();
    assert_eq!(moved.status(), StatusCode::ACCEPTED);
    until(60, "the move to complete", || async {
        let (_, t) = get(&http, &bases[2], "/v1/topics/t").await;
        (t["partitions"][0]["replicas"] == json!(target)).then_some(())
    })
    .await;
}
