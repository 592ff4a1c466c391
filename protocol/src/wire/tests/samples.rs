//! One hand-made request and response per API, and the exact bytes their frames encode to. The hex
//! was captured from the encoder as of 7748721, before the protocol was split into one module per
//! API: the byte format must never change by accident. A format change on purpose updates the hex
//! here (and `docs/protocol.md`) in the same commit. The consumer-group APIs (keys 8 to 15) were
//! captured when they were added, and their bytes checked field by field against the layouts in
//! their modules' docs. So were the operator APIs (keys 24 to 28), AlterTopicConfigs (key 29),
//! BalanceLeaders (key 30) and DescribeReplicas (key 31, checked against a layout computed apart
//! from the encoder).

use super::*;

pub(super) fn requests() -> Vec<Request> {
    vec![
        Request::ApiVersions,
        Request::Metadata(MetadataRequest {
            topics: Some(vec!["a".into(), "bc".into()]),
        }),
        Request::CreateTopics(CreateTopicsRequest {
            topics: vec![NewTopic {
                name: "t".into(),
                partitions: 3,
                replication_factor: 2,
                configs: vec![("retention.ms".into(), "60000".into())],
            }],
        }),
        Request::DeleteTopics(DeleteTopicsRequest {
            names: vec!["t".into(), "u".into()],
        }),
        Request::Produce(ProduceRequest {
            acks: Acks::All,
            timeout_ms: 1500,
            topics: vec![ProduceTopic {
                name: "t".into(),
                partitions: vec![ProducePartition {
                    partition: 1,
                    records: Bytes::from_static(b"batch"),
                }],
            }],
        }),
        Request::Fetch(FetchRequest {
            max_wait_ms: 500,
            min_bytes: 1,
            max_bytes: 1 << 20,
            topics: vec![FetchTopic {
                name: "t".into(),
                partitions: vec![FetchPartition {
                    partition: 2,
                    offset: 42,
                    max_bytes: 4096,
                }],
            }],
        }),
        Request::ListOffsets(ListOffsetsRequest {
            topics: vec![ListOffsetsTopic {
                name: "t".into(),
                partitions: vec![
                    ListOffsetsPartition {
                        partition: 0,
                        spec: EARLIEST,
                    },
                    ListOffsetsPartition {
                        partition: 1,
                        spec: 1_700_000_000_000,
                    },
                ],
            }],
        }),
        Request::InitProducerId(InitProducerIdRequest {
            name: "orders-1".into(),
        }),
        Request::FindCoordinator(FindCoordinatorRequest {
            group: "billing".into(),
        }),
        // A static member leaving for a restart: it keeps its assignment for the session timeout.
        Request::GroupHeartbeat(GroupHeartbeatRequest {
            group: "billing".into(),
            member_id: "m-1".into(),
            member_epoch: STATIC_LEAVE_EPOCH,
            instance_id: "host-3".into(),
            client_id: "cli".into(),
            topics: vec!["a".into(), "bc".into()],
            regex: "^o".into(),
            assignor: "uniform".into(),
            session_timeout_ms: 45_000,
            deadline_ms: 300_000,
            owned: vec![
                TopicPartitions {
                    topic: "a".into(),
                    partitions: vec![0, 2],
                },
                TopicPartitions {
                    topic: "bc".into(),
                    partitions: vec![1],
                },
            ],
        }),
        Request::OffsetCommit(OffsetCommitRequest {
            group: "billing".into(),
            member_id: "m-1".into(),
            member_epoch: 12,
            topics: vec![
                OffsetCommitTopic {
                    topic: "a".into(),
                    partitions: vec![
                        OffsetCommitPartition {
                            partition: 0,
                            offset: 42,
                            metadata: "md".into(),
                        },
                        OffsetCommitPartition {
                            partition: 2,
                            offset: 7,
                            metadata: String::new(),
                        },
                    ],
                },
                OffsetCommitTopic {
                    topic: "bc".into(),
                    partitions: vec![OffsetCommitPartition {
                        partition: 1,
                        offset: 1000,
                        metadata: "x".into(),
                    }],
                },
            ],
        }),
        Request::OffsetFetch(OffsetFetchRequest {
            group: "billing".into(),
            partitions: vec![
                TopicPartitions {
                    topic: "a".into(),
                    partitions: vec![0, 2],
                },
                TopicPartitions {
                    topic: "bc".into(),
                    partitions: vec![1],
                },
            ],
        }),
        Request::ListGroups,
        Request::DescribeGroup(DescribeGroupRequest {
            group: "billing".into(),
        }),
        Request::ResetOffsets(ResetOffsetsRequest {
            group: "billing".into(),
            offsets: vec![
                ("a".into(), 0, 0),
                ("a".into(), 2, 100),
                ("bc".into(), 1, 1 << 40),
            ],
        }),
        Request::DeleteGroup(DeleteGroupRequest {
            group: "billing".into(),
        }),
        Request::AlterGroupConfig(AlterGroupConfigRequest {
            group: "billing".into(),
            configs: vec![
                (GROUP_SESSION_TIMEOUT.into(), "30000".into()),
                (GROUP_HEARTBEAT_INTERVAL.into(), String::new()),
            ],
        }),
        Request::Raft(RaftRequest {
            group: (7 << 32) | 3,
            kind: 2,
            body: vec![Bytes::from_static(b"vote")],
        }),
        Request::AddBroker(AddBrokerRequest {
            node_id: 4,
            address: "h:9092".into(),
        }),
        Request::AlterReplicas(AlterReplicasRequest {
            topic: "t".into(),
            partition: 5,
            replicas: vec![1, 2, 3],
            complete: true,
        }),
        Request::MetadataCommand(MetadataCommandRequest {
            command: Bytes::from_static(b"{}"),
        }),
        Request::CreateOperator(CreateOperatorRequest {
            definition: definition(),
        }),
        Request::ListOperators,
        Request::DescribeOperator(DescribeOperatorRequest { name: "op".into() }),
        Request::AlterOperator(AlterOperatorRequest {
            name: "op".into(),
            paused: true,
        }),
        Request::DeleteOperator(DeleteOperatorRequest { name: "op".into() }),
        Request::AlterTopicConfigs(AlterTopicConfigsRequest {
            name: "t".into(),
            set: vec![("retention.bytes".into(), "8192".into())],
            delete: vec!["retention.ms".into()],
        }),
        Request::BalanceLeaders(BalanceLeadersRequest { local: true }),
        Request::DescribeReplicas(DescribeReplicasRequest {
            topics: vec!["t".into()],
            partitions: true,
        }),
    ]
}

/// An operator definition with every field set (late topic set, dead-letter topic empty).
fn definition() -> OperatorDefinition {
    OperatorDefinition {
        name: "op".into(),
        source: "a".into(),
        sink: "s".into(),
        window: "sliding:1m:10s".into(),
        time: "field:ts".into(),
        value: "number".into(),
        aggregates: vec!["count".into(), "sum".into()],
        out_of_orderness_ms: 500,
        allowed_lateness_ms: 0,
        late_topic: "l".into(),
        dead_letter_topic: String::new(),
        idle_timeout_ms: 60_000,
        max_state_bytes: 1 << 20,
    }
}

/// Committed offsets as OffsetFetch and DescribeGroup answer them: a member's commit, a partition
/// without one (offset, timestamp and epoch -1), and an admin commit (assignment epoch -1).
fn committed() -> Vec<CommittedOffset> {
    vec![
        CommittedOffset {
            topic: "a".into(),
            partition: 0,
            offset: 42,
            metadata: "md".into(),
            commit_timestamp_ms: 1_700_000_000_000,
            assignment_epoch: 12,
        },
        CommittedOffset {
            topic: "a".into(),
            partition: 2,
            offset: -1,
            metadata: String::new(),
            commit_timestamp_ms: -1,
            assignment_epoch: -1,
        },
        CommittedOffset {
            topic: "bc".into(),
            partition: 1,
            offset: 1 << 40,
            metadata: "reset".into(),
            commit_timestamp_ms: 1_700_000_360_000,
            assignment_epoch: -1,
        },
    ]
}

pub(super) fn responses() -> Vec<Response> {
    let admin = |message: &str| AdminResult {
        error: ErrorCode::NOT_LEADER,
        message: message.into(),
    };
    let topic_results = |name: &str| TopicResults {
        results: vec![TopicResult {
            name: name.into(),
            error: ErrorCode::TOPIC_ALREADY_EXISTS,
            message: "exists".into(),
        }],
    };
    vec![
        Response::ApiVersions(ApiVersionsResponse {
            apis: vec![(0, 0, 0), (4, 0, 1), (23, 0, 0)],
        }),
        Response::Metadata(MetadataResponse {
            brokers: vec![BrokerInfo {
                node_id: 1,
                host: "h".into(),
                port: 9092,
            }],
            controller_id: 1,
            topics: vec![TopicMetadata {
                error: ErrorCode::NONE,
                name: "t".into(),
                partitions: vec![PartitionMetadata {
                    error: ErrorCode::NOT_LEADER,
                    partition: 0,
                    leader: -1,
                    replicas: vec![1, 2],
                    high_watermark: 10,
                    log_start_offset: 3,
                }],
                configs: vec![("cleanup.policy".into(), "compact".into())],
            }],
        }),
        Response::CreateTopics(topic_results("t")),
        Response::DeleteTopics(topic_results("u")),
        Response::Produce(ProduceResponse {
            topics: vec![ProduceTopicResult {
                name: "t".into(),
                partitions: vec![ProducePartitionResult {
                    partition: 1,
                    error: ErrorCode::NONE,
                    message: String::new(),
                    base_offset: 100,
                    log_start_offset: 7,
                }],
            }],
        }),
        Response::Fetch(FetchResponse {
            topics: vec![FetchTopicResult {
                name: "t".into(),
                partitions: vec![FetchPartitionResult {
                    partition: 2,
                    error: ErrorCode::NONE,
                    high_watermark: 50,
                    log_start_offset: 0,
                    records: Bytes::from_static(b"batches"),
                }],
            }],
        }),
        Response::ListOffsets(ListOffsetsResponse {
            topics: vec![ListOffsetsTopicResult {
                name: "t".into(),
                partitions: vec![ListOffsetsPartitionResult {
                    partition: 1,
                    error: ErrorCode::OFFSET_OUT_OF_RANGE,
                    offset: -1,
                }],
            }],
        }),
        Response::InitProducerId(InitProducerIdResponse {
            error: ErrorCode::NONE,
            message: String::new(),
            producer_id: 1000,
            epoch: 3,
        }),
        Response::FindCoordinator(FindCoordinatorResponse {
            error: ErrorCode::NONE,
            message: String::new(),
            node_id: 2,
            host: "h2:9092".into(),
            partition: 17,
        }),
        Response::GroupHeartbeat(GroupHeartbeatResponse {
            error: ErrorCode::NONE,
            message: String::new(),
            member_id: "m-1".into(),
            member_epoch: 12,
            heartbeat_interval_ms: 3000,
            session_timeout_ms: 45_000,
            assignment: vec![
                TopicPartitions {
                    topic: "a".into(),
                    partitions: vec![0],
                },
                TopicPartitions {
                    topic: "bc".into(),
                    partitions: vec![1, 3],
                },
            ],
        }),
        Response::OffsetCommit(OffsetCommitResponse {
            error: ErrorCode::NONE,
            message: String::new(),
            topics: vec![
                PartitionErrors {
                    topic: "a".into(),
                    partitions: vec![
                        PartitionError {
                            partition: 0,
                            error: ErrorCode::NONE,
                            message: String::new(),
                        },
                        PartitionError {
                            partition: 2,
                            error: ErrorCode::STALE_MEMBER_EPOCH,
                            message: "not owned".into(),
                        },
                    ],
                },
                PartitionErrors {
                    topic: "bc".into(),
                    partitions: vec![PartitionError {
                        partition: 1,
                        error: ErrorCode::NONE,
                        message: String::new(),
                    }],
                },
            ],
        }),
        Response::OffsetFetch(OffsetFetchResponse {
            error: ErrorCode::NONE,
            message: String::new(),
            offsets: committed(),
        }),
        Response::ListGroups(ListGroupsResponse {
            error: ErrorCode::NONE,
            message: String::new(),
            groups: vec![
                GroupListing {
                    group: "billing".into(),
                    state: "Stable".into(),
                    members: 3,
                },
                GroupListing {
                    group: "audit".into(),
                    state: "Empty".into(),
                    members: 0,
                },
            ],
        }),
        Response::DescribeGroup(DescribeGroupResponse {
            error: ErrorCode::NONE,
            message: String::new(),
            group: "billing".into(),
            state: "Reconciling".into(),
            epoch: 13,
            assignor: "uniform".into(),
            members: vec![
                GroupMemberDescription {
                    member_id: "m-1".into(),
                    instance_id: "host-3".into(),
                    client_id: "cli".into(),
                    host: "10.0.0.5".into(),
                    member_epoch: 12,
                    topics: vec!["a".into(), "bc".into()],
                    regex: String::new(),
                    assigned: vec![TopicPartitions {
                        topic: "a".into(),
                        partitions: vec![0],
                    }],
                    revoking: vec![TopicPartitions {
                        topic: "a".into(),
                        partitions: vec![2],
                    }],
                },
                GroupMemberDescription {
                    member_id: "m-2".into(),
                    instance_id: String::new(),
                    client_id: "cli2".into(),
                    host: "10.0.0.6".into(),
                    member_epoch: 13,
                    topics: vec![],
                    regex: "^b".into(),
                    assigned: vec![TopicPartitions {
                        topic: "bc".into(),
                        partitions: vec![1, 3],
                    }],
                    revoking: vec![],
                },
            ],
            offsets: committed(),
        }),
        Response::ResetOffsets(AdminResult {
            error: ErrorCode::COORDINATOR_NOT_AVAILABLE,
            message: "loading".into(),
        }),
        Response::DeleteGroup(AdminResult {
            error: ErrorCode::NON_EMPTY_GROUP,
            message: "2 members".into(),
        }),
        Response::AlterGroupConfig(AdminResult {
            error: ErrorCode::INVALID_CONFIG,
            message: "too short".into(),
        }),
        Response::Raft(RaftResponse {
            body: Bytes::from_static(b"ok"),
        }),
        Response::AddBroker(admin("add")),
        Response::AlterReplicas(admin("alter")),
        Response::MetadataCommand(admin("command")),
        Response::CreateOperator(AdminResult {
            error: ErrorCode::INVALID_OPERATOR,
            message: "bad".into(),
        }),
        Response::ListOperators(ListOperatorsResponse {
            error: ErrorCode::NONE,
            message: String::new(),
            operators: vec![OperatorListing {
                name: "op".into(),
                source: "a".into(),
                sink: "s".into(),
                window: "tumbling:10s".into(),
                paused: true,
            }],
        }),
        Response::DescribeOperator(DescribeOperatorResponse {
            error: ErrorCode::NONE,
            message: String::new(),
            definition: Box::new(definition()),
            paused: false,
            created_ms: 1_700_000_000_000,
            partitions: vec![
                OperatorPartition {
                    partition: 0,
                    leader: 1,
                    producer_id: 1000,
                    run: Some(OperatorRunStats {
                        from_leader: true,
                        position: 120,
                        high_watermark: 130,
                        lag_ms: 5,
                        watermark_ms: 1_700_000_000_000,
                        keys: 3,
                        windows: 4,
                        state_bytes: 900,
                        late: 1,
                        bad: 2,
                        emitted: 7,
                        emit_p99_us: 1500,
                        failed: String::new(),
                    }),
                },
                OperatorPartition {
                    partition: 1,
                    leader: -1,
                    producer_id: 1001,
                    run: None,
                },
            ],
        }),
        Response::AlterOperator(AdminResult {
            error: ErrorCode::OPERATOR_NOT_FOUND,
            message: "op".into(),
        }),
        Response::DeleteOperator(AdminResult {
            error: ErrorCode::NONE,
            message: String::new(),
        }),
        Response::AlterTopicConfigs(AlterTopicConfigsResponse {
            error: ErrorCode::NONE,
            message: String::new(),
            configs: vec![("retention.bytes".into(), "8192".into())],
        }),
        Response::BalanceLeaders(BalanceLeadersResponse {
            error: ErrorCode::NONE,
            message: String::new(),
            partitions: vec![
                LeaderMove {
                    topic: "t".into(),
                    partition: 0,
                    preferred: 1,
                    leader_before: 2,
                    leader: 1,
                    outcome: LeaderMoveOutcome::Moved,
                    reason: String::new(),
                },
                LeaderMove {
                    topic: "t".into(),
                    partition: 1,
                    preferred: 3,
                    leader_before: -1,
                    leader: -1,
                    outcome: LeaderMoveOutcome::Skipped,
                    reason: "no leader".into(),
                },
            ],
        }),
        Response::DescribeReplicas(DescribeReplicasResponse {
            error: ErrorCode::NONE,
            message: String::new(),
            node_id: 2,
            metadata: RaftState {
                term: 3,
                role: RaftRole::Leader,
                leader: Some(2),
                last_log_index: Some(10),
                committed_index: Some(10),
                applied_index: Some(9),
            },
            hosted: 2,
            leading: 1,
            following: 1,
            without_leader: 0,
            topics: vec![TopicReplicas {
                topic: "t".into(),
                partitions: vec![ReplicaState {
                    partition: 0,
                    raft: RaftState {
                        term: 5,
                        role: RaftRole::Follower,
                        leader: Some(1),
                        last_log_index: Some(7),
                        committed_index: Some(7),
                        applied_index: None,
                    },
                    log_start_offset: 0,
                    log_end_offset: 7,
                    high_watermark: 6,
                    size_bytes: 4096,
                }],
            }],
        }),
    ]
}

/// Request frames (correlation id 7) of [`requests`], in hex, in the same order.
pub(super) const REQUEST_FRAMES: &[&str] = &[
    "080000000000000007000000",
    "140000000100000007000000010200000001006102006263",
    "2e000000020000000700000001000000010074030000000200010000000c00726574656e74696f6e2e6d7305003630303030",
    "12000000030000000700000002000000010074010075",
    "250000000400000007000000ffdc050000010000000100740100000001000000050000006261746368",
    "2f0000000500000007000000f401000001000000000010000100000001007401000000020000002a0000000000000000100000",
    "2b0000000600000007000000010000000100740200000000000000feffffffffffffff010000000068e5cf8b010000",
    "12000000070000000700000008006f72646572732d31",
    "110000000800000007000000070062696c6c696e67",
    "660000000900000007000000070062696c6c696e6703006d2d31feffffff0600686f73742d330300636c69020000000100610200626302005e6f0700756e69666f726dc8af0000e093040002000000010061020000000000000002000000020062630100000001000000",
    "5a0000000a00000007000000070062696c6c696e6703006d2d310c0000000200000001006102000000000000002a0000000000000002006d640200000007000000000000000000020062630100000001000000e803000000000000010078",
    "300000000b00000007000000070062696c6c696e6702000000010061020000000000000002000000020062630100000001000000",
    "080000000c00000007000000",
    "110000000d00000007000000070062696c6c696e67",
    "430000000e00000007000000070062696c6c696e670300000001006100000000000000000000000001006102000000640000000000000002006263010000000000000000010000",
    "110000000f00000007000000070062696c6c696e67",
    "5b0000001000000007000000070062696c6c696e67020000001b00636f6e73756d65722e73657373696f6e2e74696d656f75742e6d73050033303030301e00636f6e73756d65722e6865617274626561742e696e74657276616c2e6d730000",
    "19000000140000000700000003000000070000000204000000766f7465",
    "140000001500000007000000040000000600683a39303932",
    "200000001600000007000000010074050000000300000001000000020000000300000001",
    "0e0000001700000007000000020000007b7d",
    "69000000180000000700000002006f700100610100730e00736c6964696e673a316d3a31307308006669656c643a747306006e756d626572020000000500636f756e74030073756df401000000000000000000000000000001006c000060ea0000000000000000100000000000",
    "080000001900000007000000",
    "0c0000001a0000000700000002006f70",
    "0d0000001b0000000700000002006f7001",
    "0c0000001c0000000700000002006f70",
    "380000001d00000007000000010074010000000f00726574656e74696f6e2e6279746573040038313932010000000c00726574656e74696f6e2e6d73",
    "090000001e0000000700000001",
    "100000001f000000070000000100000001007401",
];

/// Response frames (correlation id 9) of [`responses`], in hex, in the same order.
pub(super) const RESPONSE_FRAMES: &[&str] = &[
    "1e000000090000000000000003000000000000000000040000000100170000000000",
    "690000000900000000000000010000000100000001006884230100000001000000000001007401000000060000000000ffffffff0200000001000000020000000a000000000000000300000000000000010000000e00636c65616e75702e706f6c6963790700636f6d70616374",
    "1900000009000000000000000100000001007408000600657869737473",
    "1900000009000000000000000100000001007508000600657869737473",
    "2b00000009000000000000000100000001007401000000010000000000000064000000000000000700000000000000",
    "3400000009000000000000000100000001007401000000020000000000320000000000000000000000000000000700000062617463686573",
    "2100000009000000000000000100000001007401000000010000000500ffffffffffffffff",
    "16000000090000000000000000000000e8030000000000000300",
    "1d00000009000000000000000000000002000000070068323a3930393211000000",
    "3c00000009000000000000000000000003006d2d310c000000b80b0000c8af000002000000010061010000000000000002006263020000000100000003000000",
    "4000000009000000000000000000000002000000010061020000000000000000000000020000001b0009006e6f74206f776e656402006263010000000100000000000000",
    "6f00000009000000000000000000000003000000010061000000002a0000000000000002006d640068e5cf8b0100000c00000001006102000000ffffffffffffffff0000ffffffffffffffffffffffff020062630100000000000000000100000500726573657440e6eacf8b010000ffffffff",
    "3700000009000000000000000000000002000000070062696c6c696e670600537461626c6503000000050061756469740500456d70747900000000",
    "1c010000090000000000000000000000070062696c6c696e670b005265636f6e63696c696e670d0000000700756e69666f726d0200000003006d2d310600686f73742d330300636c69080031302e302e302e350c0000000200000001006102006263000001000000010061010000000000000001000000010061010000000200000003006d2d3200000400636c6932080031302e302e302e360d0000000000000002005e6201000000020062630200000001000000030000000000000003000000010061000000002a0000000000000002006d640068e5cf8b0100000c00000001006102000000ffffffffffffffff0000ffffffffffffffffffffffff020062630100000000000000000100000500726573657440e6eacf8b010000ffffffff",
    "130000000900000000000000180007006c6f6164696e67",
    "1500000009000000000000001f00090032206d656d62657273",
    "1500000009000000000000000a000900746f6f2073686f7274",
    "0e0000000900000000000000020000006f6b",
    "0f000000090000000000000006000300616464",
    "11000000090000000000000006000500616c746572",
    "13000000090000000000000006000700636f6d6d616e64",
    "0f000000090000000000000024000300626164",
    "290000000900000000000000000000000100000002006f700100610100730c0074756d626c696e673a31307301",
    "f700000009000000000000000000000002006f700100610100730e00736c6964696e673a316d3a31307308006669656c643a747306006e756d626572020000000500636f756e74030073756df401000000000000000000000000000001006c000060ea0000000000000000100000000000000068e5cf8b010000020000000000000001000000e80300000000000001017800000000000000820000000000000005000000000000000068e5cf8b010000030000000000000004000000000000008403000000000000010000000000000002000000000000000700000000000000dc05000000000000000001000000ffffffffe90300000000000000",
    "0e0000000900000000000000220002006f70",
    "0c000000090000000000000000000000",
    "27000000090000000000000000000000010000000f00726574656e74696f6e2e6279746573040038313932",
    "4500000009000000000000000000000002000000010074000000000100000002000000010000000000000100740100000003000000ffffffffffffffff0209006e6f206c6561646572",
    "a10000000900000000000000000000000200000003000000000000000002000000000000000a000000000000000a00000000000000090000000000000002000000010000000100000000000000010000000100740100000000000000050000000000000001010000000000000007000000000000000700000000000000ffffffffffffffff0000000000000000070000000000000006000000000000000010000000000000",
];

pub(super) fn hex(chunks: &[Bytes]) -> String {
    chunks
        .iter()
        .flat_map(|c| c.iter())
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[test]
fn frames_are_byte_for_byte_as_captured() {
    let requests = requests();
    assert_eq!(requests.len(), REQUEST_FRAMES.len());
    for (req, want) in requests.iter().zip(REQUEST_FRAMES) {
        let frame = encode_request(req, 7);
        assert_eq!(hex(&frame), *want, "{:?} request", req.api_key());
        let (header, decoded) =
            decode_request(codec::concat(&frame).slice(LENGTH_PREFIX..)).unwrap();
        assert_eq!(header.correlation_id, 7);
        assert_eq!(decoded.as_ref(), Ok(req));
    }
    let responses = responses();
    assert_eq!(responses.len(), RESPONSE_FRAMES.len());
    for (resp, want) in responses.iter().zip(RESPONSE_FRAMES) {
        let frame = encode_response(9, resp);
        assert_eq!(hex(&frame), *want, "{:?} response", resp.api_key());
        let frame = codec::concat(&frame).slice(LENGTH_PREFIX..);
        let (corr, decoded) = decode_response(resp.api_key(), frame).unwrap();
        assert_eq!(corr, 9);
        assert_eq!(decoded.as_ref(), Ok(resp));
    }
}

/// The samples cover every API of the table, once each, in table order: a new API without a sample
/// fails here.
#[test]
fn every_api_has_one_sample_request_and_response() {
    let requests: Vec<ApiKey> = requests().iter().map(Request::api_key).collect();
    let responses: Vec<ApiKey> = responses().iter().map(Response::api_key).collect();
    assert_eq!(requests, ApiKey::ALL);
    assert_eq!(responses, ApiKey::ALL);
}
