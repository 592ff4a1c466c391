//! `sluice-bench consume --tail-rate N`: does a replay hurt tailing consumers? A consumer tails
//! the backlog's topic while a producer writes to it at N records/s (each value stamped with its
//! send time, as in `e2e`), first alone, then while a second consumer replays the backlog from the
//! start (from a dropped page cache with `--cold`). The phase with the replay runs first and its
//! producer writes until the replay has read the whole backlog, so the tail is measured over the
//! whole replay (paced by the broker while the producer is active, so it takes longer than alone);
//! the phase alone then produces for as long. With `--tail-pairs N` the pair runs N times (each
//! replay reads the backlog as filled, not what the tails added; every second pair runs its phase
//! alone first, as long as the last phase with a replay). Reported: the tail's end-to-end
//! latency in each phase (all pairs together), each pair's p99 ratio and their median, and the
//! replay's rate under the tail's load.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use sluice_client::{Admin, OffsetSpec, SeekTo};
use tokio::sync::watch;

use super::backlog::{Backlog, SETTLE_AFTER_DROP};
use super::consume::{self, Consumed, SETTLE_WAIT};
use super::produce::{self, histogram, Plan};
use super::report::{mib, round1, round3, Report};
use super::{median, offsets, settled_end_offsets, Error, Settings, Stop, Topic};

/// How long the tail may take to reach the end once its producer finished.
const DRAIN_WAIT: Duration = Duration::from_secs(60);
/// The longest the phase with a replay produces for; a replay that outlasts it goes on without a
/// tail and unpaced, so its rate is reported as capped (`tail_replay_capped`).
const REPLAY_PHASE_CAP: Duration = Duration::from_secs(600);
/// The shortest a phase produces for.
const MIN_PHASE: Duration = Duration::from_secs(3);

/// What one phase measured.
#[derive(Debug)]
pub(crate) struct Phase {
    /// The tailing consumer: records, and end-to-end latency per record.
    pub tail: Consumed,
    /// The replay, if the phase had one, and how long it took.
    pub replay: Option<(Consumed, Duration)>,
    /// How long the producer wrote.
    pub produced_for: Duration,
}

/// Runs one phase: a producer at `rate` with a consumer tailing it, for `duration` or, with
/// `replay`, until a second consumer has read the topic from its start to those end offsets (at
/// least [`MIN_PHASE`]); with `cold`, after dropping the topic's pages.
#[allow(clippy::too_many_arguments)]
async fn phase(
    s: &Settings,
    addr: &str,
    topic: &Topic,
    admin: &Admin,
    rate: u64,
    duration: Duration,
    replay: Option<&[u64]>,
    cold: Option<&Backlog>,
) -> Result<Phase, Error> {
    let one = Settings {
        consumers: 1,
        ..s.clone()
    };
    // Both phases start from the same page cache, settled (see SETTLE_AFTER_DROP).
    if let Some(b) = cold {
        b.drop_cache()?;
        tokio::time::sleep(SETTLE_AFTER_DROP).await;
    }
    let base = Instant::now();
    let tailers = consume::readers(&one, addr, topic, SeekTo::Latest).await?;
    let starts = consume::positions(&tailers, topic);
    let (ends_tx, ends_rx) = watch::channel(None);
    let mut tail = Vec::new();
    for r in tailers {
        tail.push(tokio::spawn(consume::read(
            r,
            addr.to_string(),
            topic.name.clone(),
            ends_rx.clone(),
            Some(base),
            histogram()?,
        )));
    }
    let halt = Arc::new(AtomicBool::new(false));
    let replay_task = if let Some(ends) = replay {
        let done = spawn_replay(s.clone(), addr.to_string(), topic.clone(), ends.to_vec())?;
        let halt = halt.clone();
        Some(tokio::spawn(async move {
            let out = done.await;
            // The tail keeps its producer for at least MIN_PHASE.
            tokio::time::sleep(MIN_PHASE.saturating_sub(base.elapsed())).await;
            halt.store(true, Ordering::Relaxed);
            out
        }))
    } else {
        None
    };
    let plan = Plan {
        stop: Stop::Duration(if replay.is_some() {
            REPLAY_PHASE_CAP
        } else {
            duration
        }),
        rate: Some(rate),
        stamp_base: Some(base),
        halt: Some(halt),
    };
    let produced = produce::produce(&one, addr, topic, plan).await?;
    let ends =
        settled_end_offsets(admin, addr, topic, &starts, produced.records, SETTLE_WAIT).await?;
    // A send error only means the tail already ended (on an error, which joining reports).
    let _ = ends_tx.send(Some(Arc::new(ends)));
    let tail = tokio::time::timeout(DRAIN_WAIT, consume::join(tail))
        .await
        .map_err(|_| format!("the tailing consumer did not catch up within {DRAIN_WAIT:?}"))??;
    let replay = match replay_task {
        Some(t) => Some(
            t.await
                .map_err(|e| format!("the replay's watcher failed: {e}"))?
                .map_err(|_| "the replay thread ended without an answer")??,
        ),
        None => None,
    };
    Ok(Phase {
        tail,
        replay,
        produced_for: produced.elapsed,
    })
}

/// What a replay thread answers: what it read and how long it took.
type ReplayResult = Result<(Consumed, Duration), Error>;

/// Starts the replay (the topic read from its start to `ends`) on a thread of its own, with its
/// own runtime, at the lowest CPU priority: on this 2-core machine the replaying client (decoding
/// and checking every record) would otherwise take the bench's workers from the tailing consumer
/// and its producer, which a replaying client elsewhere would not. The broker's side is untouched.
fn spawn_replay(
    s: Settings,
    addr: String,
    topic: Topic,
    ends: Vec<u64>,
) -> Result<tokio::sync::oneshot::Receiver<ReplayResult>, Error> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("bench-replay".into())
        .spawn(move || {
            // SAFETY: plain syscalls about this thread itself; a failure only leaves its priority.
            unsafe {
                let tid = libc::gettid();
                libc::setpriority(libc::PRIO_PROCESS, tid as libc::id_t, 19);
            }
            let out = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| Error::from(format!("cannot start the replay's runtime: {e}")))
                .and_then(|rt| rt.block_on(replay(&s, &addr, &topic, ends)));
            let _ = tx.send(out);
        })
        .map_err(|e| format!("cannot start the replay thread: {e}"))?;
    Ok(rx)
}

async fn replay(
    s: &Settings,
    addr: &str,
    topic: &Topic,
    ends: Vec<u64>,
) -> Result<(Consumed, Duration), Error> {
    let readers = consume::readers(s, addr, topic, SeekTo::Earliest).await?;
    let (_keep, rx) = watch::channel(Some(Arc::new(ends)));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for r in readers {
        tasks.push(tokio::spawn(consume::read(
            r,
            addr.to_string(),
            topic.name.clone(),
            rx.clone(),
            None,
            histogram()?,
        )));
    }
    let c = consume::join(tasks).await?;
    let took = c
        .last_record
        .map_or(Duration::ZERO, |t| t.saturating_duration_since(started));
    Ok((c, took))
}

/// `--tail-rate`: runs `s.tail_pairs` pairs of phases (with a replay, then alone for as long) and
/// adds their figures to the consume report (`replay_alone`: how long the replay took with nothing
/// else).
#[allow(clippy::too_many_arguments)]
pub(crate) async fn report(
    r: &mut Report,
    s: &Settings,
    addr: &str,
    topic: &Topic,
    admin: &Admin,
    rate: u64,
    replay_alone: Duration,
    cold: Option<&Backlog>,
) -> Result<(), Error> {
    assert!(s.tail_pairs >= 1, "checked by Settings");
    let backlog = offsets(admin, addr, topic, OffsetSpec::Latest).await?;
    let p99 = |c: &Consumed| c.latency.value_at_quantile(0.99) as f64 / 1000.0;
    let (mut alone_all, mut with_all) = (histogram()?, histogram()?);
    let (mut ratios, mut tailed) = (Vec::new(), Duration::ZERO);
    let (mut replayed_bytes, mut replayed_records, mut replay_took) = (0u64, 0u64, Duration::ZERO);
    let (mut last, mut capped) = (None, false);
    for pair in 1..=s.tail_pairs {
        let (with, alone) = match last {
            // Every second pair runs its phase alone first (as long as the last phase with a
            // replay), so that neither side of the ratio always runs first.
            Some(d) if pair % 2 == 0 => {
                let alone = phase(s, addr, topic, admin, rate, d, None, cold).await?;
                let with =
                    phase(s, addr, topic, admin, rate, MIN_PHASE, Some(&backlog), cold).await?;
                (with, alone)
            }
            _ => {
                let with =
                    phase(s, addr, topic, admin, rate, MIN_PHASE, Some(&backlog), cold).await?;
                let d = with.produced_for.max(MIN_PHASE);
                let alone = phase(s, addr, topic, admin, rate, d, None, cold).await?;
                (with, alone)
            }
        };
        let d = with.produced_for.max(MIN_PHASE);
        last = Some(d);
        capped |= with.produced_for >= REPLAY_PHASE_CAP;
        let (a, w) = (p99(&alone.tail), p99(&with.tail));
        let ratio = w / a.max(1e-9);
        ratios.push(round3(ratio));
        tailed += alone.produced_for;
        alone_all
            .add(&alone.tail.latency)
            .map_err(|e| format!("cannot merge latencies: {e}"))?;
        with_all
            .add(&with.tail.latency)
            .map_err(|e| format!("cannot merge latencies: {e}"))?;
        let mut line = format!(
            "tail pair {pair}: a consumer tailing {rate} records/s for {:.1} s, end-to-end p99 \
             {a:.3} ms alone, {w:.3} ms while a second consumer replayed the backlog{} ({ratio:.2}x)",
            d.as_secs_f64(),
            if cold.is_some() { " from a dropped cache" } else { "" },
        );
        if let Some((c, took)) = &with.replay {
            replayed_bytes += c.value_bytes;
            replayed_records += c.records;
            replay_took += *took;
            line.push_str(&format!(
                "; the replay took {:.2} s (alone: {:.2} s)",
                took.as_secs_f64(),
                replay_alone.as_secs_f64()
            ));
        }
        r.note(line);
    }
    let ratio = median(&ratios);
    r.latency("tail end to end, alone", &alone_all);
    r.latency("tail end to end, during the replay", &with_all);
    r.latency_json("tail_alone_", &alone_all);
    r.latency_json("tail_replay_", &with_all);
    r.set("tail_rate", rate.into());
    r.set("tail_pairs", s.tail_pairs.into());
    r.set("tail_p99_ratio", round3(ratio).into());
    r.set("tail_p99_ratios", ratios.clone().into());
    r.set("tail_replay_capped", capped.into());
    if capped {
        r.note(format!(
            "tail: a replay outlasted the tail's {REPLAY_PHASE_CAP:?}: it went on without a tail \
             (and unpaced), so the replay rate below includes that time"
        ));
    }
    r.throughput(
        "replay during the tail",
        replayed_records,
        replayed_bytes,
        replay_took,
    );
    r.set(
        "replay_under_tail_mb_per_s",
        round1(mib(replayed_bytes) / replay_took.as_secs_f64().max(1e-9)).into(),
    );
    r.note(format!(
        "tail: p99 during a replay against alone, median of {} pair(s): {ratio:.2}x ({:?}); {:.1} s \
         tailed in each kind of phase",
        ratios.len(),
        ratios,
        tailed.as_secs_f64()
    ));
    Ok(())
}
