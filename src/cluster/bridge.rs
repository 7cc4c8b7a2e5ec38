//! The two bridge threads between a node's workers and Redis (blocking `redis` API; the
//! worker loops never wait for Redis).
//!
//! - [`Publisher`] numbers messages: it takes every publish waiting in its queue, sends them
//!   as one pipeline of `EVALSHA` calls (the `script::PUBLISH` script) and answers each
//!   waiting publisher with its number (or "unavailable": never a pretend success).
//! - [`Listener`] holds the pub/sub connection and a command connection. It SUBSCRIBEs to
//!   the topics this node has subscribers for, forwards what it hears to each topic's owner
//!   worker in numbering order, answers `herald.v1` joins consistently with that stream,
//!   and after a fault reconnects with capped exponential backoff, resubscribes and fills any
//!   hole from the topic's log, or says explicitly that it cannot.
//!
//! Why joins are exact across nodes: the listener first brings its own position on the topic
//! up to Redis's current number (forwarding whatever it had not heard yet), then answers with
//! that number and the logged messages after the client's `since`. Everything above that
//! number is forwarded later, on the same ordered path (listener → owner → worker), so the
//! joiner's worker lets through exactly the live messages above it (`Subscriber::after`).

use std::collections::HashMap;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, TryRecvError};
use redis::{Connection, PubSub, RedisError, Value};

use super::script::{self, Keys};
use super::{BrokerConfig, BrokerStats, PublishReq, SubReq};
use crate::feed::bus::{BusMsg, JoinError, JoinRequest, Origin, PeerLink, Publication};
use crate::feed::history::{self, Kept, Need, Unrecoverable};
use crate::feed::owned::{owner_of, Joined};
use crate::proto::topic::{Start, TopicName};

/// Connecting, and any single command, may take this long before the connection counts as
/// lost (a hung Redis must not hang the bridge).
const COMMAND_TIMEOUT: Duration = Duration::from_secs(2);

/// How long the listener waits on the pub/sub socket before serving its request queue
/// (interest changes and joins wait at most this long).
const POLL: Duration = Duration::from_millis(5);

/// Reconnect backoff: starts here, doubles per failure, capped.
const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(5);

/// Publishes sent to Redis in one pipeline at most.
const PUBLISH_BATCH: usize = 512;

/// Messages handled from the pub/sub socket before the request queue is looked at again.
const HEARD_PER_ROUND: usize = 1024;

/// The origin of a message another node published (no worker has this index, so
/// `--no-echo` never matches it).
const FOREIGN: Origin = Origin {
    worker: u16::MAX,
    conn: 0,
};

/// Sends to workers' inboxes and wakes each worker that got something, once per round.
/// Blocking sends are fine here: this is a bridge thread, and a worker never waits for it.
struct Outbound {
    links: Vec<PeerLink>,
    to_wake: Vec<bool>,
}

impl Outbound {
    fn new(links: Vec<PeerLink>) -> Self {
        let to_wake = vec![false; links.len()];
        Outbound { links, to_wake }
    }

    fn send(&mut self, worker: usize, msg: BusMsg) {
        if let Some(link) = self.links.get(worker) {
            // An error means the worker has exited (shutdown): nothing to deliver to.
            if link.inbox.send(msg).is_ok() {
                self.to_wake[worker] = true;
            }
        }
    }

    fn wake(&mut self) {
        for (link, wake) in self.links.iter().zip(self.to_wake.iter_mut()) {
            if std::mem::take(wake) {
                let _ = link.waker.wake();
            }
        }
    }
}

/// Capped exponential backoff between reconnect attempts.
struct Backoff(Duration);

impl Backoff {
    fn next(&mut self) -> Duration {
        let wait = self.0;
        self.0 = (self.0 * 2).min(BACKOFF_MAX);
        wait
    }

    fn reset(&mut self) {
        self.0 = BACKOFF_MIN;
    }
}

/// Epoch names for topics this node starts (or restarts) in Redis: unique per node start
/// (`node`), per thread (`tag`) and per use.
struct EpochNames {
    prefix: String,
    next: u64,
}

impl EpochNames {
    fn new(node: u32, tag: char) -> Self {
        EpochNames {
            prefix: format!("{node:08x}.{tag}"),
            next: 1,
        }
    }

    fn fresh(&mut self) -> String {
        self.next += 1;
        format!("{}{}", self.prefix, self.next - 1)
    }
}

fn connect(client: &redis::Client) -> Result<Connection, RedisError> {
    let conn = client.get_connection_with_timeout(COMMAND_TIMEOUT)?;
    conn.set_read_timeout(Some(COMMAND_TIMEOUT))?;
    conn.set_write_timeout(Some(COMMAND_TIMEOUT))?;
    Ok(conn)
}

fn load(conn: &mut Connection, source: &str) -> Result<String, RedisError> {
    redis::cmd("SCRIPT").arg("LOAD").arg(source).query(conn)
}

/// The publishing bridge thread.
pub struct Publisher {
    client: redis::Client,
    node: u32,
    history: usize,
    out: Outbound,
    stats: Arc<BrokerStats>,
    epochs: EpochNames,
}

impl Publisher {
    pub(super) fn new(
        client: redis::Client,
        config: &BrokerConfig,
        links: Vec<PeerLink>,
        stats: Arc<BrokerStats>,
    ) -> Self {
        Publisher {
            client,
            node: config.node,
            history: config.history,
            out: Outbound::new(links),
            stats,
            epochs: EpochNames::new(config.node, 'p'),
        }
    }

    /// Serve publishes until every worker has gone (shutdown).
    pub fn run(mut self, queue: Receiver<PublishReq>) {
        let mut conn: Option<(Connection, String)> = None;
        let mut backoff = Backoff(BACKOFF_MIN);
        let mut retry_at = Instant::now();
        let mut seen_generation = 0;
        let mut batch = Vec::with_capacity(PUBLISH_BATCH);
        while let Ok(first) = queue.recv() {
            batch.push(first);
            while batch.len() < PUBLISH_BATCH {
                match queue.try_recv() {
                    Ok(req) => batch.push(req),
                    Err(_) => break,
                }
            }
            let generation = self.stats.generation.load(Relaxed);
            if generation != seen_generation {
                // The listener (re)connected: Redis is reachable now, so stop backing off,
                // and do not trust a socket from before.
                seen_generation = generation;
                conn = None;
                retry_at = Instant::now();
                backoff.reset();
            }
            if conn.is_none() && Instant::now() >= retry_at {
                match connect(&self.client).and_then(|mut c| {
                    let sha = load(&mut c, script::PUBLISH)?;
                    Ok((c, sha))
                }) {
                    Ok((c, sha)) => {
                        conn = Some((c, sha));
                        backoff.reset();
                    }
                    Err(e) => {
                        retry_at = Instant::now() + backoff.next();
                        log::warn!("broker: publisher cannot connect: {e}");
                    }
                }
            }
            let result = match conn.as_mut() {
                Some((c, sha)) => self.publish_all(c, sha, &batch),
                None => Err(None),
            };
            match result {
                Ok(seqs) => {
                    BrokerStats::count(&self.stats.published, seqs.len() as u64);
                    for (req, seq) in batch.drain(..).zip(seqs) {
                        if let Some(to) = req.ack {
                            let ack = BusMsg::Ack {
                                to,
                                conn: req.origin.conn,
                                seq: Some(seq),
                            };
                            self.out.send(req.origin.worker as usize, ack);
                        }
                    }
                }
                Err(e) => {
                    if let Some(e) = e {
                        log::warn!("broker: publish of {} message(s) failed: {e}", batch.len());
                        conn = None;
                        retry_at = Instant::now() + backoff.next();
                    }
                    BrokerStats::count(&self.stats.unavailable, batch.len() as u64);
                    for req in batch.drain(..) {
                        if let Some(to) = req.ack {
                            let failed = BusMsg::PublishFailed {
                                to,
                                conn: req.origin.conn,
                            };
                            self.out.send(req.origin.worker as usize, failed);
                        }
                    }
                }
            }
            self.out.wake();
        }
    }

    /// One pipeline for the whole batch. A failure fails the whole batch: some of it may
    /// have been published (a publisher told "unavailable" may see its message once it
    /// retries; it is never told "published" for a message that was not).
    fn publish_all(
        &mut self,
        conn: &mut Connection,
        sha: &str,
        batch: &[PublishReq],
    ) -> Result<Vec<u64>, Option<RedisError>> {
        let epoch = self.epochs.fresh();
        let mut pipe = redis::pipe();
        for req in batch {
            let keys = Keys::of(&req.topic);
            pipe.cmd("EVALSHA")
                .arg(sha)
                .arg(3)
                .arg(&keys.seq)
                .arg(&keys.log)
                .arg(&keys.epoch)
                .arg(&epoch)
                .arg(self.history)
                .arg(script::origin_arg(self.node, req.origin))
                .arg(script::body_of(&req.frame))
                .arg(&keys.channel);
        }
        let seqs: Vec<u64> = pipe.query(conn).map_err(Some)?;
        if seqs.len() != batch.len() {
            return Err(None);
        }
        Ok(seqs)
    }
}

/// Where this node stands on a topic: the epoch and the last number it has forwarded.
#[derive(Debug, Clone)]
struct Position {
    epoch: String,
    last: u64,
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
    client: redis::Client,
    url: String,
    node: u32,
    history: usize,
    workers: usize,
    out: Outbound,
    stats: Arc<BrokerStats>,
    epochs: EpochNames,
    /// Topics with subscribers on this node; the position is unknown (`None`) until Redis
    /// has been asked (a topic that gained interest while Redis was down).
    topics: HashMap<TopicName, Option<Position>>,
}

impl Listener {
    pub(super) fn new(
        client: redis::Client,
        config: &BrokerConfig,
        links: Vec<PeerLink>,
        stats: Arc<BrokerStats>,
    ) -> Self {
        Listener {
            client,
            url: config.url.clone(),
            node: config.node,
            history: config.history,
            workers: links.len(),
            out: Outbound::new(links),
            stats,
            epochs: EpochNames::new(config.node, 's'),
            topics: HashMap::new(),
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
                    if self.stats.up.swap(false, Relaxed) {
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
                        self.topics.entry(topic).or_insert(None);
                    } else {
                        self.topics.remove(&topic);
                    }
                }
                Ok(SubReq::Join(request)) => {
                    BrokerStats::count(&self.stats.unavailable, 1);
                    self.answer(request, Err(JoinError::Unavailable));
                }
                Err(RecvTimeoutError::Timeout) => return true,
                Err(RecvTimeoutError::Disconnected) => return false,
            }
            self.out.wake();
        }
    }

    /// One connection's life: connect, resubscribe, catch up, then serve until a fault.
    fn session(
        &mut self,
        requests: &Receiver<SubReq>,
        backoff: &mut Backoff,
        ever_up: &mut bool,
        down_since: Instant,
    ) -> Stop {
        let mut listening = match connect(&self.client) {
            Ok(c) => c,
            Err(e) => return e.into(),
        };
        let mut commands = match connect(&self.client) {
            Ok(c) => c,
            Err(e) => return e.into(),
        };
        let sha = match load(&mut commands, script::POSITION) {
            Ok(sha) => sha,
            Err(e) => return e.into(),
        };
        let mut pubsub = listening.as_pubsub();
        match self.serve(
            &mut pubsub,
            &mut commands,
            &sha,
            requests,
            backoff,
            ever_up,
            down_since,
        ) {
            Ok(never) => match never {},
            Err(stop) => stop,
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn serve(
        &mut self,
        pubsub: &mut PubSub<'_>,
        commands: &mut Connection,
        sha: &str,
        requests: &Receiver<SubReq>,
        backoff: &mut Backoff,
        ever_up: &mut bool,
        down_since: Instant,
    ) -> Result<std::convert::Infallible, Stop> {
        pubsub.set_read_timeout(Some(COMMAND_TIMEOUT))?;
        // One channel per SUBSCRIBE: each call returns on its own confirmation, so every
        // subscription is in place before its topic's position is read below.
        for topic in self.topics.keys() {
            pubsub.subscribe(script::channel_of(topic))?;
        }
        let (gaps, recovered) = (
            self.stats.gaps.load(Relaxed),
            self.stats.recovered.load(Relaxed),
        );
        let topics: Vec<TopicName> = self.topics.keys().cloned().collect();
        for topic in &topics {
            self.catch_up(commands, sha, topic)?;
        }
        self.out.wake();
        self.stats.topics.store(self.topics.len() as u64, Relaxed);
        self.stats.generation.fetch_add(1, Relaxed);
        self.stats.up.store(true, Relaxed);
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
        pubsub.set_read_timeout(Some(POLL))?;
        loop {
            loop {
                match requests.try_recv() {
                    Ok(request) => self.on_request(request, pubsub, commands, sha)?,
                    Err(TryRecvError::Empty) => break,
                    Err(TryRecvError::Disconnected) => return Err(Stop::Shutdown),
                }
            }
            self.out.wake();
            for _ in 0..HEARD_PER_ROUND {
                match pubsub.get_message() {
                    Ok(msg) => {
                        self.on_heard(msg.get_channel_name(), msg.get_payload_bytes(), commands)?;
                        self.out.wake();
                    }
                    Err(e) if e.is_timeout() => break,
                    Err(e) => return Err(e.into()),
                }
            }
        }
    }

    fn on_request(
        &mut self,
        request: SubReq,
        pubsub: &mut PubSub<'_>,
        commands: &mut Connection,
        sha: &str,
    ) -> Result<(), Stop> {
        match request {
            SubReq::Interest {
                topic,
                active: true,
            } => self.listen_to(&topic, pubsub, commands, sha),
            SubReq::Interest {
                topic,
                active: false,
            } => {
                if self.topics.remove(&topic).is_some() {
                    pubsub.set_read_timeout(Some(COMMAND_TIMEOUT))?;
                    pubsub.unsubscribe(script::channel_of(&topic))?;
                    pubsub.set_read_timeout(Some(POLL))?;
                    self.stats.topics.store(self.topics.len() as u64, Relaxed);
                }
                Ok(())
            }
            SubReq::Join(request) => {
                let answered = self
                    .listen_to(&request.topic, pubsub, commands, sha)
                    .and_then(|()| self.catch_up(commands, sha, &request.topic))
                    .and_then(|()| self.join_answer(commands, &request.topic, &request.start));
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
        }
    }

    /// SUBSCRIBE to `topic` (if not yet) and learn where it stands. The subscription is
    /// confirmed before the position is read, so nothing numbered after it can be missed.
    fn listen_to(
        &mut self,
        topic: &TopicName,
        pubsub: &mut PubSub<'_>,
        commands: &mut Connection,
        sha: &str,
    ) -> Result<(), Stop> {
        if self.topics.contains_key(topic) {
            return Ok(());
        }
        pubsub.set_read_timeout(Some(COMMAND_TIMEOUT))?;
        pubsub.subscribe(script::channel_of(topic))?;
        pubsub.set_read_timeout(Some(POLL))?;
        self.topics.insert(topic.clone(), None);
        self.stats.topics.store(self.topics.len() as u64, Relaxed);
        self.catch_up(commands, sha, topic)
    }

    /// Bring this node's position on `topic` up to Redis's current number: forward what was
    /// missed from the log, or tell the topic's subscribers that there is a hole.
    fn catch_up(
        &mut self,
        commands: &mut Connection,
        sha: &str,
        topic: &TopicName,
    ) -> Result<(), Stop> {
        let keys = Keys::of(topic);
        let value: Value = redis::cmd("EVALSHA")
            .arg(sha)
            .arg(3)
            .arg(&keys.seq)
            .arg(&keys.log)
            .arg(&keys.epoch)
            .arg(self.epochs.fresh())
            .query(commands)?;
        let (epoch, current) = script::parse_position(&value)
            .ok_or_else(|| Stop::Fault(format!("unexpected position answer {value:?}")))?;
        let Some(known) = self.topics.get(topic).cloned() else {
            return Ok(());
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
                self.fill(commands, topic, p.last + 1, current)?;
            }
            _ => {}
        }
        self.topics.insert(
            topic.clone(),
            Some(Position {
                epoch,
                last: current,
            }),
        );
        Ok(())
    }

    /// Forward messages `from..=to` of `topic` from its log, or, if the log no longer holds
    /// all of them, report the gap (recovery is all or nothing).
    fn fill(
        &mut self,
        commands: &mut Connection,
        topic: &TopicName,
        from: u64,
        to: u64,
    ) -> Result<(), Stop> {
        let entries = self.range(commands, topic, from, to)?;
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
        commands: &mut Connection,
        topic: &str,
        from: u64,
        to: u64,
    ) -> Result<Vec<(u64, bytes::Bytes)>, Stop> {
        let value: Value = redis::cmd("XRANGE")
            .arg(Keys::of(topic).log)
            .arg(format!("0-{from}"))
            .arg(format!("0-{to}"))
            .query(commands)?;
        script::parse_entries(&value)
            .ok_or_else(|| Stop::Fault(format!("unreadable log of topic {topic}")))
    }

    /// A message heard on a channel: forward it in order, filling a hole first.
    fn on_heard(
        &mut self,
        channel: &str,
        payload: &[u8],
        commands: &mut Connection,
    ) -> Result<(), Stop> {
        let Some(topic) = script::topic_of_channel(channel) else {
            BrokerStats::count(&self.stats.malformed, 1);
            return Ok(());
        };
        let Some(Some(known)) = self.topics.get(&topic).cloned() else {
            return Ok(()); // unsubscribed meanwhile, or not yet positioned
        };
        let Some(heard) = script::parse_heard(payload, self.node) else {
            BrokerStats::count(&self.stats.malformed, 1);
            return Ok(());
        };
        if heard.epoch != known.epoch {
            // Redis lost the topic and a new life began without our connection breaking.
            let refusal = Unrecoverable::EpochChanged {
                epoch: known.epoch,
                current: heard.epoch.clone(),
            };
            self.gap(&topic, refusal);
            self.topics.insert(
                topic.clone(),
                Some(Position {
                    epoch: heard.epoch,
                    last: heard.seq - 1,
                }),
            );
        } else if heard.seq <= known.last {
            return Ok(()); // already forwarded (from the log, after a hole)
        } else if heard.seq > known.last + 1 {
            self.fill(commands, &topic, known.last + 1, heard.seq - 1)?;
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
        commands: &mut Connection,
        topic: &TopicName,
        start: &Start,
    ) -> Result<Result<Joined, JoinError>, Stop> {
        let Some(Some(position)) = self.topics.get(topic).cloned() else {
            return Ok(Err(JoinError::Unavailable));
        };
        let Position { epoch, last } = position;
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
                    let value: Value = redis::cmd("XREVRANGE")
                        .arg(Keys::of(topic).log)
                        .arg(format!("0-{last}"))
                        .arg("-")
                        .arg("COUNT")
                        .arg(n)
                        .query(commands)?;
                    let mut entries = script::parse_entries(&value)
                        .ok_or_else(|| Stop::Fault(format!("unreadable log of topic {topic}")))?;
                    entries.reverse();
                    entries
                }
            }
            Need::Range { from, to } => {
                let entries = self.range(commands, topic, from, to)?;
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
