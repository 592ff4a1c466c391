//! `--spawn-broker` / `--spawn-cluster N`: runs the real `sluice` binary (N of them, ids 1..=N, that
//! know each other through `--peers`) (by default the one next to the `sluice-bench`
//! executable, else `--sluice-bin`) as `sluice broker --listen 127.0.0.1:0` with a temporary data
//! directory under the current directory (the disk a broker would use; /tmp may be memory), reads
//! the bound address from its first stdout line (`sluice broker listening on HOST:PORT`), keeps
//! draining its stdout, and stops it with SIGTERM (the `kill` command, so no unsafe code), waiting for
//! a graceful exit before removing the data directory. Dropping a [`SpawnedBroker`] on an error path
//! stops it the same way. The broker's stderr is passed through; its log level is `warn` unless
//! `SLUICE_LOG` says otherwise.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use super::Error;
use crate::storage::Flush;

const LISTENING: &str = "sluice broker listening on ";
const ADMIN_LISTENING: &str = "sluice admin listening on ";
const START_WAIT: Duration = Duration::from_secs(30);
const STOP_WAIT: Duration = Duration::from_secs(30);

/// The `sluice` binary next to this executable.
pub(crate) fn default_bin() -> Result<PathBuf, Error> {
    let exe = std::env::current_exe()
        .map_err(|e| format!("cannot locate the sluice-bench executable: {e}"))?;
    let dir = exe
        .parent()
        .ok_or("the sluice-bench executable has no parent directory")?;
    Ok(dir.join("sluice"))
}

/// The broker a run talks to: `given` (HOST:PORT) as it is, or else a broker spawned from `bin`
/// (default: [`default_bin`]) on a free loopback port with `extra` flags, which the caller stops.
pub(crate) fn given_or_spawned(
    given: Option<&str>,
    bin: Option<&Path>,
    extra: &[String],
) -> Result<(String, Option<SpawnedBroker>), Error> {
    if let Some(addr) = given {
        return Ok((addr.to_string(), None));
    }
    let bin = match bin {
        Some(p) => p.to_path_buf(),
        None => default_bin()?,
    };
    let b = SpawnedBroker::start_with(&bin, None, "127.0.0.1:0", extra)?;
    Ok((b.addr().to_string(), Some(b)))
}

/// A broker process started for this run.
#[derive(Debug)]
pub(crate) struct SpawnedBroker {
    child: Option<Child>,
    addr: String,
    admin_addr: Option<String>,
    /// Removed after the process has exited (fields drop after `Drop::drop`).
    _data: tempfile::TempDir,
}

impl SpawnedBroker {
    /// Starts `n` brokers (node ids 1..=n) on free loopback ports that form one cluster.
    pub fn start_cluster(
        bin: &Path,
        flush: Option<Flush>,
        n: u32,
        extra: &[String],
    ) -> Result<Vec<SpawnedBroker>, Error> {
        let mut listens = Vec::new();
        for _ in 0..n {
            let l = std::net::TcpListener::bind("127.0.0.1:0")
                .map_err(|e| format!("cannot find a free port: {e}"))?;
            let addr = l
                .local_addr()
                .map_err(|e| format!("cannot find a free port: {e}"))?;
            listens.push(addr.to_string());
        }
        let peers = listens
            .iter()
            .enumerate()
            .map(|(i, a)| format!("{}@{a}", i + 1))
            .collect::<Vec<_>>()
            .join(",");
        // Started together: each waits for the others in the background.
        let handles: Vec<_> = listens
            .into_iter()
            .enumerate()
            .map(|(i, listen)| {
                let bin = bin.to_path_buf();
                let mut extra_all = vec![
                    "--node-id".to_string(),
                    (i + 1).to_string(),
                    "--peers".to_string(),
                    peers.clone(),
                ];
                extra_all.extend(extra.iter().cloned());
                let extra = extra_all;
                std::thread::spawn(move || SpawnedBroker::start_with(&bin, flush, &listen, &extra))
            })
            .collect();
        let mut out = Vec::new();
        for h in handles {
            out.push(h.join().map_err(|_| "a broker start thread panicked")??);
        }
        Ok(out)
    }

    /// Starts one broker listening on `listen` with `extra` flags.
    pub fn start_with(
        bin: &Path,
        flush: Option<Flush>,
        listen: &str,
        extra: &[String],
    ) -> Result<SpawnedBroker, Error> {
        if !bin.is_file() {
            return Err(format!(
                "no sluice binary at {} (build it with `cargo build --release -p sluice-broker`, or \
                 pass --sluice-bin PATH)",
                bin.display()
            )
            .into());
        }
        let data = tempfile::Builder::new()
            .prefix("sluice-bench-broker-")
            .tempdir_in(".")
            .map_err(|e| format!("cannot create a data directory in the current directory: {e}"))?;
        let mut cmd = Command::new(bin);
        cmd.arg("broker")
            .arg("--data-dir")
            .arg(data.path().join("data"))
            .arg("--listen")
            .arg(listen)
            .args(extra);
        // The admin API on a free port: its default (the listen port + 1) may be another
        // broker's port in a cluster of free ports.
        let admin_off = extra
            .windows(2)
            .any(|w| w[0] == "--admin-listen" && w[1] == "off");
        if !extra.iter().any(|a| a == "--admin-listen") {
            cmd.arg("--admin-listen").arg("127.0.0.1:0");
        }
        if let Some(f) = flush {
            cmd.arg("--flush").arg(format!("{f:?}").to_lowercase());
        }
        if std::env::var_os("SLUICE_LOG").is_none() {
            cmd.env("SLUICE_LOG", "warn,openraft=error");
        }
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        let mut child = cmd
            .spawn()
            .map_err(|e| format!("cannot run {}: {e}", bin.display()))?;
        let stdout = child.stdout.take();
        let mut broker = SpawnedBroker {
            child: Some(child),
            addr: String::new(),
            admin_addr: None,
            _data: data,
        };
        let stdout = stdout.ok_or("the broker's stdout is not a pipe")?;
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut lines = BufReader::new(stdout).lines();
            let _ = tx.send(lines.next());
            if !admin_off {
                let _ = tx.send(lines.next());
            }
            // Keep draining so the broker never blocks on a full pipe.
            for _ in lines {}
        });
        let line = match rx.recv_timeout(START_WAIT) {
            Ok(Some(Ok(line))) => line,
            Ok(Some(Err(e))) => return Err(format!("cannot read the broker's output: {e}").into()),
            Ok(None) | Err(mpsc::RecvTimeoutError::Disconnected) => {
                let status = broker.wait_exited();
                return Err(format!(
                    "the broker ({}) exited before listening: {status}",
                    bin.display()
                )
                .into());
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {
                return Err(format!("the broker printed no address within {START_WAIT:?}").into())
            }
        };
        let addr = line
            .strip_prefix(LISTENING)
            .ok_or_else(|| format!("unexpected first line from the broker: {line:?}"))?;
        broker.addr = addr.trim().to_string();
        if !admin_off {
            let line = match rx.recv_timeout(START_WAIT) {
                Ok(Some(Ok(line))) => line,
                _ => return Err("the broker printed no admin address".into()),
            };
            let admin = line
                .strip_prefix(ADMIN_LISTENING)
                .ok_or_else(|| format!("unexpected second line from the broker: {line:?}"))?;
            broker.admin_addr = Some(admin.trim().to_string());
        }
        Ok(broker)
    }

    /// `HOST:PORT` of the broker's HTTP admin API (`None` when started with it off).
    pub fn admin_addr(&self) -> Option<&str> {
        self.admin_addr.as_deref()
    }

    /// `HOST:PORT` the broker listens on.
    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// The broker's data directory (`--data-dir`).
    pub fn data_dir(&self) -> PathBuf {
        self._data.path().join("data")
    }

    /// The broker's process id.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// SIGTERM, and waits for a clean exit.
    pub fn stop(mut self) -> Result<(), Error> {
        match self.child.take() {
            Some(mut child) => terminate(&mut child),
            None => Ok(()),
        }
    }

    /// The exit status of a broker that has exited (or is about to), as text.
    fn wait_exited(&mut self) -> String {
        let Some(mut child) = self.child.take() else {
            return "not running".into();
        };
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            match child.try_wait() {
                Ok(Some(status)) => return status.to_string(),
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(20))
                }
                Ok(None) => {
                    let _ = terminate(&mut child);
                    return "closed its stdout without printing its address".into();
                }
                Err(e) => return e.to_string(),
            }
        }
    }
}

impl Drop for SpawnedBroker {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            if let Err(e) = terminate(&mut child) {
                eprintln!("sluice-bench: warning: {e}");
            }
        }
    }
}

/// SIGTERM `child` and wait up to [`STOP_WAIT`] for it to exit; SIGKILL it after that.
fn terminate(child: &mut Child) -> Result<(), Error> {
    if let Ok(Some(status)) = child.try_wait() {
        return exited(status);
    }
    let pid = child.id().to_string();
    let sent = Command::new("kill")
        .args(["-TERM", &pid])
        .stdout(Stdio::null())
        .status();
    if !sent.is_ok_and(|s| s.success()) {
        let _ = child.kill();
        let _ = child.wait();
        return Err(format!("could not SIGTERM the broker (pid {pid}); killed it").into());
    }
    let deadline = Instant::now() + STOP_WAIT;
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return exited(status),
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(20)),
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!(
                    "the broker (pid {pid}) did not exit within {STOP_WAIT:?} of SIGTERM; killed it"
                )
                .into());
            }
        }
    }
}

fn exited(status: std::process::ExitStatus) -> Result<(), Error> {
    if status.success() {
        Ok(())
    } else {
        Err(format!("the broker exited with {status}").into())
    }
}
