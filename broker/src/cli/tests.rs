//! Tests of the command-line parsing helpers and output formatting.
use super::*;

#[test]
fn broker_addresses() {
    assert_eq!(
        parse_broker("127.0.0.1:9492").as_deref(),
        Ok("127.0.0.1:9492")
    );
    assert!(parse_broker("localhost:1").is_ok());
    assert!(parse_broker("[::1]:9492").is_ok());
    for bad in [
        "",
        "host",
        ":9492",
        "host:",
        "host:0",
        "host:70000",
        "host:x",
    ] {
        assert!(parse_broker(bad).is_err(), "{bad}");
    }
}

#[test]
fn config_pairs() {
    assert_eq!(
        parse_config("retention.ms=1000"),
        Ok(("retention.ms".into(), "1000".into()))
    );
    assert_eq!(parse_config("a=b=c"), Ok(("a".into(), "b=c".into())));
    assert_eq!(parse_config("a="), Ok(("a".into(), String::new())));
    assert!(parse_config("retention.ms").is_err());
    assert!(parse_config("=1").is_err());
}

#[test]
fn table_aligns_columns() {
    let rows = vec![
        vec!["A".to_string(), "BB".to_string(), "C".to_string()],
        vec!["long".to_string(), "x".to_string(), "y".to_string()],
    ];
    assert_eq!(table(&rows, "  "), "  A     BB  C\n  long  x   y\n");
}

#[test]
fn messages_name_the_topic_and_broker() {
    let ctx = Ctx::topic("127.0.0.1:1", "orders");
    let unknown = ClientError::Broker {
        code: ErrorCode::UNKNOWN_TOPIC_OR_PARTITION,
        message: "x".into(),
    };
    assert_eq!(ctx.describe(&unknown), "topic 'orders' does not exist");
    let refused = ClientError::Io {
        addr: "127.0.0.1:1".into(),
        source: std::sync::Arc::new(std::io::Error::from(std::io::ErrorKind::ConnectionRefused)),
    };
    assert!(ctx
        .describe(&refused)
        .starts_with("cannot connect to broker at 127.0.0.1:1: "));
    let config = ClientError::Broker {
        code: ErrorCode::INVALID_CONFIG,
        message: "unknown topic config \"x\"".into(),
    };
    assert_eq!(
        ctx.describe(&config),
        "invalid topic config: unknown topic config \"x\""
    );
}

/// `sluice group ...` as clap parses it (the subcommand's own arguments, as `main` sees them).
#[derive(Debug, clap::Parser)]
struct GroupCli {
    #[command(flatten)]
    args: group::GroupArgs,
}

fn parse_group(args: &[&str]) -> Result<group::GroupArgs, clap::Error> {
    use clap::Parser;
    GroupCli::try_parse_from(std::iter::once("group").chain(args.iter().copied())).map(|c| c.args)
}

fn parse_reset(args: &[&str]) -> Result<group::ResetArgs, clap::Error> {
    let mut all = vec!["reset-offsets", "g", "--topic", "t"];
    all.extend_from_slice(args);
    match parse_group(&all)?.command {
        group::GroupCommand::ResetOffsets(r) => Ok(r),
        other => panic!("parsed as {other:?}"),
    }
}

#[test]
fn group_commands_parse() {
    use group::{GroupCommand, OutputFormat};
    let g = parse_group(&["list"]).unwrap();
    assert!(matches!(
        g.command,
        GroupCommand::List {
            format: OutputFormat::Table
        }
    ));
    assert_eq!(g.conn.broker, DEFAULT_LISTEN);
    let g = parse_group(&["list", "--format", "json", "--broker", "h:1"]).unwrap();
    assert!(matches!(
        g.command,
        GroupCommand::List {
            format: OutputFormat::Json
        }
    ));
    assert_eq!(g.conn.broker, "h:1");
    let g = parse_group(&["describe", "orders", "--format", "json"]).unwrap();
    assert!(
        matches!(&g.command, GroupCommand::Describe { group, format: OutputFormat::Json } if group == "orders")
    );
    let g = parse_group(&["delete", "orders"]).unwrap();
    assert!(matches!(&g.command, GroupCommand::Delete { group } if group == "orders"));
    let r = parse_reset(&["--partition", "2", "--to-earliest"]).unwrap();
    assert_eq!(
        (r.group.as_str(), r.topic.as_str(), r.partition),
        ("g", "t", Some(2))
    );
}

#[test]
fn reset_takes_exactly_one_target() {
    use sluice_client::ResetSpec;
    let spec = |args: &[&str]| parse_reset(args).unwrap().spec();
    assert_eq!(spec(&["--to-earliest"]), ResetSpec::Earliest);
    assert_eq!(spec(&["--to-latest"]), ResetSpec::Latest);
    assert_eq!(spec(&["--to-offset", "5"]), ResetSpec::Offset(5));
    assert_eq!(
        spec(&["--to-timestamp", "1000"]),
        ResetSpec::Timestamp(1000)
    );
    assert_eq!(spec(&["--shift-by", "-1"]), ResetSpec::ShiftBy(-1));
    assert_eq!(spec(&["--shift-by=-3"]), ResetSpec::ShiftBy(-3));
    assert_eq!(spec(&["--shift-by", "2"]), ResetSpec::ShiftBy(2));
    let kind = |args: &[&str]| parse_reset(args).unwrap_err().kind();
    assert_eq!(kind(&[]), clap::error::ErrorKind::MissingRequiredArgument);
    assert_eq!(
        kind(&["--to-earliest", "--to-latest"]),
        clap::error::ErrorKind::ArgumentConflict
    );
    assert_eq!(
        kind(&["--to-offset", "1", "--shift-by", "1"]),
        clap::error::ErrorKind::ArgumentConflict
    );
}

#[test]
fn group_commands_reject_bad_values() {
    for bad in [
        &["--to-offset", "-1"][..],
        &["--to-offset", "x"],
        &["--to-timestamp", "-5"],
        &["--shift-by", "x"],
        &["--shift-by"],
        &["--partition", "-1", "--to-earliest"],
        &["--to-earliest", "--format", "yaml"],
    ] {
        assert!(parse_reset(bad).is_err(), "{bad:?}");
    }
    for bad in [
        &["reset-offsets", "g", "--to-earliest"][..],
        &["reset-offsets", "--topic", "t", "--to-earliest"],
        &["describe"],
        &["delete"],
        &["list", "--format", "csv"],
        &["list", "--broker", "nohost"],
        &["frobnicate"],
    ] {
        assert!(parse_group(bad).is_err(), "{bad:?}");
    }
}

#[test]
fn group_errors_name_the_group() {
    let ctx = Ctx::group("127.0.0.1:1", "g");
    let e = |code, message: &str| ClientError::Broker {
        code,
        message: message.into(),
    };
    assert_eq!(
        ctx.describe(&e(ErrorCode::GROUP_ID_NOT_FOUND, "no group g")),
        "group 'g' does not exist"
    );
    assert_eq!(
        ctx.describe(&e(ErrorCode::NON_EMPTY_GROUP, "group g has 1 members")),
        "group 'g' still has members: group g has 1 members"
    );
    assert!(ctx
        .describe(&e(ErrorCode::COORDINATOR_NOT_AVAILABLE, ""))
        .starts_with("no coordinator is available for group 'g'"));
    // With a topic as well, topic errors still name the topic.
    assert_eq!(
        ctx.with_topic("t")
            .describe(&e(ErrorCode::UNKNOWN_TOPIC_OR_PARTITION, "")),
        "topic 't' does not exist"
    );
    assert_eq!(
        ctx.describe(&ClientError::InvalidArgument(
            "offset 9 is out of range".into()
        )),
        "offset 9 is out of range"
    );
}
