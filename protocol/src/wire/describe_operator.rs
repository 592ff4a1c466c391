//! DescribeOperator (key 26): one window operator's definition, whether it is paused, when it was
//! created, and per source partition its leader, the producer id the operator writes its sink
//! with, and what the answering broker's driver of that partition reports (when it runs one).
//!
//! ```text
//! request:  string name
//! response: u16 error, string message, definition (as CreateOperator carries it), bool paused,
//!           i64 created ms, [u32 partition, i32 leader (-1: none known), i64 producer id,
//!           bool has run stats, then if so: run stats]
//! run stats: bool from the leader, u64 position, u64 high watermark, i64 lag ms,
//!           i64 watermark ms (i64::MIN: none yet), u64 keys, u64 windows, u64 state bytes,
//!           u64 late, u64 bad, u64 emitted, i64 emit p99 µs (-1: none yet), string failed ("": no)
//! ```

use super::codec::{Reader, Writer};
use super::create_operator::{get_definition, put_definition};
use super::table::Body;
use super::{ErrorCode, OperatorDefinition, ProtocolError};

/// Versions of DescribeOperator this build speaks, inclusive.
pub(super) const VERSIONS: (u16, u16) = (0, 0);

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DescribeOperatorRequest {
    pub name: String,
}

impl Body for DescribeOperatorRequest {
    fn encode(&self, w: &mut Writer) {
        w.string(&self.name);
    }

    fn decode(r: &mut Reader) -> Result<Self, ProtocolError> {
        Ok(DescribeOperatorRequest {
            name: r.string("operator name")?,
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DescribeOperatorResponse {
    pub error: ErrorCode,
    pub message: String,
    /// Boxed: it would make every `Response` as large as itself.
    pub definition: Box<OperatorDefinition>,
    pub paused: bool,
    pub created_ms: i64,
    pub partitions: Vec<OperatorPartition>,
}

/// One source partition of a described operator.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct OperatorPartition {
    pub partition: u32,
    /// The source partition's leader (-1: none known).
    pub leader: i32,
    /// The producer id the operator writes this partition's results to the sink with.
    pub producer_id: i64,
    /// What the answering broker's driver of this partition reports (`None`: it runs none).
    pub run: Option<OperatorRunStats>,
}

/// One source partition's running operator, as the driver on the answering broker sees it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct OperatorRunStats {
    /// Reported by the partition leader's driver (else a follower's, which trails to the last mark).
    pub from_leader: bool,
    /// The next source offset the operator reads.
    pub position: u64,
    pub high_watermark: u64,
    pub lag_ms: i64,
    /// `i64::MIN`: no watermark yet.
    pub watermark_ms: i64,
    pub keys: u64,
    pub windows: u64,
    pub state_bytes: u64,
    pub late: u64,
    pub bad: u64,
    pub emitted: u64,
    /// `-1`: nothing emitted yet by this leader.
    pub emit_p99_us: i64,
    /// Why it stopped on this partition ("" while it runs).
    pub failed: String,
}

impl OperatorRunStats {
    fn encode(&self, w: &mut Writer) {
        w.bool(self.from_leader);
        w.u64(self.position);
        w.u64(self.high_watermark);
        w.i64(self.lag_ms);
        w.i64(self.watermark_ms);
        for v in [self.keys, self.windows, self.state_bytes, self.late, self.bad, self.emitted] {
            w.u64(v);
        }
        w.i64(self.emit_p99_us);
        w.string(&self.failed);
    }

    fn decode(r: &mut Reader) -> Result<Self, ProtocolError> {
        Ok(OperatorRunStats {
            from_leader: r.bool("from leader")?,
            position: r.u64("position")?,
            high_watermark: r.u64("high watermark")?,
            lag_ms: r.i64("lag ms")?,
            watermark_ms: r.i64("watermark ms")?,
            keys: r.u64("keys")?,
            windows: r.u64("windows")?,
            state_bytes: r.u64("state bytes")?,
            late: r.u64("late")?,
            bad: r.u64("bad")?,
            emitted: r.u64("emitted")?,
            emit_p99_us: r.i64("emit p99")?,
            failed: r.string("failed")?,
        })
    }
}

impl Body for DescribeOperatorResponse {
    fn encode(&self, w: &mut Writer) {
        w.u16(self.error.0);
        w.string(&self.message);
        put_definition(w, &self.definition);
        w.bool(self.paused);
        w.i64(self.created_ms);
        w.count(self.partitions.len());
        for p in &self.partitions {
            w.u32(p.partition);
            w.i32(p.leader);
            w.i64(p.producer_id);
            match &p.run {
                Some(run) => {
                    w.bool(true);
                    run.encode(w);
                }
                None => w.bool(false),
            }
        }
    }

    fn decode(r: &mut Reader) -> Result<Self, ProtocolError> {
        Ok(DescribeOperatorResponse {
            error: ErrorCode(r.u16("error")?),
            message: r.string("message")?,
            definition: Box::new(get_definition(r)?),
            paused: r.bool("paused")?,
            created_ms: r.i64("created ms")?,
            partitions: r.array(16, "partitions", |r| {
                Ok(OperatorPartition {
                    partition: r.u32("partition")?,
                    leader: r.i32("leader")?,
                    producer_id: r.i64("producer id")?,
                    run: if r.bool("has run stats")? {
                        Some(OperatorRunStats::decode(r)?)
                    } else {
                        None
                    },
                })
            })?,
        })
    }
}
