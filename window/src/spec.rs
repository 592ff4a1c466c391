//! What an operator computes: its window, where event time and values come from, which aggregates,
//! how much disorder and lateness it tolerates and how much state it may hold. Parsed from the
//! CLI's strings (`tumbling:10s`, `field:ts`, `count,sum`, `500ms`) and checked as a whole
//! ([`Spec::check`]); a spec that passes the check can be run without any further error but the
//! state limit.

use std::fmt;

/// How records are grouped in time. Sizes in milliseconds, all positive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WindowKind {
    /// `[k·size, (k+1)·size)`.
    Tumbling { size_ms: i64 },
    /// Every `[k·slide, k·slide + size)` that holds the event time; `size` is a multiple of `slide`.
    Sliding { size_ms: i64, slide_ms: i64 },
    /// `[t, t + gap)` per record, merged per key with every window it overlaps or touches.
    Session { gap_ms: i64 },
}

/// Where a record's event time comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TimeSource {
    /// The record's timestamp.
    Record,
    /// The time the record was read, as the log says it (given by the caller, never a clock here).
    Processing,
    /// A numeric field of the JSON object value, in milliseconds.
    Field(String),
}

/// Where a record's value comes from (read only when an aggregate needs it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ValueSource {
    /// The whole value is a number.
    Number,
    /// A numeric field of the JSON object value.
    Field(String),
}

/// One aggregate of a window; its name is its field in the sink record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Aggregate {
    Count,
    Sum,
    Min,
    Max,
    Avg,
    First,
    Last,
}

impl Aggregate {
    pub const ALL: [Aggregate; 7] = [
        Aggregate::Count,
        Aggregate::Sum,
        Aggregate::Min,
        Aggregate::Max,
        Aggregate::Avg,
        Aggregate::First,
        Aggregate::Last,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Aggregate::Count => "count",
            Aggregate::Sum => "sum",
            Aggregate::Min => "min",
            Aggregate::Max => "max",
            Aggregate::Avg => "avg",
            Aggregate::First => "first",
            Aggregate::Last => "last",
        }
    }

    /// Whether it reads the record's value (`count` does not).
    pub fn needs_value(self) -> bool {
        self != Aggregate::Count
    }
}

/// A whole operator definition's computation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Spec {
    pub window: WindowKind,
    pub time: TimeSource,
    pub value: ValueSource,
    /// Sorted, no repeats, at least one.
    pub aggregates: Vec<Aggregate>,
    pub out_of_orderness_ms: i64,
    pub allowed_lateness_ms: i64,
    /// `None`: the watermark moves only with data.
    pub idle_timeout_ms: Option<i64>,
    /// The state this operator may hold on one source partition before it fails.
    pub max_state_bytes: u64,
}

/// The largest size, gap, disorder or lateness a spec may name: ten years in milliseconds (so that
/// sums of them never come near `i64` overflow).
pub const MAX_SPAN_MS: i64 = 10 * 366 * 24 * 3600 * 1000;
/// Sliding windows per event at most (`size / slide`): a firing merges this many slices.
pub const MAX_SLIDES_PER_WINDOW: i64 = 1000;
/// The default state limit per source partition.
pub const DEFAULT_MAX_STATE_BYTES: u64 = 256 << 20;

const _: () = assert!(MAX_SPAN_MS.checked_mul(4).is_some());

/// Why a definition is refused; the message names the part and the rule.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct SpecError(pub String);

fn err<T>(m: impl fmt::Display) -> Result<T, SpecError> {
    Err(SpecError(m.to_string()))
}

/// A duration such as `500ms`, `10s`, `5m`, `2h`, `1d` (a bare number is milliseconds), in ms.
pub fn parse_duration(s: &str) -> Result<i64, SpecError> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (digits, unit) = s.split_at(split);
    let Ok(n) = digits.parse::<i64>() else {
        return err(format!(
            "{s:?} is not a duration (a whole number and a unit: 500ms, 10s, 5m, 2h, 1d)"
        ));
    };
    let scale = match unit {
        "" | "ms" => 1,
        "s" => 1000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        _ => return err(format!("{s:?}: unknown unit {unit:?} (ms, s, m, h, d)")),
    };
    match n.checked_mul(scale) {
        Some(ms) if ms <= MAX_SPAN_MS => Ok(ms),
        _ => err(format!("{s:?} is longer than ten years")),
    }
}

/// `tumbling:SIZE`, `sliding:SIZE:SLIDE` or `session:GAP`.
pub fn parse_window(s: &str) -> Result<WindowKind, SpecError> {
    let parts: Vec<&str> = s.split(':').collect();
    let w = match parts.as_slice() {
        ["tumbling", size] => WindowKind::Tumbling {
            size_ms: parse_duration(size)?,
        },
        ["sliding", size, slide] => WindowKind::Sliding {
            size_ms: parse_duration(size)?,
            slide_ms: parse_duration(slide)?,
        },
        ["session", gap] => WindowKind::Session {
            gap_ms: parse_duration(gap)?,
        },
        _ => {
            return err(format!(
                "{s:?} is not a window (tumbling:SIZE, sliding:SIZE:SLIDE or session:GAP)"
            ))
        }
    };
    check_window(w)?;
    Ok(w)
}

/// `record`, `processing` or `field:NAME`.
pub fn parse_time(s: &str) -> Result<TimeSource, SpecError> {
    match s {
        "record" => Ok(TimeSource::Record),
        "processing" => Ok(TimeSource::Processing),
        _ => match s.strip_prefix("field:") {
            Some(f) if !f.is_empty() => Ok(TimeSource::Field(f.to_string())),
            _ => err(format!(
                "{s:?} is not a time source (record, processing or field:NAME)"
            )),
        },
    }
}

/// `number` or `field:NAME`.
pub fn parse_value(s: &str) -> Result<ValueSource, SpecError> {
    match s {
        "number" => Ok(ValueSource::Number),
        _ => match s.strip_prefix("field:") {
            Some(f) if !f.is_empty() => Ok(ValueSource::Field(f.to_string())),
            _ => err(format!(
                "{s:?} is not a value source (number or field:NAME)"
            )),
        },
    }
}

/// A comma-separated list of aggregates, sorted and without repeats.
pub fn parse_aggregates(s: &str) -> Result<Vec<Aggregate>, SpecError> {
    let mut out = Vec::new();
    for name in s.split(',').map(str::trim) {
        let Some(a) = Aggregate::ALL.iter().find(|a| a.name() == name) else {
            return err(format!(
                "unknown aggregate {name:?} (count, sum, min, max, avg, first, last)"
            ));
        };
        out.push(*a);
    }
    out.sort();
    out.dedup();
    Ok(out)
}

fn check_window(w: WindowKind) -> Result<(), SpecError> {
    let positive = |what: &str, ms: i64| {
        if ms <= 0 {
            err(format!("the window {what} must be positive, not {ms} ms"))
        } else if ms > MAX_SPAN_MS {
            err(format!("the window {what} is longer than ten years"))
        } else {
            Ok(())
        }
    };
    match w {
        WindowKind::Tumbling { size_ms } => positive("size", size_ms),
        WindowKind::Session { gap_ms } => positive("gap", gap_ms),
        WindowKind::Sliding { size_ms, slide_ms } => {
            positive("size", size_ms)?;
            positive("slide", slide_ms)?;
            if size_ms % slide_ms != 0 {
                return err(format!(
                    "the slide ({slide_ms} ms) must divide the size ({size_ms} ms)"
                ));
            }
            if size_ms / slide_ms > MAX_SLIDES_PER_WINDOW {
                return err(format!(
                    "size / slide is {}, at most {MAX_SLIDES_PER_WINDOW}",
                    size_ms / slide_ms
                ));
            }
            Ok(())
        }
    }
}

impl Spec {
    /// Every rule a definition must meet, with a message naming what is wrong.
    pub fn check(&self) -> Result<(), SpecError> {
        check_window(self.window)?;
        if self.aggregates.is_empty() {
            return err("at least one aggregate is needed");
        }
        if self.aggregates.windows(2).any(|w| w[0] >= w[1]) {
            return err("aggregates must be sorted and listed once each");
        }
        for (what, ms) in [
            ("out-of-orderness", self.out_of_orderness_ms),
            ("allowed lateness", self.allowed_lateness_ms),
            ("idle timeout", self.idle_timeout_ms.unwrap_or(1)),
        ] {
            if !(0..=MAX_SPAN_MS).contains(&ms) {
                return err(format!("the {what} must be 0 to ten years, not {ms} ms"));
            }
        }
        if self.idle_timeout_ms == Some(0) {
            return err("the idle timeout must be positive (leave it out for none)");
        }
        if self.max_state_bytes == 0 {
            return err("the state limit must be positive");
        }
        let time_field = match &self.time {
            TimeSource::Field(f) => Some(f),
            _ => None,
        };
        let value_field = match &self.value {
            ValueSource::Field(f) => Some(f),
            ValueSource::Number => None,
        };
        if time_field
            .into_iter()
            .chain(value_field)
            .any(|f| f.is_empty() || f.len() > 255)
        {
            return err("a field name must be 1 to 255 bytes");
        }
        Ok(())
    }

    /// Whether a record's value must be read (some aggregate other than `count`).
    pub fn needs_value(&self) -> bool {
        self.aggregates.iter().any(|a| a.needs_value())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_windows_and_sources_parse_or_say_why_not() {
        assert_eq!(parse_duration("500ms"), Ok(500));
        assert_eq!(parse_duration("10s"), Ok(10_000));
        assert_eq!(parse_duration("5m"), Ok(300_000));
        assert_eq!(parse_duration("250"), Ok(250));
        assert!(parse_duration("5 parsecs").is_err());
        assert!(parse_duration("-5s").is_err());
        assert!(parse_duration("99999999999d").is_err());
        assert_eq!(
            parse_window("sliding:1m:10s"),
            Ok(WindowKind::Sliding {
                size_ms: 60_000,
                slide_ms: 10_000
            })
        );
        let e = parse_window("sliding:1m:7s").unwrap_err();
        assert!(e.0.contains("must divide"), "{e}");
        let e = parse_window("tumbling:0s").unwrap_err();
        assert!(e.0.contains("positive"), "{e}");
        assert!(parse_window("hopping:1s").is_err());
        assert_eq!(parse_time("field:ts"), Ok(TimeSource::Field("ts".into())));
        assert!(parse_time("field:").is_err());
        assert_eq!(parse_value("number"), Ok(ValueSource::Number));
        assert_eq!(
            parse_aggregates("sum,count,sum"),
            Ok(vec![Aggregate::Count, Aggregate::Sum])
        );
        let e = parse_aggregates("count,median").unwrap_err();
        assert!(e.0.contains("median"), "{e}");
    }
}
