//! Tests of the output of `sluice group ...` (table and JSON); argument parsing is tested in
//! `cli/tests.rs`.
#![allow(clippy::unwrap_used)]

use super::*;
use sluice_client::{GroupMember, PartitionLag};

fn lag(topic: &str, partition: u32, committed: Option<u64>, hw: u64) -> PartitionLag {
    PartitionLag {
        topic: topic.into(),
        partition,
        committed_offset: committed,
        owner: None,
        log_start_offset: Some(0),
        high_watermark: Some(hw),
        lag: Some(hw.saturating_sub(committed.unwrap_or(0))),
        lag_ms: Some(if committed == Some(hw) { 0 } else { 1500 }),
        error: None,
    }
}

fn group() -> GroupDescription {
    let mut owned = lag("orders", 0, Some(3), 10);
    owned.owner = Some("m-1".into());
    let mut gone = lag("audit", 2, Some(5), 0);
    gone.high_watermark = None;
    gone.lag = None;
    gone.lag_ms = None;
    gone.log_start_offset = None;
    gone.error = Some("cannot read the topic's metadata".into());
    GroupDescription {
        group: "g".into(),
        state: "Stable".into(),
        epoch: 4,
        assignor: "uniform".into(),
        members: vec![GroupMember {
            member_id: "m-1".into(),
            instance_id: None,
            client_id: "app".into(),
            host: "127.0.0.1:5000".into(),
            member_epoch: 4,
            subscription: vec!["orders".into()],
            subscription_regex: None,
            partitions: vec![("orders".into(), 0), ("orders".into(), 1)],
            revoking: vec![],
        }],
        offsets: vec![gone, owned, lag("orders", 1, None, 7)],
    }
}

#[test]
fn describe_table_has_a_header_block_members_and_offsets() {
    assert_eq!(
        render_describe(&group()),
        "Group: g\nState: Stable\nEpoch: 4\nAssignor: uniform\nMembers:\n  \
         MEMBER-ID  INSTANCE-ID  CLIENT-ID  HOST            EPOCH  PARTITIONS  REVOKING\n  \
         m-1        -            app        127.0.0.1:5000  4      orders:0,1  -\n\
         Offsets:\n  \
         TOPIC   PARTITION  COMMITTED  HIGH-WATERMARK  LAG  LAG-MS  OWNER\n  \
         audit   2          5          -               -    -       -\n  \
         orders  0          3          10              7    1500    m-1\n  \
         orders  1          -          7               7    1500    -\n  \
         audit/2: cannot read the topic's metadata\n"
    );
    let empty = GroupDescription {
        members: vec![],
        offsets: vec![],
        assignor: String::new(),
        ..group()
    };
    assert_eq!(
        render_describe(&empty),
        "Group: g\nState: Stable\nEpoch: 4\nAssignor: -\nMembers: none\nOffsets: none\n"
    );
}

#[test]
fn describe_json_keeps_every_key() {
    let v: serde_json::Value =
        serde_json::from_str(&json(&JsonGroup::from(&group())).unwrap()).unwrap();
    assert_eq!(v["group"], "g");
    assert_eq!(v["state"], "Stable");
    assert_eq!(v["epoch"], 4);
    assert_eq!(v["assignor"], "uniform");
    let m = &v["members"][0];
    assert_eq!(m["member_id"], "m-1");
    assert!(m["instance_id"].is_null());
    assert_eq!(m["client_id"], "app");
    assert_eq!(m["host"], "127.0.0.1:5000");
    assert_eq!(m["member_epoch"], 4);
    assert_eq!(m["subscription"], serde_json::json!(["orders"]));
    assert_eq!(
        m["partitions"],
        serde_json::json!([{"topic": "orders", "partition": 0}, {"topic": "orders", "partition": 1}])
    );
    assert_eq!(m["revoking"], serde_json::json!([]));
    let o = &v["offsets"];
    assert_eq!(
        o[1],
        serde_json::json!({"topic": "orders", "partition": 0, "committed_offset": 3, "owner": "m-1",
            "log_start_offset": 0, "high_watermark": 10, "lag": 7, "lag_ms": 1500, "error": null})
    );
    assert!(o[2]["committed_offset"].is_null());
    assert!(o[0]["high_watermark"].is_null());
    assert_eq!(o[0]["error"], "cannot read the topic's metadata");
}

#[test]
fn list_and_reset_outputs() {
    let groups = vec![GroupListing {
        group: "g".into(),
        state: "Empty".into(),
        members: 0,
    }];
    assert_eq!(
        render_list(&groups, OutputFormat::Table).unwrap(),
        "GROUP  STATE  MEMBERS\ng      Empty  0\n"
    );
    assert_eq!(
        render_list(&groups, OutputFormat::Json).unwrap(),
        "[{\"group\":\"g\",\"state\":\"Empty\",\"members\":0}]\n"
    );
    assert_eq!(render_list(&[], OutputFormat::Json).unwrap(), "[]\n");
    let moved = vec![("t".to_string(), 0, 3), ("t".to_string(), 1, 12)];
    assert_eq!(
        render_reset(&moved, OutputFormat::Table).unwrap(),
        "TOPIC  PARTITION  NEW-OFFSET\nt      0          3\nt      1          12\n"
    );
    assert_eq!(
        render_reset(&moved, OutputFormat::Json).unwrap(),
        "[{\"topic\":\"t\",\"partition\":0,\"offset\":3},{\"topic\":\"t\",\"partition\":1,\"offset\":12}]\n"
    );
}

#[test]
fn partitions_group_by_topic() {
    assert_eq!(partitions_cell(&[]), "-");
    assert_eq!(
        partitions_cell(&[("a".into(), 0), ("a".into(), 2), ("b".into(), 1)]),
        "a:0,2 b:1"
    );
}
