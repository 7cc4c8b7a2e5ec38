//! Shared helpers for the integration tests of Herald (`tests/`) and of the loadtest
//! (`loadtest/tests/`), a dev-dependency of both, used as `testkit` (the dependency is renamed
//! in each `Cargo.toml`).
//!
//! * [`server`]: a real `herald` process ([`Server`]) and its `stats:` lines.
//! * [`ws`]: tungstenite clients with read timeouts, so a test fails instead of hanging.
//! * [`raw`]: a raw-socket WebSocket client ([`RawWs`]) and the frame codec ([`frame`],
//!   [`parse_frames`]) for the protocol errors a real client library refuses to produce.
//! * [`http`]: raw HTTP requests and responses, upgrade requests, `POST` publishing.
//! * [`tls`]: a self-signed certificate ([`TestCert`]) and `wss://` clients trusting it.
//! * [`browser`]: headless Chromium and the JS harness of the real-browser tests.
//! * [`v1`]: a `herald.v1` subprotocol client.
//! * [`jwt`]: HS256 tokens for the access-control tests.
//! * [`metrics`]: `GET /metrics` scraped and parsed as Prometheus would.
//! * [`presence`]: a presence subscriber's messages and events read as one list, in order.
//! * [`sse`]: a raw-socket Server-Sent Events client ([`SseClient`]), like `curl -N`.
//! * [`broadcast`]: a small threaded broadcast server (plain or TLS) for the loadtest's tests.
//! * [`temp`]: temporary directories removed on drop.
//!
//! The items of `server`, `ws`, `raw`, `http` and `tls` are re-exported at the root, so a test
//! says `use testkit::*;`. Being a library, its public items need no `allow(dead_code)`
//! however little of it a test uses.

use std::net::TcpListener;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

pub mod broadcast;
pub mod browser;
pub mod http;
pub mod jwt;
pub mod metrics;
pub mod presence;
pub mod raw;
pub mod redis_cluster;
pub mod redis_server;
pub mod server;
pub mod sse;
pub mod temp;
pub mod tls;
pub mod v1;
pub mod ws;

pub use http::*;
pub use raw::*;
pub use server::*;
pub use sse::*;
pub use tls::*;
pub use ws::*;

/// Read/write timeout on every client socket: long enough for a loaded 2-core machine,
/// short enough that a missing message fails the test instead of hanging it.
pub const IO_TIMEOUT: Duration = Duration::from_secs(10);

/// A free port below the kernel's ephemeral range (32768 and up by default): a node that is
/// killed and restarted must find its port free again, and a client retrying a connection
/// to a dead ephemeral-range port can end up connected to itself on that very port.
pub fn free_port() -> u16 {
    use std::sync::atomic::AtomicU16;
    static NEXT: AtomicU16 = AtomicU16::new(0);
    let start = 20_000 + (std::process::id() % 500) as u16 * 20;
    for _ in 0..12_000 {
        let port = 20_000 + (start - 20_000 + NEXT.fetch_add(1, Ordering::Relaxed)) % 12_000;
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port in 20000..32000")
}

/// Threads that keep `n` cores busy until dropped, so that a server under test is preempted
/// at any point of its loop: a race between its threads then shows within a few hundred
/// tries instead of once in many runs.
pub struct BusyCores {
    stop: Arc<AtomicBool>,
    threads: Vec<thread::JoinHandle<()>>,
}

impl BusyCores {
    /// Starts `n` spinning threads.
    pub fn start(n: usize) -> BusyCores {
        let stop = Arc::new(AtomicBool::new(false));
        let threads = (0..n)
            .map(|_| {
                let stop = stop.clone();
                thread::spawn(move || {
                    while !stop.load(Ordering::Relaxed) {
                        std::hint::spin_loop();
                    }
                })
            })
            .collect();
        BusyCores { stop, threads }
    }
}

impl Drop for BusyCores {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// Polls `cond` every 20 ms until it is true or `timeout` passes.
pub fn wait_until(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        thread::sleep(Duration::from_millis(20));
    }
}

/// Table-driven tests collect every failing case, then fail once listing them all.
pub fn assert_all_cases_passed(failures: &[String], total: usize) {
    assert!(
        failures.is_empty(),
        "{} of {} cases failed:\n  {}",
        failures.len(),
        total,
        failures.join("\n  ")
    );
}
