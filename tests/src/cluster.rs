//! Multi-broker clusters for end-to-end tests: several real `sluice` processes on loopback, each
//! behind a TCP proxy that can cut it off from the other brokers.
//!
//! Broker `i` (1-based) owns the loopback address `127.0.0.(10+i)`: it listens there on a private
//! port, its proxy listens there on the port the cluster knows it by (`--peers`), and its outgoing
//! peer connections leave from that address. A proxy refuses (and cuts) connections from blocked
//! source addresses, so blocking a broker's address at every other proxy and every other broker's
//! address at its own proxy partitions it, while test clients (from `127.0.0.1`) still reach it.

use std::collections::{HashMap, HashSet};
use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sluice_protocol::wire::{ErrorCode, MetadataResponse};

use crate::{Announce, Broker, RawConn};

/// Raft requests (API 20) that reached a broker through its proxy, by raft group.
pub type RaftCounts = Arc<Mutex<HashMap<u64, u64>>>;

/// A TCP forwarder with a source-address block list.
#[derive(Debug)]
pub struct Proxy {
    pub addr: SocketAddr,
    /// Where it forwards to: the broker's current address, `None` while the broker is down.
    target: Announce,
    blocked: Arc<Mutex<HashSet<IpAddr>>>,
    /// Live connections: (client address, both sockets), for cutting them when blocked.
    live: Arc<Mutex<Vec<(IpAddr, TcpStream, TcpStream)>>>,
    /// Raft requests forwarded to the broker, by group (heartbeats included).
    raft: RaftCounts,
}

/// Bytes of a request frame (after its length prefix) needed to read a raft request's group:
/// the 8-byte header (u16 api key, u16 version, u32 correlation id), then u64 group, u8 kind.
const RAFT_HEAD: usize = 8 + 9;
const API_RAFT: u16 = 20;

/// Reads request frames out of a byte stream and counts the raft requests by group, without
/// keeping more than each frame's first bytes.
#[derive(Debug, Default)]
struct RaftScan {
    /// The next frame's length prefix and first bytes, so far.
    head: Vec<u8>,
    /// Bytes of the current frame still to pass over.
    skip: usize,
}

impl RaftScan {
    fn feed(&mut self, mut data: &[u8], counts: &RaftCounts) {
        loop {
            if self.head.len() >= 4 {
                let len = u32::from_le_bytes(self.head[..4].try_into().unwrap()) as usize;
                if self.head.len() == 4 + len.min(RAFT_HEAD) {
                    let h = &self.head[4..];
                    if len >= RAFT_HEAD && u16::from_le_bytes([h[0], h[1]]) == API_RAFT {
                        let group = u64::from_le_bytes(h[8..16].try_into().unwrap());
                        *counts.lock().unwrap().entry(group).or_default() += 1;
                    }
                    self.skip = len - len.min(RAFT_HEAD);
                    self.head.clear();
                }
            }
            if data.is_empty() {
                return;
            }
            if self.skip > 0 {
                let n = self.skip.min(data.len());
                self.skip -= n;
                data = &data[n..];
                continue;
            }
            let want = if self.head.len() < 4 {
                4
            } else {
                let len = u32::from_le_bytes(self.head[..4].try_into().unwrap()) as usize;
                4 + len.min(RAFT_HEAD)
            };
            let n = (want - self.head.len()).min(data.len());
            self.head.extend_from_slice(&data[..n]);
            data = &data[n..];
        }
    }
}

/// Forwards `from` to `to`; with `raft`, counts the raft requests passing (client to broker).
fn pump(mut from: TcpStream, mut to: TcpStream, raft: Option<RaftCounts>) {
    let mut buf = vec![0u8; 64 * 1024];
    let mut scan = RaftScan::default();
    loop {
        match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                if let Some(counts) = &raft {
                    scan.feed(&buf[..n], counts);
                }
                if to.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
        }
    }
    let _ = to.shutdown(Shutdown::Both);
    let _ = from.shutdown(Shutdown::Both);
}

impl Proxy {
    /// Forwards `listen` to whatever address its target slot holds (see [`Proxy::target`]), on
    /// background threads; refuses connections while the slot is empty.
    pub fn start(listen: SocketAddr) -> Proxy {
        let listener = TcpListener::bind(listen).unwrap();
        let addr = listener.local_addr().unwrap();
        let target: Announce = Arc::default();
        let t = target.clone();
        let blocked: Arc<Mutex<HashSet<IpAddr>>> = Arc::default();
        let live: Arc<Mutex<Vec<(IpAddr, TcpStream, TcpStream)>>> = Arc::default();
        let raft: RaftCounts = Arc::default();
        let (b, l, r) = (blocked.clone(), live.clone(), raft.clone());
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(client) = conn else { continue };
                let Ok(peer) = client.peer_addr() else {
                    continue;
                };
                if b.lock().unwrap().contains(&peer.ip()) {
                    let _ = client.shutdown(Shutdown::Both);
                    continue;
                }
                let to = *t.lock().unwrap();
                let Some(Ok(server)) = to.map(TcpStream::connect) else {
                    let _ = client.shutdown(Shutdown::Both);
                    continue;
                };
                let _ = client.set_nodelay(true);
                let _ = server.set_nodelay(true);
                l.lock().unwrap().push((
                    peer.ip(),
                    client.try_clone().unwrap(),
                    server.try_clone().unwrap(),
                ));
                let (c2, s2) = (client.try_clone().unwrap(), server.try_clone().unwrap());
                let r = r.clone();
                std::thread::spawn(move || pump(client, server, Some(r)));
                std::thread::spawn(move || pump(s2, c2, None));
            }
        });
        Proxy {
            addr,
            target,
            blocked,
            live,
            raft,
        }
    }

    /// The slot holding the address it forwards to, for the broker behind it to announce itself.
    pub fn target(&self) -> Announce {
        self.target.clone()
    }

    /// Raft requests forwarded to the broker so far, by raft group.
    pub fn raft_requests(&self) -> HashMap<u64, u64> {
        self.raft.lock().unwrap().clone()
    }

    /// Refuses new connections from `ips` and cuts the live ones.
    pub fn block(&self, ips: &[IpAddr]) {
        let mut b = self.blocked.lock().unwrap();
        b.extend(ips.iter().copied());
        let mut live = self.live.lock().unwrap();
        live.retain(|(ip, c, s)| {
            if b.contains(ip) {
                let _ = c.shutdown(Shutdown::Both);
                let _ = s.shutdown(Shutdown::Both);
                false
            } else {
                true
            }
        });
    }

    /// Lets everyone through again.
    pub fn heal(&self) {
        self.blocked.lock().unwrap().clear();
    }
}

/// The loopback address of broker `id`.
pub fn broker_ip(id: u32) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(127, 0, 0, 10 + id as u8))
}

/// One member of a test cluster.
#[derive(Debug)]
pub struct Member {
    pub id: u32,
    pub broker: Broker,
    pub proxy: Proxy,
}

/// A cluster of real broker processes.
#[derive(Debug)]
pub struct Cluster {
    pub members: Vec<Member>,
}

impl Cluster {
    /// Starts `n` brokers (ids 1..=n) that know each other through their proxies; `extra` flags go
    /// to every broker.
    pub fn start(n: u32, extra: &[&str]) -> Cluster {
        Cluster::start_logging(n, extra, None)
    }

    /// [`Cluster::start`] with every broker's `SLUICE_LOG` set to `log_filter` (`None`: the
    /// harness default), for tests that wait for a debug line ([`Broker::log_lines`]).
    pub fn start_logging(n: u32, extra: &[&str], log_filter: Option<&str>) -> Cluster {
        let mut plan = Vec::new();
        for id in 1..=n {
            let ip = broker_ip(id);
            let proxy = Proxy::start(SocketAddr::new(ip, 0));
            plan.push((id, ip, proxy));
        }
        let peers = plan
            .iter()
            .map(|(id, _, p)| format!("{id}@{}", p.addr))
            .collect::<Vec<_>>()
            .join(",");
        // Start them all at once: each waits for the others to form the metadata group.
        let handles: Vec<_> = plan
            .into_iter()
            .map(|(id, ip, proxy)| {
                let mut args: Vec<String> = vec![
                    "--node-id".into(),
                    id.to_string(),
                    "--peers".into(),
                    peers.clone(),
                ];
                args.extend(extra.iter().map(|s| s.to_string()));
                let filter = log_filter.map(str::to_string);
                let announce = proxy.target();
                std::thread::spawn(move || {
                    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
                    let broker = Broker::start_announcing(ip, &refs, filter.as_deref(), announce);
                    Member { id, broker, proxy }
                })
            })
            .collect();
        Cluster {
            members: handles.into_iter().map(|h| h.join().unwrap()).collect(),
        }
    }

    /// Starts broker `id` with `--join` through broker 1: it asks the running cluster to add it.
    pub fn join(&mut self, id: u32, extra: &[&str]) {
        let ip = broker_ip(id);
        let proxy = Proxy::start(SocketAddr::new(ip, 0));
        let mut args: Vec<String> = vec![
            "--node-id".into(),
            id.to_string(),
            "--peers".into(),
            format!("{id}@{}", proxy.addr),
            "--join".into(),
            self.addr(1).to_string(),
        ];
        args.extend(extra.iter().map(|s| s.to_string()));
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        let broker = Broker::start_announcing(ip, &refs, None, proxy.target());
        self.members.push(Member { id, broker, proxy });
    }

    pub fn member(&mut self, id: u32) -> &mut Member {
        self.members.iter_mut().find(|m| m.id == id).unwrap()
    }

    /// The address clients use for broker `id` (its proxy).
    pub fn addr(&self, id: u32) -> SocketAddr {
        self.members.iter().find(|m| m.id == id).unwrap().proxy.addr
    }

    /// Every broker's client address, comma-separated (a bootstrap list).
    pub fn bootstrap(&self) -> String {
        self.members
            .iter()
            .map(|m| m.proxy.addr.to_string())
            .collect::<Vec<_>>()
            .join(",")
    }

    /// Cuts broker `id` off from the other brokers (clients still reach it).
    pub fn isolate(&self, id: u32) {
        let others: Vec<IpAddr> = self
            .members
            .iter()
            .filter(|m| m.id != id)
            .map(|m| broker_ip(m.id))
            .collect();
        for m in &self.members {
            if m.id == id {
                m.proxy.block(&others);
            } else {
                m.proxy.block(&[broker_ip(id)]);
            }
        }
    }

    /// Raft requests of partition groups (every group but the metadata group, 0) that reached any
    /// broker so far: heartbeats and appends, votes, snapshots. A parked group adds none.
    pub fn partition_raft_requests(&self) -> u64 {
        self.members
            .iter()
            .flat_map(|m| m.proxy.raft_requests())
            .filter(|(group, _)| *group != 0)
            .map(|(_, n)| n)
            .sum()
    }

    /// Restores every link.
    pub fn heal(&self) {
        for m in &self.members {
            m.proxy.heal();
        }
    }
}

/// Polls `f` every 50 ms until it returns `Some`, for at most `timeout`.
pub fn eventually<T>(timeout: Duration, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = std::time::Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Metadata from the first broker that answers.
pub fn metadata(cluster: &Cluster, topic: &str) -> Option<MetadataResponse> {
    for m in &cluster.members {
        let Ok(stream) =
            std::net::TcpStream::connect_timeout(&m.proxy.addr, Duration::from_secs(1))
        else {
            continue;
        };
        drop(stream);
        let mut c = RawConn::connect(m.proxy.addr);
        if let Some(r) = c.try_metadata(Some(vec![topic.to_string()])) {
            return Some(r);
        }
    }
    None
}

/// Leader id per partition, once every partition has a leader that its replicas agree on.
pub fn leaders(cluster: &Cluster, topic: &str, partitions: u32) -> Option<Vec<u32>> {
    let m = metadata(cluster, topic)?;
    let t = m.topics.iter().find(|t| t.name == topic)?;
    if t.partitions.len() != partitions as usize {
        return None;
    }
    t.partitions
        .iter()
        .map(|p| u32::try_from(p.leader).ok())
        .collect()
}

pub fn create(cluster: &Cluster, topic: &str, partitions: u32, rf: u16, configs: &[(&str, &str)]) {
    eventually(Duration::from_secs(30), "topic creation", || {
        let mut c = RawConn::connect(cluster.addr(1));
        let r = c.create_replicated(topic, partitions, rf, configs);
        match r.error {
            ErrorCode::NONE | ErrorCode::TOPIC_ALREADY_EXISTS => Some(()),
            // No metadata leader yet.
            ErrorCode::NOT_LEADER => None,
            e => panic!("create {topic}: {e} {}", r.message),
        }
    });
    eventually(Duration::from_secs(30), "partition leaders", || {
        leaders(cluster, topic, partitions)
    });
}
