//! A window's accumulator: count, sum, min, max and the first and last values, mergeable (sliding
//! windows merge their slices), and the sink record value it becomes.
//!
//! `first` and `last` are the values of the records with the smallest and largest event time, ties
//! broken by log order (the earlier record is first, the later one last), so a merge of two
//! accumulators in either order gives what one accumulator fed every record would.

use serde::Serialize;

use crate::spec::Aggregate;

/// A value with the event time and log position it came with.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Stamped {
    pub time_ms: i64,
    pub offset: u64,
    pub value: f64,
}

/// What a window holds of its records. Never empty: it is made from a record.
#[derive(Debug, Clone, PartialEq)]
pub struct Acc {
    pub count: u64,
    pub sum: f64,
    pub min: f64,
    pub max: f64,
    pub first: Stamped,
    pub last: Stamped,
}

/// Bytes an accumulator takes in state accounting.
pub const ACC_BYTES: u64 = std::mem::size_of::<Acc>() as u64;

impl Acc {
    /// An accumulator of one record.
    pub fn of(s: Stamped) -> Acc {
        Acc {
            count: 1,
            sum: s.value,
            min: s.value,
            max: s.value,
            first: s,
            last: s,
        }
    }

    /// Adds one record.
    pub fn add(&mut self, s: Stamped) {
        self.merge(&Acc::of(s));
    }

    /// Adds every record `other` holds.
    pub fn merge(&mut self, other: &Acc) {
        self.count += other.count;
        self.sum += other.sum;
        self.min = self.min.min(other.min);
        self.max = self.max.max(other.max);
        if (other.first.time_ms, other.first.offset) < (self.first.time_ms, self.first.offset) {
            self.first = other.first;
        }
        if (other.last.time_ms, other.last.offset) > (self.last.time_ms, self.last.offset) {
            self.last = other.last;
        }
    }
}

/// The sink record value: the key (its bytes as UTF-8, invalid sequences replaced), the window
/// bounds and one field per requested aggregate, in the order of [`Aggregate`].
#[derive(Debug, Serialize)]
struct Result<'a> {
    key: &'a str,
    window_start: i64,
    window_end: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    count: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    sum: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    min: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    max: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    avg: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    first: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    last: Option<f64>,
}

/// The JSON value of `acc` as window `[start, end)` of `key`.
pub fn result_json(
    key: &[u8],
    start: i64,
    end: i64,
    acc: &Acc,
    aggregates: &[Aggregate],
) -> Vec<u8> {
    let key = String::from_utf8_lossy(key);
    let has = |a: Aggregate| aggregates.contains(&a);
    let r = Result {
        key: &key,
        window_start: start,
        window_end: end,
        count: has(Aggregate::Count).then_some(acc.count),
        sum: has(Aggregate::Sum).then_some(acc.sum),
        min: has(Aggregate::Min).then_some(acc.min),
        max: has(Aggregate::Max).then_some(acc.max),
        avg: has(Aggregate::Avg).then(|| acc.sum / acc.count as f64),
        first: has(Aggregate::First).then_some(acc.first.value),
        last: has(Aggregate::Last).then_some(acc.last.value),
    };
    // Serialising plain numbers and a string into memory cannot fail (values are finite: the
    // extractor refuses NaN and infinities).
    serde_json::to_vec(&r).unwrap_or_else(|e| panic!("window result does not serialise: {e}"))
}

/// The sink record key: the source key's bytes, `@`, the window start in decimal.
pub fn sink_key(key: &[u8], start: i64) -> Vec<u8> {
    let mut k = Vec::with_capacity(key.len() + 21);
    k.extend_from_slice(key);
    k.push(b'@');
    k.extend_from_slice(start.to_string().as_bytes());
    k
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(time_ms: i64, offset: u64, value: f64) -> Stamped {
        Stamped {
            time_ms,
            offset,
            value,
        }
    }

    #[test]
    fn merging_in_either_order_equals_adding_every_record() {
        let records = [s(5, 0, 1.0), s(3, 1, 2.0), s(5, 2, 3.0), s(3, 3, 4.0)];
        let mut all = Acc::of(records[0]);
        for r in &records[1..] {
            all.add(*r);
        }
        let (mut a, mut b) = (Acc::of(records[0]), Acc::of(records[2]));
        a.add(records[1]);
        b.add(records[3]);
        let mut ab = a.clone();
        ab.merge(&b);
        let mut ba = b.clone();
        ba.merge(&a);
        assert_eq!(ab, all);
        assert_eq!(ba, all);
        // Ties by log order: the first at time 3 is offset 1, the last at time 5 is offset 2.
        assert_eq!(all.first.value, 2.0);
        assert_eq!(all.last.value, 3.0);
    }

    #[test]
    fn a_result_names_the_window_and_only_the_requested_aggregates() {
        let mut acc = Acc::of(s(1, 0, 2.0));
        acc.add(s(2, 1, 4.0));
        let v = result_json(b"user-7", 0, 10, &acc, &[Aggregate::Count, Aggregate::Avg]);
        assert_eq!(
            std::str::from_utf8(&v).unwrap(),
            r#"{"key":"user-7","window_start":0,"window_end":10,"count":2,"avg":3.0}"#
        );
        assert_eq!(
            sink_key(b"user-7", 1_700_000_000_000),
            b"user-7@1700000000000"
        );
        assert_eq!(sink_key(b"k", -5), b"k@-5");
    }
}
