//! The join measurement of `sluice-bench group`: `--join-members` members of a fresh group tail a
//! fresh topic of twice as many partitions that a producer writes to (one record per partition every
//! `--produce-interval-ms`). Once the group has settled and run settled for a while, one more member
//! joins (its first `poll`, the instant J). Its first record comes at F; the window after the join is
//! [J, F + one heartbeat interval], and an equally long window right before J is the baseline.
//!
//! - Partitions that do not move: the longest gap between consecutive records their owner received,
//!   over the partitions, in the window after the join against the window before it.
//! - Partitions that move (to the newcomer): from J until the newcomer received a record of each,
//!   the longest; and from the old owner's last record to the newcomer's first.
//!
//! A partition that changed owner without going to the newcomer would be a needless move: it is
//! reported, and left out of both figures.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use sluice_client::Admin;

use super::members::{self, Member, Sink};
use super::probe::{self, Cpu, Probe};
use super::tail::{self, longest_gap, Receipt, Stream, Timeline};
use super::GroupSettings;
use crate::load::{prepare_topic, random_u64, Error, Stop};

/// What the join measured.
#[derive(Debug)]
pub(super) struct Join {
    /// Members before the join.
    pub members: usize,
    pub partitions: u32,
    /// From the members' start until the group settled.
    pub settle: Duration,
    /// From the join until the newcomer's first record.
    pub first_record: Duration,
    /// Length of each window (first record plus one heartbeat interval).
    pub window: Duration,
    /// The baseline window was cut short: the group had not been settled that long.
    pub baseline_cut: Option<Duration>,
    /// Partitions that kept their owner.
    pub unmoved: usize,
    /// Their longest gap in the window before the join, and in the window after it.
    pub gap_before: Duration,
    pub gap_after: Duration,
    /// Unmoved partitions whose gap after the join exceeded one heartbeat interval.
    pub unmoved_over_interval: usize,
    /// Per partition the newcomer took: (partition, from the join to its first record there,
    /// from the old owner's last record to that one).
    pub moved: Vec<Moved>,
    /// Partitions that changed owner without going to the newcomer.
    pub other_moves: Vec<u32>,
    /// The unmoved partition with the longest gap after the join, and whether its owner was one
    /// that gave a partition to the newcomer.
    pub worst_unmoved: Option<(u32, bool)>,
    pub duplicates: u64,
    pub skipped: u64,
    /// Coordinator probe round trips (median, longest, samples) in the window before the join
    /// and in the one after.
    pub probe_before: (Duration, Duration, usize),
    pub probe_after: (Duration, Duration, usize),
    /// CPU (broker, bench) in percent of a core while settled before the join, and from the join
    /// to the end of the observation.
    pub cpu_before: (Option<f64>, Option<f64>),
    pub cpu_after: (Option<f64>, Option<f64>),
}

/// The join measurement.
pub(super) async fn run(g: &GroupSettings, addr: &str, admin: &Admin) -> Result<Join, Error> {
    let n = u32::try_from(2 * g.join_members).map_err(|_| "--join-members is too large")?;
    let s = g.load_settings(n, Stop::Count(1))?;
    let topic = prepare_topic(&s, admin, addr).await?;
    let mut stream = Stream::start(addr, &topic.name, n, g.produce_interval)?;
    let timeline = Arc::new(Timeline::new(n));
    let group = format!("bench-join-{:016x}", random_u64());
    let started = Instant::now();
    let mut running = Vec::with_capacity(g.join_members + 1);
    for i in 0..g.join_members {
        let sink: Arc<dyn Sink> = timeline.clone();
        running.push(Member::start(addr, &group, &topic.name, i as u32, sink)?);
    }
    eprintln!(
        "sluice-bench: group: {} members joining over {n} partitions",
        g.join_members
    );
    let settled = members::settle(&mut running, n, 2 * g.heartbeat, g.settle_wait).await?;
    eprintln!(
        "sluice-bench: group: settled after {:.1} s; one more member joins",
        settled.saturating_duration_since(started).as_secs_f64()
    );
    let probe = Probe::start(addr, &group, &topic.name).await?;
    // Settled for long enough that the baseline window fits before the join.
    let cpu_settled = Cpu::now(g.broker_pid);
    tail::pause(&mut running, &mut stream, 4 * g.heartbeat).await?;
    let cpu_join = Cpu::now(g.broker_pid);
    let stable_since = running
        .iter()
        .filter_map(|m| m.view.changed_at())
        .max()
        .unwrap_or(settled);

    let who = g.join_members as u32;
    let sink: Arc<dyn Sink> = timeline.clone();
    running.push(Member::start(addr, &group, &topic.name, who, sink)?);
    let newcomer = running
        .last()
        .map(|m| m.view.clone())
        .ok_or("no newcomer")?;
    let deadline = Instant::now() + g.resume_wait;
    let (joined, first) = loop {
        tail::healthy(&mut running, &mut stream).await?;
        if let (Some(j), Some(f)) = (newcomer.first_poll.get(), newcomer.first_record.get()) {
            break (*j, *f);
        }
        if Instant::now() > deadline {
            return Err(format!(
                "the member that joined received nothing within {:?}",
                g.resume_wait
            )
            .into());
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    let window = first.saturating_duration_since(joined) + g.heartbeat;
    let window_end = joined + window;
    // Watch past the window so gaps that start in it end, and until every partition the newcomer
    // owns has given it a record.
    let (observed_until, owned_by_newcomer) = loop {
        tail::healthy(&mut running, &mut stream).await?;
        let now = Instant::now();
        let owned = newcomer.assignment();
        let all_read = timeline.with(|r| {
            owned.iter().all(|p| {
                r[*p as usize]
                    .iter()
                    .rev()
                    .take_while(|(t, _)| *t >= joined)
                    .any(|(_, m)| *m == who)
            })
        });
        if now >= window_end + g.heartbeat && all_read {
            break (now, owned);
        }
        if now > deadline + window {
            return Err("the member that joined did not read all its partitions".into());
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    let receipts = timeline.receipts();
    let cpu_end = Cpu::now(g.broker_pid);
    members::stop_all(running).await?;
    stream.stop().await?;
    let samples = probe.stop().await?;

    let wanted = joined.checked_sub(window).unwrap_or(joined);
    let baseline_from = wanted.max(stable_since);
    let baseline_cut =
        (baseline_from > wanted).then(|| joined.saturating_duration_since(baseline_from));
    let (duplicates, skipped) = timeline.duplicates_and_skips();
    let mut out = Join {
        members: g.join_members,
        partitions: n,
        settle: settled.saturating_duration_since(started),
        first_record: first.saturating_duration_since(joined),
        window,
        baseline_cut,
        unmoved: 0,
        gap_before: Duration::ZERO,
        gap_after: Duration::ZERO,
        unmoved_over_interval: 0,
        moved: Vec::new(),
        other_moves: Vec::new(),
        worst_unmoved: None,
        duplicates,
        skipped,
        probe_before: probe::summary(&samples, baseline_from, joined),
        probe_after: probe::summary(&samples, joined, window_end),
        cpu_before: cpu_settled.percent(&cpu_join),
        cpu_after: cpu_join.percent(&cpu_end),
    };
    let mut givers = BTreeSet::new();
    let mut worst: Option<(u32, u32, Duration)> = None;
    for (p, r) in receipts.iter().enumerate() {
        let p = p as u32;
        let by_newcomer = r.iter().any(|(_, m)| *m == who);
        if by_newcomer || owned_by_newcomer.contains(&p) {
            if let Some((m, giver)) = moved(p, r, who, joined) {
                out.moved.push(m);
                givers.extend(giver);
            }
            continue;
        }
        let owners: BTreeSet<u32> = r
            .iter()
            .filter(|(t, _)| *t >= baseline_from)
            .map(|(_, m)| *m)
            .collect();
        if owners.len() > 1 {
            out.other_moves.push(p);
            continue;
        }
        out.unmoved += 1;
        let before = longest_gap(r, baseline_from, joined, observed_until);
        let after = longest_gap(r, joined, window_end, observed_until);
        out.gap_before = out.gap_before.max(before);
        if worst.is_none_or(|(_, _, d)| after > d) {
            worst = owners.first().map(|o| (p, *o, after));
        }
        out.gap_after = out.gap_after.max(after);
        if after > g.heartbeat {
            out.unmoved_over_interval += 1;
        }
    }
    out.worst_unmoved = worst.map(|(p, owner, _)| (p, givers.contains(&owner)));
    Ok(out)
}

/// A partition the newcomer took: (partition, join to the newcomer's first record of it, the old
/// owner's last record to that one), and the old owner. `None` if the newcomer never read it (the
/// wait above rules that out for what it owns).
type Moved = (u32, Duration, Duration);

fn moved(p: u32, r: &[Receipt], who: u32, joined: Instant) -> Option<(Moved, Option<u32>)> {
    let first = r
        .iter()
        .find(|(t, m)| *m == who && *t >= joined)
        .map(|(t, _)| *t)?;
    let before = r.iter().rev().find(|(t, m)| *m != who && *t <= first);
    let last = before.map_or(joined, |(t, _)| *t);
    Some((
        (
            p,
            first.saturating_duration_since(joined),
            first.saturating_duration_since(last),
        ),
        before.map(|(_, m)| *m),
    ))
}
