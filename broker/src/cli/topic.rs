//! `sluice topic create|list|describe|delete`: topic administration through
//! [`sluice_client::Admin`]. `list` prints one line per topic (name and partition count, aligned, no
//! header) so scripts can read it with `awk`; `describe` prints the topic's partition count, its
//! configs (`key=value`, one per line) and a table of its partitions.

use sluice_client::{Admin, TopicMetadata};

use super::{table, write_stdout, CliError, CreateArgs, Ctx, TopicArgs, TopicCommand};

pub async fn run(args: TopicArgs) -> Result<(), CliError> {
    let broker = args.conn.broker.as_str();
    let admin = Admin::new(broker).map_err(|e| Ctx::new(broker).err(e))?;
    match args.command {
        TopicCommand::Create(c) => create(&admin, broker, c).await,
        TopicCommand::List => list(&admin, broker).await,
        TopicCommand::Describe { name } => describe(&admin, broker, &name).await,
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

/// The text of `sluice topic describe`.
fn render_describe(topic: &TopicMetadata) -> String {
    let mut out = format!(
        "Topic: {}\nPartitions: {}\nConfigs:\n",
        topic.name,
        topic.partitions.len()
    );
    let mut configs = topic.configs.clone();
    configs.sort();
    for (k, v) in &configs {
        out.push_str(&format!("  {k}={v}\n"));
    }
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
