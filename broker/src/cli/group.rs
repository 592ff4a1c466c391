//! `sluice group list|describe|reset-offsets|alter-config|delete`: consumer-group administration through
//! [`sluice_client::Admin`], with its clap definitions. Output is a table for people or, with
//! `--format json`, one JSON document whose keys are a stable interface for scripts (see
//! [`JsonGroup`]). It never joins a group or commits as a member; failures go through [`Ctx`] like
//! every client command's (exit code 1, clap's usage errors 2).

use clap::{ArgGroup, Args, Subcommand, ValueEnum};
use serde::Serialize;
use sluice_client::{Admin, GroupDescription, GroupListing, ResetSpec};

use super::{json, table, write_stdout, BrokerOpt, CliError, Ctx};

/// `sluice group ...`.
#[derive(Debug, Args)]
pub struct GroupArgs {
    #[command(flatten)]
    pub conn: BrokerOpt,
    #[command(subcommand)]
    pub command: GroupCommand,
}

#[derive(Debug, Subcommand)]
pub enum GroupCommand {
    /// List the consumer groups of the cluster: name, state and number of members.
    List {
        /// Output format.
        #[arg(long, value_enum, default_value_t = OutputFormat::Table)]
        format: OutputFormat,
    },
    /// Show a group's members, their partitions, and per partition the committed offset, the high
    /// watermark and the lag (in records, and the age of the oldest unconsumed record in ms).
    Describe {
        /// Group to describe.
        group: String,
        /// Output format.
        #[arg(long, value_enum, default_value_t = OutputFormat::Table)]
        format: OutputFormat,
    },
    /// Move a group's committed offsets of a topic; on a group with members, the partitions are
    /// taken from them, moved and handed back. Prints the new offsets.
    ResetOffsets(ResetArgs),
    /// Delete a group without members, and its committed offsets.
    Delete {
        /// Group to delete.
        group: String,
    },
    /// Set a group's own session timeout and heartbeat interval (over the broker's defaults;
    /// 0 goes back to the broker's default).
    #[command(group(ArgGroup::new("setting").args(["session_timeout_ms", "heartbeat_interval_ms"]).required(true).multiple(true)))]
    AlterConfig {
        /// Group to configure.
        group: String,
        /// The session of members that ask for none (within the broker's bounds).
        #[arg(long, value_name = "MS")]
        session_timeout_ms: Option<u32>,
        /// How often members heartbeat (at most half the session).
        #[arg(long, value_name = "MS")]
        heartbeat_interval_ms: Option<u32>,
    },
}

/// `sluice group reset-offsets`.
#[derive(Debug, Args)]
#[command(group(
    ArgGroup::new("to")
        .args(["to_earliest", "to_latest", "to_offset", "to_timestamp", "shift_by"])
        .required(true)
        .multiple(false)
))]
pub struct ResetArgs {
    /// Group whose offsets to move.
    pub group: String,
    /// Topic whose offsets to move.
    #[arg(long, value_name = "TOPIC")]
    pub topic: String,
    /// Only this partition (default: every partition of the topic).
    #[arg(long, value_name = "N")]
    pub partition: Option<u32>,
    /// To the first retained offset.
    #[arg(long)]
    pub to_earliest: bool,
    /// To the high watermark (skip everything written so far).
    #[arg(long)]
    pub to_latest: bool,
    /// To this offset (it must lie between the log start offset and the high watermark).
    #[arg(long, value_name = "N")]
    pub to_offset: Option<u64>,
    /// To the first record with a timestamp at or after MS (milliseconds since the Unix epoch).
    #[arg(long, value_name = "MS", value_parser = clap::value_parser!(i64).range(0..))]
    pub to_timestamp: Option<i64>,
    /// By N records from the committed offset (negative: back), kept within the log.
    #[arg(long, value_name = "N", allow_negative_numbers = true)]
    pub shift_by: Option<i64>,
    /// Output format.
    #[arg(long, value_enum, default_value_t = OutputFormat::Table)]
    pub format: OutputFormat,
}

impl ResetArgs {
    /// The one spec clap let through.
    pub fn spec(&self) -> ResetSpec {
        match (self.to_offset, self.to_timestamp, self.shift_by) {
            (Some(o), _, _) => ResetSpec::Offset(o),
            (_, Some(ts), _) => ResetSpec::Timestamp(ts),
            (_, _, Some(n)) => ResetSpec::ShiftBy(n),
            _ if self.to_latest => ResetSpec::Latest,
            _ => ResetSpec::Earliest,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    /// Aligned columns for people.
    Table,
    /// One JSON document for scripts.
    Json,
}

pub async fn run(args: GroupArgs) -> Result<(), CliError> {
    let broker = args.conn.broker.as_str();
    let admin = Admin::new(broker).map_err(|e| Ctx::new(broker).err(e))?;
    match args.command {
        GroupCommand::List { format } => {
            let groups = admin
                .list_groups()
                .await
                .map_err(|e| Ctx::new(broker).err(e))?;
            write_stdout(render_list(&groups, format)?.as_bytes())
        }
        GroupCommand::Describe { group, format } => {
            let d = admin
                .describe_group(&group)
                .await
                .map_err(|e| Ctx::group(broker, &group).err(e))?;
            let out = match format {
                OutputFormat::Table => render_describe(&d),
                OutputFormat::Json => json(&JsonGroup::from(&d))?,
            };
            write_stdout(out.as_bytes())
        }
        GroupCommand::ResetOffsets(r) => {
            let ctx = Ctx::group(broker, &r.group).with_topic(&r.topic);
            let moved = admin
                .reset_offsets(&r.group, &r.topic, r.partition, r.spec())
                .await
                .map_err(|e| ctx.err(e))?;
            write_stdout(render_reset(&moved, r.format)?.as_bytes())
        }
        GroupCommand::AlterConfig {
            group,
            session_timeout_ms,
            heartbeat_interval_ms,
        } => {
            let value = |v: u32| if v == 0 { String::new() } else { v.to_string() };
            let mut configs = Vec::new();
            if let Some(v) = session_timeout_ms {
                configs.push(("consumer.session.timeout.ms".to_string(), value(v)));
            }
            if let Some(v) = heartbeat_interval_ms {
                configs.push(("consumer.heartbeat.interval.ms".to_string(), value(v)));
            }
            admin
                .alter_group_config(&group, &configs)
                .await
                .map_err(|e| Ctx::group(broker, &group).err(e))?;
            write_stdout(format!("updated group '{group}'\n").as_bytes())
        }
        GroupCommand::Delete { group } => {
            admin
                .delete_group(&group)
                .await
                .map_err(|e| Ctx::group(broker, &group).err(e))?;
            write_stdout(format!("deleted group '{group}'\n").as_bytes())
        }
    }
}

#[derive(Debug, Serialize)]
struct JsonListing<'a> {
    group: &'a str,
    state: &'a str,
    members: u32,
}

/// The output of `sluice group list`.
fn render_list(groups: &[GroupListing], format: OutputFormat) -> Result<String, CliError> {
    if format == OutputFormat::Json {
        let v: Vec<JsonListing> = groups
            .iter()
            .map(|g| JsonListing {
                group: &g.group,
                state: &g.state,
                members: g.members,
            })
            .collect();
        return json(&v);
    }
    let mut rows = vec![vec![
        "GROUP".to_string(),
        "STATE".to_string(),
        "MEMBERS".to_string(),
    ]];
    rows.extend(
        groups
            .iter()
            .map(|g| vec![g.group.clone(), g.state.clone(), g.members.to_string()]),
    );
    Ok(table(&rows, ""))
}

/// `sluice group describe --format json`. Every key is always present (`null` when unknown).
#[derive(Debug, Serialize)]
struct JsonGroup<'a> {
    group: &'a str,
    state: &'a str,
    epoch: i32,
    assignor: &'a str,
    members: Vec<JsonMember<'a>>,
    offsets: Vec<JsonOffset<'a>>,
}

#[derive(Debug, Serialize)]
struct JsonMember<'a> {
    member_id: &'a str,
    instance_id: Option<&'a str>,
    client_id: &'a str,
    host: &'a str,
    member_epoch: i32,
    subscription: &'a [String],
    subscription_regex: Option<&'a str>,
    partitions: Vec<JsonPartition<'a>>,
    revoking: Vec<JsonPartition<'a>>,
}

#[derive(Debug, Serialize)]
struct JsonPartition<'a> {
    topic: &'a str,
    partition: u32,
}

#[derive(Debug, Serialize)]
struct JsonOffset<'a> {
    topic: &'a str,
    partition: u32,
    committed_offset: Option<u64>,
    owner: Option<&'a str>,
    log_start_offset: Option<u64>,
    high_watermark: Option<u64>,
    lag: Option<u64>,
    lag_ms: Option<u64>,
    error: Option<&'a str>,
}

fn json_partitions(v: &[(String, u32)]) -> Vec<JsonPartition<'_>> {
    v.iter()
        .map(|(topic, partition)| JsonPartition {
            topic,
            partition: *partition,
        })
        .collect()
}

impl<'a> From<&'a GroupDescription> for JsonGroup<'a> {
    fn from(d: &'a GroupDescription) -> JsonGroup<'a> {
        JsonGroup {
            group: &d.group,
            state: &d.state,
            epoch: d.epoch,
            assignor: &d.assignor,
            members: d
                .members
                .iter()
                .map(|m| JsonMember {
                    member_id: &m.member_id,
                    instance_id: m.instance_id.as_deref(),
                    client_id: &m.client_id,
                    host: &m.host,
                    member_epoch: m.member_epoch,
                    subscription: &m.subscription,
                    subscription_regex: m.subscription_regex.as_deref(),
                    partitions: json_partitions(&m.partitions),
                    revoking: json_partitions(&m.revoking),
                })
                .collect(),
            offsets: d
                .offsets
                .iter()
                .map(|o| JsonOffset {
                    topic: &o.topic,
                    partition: o.partition,
                    committed_offset: o.committed_offset,
                    owner: o.owner.as_deref(),
                    log_start_offset: o.log_start_offset,
                    high_watermark: o.high_watermark,
                    lag: o.lag,
                    lag_ms: o.lag_ms,
                    error: o.error.as_deref(),
                })
                .collect(),
        }
    }
}

/// Partitions by topic: `orders:0,2 audit:1`; `-` for none.
fn partitions_cell(v: &[(String, u32)]) -> String {
    let mut out: Vec<(String, Vec<String>)> = Vec::new();
    for (t, p) in v {
        match out.iter_mut().find(|(topic, _)| topic == t) {
            Some((_, ps)) => ps.push(p.to_string()),
            None => out.push((t.clone(), vec![p.to_string()])),
        }
    }
    if out.is_empty() {
        return "-".to_string();
    }
    out.iter()
        .map(|(t, ps)| format!("{t}:{}", ps.join(",")))
        .collect::<Vec<_>>()
        .join(" ")
}

fn cell(v: Option<impl ToString>) -> String {
    v.map_or_else(|| "-".to_string(), |v| v.to_string())
}

/// The text of `sluice group describe`: a header block, the members, the offsets.
fn render_describe(d: &GroupDescription) -> String {
    let mut out = format!(
        "Group: {}\nState: {}\nEpoch: {}\nAssignor: {}\n",
        d.group,
        d.state,
        d.epoch,
        if d.assignor.is_empty() {
            "-"
        } else {
            &d.assignor
        }
    );
    if d.members.is_empty() {
        out.push_str("Members: none\n");
    } else {
        out.push_str("Members:\n");
        let mut rows = vec![[
            "MEMBER-ID",
            "INSTANCE-ID",
            "CLIENT-ID",
            "HOST",
            "EPOCH",
            "PARTITIONS",
            "REVOKING",
        ]
        .map(String::from)
        .to_vec()];
        for m in &d.members {
            rows.push(vec![
                m.member_id.clone(),
                cell(m.instance_id.as_ref()),
                m.client_id.clone(),
                m.host.clone(),
                m.member_epoch.to_string(),
                partitions_cell(&m.partitions),
                partitions_cell(&m.revoking),
            ]);
        }
        out.push_str(&table(&rows, "  "));
    }
    if d.offsets.is_empty() {
        out.push_str("Offsets: none\n");
        return out;
    }
    out.push_str("Offsets:\n");
    let mut rows = vec![[
        "TOPIC",
        "PARTITION",
        "COMMITTED",
        "HIGH-WATERMARK",
        "LAG",
        "LAG-MS",
        "OWNER",
    ]
    .map(String::from)
    .to_vec()];
    for o in &d.offsets {
        rows.push(vec![
            o.topic.clone(),
            o.partition.to_string(),
            cell(o.committed_offset),
            cell(o.high_watermark),
            cell(o.lag),
            cell(o.lag_ms),
            cell(o.owner.as_ref()),
        ]);
    }
    out.push_str(&table(&rows, "  "));
    for o in &d.offsets {
        if let Some(e) = &o.error {
            out.push_str(&format!("  {}/{}: {e}\n", o.topic, o.partition));
        }
    }
    out
}

#[derive(Debug, Serialize)]
struct JsonReset<'a> {
    topic: &'a str,
    partition: u32,
    offset: u64,
}

/// The output of `sluice group reset-offsets`: the new offset of each partition.
fn render_reset(moved: &[(String, u32, u64)], format: OutputFormat) -> Result<String, CliError> {
    if format == OutputFormat::Json {
        let v: Vec<JsonReset> = moved
            .iter()
            .map(|(topic, partition, offset)| JsonReset {
                topic,
                partition: *partition,
                offset: *offset,
            })
            .collect();
        return json(&v);
    }
    let mut rows = vec![vec![
        "TOPIC".to_string(),
        "PARTITION".to_string(),
        "NEW-OFFSET".to_string(),
    ]];
    rows.extend(
        moved
            .iter()
            .map(|(t, p, o)| vec![t.clone(), p.to_string(), o.to_string()]),
    );
    Ok(table(&rows, ""))
}

#[cfg(test)]
#[path = "group_tests.rs"]
mod tests;
