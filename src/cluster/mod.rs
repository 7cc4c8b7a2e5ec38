//! Cluster mode (`--broker redis://HOST:PORT`): several Herald nodes behind a load balancer
//! share their topics through Redis, so a publish on any node reaches subscribers on every
//! node, in one order and with one numbering.
//!
//! Why it looks like this:
//! - **Redis numbers.** A topic's sequence number is given out by one Lua script that also
//!   appends the message to the topic's log (a stream capped at `--broker-history`) and
//!   PUBLISHes it (`script.rs`). Every node therefore hears the same messages with the same
//!   numbers in the same order, and `since` recovery works on any node.
//! - **The worker loops stay runtime-free.** Redis is spoken to by two bridge threads
//!   (`bridge.rs`) with the `redis` crate's blocking API. Workers hand them work over
//!   crossbeam channels (never blocking: a full publish queue is answered "unavailable"), and
//!   the bridge feeds the workers through their existing bus inboxes and wakers.
//! - **One order per topic on a node.** Everything heard from Redis for a topic goes to that
//!   topic's owner worker on this node, which hands it to its interested workers exactly as
//!   it does with locally numbered messages.
//! - **No fan-in.** A node SUBSCRIBEs to a topic's channel only while it has subscribers of
//!   that topic, and UNSUBSCRIBEs when the last one leaves.
//! - **No silent hole.** The listening bridge thread checks every topic's numbers; a hole
//!   (a reconnect, a dropped pub/sub client) is filled from the log, or, if the log no longer
//!   has the messages or Redis lost the topic, every affected subscriber is told explicitly.

pub mod bridge;
pub mod script;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;

use bytes::Bytes;
use crossbeam_channel::{Receiver, Sender};

use crate::feed::bus::{AckTo, JoinRequest, Origin, PeerLink};
use crate::proto::topic::TopicName;

/// Publishes that may wait for the publishing bridge thread; past this, a publish is refused
/// as unavailable at once (a worker never waits for Redis).
pub const PUBLISH_QUEUE: usize = 64 * 1024;

/// A message for Redis to number, keep and broadcast.
#[derive(Debug)]
pub struct PublishReq {
    pub topic: TopicName,
    /// The server frame the publisher's worker encoded (its payload is what Redis stores).
    pub frame: Bytes,
    pub origin: Origin,
    /// Who waits for the number (HTTP or `herald.v1` publish); `None` for raw mode.
    pub ack: Option<AckTo>,
}

/// What a topic's owner worker tells the listening bridge thread.
#[derive(Debug)]
pub enum SubReq {
    /// This node gained its first (`active`) or lost its last subscriber of `topic`.
    Interest { topic: TopicName, active: bool },
    /// A `herald.v1` subscriber wants the stream from `request.start`: answered (to the
    /// subscriber's worker) consistently with what the bridge forwards live.
    Join(JoinRequest),
}

/// Broker health and counters, shared by the bridge threads, the workers and the stats line.
/// Written rarely (per outage, per refused publish) except the `heard` counter.
#[derive(Debug, Default)]
pub struct BrokerStats {
    /// The listening connection is up (subscriptions in place and caught up).
    pub up: AtomicBool,
    /// Bumped on every successful (re)connect of the listening thread: the publishing thread
    /// then reconnects too instead of finding its old socket dead on the next publish.
    pub generation: AtomicU64,
    /// Times the connection to Redis was lost.
    pub outages: AtomicU64,
    /// Channels this node is subscribed to (gauge).
    pub topics: AtomicU64,
    /// Messages heard from Redis and forwarded to workers.
    pub heard: AtomicU64,
    /// Messages numbered by Redis for publishers on this node.
    pub published: AtomicU64,
    /// Messages missed live and fetched from a topic's log instead (no hole).
    pub recovered: AtomicU64,
    /// Holes that could not be filled: each one told its topic's subscribers explicitly.
    pub gaps: AtomicU64,
    /// Publishes and joins refused because Redis was unreachable (or the queue was full).
    pub unavailable: AtomicU64,
    /// Messages from Redis that did not parse (skipped).
    pub malformed: AtomicU64,
}

impl BrokerStats {
    /// The cluster part of the stats line.
    pub fn fields(&self) -> String {
        format!(
            "broker={} broker_topics={} broker_heard={} broker_published={} broker_outages={} broker_recovered={} broker_gaps={} broker_unavailable={} broker_malformed={}",
            if self.up.load(Relaxed) { "up" } else { "down" },
            self.topics.load(Relaxed),
            self.heard.load(Relaxed),
            self.published.load(Relaxed),
            self.outages.load(Relaxed),
            self.recovered.load(Relaxed),
            self.gaps.load(Relaxed),
            self.unavailable.load(Relaxed),
            self.malformed.load(Relaxed),
        )
    }

    /// The cluster metrics in the Prometheus text format, appended to `GET /metrics`.
    pub fn prometheus(&self) -> String {
        let up = u64::from(self.up.load(Relaxed));
        let rows: [(&str, &str, &str, u64); 9] = [
            (
                "herald_broker_up",
                "gauge",
                "1 while the node is connected to Redis and caught up.",
                up,
            ),
            (
                "herald_broker_topics",
                "gauge",
                "Topics this node subscribes to in Redis.",
                self.topics.load(Relaxed),
            ),
            (
                "herald_broker_heard_total",
                "counter",
                "Messages heard from Redis and delivered here.",
                self.heard.load(Relaxed),
            ),
            (
                "herald_broker_published_total",
                "counter",
                "Messages numbered by Redis for this node's publishers.",
                self.published.load(Relaxed),
            ),
            (
                "herald_broker_outages_total",
                "counter",
                "Times the connection to Redis was lost.",
                self.outages.load(Relaxed),
            ),
            (
                "herald_broker_recovered_total",
                "counter",
                "Messages missed live and filled in from a topic's log.",
                self.recovered.load(Relaxed),
            ),
            (
                "herald_broker_gaps_total",
                "counter",
                "Holes that could not be filled (subscribers told explicitly).",
                self.gaps.load(Relaxed),
            ),
            (
                "herald_broker_unavailable_total",
                "counter",
                "Publishes and joins refused while Redis was unreachable.",
                self.unavailable.load(Relaxed),
            ),
            (
                "herald_broker_malformed_total",
                "counter",
                "Messages from Redis that did not parse.",
                self.malformed.load(Relaxed),
            ),
        ];
        let mut out = String::new();
        for (name, kind, help, value) in rows {
            out.push_str(&format!(
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}\n"
            ));
        }
        out
    }

    pub(crate) fn count(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Relaxed);
    }
}

/// A worker's handle on the bridge.
#[derive(Debug, Clone)]
pub struct ClusterLink {
    pub publish: Sender<PublishReq>,
    pub listen: Sender<SubReq>,
    pub stats: Arc<BrokerStats>,
}

/// Cluster settings taken from the command line.
#[derive(Debug, Clone)]
pub struct BrokerConfig {
    /// `redis://HOST:PORT[/DB]`.
    pub url: String,
    /// Messages kept per topic in Redis (`--broker-history`).
    pub history: usize,
    /// This node's id (differs per process start): part of epochs it creates and of the
    /// origin it stamps on its messages.
    pub node: u32,
}

/// The broker URL for logs: credentials (`redis://user:password@…`) are never printed.
pub fn redacted(url: &str) -> String {
    match (url.split_once("://"), url.rfind('@')) {
        (Some((scheme, _)), Some(at)) => format!("{scheme}://***@{}", &url[at + 1..]),
        _ => url.to_owned(),
    }
}

/// Start the two bridge threads; `workers` are the links to every worker's inbox.
pub fn start(config: BrokerConfig, workers: Vec<PeerLink>) -> std::io::Result<ClusterLink> {
    let stats = Arc::new(BrokerStats::default());
    let client = redis::Client::open(config.url.as_str())
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e.to_string()))?;
    let config = BrokerConfig {
        url: redacted(&config.url),
        ..config
    };
    let (publish, publish_rx): (Sender<PublishReq>, Receiver<PublishReq>) =
        crossbeam_channel::bounded(PUBLISH_QUEUE);
    // Interest changes and joins are never dropped (like on the bus): at most one per
    // first/last subscriber of a topic on this node, or per subscribe request.
    let (listen, listen_rx) = crossbeam_channel::unbounded();
    let links = || {
        workers
            .iter()
            .map(|l| PeerLink {
                inbox: l.inbox.clone(),
                waker: l.waker.clone(),
            })
            .collect::<Vec<_>>()
    };
    let publisher = bridge::Publisher::new(client.clone(), &config, links(), stats.clone());
    std::thread::Builder::new()
        .name("herald-broker-pub".into())
        .spawn(move || publisher.run(publish_rx))?;
    let listener = bridge::Listener::new(client, &config, links(), stats.clone());
    std::thread::Builder::new()
        .name("herald-broker-sub".into())
        .spawn(move || listener.run(listen_rx))?;
    Ok(ClusterLink {
        publish,
        listen,
        stats,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_never_reach_the_logs() {
        assert_eq!(redacted("redis://h:6379/0"), "redis://h:6379/0");
        assert_eq!(redacted("redis://:s3cret@h:6379"), "redis://***@h:6379");
        assert_eq!(redacted("redis://u:p@ss@h:1"), "redis://***@h:1");
    }
}
