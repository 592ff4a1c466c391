//! Consumer groups with real processes: `sluice consume --group` members against a real broker,
//! SIGKILLed, SIGSTOPped and SIGTERMed, checked on what the group as a whole printed.
//!
//! - three members over 12 partitions each get a disjoint share and together print every record
//!   once; one is SIGKILLed and its partitions move to the others after its session: nothing is
//!   skipped and the only records printed twice are a tail of what the killed member printed (its
//!   uncommitted tail); a fourth member joins while records flow: the sticky assignor moves only
//!   the 4 partitions it gets, and the members keeping theirs print records of them during the
//!   rebalance (no stop-the-world);
//! - a member paused (SIGSTOP) past its session loses its partitions to the other, which reads them
//!   from the right offsets; resumed, it cannot move the committed offsets back and rejoins as a
//!   new member;
//! - `sluice group reset-offsets --to-earliest` on a live group makes its members read everything
//!   again without a restart.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;
use std::time::{Duration, Instant};

use sluice_tests::consumer_process::{print_counts, wait_all_seen, GroupProcess};
use sluice_tests::groups::group_config;
use sluice_tests::{batch, sluice_bin, Broker, RawConn};

const SESSION_MS: u64 = 2000;
const WAIT: Duration = Duration::from_secs(60);

/// Produces `n` records to every partition of `t`; returns the (partition, offset) of each.
fn produce(c: &mut RawConn, partitions: u32, n: usize, tag: &str) -> BTreeSet<(u32, u64)> {
    let mut out = BTreeSet::new();
    for p in 0..partitions {
        let r = c.produce("t", p, batch(tag, n));
        assert!(r.error.is_ok(), "{r:?}");
        out.extend((0..n as u64).map(|i| (p, r.base_offset + i)));
    }
    out
}

/// `sluice group describe GROUP --format json`.
fn describe(broker: &str, group: &str) -> serde_json::Value {
    let out = Command::new(sluice_bin())
        .args([
            "group", "describe", group, "--format", "json", "--broker", broker,
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// Member id -> its partitions, from a describe.
fn assignment(d: &serde_json::Value) -> BTreeMap<String, BTreeSet<u64>> {
    d["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            let parts = m["partitions"]
                .as_array()
                .unwrap()
                .iter()
                .map(|p| p["partition"].as_u64().unwrap())
                .collect();
            (m["member_id"].as_str().unwrap().to_string(), parts)
        })
        .collect()
}

/// Committed offset per partition, from a describe.
fn committed(d: &serde_json::Value) -> BTreeMap<u64, u64> {
    d["offsets"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|o| Some((o["partition"].as_u64()?, o["committed_offset"].as_u64()?)))
        .collect()
}

/// Waits until the group has `members` members that together own all `partitions`, settled.
fn wait_stable(broker: &str, members: usize, partitions: u64) -> serde_json::Value {
    let deadline = Instant::now() + WAIT;
    loop {
        let d = describe(broker, "g");
        let a = assignment(&d);
        let owned: usize = a.values().map(BTreeSet::len).sum();
        if d["state"] == "Stable" && a.len() == members && owned as u64 == partitions {
            return d;
        }
        assert!(Instant::now() < deadline, "group never settled: {d}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Checked to fail: with `reconcile` handing a member target partitions without the `owner_of`
/// check (so before their owner released them), the broker's own no-two-owners assertion fired on
/// the second join and the members timed out.
#[test]
fn members_share_exactly_once_a_killed_ones_partitions_move_and_a_join_moves_only_its_share() {
    let (_dir, config) = group_config();
    let broker = Broker::start(&["--config", &config]);
    let addr = broker.addr.to_string();
    let mut c = RawConn::connect(broker.addr);
    c.create("t", 12);
    let mut want = produce(&mut c, 12, 50, "one");

    let mut m: Vec<GroupProcess> = (0..3)
        .map(|_| GroupProcess::start(&addr, "t", "g", SESSION_MS))
        .collect();
    wait_all_seen(&m.iter().collect::<Vec<_>>(), &want, WAIT);
    let d = wait_stable(&addr, 3, 12);
    let shares = assignment(&d);
    assert!(shares.values().all(|s| s.len() == 4), "{shares:?}");
    let counts = print_counts(&m.iter().collect::<Vec<_>>());
    assert!(
        counts.values().all(|&n| n == 1),
        "a record printed twice before any failure"
    );
    // Each member printed only records of partitions it owned: disjoint sets.
    let parts: Vec<BTreeSet<u32>> = m
        .iter()
        .map(|x| x.records().iter().map(|&(p, _)| p).collect())
        .collect();
    for i in 0..3 {
        for j in i + 1..3 {
            assert!(parts[i].is_disjoint(&parts[j]), "{parts:?}");
        }
    }

    // SIGKILL one; more records arrive; the other two take its partitions after its session.
    let killed_printed = m[0].seen();
    m[0].kill();
    want.extend(produce(&mut c, 12, 50, "two"));
    wait_all_seen(&m.iter().collect::<Vec<_>>(), &want, WAIT);
    let counts = print_counts(&m.iter().collect::<Vec<_>>());
    let twice: BTreeSet<(u32, u64)> = counts
        .iter()
        .filter(|(_, &n)| n > 1)
        .map(|(&k, _)| k)
        .collect();
    assert!(counts.values().all(|&n| n <= 2));
    // Duplicates are a tail of what the killed member printed, per partition.
    let mut by_part: BTreeMap<u32, Vec<u64>> = BTreeMap::new();
    for &(p, o, _) in &killed_printed {
        by_part.entry(p).or_default().push(o);
    }
    for (p, offsets) in &by_part {
        let dup: Vec<u64> = offsets
            .iter()
            .copied()
            .filter(|o| twice.contains(&(*p, *o)))
            .collect();
        let tail = &offsets[offsets.len() - dup.len()..];
        assert_eq!(
            dup, tail,
            "partition {p}: duplicates are not the killed member's tail"
        );
    }
    assert!(
        twice.iter().all(|&(p, _)| by_part.contains_key(&p)),
        "a duplicate outside the killed member's partitions"
    );

    // A fourth member joins while a producer keeps writing: only its share moves.
    let before = wait_stable(&addr, 2, 12);
    let before = assignment(&before);
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let s = stop.clone();
    let baddr = broker.addr;
    let flow_from = Instant::now();
    let flow = std::thread::spawn(move || {
        let mut c = RawConn::connect(baddr);
        let mut produced = BTreeSet::new();
        while !s.load(std::sync::atomic::Ordering::Relaxed) {
            produced.extend(produce(&mut c, 12, 1, "flow"));
            std::thread::sleep(Duration::from_millis(20));
        }
        produced
    });
    // The join comes once both members print records of the flow.
    let deadline = Instant::now() + WAIT;
    while !m[1..3]
        .iter()
        .all(|x| x.seen().iter().any(|&(_, _, t)| t > flow_from))
    {
        assert!(
            Instant::now() < deadline,
            "the members never printed the flow"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let joined_at = Instant::now();
    m.push(GroupProcess::start(&addr, "t", "g", SESSION_MS));
    let after = assignment(&wait_stable(&addr, 3, 12));
    let newcomer_first = loop {
        if let Some(&(_, _, t)) = m[3].seen().first() {
            break t;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    // The flow goes on until the newcomer printed a record of each partition it got.
    let theirs: BTreeSet<u32> = after
        .iter()
        .filter(|(id, _)| !before.contains_key(*id))
        .flat_map(|(_, parts)| parts.iter().map(|&p| p as u32))
        .collect();
    assert_eq!(theirs.len(), 4, "{before:?} -> {after:?}");
    while !theirs
        .iter()
        .all(|p| m[3].seen().iter().any(|&(q, _, _)| q == *p))
    {
        assert!(
            Instant::now() < deadline,
            "the newcomer never read {theirs:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let flowed = flow.join().unwrap();
    let old: BTreeSet<u64> = before.values().flatten().copied().collect();
    assert_eq!(old.len(), 12);
    let kept: usize = before
        .iter()
        .filter_map(|(id, parts)| after.get(id).map(|now| now.intersection(parts).count()))
        .sum();
    assert_eq!(
        kept, 8,
        "the join moved more than the newcomer's 4: {before:?} -> {after:?}"
    );
    // The members keeping partitions printed records of them between the join and the newcomer's
    // first record: the rebalance did not stop them.
    let kept_parts: BTreeSet<u32> = before
        .iter()
        .filter_map(|(id, parts)| {
            after
                .get(id)
                .map(|now| now.intersection(parts).copied().collect::<Vec<_>>())
        })
        .flatten()
        .map(|p| p as u32)
        .collect();
    let during: BTreeSet<u32> = m[1..3]
        .iter()
        .flat_map(|x| {
            x.seen()
                .into_iter()
                .filter(|&(_, _, t)| t > joined_at && t < newcomer_first)
                .map(|(p, _, _)| p)
        })
        .collect();
    assert!(
        !during.is_disjoint(&kept_parts),
        "no kept partition printed a record during the rebalance ({during:?}, kept {kept_parts:?})"
    );
    want.extend(flowed);
    wait_all_seen(&m.iter().collect::<Vec<_>>(), &want, WAIT);
}

/// A paused member loses its partitions; resumed, it cannot commit over its successor's offsets.
///
/// The fencing mechanism itself (stale epoch, a partition not owned, an evicted member) is checked
/// to fail on raw frames in `group_protocol.rs`; here both sides guard it (the client drops its
/// partitions without committing once it learns it was evicted), so this is the end-to-end view:
/// committed offsets never go back after the paused member resumes.
#[test]
fn a_paused_member_is_fenced_and_rejoins_as_a_new_member() {
    let (_dir, config) = group_config();
    let broker = Broker::start(&["--config", &config]);
    let addr = broker.addr.to_string();
    let mut c = RawConn::connect(broker.addr);
    c.create("t", 4);
    let mut want = produce(&mut c, 4, 50, "one");
    let mut a = GroupProcess::start(&addr, "t", "g", SESSION_MS);
    let mut b = GroupProcess::start(&addr, "t", "g", SESSION_MS);
    wait_all_seen(&[&a, &b], &want, WAIT);
    let d = wait_stable(&addr, 2, 4);
    let ids_before: BTreeSet<String> = assignment(&d).keys().cloned().collect();
    // Pause a; records keep coming; b takes all four partitions after a's session.
    a.stop();
    want.extend(produce(&mut c, 4, 50, "two"));
    let stopped_at = Instant::now();
    wait_all_seen(&[&a, &b], &want, WAIT);
    assert!(stopped_at.elapsed() >= Duration::from_millis(SESSION_MS) / 2);
    let d = wait_stable(&addr, 1, 4);
    let high: BTreeMap<u64, u64> = committed(&d);
    // Nothing skipped by b on a's partitions: it read them from a's committed offsets.
    let a_printed = a.records();
    for (p, o) in &want {
        assert!(a_printed.contains(&(*p, *o)) || b.records().contains(&(*p, *o)));
    }
    // Resume a: its stale positions must not be committed over b's.
    a.cont();
    let d = wait_stable(&addr, 2, 4);
    let ids_after: BTreeSet<String> = assignment(&d).keys().cloned().collect();
    assert_eq!(
        ids_before.intersection(&ids_after).count(),
        1,
        "a rejoined as a new member: {ids_before:?} {ids_after:?}"
    );
    let now = committed(&d);
    for (p, o) in &high {
        assert!(
            now.get(p).is_some_and(|n| n >= o),
            "partition {p} went back from {o}: {now:?}"
        );
    }
    want.extend(produce(&mut c, 4, 10, "three"));
    wait_all_seen(&[&a, &b], &want, WAIT);
    assert_eq!(a.terminate(), Some(0));
    assert_eq!(b.terminate(), Some(0));
}

/// `reset-offsets --to-earliest` on a live group: both members read everything again.
///
/// Checked to fail: with `groups::offsets::reset` writing the offsets at once while the
/// partitions were still owned (no revocation), the members kept their positions and committed
/// over the reset: nothing was read again.
#[test]
fn a_live_reset_makes_members_reread_without_a_restart() {
    let (_dir, config) = group_config();
    let broker = Broker::start(&["--config", &config]);
    let addr = broker.addr.to_string();
    let mut c = RawConn::connect(broker.addr);
    c.create("t", 4);
    let want = produce(&mut c, 4, 30, "one");
    let mut a = GroupProcess::start(&addr, "t", "g", SESSION_MS);
    let mut b = GroupProcess::start(&addr, "t", "g", SESSION_MS);
    wait_all_seen(&[&a, &b], &want, WAIT);
    wait_stable(&addr, 2, 4);
    let out = Command::new(sluice_bin())
        .args([
            "group",
            "reset-offsets",
            "g",
            "--topic",
            "t",
            "--to-earliest",
            "--broker",
            &addr,
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let deadline = Instant::now() + WAIT;
    loop {
        let counts = print_counts(&[&a, &b]);
        if want.iter().all(|k| counts.get(k).is_some_and(|&n| n >= 2)) {
            break;
        }
        assert!(Instant::now() < deadline, "not everything was read again");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        a.is_running() && b.is_running(),
        "the members were not restarted"
    );
    assert_eq!(a.terminate(), Some(0));
    assert_eq!(b.terminate(), Some(0));
}

/// Produces `n` records with the client (which follows leader changes), acks `all`; the
/// (partition, offset) of each.
fn produce_client(bootstrap: &str, n: usize, tag: &str) -> BTreeSet<(u32, u64)> {
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let producer = sluice_client::Producer::new(
            bootstrap,
            sluice_client::ProducerConfig {
                // Idempotent (the default): this once needed idempotence off, when a batch raft
                // dropped after the leader kill stayed "in flight" until its retries ran out.
                acks: sluice_client::Acks::All,
                ..sluice_client::ProducerConfig::default()
            },
        )
        .unwrap();
        let mut deliveries = Vec::new();
        for i in 0..n {
            let r =
                sluice_client::ProducerRecord::new("t", format!("{tag}-{i}")).key(format!("k{i}"));
            deliveries.push(producer.send(r).await.unwrap());
        }
        producer.flush().await.unwrap();
        let mut out = BTreeSet::new();
        for d in deliveries {
            let m = d.await.unwrap();
            out.insert((m.partition, m.offset.unwrap()));
        }
        producer.close().await.unwrap();
        out
    })
}

/// Coordinator failover with member processes on a 3-broker cluster: the broker leading the
/// group's offsets partition is SIGKILLed; the members carry on with the new coordinator, from
/// the committed offsets: nothing is skipped, and what is read twice is at most what was printed
/// but not yet committed when the coordinator died (each record at most twice).
///
/// What makes this work on the broker side (the group state replicated to the new coordinator) is
/// checked to fail in `group_failover.rs`. Breaking the client's side instead (its coordinator
/// address never forgotten) did NOT make this test fail: the members still recovered, through a
/// path not yet understood; noted in the issue.
#[test]
fn members_continue_on_a_new_coordinator_after_the_old_one_is_killed() {
    use sluice_tests::cluster::{create, eventually, Cluster};
    use sluice_tests::groups::find;
    let (_dir, config) = group_config();
    let mut cluster = Cluster::start(3, &["--config", &config]);
    create(&cluster, "t", 6, 3, &[]);
    let bootstrap = cluster.bootstrap();
    let mut want = produce_client(&bootstrap, 600, "one");
    let a = GroupProcess::start(&bootstrap, "t", "g", SESSION_MS);
    let b = GroupProcess::start(&bootstrap, "t", "g", SESSION_MS);
    wait_all_seen(&[&a, &b], &want, WAIT);
    let coordinator = {
        let mut c = RawConn::connect(cluster.addr(1));
        let f = find(&mut c, "g");
        assert!(f.error.is_ok(), "{f:?}");
        f.node_id
    };
    // Something committed to continue from: every partition has a committed offset.
    eventually(
        Duration::from_secs(30),
        "a commit on every partition",
        || {
            let mut c = RawConn::connect(cluster.addr(coordinator));
            let o = sluice_tests::groups::fetch_offsets(&mut c, "g", &[0, 1, 2, 3, 4, 5]);
            (o.error.is_ok() && o.offsets.len() == 6 && o.offsets.iter().all(|p| p.offset >= 0))
                .then_some(())
        },
    );
    cluster.member(coordinator).broker.kill();
    let survivor = if coordinator == 1 { 2 } else { 1 };
    eventually(Duration::from_secs(30), "a new coordinator", || {
        let mut c = RawConn::connect(cluster.addr(survivor));
        let f = find(&mut c, "g");
        (f.error.is_ok() && f.node_id != coordinator).then_some(())
    });
    let alive: Vec<String> = cluster
        .members
        .iter()
        .filter(|m| m.id != coordinator)
        .map(|m| m.proxy.addr.to_string())
        .collect();
    want.extend(produce_client(&alive.join(","), 600, "two"));
    wait_all_seen(&[&a, &b], &want, WAIT);
    let counts = print_counts(&[&a, &b]);
    assert!(
        counts.values().all(|&n| n <= 2),
        "a record printed three times"
    );
}
