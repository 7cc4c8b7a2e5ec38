//! Server-Sent Events streams on a worker: opening one (access control, `Last-Event-ID`),
//! joining its topics like a `herald.v1` subscribe, and the events of a topic's batch.
//!
//! An SSE stream is an ordinary subscriber: it joins each topic through the topic's owner
//! (`Start::Since` from its `Last-Event-ID`, else `Start::Now`), so it gets the replay and
//! then exactly the live messages above the join's number, in the topic's one order, through
//! the same end-of-turn corked write as every other subscriber (`output::flush_topics`),
//! under the same backlog limit. A start that cannot be served is joined again from now and
//! reported to the client as a `gap` event. The format is `proto::sse`'s.

use std::sync::Arc;

use bytes::{BufMut, Bytes, BytesMut};

use super::conn::{Conn, Feed, Opening, Phase, SseFeed, SseSub};
use super::Worker;
use crate::feed::bus::{BusMsg, JoinError, JoinRequest};
use crate::feed::fanout::{Staged, Subscriber, JOINING};
use crate::feed::owned::{owner_of, Joined};
use crate::feed::plan::Part;
use crate::proto::http::{Credentials, Denied, HttpError, Mode};
use crate::proto::sse;
use crate::proto::topic::Start;
use crate::proto::v1::Refusal;

/// `retry:` sent at the start of every stream: how long an `EventSource` waits before it
/// reconnects after the stream ends (a drain, a restart, a slow-consumer close).
pub const RETRY_MS: u64 = 1000;

impl Worker {
    /// `GET /<topic>` as `text/event-stream`, or `GET /sse?topic=…`: check the request like an
    /// upgrade (origin, token, every topic's grant and length, a place at the gate), answer
    /// `200` with `retry:`, and join every topic from the client's `Last-Event-ID`.
    pub(super) fn open_events(
        &mut self,
        key: usize,
        topics: Vec<String>,
        last_event_id: Option<&str>,
        credentials: &Credentials,
    ) -> Result<(), HttpError> {
        if topics.len() > self.config.max_topics_per_conn {
            return Err(HttpError::BadRequest(
                "more topics than --max-topics-per-conn",
            ));
        }
        let positions = sse::parse_last_event_id(last_event_id.unwrap_or_default(), topics.len())
            .map_err(|e| match e {
            sse::LastEventIdError::WrongCount => {
                HttpError::BadRequest("Last-Event-ID must have one position per topic")
            }
            sse::LastEventIdError::Malformed => {
                HttpError::BadRequest("Last-Event-ID is not an id this server sent")
            }
        })?;
        for topic in &topics {
            self.check_topic_len(topic)?;
        }
        let guard = self.admit_upgrade(key, &Mode::V1, credentials)?;
        let granted = |topic: &String| {
            guard
                .as_ref()
                .and_then(|g| g.grants.as_ref())
                .is_none_or(|g| g.may_subscribe(topic))
        };
        if !topics.iter().all(granted) {
            self.release_guard(guard.as_deref());
            self.counters.auth_failures += 1;
            return Err(HttpError::Denied(Denied::Forbidden));
        }
        self.conns[key].guard = guard;
        if self.open_needs_hooks(topics.len()) {
            let opening = Opening::Events { topics, positions };
            self.await_open_hooks(key, opening, credentials);
            return Ok(());
        }
        self.start_events(key, topics, positions);
        Ok(())
    }

    /// Answer `200` with `retry:` and join every topic of the stream. In cluster mode the
    /// `200` waits for every topic's join (`on_sse_joined`): sent at once, it could reach the
    /// client before the node listens to a topic new on it in Redis, and a message published
    /// elsewhere meanwhile would never reach the stream.
    pub(super) fn start_events(
        &mut self,
        key: usize,
        topics: Vec<String>,
        positions: Vec<Option<sse::Position>>,
    ) {
        let mut feed = SseFeed::default();
        if self.cluster.is_some() {
            feed.head = Some(sse::stream_head(RETRY_MS));
        } else {
            self.queue_output(key, sse::stream_head(RETRY_MS).into(), 0);
        }
        feed.subs.reserve_exact(topics.len()); // not `Vec`'s first four (384 B) for one topic
        for (topic, position) in topics.iter().zip(positions) {
            let topic = self.shared_topic_name(topic);
            let subscriber = Subscriber {
                key: key as u32,
                envelope: false,
                sse: true,
                after: JOINING,
            };
            let slot = self.add_subscriber(&topic, subscriber);
            feed.subs.push(SseSub {
                topic,
                slot,
                joining: None,
                position: position.map(|p| (Arc::from(p.epoch), p.seq)),
                gap: None,
            });
        }
        let count = feed.subs.len();
        self.conns[key].enter(Phase::Open {
            feed: Feed::Sse(Box::new(feed)),
            last_ping: self.tick,
        });
        for i in 0..count {
            self.sse_join(key, i);
        }
    }

    /// While shutting down, a new stream is answered with an empty stream that ends at once:
    /// an `EventSource` reconnects after `retry:` (a 503 would make it give up for good).
    pub(super) fn refuse_events_draining(&mut self, key: usize) {
        let mut bytes = sse::stream_head(RETRY_MS);
        bytes.extend_from_slice(&sse::comment("server shutting down: reconnect"));
        self.reply_and_close(key, bytes);
    }

    fn sse_feed(&mut self, key: usize) -> Option<&mut SseFeed> {
        match &mut self.conns.get_mut(key)?.phase {
            Phase::Open {
                feed: Feed::Sse(feed),
                ..
            } => Some(feed),
            _ => None,
        }
    }

    /// Ask topic `i`'s owner where the stream starts: after the client's position if it has
    /// one (and no gap was found already), else from now.
    fn sse_join(&mut self, key: usize, i: usize) {
        let conn = self.conns[key].id;
        let me = self.bus.me();
        let Some(feed) = self.sse_feed(key) else {
            return;
        };
        let join = feed.next_join;
        feed.next_join = join.wrapping_add(1);
        let sub = &mut feed.subs[i];
        sub.joining = Some(join);
        let start = match (&sub.position, &sub.gap) {
            (Some((epoch, seq)), None) => Start::Since {
                epoch: epoch.to_string(),
                seq: *seq,
            },
            _ => Start::Now,
        };
        let request = JoinRequest {
            topic: sub.topic.clone(),
            worker: me as u16,
            key,
            conn,
            join,
            request: 0,
            start,
        };
        let owner = owner_of(&request.topic, self.bus.workers());
        if owner == me {
            self.on_join(request);
        } else {
            self.bus.send(owner, BusMsg::Join(request));
        }
    }

    /// Whether connection `key` is an SSE stream (its join answers come here).
    pub(super) fn is_sse_stream(&self, key: usize) -> bool {
        self.conns.get(key).is_some_and(Conn::is_sse)
    }

    /// The owner answered one of a stream's joins. Joined: the stream goes live above the
    /// answer's number, after the replay (and the `gap` event, if this join follows a refused
    /// start). Refused as unrecoverable: join again from now, and say so with a `gap` event.
    /// Unavailable (cluster mode, Redis down): end the stream; the client reconnects.
    pub(super) fn on_sse_joined(
        &mut self,
        request: JoinRequest,
        result: Result<Joined, JoinError>,
    ) {
        let key = request.key;
        let Some(feed) = self.sse_feed(key) else {
            return;
        };
        let Some(i) = feed
            .subs
            .iter()
            .position(|s| s.topic == request.topic && s.joining == Some(request.join))
        else {
            return;
        };
        let joined = match result {
            Ok(joined) => joined,
            Err(JoinError::Unavailable) => {
                return self.fail(key, 1011, "the message broker is unavailable");
            }
            Err(JoinError::Unrecoverable(why)) => {
                let refusal = Refusal::from(why);
                feed.subs[i].gap = Some((refusal.code(), refusal.to_string()));
                return self.sse_join(key, i);
            }
        };
        let single = feed.subs.len() == 1;
        let sub = &mut feed.subs[i];
        sub.joining = None;
        let slot = sub.slot;
        let epoch: Arc<str> = Arc::from(joined.epoch.as_str());
        sub.position = Some((epoch.clone(), joined.last_seq));
        let gap = sub.gap.take();
        let topic = request.topic;
        let mut out = BytesMut::new();
        if let Some((code, detail)) = gap {
            let id = id_line(feed, single);
            out.put_slice(&sse::gap_event(&id, &topic, code, &detail));
        }
        for kept in &joined.replay {
            feed.subs[i].position = Some((epoch.clone(), kept.seq));
            out.put_slice(&id_line(feed, single));
            out.put_slice(&sse::event_body(&topic, &kept.frame));
        }
        feed.subs[i].position = Some((epoch, joined.last_seq));
        let replayed = joined.replay.len() as u32;
        // Cluster mode, the head not sent yet: this topic stays held back (`JOINING`) with
        // its bytes behind the head until every topic is answered. Topics answered before
        // the last one then join again from the position they were answered with, and what
        // was numbered meanwhile is replayed.
        let ready = match feed.head.take() {
            None => Some((out.freeze(), replayed, Vec::new())),
            Some(mut head) => {
                head.extend_from_slice(&out);
                feed.held_messages += replayed;
                if feed.subs.iter().any(|s| s.joining.is_some()) {
                    feed.head = Some(head);
                    None
                } else {
                    let held = std::mem::take(&mut feed.held_messages);
                    let earlier: Vec<usize> = (0..feed.subs.len()).filter(|&j| j != i).collect();
                    Some((Bytes::from(head), held, earlier))
                }
            }
        };
        self.counters.replayed += u64::from(replayed);
        let Some((bytes, messages, earlier)) = ready else {
            return; // still held: other topics' answers are to come
        };
        if let Some(subscriber) = self.topics.subscriber_mut(&topic, slot) {
            subscriber.after = joined.last_seq;
        }
        if !bytes.is_empty() {
            self.queue_output(key, bytes, messages);
        }
        for j in earlier {
            self.sse_join(key, j);
        }
    }

    /// Keep-alive for an SSE stream: a comment, so proxies see traffic (the client never
    /// sends anything, so its silence is no sign of a dead peer).
    pub(super) fn sse_heartbeat(&mut self, key: usize) {
        if self.conns.get(key).is_some_and(|c| c.held_head().is_some()) {
            // Cluster mode, no join answer within the keep-alive period: end the stream (its
            // head first, so an `EventSource` reconnects; a 503 would make it give up).
            return self.fail(key, 1011, "no answer from the message broker");
        }
        self.queue_output(key, Bytes::from_static(sse::HEARTBEAT), 0);
    }
}

/// The id line for a stream's current positions: `id: E:S` for one topic, every topic's
/// position for several.
fn id_line(feed: &SseFeed, single: bool) -> Bytes {
    match (single, feed.subs.first().and_then(|s| s.position.as_ref())) {
        (true, Some((epoch, seq))) => sse::id_line(epoch, *seq),
        _ => sse::multi_id_line(&feed.positions()),
    }
}

/// A topic's batch as SSE events, built at most once per message per worker: the event
/// bodies (`event:` and `data:`), and for single-topic streams the whole events with their
/// `epoch:seq` ids, corked. A stream of several topics needs ids that list every topic's
/// position, which differ per stream, so it gets the shared bodies behind its own id lines.
#[derive(Default)]
pub(super) struct SseBatch {
    bodies: Vec<Bytes>,
    /// For single-topic streams: the epoch the ids were built with, and the corked events.
    single: Option<(Arc<str>, Bytes)>,
}

impl SseBatch {
    /// What stream `conn` gets of `batch` (all of it, or only what `part` includes), moving its
    /// position for `topic` to the last message it gets.
    pub(super) fn events(
        &mut self,
        topic: &str,
        batch: &[Staged],
        conn: &mut Conn,
        part: Option<&Part>,
    ) -> Bytes {
        let Phase::Open {
            feed: Feed::Sse(feed),
            ..
        } = &mut conn.phase
        else {
            return Bytes::new();
        };
        let Some(i) = feed.subs.iter().position(|s| *s.topic == *topic) else {
            return Bytes::new();
        };
        let Some((epoch, _)) = feed.subs[i].position.clone() else {
            return Bytes::new(); // not joined: the planner holds its deliveries back
        };
        if self.bodies.is_empty() {
            self.bodies = batch
                .iter()
                .map(|s| sse::event_body(topic, &s.frame))
                .collect();
        }
        let single = feed.subs.len() == 1;
        let last = batch
            .iter()
            .rev()
            .find(|s| part.is_none_or(|p| p.includes(s)));
        if single && part.is_none() {
            if let Some(last) = last {
                feed.subs[i].position = Some((epoch.clone(), last.seq));
            }
            if let Some((built_for, corked)) = &self.single {
                if *built_for == epoch {
                    return corked.clone();
                }
            }
            let corked = self.cork_single(&epoch, batch);
            if self.single.is_none() {
                self.single = Some((epoch, corked.clone()));
            }
            return corked;
        }
        let mut out = BytesMut::new();
        for (staged, body) in batch.iter().zip(&self.bodies) {
            if part.is_some_and(|p| !p.includes(staged)) {
                continue;
            }
            feed.subs[i].position = Some((epoch.clone(), staged.seq));
            out.put_slice(&id_line(feed, single));
            out.put_slice(body);
        }
        out.freeze()
    }

    fn cork_single(&self, epoch: &str, batch: &[Staged]) -> Bytes {
        let mut out = BytesMut::new();
        for (staged, body) in batch.iter().zip(&self.bodies) {
            out.put_slice(&sse::id_line(epoch, staged.seq));
            out.put_slice(body);
        }
        out.freeze()
    }
}
