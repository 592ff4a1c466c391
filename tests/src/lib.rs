//! Harness for the end-to-end tests: start the real `sluice` binary on a random loopback port with a
//! temporary data directory, stop it with SIGTERM or SIGKILL, restart it on the same data; and a
//! minimal blocking protocol connection for tests that must send exact (or deliberately wrong) bytes.
//! Beside it: clusters (`cluster`), the CLI (`cli`), group members (`groups`, `consumer_process`),
//! a lossy proxy (`lossy`), the window operators' model (`operators`) and a strict reader of
//! Prometheus text (`prometheus`).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use sluice_protocol::wire::{self, *};
use sluice_protocol::{BatchBuilder, Compression, RecordBatch};

pub mod cli;
pub mod cluster;
pub mod consumer_process;
pub mod groups;
pub mod lossy;
pub mod operators;
pub mod prometheus;

/// Path of the `sluice` binary, built once per test process (`SLUICE_BIN` overrides).
pub fn sluice_bin() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        built_bin(
            "SLUICE_BIN",
            "sluice-broker",
            "sluice",
            &["--features", "sluice-broker/power-loss-hook"],
        )
    })
    .clone()
}

/// Path of the `sluice-bench` binary, built once per test process (`SLUICE_BENCH_BIN` overrides).
pub fn bench_bin() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| built_bin("SLUICE_BENCH_BIN", "sluice-bench", "sluice-bench", &[]))
        .clone()
}

/// `$env` if set, else builds `bin` of `package` with the test's own profile (and `flags`, e.g.
/// features) and returns its path. The broker is built with its test-only power-loss hook, which
/// does nothing unless a test starts it with `--power-loss-hook`.
fn built_bin(env: &str, package: &str, bin: &str, flags: &[&str]) -> PathBuf {
    if let Ok(p) = std::env::var(env) {
        return PathBuf::from(p);
    }
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let manifest = concat!(env!("CARGO_MANIFEST_DIR"), "/../Cargo.toml");
    let status = Command::new(cargo)
        .args([
            "build",
            "--quiet",
            "-p",
            package,
            "--bin",
            bin,
            "--manifest-path",
            manifest,
        ])
        .args(flags)
        .status()
        .unwrap_or_else(|e| panic!("run cargo build for {bin}: {e}"));
    assert!(status.success(), "building {bin} failed");
    let exe = std::env::current_exe().unwrap();
    // target/<profile>/deps/<test> -> target/<profile>/<bin>
    exe.parent().unwrap().parent().unwrap().join(bin)
}

/// The exit status of a broker after a power cut (`broker/src/power_hook.rs`).
const POWER_CUT_EXIT: i32 = 86;

/// The brokers' log filter unless `SLUICE_LOG` or the test says otherwise.
pub const DEFAULT_LOG: &str = "warn,openraft=error,sluice_broker::replica::services=info";

/// A running broker process.
#[derive(Debug)]
pub struct Broker {
    child: Option<Child>,
    pub addr: SocketAddr,
    /// The HTTP admin API's address (`None` when the test turned it off).
    pub admin_addr: Option<SocketAddr>,
    pub data_dir: PathBuf,
    extra: Vec<String>,
    /// Every line the broker wrote to stderr (its log), across restarts; also echoed to the test's
    /// stderr.
    log: Arc<Mutex<Vec<String>>>,
    /// The broker's `SLUICE_LOG` filter when a test chose one (else the harness default).
    log_filter: Option<String>,
    /// Where a cluster member's proxy reads the broker's current port: set when the broker
    /// printed its address, cleared when it stops. A member listens on port 0 and announces the
    /// port it got, so no other test can take a port picked in advance (see `cluster.rs`).
    announce: Option<Announce>,
    _tmp: Option<tempfile::TempDir>,
}

/// The address a broker listens on now, shared with the proxy in front of it; `None` while it is
/// down (the proxy then refuses connections rather than reach whatever holds the old port).
pub type Announce = Arc<Mutex<Option<SocketAddr>>>;

impl Broker {
    /// Starts a broker listening on `listen` (a fixed address, for cluster members whose address
    /// the others must know) with a fresh temporary data directory and extra flags.
    pub fn start_at(listen: &str, extra: &[&str]) -> Broker {
        Broker::start_at_logging(listen, extra, None)
    }

    /// [`Broker::start_at`] with `SLUICE_LOG` set to `log_filter` (tracing `EnvFilter` syntax), for
    /// a test that waits for a debug line with [`Broker::log_lines`]; `None`: the harness default.
    pub fn start_at_logging(listen: &str, extra: &[&str], log_filter: Option<&str>) -> Broker {
        let tmp = tempfile::tempdir().unwrap();
        let data_dir = tmp.path().join("data");
        let mut b = Broker {
            child: None,
            addr: listen.parse().unwrap(),
            admin_addr: None,
            data_dir,
            extra: extra.iter().map(|s| s.to_string()).collect(),
            log: Arc::default(),
            log_filter: log_filter.map(str::to_string),
            announce: None,
            _tmp: Some(tmp),
        };
        b.spawn(listen);
        b
    }

    /// Starts a cluster member on `ip` port 0 and announces each address it gets (at this start
    /// and every restart) through `announce`.
    pub fn start_announcing(
        ip: std::net::IpAddr,
        extra: &[&str],
        log_filter: Option<&str>,
        announce: Announce,
    ) -> Broker {
        let tmp = tempfile::tempdir().unwrap();
        let data_dir = tmp.path().join("data");
        let mut b = Broker {
            child: None,
            addr: SocketAddr::new(ip, 0),
            admin_addr: None,
            data_dir,
            extra: extra.iter().map(|s| s.to_string()).collect(),
            log: Arc::default(),
            log_filter: log_filter.map(str::to_string),
            announce: Some(announce),
            _tmp: Some(tmp),
        };
        b.spawn(&SocketAddr::new(ip, 0).to_string());
        b
    }

    /// The broker stopped: its proxy must no longer forward to its old port.
    fn stopped(&mut self) {
        if let Some(a) = &self.announce {
            *a.lock().unwrap() = None;
        }
    }

    /// Starts a broker with a fresh temporary data directory and extra flags.
    pub fn start(extra: &[&str]) -> Broker {
        Broker::start_at_logging("127.0.0.1:0", extra, None)
    }

    /// [`Broker::start`] with its own `SLUICE_LOG` filter (see [`Broker::start_at_logging`]).
    pub fn start_logging(extra: &[&str], log_filter: &str) -> Broker {
        Broker::start_at_logging("127.0.0.1:0", extra, Some(log_filter))
    }

    fn spawn(&mut self, listen: &str) {
        // The admin API on a free port unless the test chose: its default (the listen port + 1)
        // may be taken when the listen port is fixed.
        let admin_chosen = self.extra.iter().any(|a| a == "--admin-listen");
        let admin_off = self
            .extra
            .windows(2)
            .any(|w| w[0] == "--admin-listen" && w[1] == "off");
        let listen_ip = listen.rsplit_once(':').map_or("127.0.0.1", |(h, _)| h);
        let mut child = Command::new(sluice_bin())
            .arg("broker")
            .arg("--data-dir")
            .arg(&self.data_dir)
            .arg("--listen")
            .arg(listen)
            .args(if admin_chosen {
                Vec::new()
            } else {
                vec!["--admin-listen".to_string(), format!("{listen_ip}:0")]
            })
            .args(&self.extra)
            // Leader services' start and stop are logged at info: tests read them (`log_lines`).
            .env(
                "SLUICE_LOG",
                self.log_filter.clone().unwrap_or_else(|| {
                    std::env::var("SLUICE_LOG").unwrap_or_else(|_| DEFAULT_LOG.into())
                }),
            )
            .env("NO_COLOR", "1")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let mut lines = BufReader::new(stdout).lines();
        let line = lines.next().expect("broker printed nothing").unwrap();
        let addr = line
            .strip_prefix("sluice broker listening on ")
            .unwrap_or_else(|| panic!("unexpected first line {line:?}"));
        self.addr = addr.parse().unwrap();
        self.admin_addr = (!admin_off).then(|| {
            let line = lines.next().expect("broker printed no admin line").unwrap();
            line.strip_prefix("sluice admin listening on ")
                .unwrap_or_else(|| panic!("unexpected second line {line:?}"))
                .parse()
                .unwrap()
        });
        if let Some(a) = &self.announce {
            *a.lock().unwrap() = Some(self.addr);
        }
        // Keep draining stdout so the broker never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines {});
        // Its log: echoed (so a failing test still shows it) and kept for `log_lines`.
        let stderr = child.stderr.take().unwrap();
        let log = self.log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { return };
                eprintln!("{line}");
                log.lock().unwrap().push(strip_ansi(&line));
            }
        });
        self.child = Some(child);
    }

    /// `http://HOST:PORT` of the broker's admin API.
    pub fn admin_url(&self) -> String {
        format!("http://{}", self.admin_addr.expect("the admin API is off"))
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().unwrap().id()
    }

    /// SIGTERM and wait; returns the exit code.
    pub fn terminate(&mut self) -> Option<i32> {
        let mut child = self.child.take()?;
        self.stopped();
        unsafe_kill(child.id(), "TERM");
        child.wait().ok().and_then(|s| s.code())
    }

    /// SIGKILL and wait.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            self.stopped();
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Power loss (the broker must run with `--power-loss-hook`): SIGUSR1 makes it write what its
    /// data directory held durably next to it and exit at once; that image then replaces the data
    /// directory, as a machine that lost power would find its disk. `restart` brings it back.
    pub fn power_cut(&mut self) {
        let mut child = self.child.take().expect("the broker is not running");
        self.stopped();
        unsafe_kill(child.id(), "USR1");
        let status = child.wait().unwrap();
        assert_eq!(
            status.code(),
            Some(POWER_CUT_EXIT),
            "the broker did not cut power (started without --power-loss-hook, or a build without \
             the feature?): {status}"
        );
        let mut image = self.data_dir.as_os_str().to_os_string();
        image.push(".power-cut");
        std::fs::remove_dir_all(&self.data_dir).unwrap();
        std::fs::rename(&image, &self.data_dir).unwrap();
    }

    /// Sends the power-cut signal without waiting: to cut several brokers at once, signal each,
    /// then [`Broker::power_cut`] each.
    pub fn signal_power_cut(&self) {
        unsafe_kill(self.pid(), "USR1");
    }

    /// Starts the broker again on the same data directory and the same port.
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "stop the broker first");
        if self.announce.is_some() {
            // A cluster member takes whatever port is free; its proxy follows.
            self.spawn(&SocketAddr::new(self.addr.ip(), 0).to_string());
            return;
        }
        let listen = self.addr.to_string();
        // The port was just released; retry briefly in case the kernel still holds it.
        for _ in 0..50 {
            if std::net::TcpListener::bind(self.addr).is_ok() {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        self.spawn(&listen);
    }

    /// Resident memory of the broker process in KiB (from /proc).
    pub fn rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or(0)
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        match self.child.as_mut() {
            Some(c) => c.try_wait().ok().flatten().is_none(),
            None => false,
        }
    }

    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// The lines of the broker's log so far (every start of it) that contain `needle`.
    pub fn log_lines(&self, needle: &str) -> Vec<String> {
        self.log
            .lock()
            .unwrap()
            .iter()
            .filter(|l| l.contains(needle))
            .cloned()
            .collect()
    }

    /// Threads of the broker process now (entries of `/proc/<pid>/task`).
    pub fn thread_count(&self) -> usize {
        std::fs::read_dir(format!("/proc/{}/task", self.pid()))
            .unwrap()
            .count()
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        self.kill();
    }
}

/// `line` without ANSI colour escapes (`ESC [ ... m`).
fn strip_ansi(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c == 'm' {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

pub(crate) fn unsafe_kill(pid: u32, signal: &str) {
    let _ = Command::new("kill")
        .arg(format!("-{signal}"))
        .arg(pid.to_string())
        .status();
}

/// A blocking connection speaking the wire protocol one request at a time.
#[derive(Debug)]
pub struct RawConn {
    pub stream: TcpStream,
    next_corr: u32,
}

impl RawConn {
    pub fn connect(addr: SocketAddr) -> RawConn {
        let stream = TcpStream::connect(addr).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(30)))
            .unwrap();
        stream.set_nodelay(true).unwrap();
        RawConn {
            stream,
            next_corr: 1,
        }
    }

    /// Sends raw bytes as they are.
    pub fn send_raw(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.stream.write_all(bytes)
    }

    /// Reads one response frame (length prefix removed); `None` if the broker closed the connection.
    pub fn read_frame(&mut self) -> Option<Bytes> {
        let mut len = [0u8; 4];
        self.stream.read_exact(&mut len).ok()?;
        let mut buf = vec![0u8; u32::from_le_bytes(len) as usize];
        self.stream.read_exact(&mut buf).ok()?;
        Some(Bytes::from(buf))
    }

    /// Metadata, or `None` if the connection fails (a proxy in front of a stopped broker accepts and
    /// then closes).
    pub fn try_metadata(&mut self, topics: Option<Vec<String>>) -> Option<MetadataResponse> {
        let req = Request::Metadata(MetadataRequest { topics });
        let corr = self.next_corr;
        self.next_corr += 1;
        for chunk in wire::encode_request(&req, corr) {
            self.stream.write_all(&chunk).ok()?;
        }
        let frame = self.read_frame()?;
        match wire::decode_response(ApiKey::Metadata, frame).ok()? {
            (_, Ok(Response::Metadata(m))) => Some(m),
            _ => None,
        }
    }

    /// Sends a request and waits for its response.
    pub fn call(&mut self, req: &Request) -> Result<Response, TopLevelError> {
        let corr = self.next_corr;
        self.next_corr += 1;
        for chunk in wire::encode_request(req, corr) {
            self.stream.write_all(&chunk).unwrap();
        }
        let frame = self.read_frame().expect("broker closed the connection");
        let api: ApiKey = req.api_key();
        let (c, resp) = wire::decode_response(api, frame).unwrap();
        assert_eq!(c, corr);
        resp
    }

    /// A connection, or `None` if nothing accepts at `addr`.
    pub fn try_connect(addr: SocketAddr) -> Option<RawConn> {
        TcpStream::connect(addr).ok()?;
        Some(RawConn::connect(addr))
    }

    /// [`RawConn::call`] for a broker that may be gone: `None` if the connection fails or the
    /// answer is a top-level error.
    pub fn try_call(&mut self, req: &Request) -> Option<Response> {
        let corr = self.next_corr;
        self.next_corr += 1;
        for chunk in wire::encode_request(req, corr) {
            self.stream.write_all(&chunk).ok()?;
        }
        let frame = self.read_frame()?;
        let (c, resp) = wire::decode_response(req.api_key(), frame).ok()?;
        assert_eq!(c, corr);
        resp.ok()
    }

    /// True if the broker closes this connection within 10 s: a read returns EOF or the connection
    /// is reset (or aborted). Bytes the broker sends before closing are read and dropped. A broker
    /// that keeps the connection open (a read that times out) is *not* closed: a hung broker fails
    /// the caller's assertion instead of passing it.
    pub fn is_closed(&mut self) -> bool {
        self.closed_within(Duration::from_secs(10))
    }

    /// [`RawConn::is_closed`] with the wait bounded by `wait`.
    pub fn closed_within(&mut self, wait: Duration) -> bool {
        use std::io::ErrorKind;
        let deadline = std::time::Instant::now() + wait;
        let mut buf = [0u8; 4096];
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            if left.is_zero() {
                return false;
            }
            self.stream.set_read_timeout(Some(left)).unwrap();
            match self.stream.read(&mut buf) {
                Ok(0) => return true,
                Ok(_) => continue,
                Err(e) => match e.kind() {
                    ErrorKind::ConnectionReset | ErrorKind::ConnectionAborted => return true,
                    ErrorKind::Interrupted => continue,
                    // A read timeout (or any other error) is not a close.
                    _ => return false,
                },
            }
        }
    }
}

/// A batch of `n` records valued `"{tag}-{i}"`, all with timestamp `ts`.
pub fn batch_at(tag: &str, n: usize, ts: i64) -> Bytes {
    let mut b = BatchBuilder::new(Compression::None);
    for i in 0..n {
        b.append(ts, None, Some(format!("{tag}-{i}").as_bytes()), &[]);
    }
    b.seal().unwrap()
}

/// A fetch of one partition from `offset`, up to 1 MiB.
pub fn fetch_request(topic: &str, partition: u32, offset: u64, max_wait_ms: u32) -> Request {
    Request::Fetch(FetchRequest {
        max_wait_ms,
        min_bytes: 1,
        max_bytes: 1 << 20,
        topics: vec![FetchTopic {
            name: topic.into(),
            partitions: vec![FetchPartition {
                partition,
                offset,
                max_bytes: 1 << 20,
            }],
        }],
    })
}

/// [`batch_at`] with timestamp 1000.
pub fn batch(tag: &str, n: usize) -> Bytes {
    batch_at(tag, n, 1_000)
}

impl RawConn {
    pub fn create_topic(
        &mut self,
        name: &str,
        partitions: u32,
        configs: &[(&str, &str)],
    ) -> TopicResult {
        self.create_replicated(name, partitions, 1, configs)
    }

    pub fn create_replicated(
        &mut self,
        name: &str,
        partitions: u32,
        replication_factor: u16,
        configs: &[(&str, &str)],
    ) -> TopicResult {
        let resp = self
            .call(&Request::CreateTopics(CreateTopicsRequest {
                topics: vec![NewTopic {
                    name: name.into(),
                    partitions,
                    replication_factor,
                    configs: configs
                        .iter()
                        .map(|(k, v)| (k.to_string(), v.to_string()))
                        .collect(),
                }],
            }))
            .unwrap();
        let Response::CreateTopics(mut r) = resp else {
            panic!("wrong response")
        };
        r.results.remove(0)
    }

    pub fn create(&mut self, name: &str, partitions: u32) {
        let r = self.create_topic(name, partitions, &[]);
        assert_eq!(r.error, ErrorCode::NONE, "{}", r.message);
    }

    pub fn produce_acks(
        &mut self,
        topic: &str,
        partition: u32,
        records: Bytes,
        acks: Acks,
    ) -> ProducePartitionResult {
        let resp = self
            .call(&Request::Produce(ProduceRequest {
                acks,
                timeout_ms: 10_000,
                topics: vec![ProduceTopic {
                    name: topic.into(),
                    partitions: vec![ProducePartition { partition, records }],
                }],
            }))
            .unwrap();
        let Response::Produce(mut r) = resp else {
            panic!("wrong response")
        };
        r.topics.remove(0).partitions.remove(0)
    }

    pub fn produce(
        &mut self,
        topic: &str,
        partition: u32,
        records: Bytes,
    ) -> ProducePartitionResult {
        self.produce_acks(topic, partition, records, Acks::All)
    }

    pub fn fetch(
        &mut self,
        topic: &str,
        partition: u32,
        offset: u64,
        max_wait_ms: u32,
    ) -> FetchPartitionResult {
        let resp = self
            .call(&fetch_request(topic, partition, offset, max_wait_ms))
            .unwrap();
        let Response::Fetch(mut f) = resp else {
            panic!("wrong response")
        };
        f.topics.remove(0).partitions.remove(0)
    }

    /// Every (offset, value) in the partition from `from`, read with fetches that do not wait.
    pub fn consume_all(&mut self, topic: &str, partition: u32) -> Vec<(u64, String)> {
        let mut out = Vec::new();
        let mut offset = 0u64;
        loop {
            let p = self.fetch(topic, partition, offset, 0);
            assert_eq!(p.error, ErrorCode::NONE);
            if p.records.is_empty() {
                return out;
            }
            for b in RecordBatch::iter_all(p.records.clone()) {
                let b = b.unwrap();
                if b.header().is_control() {
                    // Raft's own entries (membership, a new leader's blank): consumers skip them.
                    offset = offset.max(b.header().next_offset());
                    continue;
                }
                for r in b.records().unwrap() {
                    let r = r.unwrap();
                    if r.offset >= offset {
                        out.push((
                            r.offset,
                            String::from_utf8(r.value.unwrap().to_vec()).unwrap(),
                        ));
                        offset = r.offset + 1;
                    }
                }
            }
        }
    }

    pub fn list_offset(
        &mut self,
        topic: &str,
        partition: u32,
        spec: i64,
    ) -> ListOffsetsPartitionResult {
        let resp = self
            .call(&Request::ListOffsets(ListOffsetsRequest {
                topics: vec![ListOffsetsTopic {
                    name: topic.into(),
                    partitions: vec![ListOffsetsPartition { partition, spec }],
                }],
            }))
            .unwrap();
        let Response::ListOffsets(mut l) = resp else {
            panic!("wrong response")
        };
        l.topics.remove(0).partitions.remove(0)
    }

    pub fn metadata(&mut self, topics: Option<Vec<String>>) -> MetadataResponse {
        let Response::Metadata(m) = self
            .call(&Request::Metadata(MetadataRequest { topics }))
            .unwrap()
        else {
            panic!("wrong response")
        };
        m
    }
}
