//! The listening bridge thread: hears the topics this node's subscribers want, in their
//! numbering order, and answers joins consistently with that stream (see the parent module).

mod patterns;

pub use patterns::MAX_PATTERN_TOPICS;

use std::collections::{HashMap, HashSet};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, TryRecvError};
use redis::{RedisError, Value};

use super::{Backoff, EpochNames, Outbound, BACKOFF_MIN, FOREIGN};
use crate::cluster::alarm::Alarm;
use crate::cluster::script::{self, Keys};
use crate::cluster::wire::{Layout, Served, Wire};
use crate::cluster::{BrokerConfig, BrokerStats, ShardHealth, SubReq};
use crate::feed::bus::{BusMsg, JoinError, JoinRequest, Origin, PeerLink, Publication};
use crate::feed::history::{self, Kept, Need, Unrecoverable};
use crate::feed::owned::{owner_of, Joined};
use crate::feed::patterns::PatternIndex;
use crate::proto::pattern::Pattern;
use crate::proto::presence::{self, Member};
use crate::proto::topic::{Start, TopicName};

/// How long the listener waits on the pub/sub sockets before serving its request queue
/// (interest changes and joins wait at most this long; a queued request rings the
/// listener's alarm and ends the wait at once).
const POLL: Duration = Duration::from_millis(5);

/// Presence events placed in Redis in one pipeline at most.
const EVENT_BATCH: usize = 512;

/// How long a join waits for the channel to bring what Redis has already numbered before it
/// takes the rest from the log (where presence events between them are not kept).
const CHANNEL_LAG: Duration = Duration::from_secs(2);

/// Messages handled from the pub/sub socket before the request queue is looked at again.
const HEARD_PER_ROUND: usize = 1024;

/// Where this node stands on a topic: the epoch and the last number it has forwarded.
#[derive(Debug, Clone)]
struct Position {
    epoch: String,
    last: u64,
    /// How many presence events Redis had placed on the topic at the last catch-up (a
    /// joiner answered now starts after them).
    events: u64,
    /// The epoch this node left behind at its last catch-up: messages of it still on their
    /// way are stale, not a new life.
    retired: Option<String>,
}

/// Why a listening session ended.
enum Stop {
    /// Every worker has gone.
    Shutdown,
    /// Redis failed or answered nonsense: reconnect.
    Fault(String),
}

impl From<RedisError> for Stop {
    fn from(e: RedisError) -> Self {
        Stop::Fault(e.to_string())
    }
}

/// The listening bridge thread.
pub struct Listener {
    layout: Layout,
    /// Which shard's health this bridge reports (an index into `stats.shards`).
    shard: usize,
    position: redis::Script,
    /// The presence event script for this layout (`EVENT`, or `SEVENT` on a Redis
    /// Cluster) and its SHA1.
    event: (&'static str, String),
    url: String,
    node: u32,
    history: usize,
    workers: usize,
    out: Outbound,
    stats: Arc<BrokerStats>,
    epochs: EpochNames,
    /// Topics this node follows (SUBSCRIBEd): those it wants, and those a pattern held
    /// here matches. The position is unknown (`None`) until Redis has been asked (a topic
    /// that gained interest while Redis was down).
    topics: HashMap<TopicName, Option<Position>>,
    /// The followed topics the node does not want for their own sake, kept only because a
    /// pattern held here matches them: the owner said it has no interest (`Interest`
    /// off) after they were handed to it. A subset of `topics`.
    pattern_only: HashSet<TopicName>,
    /// Which process served which slots in the last session (Redis Cluster).
    served: Served,
    /// Patterns this node's subscribers hold (`patterns.rs`).
    patterns: HashMap<Pattern, patterns::Held>,
    /// The scanned ones, to check a topic against them in one walk.
    pattern_index: PatternIndex<()>,
    scratch: Vec<()>,
    /// When topics refused at `patterns::MAX_PATTERN_TOPICS` were last logged.
    refused_logged: Option<Instant>,
    /// Ends a wait on the pub/sub sockets as soon as a request is queued (`None`: the
    /// waits are plain timed reads, as before; only if the alarm could not be made).
    alarm: Option<Alarm>,
}

impl Listener {
    pub(in crate::cluster) fn new(
        layout: Layout,
        url: String,
        config: &BrokerConfig,
        links: Vec<PeerLink>,
        stats: Arc<BrokerStats>,
        shard: usize,
        alarm: Option<Alarm>,
    ) -> Self {
        let event = match layout {
            Layout::One(_) => script::EVENT,
            Layout::Cluster(_) => script::SEVENT,
        };
        Listener {
            layout,
            shard,
            position: redis::Script::new(script::POSITION),
            event: (event, redis::Script::new(event).get_hash().to_owned()),
            url,
            node: config.node,
            history: config.history,
            workers: links.len(),
            out: Outbound::new(links),
            stats,
            epochs: EpochNames::new(config.node, 's'),
            topics: HashMap::new(),
            pattern_only: HashSet::new(),
            served: Served::default(),
            patterns: HashMap::new(),
            pattern_index: PatternIndex::new(crate::feed::owned::MAX_PATTERNS_PER_OWNER),
            scratch: Vec::new(),
            refused_logged: None,
            alarm,
        }
    }

    /// Listen until every worker has gone, reconnecting after each fault.
    pub fn run(mut self, requests: Receiver<SubReq>) {
        let mut backoff = Backoff(BACKOFF_MIN);
        let mut down_since = Instant::now();
        let mut ever_up = false;
        loop {
            match self.session(&requests, &mut backoff, &mut ever_up, down_since) {
                Stop::Shutdown => return,
                Stop::Fault(why) => {
                    if self.health().up.swap(false, Relaxed) {
                        down_since = Instant::now();
                        BrokerStats::count(&self.stats.outages, 1);
                        println!(
                            "broker: down ({why}); serving local connections, reconnecting to {}",
                            self.url
                        );
                    } else {
                        log::warn!("broker: cannot reach {}: {why}", self.url);
                    }
                }
            }
            if !self.wait_while_down(&requests, backoff.next()) {
                return;
            }
        }
    }

    /// Between attempts: keep track of interest, and refuse joins explicitly. Returns false
    /// at shutdown.
    fn wait_while_down(&mut self, requests: &Receiver<SubReq>, wait: Duration) -> bool {
        let until = Instant::now() + wait;
        loop {
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return true;
            }
            match requests.recv_timeout(left) {
                Ok(SubReq::Interest { topic, active }) => {
                    if active {
                        self.pattern_only.remove(&topic);
                        self.topics.entry(topic).or_insert(None);
                    } else {
                        self.lose_interest(&topic);
                    }
                }
                Ok(SubReq::Join(request)) => {
                    BrokerStats::count(&self.stats.unavailable, 1);
                    self.answer(request, Err(JoinError::Unavailable));
                }
                Ok(SubReq::Event { .. }) => BrokerStats::count(&self.stats.events_dropped, 1),
                Ok(SubReq::PatternJoin(request)) => self.refuse_pattern(request),
                Ok(SubReq::PatternLeave(pattern)) => {
                    // Nothing to say to Redis while it is away.
                    let _ = self.leave_pattern(&pattern, None);
                }
                Err(RecvTimeoutError::Timeout) => return true,
                Err(RecvTimeoutError::Disconnected) => return false,
            }
            self.out.wake();
        }
    }

    fn health(&self) -> &ShardHealth {
        &self.stats.shards[self.shard]
    }

    /// One connection's life: connect, resubscribe, catch up, then serve until a fault.
    fn session(
        &mut self,
        requests: &Receiver<SubReq>,
        backoff: &mut Backoff,
        ever_up: &mut bool,
        down_since: Instant,
    ) -> Stop {
        let mut wire = match Wire::open(self.layout.clone()) {
            Ok(w) => w,
            Err(e) => return e.into(),
        };
        let served = match wire.served() {
            Ok(s) => s,
            Err(e) => return e.into(),
        };
        // A shard that failed over may have lost its last messages: its topics start a
        // new life. That is decided in Redis, by the first script run on the new master
        // (`script::settle_home`), before it numbers anything; the catch-up below then
        // finds the new epoch and tells the subscribers. Here it is only reported.
        let mut checked = HashMap::new();
        let lost = (self.topics.iter())
            .filter(|(topic, position)| {
                position.is_some() && wire.failed_over(&self.served, &served, topic, &mut checked)
            })
            .count();
        if lost > 0 {
            println!(
                "broker: a Redis Cluster shard failed over; {lost} topic(s) this node serves start a new epoch"
            );
        }
        self.served = served;
        match self.serve(&mut wire, requests, backoff, ever_up, down_since) {
            Ok(never) => match never {},
            Err(stop) => stop,
        }
    }

    fn serve(
        &mut self,
        wire: &mut Wire,
        requests: &Receiver<SubReq>,
        backoff: &mut Backoff,
        ever_up: &mut bool,
        down_since: Instant,
    ) -> Result<std::convert::Infallible, Stop> {
        // One channel per subscription request: each returns on its own confirmation, so
        // every subscription is in place before its topic's position is read below.
        let topics: Vec<TopicName> = self.topics.keys().cloned().collect();
        for topic in &topics {
            wire.subscribe(topic)?;
        }
        self.rescan(wire)?;
        let (gaps, recovered) = (
            self.stats.gaps.load(Relaxed),
            self.stats.recovered.load(Relaxed),
        );
        for topic in &topics {
            self.catch_up(wire, topic)?;
        }
        self.out.wake();
        let health = &self.stats.shards[self.shard];
        health.topics.store(self.topics.len() as u64, Relaxed);
        health.generation.fetch_add(1, Relaxed);
        health.up.store(true, Relaxed);
        backoff.reset();
        if *ever_up {
            println!(
                "broker: up again after {} ms ({}); {} topic(s) resubscribed, {} message(s) recovered from the logs, {} topic(s) with a gap",
                down_since.elapsed().as_millis(),
                self.url,
                topics.len(),
                self.stats.recovered.load(Relaxed) - recovered,
                self.stats.gaps.load(Relaxed) - gaps,
            );
        } else {
            println!("broker: up ({})", self.url);
            *ever_up = true;
        }
        let mut events = Vec::new();
        loop {
            loop {
                // Events are placed in pipelined batches; anything else waits for the ones
                // before it (a subscriber's own join is placed before its start is read).
                match requests.try_recv() {
                    Ok(SubReq::Event {
                        topic,
                        joined,
                        member,
                    }) => {
                        events.push((topic, joined, member));
                        if events.len() >= EVENT_BATCH {
                            self.place_events(wire, &mut events)?;
                        }
                    }
                    Ok(request) => {
                        self.place_events(wire, &mut events)?;
                        self.on_request(request, wire)?;
                    }
                    Err(TryRecvError::Empty) => break,
                    Err(TryRecvError::Disconnected) => return Err(Stop::Shutdown),
                }
            }
            self.place_events(wire, &mut events)?;
            self.out.wake();
            for _ in 0..HEARD_PER_ROUND {
                match wire.next(POLL, self.alarm.as_mut())? {
                    Some((channel, payload)) => {
                        self.on_heard(&channel, &payload, wire)?;
                        self.out.wake();
                    }
                    None => break,
                }
            }
        }
    }

    fn on_request(&mut self, request: SubReq, wire: &mut Wire) -> Result<(), Stop> {
        match request {
            SubReq::Interest {
                topic,
                active: true,
            } => self.listen_to(&topic, wire),
            SubReq::Interest {
                topic,
                active: false,
            } => {
                if self.lose_interest(&topic) {
                    wire.unsubscribe(&topic)?;
                    self.count_topics();
                }
                Ok(())
            }
            SubReq::PatternJoin(request) => self.join_pattern(request, wire),
            SubReq::PatternLeave(pattern) => self.leave_pattern(&pattern, Some(wire)),
            SubReq::Join(request) => {
                let answered = self
                    .listen_to(&request.topic, wire)
                    .and_then(|()| self.catch_up_live(wire, &request.topic))
                    .and_then(|()| self.join_answer(wire, &request.topic, &request.start));
                match answered {
                    Ok(result) => {
                        self.answer(request, result);
                        Ok(())
                    }
                    Err(stop) => {
                        // Never leave a joiner waiting: it is told to retry.
                        BrokerStats::count(&self.stats.unavailable, 1);
                        self.answer(request, Err(JoinError::Unavailable));
                        Err(stop)
                    }
                }
            }
            SubReq::Event {
                topic,
                joined,
                member,
            } => self.place_events(wire, &mut vec![(topic, joined, member)]),
        }
    }

    /// Have Redis place presence events among their topics' messages (`script::EVENT`, one
    /// pipeline); every listening node hears each on its topic's channel, in this order per
    /// topic. A failed call loses its event (counted), and the connection is started over.
    fn place_events(
        &mut self,
        wire: &mut Wire,
        events: &mut Vec<(TopicName, bool, Member)>,
    ) -> Result<(), Stop> {
        if events.is_empty() {
            return Ok(());
        }
        let fresh = self.epochs.fresh();
        let (source, sha) = (self.event.0, &self.event.1);
        let calls: Vec<(&str, redis::Cmd)> = events
            .iter()
            .map(|(topic, joined, member)| {
                let keys = Keys::of(topic);
                let mut cmd = keys.evalsha_all(sha);
                cmd.arg(&fresh)
                    .arg(script::event_body(*joined, member))
                    .arg(&keys.channel);
                (&**topic, cmd)
            })
            .collect();
        let results = wire.pipeline(&calls, source);
        drop(calls);
        events.clear();
        let mut failed = None;
        for result in results {
            match result {
                Ok(Value::Int(n)) if n > 0 => BrokerStats::count(&self.stats.events, 1),
                Ok(other) => {
                    BrokerStats::count(&self.stats.events_dropped, 1);
                    failed.get_or_insert(format!("unexpected event answer {other:?}"));
                }
                Err(e) => {
                    BrokerStats::count(&self.stats.events_dropped, 1);
                    failed.get_or_insert(e.to_string());
                }
            }
        }
        match failed {
            Some(why) => Err(Stop::Fault(why)),
            None => Ok(()),
        }
    }

    /// SUBSCRIBE to `topic` (if not yet) and learn where it stands. The subscription is
    /// confirmed before the position is read, so nothing numbered after it can be missed.
    fn listen_to(&mut self, topic: &TopicName, wire: &mut Wire) -> Result<(), Stop> {
        self.pattern_only.remove(topic);
        if self.topics.contains_key(topic) {
            return Ok(());
        }
        wire.subscribe(topic)?;
        self.topics.insert(topic.clone(), None);
        self.count_topics();
        self.catch_up(wire, topic)
    }

    /// The node no longer wants `topic` for its own sake (`Interest` off): it stays
    /// followed while a pattern held here matches it. True if it was let go (the caller
    /// unsubscribes).
    fn lose_interest(&mut self, topic: &TopicName) -> bool {
        if !self.topics.contains_key(topic) {
            return false;
        }
        if self.pattern_wants(topic) {
            self.pattern_only.insert(topic.clone());
            return false;
        }
        self.pattern_only.remove(topic);
        self.topics.remove(topic);
        true
    }

    /// Report how many topics this bridge follows.
    fn count_topics(&self) {
        self.health()
            .topics
            .store(self.topics.len() as u64, Relaxed);
    }

    /// Bring this node's position on `topic` up to Redis's current number: forward what was
    /// missed from the log, or tell the topic's subscribers that there is a hole.
    fn catch_up(&mut self, wire: &mut Wire, topic: &TopicName) -> Result<(), Stop> {
        let Some(known) = self.topics.get(topic).cloned() else {
            return Ok(());
        };
        let mut retire = String::new();
        let (epoch, current, events) = loop {
            let (epoch, current, events) = self.position_of(wire, topic, &retire)?;
            match &known {
                // Redis went back in time (an older copy of the data): its next numbers
                // would repeat ones already delivered, so this epoch ends here.
                Some(p) if p.epoch == epoch && current < p.last && retire.is_empty() => {
                    retire = epoch;
                }
                _ => break (epoch, current, events),
            }
        };
        let retired = match &known {
            Some(p) if p.epoch != epoch => Some(p.epoch.clone()),
            Some(p) => p.retired.clone(),
            None => None,
        };
        match known {
            Some(p) if p.epoch != epoch || current < p.last => {
                let refusal = Unrecoverable::EpochChanged {
                    epoch: p.epoch,
                    current: epoch.clone(),
                };
                self.gap(topic, refusal);
            }
            Some(p) if current > p.last => {
                self.fill(wire, topic, p.last + 1, current)?;
            }
            _ => {}
        }
        self.topics.insert(
            topic.clone(),
            Some(Position {
                epoch,
                last: current,
                events,
                retired,
            }),
        );
        Ok(())
    }

    /// Redis's `{epoch, current number, event count}` of `topic` (`script::POSITION`,
    /// retiring epoch `retire` if not empty, starting a life if there is none).
    fn position_of(
        &mut self,
        wire: &mut Wire,
        topic: &TopicName,
        retire: &str,
    ) -> Result<(String, u64, u64), Stop> {
        let keys = Keys::of(topic);
        let fresh = self.epochs.fresh();
        let position = &self.position;
        let value = wire.script_command(topic, Some(script::POSITION), &mut |c, tail| {
            let mut call = position.key(&keys.seq);
            call.key(&keys.log)
                .key(&keys.epoch)
                .key(&keys.home)
                .key(&keys.events)
                .arg(&fresh)
                .arg(retire);
            for arg in tail {
                call.arg(*arg);
            }
            call.invoke(c)
        })?;
        script::parse_position(&value)
            .ok_or_else(|| Stop::Fault(format!("unexpected position answer {value:?}")))
    }

    /// [`Listener::position_of`] for many topics (none retired), pipelined: each node's
    /// share in one round trip. In `topics` order.
    fn positions_of(
        &mut self,
        wire: &mut Wire,
        topics: &[TopicName],
    ) -> Result<Vec<(String, u64, u64)>, Stop> {
        let fresh = self.epochs.fresh();
        let sha = self.position.get_hash().to_owned();
        let calls: Vec<(&str, redis::Cmd)> = (topics.iter())
            .map(|topic| {
                let mut cmd = Keys::of(topic).evalsha_all(&sha);
                cmd.arg(&fresh).arg("");
                (&**topic, cmd)
            })
            .collect();
        (wire.pipeline(&calls, script::POSITION).into_iter())
            .map(|answer| {
                let value = answer?;
                script::parse_position(&value)
                    .ok_or_else(|| Stop::Fault(format!("unexpected position answer {value:?}")))
            })
            .collect()
    }

    /// [`Listener::catch_up`] for a join on a topic this node already follows: messages
    /// Redis numbered but this node has not heard yet are taken from the channel, not the
    /// log, for up to [`CHANNEL_LAG`], so presence events between them (which the log does
    /// not keep) are forwarded in their place too. Past it, or after anything unusual (an
    /// epoch change, a failover), the ordinary catch-up.
    fn catch_up_live(&mut self, wire: &mut Wire, topic: &TopicName) -> Result<(), Stop> {
        let known = match self.topics.get(topic) {
            Some(Some(p)) => p.clone(),
            _ => return self.catch_up(wire, topic),
        };
        let (epoch, current, events) = self.position_of(wire, topic, "")?;
        if epoch != known.epoch || current < known.last {
            return self.catch_up(wire, topic);
        }
        let deadline = Instant::now() + CHANNEL_LAG;
        while Instant::now() < deadline {
            match self.topics.get(topic) {
                Some(Some(p)) if p.epoch == epoch && p.last < current => {}
                _ => break,
            }
            if let Some((channel, payload)) = wire.next(POLL, self.alarm.as_mut())? {
                self.on_heard(&channel, &payload, wire)?;
                self.out.wake();
            }
        }
        let last = match self.topics.get(topic) {
            Some(Some(p)) if p.epoch == epoch => p.last,
            _ => return self.catch_up(wire, topic),
        };
        if last < current {
            self.fill(wire, topic, last + 1, current)?;
        }
        if let Some(Some(p)) = self.topics.get_mut(topic) {
            p.events = events;
        }
        Ok(())
    }

    /// Forward messages `from..=to` of `topic` from its log, or, if the log no longer holds
    /// all of them, report the gap (recovery is all or nothing).
    fn fill(&mut self, wire: &mut Wire, topic: &TopicName, from: u64, to: u64) -> Result<(), Stop> {
        let entries = self.range(wire, topic, from, to)?;
        let seqs: Vec<u64> = entries.iter().map(|e| e.0).collect();
        match history::complete(&seqs, from, to) {
            Ok(()) => {
                BrokerStats::count(&self.stats.recovered, entries.len() as u64);
                for (seq, frame) in entries {
                    self.forward(topic, seq, frame, FOREIGN);
                }
            }
            Err(gap) => self.gap(topic, gap),
        }
        if let Some(Some(p)) = self.topics.get_mut(topic) {
            p.last = p.last.max(to);
        }
        Ok(())
    }

    /// Logged messages `from..=to` (fewer if the log no longer has them all).
    fn range(
        &mut self,
        wire: &mut Wire,
        topic: &str,
        from: u64,
        to: u64,
    ) -> Result<Vec<(u64, bytes::Bytes)>, Stop> {
        let cmd = redis::cmd("XRANGE")
            .arg(Keys::of(topic).log)
            .arg(format!("0-{from}"))
            .arg(format!("0-{to}"))
            .clone();
        let value = wire.command(topic, None, &mut |c| cmd.query(c))?;
        script::parse_entries(&value)
            .ok_or_else(|| Stop::Fault(format!("unreadable log of topic {topic}")))
    }

    /// A message heard on a channel: forward it in order, filling a hole first.
    fn on_heard(&mut self, channel: &str, payload: &[u8], wire: &mut Wire) -> Result<(), Stop> {
        if channel == script::NOTICES {
            return self.on_notice(payload, wire);
        }
        let Some(topic) = script::topic_of_channel(channel) else {
            BrokerStats::count(&self.stats.malformed, 1);
            return Ok(());
        };
        if script::is_event(payload) {
            let Some(Some(known)) = self.topics.get(&topic).cloned() else {
                return Ok(());
            };
            return self.on_event(&topic, &known, payload, wire);
        }
        let Some(heard) = script::parse_heard(payload, self.node) else {
            BrokerStats::count(&self.stats.malformed, 1);
            return Ok(());
        };
        let known = match self.topics.get(&topic).cloned() {
            Some(Some(known)) => known,
            Some(None) => return Ok(()), // not yet positioned
            None => return Ok(()),       // unsubscribed meanwhile
        };
        if known.retired.as_ref() == Some(&heard.epoch) {
            return Ok(()); // sent before this node's catch-up moved on to a new epoch
        } else if heard.epoch != known.epoch {
            // Redis lost the topic and a new life began without our connection breaking.
            let refusal = Unrecoverable::EpochChanged {
                epoch: known.epoch.clone(),
                current: heard.epoch.clone(),
            };
            self.gap(&topic, refusal);
            self.topics.insert(
                topic.clone(),
                Some(Position {
                    epoch: heard.epoch,
                    last: heard.seq.saturating_sub(1),
                    events: known.events,
                    retired: Some(known.epoch),
                }),
            );
        } else if heard.seq <= known.last {
            return Ok(()); // already forwarded (from the log, after a hole)
        } else if heard.seq > known.last + 1 {
            self.fill(wire, &topic, known.last + 1, heard.seq - 1)?;
        }
        self.forward(
            &topic,
            heard.seq,
            heard.frame,
            heard.origin.unwrap_or(FOREIGN),
        );
        if let Some(Some(p)) = self.topics.get_mut(&topic) {
            p.last = heard.seq;
        }
        Ok(())
    }

    /// A presence event heard on `topic`'s channel: hand it to the topic's owner right after
    /// message `after`, which this node has forwarded (or forwards now from the log).
    /// An event that can no longer be put in its place is dropped and counted: one of
    /// another life of the topic, or one heard after this node took later messages from the
    /// log (a reconnect, or a join's catch-up while the channel lagged).
    fn on_event(
        &mut self,
        topic: &TopicName,
        known: &Position,
        payload: &[u8],
        wire: &mut Wire,
    ) -> Result<(), Stop> {
        let Some(event) = script::parse_event(payload) else {
            BrokerStats::count(&self.stats.malformed, 1);
            return Ok(());
        };
        if event.epoch != known.epoch || event.after < known.last {
            BrokerStats::count(&self.stats.events_dropped, 1);
            return Ok(());
        }
        if event.after > known.last {
            // Messages before the event were missed live: they go first, from the log.
            self.fill(wire, topic, known.last + 1, event.after)?;
        }
        let frame = presence::event(event.joined, topic, event.after, &event.member);
        let owner = owner_of(topic, self.workers);
        let event = BusMsg::RemoteEvent {
            topic: topic.clone(),
            frame,
            number: event.number,
        };
        self.out.send(owner, event);
        Ok(())
    }

    /// Hand a numbered message to the topic's owner worker on this node.
    fn forward(&mut self, topic: &TopicName, seq: u64, frame: bytes::Bytes, origin: Origin) {
        BrokerStats::count(&self.stats.heard, 1);
        let owner = owner_of(topic, self.workers);
        let publication = Publication {
            topic: topic.clone(),
            frame,
            received: Instant::now(),
            origin,
            ack: None,
        };
        self.out.send(owner, BusMsg::Remote { seq, publication });
    }

    /// Tell the topic's subscribers on this node that messages are missing for good.
    fn gap(&mut self, topic: &TopicName, refusal: Unrecoverable) {
        BrokerStats::count(&self.stats.gaps, 1);
        println!("broker: gap on topic {topic}: {refusal}");
        let owner = owner_of(topic, self.workers);
        let topic = topic.clone();
        self.out.send(
            owner,
            BusMsg::Gap {
                topic,
                refusal,
                forwarded: false,
            },
        );
    }

    /// Where a joiner's stream starts and what it must be sent first. Called right after
    /// `catch_up`, so the position is Redis's current one.
    fn join_answer(
        &mut self,
        wire: &mut Wire,
        topic: &TopicName,
        start: &Start,
    ) -> Result<Result<Joined, JoinError>, Stop> {
        let Some(Some(position)) = self.topics.get(topic).cloned() else {
            return Ok(Err(JoinError::Unavailable));
        };
        let Position {
            epoch,
            last,
            events,
            ..
        } = position;
        let need = match history::decide(start, &epoch, last) {
            Ok(need) => need,
            Err(why) => return Ok(Err(why.into())),
        };
        let entries = match need {
            Need::Nothing => Vec::new(),
            Need::Last(n) => {
                let n = n.min(self.history as u64);
                if n == 0 || last == 0 {
                    Vec::new()
                } else {
                    let cmd = redis::cmd("XREVRANGE")
                        .arg(Keys::of(topic).log)
                        .arg(format!("0-{last}"))
                        .arg("-")
                        .arg("COUNT")
                        .arg(n)
                        .clone();
                    let value = wire.command(topic, None, &mut |c| cmd.query(c))?;
                    let mut entries = script::parse_entries(&value)
                        .ok_or_else(|| Stop::Fault(format!("unreadable log of topic {topic}")))?;
                    entries.reverse();
                    entries
                }
            }
            Need::Range { from, to } => {
                let entries = self.range(wire, topic, from, to)?;
                let seqs: Vec<u64> = entries.iter().map(|e| e.0).collect();
                if let Err(gap) = history::complete(&seqs, from, to) {
                    return Ok(Err(gap.into()));
                }
                entries
            }
        };
        let at = Instant::now();
        let replay = entries
            .into_iter()
            .map(|(seq, frame)| Kept { seq, frame, at })
            .collect();
        Ok(Ok(Joined {
            epoch,
            last_seq: last,
            events,
            replay,
        }))
    }

    /// Send a join's answer straight to the subscriber's worker. Live messages reach that
    /// worker through the owner, sent after this answer, so they arrive after it.
    fn answer(&mut self, request: JoinRequest, result: Result<Joined, JoinError>) {
        let worker = request.worker as usize;
        self.out.send(worker, BusMsg::Joined { request, result });
    }
}
