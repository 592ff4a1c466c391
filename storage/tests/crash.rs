//! Crash test: a child process appends with flush `always` and reports every acknowledged batch; the
//! parent SIGKILLs it at random moments, reopens the log and checks that every acknowledged record is
//! there with identical bytes, offsets are dense, and no torn batch is readable. Each round kills the
//! child only after its first acknowledgement, and fails if the child died of its own (its stderr is
//! shown; seen failing with a child that panics after its fourth batch, which the old test passed). Rounds: 12 by default, `SLUICE_CRASH_ROUNDS` for more.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;
use rand::Rng;
use sluice_storage::{FlushPolicy, PartitionLog};

const CHILD_ENV: &str = "SLUICE_CRASH_CHILD_DIR";
const RECORDS: usize = 7;

fn config() -> sluice_storage::LogConfig {
    small_config(FlushPolicy::Always)
}

/// The child: append forever, print `ACK <round> <n> <base>` after each acknowledged batch.
#[test]
fn crash_child() {
    let Ok(dir) = std::env::var(CHILD_ENV) else {
        return; // only meaningful when started by the parent below
    };
    let round: u64 = std::env::var("SLUICE_CRASH_ROUND")
        .unwrap()
        .parse()
        .unwrap();
    let (log, _) = PartitionLog::open(&dir, config()).unwrap();
    for n in 0u64.. {
        let b = batch(&format!("r{round}n{n}"), RECORDS, 0, n as i64);
        let info = log.append(&b).unwrap();
        println!("ACK {round} {n} {}", info.base_offset);
    }
}

#[test]
fn acknowledged_records_survive_sigkill() {
    let rounds: u64 = std::env::var("SLUICE_CRASH_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(12);
    let dir = tempfile::tempdir().unwrap();
    let exe = std::env::current_exe().unwrap();
    let mut rng = rand::thread_rng();
    // base offset -> the tag its records carry
    let mut acked: BTreeMap<u64, String> = BTreeMap::new();

    for round in 0..rounds {
        let mut child = Command::new(&exe)
            .args(["crash_child", "--exact", "--nocapture", "--test-threads=1"])
            .env(CHILD_ENV, dir.path())
            .env("SLUICE_CRASH_ROUND", round.to_string())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = child.stderr.take().unwrap();
        let errors = std::thread::spawn(move || {
            let mut s = String::new();
            let _ = std::io::Read::read_to_string(&mut BufReader::new(stderr), &mut s);
            s
        });
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let reader = std::thread::spawn(move || {
            for l in BufReader::new(stdout).lines().map_while(Result::ok) {
                let parsed = (|| {
                    let mut p = l.strip_prefix("ACK ")?.split(' ');
                    let (r, n, base) = (p.next()?, p.next()?, p.next()?);
                    Some((base.parse::<u64>().ok()?, format!("r{r}n{n}")))
                })();
                if let Some(ack) = parsed {
                    if tx.send(ack).is_err() {
                        return;
                    }
                }
            }
        });
        // Kill only once the child has acknowledged something, at a random point after: a round
        // without an acknowledgement would check nothing.
        let first = rx.recv_timeout(Duration::from_secs(60));
        std::thread::sleep(Duration::from_millis(rng.gen_range(5..120)));
        child.kill().unwrap(); // SIGKILL
        let status = child.wait().unwrap();
        reader.join().unwrap();
        let stderr = errors.join().unwrap();
        assert!(
            first.is_ok(),
            "round {round}: the child acknowledged nothing ({status}); its stderr:\n{stderr}"
        );
        // Killed by our SIGKILL, not dead of its own (a panic or an append error ends it early).
        assert_eq!(
            std::os::unix::process::ExitStatusExt::signal(&status),
            Some(9),
            "round {round}: the child ended on its own ({status}); its stderr:\n{stderr}"
        );
        let acks: Vec<(u64, String)> = first.into_iter().chain(rx.try_iter()).collect();
        for (base, tag) in acks {
            assert!(
                acked.insert(base, tag).is_none(),
                "offset {base} acknowledged twice"
            );
        }

        let (log, _report) = PartitionLog::open(dir.path(), config()).unwrap();
        let all = read_all(&log); // panics on any batch that fails its CRC
        for (i, rec) in all.iter().enumerate() {
            assert_eq!(rec.0, i as u64, "offsets must be dense");
        }
        for (&base, tag) in &acked {
            for j in 0..RECORDS as u64 {
                let rec = all.get((base + j) as usize).unwrap_or_else(|| {
                    panic!("acknowledged offset {} lost in round {round}", base + j)
                });
                assert_eq!(rec.2.as_deref(), Some(format!("{tag}-{j}").as_str()));
            }
        }
        drop(log);
    }
}
