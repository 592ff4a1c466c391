//! DescribeOperator (key 26): one window operator's definition, whether it is paused, when it was
//! created, and per source partition its leader and the producer id the operator writes its sink
//! with. Execution statistics are not reported yet (operators do not run yet).
//!
//! ```text
//! request:  string name
//! response: u16 error, string message, definition (as CreateOperator carries it), bool paused,
//!           i64 created ms, [u32 partition, i32 leader (-1: none known), i64 producer id]
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
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct OperatorPartition {
    pub partition: u32,
    /// The source partition's leader (-1: none known).
    pub leader: i32,
    /// The producer id the operator writes this partition's results to the sink with.
    pub producer_id: i64,
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
                })
            })?,
        })
    }
}
