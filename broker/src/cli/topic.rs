//! `sluice topic create|list|describe|alter|delete|reassign`: topic administration through
//! [`sluice_client::Admin`], with their clap definitions. `list` prints one line per topic (name and
//! partition count, aligned, no header) so scripts can read it with `awk`; `describe` prints the
//! topic's partition count, its configs (`key=value`, one per line) and a table of its partitions;
//! `alter` prints the topic's configs after the change the same way.

use clap::{ArgGroup, Args, Subcommand};
use sluice_client::{Admin, TopicMetadata};

use super::{parse_config, table, write_stdout, BrokerOpt, CliError, Ctx};

/// `sluice topic ...`.
#[derive(Debug, Args)]
pub struct TopicArgs {
    #[command(flatten)]
    pub conn: BrokerOpt,
    #[command(subcommand)]
    pub command: TopicCommand,
}

#[derive(Debug, Subcommand)]
pub enum TopicCommand {
    /// Create a topic.
    Create(CreateArgs),
    /// List topics, one line per topic: its name and partition count.
    List,
    /// Show a topic's partitions (leader, replicas, high watermark, log start offset) and configs.
    Describe {
        /// Topic to describe.
        name: String,
    },
    /// Change a live topic's settings and print its configs after the change.
    Alter(AlterArgs),
    /// Delete a topic and all its records.
    Delete {
        /// Topic to delete.
        name: String,
    },
    /// Move a partition to other brokers: new replicas catch up, then the old ones drop out.
    Reassign {
        /// Topic of the partition.
        name: String,
        /// The partition to move.
        #[arg(long, value_name = "N")]
        partition: u32,
        /// The new replica set: broker ids, comma-separated (e.g. 1,2,4).
        #[arg(long, value_name = "IDS", value_delimiter = ',', required = true)]
        replicas: Vec<u32>,
    },
}

/// `sluice topic create`.
#[derive(Debug, Args)]
pub struct CreateArgs {
    /// Name of the new topic (ASCII letters, digits, '.', '_' and '-').
    pub name: String,
    /// Number of partitions.
    #[arg(long, value_name = "N", default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
    pub partitions: u32,
    /// Copies of each partition (a single broker supports 1).
    #[arg(long, value_name = "N", default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..))]
    pub replication_factor: u16,
    /// A topic setting, repeatable. Keys: retention.ms, retention.bytes, segment.bytes, segment.ms,
    /// cleanup.policy.
    #[arg(long = "config", value_name = "KEY=VALUE", value_parser = parse_config)]
    pub configs: Vec<(String, String)>,
}

/// `sluice topic alter`.
#[derive(Debug, Args)]
#[command(group(ArgGroup::new("change").required(true).multiple(true).args(["configs", "deletes"])))]
pub struct AlterArgs {
    /// Topic to change.
    pub name: String,
    /// Set a topic setting, repeatable. Keys a live topic can change: retention.ms,
    /// retention.bytes, cleanup.policy.
    #[arg(long = "config", value_name = "KEY=VALUE", value_parser = parse_config)]
    pub configs: Vec<(String, String)>,
    /// Put a topic setting back to its default, repeatable.
    #[arg(long = "delete-config", value_name = "KEY")]
    pub deletes: Vec<String>,
}

pub async fn run(args: TopicArgs) -> Result<(), CliError> {
    let broker = args.conn.broker.as_str();
    let admin = Admin::new(broker).map_err(|e| Ctx::new(broker).err(e))?;
    match args.command {
        TopicCommand::Create(c) => create(&admin, broker, c).await,
        TopicCommand::List => list(&admin, broker).await,
        TopicCommand::Describe { name } => describe(&admin, broker, &name).await,
        TopicCommand::Alter(a) => alter(&admin, broker, a).await,
        TopicCommand::Delete { name } => delete(&admin, broker, &name).await,
        TopicCommand::Reassign {
            name,
            partition,
            replicas,
        } => {
            admin
                .reassign_partition(&name, partition, &replicas)
                .await
                .map_err(|e| Ctx::topic(broker, &name).err(e))?;
            let ids: Vec<String> = replicas.iter().map(u32::to_string).collect();
            write_stdout(
                format!(
                    "moving '{name}' partition {partition} to brokers {}\n",
                    ids.join(",")
                )
                .as_bytes(),
            )
        }
    }
}

async fn create(admin: &Admin, broker: &str, args: CreateArgs) -> Result<(), CliError> {
    let configs: Vec<(&str, &str)> = args
        .configs
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    admin
        .create_topic(
            &args.name,
            args.partitions,
            args.replication_factor,
            &configs,
        )
        .await
        .map_err(|e| Ctx::topic(broker, &args.name).err(e))?;
    let plural = if args.partitions == 1 { "" } else { "s" };
    write_stdout(
        format!(
            "created topic '{}' with {} partition{plural}\n",
            args.name, args.partitions
        )
        .as_bytes(),
    )
}

async fn list(admin: &Admin, broker: &str) -> Result<(), CliError> {
    let mut topics = admin
        .list_topics()
        .await
        .map_err(|e| Ctx::new(broker).err(e))?;
    topics.sort_by(|a, b| a.name.cmp(&b.name));
    let rows: Vec<Vec<String>> = topics
        .iter()
        .map(|t| vec![t.name.clone(), t.partitions.len().to_string()])
        .collect();
    write_stdout(table(&rows, "").as_bytes())
}

async fn describe(admin: &Admin, broker: &str, name: &str) -> Result<(), CliError> {
    let topic = admin
        .describe_topic(name)
        .await
        .map_err(|e| Ctx::topic(broker, name).err(e))?;
    write_stdout(render_describe(&topic).as_bytes())
}

async fn alter(admin: &Admin, broker: &str, args: AlterArgs) -> Result<(), CliError> {
    let set: Vec<(&str, &str)> = args
        .configs
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let delete: Vec<&str> = args.deletes.iter().map(String::as_str).collect();
    let configs = admin
        .alter_topic_configs(&args.name, &set, &delete)
        .await
        .map_err(|e| Ctx::topic(broker, &args.name).err(e))?;
    let mut out = format!("Topic: {}\n", args.name);
    out.push_str(&render_configs(&configs));
    write_stdout(out.as_bytes())
}

/// `Configs:` and one indented `key=value` line per config, sorted.
fn render_configs(configs: &[(String, String)]) -> String {
    let mut configs = configs.to_vec();
    configs.sort();
    let mut out = "Configs:\n".to_string();
    for (k, v) in &configs {
        out.push_str(&format!("  {k}={v}\n"));
    }
    out
}

/// The text of `sluice topic describe`.
fn render_describe(topic: &TopicMetadata) -> String {
    let mut out = format!(
        "Topic: {}\nPartitions: {}\n",
        topic.name,
        topic.partitions.len()
    );
    out.push_str(&render_configs(&topic.configs));
    let mut partitions: Vec<_> = topic.partitions.iter().collect();
    partitions.sort_by_key(|p| p.partition);
    let mut rows = vec![vec![
        "PARTITION".to_string(),
        "LEADER".to_string(),
        "REPLICAS".to_string(),
        "HIGH-WATERMARK".to_string(),
        "LOG-START-OFFSET".to_string(),
    ]];
    for p in partitions {
        rows.push(vec![
            p.partition.to_string(),
            leader(p.leader),
            replicas(&p.replicas),
            p.high_watermark.to_string(),
            p.log_start_offset.to_string(),
        ]);
    }
    out.push_str(&table(&rows, ""));
    out
}

async fn delete(admin: &Admin, broker: &str, name: &str) -> Result<(), CliError> {
    admin
        .delete_topic(name)
        .await
        .map_err(|e| Ctx::topic(broker, name).err(e))?;
    write_stdout(format!("deleted topic '{name}'\n").as_bytes())
}

/// A leader node id, or `none`.
pub fn leader(id: i32) -> String {
    if id < 0 {
        "none".to_string()
    } else {
        id.to_string()
    }
}

/// Replica node ids, comma separated (`-` when there are none).
pub fn replicas(ids: &[u32]) -> String {
    if ids.is_empty() {
        return "-".to_string();
    }
    ids.iter().map(u32::to_string).collect::<Vec<_>>().join(",")
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_client::{ErrorCode, PartitionMetadata};

    #[test]
    fn describe_lists_configs_and_partitions() {
        let p = |partition, hw| PartitionMetadata {
            error: ErrorCode::NONE,
            partition,
            leader: 1,
            replicas: vec![1],
            high_watermark: hw,
            log_start_offset: 0,
        };
        let t = TopicMetadata {
            error: ErrorCode::NONE,
            name: "orders".into(),
            partitions: vec![p(1, 12), p(0, 3)],
            configs: vec![
                ("retention.ms".into(), "1000".into()),
                ("cleanup.policy".into(), "delete".into()),
            ],
        };
        assert_eq!(
            render_describe(&t),
            "Topic: orders\nPartitions: 2\nConfigs:\n  cleanup.policy=delete\n  retention.ms=1000\n\
             PARTITION  LEADER  REPLICAS  HIGH-WATERMARK  LOG-START-OFFSET\n\
             0          1       1         3               0\n\
             1          1       1         12              0\n"
        );
    }
}
