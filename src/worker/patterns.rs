//! Pattern subscriptions (`prices/*`, `prices/**`): a `herald.v1` subscriber of a pattern
//! follows every matching topic, each as an ordinary subscriber of that topic, so each
//! topic keeps its one order, its `seq`, its batching and the slow-consumer rule.
//!
//! Why no message is missed or doubled (docs/architecture.md, "Topic patterns"):
//! - A pattern subscriber's worker asks every topic owner (`PatternJoin`). The owner
//!   registers the pattern for that worker (`feed::owned`, a segment trie), routes every
//!   matching topic it knows to the worker from now on, and answers with each topic's
//!   epoch and last number. The subscriber is attached to each with `after = last`: the
//!   messages numbered later come after the answer on the same channel.
//! - A topic the owner creates later (first publish, first subscriber) is matched once,
//!   then and there; the owner routes it to the worker and sends `Attach` (with `last`)
//!   before its first message.
//! - Once the worker has attached its subscribers to a topic, they hold its interest as
//!   any subscriber does; the worker then `Decline`s the owner's routing on the pattern's
//!   account. It waits while an answer of its own for a pattern matching the topic is
//!   still on its way (that answer will route the topic again).
//!
//! Grants are checked per concrete topic when it is attached: a topic the token does not
//! grant is never attached, so none of its messages reach the connection.

use std::collections::{HashMap, HashSet};

use super::conn::{PatternSubscription, Subscription};
use super::Worker;
use crate::cluster::SubReq;
use crate::feed::bus::{BusMsg, PatternRequest};
use crate::feed::fanout::Subscriber;
use crate::feed::owned::{owner_of, Matched};
use crate::feed::patterns::{IndexError, PatternIndex};
use crate::proto::pattern::Pattern;
use crate::proto::topic::{Start, TopicName};
use crate::proto::v1::{self, Refusal, Wanted};

/// Pattern subscriptions a worker holds at most, all connections together (a bound on its
/// index's memory; past it a pattern subscribe is refused `unavailable`).
pub const MAX_PATTERN_SUBSCRIBERS: usize = 1 << 20;

/// A worker's pattern subscribers.
pub(super) struct LocalPatterns {
    /// (slab key, pattern join number) of every pattern subscription here, by pattern.
    index: PatternIndex<(u32, u32)>,
    /// Per pattern: its subscribers here and the owners' answers still on their way.
    registry: HashMap<Pattern, Registered>,
    /// The patterns with answers on their way (`pending > 0`), so `awaiting` is one trie
    /// walk, not a scan of every pattern here.
    awaited: PatternIndex<()>,
    /// Topics whose decline waits for an answer (`awaited`); tried again after each one.
    deferred: HashSet<TopicName>,
    scratch: Vec<(u32, u32)>,
    scratch_awaited: Vec<()>,
}

struct Registered {
    subscribers: u32,
    pending: u32,
}

impl LocalPatterns {
    pub(super) fn new() -> Self {
        LocalPatterns {
            index: PatternIndex::new(MAX_PATTERN_SUBSCRIBERS),
            registry: HashMap::new(),
            awaited: PatternIndex::new(MAX_PATTERN_SUBSCRIBERS),
            deferred: HashSet::new(),
            scratch: Vec::new(),
            scratch_awaited: Vec::new(),
        }
    }

    /// Whether an owner's answer for a pattern matching `topic` is still on its way (so
    /// the topic's routing must not be declined yet).
    fn awaiting(&mut self, topic: &str) -> bool {
        self.awaited.matching(topic, &mut self.scratch_awaited);
        !self.scratch_awaited.is_empty()
    }

    /// One more subscriber of `pattern` here, whose `owners` answers are now awaited.
    fn register(&mut self, pattern: &Pattern, owners: u32) {
        let registered = self.registry.entry(pattern.clone()).or_insert(Registered {
            subscribers: 0,
            pending: 0,
        });
        registered.subscribers += 1;
        registered.pending += owners;
        // Bounded like the index: one entry per distinct pattern here.
        let _ = self.awaited.insert(pattern, ());
    }

    /// One owner's answer for `pattern` is in.
    fn answered(&mut self, pattern: &Pattern) {
        let Some(registered) = self.registry.get_mut(pattern) else {
            return;
        };
        registered.pending = registered.pending.saturating_sub(1);
        if registered.pending == 0 {
            self.awaited.remove(pattern, ());
            if registered.subscribers == 0 {
                self.registry.remove(pattern);
            }
        }
    }
}

impl Worker {
    /// Subscribe to a pattern that passed every check (and the subscribe hook, if any).
    pub(super) fn v1_subscribe_pattern(&mut self, key: usize, id: u64, wanted: Wanted) {
        let Some(pattern) = wanted.pattern else {
            return;
        };
        let max = self.config.max_topics_per_conn;
        let Some(feed) = self.v1_feed(key) else {
            return;
        };
        let clash = feed
            .patterns
            .iter()
            .map(|p| &p.pattern)
            .find(|p| p.overlaps(&pattern))
            .map(|p| p.to_string())
            .or_else(|| {
                let direct = feed.subs.iter().filter(|s| s.via.is_none());
                let topic = direct.map(|s| &s.topic).find(|t| pattern.matches(t))?;
                Some(topic.to_string())
            });
        let refusal = if let Some(other) = clash {
            Some(Refusal::Overlaps(other))
        } else if feed.subs.len() + feed.patterns.len() + wanted.since_each.len() >= max {
            Some(Refusal::TooManyTopics(max))
        } else {
            None
        };
        if let Some(refusal) = refusal {
            return self.v1_refuse(key, Some(id), Some(&wanted.topic), &refusal);
        }
        let join = feed.next_join;
        // Every owner answers, and in cluster mode every Redis instance's listener.
        let listeners = self.cluster.as_ref().map_or(0, |c| c.listen.len());
        let answers = (self.bus.workers() + listeners) as u32;
        if self
            .patterns
            .index
            .insert(&pattern, (key as u32, join))
            .is_err()
        {
            return self.v1_refuse(key, Some(id), Some(&wanted.topic), &Refusal::Unavailable);
        }
        let Some(feed) = self.v1_feed(key) else {
            return;
        };
        feed.next_join = join.wrapping_add(1);
        feed.patterns.push(PatternSubscription {
            pattern: pattern.clone(),
            join,
            request: id,
            unanswered: answers,
        });
        for (topic, start) in wanted.since_each {
            if !self.may_subscribe(key, &topic) {
                self.counters.auth_failures += 1;
                self.v1_refuse(key, Some(id), Some(&topic), &Refusal::Forbidden);
                continue;
            }
            let topic = self.shared_topic_name(&topic);
            self.start_join(key, id, topic, start, Some(join), false);
        }
        self.patterns.register(&pattern, answers);
        let request = PatternRequest {
            pattern,
            worker: self.bus.me() as u16,
            key,
            conn: self.conns[key].id,
            join,
        };
        if let Some(cluster) = &self.cluster {
            (self.pattern_backlog)
                .send_all(&cluster.listen, || SubReq::PatternJoin(request.clone()));
        }
        for owner in 0..self.bus.workers() {
            if owner == self.bus.me() {
                self.on_pattern_join(request.clone());
            } else {
                self.bus.send(owner, BusMsg::PatternJoin(request.clone()));
            }
        }
    }

    /// `unsubscribe` of a pattern: it ends with every topic it follows.
    pub(super) fn v1_unsubscribe_pattern(&mut self, key: usize, id: u64, name: &str) {
        let Some(feed) = self.v1_feed(key) else {
            return;
        };
        let Some(i) = feed
            .patterns
            .iter()
            .position(|p| p.pattern.as_str() == name)
        else {
            return self.v1_refuse(key, Some(id), Some(name), &Refusal::NotSubscribed);
        };
        self.end_pattern(key, i);
        self.queue_output(key, v1::unsubscribed(id, name), 0);
    }

    /// End pattern subscription `i` of connection `key` and every topic it follows.
    fn end_pattern(&mut self, key: usize, i: usize) {
        let Some(feed) = self.v1_feed(key) else {
            return;
        };
        let gone = feed.patterns.swap_remove(i);
        let mut followed = Vec::new();
        let mut j = 0;
        while j < feed.subs.len() {
            if feed.subs[j].via == Some(gone.join) {
                followed.push(feed.subs.swap_remove(j));
            } else {
                j += 1;
            }
        }
        for sub in followed {
            self.unsubscribe(&sub.topic, sub.slot);
        }
        self.forget_pattern(key, &gone);
    }

    /// A pattern subscription ended (unsubscribed, or its connection left; the topics it
    /// followed are already left): the last one of its pattern here tells every owner.
    pub(super) fn forget_pattern(&mut self, key: usize, gone: &PatternSubscription) {
        self.patterns
            .index
            .remove(&gone.pattern, (key as u32, gone.join));
        if let Some(cluster) = &self.cluster {
            let pattern = &gone.pattern;
            (self.pattern_backlog)
                .send_all(&cluster.listen, || SubReq::PatternLeave(pattern.clone()));
        }
        let Some(registered) = self.patterns.registry.get_mut(&gone.pattern) else {
            return;
        };
        registered.subscribers = registered.subscribers.saturating_sub(1);
        if registered.subscribers > 0 {
            return;
        }
        if registered.pending == 0 {
            self.patterns.registry.remove(&gone.pattern);
        }
        let me = self.bus.me();
        for owner in 0..self.bus.workers() {
            if owner == me {
                self.topics
                    .owned
                    .unregister_pattern(&gone.pattern, me as u16);
            } else {
                let leave = BusMsg::PatternLeave {
                    pattern: gone.pattern.clone(),
                    worker: me as u16,
                };
                self.bus.send(owner, leave);
            }
        }
    }

    /// Owner side: register the pattern for the asking worker and answer with the matching
    /// topics this worker owns, now routed there.
    pub(super) fn on_pattern_join(&mut self, request: PatternRequest) {
        let result = (self.topics.owned).register_pattern(&request.pattern, request.worker);
        let to = request.worker as usize;
        if to == self.bus.me() {
            self.on_pattern_joined(request, result);
        } else {
            self.bus.send(to, BusMsg::PatternJoined { request, result });
        }
    }

    /// Owner side: the asking worker has no subscriber of the pattern left.
    pub(super) fn on_pattern_leave(&mut self, pattern: &Pattern, worker: u16) {
        self.topics.owned.unregister_pattern(pattern, worker);
    }

    /// One owner's answer: attach the subscriber to each matching topic, from its number.
    pub(super) fn on_pattern_joined(
        &mut self,
        request: PatternRequest,
        result: Result<Vec<Matched>, IndexError>,
    ) {
        self.patterns.answered(&request.pattern);
        let alive = self
            .conns
            .get(request.key)
            .is_some_and(|c| c.id == request.conn);
        match result {
            Ok(matched) => {
                for m in &matched {
                    if alive {
                        self.attach_follower(request.key, request.join, m);
                    }
                    self.decline_when_settled(&m.topic);
                }
                if alive {
                    self.count_answer(request.key, request.join);
                }
            }
            Err(_) if alive => self.pattern_refused(request.key, request.join),
            Err(_) => {}
        }
        // Declines held back for an answer: this one may have been it.
        if !self.patterns.deferred.is_empty() {
            for topic in std::mem::take(&mut self.patterns.deferred) {
                self.decline_when_settled(&topic);
            }
        }
    }

    /// One more owner (or listener, or topic join the pattern started) has answered
    /// pattern subscription `join`; after the last, the pattern's own `subscribed`: it is
    /// live everywhere.
    pub(super) fn count_answer(&mut self, key: usize, join: u32) {
        let Some(feed) = self.v1_feed(key) else {
            return;
        };
        let Some(sub) = feed.patterns.iter_mut().find(|p| p.join == join) else {
            return;
        };
        if sub.unanswered == 0 {
            return; // the pattern's `subscribed` went out already
        }
        sub.unanswered -= 1;
        if sub.unanswered == 0 {
            let reply = v1::pattern_subscribed(sub.request, sub.pattern.as_str());
            self.queue_output(key, reply, 0);
        }
    }

    /// An owner's index is full: the subscription ends, with `unavailable`.
    fn pattern_refused(&mut self, key: usize, join: u32) {
        let Some(feed) = self.v1_feed(key) else {
            return;
        };
        let Some(i) = feed.patterns.iter().position(|p| p.join == join) else {
            return;
        };
        let (id, text) = (
            feed.patterns[i].request,
            feed.patterns[i].pattern.to_string(),
        );
        self.end_pattern(key, i);
        self.v1_refuse(key, Some(id), Some(&text), &Refusal::Unavailable);
    }

    /// A topic an owner just created matches patterns here: attach their subscribers from
    /// its first message.
    pub(super) fn on_attach(&mut self, matched: Matched) {
        let mut wanting = std::mem::take(&mut self.patterns.scratch);
        self.patterns.index.matching(&matched.topic, &mut wanting);
        for &(key, join) in &wanting {
            self.attach_follower(key as usize, join, &matched);
        }
        self.patterns.scratch = wanting;
        self.decline_when_settled(&matched.topic);
    }

    /// Attach pattern subscription `join` of connection `key` to a topic it matches, unless
    /// it follows it already, is at its topic limit (told, with the topic) or its token does
    /// not grant the topic (skipped: the pattern covers only granted topics).
    fn attach_follower(&mut self, key: usize, join: u32, matched: &Matched) {
        let max = self.config.max_topics_per_conn;
        let Some(feed) = self.v1_feed(key) else {
            return;
        };
        let Some(sub) = feed.patterns.iter().find(|p| p.join == join) else {
            return;
        };
        let (id, pattern) = (sub.request, sub.pattern.clone());
        if feed.subs.iter().any(|s| s.topic == matched.topic) {
            return;
        }
        if feed.subs.len() + feed.patterns.len() >= max {
            let refusal = Refusal::TooManyTopics(max);
            return self.v1_refuse(key, Some(id), Some(&matched.topic), &refusal);
        }
        if !self.may_subscribe(key, &matched.topic) {
            return;
        }
        let Some(last) = matched.last else {
            // Cluster mode, a topic known already: Redis numbers it, so join it.
            let topic = matched.topic.clone();
            return self.start_join(key, id, topic, Start::Now, Some(join), false);
        };
        let subscriber = Subscriber {
            key: key as u32,
            envelope: true,
            sse: false,
            after: last,
        };
        let slot = self.add_subscriber(&matched.topic, subscriber);
        if let Some(feed) = self.v1_feed(key) {
            feed.add(Subscription {
                topic: matched.topic.clone(),
                slot,
                joining: None,
                via: Some(join),
            });
        }
        let reply = v1::subscribed_via(
            id,
            &matched.topic,
            Some(pattern.as_str()),
            &matched.epoch,
            last,
            0,
        );
        self.queue_output(key, reply, 0);
    }

    /// The owner may stop routing `topic` here on a pattern's account: the subscribers
    /// attached hold their own interest. Not while an answer that routes it is awaited.
    fn decline_when_settled(&mut self, topic: &TopicName) {
        if self.patterns.awaiting(topic) {
            self.patterns.deferred.insert(topic.clone());
            return;
        }
        let me = self.bus.me();
        let owner = owner_of(topic, self.bus.workers());
        if owner == me {
            self.on_decline(topic, me as u16);
        } else {
            let decline = BusMsg::Decline {
                topic: topic.clone(),
                worker: me as u16,
            };
            self.bus.send(owner, decline);
        }
    }

    /// Owner side: `worker` took in the topic's start. In cluster mode, a topic left with
    /// no worker to go to is dropped by the listener too.
    pub(super) fn on_decline(&mut self, topic: &TopicName, worker: u16) {
        let routed = !self.topics.owned.unrouted(topic);
        self.topics.owned.decline(topic, worker);
        if routed {
            self.drop_if_unrouted(topic);
        }
    }

    /// Owner side, cluster mode: the listener follows `topic` for a pattern; attach the
    /// pattern subscribers from its position (or, if none wants it after all, let go).
    pub(super) fn on_discovered(&mut self, topic: &TopicName, epoch: &str, last: u64) {
        self.topics.owned.discover(topic, epoch, last);
        self.send_attaches();
        self.drop_if_unrouted(topic);
    }

    fn drop_if_unrouted(&mut self, topic: &TopicName) {
        let Some(cluster) = &self.cluster else {
            return;
        };
        if self.topics.owned.unrouted(topic) {
            self.interest_backlog.change(topic, false, &cluster.listen);
        }
    }

    /// Owner side: send the `Attach` notices of topics just created, before anything else
    /// of them (called right after whatever may create a topic).
    pub(super) fn send_attaches(&mut self) {
        let attaches = self.topics.owned.take_attaches();
        let me = self.bus.me();
        for (worker, matched) in attaches {
            if worker as usize == me {
                self.on_attach(matched);
            } else {
                self.bus.send(worker as usize, BusMsg::Attach(matched));
            }
        }
    }
}
