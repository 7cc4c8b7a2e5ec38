//! Where a worker meets cluster mode (`--broker`, `src/cluster/`). Kept apart from the
//! single-node hot path: each hook in the other worker files is one `if` on
//! `self.cluster`.
//!
//! - Publishing: the message goes to the publishing bridge thread (Redis numbers it); the
//!   publisher's ack comes back from there. While Redis is down a publish is refused at once
//!   (HTTP 503, `herald.v1` `unavailable`; raw mode has no acks: counted as unavailable).
//! - Interest: the owner worker tells the listening bridge thread when the node gains its
//!   first or loses its last subscriber of a topic (SUBSCRIBE / UNSUBSCRIBE in Redis). The
//!   bridge's queue is bounded (`cluster::LISTEN_QUEUE`): a change it cannot take waits in
//!   the worker's `cluster::interest::InterestBacklog` (the latest state per topic), retried
//!   every turn; a join that cannot be queued right behind its topic's change is refused
//!   as unavailable and counted.
//! - Delivery: the bridge hands each heard message to the topic's owner here, which passes
//!   it to the interested workers as `Deliver`, exactly like a locally numbered message.
//! - Gaps: a hole Redis cannot fill ends every subscription to the topic on this node with
//!   an explicit notice (see docs/protocol.md, "Cluster mode").

use super::conn::{Feed, Phase};
use super::Worker;
use crate::cluster::interest::JoinRefused;
use crate::cluster::{BrokerStats, PublishReq};
use crate::feed::bus::{AckTo, BusMsg, JoinError, JoinRequest, Publication};
use crate::feed::history::Unrecoverable;
use crate::feed::owned::owner_of;
use crate::proto::http::HttpError;
use crate::proto::topic::{Start, TopicName};
use crate::proto::v1::Refusal;

/// Close code and reason for a raw-mode subscriber whose topic has a hole that cannot be
/// filled (RFC 6455 1012 "service restart": reconnect).
pub(super) const BROKER_GAP: (u16, &str) = (1012, "cluster broker lost messages: reconnect");

impl Worker {
    /// Cluster mode: send a publish to Redis through the bridge. Returns it back if this
    /// node is not in cluster mode.
    pub(super) fn publish_to_broker(&mut self, publication: Publication) -> Option<Publication> {
        let Some(cluster) = &self.cluster else {
            return Some(publication);
        };
        let Publication {
            topic,
            frame,
            origin,
            ack,
            ..
        } = publication;
        let request = PublishReq {
            topic,
            frame,
            origin,
            ack,
        };
        // While Redis is unreachable the publishing thread answers at once (it retries its
        // connection with backoff), so the queue does not fill up with doomed publishes.
        if cluster.publish.try_send(request).is_err() {
            BrokerStats::count(&cluster.stats.unavailable, 1);
            if let Some(to) = ack {
                self.on_publish_failed(to, origin.conn);
            }
        }
        None
    }

    /// Redis could not number a message: its publisher is told so.
    pub(super) fn on_publish_failed(&mut self, to: AckTo, conn_id: u64) {
        let key = to.key;
        let Some(conn) = self.conns.get(key).filter(|c| c.id == conn_id) else {
            return;
        };
        match to.request {
            Some(id) => {
                if matches!(conn.phase, Phase::Open { .. }) {
                    self.v1_refuse(key, Some(id), None, &Refusal::Unavailable);
                }
            }
            None => {
                if matches!(conn.phase, Phase::AwaitingAck { .. }) {
                    self.reply_and_close(key, HttpError::Unavailable.response());
                }
            }
        }
    }

    /// Owner side, every mode: `worker` gained or lost its subscribers of `topic`. In
    /// cluster mode, the node's first and last subscriber also (un)subscribe it in Redis.
    pub(super) fn owner_interest(&mut self, topic: &TopicName, worker: u16, active: bool) {
        let Some(cluster) = &self.cluster else {
            self.topics.owned.set_interest(topic, worker, active);
            return self.send_attaches();
        };
        let before = self.topics.owned.interested(topic).is_empty();
        self.topics.owned.set_interest(topic, worker, active);
        let after = self.topics.owned.interested(topic).is_empty();
        if before != after {
            self.interest_backlog.change(topic, !after, &cluster.listen);
        }
    }

    /// Cluster mode, each turn: hand the listening bridges the interest changes their full
    /// queues could not take, until they are full again.
    pub(super) fn retry_interest_backlog(&mut self) {
        if let Some(cluster) = &self.cluster {
            self.interest_backlog.retry(&cluster.listen);
            self.pattern_backlog.retry(&cluster.listen);
        }
    }

    /// Owner side, cluster mode: a join is answered by the bridge (from Redis), consistently
    /// with the stream it forwards. Returns the request back if not in cluster mode.
    pub(super) fn join_through_broker(&mut self, request: JoinRequest) -> Option<JoinRequest> {
        let Some(cluster) = &self.cluster else {
            return Some(request);
        };
        match self.interest_backlog.join(request, &cluster.listen) {
            Ok(()) => {}
            Err(JoinRefused::Full(request)) => {
                BrokerStats::count(&cluster.stats.unavailable, 1);
                self.on_joined(request, Err(JoinError::Unavailable));
            }
            Err(JoinRefused::Closed(request)) => {
                self.on_joined(request, Err(JoinError::Unavailable));
            }
        }
        None
    }

    /// Owner side, cluster mode: a message numbered by Redis, for this node's subscribers.
    pub(super) fn deliver_remote(&mut self, seq: u64, publication: Publication) {
        self.hand_to_workers(seq, publication);
    }

    /// A hole in `topic` that cannot be filled. The owner passes it on to the other
    /// interested workers; every worker ends its subscriptions to the topic explicitly:
    /// `herald.v1` subscribers get an `error` with the topic and `history_gap` or
    /// `epoch_changed` (and are unsubscribed), raw-mode subscribers are closed with 1012.
    pub(super) fn on_broker_gap(
        &mut self,
        topic: TopicName,
        refusal: Unrecoverable,
        forwarded: bool,
    ) {
        let me = self.bus.me();
        if !forwarded && owner_of(&topic, self.bus.workers()) == me {
            let others: Vec<u16> = self
                .topics
                .owned
                .interested(&topic)
                .iter()
                .copied()
                .filter(|&w| w as usize != me)
                .collect();
            for worker in others {
                let gap = BusMsg::Gap {
                    topic: topic.clone(),
                    refusal: refusal.clone(),
                    forwarded: true,
                };
                self.bus.send(worker as usize, gap);
            }
        }
        let refusal = Refusal::from(refusal);
        let keys: Vec<usize> = self
            .topics
            .local
            .get(&topic)
            .map(|t| t.subscribers.iter().map(|s| s.key as usize).collect())
            .unwrap_or_default();
        for key in keys {
            let Some(Phase::Open { feed, .. }) = self.conns.get_mut(key).map(|c| &mut c.phase)
            else {
                continue;
            };
            match feed {
                Feed::V1(feed) => {
                    let Some(i) = feed.subs.iter().position(|s| s.topic == topic) else {
                        continue;
                    };
                    let sub = feed.subs.swap_remove(i);
                    let pattern = sub.via.and_then(|via| {
                        let p = feed.patterns.iter().find(|p| p.join == via)?;
                        Some((via, p.request))
                    });
                    self.unsubscribe(&sub.topic, sub.slot);
                    self.v1_refuse(key, pattern.map(|p| p.1), Some(&topic), &refusal);
                    if let Some((via, id)) = pattern {
                        // A pattern goes on with the topic's new life, from now.
                        self.start_join(key, id, topic.clone(), Start::Now, Some(via), false);
                    }
                }
                // An SSE stream ends; its client comes back with its Last-Event-ID and gets
                // what it can of the topic, or a `gap` event.
                Feed::Path { .. } | Feed::Sse(_) => {
                    let (code, reason) = BROKER_GAP;
                    self.fail(key, code, reason);
                }
            }
        }
    }
}
