//! The live dashboard's feed, sans-IO: the counters every worker already publishes once per
//! turn (the ones `GET /metrics` reads) in, one Server-Sent Events message out.
//!
//! Why cumulative counters and not rates: the server keeps no history for the dashboard and
//! does no work for it on the hot path. Each event is a snapshot of the published counters
//! (totals since start, gauges, the latency buckets) stamped with the server's clock; the page
//! takes the difference of two events for every per-second figure and every "last minutes"
//! percentile. A page that misses an event loses nothing: the next one still adds up.
//!
//! The JSON shape (`herald.dashboard.v1`) is documented in docs/operations.md. `topics` is
//! the busiest-topics table: a list of `{topic, subscribers, deliveries_per_s}` from the
//! workers' busiest-topics picks (`ops::topic_stats`, once per stats interval or second),
//! empty while nothing is delivered.

use serde_json::{json, Map, Value};

use crate::ops::stats::{Counters, Reject, LATENCY_BOUNDS_MICROS};

/// What the feed's events say they are (a page checks it before drawing).
pub const FORMAT: &str = "herald.dashboard.v1";

/// How often a stream gets an event, in milliseconds (also the page's reconnect delay).
pub const PERIOD_MS: u64 = 1_000;

/// Most dashboard streams one worker keeps open; more are refused with 503. A dashboard is
/// for a few people, and each stream is a connection that never ends on its own.
pub const MAX_STREAMS_PER_WORKER: usize = 16;

/// Unsent event bytes after which a stream is dropped: a page that does not read (a
/// suspended tab) must not make the server hold its events.
pub const MAX_STREAM_BACKLOG: usize = 256 * 1024;

/// The head of the stream's response: the body is events until either side closes.
pub fn stream_head() -> Vec<u8> {
    format!(
        "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-store\r\n\
         X-Content-Type-Options: nosniff\r\nConnection: close\r\n\r\nretry: {PERIOD_MS}\n\n"
    )
    .into_bytes()
}

/// The cluster part of a snapshot: this node's view of the broker.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Broker {
    /// Connected to Redis and caught up.
    pub up: bool,
    /// Named counters and gauges (`topics`, `heard`, `published`, …), in display order.
    pub figures: Vec<(&'static str, u64)>,
    /// With `--dashboard` in cluster mode, every live node's snapshot as read from Redis
    /// (`{"ttl_s", "nodes": […], "error"}`, see src/cluster/roster.rs); `null` otherwise.
    pub nodes: Value,
}

/// One busiest-topics row (from the workers' last busiest-topics picks).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicRow {
    pub topic: String,
    /// Subscribers now, over all workers.
    pub subscribers: u64,
    /// Deliveries per second over the workers' last pick interval.
    pub deliveries_per_s: u64,
}

/// Everything one event shows.
#[derive(Debug, Clone, Copy)]
pub struct Snapshot<'a> {
    /// Server clock, milliseconds since the Unix epoch: the page's time axis and the divisor
    /// of its rates.
    pub unix_ms: u64,
    /// Seconds since the server started.
    pub uptime_s: u64,
    /// Every worker's last published counters, in worker order.
    pub workers: &'a [Counters],
    /// Cluster mode: this node's broker state; `None` on a single node.
    pub broker: Option<&'a Broker>,
    /// The busiest topics, busiest first.
    pub topics: &'a [TopicRow],
}

impl Snapshot<'_> {
    /// The event as JSON.
    pub fn to_json(&self) -> Value {
        let total = Counters::sum(self.workers);
        let workers: Vec<Value> = self
            .workers
            .iter()
            .map(|c| {
                json!({
                    "connections": c.open,
                    "messages_in": c.msgs_in,
                    "deliveries": c.frames_out,
                    "bytes_out": c.bytes_out,
                })
            })
            .collect();
        let rejected: Map<String, Value> = Reject::ALL
            .iter()
            .map(|&r| (r.label().to_owned(), total.rejected.get(r).into()))
            .collect();
        let topics: Vec<Value> = self
            .topics
            .iter()
            .map(|t| json!({"topic": t.topic, "subscribers": t.subscribers, "deliveries_per_s": t.deliveries_per_s}))
            .collect();
        let broker = self.broker.map(|b| {
            let figures: Map<String, Value> = b
                .figures
                .iter()
                .map(|&(name, v)| (name.to_owned(), v.into()))
                .collect();
            json!({"up": b.up, "figures": figures, "nodes": b.nodes})
        });
        json!({
            "format": FORMAT,
            "unix_ms": self.unix_ms,
            "uptime_s": self.uptime_s,
            "workers": workers,
            "total": {
                "connections": total.open,
                "accepted": total.accepted,
                "messages_in": total.msgs_in,
                "deliveries": total.frames_out,
                "bytes_in": total.bytes_in,
                "bytes_out": total.bytes_out,
                "slow_consumer_closes": total.slow_closes,
                "aborted": total.aborts,
                "full_drops": total.full_drops,
                "auth_failures": total.auth_failures,
                "rate_limited": total.rate_limited,
                "fd_pauses": total.fd_pauses,
                "replayed": total.replayed,
                "v1_refusals": total.v1_refusals,
                "history_messages": total.history_msgs,
                "history_bytes": total.history_bytes,
            },
            "rejected": rejected,
            "latency": {
                "bounds_us": LATENCY_BOUNDS_MICROS,
                "counts": total.latency.counts,
                "sum_us": total.latency.sum_micros,
            },
            "topics": topics,
            "broker": broker,
        })
    }

    /// The event as one SSE message (`data:` line, blank line).
    pub fn event(&self) -> Vec<u8> {
        format!("data: {}\n\n", self.to_json()).into_bytes()
    }
}

/// The `key` of a feed target's query string (`/dashboard/feed?key=K`), as sent: keys are
/// URL-safe, like tokens in `?token=`.
pub fn key_param(target: &str) -> Option<&str> {
    let (_, query) = target.split_once('?')?;
    query.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=')?;
        (k == "key" && !v.is_empty()).then_some(v)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_event_carries_totals_per_worker_figures_and_buckets() {
        let mut w0 = Counters {
            open: 3,
            msgs_in: 10,
            frames_out: 30,
            ..Default::default()
        };
        w0.rejected.count(Reject::Unauthorized);
        w0.latency.record_n(70, 4);
        let w1 = Counters {
            open: 2,
            frames_out: 5,
            slow_closes: 1,
            ..Default::default()
        };
        let broker = Broker {
            up: true,
            figures: vec![("heard", 7)],
            nodes: json!({"ttl_s": 5, "nodes": [{"node": "0000000a"}], "error": null}),
        };
        let topics = [TopicRow {
            topic: "chat".into(),
            subscribers: 4,
            deliveries_per_s: 9,
        }];
        let snap = Snapshot {
            unix_ms: 1_700_000_000_000,
            uptime_s: 5,
            workers: &[w0, w1],
            broker: Some(&broker),
            topics: &topics,
        };
        let event = String::from_utf8(snap.event()).unwrap();
        let json = event
            .strip_prefix("data: ")
            .and_then(|e| e.strip_suffix("\n\n"))
            .unwrap();
        assert!(!json.contains('\n'), "one data line");
        let v: Value = serde_json::from_str(json).unwrap();
        assert_eq!(v["format"], FORMAT);
        assert_eq!(v["total"]["connections"], 5);
        assert_eq!(v["total"]["deliveries"], 35);
        assert_eq!(v["total"]["slow_consumer_closes"], 1);
        assert_eq!(v["workers"][1]["connections"], 2);
        assert_eq!(v["rejected"]["unauthorized"], 1);
        assert_eq!(v["rejected"]["too_many_conns"], 0);
        assert_eq!(v["latency"]["counts"][1], 4); // 70 µs: the ≤ 100 µs bucket
        assert_eq!(v["latency"]["bounds_us"][1], 100);
        assert_eq!(v["broker"]["figures"]["heard"], 7);
        assert_eq!(v["broker"]["nodes"]["nodes"][0]["node"], "0000000a");
        assert_eq!(v["topics"][0]["subscribers"], 4);
        assert_eq!(v["topics"][0]["deliveries_per_s"], 9);
        let single = Snapshot {
            broker: None,
            topics: &[],
            ..snap
        };
        assert_eq!(single.to_json()["broker"], Value::Null);
    }

    #[test]
    fn the_key_comes_from_the_query() {
        assert_eq!(key_param("/dashboard/feed?key=abc"), Some("abc"));
        assert_eq!(key_param("/dashboard/feed?x=1&key=a-b_c"), Some("a-b_c"));
        assert_eq!(key_param("/dashboard/feed?key="), None);
        assert_eq!(key_param("/dashboard/feed"), None);
    }

    #[test]
    fn the_stream_head_is_an_event_stream_that_ends_with_the_connection() {
        let head = String::from_utf8(stream_head()).unwrap();
        assert!(head.starts_with("HTTP/1.1 200 OK\r\n"));
        assert!(head.contains("\r\nContent-Type: text/event-stream\r\n"));
        assert!(!head.contains("Content-Length"));
        assert!(head.ends_with("\r\n\r\nretry: 1000\n\n"));
    }
}
