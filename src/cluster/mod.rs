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
//!   (`bridge/`: `publisher.rs`, `listener.rs`) with the `redis` crate's blocking API.
//!   Workers hand them work over crossbeam channels (never blocking: a full publish queue
//!   is answered "unavailable"), and the bridge feeds the workers through their existing
//!   bus inboxes and wakers.
//! - **One order per topic on a node.** Everything heard from Redis for a topic goes to that
//!   topic's owner worker on this node, which hands it to its interested workers exactly as
//!   it does with locally numbered messages.
//! - **No fan-in.** A node SUBSCRIBEs to a topic's channel only while it has subscribers of
//!   that topic (or of a pattern matching it: one SUBSCRIBE per matching topic, never a
//!   glob), and UNSUBSCRIBEs when the last one leaves.
//! - **No silent hole.** The listening bridge thread checks every topic's numbers; a hole
//!   (a reconnect, a dropped pub/sub client) is filled from the log, or, if the log no longer
//!   has the messages or Redis lost the topic, every affected subscriber is told explicitly.
//! - **More than one Redis.** `--broker` may name several independent Redis instances or a
//!   Redis Cluster (`shard.rs`). Each instance gets its own pair of bridge threads and owns
//!   the topics rendezvous hashing gives it; a Redis Cluster gets one pair that follows the
//!   cluster's slot layout (`wire.rs`) and uses sharded pub/sub. Every guarantee above holds
//!   per topic, because a topic lives on exactly one Redis at a time.

pub mod alarm;
pub mod bridge;
pub mod feed;
pub mod interest;
pub mod presence;
pub mod roster;
pub mod script;
pub mod shard;
pub mod wire;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;

use bytes::Bytes;
use crossbeam_channel::{Receiver, Sender, TrySendError};

use crate::feed::bus::{AckTo, JoinRequest, Origin, PatternRequest, PeerLink};
use crate::proto::pattern::Pattern;
use crate::proto::presence::Member;
use crate::proto::topic::TopicName;

/// Publishes that may wait for the publishing bridge thread; past this, a publish is refused
/// as unavailable at once (a worker never waits for Redis).
pub const PUBLISH_QUEUE: usize = 64 * 1024;

/// Interest changes and joins that may wait for the listening bridge thread (per bridge).
/// Past this, a join is refused as unavailable and an interest change waits in its owner
/// worker's backlog (`interest::InterestBacklog`, the latest state per topic) until there
/// is room.
pub const LISTEN_QUEUE: usize = 64 * 1024;

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
    /// A `--presence` topic's subscriber joined (`joined`) or left on this node: Redis places
    /// the event among the topic's messages (`script::EVENT`) for every node. It takes the
    /// joins' queue so a subscriber's own join is placed before its start (never sent to it).
    Event {
        topic: TopicName,
        joined: bool,
        member: Member,
    },
    /// A pattern subscriber arrived on this node: follow every topic the pattern matches,
    /// now and later (`bridge/listener/patterns.rs`), then answer the subscriber's worker
    /// (`BusMsg::PatternJoined`). Sent to every instance's listener (`ToShards::send_all`).
    PatternJoin(PatternRequest),
    /// One subscriber of `pattern` on this node went.
    PatternLeave(Pattern),
}

/// The health of one bridge (one Redis instance, or a whole Redis Cluster).
#[derive(Debug, Default)]
pub struct ShardHealth {
    /// The listening connection is up (subscriptions in place and caught up).
    pub up: AtomicBool,
    /// Bumped on every successful (re)connect of the listening thread: the publishing thread
    /// then reconnects too instead of finding its old socket dead on the next publish.
    pub generation: AtomicU64,
    /// Channels this node is subscribed to there (gauge).
    pub topics: AtomicU64,
}

/// Broker health and counters, shared by the bridge threads, the workers and the stats line.
/// Written rarely (per outage, per refused publish) except the `heard` counter.
#[derive(Debug, Default)]
pub struct BrokerStats {
    /// One per bridge, in `--broker` order.
    pub shards: Vec<ShardHealth>,
    /// Times the connection to Redis was lost.
    pub outages: AtomicU64,
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
    /// Presence `join`/`leave` events of this node's subscribers placed in Redis.
    pub events: AtomicU64,
    /// Presence events lost: not placed (queue full, Redis unreachable) or heard out of
    /// place (after this node had to take later messages from the log), so not delivered.
    pub events_dropped: AtomicU64,
    /// Topics matching a pattern held here that were not followed: the node already
    /// followed `bridge::MAX_PATTERN_TOPICS` topics.
    pub pattern_topics_refused: AtomicU64,
}

impl BrokerStats {
    /// Counters at zero, `shards` bridges down.
    pub fn new(shards: usize) -> BrokerStats {
        BrokerStats {
            shards: (0..shards).map(|_| ShardHealth::default()).collect(),
            ..BrokerStats::default()
        }
    }

    /// Bridges that are up.
    pub fn shards_up(&self) -> usize {
        self.shards.iter().filter(|s| s.up.load(Relaxed)).count()
    }

    /// Up only when every bridge is.
    pub fn up(&self) -> bool {
        self.shards_up() == self.shards.len()
    }

    /// Channels subscribed to, over every bridge.
    pub fn topics(&self) -> u64 {
        self.shards.iter().map(|s| s.topics.load(Relaxed)).sum()
    }

    /// The cluster part of the stats line.
    pub fn fields(&self) -> String {
        let shards = match self.shards.len() {
            1 => String::new(),
            n => format!(" broker_shards_up={}/{n}", self.shards_up()),
        };
        format!(
            "broker={}{shards} broker_topics={} broker_heard={} broker_published={} broker_outages={} broker_recovered={} broker_gaps={} broker_unavailable={} broker_malformed={} broker_events={} broker_events_dropped={} broker_pattern_topics_refused={}",
            if self.up() { "up" } else { "down" },
            self.topics(),
            self.heard.load(Relaxed),
            self.published.load(Relaxed),
            self.outages.load(Relaxed),
            self.recovered.load(Relaxed),
            self.gaps.load(Relaxed),
            self.unavailable.load(Relaxed),
            self.malformed.load(Relaxed),
            self.events.load(Relaxed),
            self.events_dropped.load(Relaxed),
            self.pattern_topics_refused.load(Relaxed),
        )
    }

    /// The cluster metrics in the Prometheus text format, appended to `GET /metrics`.
    pub fn prometheus(&self) -> String {
        let up = u64::from(self.up());
        let rows: [(&str, &str, &str, u64); 14] = [
            (
                "herald_broker_up",
                "gauge",
                "1 while the node is connected to Redis (every shard) and caught up.",
                up,
            ),
            (
                "herald_broker_shards",
                "gauge",
                "Redis shards (independent instances; 1 for one Redis or a Redis Cluster).",
                self.shards.len() as u64,
            ),
            (
                "herald_broker_shards_up",
                "gauge",
                "Redis shards this node is connected to and caught up with.",
                self.shards_up() as u64,
            ),
            (
                "herald_broker_topics",
                "gauge",
                "Topics this node subscribes to in Redis.",
                self.topics(),
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
                "Publishes and joins refused while Redis was unreachable (or its queue was full).",
                self.unavailable.load(Relaxed),
            ),
            (
                "herald_broker_malformed_total",
                "counter",
                "Messages from Redis that did not parse.",
                self.malformed.load(Relaxed),
            ),
            (
                "herald_broker_presence_events_total",
                "counter",
                "Presence join/leave events of this node's subscribers placed in Redis.",
                self.events.load(Relaxed),
            ),
            (
                "herald_broker_presence_events_dropped_total",
                "counter",
                "Presence join/leave events not placed in Redis or heard out of place (not delivered).",
                self.events_dropped.load(Relaxed),
            ),
            (
                "herald_broker_pattern_topics_refused_total",
                "counter",
                "Topics matching a pattern held here not followed: the node already follows its maximum of topics.",
                self.pattern_topics_refused.load(Relaxed),
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

/// What the bridges are sent carries its topic, so it goes to the bridge owning the topic.
pub trait ForTopic {
    fn topic(&self) -> &str;
}

impl ForTopic for PublishReq {
    fn topic(&self) -> &str {
        &self.topic
    }
}

impl ForTopic for SubReq {
    fn topic(&self) -> &str {
        match self {
            SubReq::Interest { topic, .. } => topic,
            SubReq::Join(request) => &request.topic,
            SubReq::Event { topic, .. } => topic,
            // Not routed by topic: sent to every listener.
            SubReq::PatternJoin(_) | SubReq::PatternLeave(_) => "",
        }
    }
}

/// Which bridge owns a topic: [`shard::shard_of`] over the instances' names (one bridge:
/// always 0). Cloned into every worker; computing it takes no lock.
#[derive(Debug, Clone)]
pub struct Route {
    names: Arc<[String]>,
}

impl Route {
    /// A route over instances named `names` (see [`shard::instance_name`]).
    pub fn new(names: Vec<String>) -> Route {
        Route {
            names: names.into(),
        }
    }

    /// The bridge `topic` belongs to. Other cluster features route per topic through this.
    pub fn shard_of(&self, topic: &str) -> usize {
        match self.names.len() {
            0 | 1 => 0,
            _ => shard::shard_of(topic, &self.names),
        }
    }
}

/// One queue per bridge; a message goes to the bridge owning its topic. Same call as a
/// single `Sender`, so the workers do not know how many Redis there are. Bounded, and
/// workers only `try_send`: a worker never waits for a bridge.
#[derive(Debug)]
pub struct ToShards<T> {
    route: Route,
    queues: Vec<Sender<T>>,
    /// Each queue's listener's bell (`alarm`), rung after every request queued; empty
    /// where the receiving thread waits on its queue itself (the publishers).
    bells: Vec<alarm::Bell>,
}

impl<T> Clone for ToShards<T> {
    fn clone(&self) -> Self {
        ToShards {
            route: self.route.clone(),
            queues: self.queues.clone(),
            bells: self.bells.clone(),
        }
    }
}

impl<T: ForTopic> ToShards<T> {
    /// The bridge (queue) `topic` goes to.
    fn lane(&self, topic: &str) -> usize {
        self.route.shard_of(topic).min(self.queues.len() - 1)
    }

    /// Like [`Sender::try_send`], to the owning bridge.
    pub fn try_send(&self, msg: T) -> Result<(), TrySendError<T>> {
        let lane = self.lane(msg.topic());
        self.try_send_to(lane, msg)
    }

    /// How many bridges there are (one per Redis instance; one for a Redis Cluster).
    pub fn len(&self) -> usize {
        self.queues.len()
    }

    /// Whether there is no bridge (never: a link has at least one).
    pub fn is_empty(&self) -> bool {
        self.queues.is_empty()
    }

    /// Like [`Sender::try_send`], to bridge `lane` (`0..len()`), for a request about every
    /// topic (a pattern) that each bridge must get.
    pub fn try_send_to(&self, lane: usize, msg: T) -> Result<(), TrySendError<T>> {
        let lane = lane.min(self.queues.len() - 1);
        self.queues[lane].try_send(msg)?;
        if let Some(bell) = self.bells.get(lane) {
            bell.ring();
        }
        Ok(())
    }
}

/// A worker's handle on the bridges.
#[derive(Debug, Clone)]
pub struct ClusterLink {
    pub publish: ToShards<PublishReq>,
    pub listen: ToShards<SubReq>,
    pub stats: Arc<BrokerStats>,
    /// Which bridge owns a topic.
    pub route: Route,
    /// The cluster's nodes for the dashboard (filled by [`roster::start`] with `--dashboard`).
    pub roster: Arc<roster::Roster>,
    /// Reports and queries for the `herald-presence` thread (bounded: `presence::QUEUE`;
    /// workers only `try_send`).
    pub presence: Sender<presence::PresenceReq>,
}

/// Cluster settings taken from the command line.
#[derive(Debug, Clone)]
pub struct BrokerConfig {
    /// `--broker`: `redis://HOST:PORT[/DB]`, a comma-separated list of them, or
    /// `redis+cluster://HOST:PORT,HOST:PORT` (see `shard.rs`).
    pub url: String,
    /// Messages kept per topic in Redis (`--broker-history`).
    pub history: usize,
    /// This node's id (differs per process start): part of epochs it creates and of the
    /// origin it stamps on its messages.
    pub node: u32,
    /// `--presence-max-members`: the longest member list a node writes to Redis per topic.
    pub presence_cap: usize,
}

/// The broker URL for logs: credentials (`redis://user:password@…`) are never printed.
pub fn redacted(url: &str) -> String {
    if url.contains(',') && !url.starts_with("redis+cluster://") {
        // A list of instances: each URL on its own.
        return url.split(',').map(redacted).collect::<Vec<_>>().join(",");
    }
    match (url.split_once("://"), url.rfind('@')) {
        (Some((scheme, _)), Some(at)) => format!("{scheme}://***@{}", &url[at + 1..]),
        _ => url.to_owned(),
    }
}

/// Start the bridge threads (two per Redis instance, two for a Redis Cluster); `workers`
/// are the links to every worker's inbox.
pub fn start(config: BrokerConfig, workers: Vec<PeerLink>) -> std::io::Result<ClusterLink> {
    let broker = shard::Broker::parse(&config.url)
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
    let bridges: Vec<(wire::Layout, String)> = match &broker {
        shard::Broker::Instances(urls) => urls
            .iter()
            .map(|u| (wire::Layout::One(u.clone()), redacted(u)))
            .collect(),
        shard::Broker::Cluster(seeds) => {
            vec![(wire::Layout::Cluster(seeds.clone()), redacted(&config.url))]
        }
    };
    let route = match &broker {
        shard::Broker::Instances(urls) => {
            Route::new(urls.iter().map(|u| shard::instance_name(u)).collect())
        }
        shard::Broker::Cluster(_) => Route::new(Vec::new()),
    };
    let stats = Arc::new(BrokerStats::new(bridges.len()));
    let raw_url = config.url.clone();
    let config = BrokerConfig {
        url: redacted(&config.url),
        ..config
    };
    let links = || {
        workers
            .iter()
            .map(|l| PeerLink {
                inbox: l.inbox.clone(),
                waker: l.waker.clone(),
            })
            .collect::<Vec<_>>()
    };
    let mut publish = Vec::with_capacity(bridges.len());
    let mut listen = Vec::with_capacity(bridges.len());
    let mut bells = Vec::with_capacity(bridges.len());
    for (shard, (layout, url)) in bridges.into_iter().enumerate() {
        let (to_publisher, publish_rx): (Sender<PublishReq>, Receiver<PublishReq>) =
            crossbeam_channel::bounded(PUBLISH_QUEUE);
        // Bounded like every queue: a join that finds it full is refused as unavailable, an
        // interest change waits in its owner worker's backlog (`interest.rs`), never lost.
        let (to_listener, listen_rx) = crossbeam_channel::bounded(LISTEN_QUEUE);
        let publisher =
            bridge::Publisher::new(layout.clone(), &config, links(), stats.clone(), shard);
        std::thread::Builder::new()
            .name(format!("herald-broker-pub{shard}"))
            .spawn(move || publisher.run(publish_rx))?;
        // Without an alarm (no epoll instance to be had) the listener waits as it did
        // before: timed reads, requests served between them.
        let (alarm, bell) = match alarm::alarm() {
            Ok((alarm, bell)) => (Some(alarm), Some(bell)),
            Err(e) => {
                log::warn!("broker: no alarm for the listener ({e}); joins wait up to 5 ms");
                (None, None)
            }
        };
        let listener =
            bridge::Listener::new(layout, url, &config, links(), stats.clone(), shard, alarm);
        bells.extend(bell);
        std::thread::Builder::new()
            .name(format!("herald-broker-sub{shard}"))
            .spawn(move || listener.run(listen_rx))?;
        publish.push(to_publisher);
        listen.push(to_listener);
    }
    let (to_presence, presence_rx) = crossbeam_channel::bounded(presence::QUEUE);
    presence::start(
        &raw_url,
        config.node,
        links(),
        presence_rx,
        config.presence_cap,
    )?;
    Ok(ClusterLink {
        presence: to_presence,
        publish: ToShards {
            route: route.clone(),
            queues: publish,
            bells: Vec::new(),
        },
        listen: ToShards {
            route: route.clone(),
            queues: listen,
            bells,
        },
        stats,
        route,
        roster: Arc::default(),
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
        assert_eq!(
            redacted("redis://:a@h:1,redis://k:2"),
            "redis://***@h:1,redis://k:2"
        );
        assert_eq!(
            redacted("redis+cluster://:pw@h:1,k:2"),
            "redis+cluster://***@h:1,k:2"
        );
    }
}
