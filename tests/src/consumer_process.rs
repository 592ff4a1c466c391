//! Group members as real processes: `sluice consume TOPIC --group GROUP --follow --format json`,
//! whose printed records (partition, offset) are collected with the time they were read, so a test
//! can SIGKILL, SIGSTOP or SIGTERM a member and check what the group as a whole printed.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::{sluice_bin, unsafe_kill};

/// One printed record: partition, offset, when the test read the line.
pub type Seen = (u32, u64, Instant);

/// A `sluice consume --group` process.
#[derive(Debug)]
pub struct GroupProcess {
    child: Child,
    seen: Arc<Mutex<Vec<Seen>>>,
}

impl GroupProcess {
    /// Starts a member of `group` reading `topic` through `bootstrap`, committing every 200 ms,
    /// with a `session_ms` session.
    pub fn start(bootstrap: &str, topic: &str, group: &str, session_ms: u64) -> GroupProcess {
        let mut child = Command::new(sluice_bin())
            .args([
                "consume", topic, "--group", group, "--follow", "--format", "json",
            ])
            .args(["--broker", bootstrap, "--commit-interval-ms", "200"])
            .args(["--session-timeout-ms", &session_ms.to_string()])
            .env("SLUICE_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let seen: Arc<Mutex<Vec<Seen>>> = Arc::default();
        let s = seen.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { return };
                let v: serde_json::Value = serde_json::from_str(&line)
                    .unwrap_or_else(|e| panic!("not a JSON record: {line:?}: {e}"));
                let p = v["partition"].as_u64().unwrap() as u32;
                let o = v["offset"].as_u64().unwrap();
                s.lock().unwrap().push((p, o, Instant::now()));
            }
        });
        GroupProcess { child, seen }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// What it printed so far.
    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    /// (partition, offset) pairs it printed.
    pub fn records(&self) -> BTreeSet<(u32, u64)> {
        self.seen().iter().map(|&(p, o, _)| (p, o)).collect()
    }

    /// Partitions it printed records of since `since`.
    pub fn partitions_since(&self, since: Instant) -> BTreeSet<u32> {
        self.seen()
            .iter()
            .filter(|&&(_, _, t)| t >= since)
            .map(|&(p, _, _)| p)
            .collect()
    }

    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    pub fn stop(&self) {
        unsafe_kill(self.pid(), "STOP");
    }

    pub fn cont(&self) {
        unsafe_kill(self.pid(), "CONT");
    }

    /// SIGTERM (the member commits and leaves) and waits; the exit code.
    pub fn terminate(&mut self) -> Option<i32> {
        unsafe_kill(self.pid(), "TERM");
        self.child.wait().ok().and_then(|s| s.code())
    }

    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

impl Drop for GroupProcess {
    fn drop(&mut self) {
        if self.is_running() {
            self.cont();
            self.kill();
        }
    }
}

/// Waits until `members` together printed every record of `want` (failing after `timeout`, with
/// what is missing).
pub fn wait_all_seen(members: &[&GroupProcess], want: &BTreeSet<(u32, u64)>, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    loop {
        let mut got = BTreeSet::new();
        for m in members {
            got.extend(m.records());
        }
        let missing: Vec<_> = want.difference(&got).take(10).collect();
        if missing.is_empty() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "after {timeout:?} still missing (first 10): {missing:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// How many times each record was printed, over all `members`.
pub fn print_counts(members: &[&GroupProcess]) -> BTreeMap<(u32, u64), usize> {
    let mut counts = BTreeMap::new();
    for m in members {
        for (p, o, _) in m.seen() {
            *counts.entry((p, o)).or_default() += 1;
        }
    }
    counts
}
