//! `herald.v1` requests (subscribe with recovery, unsubscribe, publish) and both sides of
//! joining a topic: the owner's answer and the subscriber's replay.
//!
//! Why a join is gap-free and duplicate-free: the subscriber's worker adds the subscriber
//! (holding its deliveries back: `after = JOINING`) and tells the owner — interest first,
//! then the join, on the same channel. The owner answers with its current number `last` and
//! the kept messages up to it. Everything numbered later reaches the subscriber's worker
//! live, after the answer (again one channel, in order); everything numbered earlier is in
//! the answer. The answer sets `after = last`, so the subscriber gets the replay, then
//! exactly the live messages above `last`.

use tungstenite::protocol::frame::coding::{Data, OpCode};

use super::conn::{Feed, PathJoin, Phase, Subscription, V1Feed};
use super::Worker;
use crate::feed::bus::{AckTo, BusMsg, JoinError, JoinRequest};
use crate::feed::fanout::{Subscriber, JOINING};
use crate::feed::history::Unrecoverable;
use crate::feed::owned::{owner_of, Joined};
use crate::proto::frame;
use crate::proto::http::HttpError;
use crate::proto::pattern::is_pattern;
use crate::proto::topic::{self, Start, TopicName};
use crate::proto::v1::{self, Refusal, Request, Wanted};
use bytes::Bytes;

/// Close code for a non-text message on a `herald.v1` connection (RFC 6455: unsupported data).
const UNSUPPORTED_DATA: (u16, &str) = (1003, "herald.v1 takes JSON text messages");

/// The one place where the feed's reasons for not starting a stream become `herald.v1` error
/// codes (the topic state knows nothing of the wire format).
impl From<Unrecoverable> for Refusal {
    fn from(why: Unrecoverable) -> Self {
        match why {
            Unrecoverable::HistoryGap { since, first } => Refusal::HistoryGap { since, first },
            Unrecoverable::EpochChanged { epoch, current } => {
                Refusal::EpochChanged { epoch, current }
            }
            Unrecoverable::SinceAhead { since, last } => Refusal::SinceAhead { since, last },
        }
    }
}

impl From<JoinError> for Refusal {
    fn from(why: JoinError) -> Self {
        match why {
            JoinError::Unrecoverable(why) => why.into(),
            JoinError::Unavailable => Refusal::Unavailable,
        }
    }
}

/// What a `herald.v1` request wants to do with a topic (each needs its own grant).
#[derive(Clone, Copy)]
enum Use {
    Subscribe,
    Publish,
}

impl Worker {
    /// One client message on a `herald.v1` connection: a JSON request.
    pub(super) fn on_v1_message(&mut self, key: usize, message: &[u8]) {
        let (data, payload) = frame::payload_of(message);
        if data != Data::Text {
            let (code, reason) = UNSUPPORTED_DATA;
            return self.fail(key, code, reason);
        }
        match v1::decode(payload) {
            Err((id, refusal)) => self.v1_refuse(key, id, None, &refusal),
            Ok(Request::Subscribe { id, topics }) => {
                for wanted in topics {
                    self.v1_subscribe(key, id, wanted);
                }
            }
            Ok(Request::Unsubscribe { id, topics }) => {
                for name in topics {
                    self.v1_unsubscribe(key, id, &name);
                }
            }
            Ok(Request::Publish {
                id,
                topic,
                data,
                payload,
            }) => {
                if let Err(e) = self.v1_topic_check(key, &topic, Use::Publish) {
                    return self.v1_refuse(key, Some(id), Some(&topic), &e);
                }
                let frame = frame::encode(OpCode::Data(data), &payload);
                let topic = self.shared_topic_name(&topic);
                let ack = AckTo {
                    key,
                    request: Some(id),
                };
                self.publish_hooked(key, topic, frame, Some(ack));
            }
            Ok(Request::Presence { id, topic }) => {
                match self.v1_topic_check(key, &topic, Use::Subscribe) {
                    Ok(()) => self.v1_presence(key, id, &topic),
                    Err(e) => self.v1_refuse(key, Some(id), Some(&topic), &e),
                }
            }
        }
    }

    pub(super) fn v1_refuse(
        &mut self,
        key: usize,
        id: Option<u64>,
        topic: Option<&str>,
        why: &Refusal,
    ) {
        self.counters.v1_refusals += 1;
        self.queue_output(key, v1::error(id, topic, why), 0);
    }

    /// Whether this connection may use `topic` so: a valid name within `--max-topic-len`,
    /// granted by its token (a refusal for lack of a grant counts as an auth failure).
    fn v1_topic_check(&mut self, key: usize, topic: &str, what: Use) -> Result<(), Refusal> {
        topic::validate(topic).map_err(Refusal::BadTopic)?;
        if self.check_topic_len(topic).is_err() {
            return Err(Refusal::BadTopic(topic::TopicError::TooLong));
        }
        let granted = match what {
            Use::Subscribe => self.may_subscribe(key, topic),
            Use::Publish => self.may_publish(key, topic),
        };
        if !granted {
            self.counters.auth_failures += 1;
            return Err(Refusal::Forbidden);
        }
        Ok(())
    }

    pub(super) fn v1_feed(&mut self, key: usize) -> Option<&mut V1Feed> {
        match &mut self.conns.get_mut(key)?.phase {
            Phase::Open {
                feed: Feed::V1(feed),
                ..
            } => Some(feed),
            _ => None,
        }
    }

    /// Subscribe to one topic: deliveries are held back until the owner says where the
    /// stream starts (see the module doc).
    fn v1_subscribe(&mut self, key: usize, id: u64, wanted: Wanted) {
        if wanted.pattern.is_some() {
            // A pattern's grants are checked per topic as it is followed; its length here.
            if self.check_topic_len(&wanted.topic).is_err() {
                let refusal = Refusal::BadTopic(topic::TopicError::TooLong);
                return self.v1_refuse(key, Some(id), Some(&wanted.topic), &refusal);
            }
            return self.v1_subscribe_hooked(key, id, wanted);
        }
        if let Err(e) = self.v1_topic_check(key, &wanted.topic, Use::Subscribe) {
            return self.v1_refuse(key, Some(id), Some(&wanted.topic), &e);
        }
        self.v1_subscribe_hooked(key, id, wanted);
    }

    /// Subscribe to one topic that passed every check (and the subscribe hook, if any).
    pub(super) fn v1_subscribe_now(&mut self, key: usize, id: u64, wanted: Wanted) {
        if wanted.pattern.is_some() {
            return self.v1_subscribe_pattern(key, id, wanted);
        }
        let max = self.config.max_topics_per_conn;
        let events_refused = (wanted.presence)
            .then(|| self.presence_events_allowed(&wanted.topic).err())
            .flatten();
        let Some(feed) = self.v1_feed(key) else {
            return;
        };
        let covering = feed
            .patterns
            .iter()
            .find(|p| p.pattern.matches(&wanted.topic));
        let refusal = if let Some(p) = covering {
            Some(Refusal::Overlaps(p.pattern.to_string()))
        } else if feed.subs.iter().any(|s| *s.topic == *wanted.topic) {
            Some(Refusal::AlreadySubscribed)
        } else if feed.subs.len() + feed.patterns.len() >= max {
            Some(Refusal::TooManyTopics(max))
        } else {
            None
        };
        let refusal = refusal.or(events_refused);
        if let Some(refusal) = refusal {
            return self.v1_refuse(key, Some(id), Some(&wanted.topic), &refusal);
        }
        let topic = self.shared_topic_name(&wanted.topic);
        self.start_join(key, id, topic, wanted.start, None, wanted.presence);
    }

    /// Add the connection to `topic` held back (`JOINING`) and ask the owner where its
    /// stream starts (`via`: for a pattern subscription).
    pub(super) fn start_join(
        &mut self,
        key: usize,
        id: u64,
        topic: TopicName,
        start: Start,
        via: Option<u32>,
        presence: bool,
    ) {
        let Some(feed) = self.v1_feed(key) else {
            return;
        };
        let join = feed.next_join;
        feed.next_join = join.wrapping_add(1);
        if let Some(pattern) = via.and_then(|v| feed.patterns.iter_mut().find(|p| p.join == v)) {
            if pattern.unanswered > 0 {
                // The pattern's own `subscribed`, not sent yet, waits for this start too.
                pattern.unanswered += 1;
            }
        }
        let subscriber = Subscriber {
            key: key as u32,
            envelope: true,
            sse: false,
            after: JOINING,
        };
        let slot = self.add_subscriber(&topic, subscriber);
        let conn = self.conns[key].id;
        if let Some(feed) = self.v1_feed(key) {
            feed.add(Subscription {
                topic: topic.clone(),
                slot,
                joining: Some((join, id)),
                via,
            });
        }
        if presence {
            self.watch_presence(key, &topic);
        }
        self.send_join(key, conn, join, id, topic, start);
    }

    fn send_join(
        &mut self,
        key: usize,
        conn: u64,
        join: u32,
        id: u64,
        topic: TopicName,
        start: Start,
    ) {
        let me = self.bus.me();
        let request = JoinRequest {
            topic,
            worker: me as u16,
            key,
            conn,
            join,
            request: id,
            start,
        };
        let owner = owner_of(&request.topic, self.bus.workers());
        if owner == me {
            self.on_join(request);
        } else {
            self.bus.send(owner, BusMsg::Join(request));
        }
    }

    /// Unsubscribe from one topic (also cancels a subscribe still waiting for its answer,
    /// which then gets none).
    fn v1_unsubscribe(&mut self, key: usize, id: u64, name: &str) {
        if is_pattern(name) {
            return self.v1_unsubscribe_pattern(key, id, name);
        }
        let Some(feed) = self.v1_feed(key) else {
            return;
        };
        let direct = |s: &Subscription| *s.topic == *name && s.via.is_none();
        let Some(i) = feed.subs.iter().position(direct) else {
            return self.v1_refuse(key, Some(id), Some(name), &Refusal::NotSubscribed);
        };
        let sub = feed.subs.swap_remove(i);
        self.unsubscribe(&sub.topic, sub.slot);
        self.queue_output(key, v1::unsubscribed(id, name), 0);
    }

    /// Cluster mode: subscribe a raw path connection held back (`JOINING`) and ask the broker
    /// where its stream starts (`Start::Now`); `response`, its 101, waits for the answer
    /// (`on_path_joined`). Answered at once, a message numbered in Redis between the 101
    /// and the node's subscription to the topic's channel would never reach it.
    pub(super) fn join_path(&mut self, key: usize, topic: TopicName, response: Bytes) {
        let subscriber = Subscriber {
            key: key as u32,
            envelope: false,
            sse: false,
            after: JOINING,
        };
        let slot = self.add_subscriber(&topic, subscriber);
        let conn = &mut self.conns[key];
        conn.enter(Phase::Joining {
            since: self.tick,
            join: Box::new(PathJoin {
                feed: Feed::Path {
                    topic: topic.clone(),
                    slot,
                },
                response,
            }),
        });
        let id = conn.id;
        self.send_join(key, id, 0, 0, topic, Start::Now);
    }

    /// The broker answered a raw path connection's join: send its 101 and let messages above
    /// the answer's number through, frames it sent meanwhile included; or answer 503.
    pub(super) fn on_path_joined(&mut self, key: usize, result: Result<Joined, JoinError>) {
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        let joined = match result {
            Ok(joined) => joined,
            Err(_) => {
                self.refuse(key, HttpError::Unavailable);
                return;
            }
        };
        let Some(Feed::Path { topic, slot }) = conn.phase.feed() else {
            return;
        };
        let (topic, slot) = (topic.clone(), *slot);
        if let Some(subscriber) = self.topics.subscriber_mut(&topic, slot) {
            subscriber.after = joined.last_seq;
        }
        let open = Phase::Open {
            feed: Feed::Path { topic, slot },
            last_ping: self.tick,
        };
        let Phase::Joining { join, .. } = self.conns[key].enter(open) else {
            return;
        };
        self.queue_output(key, join.response, 0);
        self.read_held_frames(key);
    }

    /// Owner side: answer a join with where the stream starts and what to replay.
    pub(super) fn on_join(&mut self, request: JoinRequest) {
        let Some(request) = self.join_through_broker(request) else {
            return; // cluster mode: the bridge answers from Redis
        };
        let result = (self.topics.owned)
            .join(&request.topic, &request.start)
            .map_err(JoinError::from);
        self.send_attaches();
        let to = request.worker as usize;
        if to == self.bus.me() {
            self.on_joined(request, result);
        } else {
            self.bus.send(to, BusMsg::Joined { request, result });
        }
    }

    /// Subscriber side: the owner answered. Send `subscribed` and the replay, and let live
    /// messages above the start through; or, refused, drop the subscription and say why.
    pub(super) fn on_joined(&mut self, request: JoinRequest, result: Result<Joined, JoinError>) {
        let key = request.key;
        if self.conns.get(key).is_none_or(|c| c.id != request.conn) {
            return; // gone meanwhile
        }
        if self.is_sse_stream(key) {
            return self.on_sse_joined(request, result);
        }
        if matches!(self.conns[key].phase, Phase::Joining { .. }) {
            return self.on_path_joined(key, result);
        }
        let Some(feed) = self.v1_feed(key) else {
            return;
        };
        let this_join = |s: &Subscription| {
            s.topic == request.topic && s.joining.is_some_and(|(join, _)| join == request.join)
        };
        let Some(i) = feed.subs.iter().position(this_join) else {
            return; // unsubscribed meanwhile
        };
        let topic = request.topic;
        let via = feed.subs[i].via;
        let pattern = via.and_then(|join| {
            let p = feed.patterns.iter().find(|p| p.join == join)?;
            Some(p.pattern.clone())
        });
        match result {
            Ok(joined) => {
                feed.subs[i].joining = None;
                let slot = feed.subs[i].slot;
                if let Some(subscriber) = self.topics.subscriber_mut(&topic, slot) {
                    subscriber.after = joined.last_seq;
                }
                self.presence_started(key, &topic, joined.events);
                let reply = v1::subscribed_via(
                    request.request,
                    &topic,
                    pattern.as_ref().map(|p| p.as_str()),
                    &joined.epoch,
                    joined.last_seq,
                    joined.replay.len(),
                );
                self.queue_output(key, reply, 0);
                for kept in &joined.replay {
                    let envelope = v1::envelope(&topic, kept.seq, &kept.frame);
                    self.queue_output(key, envelope, 1);
                }
                self.counters.replayed += joined.replay.len() as u64;
                if let Some(via) = via {
                    self.count_answer(key, via);
                }
            }
            Err(JoinError::Unrecoverable(refusal)) if via.is_some() => {
                // A pattern's topic whose since cannot be served: say why, then follow it
                // from now on, as the pattern does every topic it did not resume.
                let join = feed.next_join;
                feed.next_join = join.wrapping_add(1);
                feed.subs[i].joining = Some((join, request.request));
                let refusal = Refusal::from(refusal);
                self.v1_refuse(key, Some(request.request), Some(&topic), &refusal);
                let (conn, id) = (request.conn, request.request);
                self.send_join(key, conn, join, id, topic, Start::Now);
            }
            Err(refusal) => {
                // (For a pattern's topic: the broker is unreachable; the client is told, and
                // the pattern does not follow this topic until it is subscribed again.)
                let sub = feed.subs.swap_remove(i);
                self.unsubscribe(&sub.topic, sub.slot);
                let refusal = Refusal::from(refusal);
                self.v1_refuse(key, Some(request.request), Some(&topic), &refusal);
                if let Some(via) = via {
                    self.count_answer(key, via);
                }
            }
        }
    }
}
