//! The per-event-loop state that connection handlers update: counters, the interval
//! histograms, the shared read buffer and the masking-key generator.
//!
//! One per event loop rather than per connection, so a connection stays small and the hot
//! path touches no shared memory.

use hdrhistogram::Histogram;

use crate::cli::Config;
use crate::schedule::Window;
use crate::stats::Stats;

/// Per-event-loop state that connection handlers update; the event loop owns it and lends it
/// to each handler call.
pub struct Ctx {
    /// Run parameters.
    pub cfg: std::sync::Arc<Config>,
    /// Counters and connect latencies of this thread.
    pub stats: Stats,
    /// Delivery latencies since the last progress tick (folded into `stats` at each tick).
    pub interval: Histogram<u64>,
    /// Connect latencies since the last progress tick.
    pub conn_interval: Histogram<u64>,
    /// Measured message range.
    pub window: Window,
    /// Start of traffic (CLOCK_MONOTONIC ns), 0 before the go signal.
    pub t0: u64,
    /// Last time a measured message arrived.
    pub last_delivery_ns: u64,
    /// Shared read buffer.
    pub rbuf: Vec<u8>,
    /// Masking-key generator state (xorshift64).
    pub rng: u64,
    /// `--deflate`: the thread's inflater (each message is inflated afresh: the server
    /// answered server_no_context_takeover) and its output buffer.
    pub inflater: Option<Box<flate2::Decompress>>,
    /// `--deflate`: the inflater's output, reused from message to message.
    pub inflated: Vec<u8>,
    /// `--inflight`: own messages that came back to this loop's publishers (each frees a slot).
    pub acks: u64,
}

impl Ctx {
    /// Whether message `k`, sent at (or scheduled for) `sched`, is in the measured window.
    /// Open loop: by number, since `k` fixes its schedule. Closed loop (`--inflight`): by the
    /// actual send time, the only clock a closed loop has.
    pub fn measured(&self, k: u64, sched: u64) -> bool {
        if self.cfg.inflight == 0 {
            return self.window.contains(k);
        }
        let start = self.t0 + self.cfg.warmup_ns;
        self.t0 != 0 && sched >= start && sched < start + self.cfg.duration_ns
    }

    /// A fresh masking key; RFC 6455 asks for unpredictable keys, which xorshift is for a
    /// load generator whose traffic is all its own.
    pub fn mask(&mut self) -> [u8; 4] {
        let mut x = self.rng;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.rng = x;
        (x as u32).to_ne_bytes()
    }
}
