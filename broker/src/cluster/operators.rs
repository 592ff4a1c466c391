//! Window operator definitions in the cluster state: what an operator is (name, topics, its
//! `sluice-window` spec as the CLI spells it), the checks a definition must pass, and what
//! creating, pausing and deleting one do to the [`ClusterState`].
//!
//! Creating an operator is one command: it checks the whole definition against the state, then
//! creates the missing sink (compacted, as many partitions as the source), late and dead-letter
//! topics and allocates one producer id per source partition — all at once or, refused, nothing.
//! Pure and deterministic like the rest of the state (the creation time comes in the command).

use serde::{Deserialize, Serialize};
use sluice_protocol::wire::ErrorCode;
use sluice_window::spec::{
    parse_aggregates, parse_time, parse_value, parse_window, Spec, WindowKind,
    DEFAULT_MAX_STATE_BYTES,
};

use super::state::{ClusterState, Command};
use crate::error::ServiceError;
use crate::replica::settings::{is_internal, TopicSettings};

/// The longest operator name.
pub const MAX_OPERATOR_NAME: usize = 249;

/// An operator's definition. Window, time and value are the CLI's strings; once accepted they are
/// kept in canonical form ([`OperatorDef::canonical`]).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct OperatorDef {
    pub name: String,
    pub source: String,
    pub sink: String,
    /// `tumbling:SIZE`, `sliding:SIZE:SLIDE` or `session:GAP`.
    pub window: String,
    /// `record`, `processing` or `field:NAME`.
    pub time: String,
    /// `number` or `field:NAME`.
    pub value: String,
    pub aggregates: Vec<String>,
    pub out_of_orderness_ms: i64,
    pub allowed_lateness_ms: i64,
    /// `None`: late records are only counted.
    pub late_topic: Option<String>,
    /// `None`: bad records are only counted.
    pub dead_letter_topic: Option<String>,
    /// `None`: the watermark moves only with data.
    pub idle_timeout_ms: Option<i64>,
    /// 0 on the wire means [`DEFAULT_MAX_STATE_BYTES`]; kept resolved here.
    pub max_state_bytes: u64,
}

/// One operator in the cluster state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OperatorRecord {
    pub def: OperatorDef,
    pub paused: bool,
    /// When it was created (ms since the epoch, the proposer's clock).
    pub created_ms: i64,
    /// The id of the source topic it was defined on (a re-created source is another topic).
    pub source_id: u32,
    /// One producer id per source partition, by partition: the sink is written idempotently
    /// with them.
    pub producer_ids: Vec<i64>,
}

fn invalid(message: impl Into<String>) -> ServiceError {
    ServiceError::new(ErrorCode::INVALID_OPERATOR, message)
}

fn not_found(name: &str) -> ServiceError {
    ServiceError::new(
        ErrorCode::OPERATOR_NOT_FOUND,
        format!("no operator named {name:?}"),
    )
}

/// 1 to [`MAX_OPERATOR_NAME`] characters of `[A-Za-z0-9._-]`, not `.` or `..`.
pub fn validate_operator_name(name: &str) -> Result<(), ServiceError> {
    if name.is_empty() || name.len() > MAX_OPERATOR_NAME {
        return Err(invalid(format!(
            "an operator name has 1 to {MAX_OPERATOR_NAME} characters"
        )));
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-')
    {
        return Err(invalid(format!(
            "operator name {name:?} may only contain ASCII letters, digits, '.', '_' and '-'"
        )));
    }
    // As for topics: names that read as paths to the current or parent directory are refused.
    if name == "." || name == ".." {
        return Err(invalid(format!("{name:?} is not an operator name")));
    }
    Ok(())
}

/// A duration in the largest unit that states it exactly (`10s`, `5m`, `1500ms`).
pub fn format_duration(ms: i64) -> String {
    for (unit, scale) in [
        ("d", 86_400_000),
        ("h", 3_600_000),
        ("m", 60_000),
        ("s", 1000),
    ] {
        if ms != 0 && ms % scale == 0 {
            return format!("{}{unit}", ms / scale);
        }
    }
    format!("{ms}ms")
}

fn format_window(w: WindowKind) -> String {
    match w {
        WindowKind::Tumbling { size_ms } => format!("tumbling:{}", format_duration(size_ms)),
        WindowKind::Sliding { size_ms, slide_ms } => format!(
            "sliding:{}:{}",
            format_duration(size_ms),
            format_duration(slide_ms)
        ),
        WindowKind::Session { gap_ms } => format!("session:{}", format_duration(gap_ms)),
    }
}

impl OperatorDef {
    /// The spec the definition states, or why it states none (a message naming the field).
    pub fn spec(&self) -> Result<Spec, ServiceError> {
        let field = |what: &str, e: sluice_window::spec::SpecError| invalid(format!("{what}: {e}"));
        let window = parse_window(&self.window).map_err(|e| field("window", e))?;
        let time = parse_time(&self.time).map_err(|e| field("time", e))?;
        let value = parse_value(&self.value).map_err(|e| field("value", e))?;
        if self.aggregates.is_empty() {
            return Err(invalid("aggregate: at least one aggregate is needed"));
        }
        let aggregates =
            parse_aggregates(&self.aggregates.join(",")).map_err(|e| field("aggregate", e))?;
        let spec = Spec {
            window,
            time,
            value,
            aggregates,
            out_of_orderness_ms: self.out_of_orderness_ms,
            allowed_lateness_ms: self.allowed_lateness_ms,
            idle_timeout_ms: self.idle_timeout_ms,
            max_state_bytes: match self.max_state_bytes {
                0 => DEFAULT_MAX_STATE_BYTES,
                n => n,
            },
        };
        spec.check().map_err(|e| invalid(e.0))?;
        Ok(spec)
    }

    /// This definition with its spec in canonical spelling (durations in their largest exact
    /// unit, aggregates once each in `Aggregate::ALL`'s order, the state limit resolved).
    /// Refused like [`Self::spec`].
    pub fn canonical(&self) -> Result<OperatorDef, ServiceError> {
        let spec = self.spec()?;
        let blank = |t: &Option<String>| t.clone().filter(|t| !t.is_empty());
        Ok(OperatorDef {
            window: format_window(spec.window),
            aggregates: spec
                .aggregates
                .iter()
                .map(|a| a.name().to_string())
                .collect(),
            max_state_bytes: spec.max_state_bytes,
            late_topic: blank(&self.late_topic),
            dead_letter_topic: blank(&self.dead_letter_topic),
            ..self.clone()
        })
    }

    /// The topics the operator writes that do not exist yet, with the configs each is created
    /// with: the sink compacted, the late and dead-letter topics with the defaults.
    fn missing_outputs(&self, state: &ClusterState) -> Vec<(String, Vec<(String, String)>)> {
        let mut out: Vec<(String, Vec<(String, String)>)> = Vec::new();
        let compact = vec![("cleanup.policy".to_string(), "compact".to_string())];
        let outputs = [
            Some(&self.sink),
            self.late_topic.as_ref(),
            self.dead_letter_topic.as_ref(),
        ];
        for (i, topic) in outputs.into_iter().enumerate() {
            let Some(topic) = topic else { continue };
            if state.topics.contains_key(topic) || out.iter().any(|(t, _)| t == topic) {
                continue;
            }
            out.push((
                topic.clone(),
                if i == 0 { compact.clone() } else { Vec::new() },
            ));
        }
        out
    }
}

impl ClusterState {
    /// Why `CreateOperator` of `def` cannot apply to this state, if it cannot.
    pub(super) fn check_create_operator(
        &self,
        def: &OperatorDef,
        brokers: &[u32],
    ) -> Result<(), ServiceError> {
        validate_operator_name(&def.name)?;
        if self.operators.contains_key(&def.name) {
            return Err(ServiceError::new(
                ErrorCode::OPERATOR_ALREADY_EXISTS,
                format!("operator {:?} already exists", def.name),
            ));
        }
        def.spec()?;
        if def.source.is_empty() {
            return Err(invalid("a source topic is needed"));
        }
        if is_internal(&def.source) {
            return Err(invalid(format!(
                "source topic {:?} is internal (the broker's own)",
                def.source
            )));
        }
        let Some(source) = self.topics.get(&def.source) else {
            return Err(invalid(format!(
                "source topic {:?} does not exist",
                def.source
            )));
        };
        if def.sink.is_empty() {
            return Err(invalid("a sink topic is needed"));
        }
        for (what, topic) in [
            ("sink", Some(&def.sink)),
            ("late", def.late_topic.as_ref()),
            ("dead-letter", def.dead_letter_topic.as_ref()),
        ] {
            let Some(topic) = topic else { continue };
            if *topic == def.source {
                return Err(invalid(format!(
                    "the {what} topic must differ from the source topic {topic:?}"
                )));
            }
            if what != "sink" && *topic == def.sink {
                return Err(invalid(format!(
                    "the {what} topic must differ from the sink topic {topic:?}"
                )));
            }
            if is_internal(topic) {
                return Err(invalid(format!(
                    "{what} topic {topic:?} is internal (the broker's own)"
                )));
            }
        }
        if let Some(sink) = self.topics.get(&def.sink) {
            let compact = TopicSettings::from_pairs(&sink.configs).is_ok_and(|s| s.compact);
            if !compact {
                return Err(invalid(format!(
                    "sink topic {:?} exists and is not compacted (cleanup.policy=compact)",
                    def.sink
                )));
            }
        }
        let (partitions, rf) = source_shape(source, brokers);
        for (topic, configs) in def.missing_outputs(self) {
            let create = Command::CreateTopic {
                name: topic.clone(),
                partitions,
                replication_factor: rf,
                configs,
            };
            self.check(&create, brokers)
                .map_err(|e| invalid(format!("cannot create topic {topic:?}: {}", e.message)))?;
        }
        Ok(())
    }

    /// Applies a checked `CreateOperator`: creates the missing topics, allocates the producer ids
    /// and records the operator.
    pub(super) fn apply_create_operator(
        &mut self,
        def: &OperatorDef,
        created_ms: i64,
        brokers: &[u32],
    ) -> Result<(), ServiceError> {
        let Some(source) = self.topics.get(&def.source) else {
            return Err(invalid(format!(
                "source topic {:?} does not exist",
                def.source
            )));
        };
        let source_id = source.id;
        let (partitions, rf) = source_shape(source, brokers);
        for (topic, configs) in def.missing_outputs(self) {
            self.apply(
                &Command::CreateTopic {
                    name: topic,
                    partitions,
                    replication_factor: rf,
                    configs,
                },
                brokers,
            )?;
        }
        let first = self.next_producer_id;
        self.next_producer_id += i64::from(partitions);
        let record = OperatorRecord {
            // Stored canonical; `check` parsed it, so this cannot fail, but keep it total.
            def: def.canonical().unwrap_or_else(|_| def.clone()),
            paused: false,
            created_ms,
            source_id,
            producer_ids: (first..self.next_producer_id).collect(),
        };
        self.operators.insert(def.name.clone(), record);
        Ok(())
    }

    /// Why `AlterOperator`/`DeleteOperator` of `name` cannot apply, if it cannot.
    pub(super) fn check_operator_exists(&self, name: &str) -> Result<(), ServiceError> {
        if self.operators.contains_key(name) {
            Ok(())
        } else {
            Err(not_found(name))
        }
    }
}

/// The partition count and replication factor of the topics an operator creates: the source's
/// (its first partition's replica count, at most the brokers there are, at least 1).
fn source_shape(source: &super::state::TopicRecord, brokers: &[u32]) -> (u32, u16) {
    let partitions = source.replicas.len() as u32;
    let rf = source
        .replicas
        .first()
        .map_or(1, Vec::len)
        .min(brokers.len())
        .max(1);
    (partitions, u16::try_from(rf).unwrap_or(u16::MAX))
}

#[cfg(test)]
#[path = "operators_tests.rs"]
mod tests;
