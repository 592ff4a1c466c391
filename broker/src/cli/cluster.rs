//! `sluice cluster info`: one metadata request for every topic, printed as the brokers (node id and
//! address), the controller, and a table of every partition of every topic with its leader, replicas
//! and high watermark. A single broker for now; the layout already fits several.

use sluice_client::{Admin, MetadataResponse};

use super::topic::{leader, replicas};
use super::{table, write_stdout, CliError, ClusterArgs, ClusterCommand, Ctx};

pub async fn run(args: ClusterArgs) -> Result<(), CliError> {
    let broker = args.conn.broker.as_str();
    match args.command {
        ClusterCommand::Info => {
            let admin = Admin::new(broker).map_err(|e| Ctx::new(broker).err(e))?;
            let metadata = admin
                .metadata()
                .await
                .map_err(|e| Ctx::new(broker).err(e))?;
            write_stdout(render(&metadata).as_bytes())
        }
    }
}

/// The text of `sluice cluster info`.
fn render(m: &MetadataResponse) -> String {
    let mut out = String::from("Brokers:\n");
    let mut brokers: Vec<_> = m.brokers.iter().collect();
    brokers.sort_by_key(|b| b.node_id);
    let mut rows = vec![vec!["NODE".to_string(), "ADDRESS".to_string()]];
    for b in brokers {
        let host = if b.host.contains(':') {
            format!("[{}]", b.host)
        } else {
            b.host.clone()
        };
        rows.push(vec![b.node_id.to_string(), format!("{host}:{}", b.port)]);
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

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_client::{BrokerInfo, ErrorCode, PartitionMetadata, TopicMetadata};

    #[test]
    fn renders_brokers_controller_and_partitions() {
        let m = MetadataResponse {
            brokers: vec![BrokerInfo {
                node_id: 1,
                host: "127.0.0.1".into(),
                port: 9492,
            }],
            controller_id: 1,
            topics: vec![TopicMetadata {
                error: ErrorCode::NONE,
                name: "t".into(),
                partitions: vec![PartitionMetadata {
                    error: ErrorCode::NONE,
                    partition: 0,
                    leader: 1,
                    replicas: vec![1],
                    high_watermark: 7,
                    log_start_offset: 0,
                }],
                configs: vec![],
            }],
        };
        assert_eq!(
            render(&m),
            "Brokers:\n  NODE  ADDRESS\n  1     127.0.0.1:9492\nController: 1\nPartitions:\n  \
             TOPIC  PARTITION  LEADER  REPLICAS  HIGH-WATERMARK\n  \
             t      0          1       1         7\n"
        );
    }
}
