//! A TCP proxy that loses frames. [`Loss::Responses`]: it forwards requests whole and cuts the
//! connection instead of forwarding every `nth` response frame, so the client has sent a request the
//! broker handled but never learns the outcome (the case that makes a retrying producer write twice
//! without idempotence). [`Loss::Requests`]: it cuts the connection instead of forwarding every `nth`
//! request frame, so the broker never sees it (a hole in a producer's sequence if it is not
//! retried). Which frames are lost is fixed by `nth` and the order frames pass, not by timing.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// Which frames a [`LossyProxy`] loses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Loss {
    Responses,
    Requests,
}

/// A running lossy proxy.
#[derive(Debug)]
pub struct LossyProxy {
    pub addr: SocketAddr,
    /// Responses lost so far.
    pub lost: Arc<AtomicU64>,
}

impl LossyProxy {
    /// Listens on a free loopback port and forwards to `target`, losing every `nth` response frame
    /// (counted over all connections).
    pub fn start(target: SocketAddr, nth: u64) -> LossyProxy {
        LossyProxy::losing(target, nth, Loss::Responses)
    }

    /// Like [`LossyProxy::start`], losing every `nth` frame of the kind `loss` names.
    pub fn losing(target: SocketAddr, nth: u64, loss: Loss) -> LossyProxy {
        assert!(nth >= 2, "losing every response would let nothing through");
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let lost = Arc::new(AtomicU64::new(0));
        let seen = Arc::new(AtomicU64::new(0));
        let l = lost.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(client) = conn else { continue };
                let Ok(server) = TcpStream::connect(target) else {
                    let _ = client.shutdown(Shutdown::Both);
                    continue;
                };
                let _ = client.set_nodelay(true);
                let _ = server.set_nodelay(true);
                let (c2, s2) = (client.try_clone().unwrap(), server.try_clone().unwrap());
                let (seen, lost) = (seen.clone(), l.clone());
                match loss {
                    Loss::Responses => {
                        std::thread::spawn(move || pump(c2, s2));
                        std::thread::spawn(move || {
                            forward_frames(server, client, nth, &seen, &lost)
                        });
                    }
                    Loss::Requests => {
                        std::thread::spawn(move || pump(server, client));
                        std::thread::spawn(move || forward_frames(c2, s2, nth, &seen, &lost));
                    }
                }
            }
        });
        LossyProxy { addr, lost }
    }
}

/// Copies bytes as they come.
fn pump(mut from: TcpStream, mut to: TcpStream) {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                if to.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
        }
    }
    let _ = to.shutdown(Shutdown::Both);
    let _ = from.shutdown(Shutdown::Both);
}

/// Forwards whole frames (`u32` length, little-endian, then the frame), cutting both connections
/// instead of the `nth`, `2nth`, ... frame.
fn forward_frames(
    mut from: TcpStream,
    mut to: TcpStream,
    nth: u64,
    seen: &AtomicU64,
    lost: &AtomicU64,
) {
    loop {
        let mut len = [0u8; 4];
        if from.read_exact(&mut len).is_err() {
            break;
        }
        let mut frame = vec![0u8; u32::from_le_bytes(len) as usize];
        if from.read_exact(&mut frame).is_err() {
            break;
        }
        if (seen.fetch_add(1, Ordering::SeqCst) + 1).is_multiple_of(nth) {
            lost.fetch_add(1, Ordering::SeqCst);
            break;
        }
        if to.write_all(&len).is_err() || to.write_all(&frame).is_err() {
            break;
        }
    }
    let _ = to.shutdown(Shutdown::Both);
    let _ = from.shutdown(Shutdown::Both);
}
