//! The wire protocol: length-prefixed frames carrying a request or a response.
//!
//! ```text
//! request frame:  u32 length | u16 api key | u16 api version | u32 correlation id | body
//! response frame: u32 length | u32 correlation id | u16 error code | string message | body
//! ```
//!
//! All integers little-endian; `length` counts the bytes after itself. A response with a non-zero
//! top-level error code (unknown API, unsupported version, unparseable body, ...) has no body.
//!
//! Each API has its own module (`api_versions`, `metadata`, `produce`, ...) holding its request and
//! response types, their encoding and decoding side by side, its body layout and its version range;
//! the API table below lists them once and generates [`ApiKey`], [`Request`] and [`Response`] from
//! them. Types several APIs share are in `shared`. Byte diagrams are also in `docs/protocol.md`.
//!
//! Body conventions: strings are `u16` length + UTF-8, byte strings `u32` length + bytes, arrays
//! `u32` count + elements, optional values a `bool` flag then the value. Partition record sets are
//! one or more whole record batches back to back (the same bytes the broker stores).
//!
//! Decoding is pure and total: any byte string yields a value or a [`ProtocolError`].

pub mod codec;
mod shared;
mod table;

use bytes::{Buf, Bytes};
use thiserror::Error;

pub use shared::{AdminResult, TopicPartitions, TopicResult, TopicResults};
use table::define_apis;

/// Bytes of the length prefix.
pub const LENGTH_PREFIX: usize = 4;
/// Bytes of a request header after the length prefix.
pub const REQUEST_HEADER_LEN: usize = 8;
/// Default largest frame a peer accepts (length prefix excluded).
pub const DEFAULT_MAX_FRAME: usize = 64 << 20;

/// Why bytes are not a valid message.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ProtocolError {
    #[error("message truncated while reading {0}")]
    Truncated(&'static str),
    #[error("invalid {0}")]
    Invalid(&'static str),
    #[error("unknown API key {0}")]
    UnknownApi(u16),
    #[error("API {api:?} does not support version {version}")]
    UnsupportedVersion { api: ApiKey, version: u16 },
}

// The API table: every API, declared once. A row reads
//
//     /// optional doc comment (for the `ApiKey` variant)
//     Name = key, module, (request type) => response type;
//
// - `Name`: the variant of `ApiKey`, `Request` and `Response`;
// - `key`: the API's number on the wire (the compiler refuses a number used twice);
// - `module`: the file `wire/<module>.rs`, holding the API's request and response types, their
//   `table::Body` impls (encode and decode side by side) and its version range
//   `pub(super) const VERSIONS: (u16, u16)` (lowest, highest; checked lo <= hi at compile time).
//   The row declares the module and re-exports its public items as `wire::<Item>`;
// - `(request type)`: the `Request` variant's payload; `()` is a request without a body (a unit
//   variant, as `Request::ApiVersions`);
// - `response type`: the `Response` variant's payload (a shared type may answer several APIs).
//
// A new API is one module and one row. `table.rs` expands the rows.
define_apis! {
    ApiVersions     =  0, api_versions,     ()                       => ApiVersionsResponse;
    Metadata        =  1, metadata,         (MetadataRequest)        => MetadataResponse;
    CreateTopics    =  2, create_topics,    (CreateTopicsRequest)    => TopicResults;
    DeleteTopics    =  3, delete_topics,    (DeleteTopicsRequest)    => TopicResults;
    Produce         =  4, produce,          (ProduceRequest)         => ProduceResponse;
    Fetch           =  5, fetch,            (FetchRequest)           => FetchResponse;
    ListOffsets     =  6, list_offsets,     (ListOffsetsRequest)     => ListOffsetsResponse;
    /// A producer's id and epoch for idempotent writes.
    InitProducerId  =  7, init_producer_id, (InitProducerIdRequest)  => InitProducerIdResponse;
    /// Which broker coordinates a consumer group.
    FindCoordinator =  8, find_coordinator, (FindCoordinatorRequest) => FindCoordinatorResponse;
    /// A consumer group member's join, heartbeat and leave (see [`GroupHeartbeatRequest`]).
    GroupHeartbeat  =  9, group_heartbeat,  (GroupHeartbeatRequest)  => GroupHeartbeatResponse;
    OffsetCommit    = 10, offset_commit,    (OffsetCommitRequest)    => OffsetCommitResponse;
    OffsetFetch     = 11, offset_fetch,     (OffsetFetchRequest)     => OffsetFetchResponse;
    /// Admin: the groups this broker coordinates.
    ListGroups      = 12, list_groups,      ()                       => ListGroupsResponse;
    /// Admin: a group's members, assignment and committed offsets.
    DescribeGroup   = 13, describe_group,   (DescribeGroupRequest)   => DescribeGroupResponse;
    /// Admin: move a group's committed offsets (also on a live group).
    ResetOffsets    = 14, reset_offsets,    (ResetOffsetsRequest)    => AdminResult;
    /// Admin: delete a group without members and its offsets.
    DeleteGroup     = 15, delete_group,     (DeleteGroupRequest)     => AdminResult;
    /// Admin: a group's own session timeout and heartbeat interval.
    AlterGroupConfig = 16, alter_group_config, (AlterGroupConfigRequest) => AdminResult;
    /// Broker to broker: raft messages of every group (see [`RaftRequest`]).
    Raft            = 20, raft,             (RaftRequest)            => RaftResponse;
    /// Broker to broker: a broker started with `--join` asks to be added to the cluster.
    AddBroker       = 21, add_broker,       (AddBrokerRequest)       => AdminResult;
    /// Admin: move a partition to a new replica set.
    AlterReplicas   = 22, alter_replicas,   (AlterReplicasRequest)   => AdminResult;
    /// Broker to broker: a metadata command for the metadata leader to propose.
    MetadataCommand = 23, metadata_command, (MetadataCommandRequest) => AdminResult;
    /// Admin: define a window operator (its sink created compacted when missing).
    CreateOperator  = 24, create_operator,  (CreateOperatorRequest)  => AdminResult;
    /// Admin: every window operator of the cluster.
    ListOperators   = 25, list_operators,   ()                       => ListOperatorsResponse;
    /// Admin: one window operator's definition, state and source partitions.
    DescribeOperator = 26, describe_operator, (DescribeOperatorRequest) => DescribeOperatorResponse;
    /// Admin: pause or resume a window operator.
    AlterOperator   = 27, alter_operator,   (AlterOperatorRequest)   => AdminResult;
    /// Admin: delete a window operator's definition (its topics stay).
    DeleteOperator  = 28, delete_operator,  (DeleteOperatorRequest)  => AdminResult;
    /// Admin: change a live topic's settings (answered with its configs after the change).
    AlterTopicConfigs = 29, alter_topic_configs, (AlterTopicConfigsRequest) => AlterTopicConfigsResponse;
    /// Admin (and broker to broker, `local`): move leadership to each partition's preferred
    /// replica where it is up and in sync.
    BalanceLeaders  = 30, balance_leaders,  (BalanceLeadersRequest)  => BalanceLeadersResponse;
    /// Admin (and broker to broker): the receiving broker's raft state and replicas, with their
    /// offsets and sizes on disk.
    DescribeReplicas = 31, describe_replicas, (DescribeReplicasRequest) => DescribeReplicasResponse;
}

/// An error code with a stable number. Unknown numbers from newer peers are kept as they are.
/// The default is [`ErrorCode::NONE`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct ErrorCode(pub u16);

impl ErrorCode {
    pub const NONE: ErrorCode = ErrorCode(0);
    pub const UNKNOWN: ErrorCode = ErrorCode(1);
    pub const CORRUPT_MESSAGE: ErrorCode = ErrorCode(2);
    pub const UNKNOWN_TOPIC_OR_PARTITION: ErrorCode = ErrorCode(3);
    pub const INVALID_REQUEST: ErrorCode = ErrorCode(4);
    pub const OFFSET_OUT_OF_RANGE: ErrorCode = ErrorCode(5);
    pub const NOT_LEADER: ErrorCode = ErrorCode(6);
    pub const REQUEST_TIMED_OUT: ErrorCode = ErrorCode(7);
    pub const TOPIC_ALREADY_EXISTS: ErrorCode = ErrorCode(8);
    pub const INVALID_PARTITIONS: ErrorCode = ErrorCode(9);
    pub const INVALID_CONFIG: ErrorCode = ErrorCode(10);
    pub const UNSUPPORTED_VERSION: ErrorCode = ErrorCode(11);
    pub const MESSAGE_TOO_LARGE: ErrorCode = ErrorCode(12);
    pub const THROTTLED: ErrorCode = ErrorCode(13);
    pub const STORAGE_ERROR: ErrorCode = ErrorCode(14);
    pub const INVALID_TOPIC: ErrorCode = ErrorCode(15);
    pub const UNKNOWN_API: ErrorCode = ErrorCode(16);
    pub const BROKER_SHUTTING_DOWN: ErrorCode = ErrorCode(17);
    pub const INVALID_REPLICATION_FACTOR: ErrorCode = ErrorCode(18);
    /// An idempotent batch's sequence is not the next one its producer owes this partition.
    pub const OUT_OF_ORDER_SEQUENCE: ErrorCode = ErrorCode(19);
    /// A newer epoch of this producer id exists: this producer may not write any more.
    pub const PRODUCER_FENCED: ErrorCode = ErrorCode(20);
    /// The partition does not know this producer (its state expired): bump the epoch, start at 0.
    pub const UNKNOWN_PRODUCER_ID: ErrorCode = ErrorCode(21);
    /// The partition tracks as many producer ids as it may; a new one is refused.
    pub const TOO_MANY_PRODUCERS: ErrorCode = ErrorCode(22);
    /// This broker does not coordinate the group (any more): find the coordinator again.
    pub const NOT_COORDINATOR: ErrorCode = ErrorCode(23);
    /// The group's coordinator is not ready (no leader for its offsets partition yet, or the
    /// offsets topic is being created): retry after a backoff.
    pub const COORDINATOR_NOT_AVAILABLE: ErrorCode = ErrorCode(24);
    /// The group has no member with this id (it left, or was evicted): join again.
    pub const UNKNOWN_MEMBER_ID: ErrorCode = ErrorCode(25);
    /// The member's epoch is not the one the coordinator gave it: it was fenced; join again.
    pub const FENCED_MEMBER_EPOCH: ErrorCode = ErrorCode(26);
    /// A commit from an epoch older than the partition's assignment, or for a partition the
    /// member does not own: refused; the member's next heartbeat tells it what it owns.
    pub const STALE_MEMBER_EPOCH: ErrorCode = ErrorCode(27);
    /// No group with this id.
    pub const GROUP_ID_NOT_FOUND: ErrorCode = ErrorCode(28);
    /// The coordinator has no assignor by that name.
    pub const UNSUPPORTED_ASSIGNOR: ErrorCode = ErrorCode(29);
    /// A subscription regex that does not compile.
    pub const INVALID_REGULAR_EXPRESSION: ErrorCode = ErrorCode(30);
    /// The group still has members.
    pub const NON_EMPTY_GROUP: ErrorCode = ErrorCode(31);
    /// The group has as many members as it may; a new one is refused.
    pub const GROUP_MAX_SIZE_REACHED: ErrorCode = ErrorCode(32);
    /// An empty or too long group id.
    pub const INVALID_GROUP_ID: ErrorCode = ErrorCode(33);
    /// No window operator with this name.
    pub const OPERATOR_NOT_FOUND: ErrorCode = ErrorCode(34);
    /// A window operator with this name exists.
    pub const OPERATOR_ALREADY_EXISTS: ErrorCode = ErrorCode(35);
    /// A window operator definition that breaks a rule (the message names the field and the
    /// rule): bad name, window, time or value source, aggregate, bound, or topics.
    pub const INVALID_OPERATOR: ErrorCode = ErrorCode(36);
    /// An idempotent batch older than the batches its producer's partition state remembers, yet at
    /// or before its last sequence: it was written before (sequences have no gaps), but its offsets
    /// are forgotten. A producer that resends deterministic batches treats it as success.
    pub const DUPLICATE_SEQUENCE: ErrorCode = ErrorCode(37);

    pub fn is_ok(self) -> bool {
        self == ErrorCode::NONE
    }

    /// Whether the same request may succeed if sent again later (after a backoff or a metadata
    /// refresh).
    pub fn is_retriable(self) -> bool {
        matches!(
            self,
            ErrorCode::NOT_LEADER
                | ErrorCode::REQUEST_TIMED_OUT
                | ErrorCode::THROTTLED
                | ErrorCode::BROKER_SHUTTING_DOWN
                | ErrorCode::UNKNOWN_TOPIC_OR_PARTITION
                | ErrorCode::NOT_COORDINATOR
                | ErrorCode::COORDINATOR_NOT_AVAILABLE
        )
    }

    pub fn name(self) -> &'static str {
        match self.0 {
            0 => "NONE",
            1 => "UNKNOWN",
            2 => "CORRUPT_MESSAGE",
            3 => "UNKNOWN_TOPIC_OR_PARTITION",
            4 => "INVALID_REQUEST",
            5 => "OFFSET_OUT_OF_RANGE",
            6 => "NOT_LEADER",
            7 => "REQUEST_TIMED_OUT",
            8 => "TOPIC_ALREADY_EXISTS",
            9 => "INVALID_PARTITIONS",
            10 => "INVALID_CONFIG",
            11 => "UNSUPPORTED_VERSION",
            12 => "MESSAGE_TOO_LARGE",
            13 => "THROTTLED",
            14 => "STORAGE_ERROR",
            15 => "INVALID_TOPIC",
            16 => "UNKNOWN_API",
            17 => "BROKER_SHUTTING_DOWN",
            18 => "INVALID_REPLICATION_FACTOR",
            19 => "OUT_OF_ORDER_SEQUENCE",
            20 => "PRODUCER_FENCED",
            21 => "UNKNOWN_PRODUCER_ID",
            22 => "TOO_MANY_PRODUCERS",
            23 => "NOT_COORDINATOR",
            24 => "COORDINATOR_NOT_AVAILABLE",
            25 => "UNKNOWN_MEMBER_ID",
            26 => "FENCED_MEMBER_EPOCH",
            27 => "STALE_MEMBER_EPOCH",
            28 => "GROUP_ID_NOT_FOUND",
            29 => "UNSUPPORTED_ASSIGNOR",
            30 => "INVALID_REGULAR_EXPRESSION",
            31 => "NON_EMPTY_GROUP",
            32 => "GROUP_MAX_SIZE_REACHED",
            33 => "INVALID_GROUP_ID",
            34 => "OPERATOR_NOT_FOUND",
            35 => "OPERATOR_ALREADY_EXISTS",
            36 => "INVALID_OPERATOR",
            37 => "DUPLICATE_SEQUENCE",
            _ => "UNRECOGNIZED",
        }
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({})", self.name(), self.0)
    }
}

impl From<&ProtocolError> for ErrorCode {
    fn from(e: &ProtocolError) -> Self {
        match e {
            ProtocolError::UnknownApi(_) => ErrorCode::UNKNOWN_API,
            ProtocolError::UnsupportedVersion { .. } => ErrorCode::UNSUPPORTED_VERSION,
            _ => ErrorCode::INVALID_REQUEST,
        }
    }
}

/// The fixed part of a request frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RequestHeader {
    /// Raw key: may be unknown, so the broker can still answer by correlation id.
    pub api_key: u16,
    pub api_version: u16,
    pub correlation_id: u32,
}

impl RequestHeader {
    /// Splits a frame (length prefix already removed) into its header and body.
    pub fn decode(mut frame: Bytes) -> Result<(RequestHeader, Bytes), ProtocolError> {
        if frame.len() < REQUEST_HEADER_LEN {
            return Err(ProtocolError::Truncated("request header"));
        }
        let api_key = frame.get_u16_le();
        let api_version = frame.get_u16_le();
        let correlation_id = frame.get_u32_le();
        Ok((
            RequestHeader {
                api_key,
                api_version,
                correlation_id,
            },
            frame,
        ))
    }
}

/// Prefixes `body` chunks with the frame length.
fn frame(head: Vec<u8>, body: Vec<Bytes>) -> Vec<Bytes> {
    let len = head.len() + body.iter().map(Bytes::len).sum::<usize>();
    let mut first = Vec::with_capacity(LENGTH_PREFIX + head.len());
    first.extend_from_slice(&(len as u32).to_le_bytes());
    first.extend_from_slice(&head);
    let mut out = Vec::with_capacity(body.len() + 1);
    out.push(Bytes::from(first));
    out.extend(body);
    out
}

/// Encodes a request frame (length prefix included) as chunks.
pub fn encode_request(request: &Request, correlation_id: u32) -> Vec<Bytes> {
    let mut head = Vec::with_capacity(REQUEST_HEADER_LEN);
    head.extend_from_slice(&(request.api_key() as u16).to_le_bytes());
    head.extend_from_slice(&0u16.to_le_bytes());
    head.extend_from_slice(&correlation_id.to_le_bytes());
    frame(head, request.encode_body())
}

/// Decodes a request frame (length prefix removed). The header comes back even when the body is bad,
/// so the broker can answer that correlation id with an error.
pub fn decode_request(
    frame: Bytes,
) -> Result<(RequestHeader, Result<Request, ProtocolError>), ProtocolError> {
    let (header, body) = RequestHeader::decode(frame)?;
    let req = ApiKey::from_u16(header.api_key).and_then(|api| {
        api.check_version(header.api_version)?;
        Request::decode_body(api, body)
    });
    Ok((header, req))
}

/// Encodes a successful response frame.
pub fn encode_response(correlation_id: u32, response: &Response) -> Vec<Bytes> {
    let mut head = Vec::with_capacity(8);
    head.extend_from_slice(&correlation_id.to_le_bytes());
    head.extend_from_slice(&ErrorCode::NONE.0.to_le_bytes());
    head.extend_from_slice(&0u16.to_le_bytes());
    frame(head, response.encode_body())
}

/// Encodes a response frame that carries only a top-level error.
pub fn encode_error_response(correlation_id: u32, code: ErrorCode, message: &str) -> Vec<Bytes> {
    let mut w = codec::Writer::new();
    w.string(message);
    let mut head = Vec::with_capacity(6);
    head.extend_from_slice(&correlation_id.to_le_bytes());
    head.extend_from_slice(&code.0.to_le_bytes());
    let msg = w.finish();
    let mut all = head;
    for c in msg {
        all.extend_from_slice(&c);
    }
    frame(all, Vec::new())
}

/// The correlation id at the front of a response frame (length prefix removed).
pub fn response_correlation_id(frame: &[u8]) -> Result<u32, ProtocolError> {
    if frame.len() < 4 {
        return Err(ProtocolError::Truncated("response header"));
    }
    Ok(u32::from_le_bytes([frame[0], frame[1], frame[2], frame[3]]))
}

/// A top-level error answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopLevelError {
    pub code: ErrorCode,
    pub message: String,
}

/// Decodes a response frame (length prefix removed) to the API the caller sent.
pub fn decode_response(
    api: ApiKey,
    frame: Bytes,
) -> Result<(u32, Result<Response, TopLevelError>), ProtocolError> {
    let mut r = codec::Reader::new(frame);
    let corr = r.u32("correlation id")?;
    let code = ErrorCode(r.u16("error code")?);
    let message = r.string("error message")?;
    if !code.is_ok() {
        r.finish()?;
        return Ok((corr, Err(TopLevelError { code, message })));
    }
    let resp = Response::decode_body(api, &mut r)?;
    r.finish()?;
    Ok((corr, Ok(resp)))
}

#[cfg(test)]
mod tests;
