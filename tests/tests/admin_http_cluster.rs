//! The HTTP admin API on a 3-broker cluster: every broker is ready and answers for the whole
//! cluster, including what only other brokers hold — the offsets and sizes of partitions it hosts
//! no replica of, every replica's state and every broker's raft state (each asked of the broker
//! that has it), groups coordinated elsewhere — a broker that is down costs only its own rows, and
//! a replica move started over HTTP completes.
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

/// Three brokers, each ready, and topic `t` created over HTTP (through broker `via`, 0-based)
/// with 3 partitions and `rf` replicas; the cluster, a client and each broker's admin URL.
async fn ready_cluster_with_topic(via: usize, rf: u16) -> (Cluster, Client, Vec<String>) {
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
        .post(format!("{}/v1/topics", bases[via]))
        .json(&json!({"name": "t", "partitions": 3, "replication_factor": rf}))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), StatusCode::CREATED);
    (cluster, http, bases)
}

/// Broken once: not asking the leader for a partition this broker does not host (leaving
/// `high_watermark: null`) made it fail ("timed out waiting for offsets from every broker").
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_broker_answers_for_the_whole_cluster() {
    let (cluster, http, bases) = ready_cluster_with_topic(2, 2).await;
    for p in 0..3 {
        let lines: String = (0..=p).map(|i| format!("r{i}\n")).collect();
        let run = sluice(
            cluster.bootstrap(),
            &["produce", "t", "--partition", &p.to_string()],
            Some(&lines),
        );
        assert_eq!(run.code, 0, "{}", run.stderr);
    }
    // Every broker gives the same high watermarks and sizes, whether it hosts the partition or
    // not (both come from the partition's leader).
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
            assert!(p["size_bytes"].as_u64() > Some(0), "broker {node}: {p}");
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

/// The leader's row among a partition's `replica_states`.
fn leader_state(p: &Value) -> Option<&Value> {
    let states = p["replica_states"].as_array()?;
    let mut leading = states.iter().filter(|r| r["role"] == "leader");
    let first = leading.next()?;
    leading.next().is_none().then_some(first)
}

/// Each broker reports what it holds (DescribeReplicas), and any broker's admin API shows all of
/// it. Broken once: answering `replicas_everywhere` from the local broker only (no DescribeReplicas
/// to the others) made it fail (a timeout in `until`: no partition had exactly one leading replica).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_broker_shows_every_replica_and_every_brokers_raft_state() {
    let (mut cluster, http, bases) = ready_cluster_with_topic(0, 3).await;
    let lines: String = (0..300).map(|i| format!("record-{i}\n")).collect();
    let run = sluice(cluster.bootstrap(), &["produce", "t"], Some(&lines));
    assert_eq!(run.code, 0, "{}", run.stderr);

    // From every broker: each partition's three replicas, one of them leading (the partition's
    // leader), all with the leader's log end once caught up, each with bytes on disk.
    for base in &bases {
        let t = until(30, "every replica's state", || async {
            let (s, t) = get(&http, base, "/v1/topics/t").await;
            let ps = t["partitions"].as_array()?;
            let settled = s == StatusCode::OK
                && ps.iter().all(|p| {
                    let Some(leader) = leader_state(p) else {
                        return false;
                    };
                    let states = p["replica_states"].as_array().unwrap();
                    states.len() == 3
                        && states.iter().all(|r| {
                            r["error"].is_null()
                                && r["log_end_offset"] == leader["log_end_offset"]
                                && r["size_bytes"].as_u64() > Some(0)
                        })
                });
            settled.then_some(t)
        })
        .await;
        let mut stored = 0;
        for p in t["partitions"].as_array().unwrap() {
            let leader = leader_state(p).unwrap();
            assert_eq!(p["leader"], leader["broker"], "{p}");
            assert_eq!(p["log_end_offset"], leader["log_end_offset"], "{p}");
            assert_eq!(p["size_bytes"], leader["size_bytes"], "{p}");
            assert_eq!(p["high_watermark"], leader["high_watermark"], "{p}");
            let brokers: Vec<&Value> = p["replica_states"]
                .as_array()
                .unwrap()
                .iter()
                .map(|r| &r["broker"])
                .collect();
            let replicas: Vec<&Value> = p["replicas"].as_array().unwrap().iter().collect();
            assert_eq!(brokers, replicas, "in replica order: {p}");
            stored +=
                p["high_watermark"].as_u64().unwrap() - p["log_start_offset"].as_u64().unwrap();
        }
        // The records, plus a few raft entries per partition (its first ones, leader changes).
        assert!(
            (300..320).contains(&stored),
            "{stored} offsets for 300 records: {t}"
        );
    }

    // The cluster view from every broker: each broker's own metadata raft state and replicas, with
    // exactly one metadata leader — the controller — and every partition led once.
    for base in &bases {
        let c = until(30, "every broker's raft state", || async {
            let (s, c) = get(&http, base, "/v1/cluster").await;
            let brokers = c["brokers"].as_array()?;
            let leading: u64 = brokers
                .iter()
                .map(|b| b["replicas"]["leading"].as_u64().unwrap_or(0))
                .sum();
            (s == StatusCode::OK
                && brokers.len() == 3
                && brokers
                    .iter()
                    .all(|b| b["metadata_raft"]["role"].is_string())
                && leading == 3)
                .then_some(c)
        })
        .await;
        let brokers = c["brokers"].as_array().unwrap();
        let meta_leaders: Vec<&Value> = brokers
            .iter()
            .filter(|b| b["metadata_raft"]["role"] == "leader")
            .map(|b| &b["node_id"])
            .collect();
        assert_eq!(meta_leaders, vec![&c["controller"]], "{c}");
        for b in brokers {
            assert_eq!(b["replicas"]["hosted"], 3, "{c}");
            assert!(b["error"].is_null(), "{c}");
        }
    }

    // Broker 3 down: its rows say so, the rest is still answered.
    cluster.member(3).broker.kill();
    let (s, c) = until(30, "broker 3's row to report the failure", || async {
        let (s, c) = get(&http, &bases[0], "/v1/cluster").await;
        let b3 = c["brokers"]
            .as_array()?
            .iter()
            .find(|b| b["node_id"] == 3)?
            .clone();
        b3["error"].is_string().then_some((s, c))
    })
    .await;
    assert_eq!(s, StatusCode::OK);
    for b in c["brokers"].as_array().unwrap() {
        let down = b["node_id"] == 3;
        assert_eq!(b["metadata_raft"].is_null(), down, "{c}");
        assert_eq!(b["error"].is_string(), down, "{c}");
    }
    let t = until(30, "leaders among the live brokers", || async {
        let (_, t) = get(&http, &bases[1], "/v1/topics/t").await;
        let ps = t["partitions"].as_array()?;
        ps.iter()
            .all(|p| leader_state(p).is_some_and(|l| l["broker"] != 3))
            .then_some(t)
    })
    .await;
    for p in t["partitions"].as_array().unwrap() {
        for r in p["replica_states"].as_array().unwrap() {
            let down = r["broker"] == 3;
            assert_eq!(r["error"].is_string(), down, "{p}");
            assert_eq!(r["role"].is_null(), down, "{p}");
        }
        assert!(p["high_watermark"].as_u64() > Some(0), "{p}");
    }
}
