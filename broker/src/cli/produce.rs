//! `sluice produce TOPIC`: one record per input line (stdin, or `--file`), optionally split into key
//! and value at the first `--key-separator`. A line is its bytes without the trailing `\n` (or
//! `\r\n`); a last line without a newline counts too. A thread reads the input and hands lines to the
//! async side through a bounded channel, so a slow broker slows the reading. Each accepted record's
//! delivery future goes to a collector task that awaits them in order and counts successes and
//! failures; after the first failure no more input is read. At the end the producer is flushed and
//! closed, a summary goes to stderr, and any failed record makes the command fail.

use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use sluice_client::{ClientError, DeliveryFuture, Producer, ProducerConfig, ProducerRecord};
use tokio::sync::mpsc;

use super::{CliError, Ctx, ProduceArgs};

/// Lines read ahead of the producer.
const READ_AHEAD_LINES: usize = 1024;

/// What the collector saw.
#[derive(Debug, Default)]
struct Outcome {
    delivered: u64,
    failed: u64,
    /// Line number and error of the first failed record.
    first_failure: Option<(u64, ClientError)>,
}

pub async fn run(args: ProduceArgs) -> Result<(), CliError> {
    let broker = args.conn.broker.as_str();
    let topic = args.topic.as_str();
    let ctx = Ctx::topic(broker, topic);

    // Open the input first, so a missing file is reported without asking the broker anything.
    let (input, input_name): (Box<dyn Read + Send>, String) = match &args.file {
        Some(path) => (Box::new(open(path)?), path.display().to_string()),
        None => (Box::new(std::io::stdin()), "stdin".to_string()),
    };

    let config = ProducerConfig {
        acks: args.acks.into(),
        compression: args.compression.into(),
        idempotence: args.idempotence == super::OnOff::On,
        producer_name: args.producer_name.clone(),
        ..ProducerConfig::default()
    };
    let producer = Producer::new(broker, config).map_err(|e| ctx.err(e))?;
    // Unknown topics and partitions are reported before any input is read.
    let partitions = producer
        .client()
        .partition_count(topic)
        .await
        .map_err(|e| ctx.err(e))?;
    if let Some(p) = args.partition {
        if p >= partitions {
            return Err(no_such_partition(topic, p, partitions));
        }
    }

    let (line_tx, mut lines) = mpsc::channel(READ_AHEAD_LINES);
    std::thread::Builder::new()
        .name("sluice-produce-input".into())
        .spawn(move || read_lines(input, line_tx))
        .map_err(|e| CliError::new(format!("cannot start the input reader: {e}")))?;

    let failed = Arc::new(AtomicBool::new(false));
    let (delivery_tx, deliveries) = mpsc::unbounded_channel();
    let collector = tokio::spawn(collect(deliveries, failed.clone()));

    let separator = args.key_separator.as_deref().map(str::as_bytes);
    let mut line_no = 0u64;
    let mut stopped: Option<CliError> = None;
    while let Some(line) = lines.recv().await {
        if failed.load(Ordering::Relaxed) {
            break;
        }
        line_no += 1;
        let line = match line {
            Ok(l) => l,
            Err(e) => {
                stopped = Some(CliError::new(format!("cannot read {input_name}: {e}")));
                break;
            }
        };
        let mut record = match separator {
            None => ProducerRecord::new(topic, line),
            Some(sep) => match split_key(&line, sep) {
                Some((key, value)) => ProducerRecord::new(topic, Bytes::copy_from_slice(value))
                    .key(Bytes::copy_from_slice(key)),
                None => {
                    stopped = Some(CliError::new(format!(
                        "line {line_no} of {input_name} has no key separator '{}'",
                        String::from_utf8_lossy(sep)
                    )));
                    break;
                }
            },
        };
        record.partition = args.partition;
        match producer.send(record).await {
            Ok(delivery) => {
                // The collector only stops once this sender is dropped.
                let _ = delivery_tx.send((line_no, delivery));
            }
            Err(e) => {
                stopped = Some(CliError::new(format!(
                    "record at line {line_no} not sent: {}",
                    ctx.err(e)
                )));
                break;
            }
        }
    }
    // Stop the reader (it notices at its next line) and wait for everything accepted.
    drop(lines);
    let flushed = producer.flush().await;
    drop(delivery_tx);
    let outcome = collector
        .await
        .map_err(|e| CliError::new(format!("delivery collector failed: {e}")))?;
    let closed = producer.close().await;

    let failed_part = if outcome.failed > 0 {
        format!(", {} failed", outcome.failed)
    } else {
        String::new()
    };
    let plural = if outcome.delivered == 1 { "" } else { "s" };
    eprintln!(
        "produced {} record{plural} to topic '{topic}'{failed_part}",
        outcome.delivered
    );

    if let Some((line, e)) = outcome.first_failure {
        return Err(CliError::new(format!(
            "record at line {line} failed: {}",
            ctx.err(e)
        )));
    }
    if let Some(e) = stopped {
        return Err(e);
    }
    flushed.map_err(|e| ctx.err(e))?;
    closed.map_err(|e| ctx.err(e))
}

fn open(path: &Path) -> Result<std::fs::File, CliError> {
    std::fs::File::open(path)
        .map_err(|e| CliError::new(format!("cannot open {}: {e}", path.display())))
}

pub fn no_such_partition(topic: &str, partition: u32, partitions: u32) -> CliError {
    let plural = if partitions == 1 { "" } else { "s" };
    CliError::new(format!(
        "topic '{topic}' has no partition {partition} (it has {partitions} partition{plural})"
    ))
}

/// Reads lines (without their `\n` or `\r\n`) into `tx` until the input ends, a read fails, or the
/// receiver is gone.
fn read_lines(input: Box<dyn Read + Send>, tx: mpsc::Sender<std::io::Result<Bytes>>) {
    let mut reader = BufReader::with_capacity(64 << 10, input);
    loop {
        let mut buf = Vec::new();
        match reader.read_until(b'\n', &mut buf) {
            Ok(0) => return,
            Ok(_) => {
                if buf.last() == Some(&b'\n') {
                    buf.pop();
                    if buf.last() == Some(&b'\r') {
                        buf.pop();
                    }
                }
                if tx.blocking_send(Ok(Bytes::from(buf))).is_err() {
                    return;
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => {
                let _ = tx.blocking_send(Err(e));
                return;
            }
        }
    }
}

/// `line` split at the first `sep` into key and value.
fn split_key<'a>(line: &'a [u8], sep: &[u8]) -> Option<(&'a [u8], &'a [u8])> {
    if sep.is_empty() || sep.len() > line.len() {
        return None;
    }
    let at = line.windows(sep.len()).position(|w| w == sep)?;
    Some((&line[..at], &line[at + sep.len()..]))
}

/// Awaits every delivery in order; sets `failed` at the first failure.
async fn collect(
    mut deliveries: mpsc::UnboundedReceiver<(u64, DeliveryFuture)>,
    failed: Arc<AtomicBool>,
) -> Outcome {
    let mut outcome = Outcome::default();
    while let Some((line, delivery)) = deliveries.recv().await {
        match delivery.await {
            Ok(_) => outcome.delivered += 1,
            Err(e) => {
                outcome.failed += 1;
                failed.store(true, Ordering::Relaxed);
                outcome.first_failure.get_or_insert((line, e));
            }
        }
    }
    outcome
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_at_the_first_separator() {
        assert_eq!(split_key(b"k:v:w", b":"), Some((&b"k"[..], &b"v:w"[..])));
        assert_eq!(split_key(b"k=>v", b"=>"), Some((&b"k"[..], &b"v"[..])));
        assert_eq!(split_key(b":v", b":"), Some((&b""[..], &b"v"[..])));
        assert_eq!(split_key(b"k:", b":"), Some((&b"k"[..], &b""[..])));
        assert_eq!(split_key(b"kv", b":"), None);
        assert_eq!(split_key(b"", b":"), None);
    }

    #[test]
    fn reads_lines_without_their_endings() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime");
        let (tx, mut rx) = mpsc::channel(16);
        let input: Box<dyn Read + Send> = Box::new(&b"a\nb\r\n\nlast"[..]);
        std::thread::spawn(move || read_lines(input, tx))
            .join()
            .expect("reader");
        let mut got = Vec::new();
        rt.block_on(async {
            while let Some(l) = rx.recv().await {
                got.push(l.expect("line"));
            }
        });
        assert_eq!(got, vec!["a", "b", "", "last"]);
    }
}
