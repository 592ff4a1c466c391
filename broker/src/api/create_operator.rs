//! CreateOperator (key 24): [`Broker::create_operator`]; the wire definition's empty topics and
//! zero idle timeout mean none.

use std::sync::Arc;

use sluice_protocol::wire::{CreateOperatorRequest, OperatorDefinition, Response};

use super::{admin_result, Answer};
use crate::broker::Broker;
use crate::cluster::operators::OperatorDef;

pub async fn handle(broker: Arc<Broker>, req: CreateOperatorRequest) -> Answer {
    let outcome = broker.create_operator(from_wire(req.definition)).await;
    Ok(Response::CreateOperator(admin_result(outcome)))
}

/// The typed definition of a wire one (empty strings and zero ms are "none").
pub(super) fn from_wire(d: OperatorDefinition) -> OperatorDef {
    let none_if_empty = |s: String| (!s.is_empty()).then_some(s);
    OperatorDef {
        name: d.name,
        source: d.source,
        sink: d.sink,
        window: d.window,
        time: d.time,
        value: d.value,
        aggregates: d.aggregates,
        out_of_orderness_ms: d.out_of_orderness_ms,
        allowed_lateness_ms: d.allowed_lateness_ms,
        late_topic: none_if_empty(d.late_topic),
        dead_letter_topic: none_if_empty(d.dead_letter_topic),
        idle_timeout_ms: (d.idle_timeout_ms != 0).then_some(d.idle_timeout_ms),
        max_state_bytes: d.max_state_bytes,
    }
}

/// The wire form of a stored definition.
pub(super) fn to_wire(d: &OperatorDef) -> OperatorDefinition {
    OperatorDefinition {
        name: d.name.clone(),
        source: d.source.clone(),
        sink: d.sink.clone(),
        window: d.window.clone(),
        time: d.time.clone(),
        value: d.value.clone(),
        aggregates: d.aggregates.clone(),
        out_of_orderness_ms: d.out_of_orderness_ms,
        allowed_lateness_ms: d.allowed_lateness_ms,
        late_topic: d.late_topic.clone().unwrap_or_default(),
        dead_letter_topic: d.dead_letter_topic.clone().unwrap_or_default(),
        idle_timeout_ms: d.idle_timeout_ms.unwrap_or(0),
        max_state_bytes: d.max_state_bytes,
    }
}
