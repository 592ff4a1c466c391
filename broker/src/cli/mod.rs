//! The command-line client commands of the `sluice` binary (`topic`, `produce`, `consume`,
//! `cluster`, `group`, `operator`): their clap definitions (`topic`'s, `group`'s and `operator`'s in
//! their own modules), the `--broker` option they share, the tokio runtime they run on, and the
//! translation of client failures into one-line messages for users. Every command returns a [`CliError`], which
//! [`run`] prints to stderr as `sluice: <message>` with exit code 1 (clap itself rejects bad usage
//! with exit code 2). The commands themselves live in [`topic`], [`produce`], [`consume`],
//! [`cluster`], [`group`] and [`operator`], on top of `sluice-client`.

pub mod cluster;
pub mod consume;
pub mod consume_group;
pub mod group;
pub mod operator;
pub mod produce;
pub mod topic;

pub use cluster::ClusterArgs;

use std::fmt;
use std::future::Future;
use std::io::Write;
use std::path::PathBuf;

use clap::{ArgGroup, Args, ValueEnum};
use sluice_broker::config::DEFAULT_LISTEN;
use sluice_client::{Acks, ClientError, Compression, ErrorCode};

/// The broker address every client command takes.
#[derive(Debug, Clone, Args)]
pub struct BrokerOpt {
    /// Broker to talk to, HOST:PORT.
    #[arg(
        long,
        global = true,
        env = "SLUICE_BROKER",
        value_name = "HOST:PORT",
        default_value = DEFAULT_LISTEN,
        value_parser = parse_broker
    )]
    pub broker: String,
}

/// `sluice produce`.
#[derive(Debug, Args)]
pub struct ProduceArgs {
    #[command(flatten)]
    pub conn: BrokerOpt,
    /// Topic to produce to.
    pub topic: String,
    /// Read records from this file instead of stdin.
    #[arg(long, value_name = "PATH")]
    pub file: Option<PathBuf>,
    /// Split each line into key and value at the first SEP (a line without SEP is an error).
    #[arg(long, value_name = "SEP", value_parser = parse_separator)]
    pub key_separator: Option<String>,
    /// Send every record to this partition (default: by key hash, or spread when unkeyed).
    #[arg(long, value_name = "N")]
    pub partition: Option<u32>,
    /// What each acknowledgement waits for.
    #[arg(long, value_enum, default_value_t = AcksArg::All)]
    pub acks: AcksArg,
    /// Compression codec of the batches.
    #[arg(long, value_enum, default_value_t = CompressionArg::None)]
    pub compression: CompressionArg,
    /// Idempotent writes: a record retried after a lost answer is stored once.
    #[arg(long, value_enum, default_value_t = OnOff::On)]
    pub idempotence: OnOff,
    /// A stable producer name: a restarted producer with this name fences the earlier one.
    #[arg(long)]
    pub producer_name: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OnOff {
    On,
    Off,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum AcksArg {
    /// Do not wait for any answer.
    None,
    /// Wait until the leader has appended the records.
    Leader,
    /// Wait until the records are committed (on one broker: flushed to disk).
    All,
}

impl From<AcksArg> for Acks {
    fn from(a: AcksArg) -> Acks {
        match a {
            AcksArg::None => Acks::None,
            AcksArg::Leader => Acks::Leader,
            AcksArg::All => Acks::All,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum CompressionArg {
    /// Uncompressed batches.
    None,
    /// LZ4: fast, moderate ratio.
    Lz4,
    /// Zstandard: slower, better ratio.
    Zstd,
}

impl From<CompressionArg> for Compression {
    fn from(c: CompressionArg) -> Compression {
        match c {
            CompressionArg::None => Compression::None,
            CompressionArg::Lz4 => Compression::Lz4,
            CompressionArg::Zstd => Compression::Zstd,
        }
    }
}

/// `sluice consume`.
#[derive(Debug, Args)]
#[command(group(ArgGroup::new("start").args(["from_beginning", "offset", "timestamp"]).multiple(false)))]
pub struct ConsumeArgs {
    #[command(flatten)]
    pub conn: BrokerOpt,
    /// Topic to read.
    pub topic: String,
    /// Start at the first retained record of each partition (the default).
    #[arg(long)]
    pub from_beginning: bool,
    /// Start at this offset in every assigned partition (usually with --partition).
    #[arg(long, value_name = "N")]
    pub offset: Option<u64>,
    /// Start at the first record with a timestamp at or after MS (milliseconds since the Unix
    /// epoch).
    #[arg(long, value_name = "MS", value_parser = clap::value_parser!(i64).range(0..))]
    pub timestamp: Option<i64>,
    /// Read only this partition (default: every partition of the topic).
    #[arg(long, value_name = "N")]
    pub partition: Option<u32>,
    /// Stop after N records.
    #[arg(short = 'n', long, value_name = "N")]
    pub count: Option<u64>,
    /// Keep waiting for new records (without it, stop at the end seen at start).
    #[arg(long)]
    pub follow: bool,
    /// Output format, one record per line.
    #[arg(long, value_enum, default_value_t = Format::Value)]
    pub format: Format,
    /// Membership of a consumer group (`--group` and its settings).
    #[command(flatten)]
    pub group: consume_group::GroupOpts,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// The value as UTF-8 (invalid bytes replaced).
    Value,
    /// The key, a tab, then the value.
    KeyValue,
    /// One JSON object: topic, partition, offset, timestamp, key, value, headers.
    Json,
}

/// Accepts `HOST:PORT` with a non-empty host and a non-zero port.
fn parse_broker(s: &str) -> Result<String, String> {
    let bad = || format!("expected HOST:PORT, got {s:?}");
    let (host, port) = s.rsplit_once(':').ok_or_else(bad)?;
    if host.is_empty() {
        return Err(bad());
    }
    match port.parse::<u16>() {
        Ok(p) if p != 0 => Ok(s.to_string()),
        _ => Err(bad()),
    }
}

/// Accepts `KEY=VALUE` with a non-empty key.
fn parse_config(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
        _ => Err(format!("expected KEY=VALUE, got {s:?}")),
    }
}

fn parse_separator(s: &str) -> Result<String, String> {
    if s.is_empty() {
        Err("the key separator cannot be empty".to_string())
    } else {
        Ok(s.to_string())
    }
}

/// A failure to report to the user.
#[derive(Debug)]
pub enum CliError {
    /// Printed as `sluice: <message>`; exit code 1.
    Message(String),
    /// Stdout was closed by the reader (`sluice consume ... | head`): stop quietly, exit code 0.
    BrokenPipe,
}

impl CliError {
    pub fn new(message: impl Into<String>) -> CliError {
        CliError::Message(message.into())
    }

    /// Writing to stdout failed.
    pub fn stdout(e: std::io::Error) -> CliError {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            CliError::BrokenPipe
        } else {
            CliError::new(format!("cannot write to stdout: {e}"))
        }
    }
}

impl fmt::Display for CliError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CliError::Message(m) => f.write_str(m),
            CliError::BrokenPipe => f.write_str("stdout closed"),
        }
    }
}

/// What a command was doing when a client call failed, to name it in the message.
#[derive(Debug, Clone, Copy)]
pub struct Ctx<'a> {
    pub broker: &'a str,
    pub topic: Option<&'a str>,
    pub group: Option<&'a str>,
}

impl<'a> Ctx<'a> {
    pub fn new(broker: &'a str) -> Self {
        Ctx {
            broker,
            topic: None,
            group: None,
        }
    }

    pub fn topic(broker: &'a str, topic: &'a str) -> Self {
        Ctx {
            broker,
            topic: Some(topic),
            group: None,
        }
    }

    pub fn group(broker: &'a str, group: &'a str) -> Self {
        Ctx {
            broker,
            topic: None,
            group: Some(group),
        }
    }

    /// This context, also naming `topic`.
    pub fn with_topic(self, topic: &'a str) -> Self {
        Ctx {
            topic: Some(topic),
            ..self
        }
    }

    /// A message for the user about `e`.
    pub fn err(&self, e: ClientError) -> CliError {
        CliError::new(self.describe(&e))
    }

    fn describe(&self, e: &ClientError) -> String {
        use std::io::ErrorKind as K;
        match e {
            // Failures of an established connection; any other I/O error comes from connecting
            // (refused, unreachable, name lookup, ...).
            ClientError::Io { addr, source } => match source.kind() {
                K::ConnectionReset | K::ConnectionAborted | K::BrokenPipe | K::UnexpectedEof => {
                    format!("lost connection to broker at {addr}: {source}")
                }
                _ => format!("cannot connect to broker at {addr}: {source}"),
            },
            ClientError::Connection { addr, reason } => {
                format!("lost connection to broker at {addr}: {reason}")
            }
            ClientError::Timeout(d) => format!(
                "no answer from broker at {} within {} s",
                self.broker,
                d.as_secs_f64()
            ),
            ClientError::Broker { code, message } => self.describe_code(*code, message),
            // Already a sentence about the user's own input.
            ClientError::InvalidArgument(m) => m.clone(),
            other => other.to_string(),
        }
    }

    fn describe_code(&self, code: ErrorCode, message: &str) -> String {
        let detail = |what: &str| {
            if message.is_empty() {
                what.to_string()
            } else {
                format!("{what}: {message}")
            }
        };
        match (code, self.topic) {
            (ErrorCode::UNKNOWN_TOPIC_OR_PARTITION, Some(t)) => {
                format!("topic '{t}' does not exist")
            }
            (ErrorCode::TOPIC_ALREADY_EXISTS, Some(t)) => format!("topic '{t}' already exists"),
            (ErrorCode::INVALID_TOPIC, Some(t)) => detail(&format!("invalid topic name '{t}'")),
            (ErrorCode::INVALID_CONFIG, _) => detail("invalid topic config"),
            (ErrorCode::INVALID_PARTITIONS, _) => detail("invalid partition count"),
            (ErrorCode::INVALID_REPLICATION_FACTOR, _) => detail("invalid replication factor"),
            (ErrorCode::BROKER_SHUTTING_DOWN, _) => {
                format!("broker at {} is shutting down", self.broker)
            }
            _ => match self.group {
                Some(g) => self.describe_group_code(g, code, message),
                None => detail(&format!("broker error {code}")),
            },
        }
    }

    /// [`Ctx::describe_code`] for a command about group `g`.
    fn describe_group_code(&self, g: &str, code: ErrorCode, message: &str) -> String {
        let detail = |what: String| {
            if message.is_empty() {
                what
            } else {
                format!("{what}: {message}")
            }
        };
        match code {
            ErrorCode::GROUP_ID_NOT_FOUND => format!("group '{g}' does not exist"),
            ErrorCode::NON_EMPTY_GROUP => detail(format!("group '{g}' still has members")),
            ErrorCode::INVALID_GROUP_ID => detail(format!("invalid group id '{g}'")),
            ErrorCode::NOT_COORDINATOR | ErrorCode::COORDINATOR_NOT_AVAILABLE => detail(format!(
                "no coordinator is available for group '{g}' (the cluster may be electing one)"
            )),
            _ => detail(format!("broker error {code}")),
        }
    }
}

/// `value` as one line of JSON (`--format json`).
pub fn json(value: &impl serde::Serialize) -> Result<String, CliError> {
    let mut s = serde_json::to_string(value)
        .map_err(|e| CliError::new(format!("cannot encode the answer as JSON: {e}")))?;
    s.push('\n');
    Ok(s)
}

/// Writes `bytes` to stdout and flushes.
pub fn write_stdout(bytes: &[u8]) -> Result<(), CliError> {
    let mut out = std::io::stdout().lock();
    out.write_all(bytes).map_err(CliError::stdout)?;
    out.flush().map_err(CliError::stdout)
}

/// Lays out rows as columns separated by two spaces (the last column unpadded), one line each.
pub fn table(rows: &[Vec<String>], indent: &str) -> String {
    let columns = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..columns)
        .map(|c| {
            rows.iter()
                .filter_map(|r| r.get(c))
                .map(|s| s.chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for row in rows {
        let mut line = String::from(indent);
        for (c, cell) in row.iter().enumerate() {
            if c + 1 == row.len() {
                line.push_str(cell);
            } else {
                let width = widths.get(c).copied().unwrap_or(0);
                line.push_str(&format!("{cell:<width$}  "));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// Runs a client command on a fresh tokio runtime; returns the process exit code.
pub fn run<F>(command: F) -> i32
where
    F: Future<Output = Result<(), CliError>>,
{
    // The client logs retries and the like; show them only when asked.
    if let Ok(filter) = tracing_subscriber::EnvFilter::try_from_env("SLUICE_LOG") {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_writer(std::io::stderr)
            .try_init();
    }
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("sluice: cannot start the runtime: {e}");
            return 1;
        }
    };
    let result = rt.block_on(command);
    // Connection tasks may still be running; they are dropped, not awaited.
    rt.shutdown_background();
    match result {
        Ok(()) | Err(CliError::BrokenPipe) => 0,
        Err(CliError::Message(m)) => {
            eprintln!("sluice: {m}");
            1
        }
    }
}

#[cfg(test)]
mod tests;
