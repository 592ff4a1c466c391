//! `sluice operator create|list|describe|pause|resume|delete`: window operator definitions
//! through [`sluice_client::Admin`], with their clap definitions. Durations (`500ms`, `10s`, `5m`)
//! are parsed here, so a bad one is a usage error (exit code 2); the definition itself is checked
//! by the broker, whose refusal is printed as `sluice: invalid operator 'NAME': <reason>` (exit
//! code 1). `describe --format json` prints one JSON document whose keys are a stable interface
//! for scripts (see [`JsonOperator`]).

use std::time::Duration;

use clap::{Args, Subcommand};
use serde::Serialize;
use sluice_client::{
    Admin, ClientError, ErrorCode, OperatorDefinition, OperatorDescription, OperatorRun,
};

use super::group::OutputFormat;
use super::{json, table, write_stdout, BrokerOpt, CliError, Ctx};

/// `sluice operator ...`.
#[derive(Debug, Args)]
pub struct OperatorArgs {
    #[command(flatten)]
    pub conn: BrokerOpt,
    #[command(subcommand)]
    pub command: OperatorCommand,
}

// Parsed once per process: the size of the arguments does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Subcommand)]
pub enum OperatorCommand {
    /// Define a window operator: per-key window aggregates of a source topic into a compacted
    /// sink topic (created compacted, with the source's partition count, when missing).
    Create(CreateArgs),
    /// List the operators: name, source, sink, window and whether paused.
    List {
        /// Output format.
        #[arg(long, value_enum, default_value_t = OutputFormat::Table)]
        format: OutputFormat,
    },
    /// Show an operator's definition, state, creation time and source partitions.
    Describe {
        /// Operator to describe.
        name: String,
        /// Output format.
        #[arg(long, value_enum, default_value_t = OutputFormat::Table)]
        format: OutputFormat,
    },
    /// Pause an operator.
    Pause {
        /// Operator to pause.
        name: String,
    },
    /// Resume a paused operator.
    Resume {
        /// Operator to resume.
        name: String,
    },
    /// Delete an operator's definition (its sink, late and dead-letter topics are kept).
    Delete {
        /// Operator to delete.
        name: String,
    },
}

/// `sluice operator create`.
#[derive(Debug, Args)]
pub struct CreateArgs {
    /// Name of the operator (1 to 249 ASCII letters, digits, '.', '_' and '-').
    pub name: String,
    /// The topic of raw events to read.
    #[arg(long, value_name = "TOPIC")]
    pub source: String,
    /// The compacted topic to write window results to.
    #[arg(long, value_name = "TOPIC")]
    pub sink: String,
    /// tumbling:SIZE, sliding:SIZE:SLIDE or session:GAP (durations like 500ms, 10s, 5m).
    #[arg(long, value_name = "WINDOW")]
    pub window: String,
    /// Event time: record (the record's timestamp), processing, or field:NAME (ms in the JSON
    /// value).
    #[arg(long, value_name = "SOURCE")]
    pub time: String,
    /// The value aggregated: number (the whole value) or field:NAME (of the JSON value).
    #[arg(long, value_name = "SOURCE")]
    pub value: String,
    /// Aggregates, comma-separated: count, sum, min, max, avg, first, last.
    #[arg(long, value_name = "LIST", value_delimiter = ',', required = true)]
    pub aggregate: Vec<String>,
    /// How far event time may go back before records count as late.
    #[arg(long, value_name = "DUR", value_parser = parse_duration)]
    pub out_of_orderness: Option<Duration>,
    /// How long a fired window still accepts late records (each rewrites its result).
    #[arg(long, value_name = "DUR", value_parser = parse_duration)]
    pub allowed_lateness: Option<Duration>,
    /// Write too-late records to this topic (created if missing).
    #[arg(long, value_name = "TOPIC")]
    pub late_topic: Option<String>,
    /// Write records whose time or value cannot be read to this topic (created if missing).
    #[arg(long, value_name = "TOPIC")]
    pub dead_letter_topic: Option<String>,
    /// Advance the watermark of a partition without records for this long (leave it out for
    /// none; 0 is refused).
    #[arg(long, value_name = "DUR", value_parser = parse_positive_duration)]
    pub idle_timeout: Option<Duration>,
    /// State limit per source partition (default 256 MiB); past it the operator fails.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub max_state_bytes: Option<u64>,
}

/// A duration as the window spec spells it (`500ms`, `10s`, `5m`, `2h`, `1d`).
fn parse_duration(s: &str) -> Result<Duration, String> {
    sluice_window::spec::parse_duration(s)
        .map(|ms| Duration::from_millis(ms.unsigned_abs()))
        .map_err(|e| e.to_string())
}

/// A duration that must be positive (a zero one would mean "none" on the wire, silently).
fn parse_positive_duration(s: &str) -> Result<Duration, String> {
    match parse_duration(s)? {
        d if d.is_zero() => Err("must be positive (leave the option out for none)".into()),
        d => Ok(d),
    }
}

impl CreateArgs {
    fn definition(self) -> OperatorDefinition {
        OperatorDefinition {
            name: self.name,
            source: self.source,
            sink: self.sink,
            window: self.window,
            time: self.time,
            value: self.value,
            aggregates: self.aggregate,
            out_of_orderness: self.out_of_orderness.unwrap_or_default(),
            allowed_lateness: self.allowed_lateness.unwrap_or_default(),
            late_topic: self.late_topic,
            dead_letter_topic: self.dead_letter_topic,
            idle_timeout: self.idle_timeout,
            max_state_bytes: self.max_state_bytes,
        }
    }
}

/// A message for a failure about operator `name`.
fn err(broker: &str, name: &str, e: ClientError) -> CliError {
    let detail = |what: String, message: &str| {
        if message.is_empty() {
            what
        } else {
            format!("{what}: {message}")
        }
    };
    match &e {
        ClientError::Broker { code, message } => match *code {
            ErrorCode::OPERATOR_NOT_FOUND => {
                CliError::new(format!("operator '{name}' does not exist"))
            }
            ErrorCode::OPERATOR_ALREADY_EXISTS => {
                CliError::new(format!("operator '{name}' already exists"))
            }
            ErrorCode::INVALID_OPERATOR => {
                CliError::new(detail(format!("invalid operator '{name}'"), message))
            }
            _ => Ctx::new(broker).err(e),
        },
        _ => Ctx::new(broker).err(e),
    }
}

pub async fn run(args: OperatorArgs) -> Result<(), CliError> {
    let broker = args.conn.broker.as_str();
    let admin = Admin::new(broker).map_err(|e| Ctx::new(broker).err(e))?;
    match args.command {
        OperatorCommand::Create(c) => {
            let name = c.name.clone();
            let def = c.definition();
            admin
                .create_operator(&def)
                .await
                .map_err(|e| err(broker, &name, e))?;
            write_stdout(format!("created operator '{name}'\n").as_bytes())
        }
        OperatorCommand::List { format } => {
            let ops = admin
                .list_operators()
                .await
                .map_err(|e| Ctx::new(broker).err(e))?;
            let out = match format {
                OutputFormat::Json => json(
                    &ops.iter()
                        .map(|o| JsonListing {
                            name: &o.name,
                            source: &o.source,
                            sink: &o.sink,
                            window: &o.window,
                            paused: o.paused,
                        })
                        .collect::<Vec<_>>(),
                )?,
                OutputFormat::Table => {
                    let mut rows = vec![["NAME", "SOURCE", "SINK", "WINDOW", "STATE"]
                        .map(String::from)
                        .to_vec()];
                    rows.extend(ops.iter().map(|o| {
                        vec![
                            o.name.clone(),
                            o.source.clone(),
                            o.sink.clone(),
                            o.window.clone(),
                            state(o.paused).to_string(),
                        ]
                    }));
                    table(&rows, "")
                }
            };
            write_stdout(out.as_bytes())
        }
        OperatorCommand::Describe { name, format } => {
            let d = admin
                .describe_operator(&name)
                .await
                .map_err(|e| err(broker, &name, e))?;
            let out = match format {
                OutputFormat::Json => json(&JsonOperator::from(&d))?,
                OutputFormat::Table => render_describe(&d),
            };
            write_stdout(out.as_bytes())
        }
        OperatorCommand::Pause { name } => {
            admin
                .pause_operator(&name)
                .await
                .map_err(|e| err(broker, &name, e))?;
            write_stdout(format!("paused operator '{name}'\n").as_bytes())
        }
        OperatorCommand::Resume { name } => {
            admin
                .resume_operator(&name)
                .await
                .map_err(|e| err(broker, &name, e))?;
            write_stdout(format!("resumed operator '{name}'\n").as_bytes())
        }
        OperatorCommand::Delete { name } => {
            admin
                .delete_operator(&name)
                .await
                .map_err(|e| err(broker, &name, e))?;
            write_stdout(format!("deleted operator '{name}' (its topics are kept)\n").as_bytes())
        }
    }
}

fn state(paused: bool) -> &'static str {
    if paused {
        "paused"
    } else {
        "active"
    }
}

#[derive(Debug, Serialize)]
struct JsonListing<'a> {
    name: &'a str,
    source: &'a str,
    sink: &'a str,
    window: &'a str,
    paused: bool,
}

/// `sluice operator describe --format json`. Every key is always present (`null`: none).
#[derive(Debug, Serialize)]
struct JsonOperator<'a> {
    name: &'a str,
    source: &'a str,
    sink: &'a str,
    window: &'a str,
    time: &'a str,
    value: &'a str,
    aggregates: &'a [String],
    out_of_orderness_ms: u128,
    allowed_lateness_ms: u128,
    late_topic: Option<&'a str>,
    dead_letter_topic: Option<&'a str>,
    idle_timeout_ms: Option<u128>,
    max_state_bytes: Option<u64>,
    paused: bool,
    created_ms: i64,
    partitions: Vec<JsonPartition>,
}

#[derive(Debug, Serialize)]
struct JsonPartition {
    partition: u32,
    leader: Option<u32>,
    producer_id: i64,
    /// `null` when the answering broker runs no driver of the partition.
    run: Option<JsonRun>,
}

/// One partition's running operator (`OperatorRun`).
#[derive(Debug, Serialize)]
struct JsonRun {
    from_leader: bool,
    position: u64,
    high_watermark: u64,
    lag_records: u64,
    lag_ms: i64,
    watermark_ms: Option<i64>,
    keys: u64,
    windows: u64,
    state_bytes: u64,
    late: u64,
    bad: u64,
    emitted: u64,
    emit_p99_ms: Option<f64>,
    failed: Option<String>,
}

impl From<&OperatorRun> for JsonRun {
    fn from(r: &OperatorRun) -> JsonRun {
        JsonRun {
            from_leader: r.from_leader,
            position: r.position,
            high_watermark: r.high_watermark,
            lag_records: r.high_watermark.saturating_sub(r.position),
            lag_ms: r.lag_ms,
            watermark_ms: r.watermark_ms,
            keys: r.keys,
            windows: r.windows,
            state_bytes: r.state_bytes,
            late: r.late,
            bad: r.bad,
            emitted: r.emitted,
            emit_p99_ms: r.emit_p99.map(|d| d.as_secs_f64() * 1000.0),
            failed: r.failed.clone(),
        }
    }
}

impl<'a> From<&'a OperatorDescription> for JsonOperator<'a> {
    fn from(d: &'a OperatorDescription) -> JsonOperator<'a> {
        let def = &d.definition;
        JsonOperator {
            name: &def.name,
            source: &def.source,
            sink: &def.sink,
            window: &def.window,
            time: &def.time,
            value: &def.value,
            aggregates: &def.aggregates,
            out_of_orderness_ms: def.out_of_orderness.as_millis(),
            allowed_lateness_ms: def.allowed_lateness.as_millis(),
            late_topic: def.late_topic.as_deref(),
            dead_letter_topic: def.dead_letter_topic.as_deref(),
            idle_timeout_ms: def.idle_timeout.map(|d| d.as_millis()),
            max_state_bytes: def.max_state_bytes,
            paused: d.paused,
            created_ms: d.created_ms,
            partitions: d
                .partitions
                .iter()
                .map(|p| JsonPartition {
                    partition: p.partition,
                    leader: p.leader,
                    producer_id: p.producer_id,
                    run: p.run.as_ref().map(JsonRun::from),
                })
                .collect(),
        }
    }
}

/// The table form of `sluice operator describe`.
fn render_describe(d: &OperatorDescription) -> String {
    let def = &d.definition;
    let none = || "-".to_string();
    let ms = |d: Duration| format!("{} ms", d.as_millis());
    let rows: Vec<Vec<String>> = vec![
        vec!["name".into(), def.name.clone()],
        vec!["state".into(), state(d.paused).into()],
        vec!["source".into(), def.source.clone()],
        vec!["sink".into(), def.sink.clone()],
        vec!["window".into(), def.window.clone()],
        vec!["time".into(), def.time.clone()],
        vec!["value".into(), def.value.clone()],
        vec!["aggregates".into(), def.aggregates.join(",")],
        vec!["out-of-orderness".into(), ms(def.out_of_orderness)],
        vec!["allowed lateness".into(), ms(def.allowed_lateness)],
        vec![
            "late topic".into(),
            def.late_topic.clone().unwrap_or_else(none),
        ],
        vec![
            "dead-letter topic".into(),
            def.dead_letter_topic.clone().unwrap_or_else(none),
        ],
        vec![
            "idle timeout".into(),
            def.idle_timeout.map_or_else(none, ms),
        ],
        vec![
            "max state bytes".into(),
            def.max_state_bytes.map_or_else(none, |n| n.to_string()),
        ],
        vec!["created ms".into(), d.created_ms.to_string()],
    ];
    let mut out = table(&rows, "");
    out.push('\n');
    let mut parts = vec![[
        "PARTITION",
        "LEADER",
        "PRODUCER ID",
        "POSITION",
        "LAG",
        "WATERMARK",
        "KEYS",
        "WINDOWS",
        "STATE BYTES",
        "LATE",
        "BAD",
        "EMITTED",
        "EMIT P99",
        "FAILED",
    ]
    .map(String::from)
    .to_vec()];
    parts.extend(d.partitions.iter().map(|p| {
        let mut row = vec![
            p.partition.to_string(),
            p.leader.map_or_else(none, |l| l.to_string()),
            p.producer_id.to_string(),
        ];
        match &p.run {
            Some(r) => row.extend([
                r.position.to_string(),
                r.high_watermark.saturating_sub(r.position).to_string(),
                r.watermark_ms.map_or_else(none, |w| w.to_string()),
                r.keys.to_string(),
                r.windows.to_string(),
                r.state_bytes.to_string(),
                r.late.to_string(),
                r.bad.to_string(),
                r.emitted.to_string(),
                r.emit_p99
                    .map_or_else(none, |d| format!("{:.1} ms", d.as_secs_f64() * 1000.0)),
                r.failed.clone().unwrap_or_else(none),
            ]),
            None => row.extend(std::iter::repeat_n(none(), 11)),
        }
        row
    }));
    out.push_str(&table(&parts, ""));
    out
}
