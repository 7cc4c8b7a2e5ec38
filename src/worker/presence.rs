//! Presence: how many subscribe to a topic across all workers, who they are (for topics
//! `--presence` names), and their `join` / `leave` events in the topic's order.
//!
//! **Counts and member lists are gathered when asked, never kept.** Each worker already has
//! the topic's local subscriber list (`feed::fanout::LocalTopic`), so a subscribe or an
//! unsubscribe costs presence nothing. A query (`herald.v1` `presence`, `GET /topics/<topic>`)
//! asks every other worker for its share (`BusMsg::PresenceAsk`), adds its own, and answers
//! when the last share (`BusMsg::PresenceShare`) is in. Each share is exact at the moment
//! its worker took it; shares of different workers may be a turn apart.
//!
//! **Join/leave events go through the topic's owner, like messages.** A subscriber arriving
//! or leaving on a `--presence` topic (any kind: raw, `herald.v1`, SSE) is told to the owner
//! (`BusMsg::PresenceChange`, one message, O(1)). The owner encodes the event once, with the
//! number of the topic's last message (`after`), and sends it to every interested worker on
//! the channel its `Deliver`s take (`BusMsg::PresenceEvent`), so every worker receives the
//! topic's messages and events in one order. A worker first writes out the topic's staged
//! messages (they came before the event), then queues the event for the topic's presence
//! subscribers (`herald.v1` subscriptions with `"presence":true`) whose join is answered.
//!
//! **Cluster mode** (`--broker`, `cluster::presence`): each worker marks the topics whose
//! local subscribers changed (a set insert) and, once a second, reports their figures to the
//! node's presence thread, which keeps the node's figures in Redis. A query also asks that
//! thread for the other nodes' share (one more share to wait for); the node's own share is
//! gathered from its workers as above.
//!
//! **Join/leave events in cluster mode** go through Redis instead of the owner's numbering:
//! the owner hands the change to the topic's listening bridge thread (`SubReq::Event`, the
//! queue the topic's joins take), which has Redis place the event on the topic's channel
//! with `after` = the topic's current number (`cluster::script::EVENT`), so every node hears
//! it at the same place among the messages. Each node's bridge hands it back to the topic's
//! owner (`BusMsg::RemoteEvent`), which sends it on like its own. Redis also counts the
//! topic's events: a subscription gets only those counted after its start
//! (`Joined::events`), which keeps its own join and older events from it on every node.

use std::collections::{HashMap, HashSet};
use std::time::Instant;

use bytes::Bytes;
use crossbeam_channel::TrySendError;

use super::conn::{Conn, Feed, Phase};
use super::Worker;
use crate::cluster::presence::{PresenceReq, PERIOD};
use crate::cluster::{BrokerStats, SubReq};
use crate::feed::bus::BusMsg;
use crate::feed::owned::owner_of;
use crate::ops::config::Config;
use crate::proto::http::HttpError;
use crate::proto::pattern::PatternList;
use crate::proto::presence::{self, Member, Tally};
use crate::proto::topic::TopicName;
use crate::proto::v1::Refusal;

/// Presence queries one worker may have waiting for shares at once. Past it a query is
/// refused as `unavailable` (HTTP 503), counted with the other refusals, never queued.
pub const MAX_PENDING_QUERIES: usize = 1024;

/// Who waits for a presence answer.
#[derive(Debug, Clone, Copy)]
enum Asker {
    /// A `herald.v1` `presence` request `id`.
    V1 { key: usize, conn: u64, id: u64 },
    /// `GET /topics/<topic>`, in `Phase::AwaitingCount`.
    Http { key: usize, conn: u64 },
}

/// A query waiting for the other workers' shares.
#[derive(Debug)]
struct Query {
    asker: Asker,
    topic: TopicName,
    waiting: usize,
    tally: Tally,
    /// The cluster's share could not be had (Redis unreachable, or its queue full).
    failed: bool,
}

/// A connection that asked for a topic's events.
#[derive(Debug, Clone, Copy)]
struct Watcher {
    key: usize,
    conn: u64,
    /// Cluster mode: the topic's event count at the subscription's start; only events
    /// counted above it are sent (0 until then, and on one node).
    floor: u64,
}

/// One worker's presence state: its open queries and its presence subscribers.
#[derive(Debug)]
pub struct Presence {
    /// `--presence`: the topics with member lists and events.
    topics: PatternList,
    /// `--presence-max-members`.
    cap: usize,
    /// This process's start id (the cluster's node id): part of anonymous member ids.
    node: u32,
    next_ticket: u64,
    queries: HashMap<u64, Query>,
    /// Per topic, the connections here that asked for its events.
    watchers: HashMap<TopicName, Vec<Watcher>>,
    /// Cluster mode: topics whose local subscribers changed since the last report.
    changed: HashSet<TopicName>,
    /// Cluster mode: when the next report is due.
    next_report: Option<Instant>,
    /// The connection being hung up (already out of the slab while it leaves its topics):
    /// its slab key and who it was, for its `leave` events.
    leaving: Option<(usize, Member)>,
}

impl Presence {
    pub fn new(config: &Config, node: u32) -> Self {
        Presence {
            topics: PatternList::new(config.presence.clone()),
            cap: config.presence_max_members,
            node,
            next_ticket: 0,
            queries: HashMap::new(),
            watchers: HashMap::new(),
            changed: HashSet::new(),
            leaving: None,
            next_report: config.broker.as_ref().map(|_| Instant::now() + PERIOD),
        }
    }

    /// Whether subscribes and unsubscribes concern presence at all (`--presence` is set, or
    /// cluster mode reports figures): without, the hot path skips it with this one check.
    pub fn follows_subscribers(&self) -> bool {
        !self.topics.is_empty() || self.next_report.is_some()
    }

    /// Whether `topic` keeps member lists and events (`--presence` matches it).
    pub fn keeps_members(&self, topic: &str) -> bool {
        !self.topics.is_empty() && self.topics.matches(topic)
    }
}

impl Worker {
    /// `{"op":"presence","id":N,"topic":T}` (the topic and the grant are checked).
    pub(super) fn v1_presence(&mut self, key: usize, id: u64, topic: &str) {
        let conn = self.conns[key].id;
        let topic = self.shared_topic_name(topic);
        if !self.ask_presence(Asker::V1 { key, conn, id }, topic.clone()) {
            self.v1_refuse(key, Some(id), Some(&topic), &Refusal::Unavailable);
        }
    }

    /// `GET /topics/<topic>` (the publish credential is checked): wait for the count.
    pub(super) fn http_topic_count(&mut self, key: usize, topic: &str) -> bool {
        let conn = self.conns[key].id;
        let topic = self.shared_topic_name(topic);
        self.conns[key].enter(Phase::AwaitingCount { since: self.tick });
        if !self.ask_presence(Asker::Http { key, conn }, topic) {
            return self.refuse(key, HttpError::Unavailable);
        }
        true
    }

    /// Ask every other worker for its share and add ours. False: too many queries wait.
    fn ask_presence(&mut self, asker: Asker, topic: TopicName) -> bool {
        if self.presence.queries.len() >= MAX_PENDING_QUERIES {
            return false;
        }
        let members = self.presence.keeps_members(&topic);
        let tally = self.local_tally(&topic, members);
        let workers = self.bus.workers();
        self.presence.next_ticket += 1;
        let ticket = self.presence.next_ticket;
        let mut query = Query {
            asker,
            topic,
            waiting: workers - 1,
            tally: Tally {
                members: members.then(Vec::new),
                ..Tally::default()
            },
            failed: false,
        };
        query.tally.merge(tally, self.presence.cap);
        if let Some(cluster) = &self.cluster {
            let ask = PresenceReq::Query {
                topic: query.topic.clone(),
                members,
                worker: self.index as u16,
                ticket,
                cap: self.presence.cap,
            };
            match cluster.presence.try_send(ask) {
                Ok(()) => query.waiting += 1,
                Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {
                    cluster
                        .stats
                        .unavailable
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    return false;
                }
            }
        }
        if query.waiting == 0 {
            self.answer_presence(query);
            return true;
        }
        let me = self.bus.me();
        for peer in (0..workers).filter(|&w| w != me) {
            let ask = BusMsg::PresenceAsk {
                topic: query.topic.clone(),
                worker: me as u16,
                ticket,
                members,
            };
            self.bus.send(peer, ask);
        }
        self.presence.queries.insert(ticket, query);
        true
    }

    /// This worker's subscribers of `topic`: the exact count and, with `members`, at most
    /// the cap's worth of who they are.
    fn local_tally(&self, topic: &TopicName, members: bool) -> Tally {
        let Some(local) = self.topics.local.get(topic) else {
            return Tally {
                members: members.then(Vec::new),
                ..Tally::default()
            };
        };
        let count = local.subscribers.len() as u64;
        let cap = self.presence.cap;
        let list = members.then(|| {
            (local.subscribers.iter())
                .take(cap)
                .filter_map(|s| self.member(s.key as usize))
                .collect()
        });
        Tally {
            count,
            members: list,
            truncated: members && local.subscribers.len() > cap,
        }
    }

    /// Who the connection at `key` is, as presence shows it (also while it is being hung
    /// up, see [`Worker::presence_hang_up`]).
    fn member(&self, key: usize) -> Option<Member> {
        let Some(conn) = self.conns.get(key) else {
            let (k, member) = self.presence.leaving.as_ref()?;
            return (*k == key).then(|| member.clone());
        };
        let sub = self.identity(key);
        Some(Member::new(
            sub,
            self.presence.node,
            self.index as u16,
            conn.id,
            conn.since_ms,
        ))
    }

    /// A peer asks for our share of its query.
    pub(super) fn on_presence_ask(
        &mut self,
        topic: TopicName,
        worker: u16,
        ticket: u64,
        members: bool,
    ) {
        let tally = Some(self.local_tally(&topic, members));
        self.bus
            .send(worker as usize, BusMsg::PresenceShare { ticket, tally });
    }

    /// A peer's share of one of our queries; the last one answers it.
    pub(super) fn on_presence_share(&mut self, ticket: u64, tally: Option<Tally>) {
        let cap = self.presence.cap;
        let Some(query) = self.presence.queries.get_mut(&ticket) else {
            return;
        };
        match tally {
            Some(tally) => query.tally.merge(tally, cap),
            None => query.failed = true,
        }
        query.waiting -= 1;
        if query.waiting == 0 {
            if let Some(query) = self.presence.queries.remove(&ticket) {
                self.answer_presence(query);
            }
        }
    }

    /// Every share is in: answer whoever asked, if it is still there and still waiting.
    fn answer_presence(&mut self, query: Query) {
        match query.asker {
            Asker::V1 { key, conn, id } => {
                let open = self.conns.get(key).is_some_and(|c| {
                    c.id == conn
                        && matches!(
                            c.phase,
                            Phase::Open {
                                feed: Feed::V1(_),
                                ..
                            }
                        )
                });
                if open && query.failed {
                    self.v1_refuse(key, Some(id), Some(&query.topic), &Refusal::Unavailable);
                } else if open {
                    let reply = presence::reply(id, &query.topic, &query.tally);
                    self.queue_output(key, reply, 0);
                }
            }
            Asker::Http { key, conn } => {
                let waiting = self.conns.get(key).is_some_and(|c| {
                    c.id == conn && matches!(c.phase, Phase::AwaitingCount { .. })
                });
                if waiting && query.failed {
                    self.refuse(key, HttpError::Unavailable);
                } else if waiting {
                    self.reply_and_close(key, presence::count_response(query.tally.count));
                }
            }
        }
    }

    /// `"presence":true` in a subscribe: `Err` when the topic has no events.
    pub(super) fn presence_events_allowed(&self, topic: &str) -> Result<(), Refusal> {
        if !self.presence.keeps_members(topic) {
            Err(Refusal::PresenceOff)
        } else {
            Ok(())
        }
    }

    /// Cluster mode, once a [`PERIOD`]: report the figures of the topics that changed here to
    /// the node's presence thread. A full queue keeps them marked for the next period.
    pub(super) fn presence_timer(&mut self) {
        let Some(due) = self.presence.next_report else {
            return;
        };
        if self.now < due {
            return;
        }
        self.presence.next_report = Some(self.now + PERIOD);
        if self.presence.changed.is_empty() {
            return;
        }
        let Some(cluster) = &self.cluster else {
            return;
        };
        let changes: Vec<(TopicName, Tally)> = (self.presence.changed.iter())
            .map(|topic| {
                let members = self.presence.keeps_members(topic);
                (topic.clone(), self.local_tally(topic, members))
            })
            .collect();
        let report = PresenceReq::Report {
            worker: self.index as u16,
            changes,
        };
        if cluster.presence.try_send(report).is_ok() {
            self.presence.changed.clear();
        } else {
            cluster
                .stats
                .unavailable
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
    }

    /// The connection at `key` gets `topic`'s events (once its join is answered).
    pub(super) fn watch_presence(&mut self, key: usize, topic: &TopicName) {
        let conn = self.conns[key].id;
        let watchers = self.presence.watchers.entry(topic.clone()).or_default();
        watchers.push(Watcher {
            key,
            conn,
            floor: 0,
        });
    }

    /// The subscription of the connection at `key` to `topic` started (its join was
    /// answered): in cluster mode it gets only the events counted after `events`.
    pub(super) fn presence_started(&mut self, key: usize, topic: &TopicName, events: u64) {
        if events == 0 || self.presence.watchers.is_empty() {
            return;
        }
        let conn = self.conns.get(key).map(|c| c.id);
        if let Some(watchers) = self.presence.watchers.get_mut(topic) {
            for w in watchers.iter_mut() {
                if w.key == key && Some(w.conn) == conn {
                    w.floor = events;
                }
            }
        }
    }

    /// A connection taken out of the slab is about to leave its topics (`hang_up`): keep who
    /// it was for the `leave` events (`gone` ends it). Nothing unless `--presence` is set.
    pub(super) fn presence_hang_up(&mut self, key: usize, conn: &Conn) {
        if self.presence.topics.is_empty() {
            return;
        }
        let sub = (conn.guard.as_ref())
            .and_then(|g| g.grants.as_ref())
            .and_then(|g| g.sub.clone());
        let member = Member::new(
            sub,
            self.presence.node,
            self.index as u16,
            conn.id,
            conn.since_ms,
        );
        self.presence.leaving = Some((key, member));
    }

    /// The hung-up connection has left its topics.
    pub(super) fn presence_gone(&mut self) {
        self.presence.leaving = None;
    }

    /// A subscriber was added to `topic` here (called by `add_subscriber`).
    pub(super) fn presence_joined(&mut self, topic: &TopicName, key: usize) {
        self.presence_mark(topic);
        if !self.presence.keeps_members(topic) {
            return;
        }
        if let Some(member) = self.member(key) {
            self.send_presence_change(topic, true, member);
        }
    }

    /// A subscriber is leaving `topic` here (called by `unsubscribe`, before the owner hears
    /// of the last one leaving, so the event still finds the topic's place in its order).
    pub(super) fn presence_left(&mut self, topic: &TopicName, key: usize) {
        self.presence_mark(topic);
        if !self.presence.keeps_members(topic) {
            return;
        }
        if let Some(watchers) = self.presence.watchers.get_mut(topic) {
            watchers.retain(|w| w.key != key);
            if watchers.is_empty() {
                self.presence.watchers.remove(topic);
            }
        }
        if let Some(member) = self.member(key) {
            self.send_presence_change(topic, false, member);
        }
    }

    /// Cluster mode: `topic`'s local figures changed; report them with the next period's.
    fn presence_mark(&mut self, topic: &TopicName) {
        if self.presence.next_report.is_some() && !self.presence.changed.contains(topic) {
            self.presence.changed.insert(topic.clone());
        }
    }

    fn send_presence_change(&mut self, topic: &TopicName, joined: bool, member: Member) {
        let owner = owner_of(topic, self.bus.workers());
        if owner == self.bus.me() {
            self.on_presence_change(topic.clone(), joined, member);
        } else {
            let change = BusMsg::PresenceChange {
                topic: topic.clone(),
                joined,
                member,
            };
            self.bus.send(owner, change);
        }
    }

    /// Owner side: place the event after the topic's last numbered message and send it to
    /// every interested worker, on the channel its messages take. In cluster mode Redis
    /// places it (through the topic's listening bridge thread, never waited for: a full
    /// queue loses the event, counted in `events_dropped`).
    pub(super) fn on_presence_change(&mut self, topic: TopicName, joined: bool, member: Member) {
        if let Some(cluster) = &self.cluster {
            let event = SubReq::Event {
                topic,
                joined,
                member,
            };
            if cluster.listen.try_send(event).is_err() {
                BrokerStats::count(&cluster.stats.events_dropped, 1);
            }
            return;
        }
        let after = self.topics.owned.last_seq(&topic);
        let frame = presence::event(joined, &topic, after, &member);
        self.hand_event_to_workers(&topic, frame, 0);
    }

    /// Owner side: send an event (`number`: its count in cluster mode, 0 on one node) to
    /// every interested worker, on the channel the topic's messages take.
    pub(super) fn hand_event_to_workers(&mut self, topic: &TopicName, frame: Bytes, number: u64) {
        let me = self.bus.me() as u16;
        let mut local = false;
        for &worker in self.topics.owned.interested(topic) {
            if worker == me {
                local = true;
            } else {
                let event = BusMsg::PresenceEvent {
                    topic: topic.clone(),
                    frame: frame.clone(),
                    number,
                };
                self.bus.send(worker as usize, event);
            }
        }
        if local {
            self.on_presence_event(topic, frame, number);
        }
    }

    /// An event of `topic` reached this worker: the messages staged before it go out first,
    /// then the event, to each presence subscriber whose join is answered (in cluster mode,
    /// with a start older than the event: `number` above its floor).
    pub(super) fn on_presence_event(&mut self, topic: &TopicName, frame: Bytes, number: u64) {
        let Some(watchers) = self.presence.watchers.get(topic) else {
            return;
        };
        let watchers: Vec<Watcher> = (watchers.iter())
            .filter(|w| number == 0 || number > w.floor)
            .copied()
            .collect();
        if watchers.is_empty() {
            return;
        }
        if self.topics.local.get(topic).is_some_and(|t| t.has_staged()) {
            // Rare (a join or leave while the topic has messages this very turn): writing
            // every staged batch now is what keeps the event behind them.
            self.flush_topics(true);
        }
        for Watcher { key, conn, .. } in watchers {
            if self.presence_live(key, conn, topic) {
                self.queue_output(key, frame.clone(), 1);
            }
        }
    }

    /// Whether the connection still subscribes to `topic` with its join answered (before
    /// that, events belong to the time before its `subscribed` position).
    fn presence_live(&self, key: usize, conn: u64, topic: &TopicName) -> bool {
        let Some(c) = self.conns.get(key).filter(|c| c.id == conn) else {
            return false;
        };
        match &c.phase {
            Phase::Open {
                feed: Feed::V1(feed),
                ..
            } => feed
                .subs
                .iter()
                .any(|s| s.topic == *topic && s.joining.is_none()),
            _ => false,
        }
    }
}
