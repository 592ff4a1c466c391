//! `sluice-bench produce|consume|e2e`: the load generator against a live broker (one given by
//! `--broker`, or a real `sluice` process started for the run with `--spawn-broker`). The three modes
//! share these flags (their names and the JSON keys of the last output line are an interface that
//! users script against): this module parses and checks them, prepares the broker and the topic, runs
//! the mode ([`produce`], [`consume`], [`e2e`]) on a multi-threaded tokio runtime, stops a spawned
//! broker, and prints the [`report`]: a table, then one JSON object as the last line.

mod backlog;
mod collector;
mod consume;
mod e2e;
pub(crate) mod group;
pub(crate) mod leaders;
mod produce;
pub(crate) mod replication;
mod report;
pub(crate) mod scrape;
mod settings;
pub(crate) mod spawn;
mod tail;
mod values;

use std::path::PathBuf;
use std::time::Duration;

use sluice_client::{Admin, ClientError, ErrorCode, OffsetSpec};

pub use settings::*;

/// Errors of the load generator; `Send` so they cross tasks.
pub type Error = Box<dyn std::error::Error + Send + Sync>;

/// The topic a run uses.
#[derive(Debug, Clone)]
pub(crate) struct Topic {
    pub name: String,
    pub partitions: u32,
    /// It existed before the run (so it may hold records).
    pub existed: bool,
}

/// Runs one load generator and prints its report.
pub fn run(mode: Mode, args: Args) -> Result<(), Box<dyn std::error::Error>> {
    run_checked(mode, args).map_err(|e| e as Box<dyn std::error::Error>)
}

fn run_checked(mode: Mode, args: Args) -> Result<(), Error> {
    run_report(mode, args)?.print();
    Ok(())
}

/// Runs one load generator (starting and stopping any spawned brokers) and returns its report
/// unprinted.
pub(crate) fn run_report(mode: Mode, args: Args) -> Result<report::Report, Error> {
    let bin = match &args.sluice_bin {
        Some(p) => p.clone(),
        None if args.spawn_broker || args.spawn_cluster.is_some() => spawn::default_bin()?,
        None => PathBuf::new(),
    };
    let broker_arg = args.broker.clone();
    let mut settings = Settings::check(mode, args)?;
    let extra: Vec<String> = settings
        .broker_window_mb
        .map(|mb| vec!["--page-cache-window-mb".to_string(), mb.to_string()])
        .unwrap_or_default();
    let brokers = if settings.spawn_broker {
        vec![spawn::SpawnedBroker::start_with(
            &bin,
            settings.broker_flush,
            "127.0.0.1:0",
            &extra,
        )?]
    } else if let Some(n) = settings.spawn_cluster {
        spawn::SpawnedBroker::start_cluster(&bin, settings.broker_flush, n, &extra)?
    } else {
        Vec::new()
    };
    if settings.spawn_broker {
        settings.broker_data_dir = brokers.first().map(spawn::SpawnedBroker::data_dir);
    }
    let addr = if brokers.is_empty() {
        broker_arg
    } else {
        brokers
            .iter()
            .map(|b| b.addr().to_string())
            .collect::<Vec<_>>()
            .join(",")
    };
    let result = until_interrupted(bench(&settings, &addr));
    for b in brokers {
        if let Err(e) = b.stop() {
            // The figures stand; say why the broker's exit was not clean.
            eprintln!("sluice-bench: warning: {e}");
        }
    }
    result
}

/// Longest the first connection to the broker may take.
const CONNECT_WAIT: Duration = Duration::from_secs(10);

/// The median of `v` (the mean of the two middle values for an even count; 0 for none).
pub(crate) fn median(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    match s.len() {
        0 => 0.0,
        n if n % 2 == 1 => s[n / 2],
        n => (s[n / 2 - 1] + s[n / 2]) / 2.0,
    }
}

/// Runs `work` on a fresh multi-thread runtime until it ends or Ctrl-C. Ctrl-C ends it through the
/// same path as an error, so that the caller still stops its spawned brokers and removes their
/// data directories.
pub(crate) fn until_interrupted<T>(
    work: impl std::future::Future<Output = Result<T, Error>>,
) -> Result<T, Error> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the tokio runtime: {e}"))?;
    let result = runtime.block_on(async {
        tokio::select! {
            r = work => r,
            _ = tokio::signal::ctrl_c() => Err("interrupted".into()),
        }
    });
    runtime.shutdown_timeout(Duration::from_secs(5));
    result
}

async fn bench(s: &Settings, addr: &str) -> Result<report::Report, Error> {
    reach(addr).await?;
    let admin = Admin::new(addr).map_err(|e| format!("bad --broker {addr:?}: {e}"))?;
    let topic = prepare_topic(s, &admin, addr).await?;
    let mut report = match s.mode {
        Mode::Produce => produce::run(s, addr, &topic).await?,
        Mode::Consume => consume::run(s, addr, &topic, &admin).await?,
        Mode::E2e => e2e::run(s, addr, &topic, &admin).await?,
    };
    report.settings(s, addr, &topic);
    Ok(report)
}

/// One plain connection to the first broker of `addr`, so an unreachable broker fails at once and
/// plainly rather than through the client's retries.
pub(crate) async fn reach(addr: &str) -> Result<(), Error> {
    let first = addr.split(',').next().unwrap_or(addr);
    match tokio::time::timeout(CONNECT_WAIT, tokio::net::TcpStream::connect(first)).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) => Err(format!("cannot reach the broker at {addr}: {e}").into()),
        Err(_) => {
            Err(format!("cannot reach the broker at {addr}: no answer in {CONNECT_WAIT:?}").into())
        }
    }
}

/// A client error with a clearer word for an unreachable broker.
pub(crate) fn broker_error(addr: &str, what: &str, e: ClientError) -> Error {
    if e.is_connection_error() {
        format!("cannot reach the broker at {addr} ({what}): {e}").into()
    } else {
        format!("{what}: {e}").into()
    }
}

/// The topic named by --topic (created if missing), or a fresh `bench-<random>` one.
async fn prepare_topic(s: &Settings, admin: &Admin, addr: &str) -> Result<Topic, Error> {
    let partitions = s.partitions.unwrap_or(1);
    let name = match &s.topic {
        Some(name) => match admin.describe_topic(name).await {
            Ok(t) => {
                let n = u32::try_from(t.partitions.len()).unwrap_or(u32::MAX);
                if s.partitions.is_some_and(|p| p != n) {
                    eprintln!(
                        "sluice-bench: topic {name} exists with {n} partitions; --partitions ignored"
                    );
                }
                return Ok(Topic {
                    name: name.clone(),
                    partitions: n,
                    existed: true,
                });
            }
            Err(e) if e.code() == Some(ErrorCode::UNKNOWN_TOPIC_OR_PARTITION) => name.clone(),
            Err(e) => return Err(broker_error(addr, &format!("describe topic {name}"), e)),
        },
        None => format!("bench-{:016x}", random_u64()),
    };
    // A cluster that just started may not have elected its metadata leader yet.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        match admin
            .create_topic(&name, partitions, s.replication_factor, &[])
            .await
        {
            Ok(()) => break,
            Err(e)
                if e.code() == Some(ErrorCode::NOT_LEADER)
                    && std::time::Instant::now() < deadline =>
            {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => return Err(broker_error(addr, &format!("create topic {name}"), e)),
        }
    }
    Ok(Topic {
        name,
        partitions,
        existed: false,
    })
}

/// A random 64-bit number from the standard library's per-process hasher keys.
pub(crate) fn random_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64),
    );
    h.finish()
}

/// The partitions consumer `index` of `consumers` reads: every `consumers`-th one.
pub(crate) fn partitions_of(index: usize, consumers: usize, partitions: u32) -> Vec<u32> {
    (0..partitions)
        .filter(|p| *p as usize % consumers == index)
        .collect()
}

/// The earliest or latest offset of every partition of `topic`.
pub(crate) async fn offsets(
    admin: &Admin,
    addr: &str,
    topic: &Topic,
    spec: OffsetSpec,
) -> Result<Vec<u64>, Error> {
    let mut out = Vec::with_capacity(topic.partitions as usize);
    for p in 0..topic.partitions {
        let o = admin
            .list_offsets(&topic.name, p, spec)
            .await
            .map_err(|e| broker_error(addr, &format!("list offsets of {}/{p}", topic.name), e))?;
        out.push(o.unwrap_or(0));
    }
    Ok(out)
}

/// End offsets once the log holds `expected` records past `starts` (acks none answers before the
/// broker appends, so the last records may still be on their way), or after `wait` with a warning.
pub(crate) async fn settled_end_offsets(
    admin: &Admin,
    addr: &str,
    topic: &Topic,
    starts: &[u64],
    expected: u64,
    wait: Duration,
) -> Result<Vec<u64>, Error> {
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        let ends = offsets(admin, addr, topic, OffsetSpec::Latest).await?;
        let have: u64 = ends
            .iter()
            .zip(starts)
            .map(|(e, s)| e.saturating_sub(*s))
            .sum();
        if have >= expected {
            return Ok(ends);
        }
        if tokio::time::Instant::now() >= deadline {
            eprintln!(
                "sluice-bench: warning: {expected} records acknowledged but the log holds {have} \
                 after {wait:?}; reading what is there"
            );
            return Ok(ends);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partitions_are_split_round_robin() {
        assert_eq!(partitions_of(0, 2, 5), vec![0, 2, 4]);
        assert_eq!(partitions_of(1, 2, 5), vec![1, 3]);
        assert_eq!(partitions_of(0, 1, 3), vec![0, 1, 2]);
        assert!(partitions_of(3, 4, 2).is_empty());
    }

    #[test]
    fn median_of_odd_and_even_counts() {
        assert_eq!(median(&[0.3, 0.1, 0.2]), 0.2);
        assert_eq!(median(&[0.4, 0.1, 0.3, 0.2]), 0.25);
        assert_eq!(median(&[]), 0.0);
    }
}
