//! Reading a record's event time and value as the spec says. A record whose time or value cannot be
//! read gets a [`Bad`] reason (the operator counts it, or sends it to the dead-letter topic); it
//! never stops the operator.

use crate::spec::{TimeSource, ValueSource};

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
pub fn read(
    time: &TimeSource,
    value: &ValueSource,
    needs_value: bool,
    timestamp_ms: i64,
    processing_ms: i64,
    bytes: Option<&[u8]>,
) -> Result<Read, Bad> {
    // The value is parsed at most once, and only if a field of it is needed.
    let mut object: Option<serde_json::Map<String, serde_json::Value>> = None;
    let parse = |object: &mut Option<_>| -> Result<(), Bad> {
        if object.is_none() {
            let b = bytes.ok_or(Bad::NotAnObject)?;
            match serde_json::from_slice::<serde_json::Value>(b) {
                Ok(serde_json::Value::Object(m)) => *object = Some(m),
                _ => return Err(Bad::NotAnObject),
            }
        }
        Ok(())
    };
    let time_ms = match time {
        TimeSource::Record => timestamp_ms,
        TimeSource::Processing => processing_ms,
        TimeSource::Field(name) => {
            parse(&mut object)?;
            let v = object
                .as_ref()
                .and_then(|m| m.get(name))
                .ok_or_else(|| Bad::MissingField(name.clone()))?;
            v.as_i64()
                .ok_or_else(|| Bad::NotANumber(format!("the time field {name:?}")))?
        }
    };
    let value = if needs_value {
        Some(match value {
            ValueSource::Number => bytes
                .and_then(|b| std::str::from_utf8(b).ok())
                .and_then(|s| s.trim().parse::<f64>().ok())
                .filter(|v| v.is_finite())
                .ok_or_else(|| Bad::NotANumber("the value".into()))?,
            ValueSource::Field(name) => {
                parse(&mut object)?;
                let v = object
                    .as_ref()
                    .and_then(|m| m.get(name))
                    .ok_or_else(|| Bad::MissingField(name.clone()))?;
                v.as_f64()
                    .filter(|v| v.is_finite())
                    .ok_or_else(|| Bad::NotANumber(format!("the field {name:?}")))?
            }
        })
    } else {
        None
    };
    Ok(Read { time_ms, value })
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
}
