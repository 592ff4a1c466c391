//! The output of a load run, in the style of `sluice-bench storage`: a title and settings line, a
//! throughput table (records/s and MiB/s of record values), a latency table (p50, p99, p99.9 and max
//! in ms), then, as the last line, one JSON object. Its keys are an interface: `records`, `seconds`,
//! `records_per_s`, `mb_per_s` (MiB/s of values), `p50_ms`, `p99_ms`, `p999_ms`, `max_ms` and
//! `latency` (what those percentiles measure: `produce_ack`, `end_to_end` or `poll`), the settings
//! under their flag names, and per mode extras such as `produce_p50_ms`.

use std::time::Duration;

use hdrhistogram::Histogram;
use serde_json::{Map, Value};

use super::{Mode, Settings, Stop, Topic};

/// One throughput row.
#[derive(Debug)]
struct Throughput {
    name: String,
    records: u64,
    bytes: u64,
    elapsed: Duration,
}

/// One latency row, microseconds.
#[derive(Debug)]
struct Latency {
    name: String,
    p50: u64,
    p99: u64,
    p999: u64,
    max: u64,
}

impl Latency {
    fn of(name: &str, h: &Histogram<u64>) -> Latency {
        Latency {
            name: name.to_string(),
            p50: h.value_at_quantile(0.5),
            p99: h.value_at_quantile(0.99),
            p999: h.value_at_quantile(0.999),
            max: h.max(),
        }
    }
}

/// What a run prints.
#[derive(Debug)]
pub(crate) struct Report {
    title: String,
    settings_line: String,
    notes: Vec<String>,
    throughput: Vec<Throughput>,
    latency: Vec<Latency>,
    json: Map<String, Value>,
}

pub(crate) fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

pub(crate) fn round(x: f64) -> f64 {
    x.round()
}

pub(crate) fn round1(x: f64) -> f64 {
    (x * 10.0).round() / 10.0
}

pub(crate) fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

fn ms(us: u64) -> f64 {
    round3(us as f64 / 1000.0)
}

impl Report {
    pub fn new(title: String) -> Report {
        Report {
            title,
            settings_line: String::new(),
            notes: Vec::new(),
            throughput: Vec::new(),
            latency: Vec::new(),
            json: Map::new(),
        }
    }

    /// A line printed under the title.
    pub fn note(&mut self, line: String) {
        self.notes.push(line);
    }

    pub fn throughput(&mut self, name: &str, records: u64, bytes: u64, elapsed: Duration) {
        self.throughput.push(Throughput {
            name: name.to_string(),
            records,
            bytes,
            elapsed,
        });
    }

    pub fn latency(&mut self, name: &str, h: &Histogram<u64>) {
        self.latency.push(Latency::of(name, h));
    }

    pub fn set(&mut self, key: &str, value: Value) {
        self.json.insert(key.to_string(), value);
    }

    /// The headline figures: `records`, `seconds`, `records_per_s`, `mb_per_s` and the percentiles.
    pub fn primary(&mut self, records: u64, bytes: u64, elapsed: Duration, h: &Histogram<u64>) {
        let secs = elapsed.as_secs_f64().max(1e-9);
        self.set("records", records.into());
        self.set("seconds", round3(secs).into());
        self.set("records_per_s", round(records as f64 / secs).into());
        self.set("mb_per_s", round1(mib(bytes) / secs).into());
        self.latency_json("", h);
    }

    /// The `mb_per_s` figure (MiB/s of record values), once [`Report::primary`] has set it.
    pub fn mb_per_s(&self) -> Result<f64, super::Error> {
        self.json
            .get("mb_per_s")
            .and_then(Value::as_f64)
            .ok_or_else(|| "the run reported no mb_per_s".into())
    }

    /// `{prefix}p50_ms`, `{prefix}p99_ms`, `{prefix}p999_ms`, `{prefix}max_ms`.
    pub fn latency_json(&mut self, prefix: &str, h: &Histogram<u64>) {
        let l = Latency::of("", h);
        self.set(&format!("{prefix}p50_ms"), ms(l.p50).into());
        self.set(&format!("{prefix}p99_ms"), ms(l.p99).into());
        self.set(&format!("{prefix}p999_ms"), ms(l.p999).into());
        self.set(&format!("{prefix}max_ms"), ms(l.max).into());
    }

    /// The run's settings, as flag names.
    pub fn settings(&mut self, s: &Settings, addr: &str, topic: &Topic) {
        let (duration, count) = match s.stop {
            Stop::Duration(d) => (Some(d.as_secs_f64()), None),
            Stop::Count(n) => (None, Some(n)),
        };
        let flush = s.broker_flush.map(|f| format!("{f:?}").to_lowercase());
        let pairs: [(&str, Value); 22] = [
            ("mode", s.mode.name().into()),
            ("producers", s.producers.into()),
            ("consumers", s.consumers.into()),
            ("partitions", topic.partitions.into()),
            ("record_size", s.record_size.into()),
            ("batch_bytes", s.batch_bytes.into()),
            (
                "linger_ms",
                u64::try_from(s.linger.as_millis())
                    .unwrap_or(u64::MAX)
                    .into(),
            ),
            ("max_in_flight", s.max_in_flight.into()),
            ("acks", s.acks_name().into()),
            ("rate", s.rate.into()),
            ("duration", duration.into()),
            ("count", count.into()),
            ("compression", s.compression_name().into()),
            ("broker", addr.into()),
            ("topic", topic.name.clone().into()),
            ("topic_existed", topic.existed.into()),
            ("spawn_broker", s.spawn_broker.into()),
            ("broker_flush", flush.clone().into()),
            ("brokers", s.spawn_cluster.unwrap_or(1).into()),
            ("replication_factor", s.replication_factor.into()),
            ("broker_page_cache_window_mb", s.broker_window_mb.into()),
            ("cold", s.cold.into()),
        ];
        for (k, v) in pairs {
            self.set(k, v);
        }
        let rate = s
            .rate
            .map_or("max".to_string(), |r| format!("{r} records/s"));
        let stop = match s.stop {
            Stop::Duration(d) => format!("{} s", d.as_secs_f64()),
            Stop::Count(n) => format!("{n} records"),
        };
        let consumers = match s.mode {
            Mode::Produce => String::new(),
            Mode::Consume | Mode::E2e => format!(", {} consumers", s.consumers),
        };
        self.settings_line = format!(
            "  broker {addr}{}, {} producers{consumers}, {} partitions, acks {}, compression {}, \
             batch {} B, linger {} ms, rate {rate}, for {stop}",
            match (s.spawn_broker, flush) {
                (false, _) => String::new(),
                (true, None) => " (spawned)".to_string(),
                (true, Some(f)) => format!(" (spawned, flush {f})"),
            },
            s.producers,
            topic.partitions,
            s.acks_name(),
            s.compression_name(),
            s.batch_bytes,
            s.linger.as_millis(),
        );
    }

    /// Prints the tables, then the JSON object as the last line.
    pub fn print(&self) {
        println!("{}", self.title);
        if !self.settings_line.is_empty() {
            println!("{}", self.settings_line);
        }
        for n in &self.notes {
            println!("  {n}");
        }
        println!(
            "{:<28} {:>14} {:>10} {:>12}",
            "throughput", "records/s", "MiB/s", "records"
        );
        for t in &self.throughput {
            let secs = t.elapsed.as_secs_f64().max(1e-9);
            println!(
                "{:<28} {:>14.0} {:>10.1} {:>12}",
                t.name,
                t.records as f64 / secs,
                mib(t.bytes) / secs,
                t.records
            );
        }
        if !self.latency.is_empty() {
            println!(
                "{:<28} {:>10} {:>10} {:>10} {:>10}",
                "latency (ms)", "p50", "p99", "p99.9", "max"
            );
            for l in &self.latency {
                println!(
                    "{:<28} {:>10.3} {:>10.3} {:>10.3} {:>10.3}",
                    l.name,
                    ms(l.p50),
                    ms(l.p99),
                    ms(l.p999),
                    ms(l.max)
                );
            }
        }
        println!("{}", Value::Object(self.json.clone()));
    }
}
