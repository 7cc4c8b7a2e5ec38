//! Counters and latency: each worker counts in plain integers and publishes a snapshot to its
//! own cache line once per loop turn; the control thread reads them for the stats line. The
//! fan-out latency histogram stays in the worker and is merged once, at exit.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use hdrhistogram::Histogram;

/// What a worker counts. Plain integers: only the owning worker writes them.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Counters {
    /// Connections currently held (gauge).
    pub open: u64,
    pub accepted: u64,
    /// Messages received from clients.
    pub msgs_in: u64,
    /// Messages written to subscribers (one per subscriber per message).
    pub frames_out: u64,
    pub bytes_out: u64,
    /// Subscribers closed for exceeding `--max-backlog`.
    pub slow_closes: u64,
    /// Publications dropped because a worker's inbox and outbox were full.
    pub full_drops: u64,
    /// Handshakes refused with an HTTP error or timed out.
    pub rejected: u64,
    /// Times accepting paused because the process ran out of file descriptors.
    pub fd_pauses: u64,
    /// Messages sent from history to joining `herald.v1` subscribers (`since`, `rewind`).
    pub replayed: u64,
    /// `herald.v1` requests (or topics of one) answered with an error.
    pub v1_refusals: u64,
    /// Messages kept in history by this worker's topics (gauge).
    pub history_msgs: u64,
    /// Memory charged for them, bytes (gauge; capped by `--history-max-bytes`).
    pub history_bytes: u64,
    /// Requests refused for a missing, invalid or expired token, or a topic not granted.
    pub auth_failures: u64,
    /// Connections closed for sending faster than `--rate-limit-msgs` / `--rate-limit-bytes`.
    pub rate_limited: u64,
}

const FIELDS: usize = 15;

impl Counters {
    fn to_array(self) -> [u64; FIELDS] {
        [
            self.open,
            self.accepted,
            self.msgs_in,
            self.frames_out,
            self.bytes_out,
            self.slow_closes,
            self.full_drops,
            self.rejected,
            self.fd_pauses,
            self.replayed,
            self.v1_refusals,
            self.history_msgs,
            self.history_bytes,
            self.auth_failures,
            self.rate_limited,
        ]
    }

    fn from_array(a: [u64; FIELDS]) -> Self {
        let [open, accepted, msgs_in, frames_out, bytes_out, slow_closes, full_drops, rejected, fd_pauses, replayed, v1_refusals, history_msgs, history_bytes, auth_failures, rate_limited] =
            a;
        Counters {
            open,
            accepted,
            msgs_in,
            frames_out,
            bytes_out,
            slow_closes,
            full_drops,
            rejected,
            fd_pauses,
            replayed,
            v1_refusals,
            history_msgs,
            history_bytes,
            auth_failures,
            rate_limited,
        }
    }

    /// Sum over workers (the gauge `open` sums too).
    pub fn sum<'a>(all: impl IntoIterator<Item = &'a Counters>) -> Counters {
        let mut total = [0u64; FIELDS];
        for c in all {
            for (t, v) in total.iter_mut().zip(c.to_array()) {
                *t += v;
            }
        }
        Counters::from_array(total)
    }
}

/// One worker's published counters, alone on its cache line so workers never share one.
#[derive(Debug, Default)]
#[repr(align(128))]
pub struct SharedCounters([AtomicU64; FIELDS]);

impl SharedCounters {
    /// Called by the owning worker once per turn.
    pub fn publish(&self, c: &Counters) {
        for (slot, v) in self.0.iter().zip(c.to_array()) {
            slot.store(v, Relaxed);
        }
    }

    pub fn read(&self) -> Counters {
        Counters::from_array(std::array::from_fn(|i| self.0[i].load(Relaxed)))
    }
}

/// A histogram of microseconds from 1 µs to 1 hour at 3 significant digits.
pub fn new_latency_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 3_600_000_000, 3)
        .unwrap_or_else(|_| Histogram::new(3).expect("3 sigfigs is valid"))
}

/// The periodic stats line: connections per worker and per-second rates since the last line.
pub fn stats_line(prev: &[Counters], now: &[Counters], elapsed: Duration) -> String {
    let (p, n) = (Counters::sum(prev), Counters::sum(now));
    let secs = elapsed.as_secs_f64().max(1e-9);
    let rate = |a: u64, b: u64| ((b.saturating_sub(a)) as f64 / secs).round() as u64;
    let mut line = format!("stats: conns={} (", n.open);
    for (i, c) in now.iter().enumerate() {
        let _ = write!(line, "{}w{i}={}", if i > 0 { " " } else { "" }, c.open);
    }
    let _ = write!(
        line,
        ") msgs_in/s={} frames_out/s={} bytes_out/s={} slow_closes={} full_drops={} rejected={} fd_pauses={} history_msgs={} history_bytes={} replayed={} v1_refusals={} auth_failures={} rate_limited={}",
        rate(p.msgs_in, n.msgs_in),
        rate(p.frames_out, n.frames_out),
        rate(p.bytes_out, n.bytes_out),
        n.slow_closes,
        n.full_drops,
        n.rejected,
        n.fd_pauses,
        n.history_msgs,
        n.history_bytes,
        n.replayed,
        n.v1_refusals,
        n.auth_failures,
        n.rate_limited,
    );
    line
}

/// Totals for the final report.
pub fn totals_line(c: &Counters) -> String {
    format!(
        "totals: accepted={} msgs_in={} frames_out={} bytes_out={} slow_closes={} full_drops={} rejected={} fd_pauses={} replayed={} v1_refusals={}",
        c.accepted, c.msgs_in, c.frames_out, c.bytes_out, c.slow_closes, c.full_drops, c.rejected, c.fd_pauses, c.replayed, c.v1_refusals
    )
}

/// Percentiles of the fan-out latency, in microseconds.
pub fn latency_line(h: &Histogram<u64>) -> String {
    if h.is_empty() {
        return "fanout latency (us): no deliveries".to_string();
    }
    format!(
        "fanout latency (us): p50={} p90={} p99={} p99.9={} max={} samples={}",
        h.value_at_quantile(0.5),
        h.value_at_quantile(0.9),
        h.value_at_quantile(0.99),
        h.value_at_quantile(0.999),
        h.max(),
        h.len()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stats_line_shows_per_worker_conns_and_rates() {
        let prev = [Counters::default(), Counters::default()];
        let now = [
            Counters {
                open: 3,
                msgs_in: 10,
                frames_out: 30,
                ..Default::default()
            },
            Counters {
                open: 2,
                msgs_in: 10,
                frames_out: 20,
                slow_closes: 1,
                ..Default::default()
            },
        ];
        let line = stats_line(&prev, &now, Duration::from_secs(2));
        assert!(
            line.starts_with("stats: conns=5 (w0=3 w1=2) msgs_in/s=10 frames_out/s=25"),
            "{line}"
        );
        assert!(line.contains("slow_closes=1"), "{line}");
    }

    #[test]
    fn shared_counters_round_trip() {
        let shared = SharedCounters::default();
        let c = Counters {
            open: 1,
            accepted: 2,
            fd_pauses: 9,
            ..Default::default()
        };
        shared.publish(&c);
        assert_eq!(shared.read(), c);
    }
}
