//! A revocation whose final commit is slow: the partitions the member keeps go on delivering
//! while it is in flight, and the moved ones reach their next owner only once it has landed, at
//! exactly the committed position.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use sluice_tests::{groups, RawConn};

use crate::group_support::*;

/// How long the proxy holds each of the giver's offset commits: well within the time a
/// revocation may spend committing (half the 2 s session).
const HOLD: Duration = Duration::from_millis(600);

/// Member a reads 4 partitions of a steady stream, its coordinator requests through a proxy that
/// holds each offset commit back 600 ms; it commits only on revocation (auto-commit every hour).
/// Member b joins and gets 2 of a's partitions. While a's revocation commit is held, a keeps
/// returning records of the 2 partitions it keeps; b starts each moved partition only after that
/// commit left the proxy, with exactly the record after a's last one (nothing lost, nothing read
/// twice). Seen failing with the old `revoke` awaiting the commit inside `poll` (a returned no
/// record of its kept partitions during the hold) and with the partitions released at revocation
/// instead of once their commit finished (`start_release` skipped: b read a moved partition 545 ms
/// before a's commit left the proxy, from nothing committed).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_revocation_commit_stalls_no_kept_partition_and_hands_over_exactly() {
    let (_dir, broker) = group_broker();
    let addr = broker.addr.to_string();
    create(&addr, "t", 4).await;
    // The proxy answers FindCoordinator itself: asked of the broker once, it creates the offsets
    // topic.
    let found = groups::find(&mut RawConn::connect(broker.addr), "g7");
    assert!(found.error.is_ok(), "{found:?}");
    let proxy = FaultProxy::holding_commits(broker.addr, HOLD);
    let mut cfg = config("g7", "t");
    cfg.auto_commit = Some(Duration::from_secs(3600));
    let seen: Seen = Arc::default();
    let a = run(
        member(&proxy.addr.to_string(), cfg.clone()),
        0,
        seen.clone(),
        false,
    );
    until("a owning every partition", || a.owned().len() == 4).await;
    let stop = Arc::new(AtomicBool::new(false));
    let producer = stream(&addr, "t", 4, stop.clone());
    until("a reading every partition", || {
        let s = seen.lock().unwrap();
        (0..4).all(|p| s.iter().any(|r| r.2 == p))
    })
    .await;
    let b = run(member(&addr, cfg), 1, seen.clone(), false);
    until("a balanced pair", || balanced(&[&a, &b], 4)).await;
    // The stream goes on until b has read each partition it got.
    until("b reading what it got", || {
        let s = seen.lock().unwrap();
        b.owned()
            .iter()
            .all(|p| s.iter().any(|r| r.1 == 1 && r.2 == *p))
    })
    .await;
    stop.store(true, Ordering::Relaxed);
    let produced = producer.await.unwrap();
    until("every record", || counts(&seen).len() == produced).await;
    polled_again(&[&a, &b]).await;

    let (kept, moved) = (a.owned(), b.owned());
    // a commits nothing but on revocation (and on close, still to come): the first is its own.
    let commits = proxy.commits();
    let (held_from, held_until) = *commits.first().expect("a committed nothing on revocation");
    assert!(held_until.duration_since(held_from) >= HOLD);
    let records = seen.lock().unwrap().clone();
    let polls_during: BTreeSet<_> = records
        .iter()
        .filter(|(t, w, p, _)| *w == 0 && kept.contains(p) && *t > held_from && *t < held_until)
        .map(|r| r.0)
        .collect();
    assert!(
        !polls_during.is_empty(),
        "a returned nothing of the partitions it keeps ({kept:?}) while its revocation commit was held"
    );
    for p in &moved {
        let a_last = records
            .iter()
            .filter(|r| r.1 == 0 && r.2 == *p)
            .map(|r| r.3)
            .max()
            .expect("a read every partition");
        let (b_at, b_first) = records
            .iter()
            .filter(|r| r.1 == 1 && r.2 == *p)
            .map(|r| (r.0, r.3))
            .min_by_key(|r| r.1)
            .expect("b read what it got");
        assert!(
            b_at > held_until,
            "partition {p} read by b {:?} before a's commit left the proxy",
            held_until.duration_since(b_at)
        );
        assert_eq!(
            b_first,
            a_last + 1,
            "partition {p}: b starts after a's last"
        );
    }
    let twice: Vec<_> = counts(&seen).into_iter().filter(|(_, n)| *n > 1).collect();
    assert!(twice.is_empty(), "returned more than once: {twice:?}");
    let _ = b.stop().await;
    let events = a.stop().await;
    assert!(!events.iter().any(|(_, e)| matches!(e, Event::Lost(_))));
}
