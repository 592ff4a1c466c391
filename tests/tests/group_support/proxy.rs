//! Raw-frame helpers of `group_consumer.rs`: an admin commit of a group's offsets, and a proxy in
//! front of a group's coordinator that makes its offset lookups fail for a while, or holds its
//! offset commits back.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use sluice_protocol::wire::*;
use sluice_tests::RawConn;

/// Commits `offsets` of `topic` for `group` as an admin (no member id, epoch -1; the group must
/// have no members), once its coordinator is up.
pub fn admin_commit(broker: SocketAddr, group: &str, topic: &str, offsets: &[(u32, u64)]) {
    let mut c = RawConn::connect(broker);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        assert!(Instant::now() < deadline, "no coordinator for {group}");
        let found = c.call(&Request::FindCoordinator(FindCoordinatorRequest {
            group: group.into(),
        }));
        let Ok(Response::FindCoordinator(f)) = found else {
            panic!("wrong answer {found:?}")
        };
        if !f.error.is_ok() {
            std::thread::sleep(Duration::from_millis(50));
            continue;
        }
        let r = c.call(&Request::OffsetCommit(OffsetCommitRequest {
            group: group.into(),
            member_id: String::new(),
            member_epoch: -1,
            topics: vec![OffsetCommitTopic {
                topic: topic.into(),
                partitions: offsets
                    .iter()
                    .map(|(partition, offset)| OffsetCommitPartition {
                        partition: *partition,
                        offset: *offset,
                        metadata: String::new(),
                    })
                    .collect(),
            }],
        }));
        let Ok(Response::OffsetCommit(r)) = r else {
            panic!("wrong answer {r:?}")
        };
        if r.error.is_retriable() {
            std::thread::sleep(Duration::from_millis(50));
            continue;
        }
        assert!(r.error.is_ok(), "{r:?}");
        assert!(
            r.topics
                .iter()
                .flat_map(|t| &t.partitions)
                .all(|p| p.error.is_ok()),
            "{r:?}"
        );
        return;
    }
}

/// A proxy in front of a broker that answers FindCoordinator itself (naming the proxy, so group
/// requests come through it) and its first `fail` OffsetFetch requests with `NOT_COORDINATOR`
/// and `COORDINATOR_NOT_AVAILABLE` in turn, and holds every OffsetCommit request back for `hold`
/// (in order, without holding up the requests behind it); everything else passes both ways, frame
/// by frame.
#[derive(Debug)]
pub struct FaultProxy {
    pub addr: SocketAddr,
    failed: Arc<AtomicU32>,
    finds: Arc<AtomicU32>,
    commits: Arc<Mutex<Vec<(Instant, Instant)>>>,
}

impl FaultProxy {
    /// Failing the first `fail` offset lookups.
    pub fn start(target: SocketAddr, fail: u32) -> FaultProxy {
        FaultProxy::with(target, fail, Duration::ZERO)
    }

    /// Holding every offset commit back for `hold`.
    pub fn holding_commits(target: SocketAddr, hold: Duration) -> FaultProxy {
        FaultProxy::with(target, 0, hold)
    }

    fn with(target: SocketAddr, fail: u32, hold: Duration) -> FaultProxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let failed = Arc::new(AtomicU32::new(0));
        let finds = Arc::new(AtomicU32::new(0));
        let commits: Arc<Mutex<Vec<(Instant, Instant)>>> = Arc::default();
        let (fd, fi, cm) = (failed.clone(), finds.clone(), commits.clone());
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(client) = conn else { continue };
                let Ok(server) = TcpStream::connect(target) else {
                    continue;
                };
                let _ = client.set_nodelay(true);
                let _ = server.set_nodelay(true);
                let to_client = Arc::new(Mutex::new(client.try_clone().unwrap()));
                let (s2, tc) = (server.try_clone().unwrap(), to_client.clone());
                std::thread::spawn(move || {
                    let mut from = s2;
                    while let Some(frame) = read_frame(&mut from) {
                        if tc.lock().unwrap().write_all(&frame).is_err() {
                            return;
                        }
                    }
                });
                let (fd, fi) = (fd.clone(), fi.clone());
                let to = Arc::new(Mutex::new(server));
                // Held commits, each with when it arrived, forwarded in order once held long
                // enough; the time each left is recorded.
                let (held, holding) = mpsc::channel::<(Instant, Vec<u8>)>();
                let (to_broker, cm) = (to.clone(), cm.clone());
                std::thread::spawn(move || {
                    for (at, frame) in holding {
                        std::thread::sleep((at + hold).saturating_duration_since(Instant::now()));
                        let left = Instant::now();
                        if to_broker.lock().unwrap().write_all(&frame).is_err() {
                            return;
                        }
                        cm.lock().unwrap().push((at, left));
                    }
                });
                std::thread::spawn(move || {
                    let mut from = client;
                    while let Some(frame) = read_frame(&mut from) {
                        let api = u16::from_le_bytes([frame[4], frame[5]]);
                        let corr = u32::from_le_bytes([frame[8], frame[9], frame[10], frame[11]]);
                        let answer = if api == ApiKey::FindCoordinator as u16 {
                            fi.fetch_add(1, Ordering::Relaxed);
                            Some(Response::FindCoordinator(FindCoordinatorResponse {
                                error: ErrorCode::NONE,
                                message: String::new(),
                                node_id: 1,
                                host: addr.to_string(),
                                partition: 0,
                            }))
                        } else if api == ApiKey::OffsetFetch as u16
                            && fd.load(Ordering::Relaxed) < fail
                        {
                            let n = fd.fetch_add(1, Ordering::Relaxed);
                            let error = if n % 2 == 0 {
                                ErrorCode::NOT_COORDINATOR
                            } else {
                                ErrorCode::COORDINATOR_NOT_AVAILABLE
                            };
                            Some(Response::OffsetFetch(OffsetFetchResponse {
                                error,
                                message: "injected by the test proxy".into(),
                                offsets: Vec::new(),
                            }))
                        } else {
                            None
                        };
                        let ok = match answer {
                            Some(r) => {
                                let bytes: Vec<u8> = encode_response(corr, &r).concat();
                                to_client.lock().unwrap().write_all(&bytes).is_ok()
                            }
                            None if api == ApiKey::OffsetCommit as u16 && !hold.is_zero() => {
                                held.send((Instant::now(), frame)).is_ok()
                            }
                            None => to.lock().unwrap().write_all(&frame).is_ok(),
                        };
                        if !ok {
                            return;
                        }
                    }
                });
            }
        });
        FaultProxy {
            addr,
            failed,
            finds,
            commits,
        }
    }

    /// The offset commits held so far: when each reached the proxy and when it left for the broker.
    pub fn commits(&self) -> Vec<(Instant, Instant)> {
        self.commits.lock().unwrap().clone()
    }

    /// Offset lookups answered with an error so far.
    pub fn failed(&self) -> u32 {
        self.failed.load(Ordering::Relaxed)
    }

    /// FindCoordinator requests answered so far.
    pub fn finds(&self) -> u32 {
        self.finds.load(Ordering::Relaxed)
    }
}

/// One whole frame, length prefix included; `None` at the end of the stream.
fn read_frame(s: &mut TcpStream) -> Option<Vec<u8>> {
    let mut len = [0u8; 4];
    s.read_exact(&mut len).ok()?;
    let n = u32::from_le_bytes(len) as usize;
    let mut frame = vec![0u8; 4 + n];
    frame[..4].copy_from_slice(&len);
    s.read_exact(&mut frame[4..]).ok()?;
    Some(frame)
}
