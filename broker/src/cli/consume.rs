//! `sluice consume TOPIC`: prints the records of a topic to stdout, one per line, as the value, as
//! `key<TAB>value`, or as a JSON object. The topic's metadata (read first, so an unknown topic or
//! partition fails at once) gives the partitions to read and, unless `--follow`, where to stop: the
//! high watermark each partition had at start. Each partition is positioned at its first retained
//! record, at `--offset` (checked against the partition's range) or at the first record at or after
//! `--timestamp`; partitions that reach their end are dropped from the assignment, and the command
//! ends when none is left or `-n` records were printed. Output is flushed after every poll, so
//! `--follow` shows records as they arrive.
//!
//! The client's `poll` quietly retries a broker that went away until the poll's timeout; after a
//! poll that returned nothing the topic's metadata is read again, which turns a broker that stays
//! away, or a topic deleted meanwhile, into an error instead of a silent wait.

use std::borrow::Cow;
use std::collections::HashMap;
use std::time::Duration;

use bytes::Bytes;
use serde::Serialize;
use sluice_client::{
    Admin, ClientError, Consumer, ConsumerConfig, ConsumerRecord, ErrorCode, OffsetReset, SeekTo,
};

use super::produce::no_such_partition;
use super::{write_stdout, CliError, ConsumeArgs, Ctx, Format};

/// Longest one poll waits before the topic's metadata is checked again.
const FOLLOW_POLL: Duration = Duration::from_secs(5);
/// Without `--follow` every poll has data to return unless something is wrong.
const DRAIN_POLL: Duration = Duration::from_secs(1);

pub async fn run(mut args: ConsumeArgs) -> Result<(), CliError> {
    if let Some(group) = args.group.group.take() {
        return super::consume_group::run(args, group).await;
    }
    let broker = args.conn.broker.as_str();
    let topic = args.topic.as_str();
    let ctx = Ctx::topic(broker, topic);

    let config = ConsumerConfig {
        // An explicit offset that falls out of the log is an error, not a silent restart.
        auto_offset_reset: if args.offset.is_some() {
            OffsetReset::None
        } else {
            OffsetReset::Earliest
        },
        ..ConsumerConfig::default()
    };
    let mut consumer = Consumer::new(broker, config).map_err(|e| ctx.err(e))?;
    let admin = Admin::with_client(consumer.client().clone());
    let metadata = admin.describe_topic(topic).await.map_err(|e| ctx.err(e))?;
    let mut partitions = metadata.partitions;
    partitions.sort_by_key(|p| p.partition);
    if let Some(p) = args.partition {
        let count = u32::try_from(partitions.len()).unwrap_or(u32::MAX);
        partitions.retain(|m| m.partition == p);
        if partitions.is_empty() {
            return Err(no_such_partition(topic, p, count));
        }
    }
    if args.count == Some(0) {
        return Ok(());
    }

    let mut active: Vec<u32> = partitions.iter().map(|p| p.partition).collect();
    consumer.assign(&assignment(topic, &active));
    for p in &partitions {
        let to = match (args.offset, args.timestamp) {
            (Some(offset), _) => {
                if offset < p.log_start_offset || offset > p.high_watermark {
                    return Err(CliError::new(format!(
                        "offset {offset} is out of range for partition {} of topic '{topic}' \
                         (log start offset {}, high watermark {})",
                        p.partition, p.log_start_offset, p.high_watermark
                    )));
                }
                SeekTo::Offset(offset)
            }
            (None, Some(ts)) => SeekTo::Timestamp(ts),
            (None, None) => SeekTo::Earliest,
        };
        consumer
            .seek(topic, p.partition, to)
            .await
            .map_err(|e| ctx.err(e))?;
    }
    // Where each partition ends when not following: its high watermark at start.
    let ends: HashMap<u32, u64> = partitions
        .iter()
        .map(|p| (p.partition, p.high_watermark))
        .collect();
    let past_end = |partition: u32, offset: u64| {
        !args.follow && ends.get(&partition).is_none_or(|&end| offset >= end)
    };

    let timeout = if args.follow { FOLLOW_POLL } else { DRAIN_POLL };
    let mut printed = 0u64;
    loop {
        if !args.follow {
            let before = active.len();
            active.retain(|&p| {
                consumer
                    .position(topic, p)
                    .is_none_or(|pos| !past_end(p, pos))
            });
            if active.is_empty() {
                return Ok(());
            }
            if active.len() != before {
                consumer.assign(&assignment(topic, &active));
            }
        }
        let records = consumer
            .poll(timeout)
            .await
            .map_err(|e| poll_error(&ctx, e))?;
        if records.is_empty() {
            admin.describe_topic(topic).await.map_err(|e| ctx.err(e))?;
            continue;
        }
        let mut out = Vec::new();
        let mut done = false;
        for r in &records {
            if past_end(r.partition, r.offset) {
                continue;
            }
            format_record(args.format, r, &mut out)?;
            printed += 1;
            if args.count.is_some_and(|n| printed >= n) {
                done = true;
                break;
            }
        }
        write_stdout(&out)?;
        if done {
            return Ok(());
        }
    }
}

fn assignment<'a>(topic: &'a str, partitions: &[u32]) -> Vec<(&'a str, u32)> {
    partitions.iter().map(|&p| (topic, p)).collect()
}

fn poll_error(ctx: &Ctx<'_>, e: ClientError) -> CliError {
    match (&e, ctx.topic) {
        (
            ClientError::Broker {
                code: ErrorCode::OFFSET_OUT_OF_RANGE,
                ..
            },
            Some(topic),
        ) => CliError::new(format!(
            "the requested offset is no longer in topic '{topic}' (deleted by retention); \
             try --from-beginning"
        )),
        _ => ctx.err(e),
    }
}

/// A record in `--format json`.
#[derive(Debug, Serialize)]
struct JsonRecord<'a> {
    topic: &'a str,
    partition: u32,
    offset: u64,
    timestamp: i64,
    key: Option<Cow<'a, str>>,
    value: Option<Cow<'a, str>>,
    headers: Vec<JsonHeader<'a>>,
}

#[derive(Debug, Serialize)]
struct JsonHeader<'a> {
    key: Cow<'a, str>,
    value: Option<Cow<'a, str>>,
}

fn text(b: &Option<Bytes>) -> Option<Cow<'_, str>> {
    b.as_deref().map(String::from_utf8_lossy)
}

/// Appends one line for `r` to `out`.
pub(super) fn format_record(
    format: Format,
    r: &ConsumerRecord,
    out: &mut Vec<u8>,
) -> Result<(), CliError> {
    match format {
        Format::Value => out.extend_from_slice(text(&r.value).unwrap_or_default().as_bytes()),
        Format::KeyValue => {
            out.extend_from_slice(text(&r.key).unwrap_or_default().as_bytes());
            out.push(b'\t');
            out.extend_from_slice(text(&r.value).unwrap_or_default().as_bytes());
        }
        Format::Json => {
            let record = JsonRecord {
                topic: &r.topic,
                partition: r.partition,
                offset: r.offset,
                timestamp: r.timestamp_ms,
                key: text(&r.key),
                value: text(&r.value),
                headers: r
                    .headers
                    .iter()
                    .map(|h| JsonHeader {
                        key: String::from_utf8_lossy(&h.key),
                        value: text(&h.value),
                    })
                    .collect(),
            };
            serde_json::to_writer(&mut *out, &record)
                .map_err(|e| CliError::new(format!("cannot encode a record as JSON: {e}")))?;
        }
    }
    out.push(b'\n');
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_client::Header;
    use std::sync::Arc;

    fn record(key: Option<&'static [u8]>, value: Option<&'static [u8]>) -> ConsumerRecord {
        ConsumerRecord {
            topic: Arc::from("t"),
            partition: 2,
            offset: 7,
            timestamp_ms: 1_000,
            key: key.map(Bytes::from_static),
            value: value.map(Bytes::from_static),
            headers: vec![Header {
                key: Bytes::from_static(b"h"),
                value: None,
            }],
        }
    }

    fn line(format: Format, r: &ConsumerRecord) -> String {
        let mut out = Vec::new();
        format_record(format, r, &mut out).expect("format");
        String::from_utf8(out).expect("utf-8")
    }

    #[test]
    fn formats() {
        let r = record(Some(b"k"), Some(b"v\xff"));
        assert_eq!(line(Format::Value, &r), "v\u{fffd}\n");
        assert_eq!(line(Format::KeyValue, &r), "k\tv\u{fffd}\n");
        assert_eq!(
            line(Format::Json, &r),
            "{\"topic\":\"t\",\"partition\":2,\"offset\":7,\"timestamp\":1000,\"key\":\"k\",\
             \"value\":\"v\u{fffd}\",\"headers\":[{\"key\":\"h\",\"value\":null}]}\n"
        );
        let null = record(None, None);
        assert_eq!(line(Format::Value, &null), "\n");
        assert_eq!(line(Format::KeyValue, &null), "\t\n");
        assert!(line(Format::Json, &null).contains("\"key\":null,\"value\":null"));
    }
}
