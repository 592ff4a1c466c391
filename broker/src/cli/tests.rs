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
