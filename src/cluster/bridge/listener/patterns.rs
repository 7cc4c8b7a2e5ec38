//! The listener's side of pattern subscriptions (`prices/*`): which topics in Redis a
//! pattern held on this node matches, now and later.
//!
//! Why a SUBSCRIBE per topic and no PSUBSCRIBE: a Redis glob `*` also matches `/` (so
//! `prices/*` would bring in the traffic of `prices/a/b`, which nobody here wants), and a
//! Redis Cluster's sharded pub/sub has no pattern form at all. Instead:
//! - When the node starts to hold a pattern, the listener first hears the topic notices
//!   (`script::NOTICES`: the publish script announces the first message of every topic
//!   life), then SCANs Redis for the topics that exist (`script::seq_key_glob`) and follows
//!   each one the pattern matches from its current number (the pattern's subscribers want
//!   what is numbered after their `subscribed`). Only then does it answer the worker.
//! - A notice of a matching topic it does not follow: the topic began after the pattern
//!   was held, so it is followed from its first message (taken from the log).
//! - A followed topic goes to its owner worker (`Discovered`), which attaches the pattern's
//!   subscribers from that number. From then on it is a topic like any other.
//! - After a reconnect notices may have been missed, so every pattern is scanned again: a
//!   matching topic not followed yet began meanwhile (followed from its first message).
//!
//! A topic stays followed while the node wants it or a pattern held here matches it. One
//! the owner let go of while a pattern still matches it (its subscribers here declined it:
//! not granted, or over their topic limit) is handed to the owner again when another
//! subscriber of a matching pattern arrives, since the owner may have forgotten it.

use std::time::{Duration, Instant};

use super::{Listener, Position, Stop};
use crate::cluster::script;
use crate::cluster::wire::Wire;
use crate::cluster::BrokerStats;
use crate::feed::bus::{BusMsg, PatternRequest};
use crate::feed::owned::owner_of;
use crate::feed::patterns::IndexError;
use crate::proto::pattern::Pattern;
use crate::proto::topic::TopicName;

/// Topics a listener follows in Redis, at most, where patterns would bring in more (a
/// bound on its subscriptions and their memory; topics its subscribers name are bounded by
/// the connections' own limits). A pattern whose scan would pass it is refused
/// `unavailable`; a new matching topic past it is not followed (counted in
/// `herald_broker_pattern_topics_refused_total`, and logged).
pub const MAX_PATTERN_TOPICS: usize = 1 << 20;

/// Topics subscribed to and positioned (or unsubscribed from) in one round trip per Redis
/// node, when a pattern's scan follows them (or its last holder lets them go).
const FOLLOW_BATCH: usize = 1000;

/// At most one log line this often about topics refused at the cap.
const REFUSED_LOG_EVERY: Duration = Duration::from_secs(60);

/// A pattern held on this node.
pub(super) struct Held {
    /// Pattern subscriptions holding it (one per `PatternJoin`, one fewer per
    /// `PatternLeave`).
    holders: u32,
    /// Whether its matching topics are followed: a scan found the existing ones, so from
    /// then on a matching topic not followed yet is one that began later. Only scanned
    /// patterns are in the listener's `pattern_index`.
    scanned: bool,
}

/// Where a newly followed topic's stream starts for this node.
#[derive(Clone, Copy, PartialEq, Eq)]
enum FollowFrom {
    /// At its current number: it existed when the pattern was first held.
    Now,
    /// At its life's first message: it began after the pattern was held.
    Start,
}

impl Listener {
    /// A pattern subscription on this node (`SubReq::PatternJoin`). The first one of its
    /// pattern has the listener follow every matching topic before it is answered; a
    /// failure is answered too (the subscription is refused `unavailable`).
    pub(super) fn join_pattern(
        &mut self,
        request: PatternRequest,
        wire: &mut Wire,
    ) -> Result<(), Stop> {
        if self.hold(&request.pattern) {
            self.offer_again(&request.pattern);
            self.answer_pattern(request, true);
            return Ok(());
        }
        match self.scan(&request.pattern, wire, FollowFrom::Now) {
            Ok(left_out) => {
                let followed = left_out == 0;
                if followed {
                    if let Some(held) = self.patterns.get_mut(&request.pattern) {
                        held.scanned = true;
                    }
                    // Never full: one entry per distinct pattern, bounded by the workers'.
                    let _ = self.pattern_index.insert(&request.pattern, ());
                }
                self.answer_pattern(request, followed);
                Ok(())
            }
            Err(stop) => {
                self.answer_pattern(request, false);
                Err(stop)
            }
        }
    }

    /// While Redis is down: counted (its `PatternLeave` will come), refused.
    pub(super) fn refuse_pattern(&mut self, request: PatternRequest) {
        self.hold(&request.pattern);
        BrokerStats::count(&self.stats.unavailable, 1);
        self.answer_pattern(request, false);
    }

    /// Count one more holder of `pattern`; whether its topics are followed already.
    fn hold(&mut self, pattern: &Pattern) -> bool {
        let held = self.patterns.entry(pattern.clone()).or_insert(Held {
            holders: 0,
            scanned: false,
        });
        held.holders += 1;
        held.scanned
    }

    /// A pattern subscription ended (`SubReq::PatternLeave`). After the last one of its
    /// pattern, the topics nothing here wants any more are let go (with `wire`; without,
    /// while Redis is down, they are only forgotten).
    pub(super) fn leave_pattern(
        &mut self,
        pattern: &Pattern,
        wire: Option<&mut Wire>,
    ) -> Result<(), Stop> {
        let Some(held) = self.patterns.get_mut(pattern) else {
            return Ok(());
        };
        held.holders = held.holders.saturating_sub(1);
        if held.holders > 0 {
            return Ok(());
        }
        let scanned = held.scanned;
        self.patterns.remove(pattern);
        if !scanned {
            return Ok(());
        }
        self.pattern_index.remove(pattern, ());
        let candidates: Vec<TopicName> = (self.pattern_only.iter())
            .filter(|t| pattern.matches(t))
            .cloned()
            .collect();
        let mut gone = Vec::new();
        for topic in candidates {
            if !self.pattern_wants(&topic) {
                self.topics.remove(&topic);
                self.pattern_only.remove(&topic);
                gone.push(topic);
            }
        }
        self.count_topics();
        let Some(wire) = wire else {
            return Ok(());
        };
        for batch in gone.chunks(FOLLOW_BATCH) {
            wire.unsubscribe_many(batch)?;
        }
        if self.pattern_index.is_empty() {
            wire.unlisten_notices()?;
        }
        Ok(())
    }

    /// After a reconnect: hear the notices again and follow every matching topic that began
    /// while they could not be heard.
    pub(super) fn rescan(&mut self, wire: &mut Wire) -> Result<(), Stop> {
        let scanned: Vec<Pattern> = (self.patterns.iter())
            .filter(|(_, held)| held.scanned)
            .map(|(pattern, _)| pattern.clone())
            .collect();
        for pattern in scanned {
            let left_out = self.scan(&pattern, wire, FollowFrom::Start)?;
            if left_out > 0 {
                self.refused_topics(left_out as u64);
            }
        }
        Ok(())
    }

    /// A topic notice (`script::NOTICES`): a topic life began; follow it from its first
    /// message if a pattern held here matches it and it is not followed yet.
    pub(super) fn on_notice(&mut self, payload: &[u8], wire: &mut Wire) -> Result<(), Stop> {
        let topic = std::str::from_utf8(payload)
            .ok()
            .and_then(script::topic_of_channel);
        let Some(topic) = topic else {
            BrokerStats::count(&self.stats.malformed, 1);
            return Ok(());
        };
        if self.topics.contains_key(&topic) || !self.pattern_wants(&topic) {
            return Ok(());
        }
        if self.topics.len() >= MAX_PATTERN_TOPICS {
            self.refused_topics(1);
            return Ok(());
        }
        self.follow(wire, &topic, FollowFrom::Start)
    }

    /// Whether a pattern held here (and scanned) matches `topic`.
    pub(super) fn pattern_wants(&mut self, topic: &str) -> bool {
        self.pattern_index.matching(topic, &mut self.scratch);
        !self.scratch.is_empty()
    }

    /// Follow every topic in Redis that `pattern` matches and this node does not follow
    /// yet, from `from`, hearing the notices first (so a topic that begins during the scan
    /// is either found or noticed). If they would pass [`MAX_PATTERN_TOPICS`], none is
    /// followed; returns how many were left out (0: all followed).
    fn scan(
        &mut self,
        pattern: &Pattern,
        wire: &mut Wire,
        from: FollowFrom,
    ) -> Result<usize, Stop> {
        wire.listen_notices()?;
        let room = MAX_PATTERN_TOPICS.saturating_sub(self.topics.len());
        let glob = script::seq_key_glob(pattern);
        let found = wire.topics_matching(&glob, room + self.topics.len())?;
        let new: Vec<TopicName> = (found.into_iter())
            .filter(|t| pattern.matches(t) && !self.topics.contains_key(t))
            .collect();
        if new.len() > room {
            if self.pattern_index.is_empty() {
                wire.unlisten_notices()?;
            }
            return Ok(new.len());
        }
        for batch in new.chunks(FOLLOW_BATCH) {
            wire.subscribe_many(batch)?;
            let positions = self.positions_of(wire, batch)?;
            for (topic, (epoch, current, events)) in batch.iter().zip(positions) {
                self.hand_over(wire, topic, (epoch, current, events), from)?;
            }
        }
        Ok(0)
    }

    /// SUBSCRIBE to `topic`, learn where it stands, and hand it over (below).
    fn follow(&mut self, wire: &mut Wire, topic: &TopicName, from: FollowFrom) -> Result<(), Stop> {
        wire.subscribe(topic)?;
        let position = self.position_of(wire, topic, "")?;
        self.hand_over(wire, topic, position, from)
    }

    /// A topic now subscribed, at Redis's `(epoch, current, events)`: followed from `from`
    /// and handed to its owner worker (what Redis numbered since, taken from the log,
    /// follows). The owner attaches the pattern subscribers from there, or says it has none
    /// (`Interest` off).
    fn hand_over(
        &mut self,
        wire: &mut Wire,
        topic: &TopicName,
        (epoch, current, events): (String, u64, u64),
        from: FollowFrom,
    ) -> Result<(), Stop> {
        let last = match from {
            FollowFrom::Now => current,
            FollowFrom::Start => 0,
        };
        let position = Position {
            epoch: epoch.clone(),
            last,
            events,
            retired: None,
        };
        self.topics.insert(topic.clone(), Some(position));
        self.count_topics();
        let discovered = BusMsg::Discovered {
            topic: topic.clone(),
            epoch,
            last,
        };
        self.out.send(owner_of(topic, self.workers), discovered);
        if last < current {
            self.fill(wire, topic, last + 1, current)?;
        }
        Ok(())
    }

    /// Hand the topics followed for patterns alone that `pattern` matches to their owners
    /// again, from where this node stands: a new subscriber of `pattern` may want what the
    /// earlier ones declined, and the owner may have forgotten the topic.
    fn offer_again(&mut self, pattern: &Pattern) {
        let offered: Vec<TopicName> = (self.pattern_only.iter())
            .filter(|t| pattern.matches(t))
            .cloned()
            .collect();
        for topic in offered {
            let Some(Some(position)) = self.topics.get(&topic) else {
                continue;
            };
            let discovered = BusMsg::Discovered {
                topic: topic.clone(),
                epoch: position.epoch.clone(),
                last: position.last,
            };
            self.out.send(owner_of(&topic, self.workers), discovered);
            self.pattern_only.remove(&topic);
        }
    }

    fn refused_topics(&mut self, n: u64) {
        BrokerStats::count(&self.stats.pattern_topics_refused, n);
        if (self.refused_logged).is_none_or(|at| at.elapsed() >= REFUSED_LOG_EVERY) {
            self.refused_logged = Some(Instant::now());
            log::warn!(
                "broker: {MAX_PATTERN_TOPICS} topics followed in Redis; new topics matching a pattern are not followed"
            );
        }
    }

    /// Tell a pattern subscriber's worker whether this listener follows its pattern now
    /// (`false`: the subscription is refused `unavailable`).
    fn answer_pattern(&mut self, request: PatternRequest, followed: bool) {
        let worker = request.worker as usize;
        let result = if followed {
            Ok(Vec::new())
        } else {
            Err(IndexError::Unavailable)
        };
        self.out
            .send(worker, BusMsg::PatternJoined { request, result });
    }
}
