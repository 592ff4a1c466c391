//! ListGroups (key 12): the groups this broker coordinates.

use std::sync::Arc;

use sluice_protocol::wire::{ErrorCode, GroupListing, ListGroupsResponse, Response};

use super::Answer;
use crate::broker::Broker;

pub async fn handle(broker: Arc<Broker>, _req: ()) -> Answer {
    let groups = broker
        .groups
        .list()
        .into_iter()
        .map(|(group, g)| GroupListing {
            group,
            state: g.state_name().to_string(),
            members: g.members.len() as u32,
        })
        .collect();
    Ok(Response::ListGroups(ListGroupsResponse {
        error: ErrorCode::NONE,
        message: String::new(),
        groups,
    }))
}
