//! Counters and latency: each worker counts in plain integers and publishes a snapshot to its
//! own cache lines once per loop turn; the control thread reads them for the stats line, and
//! any worker reads all of them to answer `GET /metrics`. The fan-out latency is counted
//! twice: in fixed Prometheus buckets (published with the counters, so live) and in an HDR
//! histogram that stays in the worker and is merged once, at exit, for exact percentiles.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use hdrhistogram::Histogram;

use crate::proto::http::{Denied, HttpError};

/// Declares [`Reject`] from one row per reason: variant, metric label, doc. Adding a reason is
/// adding a row; its counter slot, its `/metrics` line and its label follow from it.
macro_rules! reasons {
    ($($variant:ident => $label:literal, $doc:literal;)*) => {
        /// Why a handshake (or HTTP request) was refused: the `reason` label of
        /// `herald_rejected_total`. The one list of reasons; every one is printed, even at 0,
        /// so dashboards and alerts can name a reason before it first happens.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum Reject {
            $(#[doc = $doc] $variant,)*
        }

        impl Reject {
            /// Every reason, in slot order.
            pub const ALL: &'static [Reject] = &[$(Reject::$variant,)*];
            /// The stable snake_case labels, in slot order (`LABELS[r as usize]`).
            pub const LABELS: &'static [&'static str] = &[$($label,)*];
        }
    };
}

reasons! {
    BadRequest => "bad_request", "Malformed request or upgrade headers (400).";
    BadTopic => "bad_topic", "The path is not a valid topic (400).";
    NotFound => "not_found", "No such page (404).";
    MethodNotAllowed => "method_not_allowed", "Neither GET nor POST (405).";
    UpgradeRequired => "upgrade_required", "A plain GET of a topic path (426).";
    UnsupportedVersion => "unsupported_version", "Sec-WebSocket-Version other than 13 (426).";
    HeadTooLarge => "head_too_large", "Request head over 8 KiB (431).";
    LengthRequired => "length_required", "A publish without Content-Length (411).";
    BodyTooLarge => "body_too_large", "A publish body over --max-message (413).";
    Unavailable => "unavailable", "A publish not acknowledged in time (503).";
    Draining => "draining", "An upgrade or publish while shutting down (503).";
    Timeout => "timeout", "The handshake deadline passed.";
    Tls => "tls", "The TLS handshake failed.";
    Reset => "reset", "The peer reset or broke the connection mid-request.";
    Unauthorized => "unauthorized", "Missing or invalid credentials (401).";
    Forbidden => "forbidden", "Credentials not allowed this topic (403).";
    Origin => "origin", "The Origin header is not allowed (403).";
    TooManyConns => "too_many_conns", "The server's connection limit is reached.";
    TooManyConnsPerIp => "too_many_conns_per_ip", "The peer address's connection limit is reached.";
}

impl Reject {
    /// How many reasons there are (the size of [`Rejected`]).
    pub const COUNT: usize = Reject::LABELS.len();

    /// The metric label, e.g. `bad_topic`.
    pub fn label(self) -> &'static str {
        Reject::LABELS[self as usize]
    }
}

/// The counter slot of an HTTP refusal (`herald_rejected_total{reason=...}`): the exhaustive
/// match makes a new refusal pick its slot.
impl From<&HttpError> for Reject {
    fn from(error: &HttpError) -> Self {
        match error {
            HttpError::BadRequest(_) => Reject::BadRequest,
            HttpError::BadTopic(_) => Reject::BadTopic,
            HttpError::NotFound => Reject::NotFound,
            HttpError::MethodNotAllowed => Reject::MethodNotAllowed,
            HttpError::UpgradeRequired => Reject::UpgradeRequired,
            HttpError::UnsupportedVersion => Reject::UnsupportedVersion,
            HttpError::HeadTooLarge => Reject::HeadTooLarge,
            HttpError::LengthRequired => Reject::LengthRequired,
            HttpError::BodyTooLarge(_) => Reject::BodyTooLarge,
            HttpError::Unavailable | HttpError::HookUnavailable(_) => Reject::Unavailable,
            HttpError::ShuttingDown => Reject::Draining,
            HttpError::Denied(Denied::Forbidden | Denied::ByHook(_)) => Reject::Forbidden,
            HttpError::Denied(Denied::Origin) => Reject::Origin,
            HttpError::Denied(_) => Reject::Unauthorized,
            HttpError::TooManyConns => Reject::TooManyConns,
            HttpError::TooManyConnsPerIp => Reject::TooManyConnsPerIp,
        }
    }
}

/// Refusals counted per [`Reject`] reason.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Rejected(pub [u64; Reject::COUNT]);

impl Rejected {
    /// Count one refusal.
    pub fn count(&mut self, reason: Reject) {
        self.0[reason as usize] += 1;
    }

    /// The count for one reason.
    pub fn get(&self, reason: Reject) -> u64 {
        self.0[reason as usize]
    }

    /// All refusals, whatever the reason (the stats line's `rejected=`).
    pub fn total(&self) -> u64 {
        self.0.iter().sum()
    }
}

/// Upper bounds (inclusive, µs) of the fan-out latency buckets, 50 µs to 5 s in 1-2.5-5
/// steps; a last, open bucket takes the rest. Fixed so that workers can add plain integers
/// and `/metrics` can print a Prometheus histogram without locks.
pub const LATENCY_BOUNDS_MICROS: [u64; 16] = [
    50, 100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000,
    1_000_000, 2_500_000, 5_000_000,
];

/// Buckets including the open one (`+Inf`).
pub const LATENCY_BUCKETS: usize = LATENCY_BOUNDS_MICROS.len() + 1;

/// The live fan-out latency: deliveries per bucket (not cumulative) and their sum.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct LatencyBuckets {
    /// `counts[i]`: deliveries that took at most `LATENCY_BOUNDS_MICROS[i]` and more than the
    /// bound before; the last slot holds those over 5 s.
    pub counts: [u64; LATENCY_BUCKETS],
    /// Sum of all recorded latencies, µs.
    pub sum_micros: u64,
}

impl LatencyBuckets {
    /// Record `n` deliveries of `micros` each (a binary search over 16 bounds: a few ns, once
    /// per message per batch, not per subscriber).
    #[inline]
    pub fn record_n(&mut self, micros: u64, n: u64) {
        let i = LATENCY_BOUNDS_MICROS.partition_point(|&b| b < micros);
        self.counts[i] += n;
        self.sum_micros = self.sum_micros.wrapping_add(micros.saturating_mul(n));
    }

    /// Deliveries recorded (the histogram's `_count`).
    pub fn count(&self) -> u64 {
        self.counts.iter().sum()
    }
}

/// What a worker counts. Plain integers: only the owning worker writes them.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Counters {
    /// Connections currently held (gauge).
    pub open: u64,
    /// Connections accepted since start.
    pub accepted: u64,
    /// Messages received from clients.
    pub msgs_in: u64,
    /// Messages written to subscribers (one per subscriber per message).
    pub frames_out: u64,
    /// Bytes read from clients (after TLS decryption), request heads and frames alike.
    pub bytes_in: u64,
    /// Bytes written to clients (before TLS encryption).
    pub bytes_out: u64,
    /// Subscribers closed for exceeding `--max-backlog`.
    pub slow_closes: u64,
    /// Connections reset (`SO_LINGER` 0) because their last bytes were not delivered within
    /// `--close-grace`, or they were slow consumers: the kernel frees their buffers at once.
    pub aborts: u64,
    /// Publications dropped because a worker's inbox and outbox were full.
    pub full_drops: u64,
    /// Handshakes refused with an HTTP error or timed out, by reason.
    pub rejected: Rejected,
    /// Requests refused for missing or bad credentials.
    pub auth_failures: u64,
    /// Connections closed for going over a rate limit.
    pub rate_limited: u64,
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
    /// Socket write calls that took bytes (fan-out writes and queued output alike): with
    /// `frames_out`, how many deliveries each write carries (`writes/delivery`).
    pub socket_writes: u64,
    /// Topic batches held for a later turn by `--batch-window` (each counted once).
    pub batch_holds: u64,
    /// Fan-out latency in fixed buckets (live, unlike the HDR histogram).
    pub latency: LatencyBuckets,
}

/// Scalar fields of [`Counters`].
const SCALARS: usize = 18;
/// Every `u64` of [`Counters`]: scalars, rejections by reason, latency buckets and sum.
const SLOTS: usize = SCALARS + Reject::COUNT + LATENCY_BUCKETS + 1;

impl Counters {
    fn to_array(self) -> [u64; SLOTS] {
        let scalars: [u64; SCALARS] = [
            self.open,
            self.accepted,
            self.msgs_in,
            self.frames_out,
            self.bytes_in,
            self.bytes_out,
            self.slow_closes,
            self.full_drops,
            self.auth_failures,
            self.rate_limited,
            self.fd_pauses,
            self.replayed,
            self.v1_refusals,
            self.history_msgs,
            self.history_bytes,
            self.aborts,
            self.socket_writes,
            self.batch_holds,
        ];
        let mut a = [0u64; SLOTS];
        let (head, rest) = a.split_at_mut(SCALARS);
        head.copy_from_slice(&scalars);
        let (rejected, rest) = rest.split_at_mut(Reject::COUNT);
        rejected.copy_from_slice(&self.rejected.0);
        let (buckets, sum) = rest.split_at_mut(LATENCY_BUCKETS);
        buckets.copy_from_slice(&self.latency.counts);
        sum[0] = self.latency.sum_micros;
        a
    }

    fn from_array(a: [u64; SLOTS]) -> Self {
        let (head, rest) = a.split_at(SCALARS);
        let (rejected, rest) = rest.split_at(Reject::COUNT);
        let (buckets, sum) = rest.split_at(LATENCY_BUCKETS);
        let mut c = Counters {
            rejected: Rejected(std::array::from_fn(|i| rejected[i])),
            latency: LatencyBuckets {
                counts: std::array::from_fn(|i| buckets[i]),
                sum_micros: sum[0],
            },
            ..Default::default()
        };
        [
            c.open,
            c.accepted,
            c.msgs_in,
            c.frames_out,
            c.bytes_in,
            c.bytes_out,
            c.slow_closes,
            c.full_drops,
            c.auth_failures,
            c.rate_limited,
            c.fd_pauses,
            c.replayed,
            c.v1_refusals,
            c.history_msgs,
            c.history_bytes,
            c.aborts,
            c.socket_writes,
            c.batch_holds,
        ] = std::array::from_fn(|i| head[i]);
        c
    }

    /// Sum over workers (the gauges sum too).
    pub fn sum<'a>(all: impl IntoIterator<Item = &'a Counters>) -> Counters {
        let mut total = [0u64; SLOTS];
        for c in all {
            for (t, v) in total.iter_mut().zip(c.to_array()) {
                *t = t.wrapping_add(v);
            }
        }
        Counters::from_array(total)
    }
}

/// One worker's published counters, on cache lines of its own so workers never share one.
#[derive(Debug)]
#[repr(align(128))]
pub struct SharedCounters([AtomicU64; SLOTS]);

impl Default for SharedCounters {
    fn default() -> Self {
        SharedCounters(std::array::from_fn(|_| AtomicU64::new(0)))
    }
}

impl SharedCounters {
    /// Called by the owning worker once per turn.
    pub fn publish(&self, c: &Counters) {
        for (slot, v) in self.0.iter().zip(c.to_array()) {
            slot.store(v, Relaxed);
        }
    }

    /// The last published snapshot (fields may be from adjacent turns; each is exact).
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
        ") msgs_in/s={} frames_out/s={} bytes_out/s={} slow_closes={} aborts={} full_drops={} rejected={} fd_pauses={} history_msgs={} history_bytes={} replayed={} v1_refusals={} auth_failures={} rate_limited={}",
        rate(p.msgs_in, n.msgs_in),
        rate(p.frames_out, n.frames_out),
        rate(p.bytes_out, n.bytes_out),
        n.slow_closes,
        n.aborts,
        n.full_drops,
        n.rejected.total(),
        n.fd_pauses,
        n.history_msgs,
        n.history_bytes,
        n.replayed,
        n.v1_refusals,
        n.auth_failures,
        n.rate_limited,
    );
    // Batching: socket writes per delivery over the interval (1 = one write per message per
    // subscriber; lower = each write carries several), and batches held by --batch-window.
    let deliveries = n.frames_out.saturating_sub(p.frames_out);
    let writes = n.socket_writes.saturating_sub(p.socket_writes);
    match writes_per_delivery(writes, deliveries) {
        Some(r) => {
            let _ = write!(line, " writes/delivery={r:.3}");
        }
        None => line.push_str(" writes/delivery=-"),
    }
    let _ = write!(
        line,
        " batch_holds/s={}",
        rate(p.batch_holds, n.batch_holds)
    );
    line
}

/// Socket writes per delivery (`None` without deliveries: no ratio to show).
pub fn writes_per_delivery(writes: u64, deliveries: u64) -> Option<f64> {
    (deliveries > 0).then(|| writes as f64 / deliveries as f64)
}

/// Totals for the final report.
pub fn totals_line(c: &Counters) -> String {
    format!(
        "totals: accepted={} msgs_in={} frames_out={} bytes_out={} slow_closes={} full_drops={} rejected={} fd_pauses={} replayed={} v1_refusals={} socket_writes={} batch_holds={}",
        c.accepted, c.msgs_in, c.frames_out, c.bytes_out, c.slow_closes, c.full_drops, c.rejected.total(), c.fd_pauses, c.replayed, c.v1_refusals, c.socket_writes, c.batch_holds
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
    use crate::proto::http::{parse_head, MAX_HEAD};

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
        assert!(line.contains(" writes/delivery=0.000"), "no writes: {line}");
        let quiet = stats_line(&now, &now, Duration::from_secs(2));
        assert!(
            quiet.contains(" writes/delivery=-"),
            "no deliveries: {quiet}"
        );
    }

    #[test]
    fn stats_line_shows_writes_per_delivery() {
        let prev = [Counters::default()];
        let now = [Counters {
            frames_out: 400,
            socket_writes: 100,
            batch_holds: 6,
            ..Default::default()
        }];
        let line = stats_line(&prev, &now, Duration::from_secs(2));
        assert!(line.contains(" writes/delivery=0.250"), "{line}");
        assert!(line.contains(" batch_holds/s=3"), "{line}");
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

    #[test]
    fn every_slot_survives_publish_and_sum() {
        let mut c = Counters {
            open: 1,
            accepted: 2,
            msgs_in: 3,
            frames_out: 4,
            bytes_in: 5,
            bytes_out: 6,
            slow_closes: 7,
            full_drops: 8,
            auth_failures: 9,
            rate_limited: 10,
            fd_pauses: 11,
            replayed: 12,
            v1_refusals: 13,
            history_msgs: 14,
            history_bytes: 15,
            socket_writes: 16,
            batch_holds: 17,
            ..Default::default()
        };
        for (i, &reason) in Reject::ALL.iter().enumerate() {
            for _ in 0..=i {
                c.rejected.count(reason);
            }
        }
        c.latency.record_n(70, 3);
        c.latency.record_n(9_000_000, 1);
        let shared = SharedCounters::default();
        shared.publish(&c);
        assert_eq!(shared.read(), c);
        let twice = Counters::sum([&c, &c]);
        assert_eq!(twice.history_bytes, 30);
        assert_eq!((twice.socket_writes, twice.batch_holds), (32, 34));
        assert_eq!(
            twice.rejected.get(Reject::TooManyConnsPerIp),
            2 * Reject::COUNT as u64
        );
        assert_eq!(twice.latency.count(), 8);
        assert_eq!(twice.latency.sum_micros, 2 * (210 + 9_000_000));
    }

    #[test]
    fn reasons_have_unique_snake_case_labels() {
        assert_eq!(Reject::ALL.len(), Reject::COUNT);
        for (i, &reason) in Reject::ALL.iter().enumerate() {
            assert_eq!(reason as usize, i);
            let label = reason.label();
            assert!(
                label.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'),
                "{label}"
            );
            assert_eq!(
                Reject::LABELS.iter().filter(|&&l| l == label).count(),
                1,
                "{label}"
            );
        }
        for label in [
            "unauthorized",
            "forbidden",
            "origin",
            "too_many_conns",
            "too_many_conns_per_ip",
            "timeout",
            "tls",
        ] {
            assert!(Reject::LABELS.contains(&label), "{label} is pre-declared");
        }
    }

    #[test]
    fn latency_buckets_take_inclusive_upper_bounds() {
        let mut b = LatencyBuckets::default();
        b.record_n(1, 1); // ≤ 50 µs
        b.record_n(50, 1); // ≤ 50 µs: bounds are inclusive (`le`)
        b.record_n(51, 1); // ≤ 100 µs
        b.record_n(5_000_000, 1); // ≤ 5 s
        b.record_n(5_000_001, 2); // +Inf
        assert_eq!(b.counts[0], 2);
        assert_eq!(b.counts[1], 1);
        assert_eq!(b.counts[LATENCY_BUCKETS - 2], 1);
        assert_eq!(b.counts[LATENCY_BUCKETS - 1], 2);
        assert_eq!(b.count(), 6);
        assert_eq!(b.sum_micros, 1 + 50 + 51 + 5_000_000 + 2 * 5_000_001);
    }

    #[test]
    fn refusals_carry_stable_reasons() {
        let reason = |r: &str| Reject::from(&parse_head(r.as_bytes(), 1024).unwrap_err()).label();
        // An upgrade of `path` offering WebSocket version `version`.
        let upgrade = |path: &str, version: u8| {
            format!(
                "GET {path} HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
                 Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: {version}\r\n\r\n"
            )
        };
        assert_eq!(reason(&upgrade("/bad%20topic", 13)), "bad_topic");
        assert_eq!(reason(&upgrade("/chat", 8)), "unsupported_version");
        assert_eq!(
            reason("PUT /chat HTTP/1.1\r\nHost: x\r\n\r\n"),
            "method_not_allowed"
        );
        assert_eq!(
            reason("POST /chat HTTP/1.1\r\nHost: x\r\n\r\n"),
            "length_required"
        );
        assert_eq!(
            reason("POST /chat HTTP/1.1\r\nContent-Length: 1025\r\n\r\n"),
            "body_too_large"
        );
        assert_eq!(reason("GARBAGE\r\n\r\n"), "bad_request");
        let huge = format!("GET /chat HTTP/1.1\r\nX: {}\r\n", "a".repeat(MAX_HEAD));
        assert_eq!(reason(&huge), "head_too_large");
        assert_eq!(Reject::from(&HttpError::Unavailable).label(), "unavailable");
        let busy = String::from_utf8(HttpError::ShuttingDown.response()).unwrap();
        assert!(busy.starts_with("HTTP/1.1 503 "), "{busy}");
        assert!(busy.contains("\r\nRetry-After: 1\r\n"), "{busy}");
        assert_eq!(Reject::from(&HttpError::ShuttingDown).label(), "draining");
    }
}
