//! `GroupConsumer` against the real broker (2 s sessions, 100 ms heartbeats): three members
//! share a topic exactly once with disjoint assignments; a member that crashes after committing
//! has its partitions taken over from its commits after its session; a member joining moves only
//! the partitions it receives while the others keep reading the rest; the heartbeat task keeps a
//! slow handler's member alive within its processing deadline (and not past it); a failing
//! offset lookup makes the consumer wait, never start at the end; a static member restarting
//! within its session keeps its partitions; a slow revocation commit stalls none of the partitions
//! a member keeps and hands the moved ones over exactly at it (`revoke`). Each test's doc comment
//! says what was broken to see it fail.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use sluice_client::{Admin, GroupConsumerConfig, OffsetReset, OffsetSpec, Subscription};

mod group_support;
use group_support::*;

// Its own file to keep this one short; part of this test binary.
#[path = "group_consumer/revoke.rs"]
mod revoke;

/// Three members, 12 partitions, 12,000 records (half before the members join one after the
/// other, so the first ones revoke partitions they were reading; half once the group is stable):
/// every record returned exactly once, and the assignments are disjoint and cover the topic. Seen
/// failing (duplicates) with the revocation's commit of positions removed from `revoke`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_members_read_every_record_exactly_once() {
    let (_dir, broker) = group_broker();
    let addr = broker.addr.to_string();
    create(&addr, "t", 12).await;
    let mut produced = produce(&addr, "t", 12, 500).await;
    let seen: Seen = Arc::default();
    let mut members = Vec::new();
    for who in 0..3 {
        members.push(run(
            member(&addr, config("g1", "t")),
            who,
            seen.clone(),
            false,
        ));
        // The next one joins once this one owns partitions (so it has some to give away).
        let newest = members.last().unwrap();
        until("the newest member assigned", || !newest.owned().is_empty()).await;
    }
    until("a balanced group", || {
        balanced(&members.iter().collect::<Vec<_>>(), 12)
    })
    .await;
    produced += produce(&addr, "t", 12, 500).await;
    assert_eq!(produced, 12_000);
    until("every record", || counts(&seen).len() == produced).await;
    // Anything returned twice would show up in the members' next polls.
    polled_again(&members.iter().collect::<Vec<_>>()).await;
    let sets: Vec<BTreeSet<u32>> = members.iter().map(Running::owned).collect();
    for (i, a) in sets.iter().enumerate() {
        for b in &sets[i + 1..] {
            assert!(a.is_disjoint(b), "overlapping assignments {sets:?}");
        }
    }
    let c = counts(&seen);
    let twice: Vec<_> = c.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "returned more than once: {twice:?}");
    assert_eq!(c.len(), 12_000);
    let mut revocations = 0;
    for m in members {
        let events = m.stop().await;
        revocations += events
            .iter()
            .filter(|(_, e)| matches!(e, Event::Revoked(_)))
            .count();
        assert!(!events.iter().any(|(_, e)| matches!(e, Event::Lost(_))));
    }
    // The first two gave partitions away while reading them (the exactly-once claim covers that),
    // and each closed with a revocation.
    assert!(revocations >= 5, "{revocations} revocations");
}

/// Members commit after processing each poll; one of them commits after its first few hundred
/// records, reads one more batch (more records are written meanwhile), and crashes (dropped without `close`: no commit, no leave, its
/// heartbeat task aborted). Its partitions reach the others only after its session, from its
/// committed offsets: nothing is skipped, and what is read twice is exactly its uncommitted tail.
/// Seen failing with `Drop` leaving the group (the takeover came within the session) and with the
/// offset lookup's answer ignored (start per `reset`, earliest: far more than the tail read twice).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crashed_members_partitions_continue_from_its_commits() {
    let (_dir, broker) = group_broker();
    let addr = broker.addr.to_string();
    create(&addr, "t", 12).await;
    let seen: Seen = Arc::default();
    let mut manual = config("g2", "t");
    manual.auto_commit = None;
    let y = run(member(&addr, manual.clone()), 1, seen.clone(), true);
    let z = run(member(&addr, manual.clone()), 2, seen.clone(), true);
    let mut x = member(&addr, manual);
    // x joins too (nothing to read yet), driven by hand.
    let joined_by = Instant::now() + Duration::from_secs(60);
    let x_owned: BTreeSet<u32> = loop {
        assert!(x.poll(Duration::from_millis(100)).await.unwrap().is_empty());
        let owned: BTreeSet<u32> = x.assignment().into_iter().map(|(_, p)| p).collect();
        if owned.len() == 4 && y.owned().len() == 4 && z.owned().len() == 4 {
            break owned;
        }
        assert!(Instant::now() < joined_by, "the group never settled");
    };
    let mut produced = produce(&addr, "t", 12, 200).await;
    // x: a few hundred records, committed; then (once more are written) one more batch, not
    // committed.
    let mut read = 0;
    let deadline = Instant::now() + Duration::from_secs(60);
    while read < 300 {
        assert!(Instant::now() < deadline, "x read only {read}: {x:?}");
        let records = x.poll(Duration::from_millis(200)).await.unwrap();
        read += records.len();
        note(&seen, 0, &records);
    }
    x.commit_sync().await.unwrap();
    produced += produce(&addr, "t", 12, 800).await;
    let tail = loop {
        assert!(Instant::now() < deadline, "x read no tail: {x:?}");
        let records = x.poll(Duration::from_millis(200)).await.unwrap();
        if !records.is_empty() {
            break records;
        }
    };
    note(&seen, 0, &tail);
    let tail: BTreeSet<(u32, u64)> = tail.iter().map(|r| (r.partition, r.offset)).collect();
    drop(x);
    let crashed = Instant::now();

    // x may well have read everything: wait for its tail to be read again.
    until("the tail read again", || {
        let c = counts(&seen);
        c.len() == produced && tail.iter().all(|r| c.get(r).is_some_and(|n| *n > 1))
    })
    .await;
    polled_again(&[&y, &z]).await;
    // The others took x's partitions, but only once its session was over.
    let first_takeover = seen
        .lock()
        .unwrap()
        .iter()
        .filter(|(_, who, p, _)| *who != 0 && x_owned.contains(p))
        .map(|(t, ..)| *t)
        .min();
    let first_takeover = first_takeover.expect("nobody took x's partitions over");
    assert!(
        first_takeover.duration_since(crashed) > SESSION * 3 / 4,
        "taken over {:?} after the crash, within the session",
        first_takeover.duration_since(crashed)
    );
    let mut union = y.owned();
    union.extend(z.owned());
    assert_eq!(union.len(), 12, "y {:?} z {:?}", y.owned(), z.owned());
    let c = counts(&seen);
    assert_eq!(c.len(), produced, "nothing skipped");
    let twice: BTreeSet<(u32, u64)> = c.iter().filter(|(_, n)| **n > 1).map(|(k, _)| *k).collect();
    assert!(c.values().all(|n| *n <= 2));
    assert_eq!(
        twice, tail,
        "read twice: exactly the crashed member's uncommitted tail"
    );
    for m in [y, z] {
        let events = m.stop().await;
        assert!(!events.iter().any(|(_, e)| matches!(e, Event::Lost(_))));
    }
}

/// Two members read a steady stream; a third joins. Only the partitions it receives change owner
/// (the others' final assignments are within their first ones, and each gave up only what the
/// newcomer got); the partitions that stay keep yielding records to their owners in the polls
/// between the join and the end of reconciliation (the newcomer's last start); a moved partition
/// is never read by its new owner before its old one stopped; every record once. Seen failing with
/// `revoke` releasing every owned partition (eager: the kept ones were revoked and started again),
/// and with a `poll` that reconciles only after an empty fetch (under the stream the old members
/// did not release in time, were evicted, and records went missing).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_joining_member_moves_only_what_it_receives_while_the_rest_keep_flowing() {
    let (_dir, broker) = group_broker();
    let addr = broker.addr.to_string();
    create(&addr, "t", 12).await;
    let seen: Seen = Arc::default();
    let a = run(member(&addr, config("g3", "t")), 0, seen.clone(), false);
    let b = run(member(&addr, config("g3", "t")), 1, seen.clone(), false);
    until("a balanced pair", || balanced(&[&a, &b], 12)).await;
    let stop = Arc::new(AtomicBool::new(false));
    let producer = stream(&addr, "t", 12, stop.clone());
    until("a and b reading", || {
        let s = seen.lock().unwrap();
        s.iter().any(|r| r.1 == 0) && s.iter().any(|r| r.1 == 1)
    })
    .await;
    let (a0, b0) = (a.owned(), b.owned());
    let joined = Instant::now();
    let c = run(member(&addr, config("g3", "t")), 2, seen.clone(), false);
    until("a balanced trio", || balanced(&[&a, &b, &c], 12)).await;
    let (a1, b1, c1) = (a.owned(), b.owned(), c.owned());
    let ended = c
        .events
        .lock()
        .unwrap()
        .iter()
        .filter(|(_, e)| matches!(e, Event::Assigned(_)))
        .map(|(t, _)| *t)
        .max()
        .unwrap();
    // The stream goes on until the newcomer has read each partition it got.
    until("c reading what it got", || {
        let s = seen.lock().unwrap();
        c1.iter().all(|p| s.iter().any(|r| r.1 == 2 && r.2 == *p))
    })
    .await;
    stop.store(true, Ordering::Relaxed);
    let produced = producer.await.unwrap();
    until("every record", || counts(&seen).len() == produced).await;
    polled_again(&[&a, &b, &c]).await;

    assert!(
        a1.is_subset(&a0) && b1.is_subset(&b0),
        "a {a0:?}->{a1:?} b {b0:?}->{b1:?}"
    );
    let moved: BTreeSet<u32> = a0
        .difference(&a1)
        .chain(b0.difference(&b1))
        .copied()
        .collect();
    assert_eq!(moved, c1, "only the newcomer's partitions moved");
    let records = seen.lock().unwrap().clone();
    for (who, kept) in [(0, &a1), (1, &b1)] {
        let during = records
            .iter()
            .filter(|(t, w, p, _)| *w == who && kept.contains(p) && *t > joined && *t < ended)
            .count();
        assert!(
            during > 0,
            "member {who} read nothing of {kept:?} during the rebalance ({:?})",
            ended - joined
        );
    }
    for p in &moved {
        let old_last = records
            .iter()
            .filter(|r| r.1 != 2 && r.2 == *p)
            .map(|r| r.0)
            .max();
        let new_first = records
            .iter()
            .filter(|r| r.1 == 2 && r.2 == *p)
            .map(|r| r.0)
            .min();
        if let (Some(old), Some(new)) = (old_last, new_first) {
            assert!(
                old <= new,
                "partition {p} read by its new owner before the old one stopped"
            );
        }
    }
    let twice: Vec<_> = counts(&seen).into_iter().filter(|(_, n)| *n > 1).collect();
    assert!(twice.is_empty(), "returned more than once: {twice:?}");
    let _ = c.stop().await;
    for (m, gave) in [
        (a, a0.difference(&a1).copied().collect::<BTreeSet<u32>>()),
        (b, b0.difference(&b1).copied().collect()),
    ] {
        let events = m.stop().await;
        let during: Vec<&Event> = events
            .iter()
            .filter(|(t, _)| *t > joined && *t <= ended)
            .map(|(_, e)| e)
            .collect();
        for e in during {
            match e {
                Event::Revoked(ps) => {
                    assert!(
                        ps.iter().all(|(_, p)| gave.contains(p)),
                        "revoked a kept partition: {ps:?}"
                    )
                }
                other => panic!("unexpected {other:?} during the rebalance"),
            }
        }
    }
}

/// A handler that takes 3.5 s between polls (the session is 2 s) keeps its membership and
/// partitions when its deadline allows: `max_processing` 10 s, or 1 s pushed to 6 s by
/// `extend_deadline`. With 1 s and no extension the coordinator evicts it (the control): its next
/// poll loses the partitions. Seen failing with heartbeats sent only when `poll` wakes the task
/// (the first evicted), with `extend_deadline` a no-op (the second evicted), and with the deadline
/// sent as 1 s from each heartbeat instead of from the last poll (the control kept its
/// partitions).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_heartbeat_task_keeps_a_slow_handler_within_its_deadline() {
    let (_dir, broker) = group_broker();
    let addr = broker.addr.to_string();
    create(&addr, "t", 2).await;
    produce(&addr, "t", 2, 50).await;
    let cases = [
        ("g4a", Duration::from_secs(10), None, true),
        (
            "g4b",
            Duration::from_secs(1),
            Some(Duration::from_secs(6)),
            true,
        ),
        ("g4c", Duration::from_secs(1), None, false),
    ];
    let mut tasks = Vec::new();
    for (group, max_processing, extend, _) in cases {
        let mut cfg = config(group, "t");
        cfg.max_processing = max_processing;
        let mut c = member(&addr, cfg);
        let events: Events = Arc::default();
        c.set_listener(Box::new(Recorder(events.clone())));
        tasks.push(tokio::spawn(async move {
            while c.poll(Duration::from_millis(100)).await.unwrap().is_empty() {}
            let id = c.member_id().unwrap();
            if let Some(by) = extend {
                c.extend_deadline(by);
            }
            // The slow handler.
            tokio::time::sleep(Duration::from_millis(3500)).await;
            c.poll(Duration::from_millis(100)).await.unwrap();
            let after = c.member_id();
            let owned = c.assignment().len();
            c.close().await.unwrap();
            let events = events.lock().unwrap().clone();
            (id, after, owned, events)
        }));
    }
    for ((group, _, _, kept), task) in cases.into_iter().zip(tasks) {
        let (id, after, owned, events) = task.await.unwrap();
        let lost = events.iter().any(|(_, e)| matches!(e, Event::Lost(_)));
        if kept {
            assert!(!lost, "{group}: {events:?}");
            assert_eq!(after.as_deref(), Some(id.as_str()), "{group}: same member");
            assert_eq!(owned, 2, "{group}: kept its partitions");
        } else {
            assert!(
                lost,
                "{group}: past its deadline but not evicted: {events:?}"
            );
            assert_ne!(after.as_deref(), Some(id.as_str()), "{group}");
        }
    }
}

/// The group has committed offsets 20 and 30 (an admin commit); the consumer (reset `Latest`)
/// goes through a proxy that answers its first six offset lookups with `NOT_COORDINATOR` and
/// `COORDINATOR_NOT_AVAILABLE`. It reads nothing meanwhile, finds the coordinator again, then
/// reads from 20 and 30 — including records produced while it waited — never from the end. Seen
/// failing with a failed lookup taken as "nothing committed" (it started at the end and read
/// before its offsets were known).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_offset_lookup_waits_and_never_starts_at_the_end() {
    let (_dir, broker) = group_broker();
    let addr = broker.addr.to_string();
    create(&addr, "t", 2).await;
    produce(&addr, "t", 2, 50).await;
    group_support::admin_commit(broker.addr, "g5", "t", &[(0, 20), (1, 30)]);
    let proxy = FaultProxy::start(broker.addr, 6);
    let mut cfg = config("g5", "t");
    cfg.reset = OffsetReset::Latest;
    let mut c = member(&proxy.addr.to_string(), cfg);
    let admin = Admin::new(addr.clone()).unwrap();
    let mut got: BTreeMap<u32, Vec<u64>> = BTreeMap::new();
    // The ends of the partitions once the records written during the wait are in.
    let mut ends: Option<[u64; 2]> = None;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(ends) = ends {
            if (0..2).all(|p| c.position("t", p) == Some(ends[p as usize])) {
                break;
            }
        }
        assert!(Instant::now() < deadline, "only {got:?}, ends {ends:?}");
        let failed_before = proxy.failed();
        let records = c.poll(Duration::from_millis(100)).await.unwrap();
        if failed_before < 6 {
            assert!(records.is_empty(), "read before its offsets were known");
        }
        if ends.is_none() && failed_before >= 1 {
            // Written while the lookup fails: a consumer that jumped to the end would skip the
            // committed range and start here or later.
            produce(&addr, "t", 2, 10).await;
            let mut e = [0; 2];
            for (p, end) in e.iter_mut().enumerate() {
                *end = admin
                    .list_offsets("t", p as u32, OffsetSpec::Latest)
                    .await
                    .unwrap()
                    .unwrap();
            }
            ends = Some(e);
        }
        for r in records {
            got.entry(r.partition).or_default().push(r.offset);
        }
    }
    assert_eq!(proxy.failed(), 6);
    assert!(proxy.finds() >= 2, "the coordinator was not found again");
    let ends = ends.unwrap();
    assert_eq!(got[&0], (20..ends[0]).collect::<Vec<u64>>());
    assert_eq!(got[&1], (30..ends[1]).collect::<Vec<u64>>());
    c.close().await.unwrap();
}

/// A static member (an instance id; subscribed by pattern, as is the other member) closes — its
/// positions committed, its leave epoch -2 — and comes back within its session: meanwhile its
/// partitions go to nobody, and it gets exactly them back and continues where it stopped. Seen
/// failing with a static member leaving with -1 (the other member took its partitions).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_static_member_restarting_within_its_session_keeps_its_partitions() {
    let (_dir, broker) = group_broker();
    let addr = broker.addr.to_string();
    create(&addr, "s1", 4).await;
    produce(&addr, "s1", 4, 50).await;
    let pattern = || GroupConsumerConfig::new("g6", Subscription::Pattern("s.*".into()));
    let seen: Seen = Arc::default();
    let b = run(member(&addr, pattern()), 1, seen.clone(), false);
    let mut static_config = pattern();
    static_config.instance_id = Some("a".into());
    let mut a = member(&addr, static_config.clone());
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        assert!(Instant::now() < deadline, "never settled");
        a.poll(Duration::from_millis(100)).await.unwrap();
        let mine = a.assignment();
        if mine.len() == 2
            && b.owned().len() == 2
            && mine.iter().all(|(t, p)| a.position(t, *p).is_some())
        {
            break;
        }
    }
    let mine = a.assignment();
    let at: Vec<u64> = mine
        .iter()
        .map(|(t, p)| a.position(t, *p).unwrap())
        .collect();
    a.close().await.unwrap();
    let theirs = b.owned();
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(
        b.owned(),
        theirs,
        "the other member took the static member's partitions"
    );
    produce(&addr, "s1", 4, 10).await;
    let mut a = member(&addr, static_config);
    let mut first: BTreeMap<u32, u64> = BTreeMap::new();
    while first.len() < 2 {
        assert!(
            Instant::now() < deadline,
            "the static member read nothing after its restart"
        );
        for r in a.poll(Duration::from_millis(100)).await.unwrap() {
            first.entry(r.partition).or_insert(r.offset);
        }
    }
    assert_eq!(a.assignment(), mine, "the same partitions back");
    let want: BTreeMap<u32, u64> = mine.iter().map(|(_, p)| *p).zip(at).collect();
    assert_eq!(first, want, "continues where it stopped");
    assert_eq!(b.owned(), theirs);
    a.close().await.unwrap();
    b.stop().await;
}
