//! Window operator administration on [`Admin`]: create, list, describe, pause, resume and delete
//! operator definitions (see the broker's `docs/operators.md`). Every broker holds the definitions
//! (they live in the cluster metadata), so these go to the bootstrap broker, which forwards changes
//! to the metadata leader. The broker checks a definition whole; a refusal is a
//! [`ClientError::Broker`] with `INVALID_OPERATOR` and a message naming the field and the rule.

use std::time::Duration;

use sluice_protocol::wire::{
    AlterOperatorRequest, CreateOperatorRequest, DeleteOperatorRequest, DescribeOperatorRequest,
    OperatorDefinition as WireDefinition, Request, Response,
};

use super::coordinator::body_error;
use super::Admin;
use crate::client::unexpected;
use crate::error::{ClientError, Result};

/// A window operator's definition. `window`, `time` and `value` are spelled as the CLI takes them
/// (`tumbling:10s`, `sliding:1m:10s`, `session:30s`; `record`, `processing`, `field:NAME`;
/// `number`, `field:NAME`) and checked by the broker, which answers them back in canonical form.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct OperatorDefinition {
    pub name: String,
    /// The topic of raw events it reads.
    pub source: String,
    /// The compacted topic it writes window results to (created compacted when missing).
    pub sink: String,
    pub window: String,
    pub time: String,
    pub value: String,
    /// `count`, `sum`, `min`, `max`, `avg`, `first`, `last`.
    pub aggregates: Vec<String>,
    pub out_of_orderness: Duration,
    pub allowed_lateness: Duration,
    /// Where too-late records go (`None`: they are only counted).
    pub late_topic: Option<String>,
    /// Where records whose time or value cannot be read go (`None`: only counted).
    pub dead_letter_topic: Option<String>,
    /// `None`: the watermark moves only with data.
    pub idle_timeout: Option<Duration>,
    /// The state it may hold per source partition (`None`: the broker's default, 256 MiB).
    pub max_state_bytes: Option<u64>,
}

/// An operator in [`Admin::list_operators`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OperatorListing {
    pub name: String,
    pub source: String,
    pub sink: String,
    pub window: String,
    pub paused: bool,
}

/// An operator as [`Admin::describe_operator`] shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OperatorDescription {
    /// In canonical form.
    pub definition: OperatorDefinition,
    pub paused: bool,
    /// When it was created, ms since the Unix epoch.
    pub created_ms: i64,
    pub partitions: Vec<OperatorPartition>,
}

/// One source partition of a described operator.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OperatorPartition {
    pub partition: u32,
    /// The source partition's leader (broker id), if known.
    pub leader: Option<u32>,
    /// The producer id the operator writes this partition's results with.
    pub producer_id: i64,
    /// What the answering broker's driver of this partition reports (`None`: it hosts no
    /// replica of the partition, or the operator is paused).
    pub run: Option<OperatorRun>,
}

/// One source partition's running operator, as the answering broker's driver reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OperatorRun {
    /// Reported by the partition leader's driver (a follower's trails it to the last mark).
    pub from_leader: bool,
    /// The next source offset the operator reads.
    pub position: u64,
    /// The source partition's high watermark; `high_watermark - position` is the lag in offsets.
    pub high_watermark: u64,
    /// How far the newest record read is behind the clock while records wait, in ms.
    pub lag_ms: i64,
    /// The partition's watermark in ms (`None`: no record read yet).
    pub watermark_ms: Option<i64>,
    pub keys: u64,
    pub windows: u64,
    pub state_bytes: u64,
    pub late: u64,
    pub bad: u64,
    /// Sink records written (results and tombstones).
    pub emitted: u64,
    /// 99th percentile from reading the record that closed or updated a window to the sink
    /// acknowledging its result (leader only).
    pub emit_p99: Option<Duration>,
    /// Why the operator stopped on this partition.
    pub failed: Option<String>,
}

fn ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

fn to_wire(d: &OperatorDefinition) -> WireDefinition {
    WireDefinition {
        name: d.name.clone(),
        source: d.source.clone(),
        sink: d.sink.clone(),
        window: d.window.clone(),
        time: d.time.clone(),
        value: d.value.clone(),
        aggregates: d.aggregates.clone(),
        out_of_orderness_ms: ms(d.out_of_orderness),
        allowed_lateness_ms: ms(d.allowed_lateness),
        late_topic: d.late_topic.clone().unwrap_or_default(),
        dead_letter_topic: d.dead_letter_topic.clone().unwrap_or_default(),
        idle_timeout_ms: d.idle_timeout.map_or(0, ms),
        max_state_bytes: d.max_state_bytes.unwrap_or(0),
    }
}

fn from_wire(d: WireDefinition) -> OperatorDefinition {
    let duration = |ms: i64| Duration::from_millis(u64::try_from(ms).unwrap_or(0));
    let some = |s: String| (!s.is_empty()).then_some(s);
    OperatorDefinition {
        name: d.name,
        source: d.source,
        sink: d.sink,
        window: d.window,
        time: d.time,
        value: d.value,
        aggregates: d.aggregates,
        out_of_orderness: duration(d.out_of_orderness_ms),
        allowed_lateness: duration(d.allowed_lateness_ms),
        late_topic: some(d.late_topic),
        dead_letter_topic: some(d.dead_letter_topic),
        idle_timeout: (d.idle_timeout_ms > 0).then(|| duration(d.idle_timeout_ms)),
        max_state_bytes: (d.max_state_bytes > 0).then_some(d.max_state_bytes),
    }
}

impl Admin {
    /// Defines an operator; its missing sink (compacted, as many partitions as the source), late
    /// and dead-letter topics are created with it. Returns once the broker sees it. A create
    /// retried after its first attempt reached the broker may answer `OPERATOR_ALREADY_EXISTS`.
    pub async fn create_operator(&self, definition: &OperatorDefinition) -> Result<()> {
        let request = Request::CreateOperator(CreateOperatorRequest {
            definition: to_wire(definition),
        });
        self.operator_change("create operator", &request).await?;
        for t in [Some(&definition.sink), definition.late_topic.as_ref()]
            .into_iter()
            .chain([definition.dead_letter_topic.as_ref()])
            .flatten()
        {
            self.client.invalidate_topic(t);
        }
        Ok(())
    }

    /// Every operator of the cluster, by name.
    pub async fn list_operators(&self) -> Result<Vec<OperatorListing>> {
        self.client
            .retrying("list operators", || async {
                let Response::ListOperators(r) =
                    self.client.request(&Request::ListOperators).await?
                else {
                    return Err(unexpected("answer to list operators"));
                };
                body_error(r.error, r.message)?;
                Ok(r.operators
                    .into_iter()
                    .map(|o| OperatorListing {
                        name: o.name,
                        source: o.source,
                        sink: o.sink,
                        window: o.window,
                        paused: o.paused,
                    })
                    .collect())
            })
            .await
    }

    /// One operator's definition, state and source partitions. An unknown name is
    /// [`ClientError::Broker`] with `OPERATOR_NOT_FOUND`.
    pub async fn describe_operator(&self, name: &str) -> Result<OperatorDescription> {
        let request = Request::DescribeOperator(DescribeOperatorRequest {
            name: name.to_string(),
        });
        let r = self
            .client
            .retrying("describe operator", || async {
                let Response::DescribeOperator(r) = self.client.request(&request).await? else {
                    return Err(unexpected("answer to describe operator"));
                };
                body_error(r.error, r.message.clone())?;
                Ok(r)
            })
            .await?;
        Ok(OperatorDescription {
            definition: from_wire(*r.definition),
            paused: r.paused,
            created_ms: r.created_ms,
            partitions: r
                .partitions
                .into_iter()
                .map(|p| OperatorPartition {
                    partition: p.partition,
                    leader: u32::try_from(p.leader).ok(),
                    producer_id: p.producer_id,
                    run: p.run.map(|r| OperatorRun {
                        from_leader: r.from_leader,
                        position: r.position,
                        high_watermark: r.high_watermark,
                        lag_ms: r.lag_ms,
                        watermark_ms: (r.watermark_ms != i64::MIN).then_some(r.watermark_ms),
                        keys: r.keys,
                        windows: r.windows,
                        state_bytes: r.state_bytes,
                        late: r.late,
                        bad: r.bad,
                        emitted: r.emitted,
                        emit_p99: u64::try_from(r.emit_p99_us).ok().map(Duration::from_micros),
                        failed: (!r.failed.is_empty()).then_some(r.failed),
                    }),
                })
                .collect(),
        })
    }

    /// Pauses an operator (it keeps its definition and topics).
    pub async fn pause_operator(&self, name: &str) -> Result<()> {
        self.set_paused(name, true).await
    }

    /// Resumes a paused operator.
    pub async fn resume_operator(&self, name: &str) -> Result<()> {
        self.set_paused(name, false).await
    }

    async fn set_paused(&self, name: &str, paused: bool) -> Result<()> {
        let request = Request::AlterOperator(AlterOperatorRequest {
            name: name.to_string(),
            paused,
        });
        self.operator_change("alter operator", &request).await
    }

    /// Deletes an operator's definition; its sink, late and dead-letter topics stay.
    pub async fn delete_operator(&self, name: &str) -> Result<()> {
        let request = Request::DeleteOperator(DeleteOperatorRequest {
            name: name.to_string(),
        });
        self.operator_change("delete operator", &request).await
    }

    /// Sends a change answered with an `AdminResult`, retrying retriable errors.
    async fn operator_change(&self, what: &'static str, request: &Request) -> Result<()> {
        self.client
            .retrying(what, || async {
                match self.client.request(request).await? {
                    Response::CreateOperator(r)
                    | Response::AlterOperator(r)
                    | Response::DeleteOperator(r) => {
                        if r.error.is_ok() {
                            Ok(())
                        } else {
                            Err(ClientError::broker(r.error, r.message))
                        }
                    }
                    _ => Err(unexpected("answer to an operator change")),
                }
            })
            .await
    }
}
