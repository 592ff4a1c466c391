//! CreateOperator (key 24): defines a window operator (see `docs/operators.md`): its source and
//! sink topics, its window, where event time and values come from, its aggregates and bounds. Any
//! broker accepts it and proposes it on the metadata leader; the answer comes once the answering
//! broker sees the operator (and the topics it created) applied. The definition's layout,
//! [`OperatorDefinition`], is shared with DescribeOperator.
//!
//! ```text
//! request:  definition
//! definition: string name, string source topic, string sink topic,
//!             string window (tumbling:SIZE | sliding:SIZE:SLIDE | session:GAP),
//!             string time (record | processing | field:NAME), string value (number | field:NAME),
//!             [string aggregate], i64 out-of-orderness ms, i64 allowed lateness ms,
//!             string late topic (empty: none), string dead-letter topic (empty: none),
//!             i64 idle timeout ms (0: none), u64 max state bytes (0: the default)
//! response: u16 error, string message   (AdminResult)
//! ```

use super::codec::{Reader, Writer};
use super::shared::{get_strings, put_strings};
use super::table::Body;
use super::ProtocolError;

/// Versions of CreateOperator this build speaks, inclusive.
pub(super) const VERSIONS: (u16, u16) = (0, 0);

/// A window operator's definition, as CreateOperator carries it and DescribeOperator answers it.
/// Window, time and value are the strings the CLI takes (`tumbling:10s`, `field:ts`, `number`);
/// the broker checks them and answers them back in a canonical spelling.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct OperatorDefinition {
    pub name: String,
    pub source: String,
    pub sink: String,
    pub window: String,
    pub time: String,
    pub value: String,
    pub aggregates: Vec<String>,
    pub out_of_orderness_ms: i64,
    pub allowed_lateness_ms: i64,
    /// Empty: late records are counted, not written anywhere.
    pub late_topic: String,
    /// Empty: bad records are counted, not written anywhere.
    pub dead_letter_topic: String,
    /// 0: the watermark moves only with data.
    pub idle_timeout_ms: i64,
    /// 0: the default (256 MiB per source partition).
    pub max_state_bytes: u64,
}

pub(super) fn put_definition(w: &mut Writer, d: &OperatorDefinition) {
    w.string(&d.name);
    w.string(&d.source);
    w.string(&d.sink);
    w.string(&d.window);
    w.string(&d.time);
    w.string(&d.value);
    put_strings(w, &d.aggregates);
    w.i64(d.out_of_orderness_ms);
    w.i64(d.allowed_lateness_ms);
    w.string(&d.late_topic);
    w.string(&d.dead_letter_topic);
    w.i64(d.idle_timeout_ms);
    w.u64(d.max_state_bytes);
}

pub(super) fn get_definition(r: &mut Reader) -> Result<OperatorDefinition, ProtocolError> {
    Ok(OperatorDefinition {
        name: r.string("operator name")?,
        source: r.string("source topic")?,
        sink: r.string("sink topic")?,
        window: r.string("window")?,
        time: r.string("time source")?,
        value: r.string("value source")?,
        aggregates: get_strings(r, "aggregate")?,
        out_of_orderness_ms: r.i64("out-of-orderness")?,
        allowed_lateness_ms: r.i64("allowed lateness")?,
        late_topic: r.string("late topic")?,
        dead_letter_topic: r.string("dead-letter topic")?,
        idle_timeout_ms: r.i64("idle timeout")?,
        max_state_bytes: r.u64("max state bytes")?,
    })
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CreateOperatorRequest {
    pub definition: OperatorDefinition,
}

impl Body for CreateOperatorRequest {
    fn encode(&self, w: &mut Writer) {
        put_definition(w, &self.definition);
    }

    fn decode(r: &mut Reader) -> Result<Self, ProtocolError> {
        Ok(CreateOperatorRequest {
            definition: get_definition(r)?,
        })
    }
}
