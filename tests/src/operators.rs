//! Window operators end to end, against the model: define an operator with the `sluice` CLI, read
//! its source back in log order, compute what the brute-force model (`sluice_window::model`) says
//! must be in the sink, late and dead-letter topics, read what is there, and say how the two
//! differ. Per sink key the **sequence** of sink records is compared, not only the latest value: a
//! result written twice, lost, or written out of order is a difference.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use serde_json::Value;
use sluice_protocol::wire::{ErrorCode, Response};
use sluice_protocol::{Header, RecordBatch};
use sluice_window::model::{self, Out, Record, Step};
use sluice_window::spec::{
    parse_aggregates, parse_duration, parse_time, parse_value, parse_window,
};
use sluice_window::Spec;

use crate::{fetch_request, RawConn};

/// The header a late or dead-letter record carries: its source offset in decimal.
pub const OFFSET_HEADER: &str = "sluice.offset";

/// One record as read back from a partition (control batches skipped).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rec {
    pub offset: u64,
    pub timestamp_ms: i64,
    pub key: Option<Bytes>,
    pub value: Option<Bytes>,
    pub headers: Vec<Header>,
}

/// Every record of `topic`/`partition` from offset 0 to its end, in log order, from the first of
/// `addrs` that serves the partition (its leader); `None` while none does (no leader yet, a
/// broker down).
pub fn read_partition(addrs: &[SocketAddr], topic: &str, partition: u32) -> Option<Vec<Rec>> {
    addrs
        .iter()
        .find_map(|a| read_partition_at(*a, topic, partition))
}

fn read_partition_at(addr: SocketAddr, topic: &str, partition: u32) -> Option<Vec<Rec>> {
    let mut c = RawConn::try_connect(addr)?;
    let mut out: Vec<Rec> = Vec::new();
    let mut offset = 0u64;
    loop {
        let resp = c.try_call(&fetch_request(topic, partition, offset, 0))?;
        let Response::Fetch(mut f) = resp else {
            return None;
        };
        let p = f.topics.pop()?.partitions.pop()?;
        if p.error != ErrorCode::NONE {
            return None;
        }
        if p.records.is_empty() {
            return Some(out);
        }
        for b in RecordBatch::iter_all(p.records.clone()) {
            let b = b.ok()?;
            let next = b.header().next_offset();
            if !b.header().is_control() {
                for r in b.records().ok()? {
                    let r = r.ok()?;
                    if r.offset >= offset {
                        out.push(Rec {
                            offset: r.offset,
                            timestamp_ms: r.timestamp_ms,
                            key: r.key,
                            value: r.value,
                            headers: r.headers,
                        });
                    }
                }
            }
            offset = offset.max(next);
        }
    }
}

/// Every partition of `topic` (`partitions` of them), each in log order; `None` while one cannot be
/// read.
pub fn read_topic(addrs: &[SocketAddr], topic: &str, partitions: u32) -> Option<Vec<Vec<Rec>>> {
    (0..partitions)
        .map(|p| read_partition(addrs, topic, p))
        .collect()
}

/// The partition count of `topic` as the first answering broker of `addrs` knows it.
pub fn partition_count(addrs: &[SocketAddr], topic: &str) -> Option<u32> {
    addrs.iter().find_map(|a| {
        let m = RawConn::try_connect(*a)?.try_metadata(Some(vec![topic.to_string()]))?;
        let t = m.topics.iter().find(|t| t.name == topic)?;
        (t.error == ErrorCode::NONE && !t.partitions.is_empty())
            .then_some(t.partitions.len() as u32)
    })
}

/// An operator definition as the CLI spells it; [`OperatorDef::spec`] reads the same strings with
/// the window crate's parsers, so the model computes what the operator was told to.
#[derive(Debug, Clone)]
pub struct OperatorDef {
    pub name: String,
    pub source: String,
    pub sink: String,
    pub window: String,
    pub time: String,
    pub value: String,
    pub aggregates: String,
    pub out_of_orderness: Option<String>,
    pub allowed_lateness: Option<String>,
    pub late_topic: Option<String>,
    pub dead_letter_topic: Option<String>,
    pub idle_timeout: Option<String>,
}

impl OperatorDef {
    /// `NAME` over `source` with window `window`, time `field:ts`, value `field:v`, every
    /// aggregate, and sink `NAME-out`; the rest unset.
    pub fn new(name: &str, source: &str, window: &str) -> OperatorDef {
        OperatorDef {
            name: name.into(),
            source: source.into(),
            sink: format!("{name}-out"),
            window: window.into(),
            time: "field:ts".into(),
            value: "field:v".into(),
            aggregates: "count,sum,min,max,avg,first,last".into(),
            out_of_orderness: None,
            allowed_lateness: None,
            late_topic: None,
            dead_letter_topic: None,
            idle_timeout: None,
        }
    }

    /// Out-of-orderness and allowed lateness, and the late and dead-letter topics `NAME-late` and
    /// `NAME-dlq`.
    pub fn with_disorder(mut self, out_of_orderness: &str, allowed_lateness: &str) -> OperatorDef {
        self.out_of_orderness = Some(out_of_orderness.into());
        self.allowed_lateness = Some(allowed_lateness.into());
        self.late_topic = Some(format!("{}-late", self.name));
        self.dead_letter_topic = Some(format!("{}-dlq", self.name));
        self
    }

    /// The arguments of `sluice operator create ...` (without `--broker`).
    pub fn create_args(&self) -> Vec<String> {
        let mut a: Vec<String> = vec!["operator".into(), "create".into(), self.name.clone()];
        let mut flag = |f: &str, v: &str| a.push(format!("--{f}={v}"));
        flag("source", &self.source);
        flag("sink", &self.sink);
        flag("window", &self.window);
        flag("time", &self.time);
        flag("value", &self.value);
        flag("aggregate", &self.aggregates);
        for (f, v) in [
            ("out-of-orderness", &self.out_of_orderness),
            ("allowed-lateness", &self.allowed_lateness),
            ("late-topic", &self.late_topic),
            ("dead-letter-topic", &self.dead_letter_topic),
            ("idle-timeout", &self.idle_timeout),
        ] {
            if let Some(v) = v {
                flag(f, v);
            }
        }
        a
    }

    /// Creates it with the CLI through `addr`; panics unless it was created.
    pub fn create(&self, addr: SocketAddr) {
        let args = self.create_args();
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = crate::cli::sluice(addr, &args, None).ok();
        assert_eq!(out, format!("created operator '{}'\n", self.name));
    }

    /// The spec the operator runs, read from the same strings.
    pub fn spec(&self) -> Spec {
        let ms = |d: &Option<String>| {
            d.as_deref()
                .map(|d| parse_duration(d).unwrap_or_else(|e| panic!("{d}: {e}")))
        };
        let spec = Spec {
            window: parse_window(&self.window).unwrap_or_else(|e| panic!("{e}")),
            time: parse_time(&self.time).unwrap_or_else(|e| panic!("{e}")),
            value: parse_value(&self.value).unwrap_or_else(|e| panic!("{e}")),
            aggregates: parse_aggregates(&self.aggregates).unwrap_or_else(|e| panic!("{e}")),
            out_of_orderness_ms: ms(&self.out_of_orderness).unwrap_or(0),
            allowed_lateness_ms: ms(&self.allowed_lateness).unwrap_or(0),
            idle_timeout_ms: ms(&self.idle_timeout),
            max_state_bytes: sluice_window::spec::DEFAULT_MAX_STATE_BYTES,
        };
        spec.check().unwrap_or_else(|e| panic!("{e}"));
        spec
    }
}

/// A sink key's records in the order written: (value parsed as JSON, `None` for a tombstone;
/// timestamp).
pub type Sequence = Vec<(Option<Value>, i64)>;

/// What an operator's topics hold, or must hold.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Outputs {
    /// Per sink key, its sequence.
    pub sink: BTreeMap<Vec<u8>, Sequence>,
    /// Per source partition, the source offsets of its too-late records, in log order.
    pub late: Vec<Vec<u64>>,
    /// Per source partition, the source offsets of its unreadable records, in log order.
    pub bad: Vec<Vec<u64>>,
}

impl Outputs {
    /// Sink records in all.
    pub fn sink_records(&self) -> usize {
        self.sink.values().map(Vec::len).sum()
    }
}

/// The model's steps for one source partition's records (`Advance`s are the caller's to add).
pub fn steps(records: &[Rec]) -> Vec<Step> {
    records
        .iter()
        .map(|r| {
            Step::Record(Record {
                offset: r.offset,
                timestamp_ms: r.timestamp_ms,
                processing_ms: 0,
                key: r.key.as_ref().map(|k| k.to_vec()),
                value: r.value.as_ref().map(|v| v.to_vec()),
            })
        })
        .collect()
}

/// What the model says an operator of `spec` writes for `source` (its partitions, each in log
/// order), each partition's steps followed by `tail` (e.g. a final watermark advance).
pub fn expected(spec: &Spec, source: &[Vec<Rec>], tail: &[Step]) -> Outputs {
    let mut want = Outputs::default();
    for records in source {
        let mut s = steps(records);
        s.extend_from_slice(tail);
        let outs: Vec<Out> = model::run(spec, &s);
        for (k, seq) in model::per_key(&outs) {
            assert!(
                !want.sink.contains_key(&k),
                "sink key {} comes from two source partitions (the source is not key-partitioned)",
                String::from_utf8_lossy(&k)
            );
            want.sink.insert(k, seq);
        }
        want.late.push(model::late(&outs));
        want.bad.push(model::bad(&outs));
    }
    want
}

/// The source offset a late or dead-letter record names in its `sluice.offset` header.
fn source_offset(r: &Rec) -> Result<u64, String> {
    let h = r
        .headers
        .iter()
        .find(|h| h.key.as_ref() == OFFSET_HEADER.as_bytes())
        .ok_or_else(|| format!("record at {} has no {OFFSET_HEADER} header", r.offset))?;
    let v = h
        .value
        .as_ref()
        .map(|v| String::from_utf8_lossy(v).to_string());
    v.as_deref()
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| format!("record at {}: {OFFSET_HEADER} = {v:?}", r.offset))
}

/// Side-topic records (late or dead-letter) per source partition: each record is matched to the
/// source record at the offset its header names whose key and value it repeats byte for byte (the
/// source values are unique, so at most one matches). Per source partition, the source offsets in
/// the order read; records of one source partition spread over several side partitions must each
/// be in source order, and are then listed in source order.
fn side_offsets(
    what: &str,
    side: &[Vec<Rec>],
    source: &[Vec<Rec>],
) -> Result<Vec<Vec<u64>>, String> {
    let mut per: Vec<Vec<(usize, u64)>> = vec![Vec::new(); source.len()];
    for (sp, records) in side.iter().enumerate() {
        for r in records {
            let off = source_offset(r).map_err(|e| format!("{what} partition {sp}: {e}"))?;
            let from =
                source
                    .iter()
                    .position(|part| {
                        part.binary_search_by_key(&off, |s| s.offset)
                            .ok()
                            .is_some_and(|i| part[i].key == r.key && part[i].value == r.value)
                    })
                    .ok_or_else(|| {
                        format!(
                        "{what} partition {sp} offset {}: no source record at offset {off} with \
                         its key and value ({:?})",
                        r.offset,
                        r.value.as_ref().map(|v| String::from_utf8_lossy(v).to_string())
                    )
                    })?;
            per[from].push((sp, off));
        }
    }
    let mut out = Vec::new();
    for (p, got) in per.into_iter().enumerate() {
        let mut by_side: BTreeMap<usize, Vec<u64>> = BTreeMap::new();
        for (sp, off) in &got {
            by_side.entry(*sp).or_default().push(*off);
        }
        for (sp, offs) in &by_side {
            if let Some(w) = offs.windows(2).find(|w| w[0] >= w[1]) {
                return Err(format!(
                    "{what} partition {sp}: source partition {p}'s offset {} after {} (a \
                     duplicate or out of order)",
                    w[1], w[0]
                ));
            }
        }
        let mut all: Vec<u64> = got.into_iter().map(|(_, o)| o).collect();
        all.sort_unstable();
        out.push(all);
    }
    Ok(out)
}

/// Reads what an operator wrote: its sink (every partition, grouped per sink key, each key in
/// one partition only), and its late and dead-letter topics matched to `source`. `Err` says why
/// what is there cannot be right (a key in two sink partitions, a side record that is no source
/// record); `Ok(None)` while something cannot be read yet.
pub fn observe(
    addrs: &[SocketAddr],
    def: &OperatorDef,
    source: &[Vec<Rec>],
) -> Result<Option<Outputs>, String> {
    let Some(n) = partition_count(addrs, &def.sink) else {
        return Ok(None);
    };
    let Some(sink) = read_topic(addrs, &def.sink, n) else {
        return Ok(None);
    };
    let mut got = Outputs::default();
    let mut home: BTreeMap<Vec<u8>, u32> = BTreeMap::new();
    for (p, records) in sink.iter().enumerate() {
        for r in records {
            let Some(key) = &r.key else {
                return Err(format!("sink partition {p} offset {}: no key", r.offset));
            };
            let key = key.to_vec();
            if let Some(other) = home.insert(key.clone(), p as u32) {
                if other != p as u32 {
                    return Err(format!(
                        "sink key {} in partitions {other} and {p}: its order is lost",
                        String::from_utf8_lossy(&key)
                    ));
                }
            }
            let value = r.value.as_ref().map(|v| {
                serde_json::from_slice::<Value>(v)
                    .unwrap_or_else(|_| Value::String(format!("not JSON: {v:?}")))
            });
            got.sink
                .entry(key)
                .or_default()
                .push((value, r.timestamp_ms));
        }
    }
    for (topic, slot) in [
        (&def.late_topic, &mut got.late),
        (&def.dead_letter_topic, &mut got.bad),
    ] {
        let Some(topic) = topic else {
            *slot = vec![Vec::new(); source.len()];
            continue;
        };
        let Some(n) = partition_count(addrs, topic) else {
            return Ok(None);
        };
        let Some(side) = read_topic(addrs, topic, n) else {
            return Ok(None);
        };
        *slot = side_offsets(topic, &side, source)?;
    }
    Ok(Some(got))
}

fn show(key: &[u8], seq: &[(Option<Value>, i64)], around: usize) -> String {
    let lo = around.saturating_sub(2);
    let hi = (around + 3).min(seq.len());
    let items: Vec<String> = seq[lo..hi]
        .iter()
        .enumerate()
        .map(|(i, (v, ts))| {
            let v = v.as_ref().map_or("tombstone".to_string(), Value::to_string);
            format!("  [{}] ts {ts}: {v}", lo + i)
        })
        .collect();
    format!(
        "{} ({} records):\n{}",
        String::from_utf8_lossy(key),
        seq.len(),
        items.join("\n")
    )
}

/// The first difference between what the model says (`want`) and what is there (`got`), told so
/// that a duplicate, a loss or a wrong value can be seen; `None` if they are equal.
pub fn difference(what: &str, want: &Outputs, got: &Outputs) -> Option<String> {
    let d = first_difference(what, want, got)?;
    Some(format!("{d}\n{}", summary(want, got)))
}

/// How far apart the sink is from the model in all: keys equal, short (a prefix of the model's),
/// long (the model's and more) and otherwise different, keys only one side has.
fn summary(want: &Outputs, got: &Outputs) -> String {
    let (mut equal, mut short, mut long, mut other, mut absent) = (0, 0, 0, 0, 0);
    for (k, w) in &want.sink {
        match got.sink.get(k) {
            None => absent += 1,
            Some(g) if g == w => equal += 1,
            Some(g) if g.len() < w.len() && w.starts_with(g) => short += 1,
            Some(g) if g.len() > w.len() && g.starts_with(w) => long += 1,
            Some(_) => other += 1,
        }
    }
    let unknown = got
        .sink
        .keys()
        .filter(|k| !want.sink.contains_key(*k))
        .count();
    format!(
        "sink keys: {} in the model, {} in the sink; {equal} equal, {absent} missing, {short} \
         missing records at the end, {long} with records past the model's, {other} otherwise \
         different, {unknown} not in the model; sink records: model {}, sink {}",
        want.sink.len(),
        got.sink.len(),
        want.sink_records(),
        got.sink_records()
    )
}

fn first_difference(what: &str, want: &Outputs, got: &Outputs) -> Option<String> {
    for (k, w) in &want.sink {
        let g = got.sink.get(k).map(Vec::as_slice).unwrap_or_default();
        if g != w.as_slice() {
            let i = w.iter().zip(g).take_while(|(a, b)| a == b).count();
            let kind = if g.len() > w.len() && i == w.len() {
                "records after the model's last (a duplicate?)"
            } else if g.len() < w.len() && i == g.len() {
                "records missing at the end (not yet written, or lost)"
            } else {
                "a different record"
            };
            return Some(format!(
                "{what}: sink key {}: {kind} at index {i}\nmodel {}\nsink  {}",
                String::from_utf8_lossy(k),
                show(k, w, i),
                show(k, g, i)
            ));
        }
    }
    if let Some((k, g)) = got.sink.iter().find(|(k, _)| !want.sink.contains_key(*k)) {
        return Some(format!(
            "{what}: sink key the model never wrote: {}",
            show(k, g, 0)
        ));
    }
    for (name, w, g) in [
        ("late", &want.late, &got.late),
        ("bad", &want.bad, &got.bad),
    ] {
        for (p, (w, g)) in w.iter().zip(g).enumerate() {
            if w != g {
                let extra: Vec<&u64> = g.iter().filter(|o| !w.contains(o)).take(5).collect();
                let missing: Vec<&u64> = w.iter().filter(|o| !g.contains(o)).take(5).collect();
                return Some(format!(
                    "{what}: {name} records of source partition {p}: model {} of them, topic {}; \
                     in the topic but not the model (first 5): {extra:?}; in the model but not \
                     the topic: {missing:?}",
                    w.len(),
                    g.len()
                ));
            }
        }
    }
    None
}

/// Polls (every 300 ms, for at most `timeout`) until the operator's topics hold exactly what the
/// model says, then waits `settle` and checks again (a duplicate written late shows up there and
/// stays).
/// `Err` with the last difference if they never matched or something more arrived; panics at
/// once on what can never become right (a sink key in two partitions, a duplicated or unknown
/// late or dead-letter record).
pub fn await_model(
    addrs: &[SocketAddr],
    def: &OperatorDef,
    source: &[Vec<Rec>],
    want: &Outputs,
    timeout: Duration,
    settle: Duration,
) -> Result<(), String> {
    let what = format!("operator {} ({})", def.name, def.window);
    let deadline = Instant::now() + timeout;
    let mut last = String::from("nothing read yet");
    let check = |last: &mut String| -> bool {
        match observe(addrs, def, source) {
            Ok(Some(got)) => match difference(&what, want, &got) {
                None => true,
                Some(d) => {
                    *last = d;
                    false
                }
            },
            Ok(None) => false,
            Err(e) => panic!("{what}: {e}"),
        }
    };
    loop {
        if check(&mut last) {
            break;
        }
        if Instant::now() >= deadline {
            return Err(format!(
                "{what}: the topics never matched the model within {timeout:?}; the last \
                 difference:\n{last}"
            ));
        }
        std::thread::sleep(Duration::from_millis(300));
    }
    std::thread::sleep(settle);
    // A difference now never goes away if it is a record too many; a read through a leader that
    // has just taken over (whose high watermark lags until it commits) is given a moment.
    let again = Instant::now() + Duration::from_secs(3);
    while !check(&mut last) {
        if Instant::now() >= again {
            return Err(format!(
                "{what}: the topics matched the model, then differed after {settle:?}:\n{last}"
            ));
        }
        std::thread::sleep(Duration::from_millis(300));
    }
    Ok(())
}

/// [`await_model`], panicking with its message.
pub fn wait_for_model(
    addrs: &[SocketAddr],
    def: &OperatorDef,
    source: &[Vec<Rec>],
    want: &Outputs,
    timeout: Duration,
    settle: Duration,
) {
    if let Err(e) = await_model(addrs, def, source, want, timeout, settle) {
        panic!("{e}\n{}", describe(addrs, &def.name));
    }
}

/// `sluice operator describe NAME --format json` through the first broker that answers (for a
/// failure's message: where each partition's operator is).
pub fn describe(addrs: &[SocketAddr], name: &str) -> String {
    for a in addrs {
        let r = crate::cli::sluice(a, &["operator", "describe", name, "--format", "json"], None);
        if r.code == 0 {
            return format!("describe {name}: {}", r.stdout.trim());
        }
    }
    format!("describe {name}: no broker answered")
}

/// The source partitions as served, once two reads `gap` apart agree (a new leader's view can lag
/// until it commits), within `timeout`.
pub fn stable_source(
    addrs: &[SocketAddr],
    topic: &str,
    partitions: u32,
    gap: Duration,
    timeout: Duration,
) -> Vec<Vec<Rec>> {
    let deadline = Instant::now() + timeout;
    let mut prev: Option<Vec<Vec<Rec>>> = None;
    loop {
        let now = read_topic(addrs, topic, partitions);
        if now.is_some() && now == prev {
            return now.unwrap_or_default();
        }
        assert!(
            Instant::now() < deadline,
            "the source {topic} never read the same twice in {timeout:?}"
        );
        prev = now;
        std::thread::sleep(gap);
    }
}
