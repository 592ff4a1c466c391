//! Property tests of the wire protocol: every request and response round-trips through its frame,
//! and arbitrary bytes fed to the decoders never panic.

use super::*;
use proptest::prelude::*;

mod api_table;
mod samples;

fn name() -> impl Strategy<Value = String> {
    "[a-z0-9._-]{0,12}"
}

fn bytes() -> impl Strategy<Value = Bytes> {
    proptest::collection::vec(any::<u8>(), 0..700).prop_map(Bytes::from)
}

fn configs() -> impl Strategy<Value = Vec<(String, String)>> {
    proptest::collection::vec((name(), name()), 0..3)
}

fn acks() -> impl Strategy<Value = Acks> {
    prop_oneof![Just(Acks::None), Just(Acks::Leader), Just(Acks::All)]
}

fn vec<T: std::fmt::Debug>(s: impl Strategy<Value = T>) -> impl Strategy<Value = Vec<T>> {
    proptest::collection::vec(s, 0..3)
}

fn topic_partitions() -> impl Strategy<Value = Vec<TopicPartitions>> {
    vec((name(), vec(any::<u32>()))).prop_map(|t| {
        t.into_iter()
            .map(|(topic, partitions)| TopicPartitions { topic, partitions })
            .collect()
    })
}

fn committed_offsets() -> impl Strategy<Value = Vec<CommittedOffset>> {
    vec((
        name(),
        any::<u32>(),
        any::<i64>(),
        name(),
        any::<i64>(),
        any::<i32>(),
    ))
    .prop_map(|o| {
        o.into_iter()
            .map(
                |(topic, partition, offset, metadata, commit_timestamp_ms, assignment_epoch)| {
                    CommittedOffset {
                        topic,
                        partition,
                        offset,
                        metadata,
                        commit_timestamp_ms,
                        assignment_epoch,
                    }
                },
            )
            .collect()
    })
}

fn group_member() -> impl Strategy<Value = GroupMemberDescription> {
    (
        (name(), name(), name(), name()),
        any::<i32>(),
        vec(name()),
        name(),
        topic_partitions(),
        topic_partitions(),
    )
        .prop_map(
            |(
                (member_id, instance_id, client_id, host),
                member_epoch,
                topics,
                regex,
                assigned,
                revoking,
            )| {
                GroupMemberDescription {
                    member_id,
                    instance_id,
                    client_id,
                    host,
                    member_epoch,
                    topics,
                    regex,
                    assigned,
                    revoking,
                }
            },
        )
}

fn request() -> impl Strategy<Value = Request> {
    prop_oneof![
        Just(Request::ApiVersions),
        proptest::option::of(vec(name()))
            .prop_map(|topics| Request::Metadata(MetadataRequest { topics })),
        vec((name(), any::<u32>(), any::<u16>(), configs())).prop_map(|t| {
            Request::CreateTopics(CreateTopicsRequest {
                topics: t
                    .into_iter()
                    .map(|(name, partitions, replication_factor, configs)| NewTopic {
                        name,
                        partitions,
                        replication_factor,
                        configs,
                    })
                    .collect(),
            })
        }),
        vec(name()).prop_map(|names| Request::DeleteTopics(DeleteTopicsRequest { names })),
        (
            acks(),
            any::<u32>(),
            vec((name(), vec((any::<u32>(), bytes()))))
        )
            .prop_map(|(acks, timeout_ms, t)| {
                Request::Produce(ProduceRequest {
                    acks,
                    timeout_ms,
                    topics: t
                        .into_iter()
                        .map(|(name, p)| ProduceTopic {
                            name,
                            partitions: p
                                .into_iter()
                                .map(|(partition, records)| ProducePartition { partition, records })
                                .collect(),
                        })
                        .collect(),
                })
            }),
        (
            any::<u32>(),
            any::<u32>(),
            any::<u32>(),
            vec((name(), vec((any::<u32>(), any::<u64>(), any::<u32>()))))
        )
            .prop_map(|(max_wait_ms, min_bytes, max_bytes, t)| Request::Fetch(
                FetchRequest {
                    max_wait_ms,
                    min_bytes,
                    max_bytes,
                    topics: t
                        .into_iter()
                        .map(|(name, p)| FetchTopic {
                            name,
                            partitions: p
                                .into_iter()
                                .map(|(partition, offset, max_bytes)| FetchPartition {
                                    partition,
                                    offset,
                                    max_bytes
                                })
                                .collect(),
                        })
                        .collect(),
                }
            )),
        vec((name(), vec((any::<u32>(), any::<i64>())))).prop_map(|t| Request::ListOffsets(
            ListOffsetsRequest {
                topics: t
                    .into_iter()
                    .map(|(name, p)| ListOffsetsTopic {
                        name,
                        partitions: p
                            .into_iter()
                            .map(|(partition, spec)| ListOffsetsPartition { partition, spec })
                            .collect(),
                    })
                    .collect(),
            }
        )),
        name().prop_map(|name| Request::InitProducerId(InitProducerIdRequest { name })),
        name().prop_map(|group| Request::FindCoordinator(FindCoordinatorRequest { group })),
        (
            (name(), name(), any::<i32>(), name(), name()),
            vec(name()),
            (name(), name()),
            (any::<u32>(), any::<u32>()),
            topic_partitions(),
        )
            .prop_map(
                |(
                    (group, member_id, member_epoch, instance_id, client_id),
                    topics,
                    (regex, assignor),
                    (session_timeout_ms, deadline_ms),
                    owned,
                )| {
                    Request::GroupHeartbeat(GroupHeartbeatRequest {
                        group,
                        member_id,
                        member_epoch,
                        instance_id,
                        client_id,
                        topics,
                        regex,
                        assignor,
                        session_timeout_ms,
                        deadline_ms,
                        owned,
                    })
                },
            ),
        (
            name(),
            name(),
            any::<i32>(),
            vec((name(), vec((any::<u32>(), any::<u64>(), name())))),
        )
            .prop_map(|(group, member_id, member_epoch, t)| {
                Request::OffsetCommit(OffsetCommitRequest {
                    group,
                    member_id,
                    member_epoch,
                    topics: t
                        .into_iter()
                        .map(|(topic, p)| OffsetCommitTopic {
                            topic,
                            partitions: p
                                .into_iter()
                                .map(|(partition, offset, metadata)| OffsetCommitPartition {
                                    partition,
                                    offset,
                                    metadata,
                                })
                                .collect(),
                        })
                        .collect(),
                })
            }),
        (name(), topic_partitions()).prop_map(|(group, partitions)| {
            Request::OffsetFetch(OffsetFetchRequest { group, partitions })
        }),
        Just(Request::ListGroups),
        name().prop_map(|group| Request::DescribeGroup(DescribeGroupRequest { group })),
        (name(), vec((name(), any::<u32>(), any::<u64>()))).prop_map(|(group, offsets)| {
            Request::ResetOffsets(ResetOffsetsRequest { group, offsets })
        }),
        name().prop_map(|group| Request::DeleteGroup(DeleteGroupRequest { group })),
        (name(), configs()).prop_map(|(group, configs)| Request::AlterGroupConfig(
            AlterGroupConfigRequest { group, configs }
        )),
        (
            any::<u64>(),
            any::<u8>(),
            proptest::collection::vec(any::<u8>(), 0..600)
        )
            .prop_map(|(group, kind, body)| {
                Request::Raft(RaftRequest {
                    group,
                    kind,
                    body: vec![Bytes::from(body)],
                })
            }),
        (any::<u32>(), name()).prop_map(|(node_id, address)| Request::AddBroker(
            AddBrokerRequest { node_id, address }
        )),
        name().prop_map(|c| Request::MetadataCommand(MetadataCommandRequest {
            command: Bytes::from(c)
        })),
        (name(), any::<u32>(), vec(any::<u32>()), any::<bool>()).prop_map(
            |(topic, partition, replicas, complete)| Request::AlterReplicas(AlterReplicasRequest {
                topic,
                partition,
                replicas,
                complete
            })
        ),
        operator_definition()
            .prop_map(|definition| Request::CreateOperator(CreateOperatorRequest { definition })),
        Just(Request::ListOperators),
        name().prop_map(|name| Request::DescribeOperator(DescribeOperatorRequest { name })),
        (name(), any::<bool>()).prop_map(|(name, paused)| Request::AlterOperator(
            AlterOperatorRequest { name, paused }
        )),
        name().prop_map(|name| Request::DeleteOperator(DeleteOperatorRequest { name })),
        (name(), configs(), vec(name())).prop_map(|(name, set, delete)| {
            Request::AlterTopicConfigs(AlterTopicConfigsRequest { name, set, delete })
        }),
        any::<bool>().prop_map(|local| Request::BalanceLeaders(BalanceLeadersRequest { local })),
        (vec(name()), any::<bool>()).prop_map(|(topics, partitions)| {
            Request::DescribeReplicas(DescribeReplicasRequest { topics, partitions })
        }),
    ]
}

/// Indexes and ids the wire can carry: known ones below `i64::MAX`, or unknown.
fn known() -> impl Strategy<Value = Option<u64>> {
    proptest::option::of(0..=i64::MAX as u64)
}

fn raft_state() -> impl Strategy<Value = RaftState> {
    (any::<u64>(), 0..5usize, known(), known(), known(), known()).prop_map(
        |(term, role, leader, last_log_index, committed_index, applied_index)| RaftState {
            term,
            role: [
                RaftRole::Leader,
                RaftRole::Follower,
                RaftRole::Candidate,
                RaftRole::Learner,
                RaftRole::Shutdown,
            ][role],
            leader,
            last_log_index,
            committed_index,
            applied_index,
        },
    )
}

fn replica_state() -> impl Strategy<Value = ReplicaState> {
    (any::<u32>(), raft_state(), any::<[u64; 4]>()).prop_map(|(partition, raft, n)| ReplicaState {
        partition,
        raft,
        log_start_offset: n[0],
        log_end_offset: n[1],
        high_watermark: n[2],
        size_bytes: n[3],
    })
}

fn describe_replicas_response() -> impl Strategy<Value = Response> {
    (
        (code(), name(), any::<u32>()),
        raft_state(),
        any::<[u32; 4]>(),
        vec((name(), vec(replica_state()))),
    )
        .prop_map(|((error, message, node_id), metadata, c, topics)| {
            Response::DescribeReplicas(DescribeReplicasResponse {
                error,
                message,
                node_id,
                metadata,
                hosted: c[0],
                leading: c[1],
                following: c[2],
                without_leader: c[3],
                topics: topics
                    .into_iter()
                    .map(|(topic, partitions)| TopicReplicas { topic, partitions })
                    .collect(),
            })
        })
}

fn operator_definition() -> impl Strategy<Value = OperatorDefinition> {
    (
        (name(), name(), name(), name(), name(), name()),
        vec(name()),
        (
            any::<i64>(),
            any::<i64>(),
            name(),
            name(),
            any::<i64>(),
            any::<u64>(),
        ),
    )
        .prop_map(
            |(
                (name, source, sink, window, time, value),
                aggregates,
                (
                    out_of_orderness_ms,
                    allowed_lateness_ms,
                    late_topic,
                    dead_letter_topic,
                    idle_timeout_ms,
                    max_state_bytes,
                ),
            )| OperatorDefinition {
                name,
                source,
                sink,
                window,
                time,
                value,
                aggregates,
                out_of_orderness_ms,
                allowed_lateness_ms,
                late_topic,
                dead_letter_topic,
                idle_timeout_ms,
                max_state_bytes,
            },
        )
}

fn code() -> impl Strategy<Value = ErrorCode> {
    any::<u16>().prop_map(ErrorCode)
}

fn response() -> impl Strategy<Value = Response> {
    prop_oneof![
        vec((any::<u16>(), any::<u16>(), any::<u16>()))
            .prop_map(|apis| Response::ApiVersions(ApiVersionsResponse { apis })),
        (
            vec((any::<u32>(), name(), any::<u16>())),
            any::<i32>(),
            vec((
                code(),
                name(),
                vec((
                    code(),
                    any::<u32>(),
                    any::<i32>(),
                    vec(any::<u32>()),
                    any::<u64>(),
                    any::<u64>()
                )),
                configs()
            )),
        )
            .prop_map(
                |(b, controller_id, t)| Response::Metadata(MetadataResponse {
                    brokers: b
                        .into_iter()
                        .map(|(node_id, host, port)| BrokerInfo {
                            node_id,
                            host,
                            port
                        })
                        .collect(),
                    controller_id,
                    topics: t
                        .into_iter()
                        .map(|(error, name, p, configs)| TopicMetadata {
                            error,
                            name,
                            configs,
                            partitions: p
                                .into_iter()
                                .map(
                                    |(
                                        error,
                                        partition,
                                        leader,
                                        replicas,
                                        high_watermark,
                                        log_start_offset,
                                    )| PartitionMetadata {
                                        error,
                                        partition,
                                        leader,
                                        replicas,
                                        high_watermark,
                                        log_start_offset,
                                    }
                                )
                                .collect(),
                        })
                        .collect(),
                })
            ),
        vec((name(), code(), name())).prop_map(|r| Response::CreateTopics(TopicResults {
            results: r
                .into_iter()
                .map(|(name, error, message)| TopicResult {
                    name,
                    error,
                    message
                })
                .collect(),
        })),
        vec((name(), code(), name())).prop_map(|r| Response::DeleteTopics(TopicResults {
            results: r
                .into_iter()
                .map(|(name, error, message)| TopicResult {
                    name,
                    error,
                    message
                })
                .collect(),
        })),
        vec((
            name(),
            vec((any::<u32>(), code(), name(), any::<u64>(), any::<u64>()))
        ))
        .prop_map(|t| {
            Response::Produce(ProduceResponse {
                topics: t
                    .into_iter()
                    .map(|(name, p)| ProduceTopicResult {
                        name,
                        partitions: p
                            .into_iter()
                            .map(
                                |(partition, error, message, base_offset, log_start_offset)| {
                                    ProducePartitionResult {
                                        partition,
                                        error,
                                        message,
                                        base_offset,
                                        log_start_offset,
                                    }
                                },
                            )
                            .collect(),
                    })
                    .collect(),
            })
        }),
        vec((
            name(),
            vec((any::<u32>(), code(), any::<u64>(), any::<u64>(), bytes()))
        ))
        .prop_map(|t| {
            Response::Fetch(FetchResponse {
                topics: t
                    .into_iter()
                    .map(|(name, p)| FetchTopicResult {
                        name,
                        partitions: p
                            .into_iter()
                            .map(
                                |(partition, error, high_watermark, log_start_offset, records)| {
                                    FetchPartitionResult {
                                        partition,
                                        error,
                                        high_watermark,
                                        log_start_offset,
                                        records,
                                    }
                                },
                            )
                            .collect(),
                    })
                    .collect(),
            })
        }),
        vec((name(), vec((any::<u32>(), code(), any::<i64>())))).prop_map(|t| {
            Response::ListOffsets(ListOffsetsResponse {
                topics: t
                    .into_iter()
                    .map(|(name, p)| ListOffsetsTopicResult {
                        name,
                        partitions: p
                            .into_iter()
                            .map(|(partition, error, offset)| ListOffsetsPartitionResult {
                                partition,
                                error,
                                offset,
                            })
                            .collect(),
                    })
                    .collect(),
            })
        }),
        (code(), name(), any::<i64>(), any::<i16>()).prop_map(
            |(error, message, producer_id, epoch)| {
                Response::InitProducerId(InitProducerIdResponse {
                    error,
                    message,
                    producer_id,
                    epoch,
                })
            }
        ),
        (code(), name(), any::<u32>(), name(), any::<u32>()).prop_map(
            |(error, message, node_id, host, partition)| {
                Response::FindCoordinator(FindCoordinatorResponse {
                    error,
                    message,
                    node_id,
                    host,
                    partition,
                })
            }
        ),
        (
            code(),
            name(),
            name(),
            any::<i32>(),
            any::<u32>(),
            any::<u32>(),
            topic_partitions(),
        )
            .prop_map(
                |(
                    error,
                    message,
                    member_id,
                    member_epoch,
                    heartbeat_interval_ms,
                    session_timeout_ms,
                    assignment,
                )| {
                    Response::GroupHeartbeat(GroupHeartbeatResponse {
                        error,
                        message,
                        member_id,
                        member_epoch,
                        heartbeat_interval_ms,
                        session_timeout_ms,
                        assignment,
                    })
                }
            ),
        (
            code(),
            name(),
            vec((name(), vec((any::<u32>(), code(), name()))))
        )
            .prop_map(|(error, message, t)| {
                Response::OffsetCommit(OffsetCommitResponse {
                    error,
                    message,
                    topics: t
                        .into_iter()
                        .map(|(topic, p)| PartitionErrors {
                            topic,
                            partitions: p
                                .into_iter()
                                .map(|(partition, error, message)| PartitionError {
                                    partition,
                                    error,
                                    message,
                                })
                                .collect(),
                        })
                        .collect(),
                })
            }),
        (code(), name(), committed_offsets()).prop_map(|(error, message, offsets)| {
            Response::OffsetFetch(OffsetFetchResponse {
                error,
                message,
                offsets,
            })
        }),
        (code(), name(), vec((name(), name(), any::<u32>()))).prop_map(|(error, message, g)| {
            Response::ListGroups(ListGroupsResponse {
                error,
                message,
                groups: g
                    .into_iter()
                    .map(|(group, state, members)| GroupListing {
                        group,
                        state,
                        members,
                    })
                    .collect(),
            })
        }),
        (
            (code(), name(), name(), name(), any::<i32>(), name()),
            vec(group_member()),
            committed_offsets(),
        )
            .prop_map(
                |((error, message, group, state, epoch, assignor), members, offsets)| {
                    Response::DescribeGroup(DescribeGroupResponse {
                        error,
                        message,
                        group,
                        state,
                        epoch,
                        assignor,
                        members,
                        offsets,
                    })
                }
            ),
        (code(), name())
            .prop_map(|(error, message)| Response::ResetOffsets(AdminResult { error, message })),
        (code(), name())
            .prop_map(|(error, message)| Response::DeleteGroup(AdminResult { error, message })),
        (code(), name()).prop_map(|(error, message)| Response::AlterGroupConfig(AdminResult {
            error,
            message
        })),
        proptest::collection::vec(any::<u8>(), 0..600).prop_map(|body| Response::Raft(
            RaftResponse {
                body: Bytes::from(body)
            }
        )),
        (code(), name())
            .prop_map(|(error, message)| Response::AddBroker(AdminResult { error, message })),
        (code(), name())
            .prop_map(|(error, message)| Response::AlterReplicas(AdminResult { error, message })),
        (code(), name())
            .prop_map(|(error, message)| Response::MetadataCommand(AdminResult { error, message })),
        (code(), name())
            .prop_map(|(error, message)| Response::CreateOperator(AdminResult { error, message })),
        (
            code(),
            name(),
            vec((name(), name(), name(), name(), any::<bool>()))
        )
            .prop_map(|(error, message, o)| Response::ListOperators(
                ListOperatorsResponse {
                    error,
                    message,
                    operators: o
                        .into_iter()
                        .map(|(name, source, sink, window, paused)| OperatorListing {
                            name,
                            source,
                            sink,
                            window,
                            paused,
                        })
                        .collect(),
                }
            )),
        (
            (code(), name()),
            operator_definition(),
            (any::<bool>(), any::<i64>()),
            vec((any::<u32>(), any::<i32>(), any::<i64>())),
        )
            .prop_map(|((error, message), definition, (paused, created_ms), p)| {
                Response::DescribeOperator(DescribeOperatorResponse {
                    error,
                    message,
                    definition: Box::new(definition),
                    paused,
                    created_ms,
                    partitions: p
                        .into_iter()
                        .map(|(partition, leader, producer_id)| OperatorPartition {
                            partition,
                            leader,
                            producer_id,
                            run: (producer_id % 2 == 0).then(|| OperatorRunStats {
                                position: partition.into(),
                                watermark_ms: producer_id,
                                failed: "state limit".into(),
                                ..OperatorRunStats::default()
                            }),
                        })
                        .collect(),
                })
            }),
        (code(), name())
            .prop_map(|(error, message)| Response::AlterOperator(AdminResult { error, message })),
        (code(), name())
            .prop_map(|(error, message)| Response::DeleteOperator(AdminResult { error, message })),
        (code(), name(), configs()).prop_map(|(error, message, configs)| {
            Response::AlterTopicConfigs(AlterTopicConfigsResponse {
                error,
                message,
                configs,
            })
        }),
        (
            code(),
            name(),
            vec((
                (name(), any::<u32>()),
                (any::<i32>(), any::<i32>(), any::<i32>()),
                0..3u8,
                name()
            ))
        )
            .prop_map(|(error, message, p)| Response::BalanceLeaders(
                BalanceLeadersResponse {
                    error,
                    message,
                    partitions: p
                        .into_iter()
                        .map(
                            |(
                                (topic, partition),
                                (preferred, leader_before, leader),
                                o,
                                reason,
                            )| {
                                LeaderMove {
                                    topic,
                                    partition,
                                    preferred,
                                    leader_before,
                                    leader,
                                    outcome: [
                                        LeaderMoveOutcome::Moved,
                                        LeaderMoveOutcome::AlreadyPreferred,
                                        LeaderMoveOutcome::Skipped,
                                    ][usize::from(o)],
                                    reason,
                                }
                            }
                        )
                        .collect(),
                }
            )),
        describe_replicas_response(),
    ]
}

fn join(chunks: Vec<Bytes>) -> Bytes {
    let mut v = Vec::new();
    for c in chunks {
        v.extend_from_slice(&c);
    }
    Bytes::from(v)
}

/// Strips and checks the length prefix.
fn unframe(frame: Bytes) -> Bytes {
    let len = u32::from_le_bytes([frame[0], frame[1], frame[2], frame[3]]) as usize;
    assert_eq!(len, frame.len() - LENGTH_PREFIX);
    frame.slice(LENGTH_PREFIX..)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(
        std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(256)
    ))]

    #[test]
    fn requests_round_trip(req in request(), corr in any::<u32>()) {
        let frame = unframe(join(encode_request(&req, corr)));
        let (header, decoded) = decode_request(frame).unwrap();
        prop_assert_eq!(header.correlation_id, corr);
        prop_assert_eq!(header.api_key, req.api_key() as u16);
        prop_assert_eq!(decoded.unwrap(), req);
    }

    #[test]
    fn responses_round_trip(resp in response(), corr in any::<u32>()) {
        let frame = unframe(join(encode_response(corr, &resp)));
        let (c, decoded) = decode_response(resp.api_key(), frame).unwrap();
        prop_assert_eq!(c, corr);
        prop_assert_eq!(decoded.unwrap(), resp);
    }

    #[test]
    fn error_responses_round_trip(corr in any::<u32>(), code in 1u16.., msg in name()) {
        let frame = unframe(join(encode_error_response(corr, ErrorCode(code), &msg)));
        for api in ApiKey::ALL {
            let (c, decoded) = decode_response(api, frame.clone()).unwrap();
            prop_assert_eq!(c, corr);
            prop_assert_eq!(decoded.unwrap_err(), TopLevelError { code: ErrorCode(code), message: msg.clone() });
        }
    }

    #[test]
    fn random_bytes_never_panic(
        bytes in proptest::collection::vec(any::<u8>(), 0..300),
        api in prop_oneof![
            // Every key of the table, and now and then one it does not have.
            4 => proptest::sample::select(ApiKey::ALL.to_vec()).prop_map(|a| a as u16),
            1 => any::<u16>(),
        ],
    ) {
        let mut framed = Vec::with_capacity(bytes.len() + 8);
        framed.extend_from_slice(&api.to_le_bytes());
        framed.extend_from_slice(&0u16.to_le_bytes());
        framed.extend_from_slice(&bytes);
        let _ = decode_request(Bytes::from(framed));
        let _ = decode_request(Bytes::from(bytes.clone()));
        for a in ApiKey::ALL {
            let _ = decode_response(a, Bytes::from(bytes.clone()));
        }
    }
}

#[test]
fn huge_counts_are_refused_before_allocating() {
    // A produce request claiming 2^32-1 topics in a 10-byte body.
    let mut body = vec![1u8];
    body.extend_from_slice(&0u32.to_le_bytes());
    body.extend_from_slice(&u32::MAX.to_le_bytes());
    let mut frame = (ApiKey::Produce as u16).to_le_bytes().to_vec();
    frame.extend_from_slice(&0u16.to_le_bytes());
    frame.extend_from_slice(&7u32.to_le_bytes());
    frame.extend_from_slice(&body);
    let (h, req) = decode_request(Bytes::from(frame)).unwrap();
    assert_eq!(h.correlation_id, 7);
    assert!(matches!(req, Err(ProtocolError::Truncated(_))));
}

/// A request frame (length prefix removed) for `api`, correlation id 7, with the body `write` writes.
fn raw_request(api: ApiKey, write: impl FnOnce(&mut codec::Writer)) -> Bytes {
    let mut w = codec::Writer::new();
    write(&mut w);
    let mut frame = (api as u16).to_le_bytes().to_vec();
    frame.extend_from_slice(&0u16.to_le_bytes());
    frame.extend_from_slice(&7u32.to_le_bytes());
    frame.extend_from_slice(&codec::concat(&w.finish()));
    Bytes::from(frame)
}

#[test]
fn huge_counts_in_group_requests_are_refused_before_allocating() {
    // Each body claims 2^32-1 elements somewhere and then holds a few real ones. The refusal must
    // come from the count (the error names the array), not from running out of bytes while reading
    // elements into a vector already reserved for billions of them (that error would name an
    // element's field).
    let heartbeat_head = |w: &mut codec::Writer| {
        w.string("g");
        w.string("m-1");
        w.i32(3);
        w.string("");
        w.string("cli");
        w.count(0); // subscribed topics
        w.string("");
        w.string("");
        w.u32(0);
        w.u32(0);
    };
    let commit_head = |w: &mut codec::Writer| {
        w.string("g");
        w.string("m-1");
        w.i32(3);
    };
    let cases: Vec<(&str, Bytes, &str)> = vec![
        (
            "GroupHeartbeat owned topics",
            raw_request(ApiKey::GroupHeartbeat, |w| {
                heartbeat_head(w);
                w.count(u32::MAX as usize);
                w.string("a");
                w.count(1);
                w.u32(0);
            }),
            "owned partitions",
        ),
        (
            "GroupHeartbeat owned partitions of a topic",
            raw_request(ApiKey::GroupHeartbeat, |w| {
                heartbeat_head(w);
                w.count(1);
                w.string("a");
                w.count(u32::MAX as usize);
                for p in 0..3 {
                    w.u32(p);
                }
            }),
            "partitions",
        ),
        (
            "OffsetCommit topics",
            raw_request(ApiKey::OffsetCommit, |w| {
                commit_head(w);
                w.count(u32::MAX as usize);
                w.string("a");
                w.count(0);
            }),
            "topics",
        ),
        (
            "OffsetCommit partitions of a topic",
            raw_request(ApiKey::OffsetCommit, |w| {
                commit_head(w);
                w.count(1);
                w.string("a");
                w.count(u32::MAX as usize);
                for p in 0..2 {
                    w.u32(p);
                    w.u64(42);
                    w.string("md");
                }
            }),
            "partitions",
        ),
        (
            "OffsetFetch partitions of a topic",
            raw_request(ApiKey::OffsetFetch, |w| {
                w.string("g");
                w.count(1);
                w.string("a");
                w.count(u32::MAX as usize);
                w.u32(0);
            }),
            "partitions",
        ),
        (
            "ResetOffsets offsets",
            raw_request(ApiKey::ResetOffsets, |w| {
                w.string("g");
                w.count(u32::MAX as usize);
                w.string("a");
                w.u32(0);
                w.u64(0);
            }),
            "offsets",
        ),
    ];
    for (case, frame, array) in cases {
        let (h, req) = decode_request(frame).unwrap();
        assert_eq!(h.correlation_id, 7, "{case}");
        assert_eq!(req, Err(ProtocolError::Truncated(array)), "{case}");
    }

    // The same for the group answers a client decodes.
    let response = |write: &dyn Fn(&mut codec::Writer)| {
        let mut w = codec::Writer::new();
        w.u32(9); // correlation id
        w.u16(0); // no top-level error
        w.string("");
        w.u16(0); // the body's error
        w.string("");
        write(&mut w);
        codec::concat(&w.finish())
    };
    let offsets = response(&|w| {
        w.count(u32::MAX as usize);
        w.string("a");
        w.u32(0);
        w.i64(-1);
        w.string("");
        w.i64(0);
        w.i32(-1);
    });
    assert_eq!(
        decode_response(ApiKey::OffsetFetch, offsets),
        Err(ProtocolError::Truncated("offsets"))
    );
    let members = response(&|w| {
        w.string("g");
        w.string("Stable");
        w.i32(4);
        w.string("uniform");
        w.count(u32::MAX as usize);
        w.string("m-1");
    });
    assert_eq!(
        decode_response(ApiKey::DescribeGroup, members),
        Err(ProtocolError::Truncated("members"))
    );
}

/// The operator APIs' arrays (aggregates, listed operators, described partitions) refuse a huge
/// count from the count itself.
#[test]
fn huge_counts_in_operator_messages_are_refused_before_allocating() {
    let aggregates = raw_request(ApiKey::CreateOperator, |w| {
        for s in ["op", "a", "s", "tumbling:1s", "record", "number"] {
            w.string(s);
        }
        w.count(u32::MAX as usize);
        w.string("count");
    });
    let (_, req) = decode_request(aggregates).unwrap();
    assert_eq!(req, Err(ProtocolError::Truncated("aggregate")));
    let response = |api: ApiKey, write: &dyn Fn(&mut codec::Writer)| {
        let mut w = codec::Writer::new();
        w.u32(9);
        w.u16(0);
        w.string("");
        w.u16(0);
        w.string("");
        write(&mut w);
        (api, codec::concat(&w.finish()))
    };
    let (api, listed) = response(ApiKey::ListOperators, &|w| {
        w.count(u32::MAX as usize);
        w.string("op");
    });
    assert_eq!(
        decode_response(api, listed),
        Err(ProtocolError::Truncated("operators"))
    );
    let (api, described) = response(ApiKey::DescribeOperator, &|w| {
        create_operator::put_definition(w, &OperatorDefinition::default());
        w.bool(false);
        w.i64(0);
        w.count(u32::MAX as usize);
        w.u32(0);
    });
    assert_eq!(
        decode_response(api, described),
        Err(ProtocolError::Truncated("partitions"))
    );
}

#[test]
fn unknown_api_and_version_keep_the_correlation_id() {
    let frame = Bytes::from(vec![99, 0, 0, 0, 5, 0, 0, 0]);
    let (h, req) = decode_request(frame).unwrap();
    assert_eq!((h.api_key, h.correlation_id), (99, 5));
    assert_eq!(req, Err(ProtocolError::UnknownApi(99)));
    let frame = Bytes::from(vec![4, 0, 9, 0, 6, 0, 0, 0]);
    let (_, req) = decode_request(frame).unwrap();
    assert!(matches!(
        req,
        Err(ProtocolError::UnsupportedVersion { version: 9, .. })
    ));
}

#[test]
fn metadata_with_a_replica_less_last_partition_round_trips() {
    // Regression (found by responses_round_trip): the decoder assumed a partition takes at least 34
    // bytes; one without replicas takes 30, so a valid response was refused as truncated.
    let resp = Response::Metadata(MetadataResponse {
        brokers: vec![],
        controller_id: 1,
        topics: vec![TopicMetadata {
            error: ErrorCode::NONE,
            name: String::new(),
            partitions: vec![PartitionMetadata {
                error: ErrorCode::NONE,
                partition: 0,
                leader: -1,
                replicas: vec![],
                high_watermark: 0,
                log_start_offset: 0,
            }],
            configs: vec![],
        }],
    });
    let frame = unframe(join(encode_response(9, &resp)));
    let (corr, decoded) = decode_response(ApiKey::Metadata, frame).unwrap();
    assert_eq!(corr, 9);
    assert_eq!(decoded.unwrap(), resp);
}

#[test]
fn a_committed_offset_with_empty_strings_round_trips() {
    // Regression: the decoder assumed a committed offset takes at least 30 bytes; one with an empty
    // topic name and metadata takes 28, so a valid OffsetFetch or DescribeGroup answer ending in
    // one was refused as truncated.
    let offset = CommittedOffset {
        topic: String::new(),
        partition: 3,
        offset: -1,
        metadata: String::new(),
        commit_timestamp_ms: 0,
        assignment_epoch: -1,
    };
    let responses = [
        Response::OffsetFetch(OffsetFetchResponse {
            offsets: vec![offset.clone()],
            ..Default::default()
        }),
        Response::DescribeGroup(DescribeGroupResponse {
            offsets: vec![offset],
            ..Default::default()
        }),
    ];
    for resp in responses {
        let frame = unframe(join(encode_response(9, &resp)));
        let (corr, decoded) = decode_response(resp.api_key(), frame).unwrap();
        assert_eq!(corr, 9);
        assert_eq!(decoded.unwrap(), resp);
    }
}
