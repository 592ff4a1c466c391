//! The leave measurement of `sluice-bench group`: `--members` members of a fresh group tail a fresh
//! topic of `--partitions` partitions that a producer writes to (one record per partition every
//! `--produce-interval-ms`). Once the group has settled (every partition owned once, every member
//! receiving, no change for two heartbeat intervals), one member calls `close` (commit, revoke,
//! leave); the figure is the time from that call until each partition it owned returns a record to
//! another member, the longest over its partitions.

use std::time::{Duration, Instant};

use sluice_client::Admin;

use super::members::{self, Member};
use super::tail::{self, first_after, last_by, Stream, Timeline};
use super::GroupSettings;
use crate::load::{prepare_topic, random_u64, Error, Stop};

/// What the leave measured.
#[derive(Debug)]
pub(super) struct Leave {
    pub members: usize,
    pub partitions: u32,
    /// From the members' start until the group settled.
    pub settle: Duration,
    /// How long the leaving member's `close` took.
    pub close_took: Duration,
    /// Per partition the member owned: from its `close` until another member received a record.
    pub resumed: Vec<Duration>,
    /// Per partition: from the leaving member's last record until another member's first.
    pub paused: Vec<Duration>,
    pub duplicates: u64,
    pub skipped: u64,
}

/// The leave measurement.
pub(super) async fn run(g: &GroupSettings, addr: &str, admin: &Admin) -> Result<Leave, Error> {
    let s = g.load_settings(g.partitions, Stop::Count(1))?;
    let topic = prepare_topic(&s, admin, addr).await?;
    let n = topic.partitions;
    let mut stream = Stream::start(addr, &topic.name, n, g.produce_interval)?;
    let timeline = std::sync::Arc::new(Timeline::new(n));
    let group = format!("bench-leave-{:016x}", random_u64());
    let started = Instant::now();
    let mut running = Vec::with_capacity(g.members);
    for i in 0..g.members {
        let sink: std::sync::Arc<dyn members::Sink> = timeline.clone();
        running.push(Member::start(addr, &group, &topic.name, i as u32, sink)?);
    }
    let settled = members::settle(&mut running, n, 2 * g.heartbeat, g.settle_wait).await?;
    // Let it run settled for a moment, as a group does before one of its members leaves.
    tail::pause(&mut running, &mut stream, g.heartbeat).await?;
    let index = running
        .iter()
        .position(|m| !m.view.assignment().is_empty())
        .ok_or("no member owns a partition")?;
    let leaver = running.remove(index);
    let closed = leaver.stop().await?;
    if closed.owned.is_empty() {
        return Err("the leaving member owned nothing when it closed".into());
    }
    let who = index as u32;
    let deadline = closed.at + g.resume_wait;
    let (resumed, paused) = loop {
        tail::healthy(&mut running, &mut stream).await?;
        let firsts: Vec<Option<Instant>> = timeline.with(|r| {
            closed
                .owned
                .iter()
                .map(|p| first_after(&r[*p as usize], closed.at, Some(who)))
                .collect()
        });
        if firsts.iter().all(Option::is_some) {
            let receipts = timeline.receipts();
            let mut resumed = Vec::new();
            let mut paused = Vec::new();
            for (p, first) in closed.owned.iter().zip(firsts.into_iter().flatten()) {
                resumed.push(first.saturating_duration_since(closed.at));
                let last = last_by(&receipts[*p as usize], who, closed.at).unwrap_or(closed.at);
                paused.push(first.saturating_duration_since(last));
            }
            break (resumed, paused);
        }
        if Instant::now() > deadline {
            return Err(format!(
                "{} of the {} partitions a leaving member owned were not read again within {:?}",
                firsts.iter().filter(|f| f.is_none()).count(),
                closed.owned.len(),
                g.resume_wait
            )
            .into());
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    members::stop_all(running).await?;
    stream.stop().await?;
    let (duplicates, skipped) = timeline.duplicates_and_skips();
    Ok(Leave {
        members: g.members,
        partitions: n,
        settle: settled.saturating_duration_since(started),
        close_took: closed.took,
        resumed,
        paused,
        duplicates,
        skipped,
    })
}
