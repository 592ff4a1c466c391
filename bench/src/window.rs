//! `sluice-bench window`: the window operator's engine (`sluice-window`) alone, in this process: how
//! many events per second one core folds into tumbling, sliding and session windows, against a
//! baseline measured in the same run that only reads each event's time and value (the JSON parse
//! every operator pays). No broker, no log, no sink: this is the ceiling the in-broker operator
//! (`sluice-bench operator`, with the issue's goals) can reach, and where its time goes.
//!
//! Events are ~100-byte JSON objects (`{"ts":…,"user":"user-N","amount":…,"pad":"…"}`) over
//! `--keys` keys, in event-time order with bounded disorder, built in memory before timing.

use std::time::Instant;

use sluice_window::extract;
use sluice_window::spec::{parse_aggregates, parse_window};
use sluice_window::{Input, Operator, Spec, TimeSource, ValueSource};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Events per run.
    #[arg(long, default_value_t = 4_000_000)]
    events: usize,
    /// Distinct keys.
    #[arg(long, default_value_t = 10_000)]
    keys: usize,
    /// Events per second of event time: how densely the stream fills its windows. At the default
    /// a 10 s window holds ~100 events per key over 10,000 keys and the 4 M events span 40 s;
    /// 1000 gives ~1 event per key and window, where writing results dominates.
    #[arg(long, default_value_t = 100_000)]
    event_rate: u64,
    /// Only these window kinds (`tumbling`, `sliding`, `session`; repeatable); the parse-only
    /// baseline always runs.
    #[arg(long)]
    only: Vec<String>,
    /// Runs of each kind; the median is reported.
    #[arg(long, default_value_t = 3)]
    runs: usize,
}

/// One generated event: its key (`user-N`) and its JSON value.
pub(crate) struct Event {
    pub key: Vec<u8>,
    pub value: Vec<u8>,
    /// Its event time, the value's `ts`.
    pub ts: i64,
}

/// Deterministic pseudo-random numbers (xorshift), so every run folds the same stream.
fn next(state: &mut u64) -> u64 {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    *state
}

/// The event stream both window benchmarks use, generated lazily: `{"ts":…,"user":"user-N",
/// "amount":…,"pad":"…"}` over `keys` keys, `event_rate` events per second of event time, each up
/// to 2 s behind the front (a 5 s out-of-orderness admits all of them), the same stream on every
/// run. `pad` bytes of padding (24 gives ~87-byte values, 37 ~100).
#[derive(Debug, Clone)]
pub(crate) struct Events {
    rng: u64,
    i: u64,
    count: u64,
    keys: u64,
    event_rate: u64,
    pad: String,
}

/// Event time of the first event, ms.
pub(crate) const BASE_TS: i64 = 1_700_000_000_000;

impl Events {
    pub fn new(count: u64, keys: u64, event_rate: u64, pad: usize) -> Events {
        Events {
            rng: 0x9e37_79b9_7f4a_7c15,
            i: 0,
            count,
            keys: keys.max(1),
            event_rate: event_rate.max(1),
            pad: "x".repeat(pad),
        }
    }
}

impl Iterator for Events {
    type Item = Event;

    fn next(&mut self) -> Option<Event> {
        if self.i >= self.count {
            return None;
        }
        let rng = &mut self.rng;
        let user = next(rng) % self.keys;
        // Up to 2 s behind the front: the 5 s out-of-orderness below admits all of it.
        let jitter = (next(rng) % 2000) as i64;
        let ts = BASE_TS + (self.i * 1000 / self.event_rate) as i64 - jitter;
        let amount = (next(rng) % 10_000) as f64 / 100.0;
        self.i += 1;
        let value = format!(
            r#"{{"ts":{ts},"user":"user-{user}","amount":{amount},"pad":"{}"}}"#,
            self.pad
        );
        Some(Event {
            key: format!("user-{user}").into_bytes(),
            value: value.into_bytes(),
            ts,
        })
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let n = usize::try_from(self.count - self.i).unwrap_or(usize::MAX);
        (n, Some(n))
    }
}

fn events(a: &Args) -> Vec<Event> {
    Events::new(a.events as u64, a.keys as u64, a.event_rate, 24).collect()
}

fn spec(window: &str) -> Result<Spec, String> {
    let spec = Spec {
        window: parse_window(window).map_err(|e| e.to_string())?,
        time: TimeSource::Field("ts".into()),
        value: ValueSource::Field("amount".into()),
        aggregates: parse_aggregates("count,sum").map_err(|e| e.to_string())?,
        out_of_orderness_ms: 5_000,
        allowed_lateness_ms: 0,
        idle_timeout_ms: None,
        max_state_bytes: 4 << 30,
    };
    spec.check().map_err(|e| e.to_string())?;
    Ok(spec)
}

/// Events per second of one fold of `events` through `window` (`None`: the parse-only baseline),
/// with the outputs written and the largest state seen.
fn fold(events: &[Event], window: Option<&str>) -> Result<(f64, u64, u64), String> {
    let mut out = Vec::with_capacity(1024);
    let started = Instant::now();
    let (mut emitted, mut peak) = (0u64, 0u64);
    match window {
        None => {
            let (t, v) = (
                TimeSource::Field("ts".into()),
                ValueSource::Field("amount".into()),
            );
            let mut sum = 0.0;
            for (i, e) in events.iter().enumerate() {
                if let Ok(r) = extract::read(&t, &v, true, 0, 0, Some(&e.value)) {
                    sum += r.value.unwrap_or(0.0) + (r.time_ms & 1) as f64;
                }
                emitted += u64::from(i == 0);
            }
            std::hint::black_box(sum);
        }
        Some(w) => {
            let mut op = Operator::new(spec(w)?);
            for (i, e) in events.iter().enumerate() {
                op.process(
                    Input {
                        offset: i as u64,
                        timestamp_ms: 0,
                        processing_ms: 0,
                        key: Some(&e.key),
                        value: Some(&e.value),
                    },
                    &mut out,
                )
                .map_err(|e| e.to_string())?;
                emitted += out.len() as u64;
                out.clear();
                if i % 65_536 == 0 {
                    peak = peak.max(op.stats().state_bytes);
                }
            }
            peak = peak.max(op.stats().state_bytes);
        }
    }
    let secs = started.elapsed().as_secs_f64();
    Ok((events.len() as f64 / secs, emitted, peak))
}

pub fn run(a: Args) -> Result<(), String> {
    if a.events == 0 || a.keys == 0 || a.runs == 0 || a.event_rate == 0 {
        return Err("--events, --keys, --runs and --event-rate must be positive".into());
    }
    let events = events(&a);
    let bytes: usize = events.iter().map(|e| e.value.len()).sum();
    println!(
        "window engine: {} events of {:.0} B average over {} keys, {} events per second of event time, 5 s out-of-orderness, count+sum; median of {} runs on one core",
        a.events,
        bytes as f64 / a.events as f64,
        a.keys,
        a.event_rate,
        a.runs
    );
    let kinds: [(&str, Option<&str>); 4] = [
        ("parse only (baseline)", None),
        ("tumbling:10s", Some("tumbling:10s")),
        ("sliding:10s:1s", Some("sliding:10s:1s")),
        ("session:1s", Some("session:1s")),
    ];
    println!(
        "{:<24} {:>14} {:>12} {:>16} {:>12}",
        "kind", "events/s", "vs parse", "peak state MiB", "emitted"
    );
    let mut json = serde_json::Map::new();
    let mut baseline = 0.0;
    let mut tumbling = 0.0;
    for (name, window) in kinds {
        if window.is_some()
            && !a.only.is_empty()
            && !a.only.iter().any(|o| name.starts_with(o.as_str()))
        {
            continue;
        }
        let mut rates = Vec::new();
        let (mut emitted, mut peak) = (0, 0);
        for _ in 0..a.runs {
            let (rate, e, p) = fold(&events, window)?;
            rates.push(rate);
            (emitted, peak) = (e, p);
        }
        let rate = crate::load::median(&rates);
        if window.is_none() {
            baseline = rate;
        }
        if name.starts_with("tumbling") {
            tumbling = rate;
        }
        println!(
            "{name:<24} {rate:>14.0} {:>12.3} {:>16.1} {emitted:>12}",
            rate / baseline,
            peak as f64 / (1 << 20) as f64
        );
        let k = name.split(':').next().unwrap_or(name).replace(' ', "_");
        json.insert(format!("{k}_events_per_s"), rate.round().into());
        json.insert(format!("{k}_state_bytes"), peak.into());
    }
    if let Some(s) = json
        .get("sliding_events_per_s")
        .and_then(serde_json::Value::as_f64)
    {
        if tumbling > 0.0 {
            println!("sliding / tumbling: {:.3}", s / tumbling);
            json.insert("sliding_vs_tumbling".into(), (s / tumbling).into());
        }
    }
    println!("{}", serde_json::Value::Object(json));
    Ok(())
}
