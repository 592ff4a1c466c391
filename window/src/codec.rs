//! The operator state as bytes, for checkpoints and raft snapshots: everything [`Operator`] keeps
//! but its spec (the definition is stored apart), in a deterministic order, so that two replicas
//! with the same state write the same bytes. Decoding checks every length and invariant it can and
//! answers a [`CodecError`] on damage; it never panics on what it reads.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use bytes::{Buf, BufMut, Bytes, BytesMut};

use crate::acc::{Acc, Stamped};
use crate::operator::Operator;
use crate::spec::Spec;
use crate::timers::{KeyState, Queue, Win};

/// Why bytes are not an operator state.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("operator state: {0}")]
pub struct CodecError(pub String);

const VERSION: u8 = 1;
/// Bytes of one encoded accumulator: count, sum, min, max, two stamped values.
const ACC_LEN: usize = 8 * 4 + 2 * 24;

fn put_opt(b: &mut BytesMut, v: Option<i64>) {
    match v {
        Some(v) => {
            b.put_u8(1);
            b.put_i64_le(v);
        }
        None => b.put_u8(0),
    }
}

fn put_stamped(b: &mut BytesMut, s: &Stamped) {
    b.put_i64_le(s.time_ms);
    b.put_u64_le(s.offset);
    b.put_f64_le(s.value);
}

fn put_acc(b: &mut BytesMut, a: &Acc) {
    b.put_u64_le(a.count);
    b.put_f64_le(a.sum);
    b.put_f64_le(a.min);
    b.put_f64_le(a.max);
    put_stamped(b, &a.first);
    put_stamped(b, &a.last);
}

/// A reader that answers errors instead of panicking on short input.
struct R(Bytes);

impl R {
    fn need(&self, n: usize, what: &str) -> Result<(), CodecError> {
        if self.0.remaining() < n {
            return Err(CodecError(format!("truncated in {what}")));
        }
        Ok(())
    }
    fn u8(&mut self, what: &str) -> Result<u8, CodecError> {
        self.need(1, what)?;
        Ok(self.0.get_u8())
    }
    fn u64(&mut self, what: &str) -> Result<u64, CodecError> {
        self.need(8, what)?;
        Ok(self.0.get_u64_le())
    }
    fn i64(&mut self, what: &str) -> Result<i64, CodecError> {
        self.need(8, what)?;
        Ok(self.0.get_i64_le())
    }
    fn f64(&mut self, what: &str) -> Result<f64, CodecError> {
        self.need(8, what)?;
        Ok(self.0.get_f64_le())
    }
    fn opt(&mut self, what: &str) -> Result<Option<i64>, CodecError> {
        match self.u8(what)? {
            0 => Ok(None),
            1 => Ok(Some(self.i64(what)?)),
            t => Err(CodecError(format!("bad option tag {t} in {what}"))),
        }
    }
    /// A count of items of at least `min_len` bytes each, checked against what is left.
    fn count(&mut self, min_len: usize, what: &str) -> Result<usize, CodecError> {
        let n = self.u64(what)?;
        let fits = usize::try_from(n)
            .ok()
            .filter(|n| n.saturating_mul(min_len) <= self.0.remaining());
        fits.ok_or_else(|| CodecError(format!("{n} {what} cannot fit in what is left")))
    }
    fn bytes(&mut self, what: &str) -> Result<Bytes, CodecError> {
        let n = self.count(1, what)?;
        Ok(self.0.split_to(n))
    }
    fn stamped(&mut self) -> Result<Stamped, CodecError> {
        Ok(Stamped {
            time_ms: self.i64("a stamped value")?,
            offset: self.u64("a stamped value")?,
            value: self.f64("a stamped value")?,
        })
    }
    fn acc(&mut self) -> Result<Acc, CodecError> {
        let a = Acc {
            count: self.u64("an accumulator")?,
            sum: self.f64("an accumulator")?,
            min: self.f64("an accumulator")?,
            max: self.f64("an accumulator")?,
            first: self.stamped()?,
            last: self.stamped()?,
        };
        if a.count == 0 {
            return Err(CodecError("an empty accumulator".into()));
        }
        Ok(a)
    }
    fn queue(&mut self, what: &str) -> Result<Queue, CodecError> {
        let n = self.count(16, what)?;
        let mut q = Queue::new();
        for _ in 0..n {
            let at = self.i64(what)?;
            let m = self.count(8, what)?;
            let mut keys = Vec::with_capacity(m);
            for _ in 0..m {
                keys.push(self.bytes(what)?);
            }
            if keys.is_empty() || q.insert(at, keys).is_some() {
                return Err(CodecError(format!("an empty or repeated time in {what}")));
            }
        }
        Ok(q)
    }
}

impl Operator {
    /// The state as bytes (not the spec).
    pub fn encode(&self) -> Bytes {
        let mut b = BytesMut::new();
        b.put_u8(VERSION);
        put_opt(&mut b, self.max_time);
        put_opt(&mut b, self.watermark);
        for n in [self.late, self.bad, self.emitted] {
            b.put_u64_le(n);
        }
        match &self.failed {
            Some(f) => {
                b.put_u8(1);
                b.put_u64_le(f.bytes);
            }
            None => b.put_u8(0),
        }
        let keys: BTreeMap<&Bytes, &KeyState> = self.keys.iter().collect();
        b.put_u64_le(keys.len() as u64);
        for (k, ks) in keys {
            b.put_u64_le(k.len() as u64);
            b.put_slice(k);
            b.put_u64_le(ks.windows.len() as u64);
            for (start, w) in &ks.windows {
                b.put_i64_le(*start);
                b.put_i64_le(w.end);
                put_acc(&mut b, &w.acc);
            }
            b.put_u64_le(ks.pending.len() as u64);
            for end in &ks.pending {
                b.put_i64_le(*end);
            }
            put_opt(&mut b, ks.armed);
            put_opt(&mut b, ks.drop_armed);
        }
        // Queue order is part of the state: it decides the order of outputs.
        for queue in [&self.fire_at, &self.drop_at] {
            b.put_u64_le(queue.len() as u64);
            for (at, keys) in queue {
                b.put_i64_le(*at);
                b.put_u64_le(keys.len() as u64);
                for k in keys {
                    b.put_u64_le(k.len() as u64);
                    b.put_slice(k);
                }
            }
        }
        b.freeze()
    }

    /// The operator `encode` wrote, running `spec` (checked; the definition it was made from).
    pub fn decode(spec: Spec, bytes: Bytes) -> Result<Operator, CodecError> {
        spec.check().map_err(|e| CodecError(e.to_string()))?;
        let mut r = R(bytes);
        let v = r.u8("the version")?;
        if v != VERSION {
            return Err(CodecError(format!("unknown version {v}")));
        }
        let mut op = Operator::new(spec);
        op.max_time = r.opt("the largest time")?;
        op.watermark = r.opt("the watermark")?;
        op.late = r.u64("counters")?;
        op.bad = r.u64("counters")?;
        op.emitted = r.u64("counters")?;
        let failed_at = match r.u8("the failure")? {
            0 => None,
            1 => Some(r.u64("the failure")?),
            t => return Err(CodecError(format!("bad failure tag {t}"))),
        };
        let n = r.count(16, "keys")?;
        let mut keys = HashMap::with_capacity(n);
        for _ in 0..n {
            let k = r.bytes("a key")?;
            let m = r.count(16 + ACC_LEN, "windows")?;
            let mut ks = KeyState::default();
            for _ in 0..m {
                let start = r.i64("a window")?;
                let end = r.i64("a window")?;
                if end <= start {
                    return Err(CodecError(format!("a window [{start}, {end})")));
                }
                ks.windows.insert(start, Win { end, acc: r.acc()? });
            }
            let p = r.count(8, "pending ends")?;
            let mut pending = BTreeSet::new();
            for _ in 0..p {
                pending.insert(r.i64("pending ends")?);
            }
            ks.pending = pending;
            ks.armed = r.opt("the fire arm")?;
            ks.drop_armed = r.opt("the drop arm")?;
            if (ks.windows.is_empty() && ks.pending.is_empty()) || keys.insert(k, ks).is_some() {
                return Err(CodecError("a key holding nothing, or twice".into()));
            }
        }
        op.keys = keys;
        op.fire_at = r.queue("the fire queue")?;
        op.drop_at = r.queue("the drop queue")?;
        if r.0.has_remaining() {
            return Err(CodecError("trailing bytes".into()));
        }
        op.recount();
        if let Some(bytes) = failed_at {
            op.fail_at(bytes);
        }
        Ok(op)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::{parse_aggregates, parse_window, TimeSource, ValueSource};
    use crate::Input;

    fn spec(window: &str) -> Spec {
        Spec {
            window: parse_window(window).unwrap(),
            time: TimeSource::Record,
            value: ValueSource::Number,
            aggregates: parse_aggregates("count,sum,first,last").unwrap(),
            out_of_orderness_ms: 3,
            allowed_lateness_ms: 4,
            idle_timeout_ms: None,
            max_state_bytes: 1 << 30,
        }
    }

    fn feed(op: &mut Operator, from: u64, n: u64) -> Vec<crate::Output> {
        let mut out = Vec::new();
        for i in from..from + n {
            let key = format!("k{}", i % 7);
            let value = (i % 13).to_string();
            op.process(
                Input {
                    offset: i,
                    timestamp_ms: (i as i64 * 3) % 50 + i as i64,
                    processing_ms: 0,
                    key: Some(key.as_bytes()),
                    value: Some(value.as_bytes()),
                },
                &mut out,
            )
            .unwrap();
        }
        out
    }

    /// A state restored mid-stream continues exactly as the original does. Seen failing with the
    /// drop queue left out of the encoding.
    #[test]
    fn a_restored_state_gives_the_same_outputs_as_the_original() {
        for w in ["tumbling:10ms", "sliding:12ms:4ms", "session:5ms"] {
            let mut a = Operator::new(spec(w));
            feed(&mut a, 0, 300);
            let bytes = a.encode();
            let mut b = Operator::decode(spec(w), bytes.clone()).unwrap();
            assert_eq!(b.encode(), bytes, "{w}: encoding is deterministic");
            assert_eq!(a.stats(), b.stats(), "{w}");
            assert_eq!(feed(&mut a, 300, 300), feed(&mut b, 300, 300), "{w}");
            assert_eq!(a.stats(), b.stats(), "{w}");
        }
    }

    #[test]
    fn damaged_bytes_are_an_error_never_a_panic() {
        let mut a = Operator::new(spec("session:5ms"));
        feed(&mut a, 0, 100);
        let bytes = a.encode();
        for cut in 0..bytes.len() {
            assert!(Operator::decode(spec("session:5ms"), bytes.slice(..cut)).is_err());
        }
        let mut big = BytesMut::from(&bytes[..]);
        big.put_u8(0);
        assert!(Operator::decode(spec("session:5ms"), big.freeze()).is_err());
        let mut huge = BytesMut::new();
        huge.put_u8(VERSION);
        huge.put_slice(&[
            0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
        ]);
        huge.put_u8(0);
        huge.put_u64_le(u64::MAX);
        assert!(Operator::decode(spec("session:5ms"), huge.freeze()).is_err());
    }
}
