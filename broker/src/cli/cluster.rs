//! `sluice cluster ...`: `info`, one metadata request for every topic, printed as the brokers (node
//! id, address and how many partitions each leads), the controller, and a table of every
//! partition of every topic with its leader, replicas and high watermark; and `balance-leaders`,
//! which moves each partition's leadership to its preferred replica (the first of its replicas)
//! where that replica is up and in sync, and prints what happened to each partition (`--format
//! json`: one JSON document whose keys are a stable interface, the same as the HTTP API's).

use clap::{Args, Subcommand};
use serde::Serialize;
use sluice_client::{Admin, LeaderOutcome, MetadataResponse, PartitionLeader};

use super::group::OutputFormat;
use super::topic::{leader, replicas};
use super::{json, table, write_stdout, BrokerOpt, CliError, Ctx};

/// `sluice cluster ...`.
#[derive(Debug, Args)]
pub struct ClusterArgs {
    #[command(flatten)]
    pub conn: BrokerOpt,
    #[command(subcommand)]
    pub command: ClusterCommand,
}

#[derive(Debug, Subcommand)]
pub enum ClusterCommand {
    /// Show the brokers (with how many partitions each leads), the controller, and every
    /// partition's leader, replicas and high watermark.
    Info,
    /// Move each partition's leadership to its preferred replica (the first of its replicas)
    /// where that replica is up and in sync; print what happened to every partition.
    BalanceLeaders {
        /// Output format.
        #[arg(long, value_enum, default_value_t = OutputFormat::Table)]
        format: OutputFormat,
    },
}

pub async fn run(args: ClusterArgs) -> Result<(), CliError> {
    let broker = args.conn.broker.as_str();
    let admin = Admin::new(broker).map_err(|e| Ctx::new(broker).err(e))?;
    match args.command {
        ClusterCommand::Info => {
            let metadata = admin
                .metadata()
                .await
                .map_err(|e| Ctx::new(broker).err(e))?;
            write_stdout(render(&metadata).as_bytes())
        }
        ClusterCommand::BalanceLeaders { format } => {
            let rows = admin
                .balance_leaders()
                .await
                .map_err(|e| Ctx::new(broker).err(e))?;
            let out = match format {
                OutputFormat::Table => render_balance(&rows),
                OutputFormat::Json => json(&JsonBalance::from(rows.as_slice()))?,
            };
            write_stdout(out.as_bytes())
        }
    }
}

/// The text of `sluice cluster info`.
fn render(m: &MetadataResponse) -> String {
    let mut out = String::from("Brokers:\n");
    let mut brokers: Vec<_> = m.brokers.iter().collect();
    brokers.sort_by_key(|b| b.node_id);
    let mut rows = vec![vec![
        "NODE".to_string(),
        "ADDRESS".to_string(),
        "LEADERS".to_string(),
    ]];
    for b in brokers {
        let host = if b.host.contains(':') {
            format!("[{}]", b.host)
        } else {
            b.host.clone()
        };
        let leads = m
            .topics
            .iter()
            .flat_map(|t| &t.partitions)
            .filter(|p| i64::from(p.leader) == i64::from(b.node_id))
            .count();
        rows.push(vec![
            b.node_id.to_string(),
            format!("{host}:{}", b.port),
            leads.to_string(),
        ]);
    }
    out.push_str(&table(&rows, "  "));
    out.push_str(&format!("Controller: {}\n", leader(m.controller_id)));
    let mut topics: Vec<_> = m.topics.iter().collect();
    topics.sort_by(|a, b| a.name.cmp(&b.name));
    if topics.is_empty() {
        out.push_str("Partitions: none\n");
        return out;
    }
    out.push_str("Partitions:\n");
    let mut rows = vec![vec![
        "TOPIC".to_string(),
        "PARTITION".to_string(),
        "LEADER".to_string(),
        "REPLICAS".to_string(),
        "HIGH-WATERMARK".to_string(),
    ]];
    for t in topics {
        let mut partitions: Vec<_> = t.partitions.iter().collect();
        partitions.sort_by_key(|p| p.partition);
        for p in partitions {
            rows.push(vec![
                t.name.clone(),
                p.partition.to_string(),
                leader(p.leader),
                replicas(&p.replicas),
                p.high_watermark.to_string(),
            ]);
        }
    }
    out.push_str(&table(&rows, "  "));
    out
}

fn outcome_name(o: LeaderOutcome) -> &'static str {
    match o {
        LeaderOutcome::Moved => "moved",
        LeaderOutcome::AlreadyPreferred => "already_preferred",
        LeaderOutcome::Skipped => "skipped",
    }
}

fn count(rows: &[PartitionLeader], o: LeaderOutcome) -> usize {
    rows.iter().filter(|r| r.outcome == o).count()
}

/// The text of `sluice cluster balance-leaders`: a summary line, then one row per partition.
fn render_balance(rows: &[PartitionLeader]) -> String {
    let mut out = format!(
        "Moved {}, already on the preferred leader {}, skipped {}.\n",
        count(rows, LeaderOutcome::Moved),
        count(rows, LeaderOutcome::AlreadyPreferred),
        count(rows, LeaderOutcome::Skipped),
    );
    if rows.is_empty() {
        return out;
    }
    let id = |v: Option<u32>| v.map_or_else(|| "-".to_string(), |v| v.to_string());
    let mut table_rows = vec![[
        "TOPIC",
        "PARTITION",
        "PREFERRED",
        "BEFORE",
        "AFTER",
        "OUTCOME",
        "REASON",
    ]
    .map(String::from)
    .to_vec()];
    for r in rows {
        table_rows.push(vec![
            r.topic.clone(),
            r.partition.to_string(),
            id(r.preferred),
            id(r.leader_before),
            id(r.leader),
            outcome_name(r.outcome).to_string(),
            r.reason.clone().unwrap_or_default(),
        ]);
    }
    out.push_str(&table(&table_rows, "  "));
    out
}

/// `sluice cluster balance-leaders --format json`: the broker's `LeaderBalance` (the HTTP API's
/// answer), key for key.
#[derive(Debug, Serialize)]
struct JsonBalance<'a> {
    moved: usize,
    already_preferred: usize,
    skipped: usize,
    partitions: Vec<JsonPartitionLeader<'a>>,
}

#[derive(Debug, Serialize)]
struct JsonPartitionLeader<'a> {
    topic: &'a str,
    partition: u32,
    preferred: Option<u32>,
    leader_before: Option<u32>,
    leader: Option<u32>,
    outcome: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<&'a str>,
}

impl<'a> From<&'a [PartitionLeader]> for JsonBalance<'a> {
    fn from(rows: &'a [PartitionLeader]) -> Self {
        JsonBalance {
            moved: count(rows, LeaderOutcome::Moved),
            already_preferred: count(rows, LeaderOutcome::AlreadyPreferred),
            skipped: count(rows, LeaderOutcome::Skipped),
            partitions: rows
                .iter()
                .map(|r| JsonPartitionLeader {
                    topic: &r.topic,
                    partition: r.partition,
                    preferred: r.preferred,
                    leader_before: r.leader_before,
                    leader: r.leader,
                    outcome: outcome_name(r.outcome),
                    reason: r.reason.as_deref(),
                })
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use sluice_client::{BrokerInfo, ErrorCode, PartitionMetadata, TopicMetadata};

    #[test]
    fn renders_brokers_with_leader_counts_controller_and_partitions() {
        let partition = |partition, leader| PartitionMetadata {
            error: ErrorCode::NONE,
            partition,
            leader,
            replicas: vec![1, 2],
            high_watermark: 7,
            log_start_offset: 0,
        };
        let m = MetadataResponse {
            brokers: vec![
                BrokerInfo {
                    node_id: 2,
                    host: "127.0.0.1".into(),
                    port: 9493,
                },
                BrokerInfo {
                    node_id: 1,
                    host: "127.0.0.1".into(),
                    port: 9492,
                },
            ],
            controller_id: 1,
            topics: vec![TopicMetadata {
                error: ErrorCode::NONE,
                name: "t".into(),
                partitions: vec![partition(0, 1), partition(1, 1), partition(2, -1)],
                configs: vec![],
            }],
        };
        assert_eq!(
            render(&m),
            "Brokers:\n  NODE  ADDRESS         LEADERS\n  \
             1     127.0.0.1:9492  2\n  \
             2     127.0.0.1:9493  0\nController: 1\nPartitions:\n  \
             TOPIC  PARTITION  LEADER  REPLICAS  HIGH-WATERMARK\n  \
             t      0          1       1,2       7\n  \
             t      1          1       1,2       7\n  \
             t      2          none    1,2       7\n"
        );
    }

    #[test]
    fn renders_a_balance_as_a_summary_and_one_row_per_partition() {
        let rows = vec![
            PartitionLeader {
                topic: "t".into(),
                partition: 0,
                preferred: Some(1),
                leader_before: Some(2),
                leader: Some(1),
                outcome: LeaderOutcome::Moved,
                reason: None,
            },
            PartitionLeader {
                topic: "t".into(),
                partition: 1,
                preferred: Some(3),
                leader_before: None,
                leader: None,
                outcome: LeaderOutcome::Skipped,
                reason: Some("no leader is known".into()),
            },
        ];
        assert_eq!(
            render_balance(&rows),
            "Moved 1, already on the preferred leader 0, skipped 1.\n  \
             TOPIC  PARTITION  PREFERRED  BEFORE  AFTER  OUTCOME  REASON\n  \
             t      0          1          2       1      moved\n  \
             t      1          3          -       -      skipped  no leader is known\n"
        );
        let v: serde_json::Value =
            serde_json::from_str(&json(&JsonBalance::from(rows.as_slice())).unwrap()).unwrap();
        assert_eq!(v["moved"], 1);
        assert_eq!(v["partitions"][0]["outcome"], "moved");
        assert_eq!(v["partitions"][0]["leader_before"], 2);
        assert!(v["partitions"][0].get("reason").is_none());
        assert_eq!(v["partitions"][1]["leader"], serde_json::Value::Null);
        assert_eq!(v["partitions"][1]["reason"], "no leader is known");
    }
}
