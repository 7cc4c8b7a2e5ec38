//! The hot path: publish → sequence → fan-out → write.
//!
//! Why it is fast:
//! - A message is framed once, by the worker that read it; every hop and every subscriber
//!   shares that one buffer (`Bytes`: a reference count, never a copy).
//! - Publishing never writes. The topic's owner numbers the message and hands it to each
//!   worker with subscribers; each worker stages it on the topic and, at the end of the turn,
//!   writes the turn's messages for a topic to each subscriber in ONE `write` (the messages
//!   are corked into one buffer, built once per topic per turn, not per subscriber). On
//!   loopback a write costs microseconds of kernel time, so syscalls per subscriber decide
//!   the delivery rate, not user-space work.
//! - Only what the kernel refuses is queued on the connection (as a slice of the shared
//!   buffer), and written on the next writable event.

use std::io::{self, Write};
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::conn::{Conn, Ending, Feed, OutChunk, Phase};
use super::sse::SseBatch;
use super::{Doom, Worker};
use crate::feed::bus::{BusMsg, Origin, Publication};
use crate::feed::fanout::{cork, Staged, Subscriber};
use crate::feed::owned::owner_of;
use crate::feed::pace::{group_of, Decision, GROUPS, MAX_HELD};
use crate::feed::plan::{self, BatchView, Delivery, Part};
use crate::proto::deflate::{Agreement, BatchFrames, Codec};
use crate::proto::topic::TopicName;
use crate::proto::v1;

impl Worker {
    /// A client's message enters the server: hand it to its topic's owner (a direct call
    /// when that is this worker; seastar-style, same-core work never goes through a channel).
    pub(super) fn publish(&mut self, publication: Publication) {
        let Some(publication) = self.publish_to_broker(publication) else {
            return; // cluster mode: Redis numbers it
        };
        let owner = owner_of(&publication.topic, self.bus.workers());
        if owner == self.bus.me() {
            self.sequence_and_route(publication);
        } else {
            self.bus.send(owner, BusMsg::Publish(publication));
        }
    }

    /// Owner side: give the message the topic's next number and send it to every worker with
    /// subscribers, in that order: one sender per topic is what makes one order per topic.
    /// A publisher waiting for the number is told it (or that nobody got the message).
    pub(super) fn sequence_and_route(&mut self, publication: Publication) {
        let me = self.bus.me() as u16;
        let ack = publication.ack.map(|to| (to, publication.origin));
        let seq = self.route(publication);
        if let Some((to, origin)) = ack {
            if origin.worker == me {
                self.on_ack(to, origin.conn, seq);
            } else {
                let ack = BusMsg::Ack {
                    to,
                    conn: origin.conn,
                    seq,
                };
                self.bus.send(origin.worker as usize, ack);
            }
        }
    }

    /// Number the message (keeping it in history) and hand it to the interested workers.
    /// `None`: not numbered (nobody subscribes and there is no history).
    fn route(&mut self, publication: Publication) -> Option<u64> {
        let seq = self
            .topics
            .owned
            .sequence(&publication.topic, &publication.frame, self.now)?;
        if seq == 1 {
            // A topic's first number: it may have just been created for a pattern.
            self.send_attaches();
        }
        self.hand_to_workers(seq, publication);
        Some(seq)
    }

    /// Owner side: message number `seq` goes to every worker with subscribers of its topic,
    /// in numbering order (a `Deliver` to each peer; staged here if this worker is one).
    pub(super) fn hand_to_workers(&mut self, seq: u64, publication: Publication) {
        let me = self.bus.me() as u16;
        if self.topic_board.selector.enabled() {
            // Counted here, by the owner, once per message (cluster mode too: Remote
            // messages come through here on their owner only).
            let selector = &self.topic_board.selector;
            let slot = self
                .topics
                .owned
                .stats_slot(&publication.topic, |t| selector.resolve(t));
            if let Some(counts) = slot.and_then(|s| self.topic_tally.at(s)) {
                counts.messages += 1;
            }
        }
        let mut local = false;
        for &worker in self.topics.owned.interested(&publication.topic) {
            if worker == me {
                local = true;
            } else {
                let deliver = BusMsg::Deliver {
                    seq,
                    publication: publication.clone(),
                };
                self.bus.send(worker as usize, deliver);
            }
        }
        if local {
            let Publication {
                topic,
                frame,
                received,
                origin,
                ..
            } = publication;
            self.topics.stage(
                Staged {
                    seq,
                    frame,
                    received,
                    origin,
                },
                &topic,
            );
        }
    }

    /// Add an upgraded raw-mode connection to its path's topic.
    pub(super) fn subscribe_path(&mut self, key: usize, topic: TopicName) {
        let subscriber = Subscriber {
            key: key as u32,
            envelope: false,
            sse: false,
            after: 0,
        };
        let slot = self.add_subscriber(&topic, subscriber);
        self.conns[key].enter(Phase::Open {
            feed: Feed::Path { topic, slot },
            last_ping: self.tick,
        });
    }

    /// Add a subscriber to a topic here; the first one here tells the owner. Returns its slot.
    pub(super) fn add_subscriber(&mut self, topic: &TopicName, subscriber: Subscriber) -> u32 {
        let subscribed = self.topics.subscribe(topic, subscriber);
        if subscribed.first_here {
            if self.topic_board.selector.enabled() {
                let slot = self.topic_board.selector.resolve(topic);
                if let Some(local) = self.topics.local.get_mut(topic) {
                    local.stats = slot;
                }
            }
            self.send_interest(topic, true);
        }
        if self.topic_board.selector.enabled() {
            if let Some(slot) = self.topics.stats_slot(topic) {
                if let Some(counts) = self.topic_tally.at(slot) {
                    counts.subscribers += 1;
                }
            }
        }
        self.presence_joined(topic, subscriber.key as usize);
        subscribed.slot
    }

    /// Remove a connection's subscriber entry (it unsubscribes or closes); the last one here
    /// tells the owner.
    pub(super) fn unsubscribe(&mut self, topic: &TopicName, slot: u32) {
        if self.topic_board.selector.enabled() {
            if let Some(stats) = self.topics.stats_slot(topic) {
                if let Some(counts) = self.topic_tally.at(stats) {
                    counts.subscribers = counts.subscribers.saturating_sub(1);
                }
            }
        }
        if self.presence.follows_subscribers() {
            if let Some(key) = self.topics.subscriber_mut(topic, slot).map(|s| s.key) {
                self.presence_left(topic, key as usize);
            }
        }
        let unsubscribed = self.topics.unsubscribe(topic, slot);
        if let Some((moved, new_slot)) = unsubscribed.moved {
            if let Some(feed) = self.conns.get_mut(moved).and_then(|c| c.phase.feed_mut()) {
                feed.set_slot(topic, new_slot);
            }
        }
        if unsubscribed.last_here {
            self.send_interest(topic, false);
        }
    }

    fn send_interest(&mut self, topic: &TopicName, active: bool) {
        let owner = owner_of(topic, self.bus.workers());
        let me = self.bus.me();
        if owner == me {
            self.owner_interest(topic, me as u16, active);
        } else {
            self.bus.send(
                owner,
                BusMsg::Interest {
                    topic: topic.clone(),
                    worker: me as u16,
                    active,
                },
            );
        }
    }

    /// End of turn: write every staged topic batch to its subscribers, then every connection
    /// with queued output, then close the connections found broken or too slow on the way.
    pub(super) fn flush(&mut self) {
        self.flush_topics(false);
        self.flush_queued();
        for (key, id, doom) in std::mem::take(&mut self.doomed) {
            if self.conns.get(key).is_some_and(|c| c.id == id) {
                match doom {
                    Doom::Broken => self.hang_up_for(key, Ending::Error),
                    Doom::SlowConsumer => self.close_slow_consumer(key),
                }
            }
        }
        // Closing a slow consumer queues its close frame.
        self.flush_queued();
    }

    /// The fan-out write. For each topic with messages this turn, each subscriber gets what
    /// the planner decides (`feed::plan`): usually the whole batch as one shared corked
    /// buffer in one `write`. Nothing is allocated per subscriber unless the kernel refuses
    /// bytes (then a slice of the shared buffer is queued on that connection) or the
    /// subscriber gets only part of the batch (`--no-echo`, a `herald.v1` join).
    ///
    /// A busy topic's batches may be held for a later turn instead, or written one
    /// subscriber group at a time (`feed::pace`, `--batch-window`); `force` writes every
    /// batch now (the drain, before the close frames).
    pub(super) fn flush_topics(&mut self, force: bool) {
        let mut dirty = std::mem::take(&mut self.topics.dirty);
        let mut held: Vec<TopicName> = Vec::new();
        // Subscribers that got part of a batch ahead (`feed::pace::EchoAhead`) get the rest
        // after the pass, on their own.
        let mut rest: Vec<(Subscriber, usize)> = Vec::new();
        self.held_until = None;
        let window = if force || self.serving.is_draining() {
            Duration::ZERO
        } else {
            self.config.batch_window
        };
        let backlog_limit = self.config.backlog_limit();
        let min = self.config.compress_min;
        let me = self.bus.me() as u16;
        for name in &dirty {
            let Some(topic) = self.topics.local.get_mut(name) else {
                continue;
            };
            if !topic.has_staged() {
                continue; // listed twice (its topic was dropped and made again meanwhile)
            }
            let started = Instant::now();
            let was_holding = topic.pace.holding();
            let longest = topic.longest();
            let batches = &topic.batches;
            let decision = topic
                .pace
                .decide(started, longest, window, |g| !batches[g].is_empty());
            let write: [bool; GROUPS] = match decision {
                Decision::HoldUntil(due) => {
                    if !was_holding {
                        self.counters.batch_holds += 1;
                    }
                    self.held_until = Some(self.held_until.map_or(due, |t| t.min(due)));
                    held.push(name.clone());
                    continue;
                }
                Decision::Write => std::array::from_fn(|g| !topic.batches[g].is_empty()),
                Decision::WriteGroup(g) => std::array::from_fn(|i| i == g),
            };
            let taken: [Vec<Staged>; GROUPS] = std::array::from_fn(|g| {
                if write[g] {
                    std::mem::take(&mut topic.batches[g])
                } else {
                    Vec::new()
                }
            });
            // Groups written together have the same batch (each is a suffix of the longest:
            // same length, same messages): its bytes are built once, by the first of them.
            let share: [usize; GROUPS] = std::array::from_fn(|g| {
                (0..g)
                    .find(|&f| write[f] && taken[f].len() == taken[g].len())
                    .unwrap_or(g)
            });
            let views: [Option<BatchView>; GROUPS] = std::array::from_fn(|g| {
                (share[g] == g)
                    .then(|| BatchView::new(&taken[g], self.config.no_echo, me))
                    .flatten()
            });
            let envelopes = topic.envelope_subscribers > 0;
            let mut frames: [Option<TurnFrames>; GROUPS] = std::array::from_fn(|g| {
                views[g].map(|_| TurnFrames::new(name, &taken[g], envelopes))
            });
            let mut sse: [SseBatch; GROUPS] = Default::default();
            let stats_slot = topic.stats;
            let mut complete = [0u64; GROUPS];
            let mut handed = [0u64; GROUPS];
            let mut queued_any = false;
            for sub in &topic.subscribers {
                let group = group_of(sub.key);
                if !write[group] {
                    continue;
                }
                let f = share[group];
                let (Some(view), Some(frames)) = (views[f].as_ref(), frames[f].as_mut()) else {
                    continue;
                };
                let batch = &taken[f];
                let oldest = batch[0].received;
                let messages = batch.len() as u32;
                let key = sub.key as usize;
                let Some(conn) = self.conns.get_mut(key) else {
                    continue;
                };
                if !topic.echo.senders.is_empty() {
                    let given = topic.echo.given(sub.key);
                    if given > 0 {
                        rest.push((*sub, given));
                        continue;
                    }
                }
                let own = Origin {
                    worker: me,
                    conn: conn.id,
                };
                match plan::delivery(view, batch, sub, own) {
                    Delivery::Nothing => continue,
                    Delivery::Whole => {
                        handed[f] += 1;
                        let events;
                        let corked = if sub.sse {
                            events = sse[f].events(name, batch, conn, None);
                            &events
                        } else {
                            frames.whole(&mut self.deflate, sub.envelope, conn.deflate, min)
                        };
                        if !conn.out.is_empty() {
                            // Earlier bytes are still queued: these go behind them.
                            queued_any = true;
                            conn.out.push(OutChunk {
                                data: corked.clone(),
                                received: oldest,
                                messages,
                                topic_stats: stats_slot,
                            });
                        } else {
                            match write_once(&mut conn.output(), corked) {
                                Ok(n) => {
                                    self.counters.socket_writes += u64::from(n > 0);
                                    self.counters.bytes_out += n as u64;
                                    if n == corked.len() {
                                        complete[f] += 1;
                                    } else {
                                        queued_any = true;
                                        conn.out.push(OutChunk {
                                            data: corked.slice(n..),
                                            received: oldest,
                                            messages,
                                            topic_stats: stats_slot,
                                        });
                                    }
                                }
                                Err(_) => self.doomed.push((key, conn.id, Doom::Broken)),
                            }
                        }
                    }
                    Delivery::Part(part) if sub.sse => {
                        let events = sse[f].events(name, batch, conn, Some(&part));
                        let included = batch.iter().filter(|s| part.includes(s));
                        if let Some(first) = included.clone().next() {
                            conn.out.push(OutChunk {
                                data: events,
                                received: first.received,
                                messages: included.count() as u32,
                                topic_stats: stats_slot,
                            });
                        }
                        if !conn.out.is_empty() && !conn.queued_for_flush {
                            conn.queued_for_flush = true;
                            self.to_flush.push(key);
                        }
                    }
                    Delivery::Part(part) => {
                        let (envelope, stats) = (sub.envelope, stats_slot);
                        frames.queue_part(&mut self.deflate, conn, &part, envelope, min, stats);
                        if !conn.out.is_empty() && !conn.queued_for_flush {
                            conn.queued_for_flush = true;
                            self.to_flush.push(key);
                        }
                    }
                }
                if conn.out.bytes() > backlog_limit {
                    self.doomed.push((key, conn.id, Doom::SlowConsumer));
                }
            }
            drop(frames);
            let now = Instant::now();
            let mut busy = topic
                .busy
                .and_then(|s| self.busy_latency.get_mut(s as usize));
            let mut per_topic = topic.stats.and_then(|s| self.topic_tally.at(s));
            for (f, batch) in taken.iter().enumerate() {
                let messages = batch.len() as u64;
                self.counters.frames_out += complete[f] * messages;
                topic.delivered += handed[f] * messages;
                if complete[f] == 0 {
                    continue;
                }
                if let Some(counts) = per_topic.as_deref_mut() {
                    counts.deliveries += complete[f] * messages;
                }
                for staged in batch {
                    let micros = now.saturating_duration_since(staged.received).as_micros() as u64;
                    let _ = self.latency.record_n(micros.max(1), complete[f]);
                    self.counters.latency.record_n(micros.max(1), complete[f]);
                    if let Some(counts) = per_topic.as_deref_mut() {
                        counts.latency.record_n(micros.max(1), complete[f]);
                    }
                    if let Some(buckets) = busy.as_deref_mut() {
                        buckets.record_n(micros.max(1), complete[f]);
                    }
                }
            }
            topic.echo.blocked = queued_any;
            let written: u32 = (0..GROUPS)
                .filter(|&g| write[g])
                .map(|g| topic.group_subs[g])
                .sum();
            let total = topic.subscribers.len();
            topic
                .pace
                .wrote(started, now, longest, written as usize, total);
            topic.echo.written(|g| write[g]);
            if topic.has_staged() {
                // Other groups still wait (one group was written under load).
                if let Some(due) = topic.pace.next_due(window) {
                    self.held_until = Some(self.held_until.map_or(due, |t| t.min(due)));
                }
                held.push(name.clone());
            } else {
                topic.echo.clear();
            }
            for (sub, given) in rest.drain(..) {
                if let Some(part) = taken[share[group_of(sub.key)]].get(given..) {
                    self.write_ahead(name, part, sub, stats_slot);
                }
            }
            // Give the (now empty) batch vectors back to the topic to reuse their allocation.
            if let Some(topic) = self.topics.local.get_mut(name) {
                for (g, mut batch) in taken.into_iter().enumerate() {
                    if write[g] && topic.batches[g].is_empty() {
                        batch.clear();
                        topic.batches[g] = batch;
                    }
                }
            }
        }
        dirty.clear();
        for name in &held {
            self.echo_ahead(name);
        }
        // Held topics stay dirty, ahead of any dirtied meanwhile (their batches are older).
        held.append(&mut self.topics.dirty);
        self.topics.dirty = if held.is_empty() { dirty } else { held };
    }

    /// A held batch's senders here get what they have not had of it now (`feed::pace`,
    /// "holding never stalls a sender waiting for its own echo"): a closed-loop publisher
    /// sends its next messages during the hold, and they join this batch. Not under
    /// `--no-echo` (a sender then waits for no echo), not after a pass that left bytes queued
    /// on a subscriber, and not once a batch is full.
    fn echo_ahead(&mut self, name: &TopicName) {
        if self.config.no_echo {
            return;
        }
        let me = self.bus.me() as u16;
        let Some(topic) = self.topics.local.get_mut(name) else {
            return;
        };
        if topic.echo.blocked || topic.longest() >= MAX_HELD {
            return;
        }
        let conns = &self.conns;
        let subscribers = &topic.subscribers;
        let batches = &topic.batches;
        let longest = (0..GROUPS).max_by_key(|&g| batches[g].len()).unwrap_or(0);
        topic
            .echo
            .meet(batches[longest].iter().map(|s| s.origin), me, |id| {
                subscribers
                    .iter()
                    .position(|s| !s.sse && conns.get(s.key as usize).is_some_and(|c| c.id == id))
                    .map(|slot| (subscribers[slot].key, slot as u32))
            });
        let mut due: Vec<(Subscriber, usize)> = Vec::new();
        for sender in &mut topic.echo.senders {
            let Some((key, slot)) = sender.at else {
                continue;
            };
            let len = topic.batches[group_of(key)].len();
            if sender.has >= len {
                continue;
            }
            // Its slot moves when another subscriber leaves; its key is its own while its
            // connection (checked by id) lives.
            let slot = match topic.subscribers.get(slot as usize) {
                Some(s) if s.key == key => Some(slot as usize),
                _ => topic.subscribers.iter().position(|s| s.key == key),
            };
            let alive = self
                .conns
                .get(key as usize)
                .is_some_and(|c| c.id == sender.conn);
            let (Some(slot), true) = (slot, alive) else {
                sender.at = None;
                continue;
            };
            sender.at = Some((key, slot as u32));
            due.push((topic.subscribers[slot], sender.has));
            sender.has = len;
        }
        let stats = topic.stats;
        for (sub, has) in due {
            let group = group_of(sub.key);
            let Some(topic) = self.topics.local.get_mut(name) else {
                return;
            };
            let batch = std::mem::take(&mut topic.batches[group]);
            if let Some(part) = batch.get(has..) {
                self.write_ahead(name, part, sub, stats);
            }
            if let Some(topic) = self.topics.local.get_mut(name) {
                topic.batches[group] = batch;
            }
        }
    }

    /// Queue `part` (the messages of a batch one subscriber has not had) for `sub`, as the
    /// planner decides, to be written with the turn's queued output (`flush_queued`).
    fn write_ahead(
        &mut self,
        name: &TopicName,
        part: &[Staged],
        sub: Subscriber,
        stats: Option<u32>,
    ) {
        let me = self.bus.me() as u16;
        let min = self.config.compress_min;
        let key = sub.key as usize;
        let Some(view) = BatchView::new(part, self.config.no_echo, me) else {
            return;
        };
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        let own = Origin {
            worker: me,
            conn: conn.id,
        };
        let mut frames = TurnFrames::new(name, part, sub.envelope);
        match plan::delivery(&view, part, &sub, own) {
            Delivery::Nothing => return,
            Delivery::Whole => {
                let data = frames
                    .whole(&mut self.deflate, sub.envelope, conn.deflate, min)
                    .clone();
                conn.out.push(OutChunk {
                    data,
                    received: part[0].received,
                    messages: part.len() as u32,
                    topic_stats: stats,
                });
            }
            Delivery::Part(included) => {
                let envelope = sub.envelope;
                frames.queue_part(&mut self.deflate, conn, &included, envelope, min, stats);
            }
        }
        if !conn.out.is_empty() && !conn.queued_for_flush {
            conn.queued_for_flush = true;
            self.to_flush.push(key);
        }
        if conn.out.bytes() > self.config.backlog_limit() {
            self.doomed.push((key, conn.id, Doom::SlowConsumer));
        }
    }

    /// Write the connections that have queued output (control frames, HTTP responses, what
    /// the kernel refused earlier). One vectored write per connection per turn.
    fn flush_queued(&mut self) {
        let mut keys = std::mem::take(&mut self.to_flush);
        for &key in &keys {
            if let Some(conn) = self.conns.get_mut(key) {
                conn.queued_for_flush = false;
            }
            self.write_queued(key);
        }
        keys.clear();
        if self.to_flush.is_empty() {
            self.to_flush = keys;
        }
    }

    /// The socket has room again: resume its queued output.
    pub(super) fn on_writable(&mut self, key: usize) {
        if self.conns.get(key).is_some_and(|c| c.output_pending()) {
            self.write_queued(key);
        }
    }

    pub(super) fn write_queued(&mut self, key: usize) {
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        let latency = &mut self.latency;
        let counters = &mut self.counters;
        let tally = &mut self.topic_tally;
        let now = Instant::now();
        // TLS records encrypted earlier go first: they precede anything still queued.
        if conn.flush_tls().is_err() {
            return self.hang_up_for(key, Ending::Error);
        }
        let (queue, mut output) = conn.queue_and_output();
        let result = queue.write_to(&mut output, |chunk| {
            if chunk.messages > 0 {
                counters.frames_out += chunk.messages as u64;
                let micros = now.saturating_duration_since(chunk.received).as_micros() as u64;
                let _ = latency.record_n(micros.max(1), chunk.messages as u64);
                counters
                    .latency
                    .record_n(micros.max(1), chunk.messages as u64);
                if let Some(per_topic) = chunk.topic_stats.and_then(|s| tally.at(s)) {
                    per_topic.deliveries += chunk.messages as u64;
                    per_topic
                        .latency
                        .record_n(micros.max(1), chunk.messages as u64);
                }
            }
        });
        match result {
            Ok(written) => {
                self.counters.bytes_out += written.bytes as u64;
                self.counters.socket_writes += written.calls as u64;
                let conn = &self.conns[key];
                if !conn.output_pending() && matches!(conn.phase, Phase::Flushing { .. }) {
                    self.finish_flushing(key);
                }
            }
            Err(_) => self.hang_up_for(key, Ending::Error),
        }
    }
}

/// One `write`, retried only on `EINTR`; `WouldBlock` is zero bytes written.
fn write_once(socket: &mut impl Write, data: &[u8]) -> io::Result<usize> {
    loop {
        match socket.write(data) {
            Ok(n) => return Ok(n),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(0),
            Err(e) => return Err(e),
        }
    }
}

/// The bytes of one topic's batch this turn, in each form a subscriber here may need, each
/// built at most once (on first use) and shared by every subscriber that needs it: bare
/// payloads corked, `herald.v1` envelopes (built only if a subscriber here wants them), and
/// the compressed variants of both (`deflate::BatchFrames`).
struct TurnFrames<'a> {
    batch: &'a [Staged],
    plain: Bytes,
    envelopes: Option<Envelopes>,
    deflated: BatchFrames,
    deflated_envelopes: BatchFrames,
}

impl<'a> TurnFrames<'a> {
    fn new(topic: &str, batch: &'a [Staged], envelopes: bool) -> Self {
        TurnFrames {
            batch,
            plain: cork(batch.iter().map(|s| &s.frame)),
            envelopes: envelopes.then(|| Envelopes::new(topic, batch)),
            deflated: BatchFrames::default(),
            deflated_envelopes: BatchFrames::default(),
        }
    }

    /// The whole batch, corked, as a subscriber in this format with this agreement gets it.
    fn whole(
        &mut self,
        codec: &mut Codec,
        envelope: bool,
        agreement: Agreement,
        min: usize,
    ) -> &Bytes {
        match self.envelopes.as_ref().filter(|_| envelope) {
            Some(e) => (self.deflated_envelopes)
                .cork(codec, &e.frames, agreement, min)
                .unwrap_or(&e.corked),
            None => (self.deflated)
                .cork(codec, self.batch, agreement, min)
                .unwrap_or(&self.plain),
        }
    }

    /// Message `i` alone, for a subscriber that gets only part of the batch.
    /// Queue on `conn`, one frame each, the messages of the batch that `part` includes (a
    /// subscriber that gets only part of it: `--no-echo`, a join's replay overlap).
    fn queue_part(
        &mut self,
        codec: &mut Codec,
        conn: &mut Conn,
        part: &Part,
        envelope: bool,
        min: usize,
        topic_stats: Option<u32>,
    ) {
        let batch = self.batch;
        for (i, staged) in batch.iter().enumerate() {
            if part.includes(staged) {
                let data = self.message(codec, envelope, i, conn.deflate, min);
                conn.out.push(OutChunk {
                    data,
                    received: staged.received,
                    messages: 1,
                    topic_stats,
                });
            }
        }
    }

    fn message(
        &mut self,
        codec: &mut Codec,
        envelope: bool,
        i: usize,
        agreement: Agreement,
        min: usize,
    ) -> Bytes {
        match self.envelopes.as_ref().filter(|_| envelope) {
            Some(e) => (self.deflated_envelopes).message(codec, &e.frames, i, agreement, min),
            None => self.deflated.message(codec, self.batch, i, agreement, min),
        }
    }
}

/// A topic's batch as `herald.v1` envelopes: built once per message on this worker, shared
/// by every such subscriber here; `corked` is all of them back to back.
struct Envelopes {
    frames: Vec<Bytes>,
    corked: Bytes,
}

impl Envelopes {
    fn new(topic: &str, batch: &[Staged]) -> Self {
        let frames: Vec<Bytes> = batch
            .iter()
            .map(|s| v1::envelope(topic, s.seq, &s.frame))
            .collect();
        let corked = cork(frames.iter());
        Envelopes { frames, corked }
    }
}
