//! Consumer-group administration on [`Admin`]: finding a group's coordinator, listing the groups
//! of a cluster (every broker asked, answers merged), describing a group with its lag, moving its
//! committed offsets and deleting it.
//!
//! Requests about one group go to its coordinator (`coordinator`); lag and reset positions come
//! from the partitions' leaders (`partition_log`). Nothing here joins a group or commits as a
//! member: that is the group consumer's.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use sluice_protocol::wire::{
    AlterGroupConfigRequest, DeleteGroupRequest, DescribeGroupRequest, DescribeGroupResponse,
    OffsetFetchRequest, Request, ResetOffsetsRequest, Response, TopicPartitions,
};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tracing::debug;

use super::coordinator::body_error;
use super::partition_log::{self, Bounds, ResetSpec};
use super::Admin;
use crate::client::{unexpected, Client};
use crate::error::{ClientError, Result};

/// Longest a reset waits for its answer: on a live group the coordinator answers once the
/// members released the partitions (or with `REQUEST_TIMED_OUT` after its session timeout).
pub const RESET_WAIT: Duration = Duration::from_secs(300);
/// Partitions whose lag is looked up at the same time.
const LAG_LOOKUPS: usize = 16;

/// A group in [`Admin::list_groups`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupListing {
    pub group: String,
    /// `Empty`, `Reconciling` or `Stable`.
    pub state: String,
    pub members: u32,
}

/// A group as [`Admin::describe_group`] shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupDescription {
    pub group: String,
    /// `Empty`, `Reconciling` or `Stable`.
    pub state: String,
    /// The group epoch (bumped by every membership or subscription change).
    pub epoch: i32,
    /// The assignor the group uses (empty when the group has none yet).
    pub assignor: String,
    pub members: Vec<GroupMember>,
    /// Every partition of every topic the group has committed offsets for or is assigned, by
    /// topic and partition.
    pub offsets: Vec<PartitionLag>,
}

/// One member of a group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupMember {
    pub member_id: String,
    /// The static member's instance id; `None` for a dynamic member.
    pub instance_id: Option<String>,
    pub client_id: String,
    /// The address the member connected from.
    pub host: String,
    pub member_epoch: i32,
    /// The topics it subscribed to by name.
    pub subscription: Vec<String>,
    /// The pattern it subscribed with, if any.
    pub subscription_regex: Option<String>,
    /// What it may own now, by topic and partition (what it is revoking is in `revoking`).
    pub partitions: Vec<(String, u32)>,
    /// What it must give up, still its own until it acknowledges giving it up.
    pub revoking: Vec<(String, u32)>,
}

/// A partition's committed offset and lag. The log's numbers are `None` when they could not be
/// read (the topic is gone, no leader answered); `error` then says why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionLag {
    pub topic: String,
    pub partition: u32,
    /// The next offset the group will read; `None` when it committed none here.
    pub committed_offset: Option<u64>,
    /// The member assigned the partition, if any.
    pub owner: Option<String>,
    pub log_start_offset: Option<u64>,
    pub high_watermark: Option<u64>,
    /// Records not consumed yet: high watermark - committed offset (from the log start without a
    /// commit); 0 when the group is at or past the end.
    pub lag: Option<u64>,
    /// Age of the oldest record not consumed yet: now - its timestamp (ms); 0 without lag.
    pub lag_ms: Option<u64>,
    pub error: Option<String>,
}

impl Admin {
    /// The groups of the cluster: every broker lists those it coordinates; the answers are merged
    /// (sorted by name). Fails if a broker cannot be asked, rather than list some groups.
    pub async fn list_groups(&self) -> Result<Vec<GroupListing>> {
        let metadata = self.client.metadata(Some(Vec::new())).await?;
        let mut addrs: Vec<String> = metadata
            .brokers
            .iter()
            .map(|b| format!("{}:{}", b.host, b.port))
            .collect();
        if addrs.is_empty() {
            addrs = self.client.bootstrap_addrs();
        }
        let mut merged: BTreeMap<String, GroupListing> = BTreeMap::new();
        for addr in addrs {
            let listed = self
                .client
                .retrying("list groups", || async {
                    let Response::ListGroups(r) =
                        self.client.request_to(&addr, &Request::ListGroups).await?
                    else {
                        return Err(unexpected("answer to list groups"));
                    };
                    body_error(r.error, r.message)?;
                    Ok(r.groups)
                })
                .await?;
            for g in listed {
                // During a change of coordinator two brokers may both answer for a group.
                merged.entry(g.group.clone()).or_insert(GroupListing {
                    group: g.group,
                    state: g.state,
                    members: g.members,
                });
            }
        }
        Ok(merged.into_values().collect())
    }

    /// A group's state, members and, for every partition it has committed offsets for or is
    /// assigned, its committed offset and lag (from the partitions' leaders). An unknown group is
    /// [`ClientError::Broker`] with `GROUP_ID_NOT_FOUND`.
    pub async fn describe_group(&self, group: &str) -> Result<GroupDescription> {
        let request = Request::DescribeGroup(DescribeGroupRequest {
            group: group.to_string(),
        });
        let request = &request;
        let r = self
            .on_coordinator(group, "describe group", |addr| async move {
                let Response::DescribeGroup(r) = self.client.request_to(&addr, request).await?
                else {
                    return Err(unexpected("answer to describe group"));
                };
                body_error(r.error, r.message.clone())?;
                Ok(r)
            })
            .await?;
        let offsets = self.lags(&r).await;
        let pairs = |v: &[TopicPartitions]| -> Vec<(String, u32)> {
            let set: BTreeSet<(String, u32)> = v
                .iter()
                .flat_map(|t| t.partitions.iter().map(|p| (t.topic.clone(), *p)))
                .collect();
            set.into_iter().collect()
        };
        let members = r
            .members
            .iter()
            .map(|m| GroupMember {
                member_id: m.member_id.clone(),
                instance_id: (!m.instance_id.is_empty()).then(|| m.instance_id.clone()),
                client_id: m.client_id.clone(),
                host: m.host.clone(),
                member_epoch: m.member_epoch,
                subscription: m.topics.clone(),
                subscription_regex: (!m.regex.is_empty()).then(|| m.regex.clone()),
                partitions: pairs(&m.assigned),
                revoking: pairs(&m.revoking),
            })
            .collect();
        Ok(GroupDescription {
            group: r.group,
            state: r.state,
            epoch: r.epoch,
            assignor: r.assignor,
            members,
            offsets,
        })
    }

    /// The lag rows of a described group: every partition of every topic it committed or is
    /// assigned, looked up [`LAG_LOOKUPS`] at a time.
    async fn lags(&self, r: &DescribeGroupResponse) -> Vec<PartitionLag> {
        let committed: BTreeMap<(String, u32), u64> = r
            .offsets
            .iter()
            .filter_map(|o| {
                Some((
                    (o.topic.clone(), o.partition),
                    u64::try_from(o.offset).ok()?,
                ))
            })
            .collect();
        let mut owners: BTreeMap<(String, u32), String> = BTreeMap::new();
        for m in &r.members {
            for t in m.assigned.iter().chain(&m.revoking) {
                for p in &t.partitions {
                    owners.insert((t.topic.clone(), *p), m.member_id.clone());
                }
            }
        }
        let topics: BTreeSet<&str> = committed
            .keys()
            .chain(owners.keys())
            .map(|(t, _)| t.as_str())
            .collect();
        // Every partition of each topic; a topic whose metadata cannot be read keeps the
        // partitions the group names, with the reason.
        let mut rows: BTreeMap<(String, u32), Option<String>> = BTreeMap::new();
        for topic in topics {
            let why = match self.client.describe(topic).await {
                Ok(t) => {
                    rows.extend(
                        t.partitions
                            .iter()
                            .map(|p| ((topic.into(), p.partition), None)),
                    );
                    "the topic has no such partition".to_string()
                }
                Err(e) => format!("cannot read the topic's metadata: {e}"),
            };
            for tp in committed.keys().chain(owners.keys()) {
                if tp.0 == topic && !rows.contains_key(tp) {
                    rows.insert(tp.clone(), Some(why.clone()));
                }
            }
        }
        let limit = Arc::new(Semaphore::new(LAG_LOOKUPS));
        let mut tasks = JoinSet::new();
        for ((topic, partition), failed) in rows {
            let mut row = PartitionLag {
                committed_offset: committed.get(&(topic.clone(), partition)).copied(),
                owner: owners.get(&(topic.clone(), partition)).cloned(),
                topic,
                partition,
                log_start_offset: None,
                high_watermark: None,
                lag: None,
                lag_ms: None,
                error: failed,
            };
            let client = self.client.clone();
            let limit = limit.clone();
            tasks.spawn(async move {
                if row.error.is_none() {
                    let _permit = limit.acquire().await;
                    if let Err(e) = partition_lag(&client, &mut row).await {
                        row.error = Some(e.to_string());
                    }
                }
                row
            });
        }
        let mut out: Vec<PartitionLag> = Vec::new();
        while let Some(joined) = tasks.join_next().await {
            match joined {
                Ok(row) => out.push(row),
                Err(e) => debug!(error = %e, "lag lookup task failed"),
            }
        }
        out.sort_by(|a, b| (&a.topic, a.partition).cmp(&(&b.topic, b.partition)));
        out
    }

    /// Moves `group`'s committed offsets of `topic` (its `partition`, or all of them) to where
    /// `spec` says, resolved per partition on its leader. Works on a live group too: the
    /// coordinator takes the partitions from their members, moves the offsets and hands them back,
    /// and answers once done. Returns the new offsets by partition.
    pub async fn reset_offsets(
        &self,
        group: &str,
        topic: &str,
        partition: Option<u32>,
        spec: ResetSpec,
    ) -> Result<Vec<(String, u32, u64)>> {
        if let ResetSpec::Timestamp(ts) = spec {
            if ts < 0 {
                return Err(ClientError::InvalidArgument(format!(
                    "timestamp {ts} is negative"
                )));
            }
        }
        let meta = self.client.describe(topic).await?;
        let mut partitions: Vec<u32> = meta.partitions.iter().map(|p| p.partition).collect();
        partitions.sort_unstable();
        if let Some(p) = partition {
            if !partitions.contains(&p) {
                return Err(ClientError::InvalidArgument(format!(
                    "topic '{topic}' has no partition {p} (it has {})",
                    partitions.len()
                )));
            }
            partitions = vec![p];
        }
        let committed = match spec {
            ResetSpec::ShiftBy(_) => self.committed(group, topic, &partitions).await?,
            _ => BTreeMap::new(),
        };
        let mut offsets = Vec::with_capacity(partitions.len());
        for p in partitions {
            let b: Bounds = partition_log::bounds(&self.client, topic, p).await?;
            let at_timestamp = match spec {
                ResetSpec::Timestamp(ts) => {
                    partition_log::offset_for_timestamp(&self.client, topic, p, ts).await?
                }
                _ => None,
            };
            let what = format!("partition {p} of topic '{topic}'");
            let to =
                partition_log::resolve(spec, b, committed.get(&p).copied(), at_timestamp, &what)?;
            offsets.push((topic.to_string(), p, to));
        }
        let request = Request::ResetOffsets(ResetOffsetsRequest {
            group: group.to_string(),
            offsets: offsets.clone(),
        });
        let request = &request;
        let wait = self.client.config().request_timeout.max(RESET_WAIT);
        self.on_coordinator(group, "reset offsets", |addr| async move {
            let r = self
                .client
                .request_to_with_timeout(&addr, request, wait)
                .await?;
            let Response::ResetOffsets(r) = r else {
                return Err(unexpected("answer to reset offsets"));
            };
            body_error(r.error, r.message)
        })
        .await?;
        Ok(offsets)
    }

    /// `group`'s committed offsets of `partitions` of `topic` (those without one are left out).
    async fn committed(
        &self,
        group: &str,
        topic: &str,
        partitions: &[u32],
    ) -> Result<BTreeMap<u32, u64>> {
        let request = Request::OffsetFetch(OffsetFetchRequest {
            group: group.to_string(),
            partitions: vec![TopicPartitions {
                topic: topic.to_string(),
                partitions: partitions.to_vec(),
            }],
        });
        let request = &request;
        let r = self
            .on_coordinator(group, "fetch offsets", |addr| async move {
                let Response::OffsetFetch(r) = self.client.request_to(&addr, request).await? else {
                    return Err(unexpected("answer to offset fetch"));
                };
                body_error(r.error, r.message.clone())?;
                Ok(r)
            })
            .await?;
        Ok(r.offsets
            .iter()
            .filter(|o| o.topic == topic)
            .filter_map(|o| Some((o.partition, u64::try_from(o.offset).ok()?)))
            .collect())
    }

    /// Deletes a group without members and its committed offsets. A group with members is
    /// `NON_EMPTY_GROUP`, an unknown one `GROUP_ID_NOT_FOUND` (both [`ClientError::Broker`]).
    /// Sets a group's own settings (`consumer.session.timeout.ms`, `consumer.heartbeat.interval.ms`;
    /// an empty value: back to the coordinator broker's default). Refused with `INVALID_CONFIG`
    /// outside the broker's bounds or with a heartbeat interval above half the session.
    pub async fn alter_group_config(
        &self,
        group: &str,
        configs: &[(String, String)],
    ) -> Result<()> {
        let request = Request::AlterGroupConfig(AlterGroupConfigRequest {
            group: group.to_string(),
            configs: configs.to_vec(),
        });
        let request = &request;
        self.on_coordinator(group, "alter group config", |addr| async move {
            let Response::AlterGroupConfig(r) = self.client.request_to(&addr, request).await?
            else {
                return Err(unexpected("answer to alter group config"));
            };
            body_error(r.error, r.message)
        })
        .await
    }

    pub async fn delete_group(&self, group: &str) -> Result<()> {
        let request = Request::DeleteGroup(DeleteGroupRequest {
            group: group.to_string(),
        });
        let request = &request;
        self.on_coordinator(group, "delete group", |addr| async move {
            let Response::DeleteGroup(r) = self.client.request_to(&addr, request).await? else {
                return Err(unexpected("answer to delete group"));
            };
            body_error(r.error, r.message)
        })
        .await
    }
}

/// Fills in the log's numbers of `row`: bounds, lag and, with lag, the age of the oldest
/// unconsumed record.
async fn partition_lag(client: &Client, row: &mut PartitionLag) -> Result<()> {
    let b = partition_log::bounds(client, &row.topic, row.partition).await?;
    row.log_start_offset = Some(b.log_start);
    row.high_watermark = Some(b.high_watermark);
    let lag = partition_log::lag(row.committed_offset, b);
    row.lag = Some(lag);
    let mut lag_ms = 0;
    if lag > 0 {
        let from = partition_log::first_unconsumed(row.committed_offset, b);
        let ts =
            partition_log::timestamp_at(client, &row.topic, row.partition, from, b.high_watermark)
                .await?;
        // No data record before the end (only control batches): nothing waits.
        if let Some(ts) = ts {
            lag_ms = partition_log::age_ms(partition_log::now_ms(), ts);
        }
    }
    row.lag_ms = Some(lag_ms);
    Ok(())
}
