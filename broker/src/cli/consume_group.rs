//! `sluice consume TOPIC --group GROUP`: joins the consumer group, prints the records of the
//! partitions its coordinator assigns this member (same line formats as `sluice consume`), and
//! commits what it has printed: records are printed and flushed before the next `poll`, whose
//! auto-commit (every `--commit-interval-ms`) then commits the positions after them; on exit the
//! member commits once more and leaves the group. SIGTERM and ctrl-c end it the same way, so a
//! stopped consumer hands its partitions over at once instead of after its session timeout.
//! A partition without a committed offset starts per `--reset` (earliest by default).
//!
//! Without `--follow` it ends once it owns partitions and a poll of one second returns nothing
//! (caught up), or after `-n` records. It never seeks: where it starts is the group's business.

use std::collections::BTreeMap;
use std::time::Duration;

use sluice_client::{
    Client, ClientConfig, GroupConsumer, GroupConsumerConfig, OffsetReset, SeekTo, Subscription,
};

use clap::{Args, ValueEnum};

use super::consume::format_record;
use super::{write_stdout, CliError, ConsumeArgs, Ctx};

/// The group options of `sluice consume`.
#[derive(Debug, Args)]
pub struct GroupOpts {
    /// Join this consumer group: read the partitions it assigns, from its committed offsets, and
    /// commit what was printed (at `--commit-interval-ms` and on exit; SIGTERM or ctrl-c leave
    /// the group cleanly).
    #[arg(long, value_name = "GROUP")]
    pub group: Option<String>,
    /// With --group: commit the printed position this often.
    #[arg(long, value_name = "MS", default_value_t = 5000, requires = "group")]
    pub commit_interval_ms: u64,
    /// With --group: where a partition without a committed offset starts.
    #[arg(long, value_enum, default_value_t = ResetArg::Earliest, requires = "group")]
    pub reset: ResetArg,
    /// With --group: a static member id (keeps its partitions across a restart within the
    /// session timeout).
    #[arg(long, value_name = "ID", requires = "group")]
    pub instance_id: Option<String>,
    /// With --group: the session to ask the coordinator for (within the broker's bounds).
    #[arg(long, value_name = "MS", requires = "group")]
    pub session_timeout_ms: Option<u64>,
}

/// Where a group member starts on a partition without a committed offset.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ResetArg {
    /// The first retained record.
    Earliest,
    /// The end: only records produced from now on.
    Latest,
    /// Fail, naming the partition.
    None,
}

/// Longest one poll waits when following.
const FOLLOW_POLL: Duration = Duration::from_secs(1);
/// Without `--follow`, a poll this long with nothing means caught up.
const DRAIN_POLL: Duration = Duration::from_secs(1);

/// Resolves when SIGTERM or ctrl-c arrives (never, if no handler can be installed).
async fn stop_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        if let Ok(mut term) = signal(SignalKind::terminate()) {
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
            return;
        }
    }
    let _ = tokio::signal::ctrl_c().await;
}

pub async fn run(args: ConsumeArgs, group: String) -> Result<(), CliError> {
    let broker = args.conn.broker.as_str();
    let topic = args.topic.clone();
    let ctx = Ctx::topic(broker, &topic);
    if args.offset.is_some() || args.timestamp.is_some() || args.partition.is_some() {
        return Err(CliError::new(
            "--group reads the partitions the group assigns, from its committed offsets: \
             --offset, --timestamp and --partition do not apply (move a group's offsets with \
             `sluice group reset-offsets`)",
        ));
    }
    let mut config = GroupConsumerConfig::new(group, Subscription::Topics(vec![topic.clone()]));
    let opts = &args.group;
    config.auto_commit = Some(Duration::from_millis(opts.commit_interval_ms.max(1)));
    config.reset = match opts.reset {
        ResetArg::Earliest => OffsetReset::Earliest,
        ResetArg::Latest => OffsetReset::Latest,
        ResetArg::None => OffsetReset::None,
    };
    config.instance_id = opts.instance_id.clone();
    config.client_id = "sluice-cli".into();
    config.session_timeout = opts.session_timeout_ms.map(Duration::from_millis);
    let client = Client::new(ClientConfig::new(broker)).map_err(|e| ctx.err(e))?;
    let mut consumer = GroupConsumer::new(client, config).map_err(|e| ctx.err(e))?;
    if args.count == Some(0) {
        return Ok(());
    }
    let outcome = tokio::select! {
        r = consume(&mut consumer, &args, &ctx) => r,
        _ = stop_signal() => Ok(()),
    };
    // Whatever ended the loop, what was printed is committed and the member leaves.
    let closed = consumer.close().await.map_err(|e| ctx.err(e));
    outcome.and(closed)
}

/// Polls and prints until `-n`, or (without `--follow`) until caught up.
async fn consume(
    consumer: &mut GroupConsumer,
    args: &ConsumeArgs,
    ctx: &Ctx<'_>,
) -> Result<(), CliError> {
    let timeout = if args.follow { FOLLOW_POLL } else { DRAIN_POLL };
    let mut printed = 0u64;
    loop {
        let records = consumer.poll(timeout).await.map_err(|e| ctx.err(e))?;
        if records.is_empty() {
            if !args.follow && !consumer.assignment().is_empty() {
                return Ok(());
            }
            continue;
        }
        let mut out = Vec::new();
        for (i, r) in records.iter().enumerate() {
            format_record(args.format, r, &mut out)?;
            printed += 1;
            if args.count.is_some_and(|n| printed >= n) {
                write_stdout(&out)?;
                // Only what was printed may be committed (on close): move each partition with
                // unprinted records of this poll back to its first unprinted one.
                let mut first: BTreeMap<(&str, u32), u64> = BTreeMap::new();
                for rest in &records[i + 1..] {
                    first
                        .entry((&rest.topic, rest.partition))
                        .or_insert(rest.offset);
                }
                for ((t, p), offset) in first {
                    consumer
                        .seek(t, p, SeekTo::Offset(offset))
                        .await
                        .map_err(|e| ctx.err(e))?;
                }
                return Ok(());
            }
        }
        write_stdout(&out)?;
    }
}
