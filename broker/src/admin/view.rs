//! The cluster as a client sees it: brokers, the controller (metadata leader), and for each topic its
//! configs and every partition's leader, replicas and offsets. A broker with a replica of a partition
//! gives its replica's view; one without gives the leader the metadata last heard of (a leader
//! report), or the preferred leader before any report — a hint that a `NOT_LEADER` answer corrects.

use crate::broker::Broker;
use crate::cluster::state::TopicRecord;

/// One broker of the cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerView {
    pub node_id: u32,
    pub host: String,
    pub port: u16,
}

/// One partition as seen from this broker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionView {
    pub partition: u32,
    /// The leader's broker id, if one is known or hinted.
    pub leader: Option<u32>,
    pub replicas: Vec<u32>,
    /// From this broker's replica; 0 when it has none.
    pub high_watermark: u64,
    pub log_start_offset: u64,
}

/// One topic, or `None` partitions when the topic does not exist.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicView {
    pub name: String,
    /// `None`: no such topic.
    pub partitions: Option<Vec<PartitionView>>,
    pub configs: Vec<(String, String)>,
}

/// The cluster as seen from this broker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterView {
    pub brokers: Vec<BrokerView>,
    /// The metadata leader's broker id, if known.
    pub controller: Option<u32>,
    pub topics: Vec<TopicView>,
}

impl Broker {
    /// The cluster, with the named topics (every topic when `None`).
    pub fn describe_cluster(&self, topics: Option<&[String]>) -> ClusterView {
        let state = self.cluster.metadata.state();
        let topics = match topics {
            None => state
                .topics
                .iter()
                .map(|(n, r)| self.describe_topic(n, r))
                .collect(),
            Some(names) => names
                .iter()
                .map(|n| match state.topics.get(n) {
                    Some(r) => self.describe_topic(n, r),
                    None => TopicView {
                        name: n.clone(),
                        partitions: None,
                        configs: Vec::new(),
                    },
                })
                .collect(),
        };
        ClusterView {
            brokers: self
                .cluster
                .metadata
                .brokers()
                .iter()
                .map(|(id, addr)| {
                    let (host, port) = split_addr(addr);
                    BrokerView {
                        node_id: *id,
                        host,
                        port,
                    }
                })
                .collect(),
            controller: self
                .cluster
                .metadata
                .group
                .leader()
                .and_then(|l| u32::try_from(l).ok()),
            topics,
        }
    }

    fn describe_topic(&self, name: &str, rec: &TopicRecord) -> TopicView {
        let local = self.replicas.get(name).filter(|t| t.id == rec.id);
        let partitions = rec
            .replicas
            .iter()
            .enumerate()
            .map(|(p, replicas)| {
                let part = local.as_ref().and_then(|t| t.partitions.get(&(p as u32)));
                let leader = match part {
                    Some(part) => part.leader().and_then(|l| u32::try_from(l).ok()),
                    None => rec
                        .leaders
                        .get(&(p as u32))
                        .map(|(l, _)| *l)
                        .or_else(|| replicas.first().copied()),
                };
                PartitionView {
                    partition: p as u32,
                    leader,
                    replicas: replicas.clone(),
                    high_watermark: part.map_or(0, |p| p.high_watermark()),
                    log_start_offset: part.map_or(0, |p| p.log_start_offset()),
                }
            })
            .collect();
        TopicView {
            name: name.to_string(),
            partitions: Some(partitions),
            configs: rec.configs.clone(),
        }
    }
}

/// Splits `host:port` (the port 0 if it does not parse).
fn split_addr(addr: &str) -> (String, u16) {
    match addr.rsplit_once(':') {
        Some((h, p)) => (h.to_string(), p.parse().unwrap_or(0)),
        None => (addr.to_string(), 0),
    }
}
