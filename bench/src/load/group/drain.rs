//! The drain measurement of `sluice-bench group`: a fresh topic filled with the backlog by the
//! `consume` fill (one producer, as fast as it goes, not measured), then `--pairs` alternating
//! reads of the whole backlog from its start: one plain [`Consumer`](sluice_client::Consumer)
//! assigned every partition (the baseline, `consume`'s reader), then `--members` group members of
//! a fresh group (reset earliest). The group's time runs from its first member's first poll (so it
//! includes joining, the assignment and the committed-offset lookups) to the poll that returned the
//! last record not seen before; every (partition, offset) is counted, so a record read twice or
//! never is reported.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sluice_client::{Admin, ConsumerRecord, OffsetSpec, SeekTo};
use tokio::sync::watch;

use super::members::{self, lock, Member, Sink};
use super::GroupSettings;
use crate::load::consume::{self, SETTLE_WAIT};
use crate::load::produce::{self, histogram, Plan};
use crate::load::{offsets, prepare_topic, random_u64, settled_end_offsets, Error, Stop, Topic};

/// How long the group may read nothing new before the run gives up.
const STALL_WAIT: Duration = Duration::from_secs(30);

/// One read of the backlog.
#[derive(Debug, Clone, Copy)]
pub(super) struct Read {
    pub records: u64,
    pub value_bytes: u64,
    pub elapsed: Duration,
}

impl Read {
    pub fn mib_per_s(&self) -> f64 {
        crate::load::report::mib(self.value_bytes) / self.elapsed.as_secs_f64().max(1e-9)
    }
}

/// One group's read of the backlog.
#[derive(Debug, Clone, Copy)]
pub(super) struct GroupRead {
    /// Distinct records and their value bytes.
    pub read: Read,
    /// Records returned more than once (each extra time counts).
    pub duplicates: u64,
    /// Backlog records never returned (0 unless the run failed).
    pub missing: u64,
    /// From the first poll to the first records returned.
    pub first_record: Duration,
    /// From the first poll to the last change of any member's assignment (the group settled).
    pub settled: Duration,
    /// What was read after the group settled, if it settled before the end.
    pub after_settled: Option<Read>,
}

/// What the drain measured.
#[derive(Debug)]
pub(super) struct Drain {
    pub topic: String,
    /// Records of the backlog (its offsets include raft's control batches, which hold none).
    pub backlog_records: u64,
    pub backlog_bytes: u64,
    /// How long the fill took (not measured).
    pub fill_elapsed: Duration,
    pub plain: Vec<Read>,
    pub group: Vec<GroupRead>,
}

/// The drain measurement.
pub(super) async fn run(g: &GroupSettings, addr: &str, admin: &Admin) -> Result<Drain, Error> {
    let records = (g.backlog_mb << 20) / g.record_size as u64;
    let s = g.load_settings(g.partitions, Stop::Count(records.max(1)))?;
    let topic = prepare_topic(&s, admin, addr).await?;
    let before = offsets(admin, addr, &topic, OffsetSpec::Latest).await?;
    let plan = Plan {
        stop: s.stop,
        rate: None,
        stamp_base: None,
        halt: None,
    };
    eprintln!(
        "sluice-bench: group: filling {} with {} MiB of {} B records",
        topic.name, g.backlog_mb, g.record_size
    );
    let fill = produce::produce(&s, addr, &topic, plan).await?;
    settled_end_offsets(admin, addr, &topic, &before, fill.records, SETTLE_WAIT).await?;
    let starts = offsets(admin, addr, &topic, OffsetSpec::Earliest).await?;
    let ends = offsets(admin, addr, &topic, OffsetSpec::Latest).await?;
    let mut out = Drain {
        topic: topic.name.clone(),
        backlog_records: fill.records,
        backlog_bytes: fill.value_bytes,
        fill_elapsed: fill.elapsed,
        plain: Vec::new(),
        group: Vec::new(),
    };
    for pair in 1..=g.pairs {
        let p = plain(&s, addr, &topic, &ends).await?;
        let gr = group(g, addr, &topic, &starts, &ends, fill.records).await?;
        eprintln!(
            "sluice-bench: drain pair {pair}/{}: plain {:.1} MiB/s, group {:.1} MiB/s",
            g.pairs,
            p.mib_per_s(),
            gr.read.mib_per_s()
        );
        out.plain.push(p);
        out.group.push(gr);
    }
    Ok(out)
}

/// One plain consumer assigned every partition reads the backlog (the `consume` reader).
async fn plain(
    s: &crate::load::Settings,
    addr: &str,
    topic: &Topic,
    ends: &[u64],
) -> Result<Read, Error> {
    let mut readers = consume::readers(s, addr, topic, SeekTo::Earliest).await?;
    let reader = readers.pop().ok_or("no reader")?;
    let (_tx, rx) = watch::channel(Some(Arc::new(ends.to_vec())));
    let started = Instant::now();
    let c = consume::read(
        reader,
        addr.to_string(),
        topic.name.clone(),
        rx,
        None,
        histogram()?,
    )
    .await?;
    Ok(Read {
        records: c.records,
        value_bytes: c.value_bytes,
        elapsed: c
            .last_record
            .map_or(Duration::ZERO, |t| t.saturating_duration_since(started)),
    })
}

#[derive(Debug, Default)]
struct CountsInner {
    /// Per partition, times each offset from its start was returned.
    seen: Vec<Vec<u8>>,
    distinct: u64,
    distinct_bytes: u64,
    duplicates: u64,
    /// When the last record not seen before was returned.
    completed: Option<Instant>,
}

/// Counts every (partition, offset) the members return.
#[derive(Debug)]
struct Counts {
    starts: Vec<u64>,
    total: u64,
    done: AtomicBool,
    inner: Mutex<CountsInner>,
}

impl Sink for Counts {
    fn note(&self, _member: u32, at: Instant, records: &[ConsumerRecord]) {
        let mut i = lock(&self.inner);
        for r in records {
            let p = r.partition as usize;
            let Some(start) = self.starts.get(p) else {
                continue;
            };
            let Some(n) = r
                .offset
                .checked_sub(*start)
                .and_then(|o| usize::try_from(o).ok())
                .and_then(|o| i.seen[p].get_mut(o))
            else {
                continue;
            };
            *n = n.saturating_add(1);
            if *n == 1 {
                i.distinct += 1;
                i.distinct_bytes += r.value.as_ref().map_or(0, |v| v.len() as u64);
            } else {
                i.duplicates += 1;
            }
        }
        if i.distinct >= self.total && i.completed.is_none() {
            i.completed = Some(at);
            self.done.store(true, Ordering::Relaxed);
        }
    }

    fn done(&self) -> bool {
        self.done.load(Ordering::Relaxed)
    }
}

/// `--members` members of a fresh group read the backlog; each record counted.
async fn group(
    g: &GroupSettings,
    addr: &str,
    topic: &Topic,
    starts: &[u64],
    ends: &[u64],
    records: u64,
) -> Result<GroupRead, Error> {
    let counts = Arc::new(Counts {
        starts: starts.to_vec(),
        // Records, not offsets: raft's control batches take offsets too.
        total: records,
        done: AtomicBool::new(false),
        inner: Mutex::new(CountsInner {
            seen: ends
                .iter()
                .zip(starts)
                .map(|(e, s)| vec![0u8; (e - s.min(e)) as usize])
                .collect(),
            ..CountsInner::default()
        }),
    });
    let group = format!("bench-drain-{:016x}", random_u64());
    let mut running = Vec::with_capacity(g.members);
    for i in 0..g.members {
        let sink: Arc<dyn Sink> = counts.clone();
        running.push(Member::start(addr, &group, &topic.name, i as u32, sink)?);
    }
    let mut progress = (0u64, Instant::now());
    // (when, distinct records, their bytes), every few ms: what was read by when.
    let mut samples: Vec<(Instant, u64, u64)> = Vec::new();
    while !counts.done() {
        tokio::time::sleep(Duration::from_millis(5)).await;
        if counts.done() {
            break;
        }
        members::check_running(&mut running).await?;
        let (distinct, bytes) = {
            let i = lock(&counts.inner);
            (i.distinct, i.distinct_bytes)
        };
        samples.push((Instant::now(), distinct, bytes));
        if distinct != progress.0 {
            progress = (distinct, Instant::now());
        } else if progress.1.elapsed() > STALL_WAIT {
            return Err(format!(
                "the group {group} read nothing new for {STALL_WAIT:?} with {} of {} records read",
                distinct, counts.total
            )
            .into());
        }
    }
    let first_poll = running
        .iter()
        .filter_map(|m| m.view.first_poll.get())
        .min()
        .copied();
    let first_record = running
        .iter()
        .filter_map(|m| m.view.first_record.get())
        .min()
        .copied();
    let settled = running.iter().filter_map(|m| m.view.changed_at()).max();
    members::stop_all(running).await?;
    let i = lock(&counts.inner);
    let started = first_poll.ok_or("no member polled")?;
    let completed = i.completed.unwrap_or(started);
    let settled = settled.unwrap_or(started);
    // What had been read when the group settled (the last sample before it).
    let after_settled = (settled < completed).then(|| {
        let (_, records, bytes) = samples
            .iter()
            .rev()
            .find(|(t, ..)| *t <= settled)
            .copied()
            .unwrap_or((started, 0, 0));
        Read {
            records: i.distinct - records,
            value_bytes: i.distinct_bytes - bytes,
            elapsed: completed.saturating_duration_since(settled),
        }
    });
    Ok(GroupRead {
        read: Read {
            records: i.distinct,
            value_bytes: i.distinct_bytes,
            elapsed: i
                .completed
                .map_or(Duration::ZERO, |t| t.saturating_duration_since(started)),
        },
        duplicates: i.duplicates,
        missing: counts.total - i.distinct,
        first_record: first_record.map_or(Duration::ZERO, |t| t.saturating_duration_since(started)),
        settled: settled.saturating_duration_since(started),
        after_settled,
    })
}
