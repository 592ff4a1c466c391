//! Reading a record's event time and value as the spec says. A record whose time or value cannot be
//! read gets a [`Bad`] reason (the operator counts it, or sends it to the dead-letter topic); it
//! never stops the operator.

use crate::spec::{TimeSource, ValueSource};

mod pick;

/// Why a record could not be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Bad {
    /// The value is not a JSON object but a field was asked for (or there is no value).
    NotAnObject,
    /// The field is missing.
    MissingField(String),
    /// The field or value is not a finite number (or, for time, not a whole number of ms).
    NotANumber(String),
}

impl std::fmt::Display for Bad {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Bad::NotAnObject => f.write_str("the value is not a JSON object"),
            Bad::MissingField(n) => write!(f, "the value has no field {n:?}"),
            Bad::NotANumber(what) => write!(f, "{what} is not a number"),
        }
    }
}

/// A record's event time and value (`None` when no aggregate needs the value).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Read {
    pub time_ms: i64,
    pub value: Option<f64>,
}

/// Reads what the spec asks for from a record. `processing_ms` is the processing time the caller
/// assigns to it (from the log, never a clock here).
///
/// Named fields are picked from the JSON in one pass that allocates nothing for the fields it skips
/// ([`pick`]). The value must be one well-formed JSON object; fields not asked for are checked for
/// syntax only (a number too large for a float there is no reason to refuse the record).
pub fn read(
    time: &TimeSource,
    value: &ValueSource,
    needs_value: bool,
    timestamp_ms: i64,
    processing_ms: i64,
    bytes: Option<&[u8]>,
) -> Result<Read, Bad> {
    let time_field = match time {
        TimeSource::Field(f) => Some(f.as_str()),
        _ => None,
    };
    let value_field = match value {
        ValueSource::Field(f) if needs_value => Some(f.as_str()),
        _ => None,
    };
    let (t, v) = if time_field.is_some() || value_field.is_some() {
        let b = bytes.ok_or(Bad::NotAnObject)?;
        pick::pick(b, time_field, value_field).ok_or(Bad::NotAnObject)?
    } else {
        (None, None)
    };
    let time_ms = match (time, t) {
        (TimeSource::Record, _) => timestamp_ms,
        (TimeSource::Processing, _) => processing_ms,
        (TimeSource::Field(name), None) => return Err(Bad::MissingField(name.clone())),
        (TimeSource::Field(name), Some(n)) => n
            .as_i64()
            .ok_or_else(|| Bad::NotANumber(format!("the time field {name:?}")))?,
    };
    let value = match (value, v) {
        _ if !needs_value => None,
        (ValueSource::Number, _) => Some(
            bytes
                .and_then(number)
                .ok_or_else(|| Bad::NotANumber("the value".into()))?,
        ),
        (ValueSource::Field(name), None) => return Err(Bad::MissingField(name.clone())),
        (ValueSource::Field(name), Some(n)) => Some(
            n.as_f64()
                .ok_or_else(|| Bad::NotANumber(format!("the field {name:?}")))?,
        ),
    };
    Ok(Read { time_ms, value })
}

/// The whole value as a finite number.
fn number(b: &[u8]) -> Option<f64> {
    std::str::from_utf8(b)
        .ok()
        .and_then(|s| s.trim().parse::<f64>().ok())
        .filter(|v| v.is_finite())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field(n: &str) -> ValueSource {
        ValueSource::Field(n.into())
    }

    #[test]
    fn times_and_values_come_from_where_the_spec_says() {
        let v = br#"{"ts": 1234, "amount": 2.5, "name": "x"}"#;
        let r = read(
            &TimeSource::Field("ts".into()),
            &field("amount"),
            true,
            7,
            9,
            Some(v),
        );
        assert_eq!(
            r,
            Ok(Read {
                time_ms: 1234,
                value: Some(2.5)
            })
        );
        let r = read(
            &TimeSource::Record,
            &ValueSource::Number,
            true,
            7,
            9,
            Some(b" 42 "),
        );
        assert_eq!(r.map(|r| (r.time_ms, r.value)), Ok((7, Some(42.0))));
        let r = read(
            &TimeSource::Processing,
            &ValueSource::Number,
            false,
            7,
            9,
            None,
        );
        assert_eq!(
            r.map(|r| (r.time_ms, r.value)),
            Ok((9, None)),
            "count needs no value"
        );
    }

    #[test]
    fn unreadable_records_say_why() {
        let v = br#"{"ts": "soon", "amount": "lots"}"#;
        let ts = TimeSource::Field("ts".into());
        assert!(matches!(
            read(&ts, &field("amount"), true, 0, 0, Some(v)),
            Err(Bad::NotANumber(_))
        ));
        assert_eq!(
            read(&TimeSource::Record, &field("nope"), true, 0, 0, Some(v)),
            Err(Bad::MissingField("nope".into()))
        );
        assert_eq!(
            read(&TimeSource::Record, &field("a"), true, 0, 0, Some(b"[1]")),
            Err(Bad::NotAnObject)
        );
        assert_eq!(
            read(&TimeSource::Record, &field("a"), true, 0, 0, None),
            Err(Bad::NotAnObject)
        );
        assert!(read(
            &TimeSource::Record,
            &ValueSource::Number,
            true,
            0,
            0,
            Some(b"NaN")
        )
        .is_err());
        assert!(read(
            &TimeSource::Record,
            &ValueSource::Number,
            true,
            0,
            0,
            Some(b"\xff")
        )
        .is_err());
    }

    /// `read` by building the whole value with `serde_json::Value`: the reference.
    fn read_slowly(
        time: &TimeSource,
        value: &ValueSource,
        needs_value: bool,
        timestamp_ms: i64,
        processing_ms: i64,
        bytes: Option<&[u8]>,
    ) -> Result<Read, Bad> {
        let object = || -> Result<serde_json::Map<String, serde_json::Value>, Bad> {
            match serde_json::from_slice::<serde_json::Value>(bytes.ok_or(Bad::NotAnObject)?) {
                Ok(serde_json::Value::Object(m)) => Ok(m),
                _ => Err(Bad::NotAnObject),
            }
        };
        let time_ms = match time {
            TimeSource::Record => timestamp_ms,
            TimeSource::Processing => processing_ms,
            TimeSource::Field(name) => object()?
                .get(name)
                .ok_or_else(|| Bad::MissingField(name.clone()))?
                .as_i64()
                .ok_or_else(|| Bad::NotANumber(format!("the time field {name:?}")))?,
        };
        let value = match value {
            _ if !needs_value => None,
            ValueSource::Number => Some(
                bytes
                    .and_then(number)
                    .ok_or_else(|| Bad::NotANumber("the value".into()))?,
            ),
            ValueSource::Field(name) => Some(
                object()?
                    .get(name)
                    .ok_or_else(|| Bad::MissingField(name.clone()))?
                    .as_f64()
                    .filter(|v| v.is_finite())
                    .ok_or_else(|| Bad::NotANumber(format!("the field {name:?}")))?,
            ),
        };
        Ok(Read { time_ms, value })
    }

    /// The one-pass picker decides as building the whole value would (the one difference: a
    /// number too large for a float in a field nobody asked for, below). Seen failing with the
    /// picker keeping the first of repeated keys, and with unsigned times accepted past
    /// `i64::MAX`.
    #[test]
    fn picking_fields_agrees_with_building_the_whole_value() {
        let values: [&[u8]; 16] = [
            br#"{"ts": 5, "v": 1}"#,
            br#"{"ts": 5, "v": 1, "ts": "late"}"#,
            br#"{"ts": "x", "v": 1, "ts": 6}"#,
            br#"{"ts": 18446744073709551615, "v": 1}"#,
            br#"{"ts": 9223372036854775807, "v": -0.0}"#,
            br#"{"ts": 1.5, "v": 1}"#,
            br#"{"ts": -7, "v": 1e308}"#,
            br#"{"ts": 1, "v": [1e3]}"#,
            br#"{"t\u0073": 2, "\u0076": 3}"#,
            br#"{"ts": 1, "v": [1], "x": {"v": 2}}"#,
            br#"{"ts": 1}"#,
            br#"{"v": 1}"#,
            br#"{"ts": 1, "v": 2} trailing"#,
            br#"[{"ts": 1, "v": 2}]"#,
            b"42",
            b"\xff\xfe",
        ];
        let times = [
            TimeSource::Field("ts".into()),
            TimeSource::Record,
            TimeSource::Processing,
        ];
        let vals = [field("v"), ValueSource::Number, field("ts")];
        for v in values {
            for t in &times {
                for val in &vals {
                    for needs in [true, false] {
                        assert_eq!(
                            read(t, val, needs, 3, 4, Some(v)),
                            read_slowly(t, val, needs, 3, 4, Some(v)),
                            "{t:?} {val:?} {needs} {}",
                            String::from_utf8_lossy(v)
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn a_huge_number_only_matters_where_it_is_read() {
        let v = br#"{"ts": 1, "v": 1e999}"#;
        let ts = TimeSource::Field("ts".into());
        assert_eq!(
            read(&ts, &field("v"), false, 0, 0, Some(v)),
            Ok(Read {
                time_ms: 1,
                value: None
            })
        );
        assert!(read(&ts, &field("v"), true, 0, 0, Some(v)).is_err());
    }
}
