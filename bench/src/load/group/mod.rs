//! `sluice-bench group`: consumer groups against one broker (spawned with group settings written to
//! a temporary TOML file, by default, or `--broker ADDR`), three measurements in one report:
//!
//! - [`drain`]: a backlog read by one plain consumer (the baseline) and by a group, alternating, as
//!   MiB/s and their ratio, every record counted;
//! - [`leave`]: a member of a live group closes; how long until its partitions flow again;
//! - [`join`]: one member joins a live group of `--join-members`; how long partitions that stay
//!   pause against the same measure before the join, and how long the moved ones take to resume.
//!
//! Times are printed in ms and in heartbeat intervals. This module owns the flags and their
//! checks, the broker and the runtime; [`members`] runs group members (each its own client, so its
//! own connection: see there), [`tail`] the producer and the receipts of the live measurements,
//! [`summary`] the table and the JSON last line.

mod drain;
mod join;
mod leave;
mod members;
mod probe;
mod summary;
mod tail;

use std::io::Write as _;
use std::path::PathBuf;
use std::time::Duration;

use sluice_client::Admin;

use super::spawn::{self, SpawnedBroker};
use super::{AcksArg, Args, Error, Mode, Settings, Stop};

/// A measurement `--only` can pick.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Phase {
    Drain,
    Leave,
    Join,
}

#[derive(Debug, Clone, clap::Args)]
pub struct GroupArgs {
    /// Members of the group in the drain and leave measurements.
    #[arg(long, default_value_t = 4)]
    members: usize,
    /// Partitions of the drain and leave topics.
    #[arg(long, default_value_t = 16)]
    partitions: u32,
    /// MiB of record values in the drain backlog.
    #[arg(long, default_value_t = 2048)]
    backlog_mb: u64,
    /// Bytes of value per backlog record.
    #[arg(long, default_value_t = 1024)]
    record_size: usize,
    /// Drains of the backlog by a plain consumer, then by a group, alternating.
    #[arg(long, default_value_t = 1)]
    pairs: u32,
    /// Members in the group one more member joins; its topic has twice as many partitions.
    #[arg(long, default_value_t = 100)]
    join_members: usize,
    /// The brokers' group heartbeat interval (spawned broker), or that of the --broker (only used
    /// to express times in intervals).
    #[arg(long, default_value_t = 1000)]
    heartbeat_interval_ms: u64,
    /// The spawned broker's group session timeout [default: 10 heartbeat intervals].
    #[arg(long)]
    session_timeout_ms: Option<u64>,
    /// In the leave and join measurements, the producer writes one record to every partition this
    /// often.
    #[arg(long, default_value_t = 10)]
    produce_interval_ms: u64,
    /// Run only these measurements (repeatable) [default: all].
    #[arg(long, value_enum)]
    only: Vec<Phase>,
    /// A running broker, HOST:PORT, instead of spawning one (its group settings are its own).
    #[arg(long, conflicts_with = "spawn_broker")]
    broker: Option<String>,
    /// Start the real `sluice` binary for the run (the default without --broker).
    #[arg(long)]
    spawn_broker: bool,
    /// The `sluice` binary to spawn [default: `sluice` next to this executable].
    #[arg(long)]
    sluice_bin: Option<PathBuf>,
}

/// Checked settings of a group run.
#[derive(Debug, Clone)]
pub(crate) struct GroupSettings {
    pub members: usize,
    pub partitions: u32,
    pub backlog_mb: u64,
    pub record_size: usize,
    pub pairs: u32,
    pub join_members: usize,
    pub heartbeat: Duration,
    pub session: Duration,
    pub produce_interval: Duration,
    pub phases: Vec<Phase>,
    /// How long a group may take to settle.
    pub settle_wait: Duration,
    /// How long moved partitions may take to flow again before the run fails.
    pub resume_wait: Duration,
    /// The spawned broker's process, for its CPU use.
    pub broker_pid: Option<u32>,
}

impl GroupSettings {
    fn check(a: &GroupArgs) -> Result<GroupSettings, Error> {
        let bad = |m: &str| -> Result<GroupSettings, Error> { Err(m.to_string().into()) };
        if a.members == 0 || a.join_members == 0 {
            return bad("--members and --join-members must be at least 1");
        }
        if a.join_members > 10_000 {
            return bad("--join-members must be at most 10000");
        }
        if a.partitions == 0 || a.record_size == 0 || a.backlog_mb == 0 || a.pairs == 0 {
            return bad("--partitions, --record-size, --backlog-mb and --pairs must be at least 1");
        }
        if !(10..=60_000).contains(&a.heartbeat_interval_ms) {
            return bad("--heartbeat-interval-ms must be 10 to 60000");
        }
        let session = a.session_timeout_ms.unwrap_or(10 * a.heartbeat_interval_ms);
        if session < 2 * a.heartbeat_interval_ms {
            return bad("--session-timeout-ms must be at least two heartbeat intervals");
        }
        if !(1..=10_000).contains(&a.produce_interval_ms) {
            return bad("--produce-interval-ms must be 1 to 10000");
        }
        let heartbeat = Duration::from_millis(a.heartbeat_interval_ms);
        let phases = if a.only.is_empty() {
            vec![Phase::Drain, Phase::Leave, Phase::Join]
        } else {
            a.only.clone()
        };
        Ok(GroupSettings {
            members: a.members,
            partitions: a.partitions,
            backlog_mb: a.backlog_mb,
            record_size: a.record_size,
            pairs: a.pairs,
            join_members: a.join_members,
            heartbeat,
            session: Duration::from_millis(session),
            produce_interval: Duration::from_millis(a.produce_interval_ms),
            phases,
            // Joining a hundred members goes through many rebalances one heartbeat apart.
            settle_wait: Duration::from_secs(120).max(60 * heartbeat),
            resume_wait: Duration::from_secs(30).max(30 * heartbeat),
            broker_pid: None,
        })
    }

    /// The load generator's settings for a topic of `partitions` partitions (for creating it and,
    /// in the drain, for the fill and the plain consumer): one producer, one consumer, 1 MiB
    /// batches, acks leader, idempotent.
    fn load_settings(&self, partitions: u32, stop: Stop) -> Result<Settings, Error> {
        let args = Args {
            duration: None,
            count: match stop {
                Stop::Count(n) => Some(n),
                Stop::Duration(_) => None,
            },
            replication_factor: Some(1),
            ..Args::produce_for(0.0, self.record_size, partitions, AcksArg::Leader)
        };
        Settings::check(Mode::Consume, args)
    }

    /// The spawned broker's group settings.
    fn broker_toml(&self) -> String {
        let session = self.session.as_millis();
        format!(
            "group_heartbeat_interval_ms = {}\ngroup_session_timeout_ms = {session}\n\
             group_min_session_timeout_ms = {}\n",
            self.heartbeat.as_millis(),
            session.min(100),
        )
    }
}

pub fn run(a: GroupArgs) -> Result<(), Box<dyn std::error::Error>> {
    run_checked(a).map_err(|e| e as Box<dyn std::error::Error>)
}

fn run_checked(a: GroupArgs) -> Result<(), Error> {
    let mut g = GroupSettings::check(&a)?;
    // The TOML file lives until the broker is stopped.
    let mut toml = None;
    let extra = match &a.broker {
        Some(_) => Vec::new(),
        None => {
            let mut file = tempfile::Builder::new()
                .prefix("sluice-bench-group-")
                .suffix(".toml")
                .tempfile()
                .map_err(|e| format!("cannot create the broker's config file: {e}"))?;
            file.write_all(g.broker_toml().as_bytes())
                .and_then(|()| file.flush())
                .map_err(|e| format!("cannot write the broker's config file: {e}"))?;
            let extra = vec!["--config".to_string(), file.path().display().to_string()];
            toml = Some(file);
            extra
        }
    };
    let (addr, broker) =
        spawn::given_or_spawned(a.broker.as_deref(), a.sluice_bin.as_deref(), &extra)?;
    g.broker_pid = broker.as_ref().and_then(SpawnedBroker::pid);
    let result = crate::load::until_interrupted(bench(&g, &addr));
    if let Some(b) = broker {
        if let Err(e) = b.stop() {
            eprintln!("sluice-bench: warning: {e}");
        }
    }
    drop(toml);
    let mut report = result?;
    report.broker = addr;
    report.spawned = a.broker.is_none();
    report.print(&g);
    Ok(())
}

async fn bench(g: &GroupSettings, addr: &str) -> Result<summary::Report, Error> {
    super::reach(addr).await?;
    let admin = Admin::new(addr).map_err(|e| format!("bad --broker {addr:?}: {e}"))?;
    let mut r = summary::Report::default();
    if g.phases.contains(&Phase::Drain) {
        r.drain = Some(drain::run(g, addr, &admin).await?);
    }
    if g.phases.contains(&Phase::Leave) {
        eprintln!("sluice-bench: group: leave");
        r.leave = Some(leave::run(g, addr, &admin).await?);
    }
    if g.phases.contains(&Phase::Join) {
        r.join = Some(join::run(g, addr, &admin).await?);
    }
    Ok(r)
}
