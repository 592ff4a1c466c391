//! DescribeGroup (key 13): a group's state, members and committed offsets, from its coordinator.

use std::collections::BTreeSet;
use std::sync::Arc;

use sluice_protocol::wire::{
    DescribeGroupRequest, DescribeGroupResponse, ErrorCode, GroupMemberDescription, Response,
    TopicPartitions,
};

use super::offset_fetch::to_wire;
use super::Answer;
use crate::admin::groups::committed;
use crate::broker::Broker;

pub async fn handle(broker: Arc<Broker>, req: DescribeGroupRequest) -> Answer {
    let resp = match broker.describe_group(&req.group) {
        Ok(g) => {
            let tps = |v: &[(String, u32, i32)]| {
                let set: BTreeSet<(String, u32)> =
                    v.iter().map(|(t, p, _)| (t.clone(), *p)).collect();
                TopicPartitions::group(&set)
            };
            DescribeGroupResponse {
                error: ErrorCode::NONE,
                message: String::new(),
                group: req.group.clone(),
                state: g.state_name().to_string(),
                epoch: g.epoch(),
                assignor: g
                    .meta
                    .as_ref()
                    .map(|m| m.assignor.clone())
                    .unwrap_or_default(),
                members: g
                    .members
                    .iter()
                    .map(|(id, m)| GroupMemberDescription {
                        member_id: id.clone(),
                        instance_id: m.instance_id.clone(),
                        client_id: m.client_id.clone(),
                        host: m.host.clone(),
                        member_epoch: m.epoch,
                        topics: m.topics.clone(),
                        regex: m.regex.clone(),
                        assigned: tps(&m.assigned),
                        revoking: tps(&m.revoking),
                    })
                    .collect(),
                offsets: committed(&g, &BTreeSet::new())
                    .into_iter()
                    .map(to_wire)
                    .collect(),
            }
        }
        Err(e) => {
            let (error, message) = e.into_parts();
            DescribeGroupResponse {
                error,
                message,
                group: req.group,
                ..DescribeGroupResponse::default()
            }
        }
    };
    Ok(Response::DescribeGroup(resp))
}
