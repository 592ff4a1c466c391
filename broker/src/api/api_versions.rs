//! ApiVersions (key 0): the APIs and version ranges this build speaks, from the protocol's table.
//! Also the peers' liveness ping.

use std::sync::Arc;

use sluice_protocol::wire::{ApiKey, ApiVersionsResponse, Response};

use super::{Connection, Pending};
use crate::broker::Broker;

pub async fn handle(_broker: &Arc<Broker>, _conn: &mut Connection, _req: ()) -> Pending {
    Pending::Ready(Ok(Response::ApiVersions(ApiVersionsResponse {
        apis: ApiKey::ALL
            .iter()
            .map(|k| {
                let (lo, hi) = k.versions();
                (*k as u16, lo, hi)
            })
            .collect(),
    })))
}
