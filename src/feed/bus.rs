//! The bus between workers: bounded `crossbeam-channel` inboxes woken by `mio::Waker`.
//! Nothing here ever blocks: a full inbox parks messages in a bounded per-peer outbox, and
//! past that, messages are dropped and counted (see [`Bus::send`]).

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use crossbeam_channel::{Receiver, Sender, TrySendError};

use crate::feed::history::Unrecoverable;
use crate::feed::owned::{Joined, Matched};
use crate::feed::patterns::IndexError;
use crate::proto::pattern::Pattern;
use crate::proto::presence::{Member, Tally};
use crate::proto::topic::{Start, TopicName};

/// Capacity of each worker's inbox, in messages. Large enough to absorb bursts from every
/// peer for a few loop turns; small enough that a stuck worker holds bounded memory.
pub const INBOX_CAPACITY: usize = 64 * 1024;

/// Messages a sender may park for one peer while that peer's inbox is full, before it starts
/// dropping (and counting) publications to it.
pub const OUTBOX_CAPACITY: usize = 64 * 1024;

/// Which connection sent a message, so `--no-echo` can skip it on its own worker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Origin {
    pub worker: u16,
    pub conn: u64,
}

/// A message on its way through the server: framed once, shared by every hop and subscriber.
#[derive(Debug, Clone)]
pub struct Publication {
    pub topic: TopicName,
    /// The complete server frame (header + payload), encoded once.
    pub frame: Bytes,
    /// Arrival at the server, for the fan-out latency histogram.
    pub received: Instant,
    pub origin: Origin,
    /// The publisher waits for the message's number (an HTTP publish, a `herald.v1` publish).
    pub ack: Option<AckTo>,
}

/// Where the owner sends a publish's number back to.
#[derive(Debug, Clone, Copy)]
pub struct AckTo {
    /// Slab key of the publishing connection on the origin worker (checked against
    /// `origin.conn` on the way back).
    pub key: usize,
    /// The `herald.v1` request id to answer; `None` for an HTTP publish.
    pub request: Option<u64>,
}

/// A `herald.v1` subscriber joining a topic, as its owner needs to know it.
#[derive(Debug)]
pub struct JoinRequest {
    pub topic: TopicName,
    pub worker: u16,
    pub key: usize,
    pub conn: u64,
    /// The connection's join number (see `conn::V1Feed::next_join`).
    pub join: u32,
    pub request: u64,
    pub start: Start,
}

/// A pattern subscriber asking a topic owner for the topics it has that match (and to be
/// told of those it creates later); one request goes to every owner.
#[derive(Debug, Clone)]
pub struct PatternRequest {
    pub pattern: Pattern,
    pub worker: u16,
    pub key: usize,
    pub conn: u64,
    /// The pattern subscription's join number on its connection.
    pub join: u32,
}

/// Why a join was not answered with a stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JoinError {
    /// The start the client asked for cannot be served (see `history::decide`).
    Unrecoverable(Unrecoverable),
    /// Cluster mode: the broker (Redis) could not be asked.
    Unavailable,
}

impl From<Unrecoverable> for JoinError {
    fn from(why: Unrecoverable) -> Self {
        JoinError::Unrecoverable(why)
    }
}

/// What workers tell each other.
#[derive(Debug)]
pub enum BusMsg {
    /// To a topic's owner: number this and fan it out.
    Publish(Publication),
    /// From the owner to a worker with subscribers: deliver message number `seq`.
    Deliver { seq: u64, publication: Publication },
    /// From the owner back to a publisher's worker: the number its message got
    /// (`None`: nobody subscribes and there is no history, so it was not numbered).
    Ack {
        to: AckTo,
        conn: u64,
        seq: Option<u64>,
    },
    /// To a topic's owner, right after the `Interest` that covers it: a `herald.v1`
    /// subscriber wants the stream from `start`.
    Join(JoinRequest),
    /// From the owner: where the joiner's live stream starts and what to replay first (or
    /// why it cannot start there).
    Joined {
        request: JoinRequest,
        result: Result<Joined, JoinError>,
    },
    /// To a topic's owner: `worker` gained its first (`active`) or lost its last subscriber.
    Interest {
        topic: TopicName,
        worker: u16,
        active: bool,
    },
    /// Cluster mode, from the broker bridge to a topic's owner: message `seq`, numbered by
    /// Redis; hand it to the interested workers (no numbering here).
    Remote { seq: u64, publication: Publication },
    /// Cluster mode: messages of `topic` are missing for good (Redis lost them or restarted
    /// empty). The owner forwards it to every interested worker (`forwarded`), and each
    /// tells its subscribers explicitly instead of leaving a silent hole.
    Gap {
        topic: TopicName,
        refusal: Unrecoverable,
        forwarded: bool,
    },
    /// Cluster mode, from the broker bridge to a publisher's worker: Redis could not number
    /// the message (unreachable), so the publisher is told "unavailable", never "published".
    PublishFailed { to: AckTo, conn: u64 },
    /// To every other worker: count (and, with `members`, list) your subscribers of
    /// `topic` for presence query `ticket` of `worker` (`worker::presence`).
    PresenceAsk {
        topic: TopicName,
        worker: u16,
        ticket: u64,
        members: bool,
    },
    /// Back to the asking worker: this worker's (or, from the cluster's presence thread,
    /// the other nodes') share of presence query `ticket`; `None`: Redis could not be asked.
    PresenceShare { ticket: u64, tally: Option<Tally> },
    /// To the owner of a `--presence` topic: a subscriber joined (`joined`) or left. The
    /// owner turns it into a `join` / `leave` event in the topic's order.
    PresenceChange {
        topic: TopicName,
        joined: bool,
        member: Member,
    },
    /// From the owner to each interested worker, on the channel its messages take: a
    /// `join` / `leave` event (an encoded `herald.v1` frame) for the topic's presence
    /// subscribers. It takes no sequence number; it says after which message it happened.
    /// `number`: its count among the topic's events in cluster mode (a subscription gets
    /// only events above its start's, `Joined::events`); 0 on one node.
    PresenceEvent {
        topic: TopicName,
        frame: Bytes,
        number: u64,
    },
    /// Cluster mode, from the broker bridge to a topic's owner: a `join` / `leave` event
    /// Redis placed among the topic's messages (event `number` of the topic); hand it to the
    /// interested workers like a `PresenceEvent` of one's own.
    RemoteEvent {
        topic: TopicName,
        frame: Bytes,
        number: u64,
    },
    /// To every owner: a pattern subscriber arrived on `request.worker`. The owner registers
    /// the pattern for that worker and answers with its matching topics.
    PatternJoin(PatternRequest),
    /// From an owner: its topics matching the pattern, each with where the subscriber's
    /// stream starts (the owner routes them to the worker from there on), or why not.
    PatternJoined {
        request: PatternRequest,
        result: Result<Vec<Matched>, IndexError>,
    },
    /// To every owner: `worker` has no subscriber of `pattern` left.
    PatternLeave { pattern: Pattern, worker: u16 },
    /// From an owner to a worker with a matching pattern: `topic` was just created there
    /// and is routed to the worker from `matched.last` on (sent before its first message).
    Attach(Matched),
    /// To a topic's owner: the worker has taken in an `Attach` (or a pattern answer) for
    /// `topic`; the subscribers it attached hold their interest as ordinary ones, so the
    /// owner stops routing the topic there on the pattern's account.
    Decline { topic: TopicName, worker: u16 },
    /// Cluster mode, from the listening bridge to a topic's owner: a topic no subscriber
    /// here had, now followed for a pattern subscription; its stream is forwarded from message
    /// `last + 1` of `epoch` on (the owner attaches the pattern subscribers from there).
    Discovered {
        topic: TopicName,
        epoch: String,
        last: u64,
    },
}

impl BusMsg {
    /// Only publications may be dropped. Interest changes never are: losing one would
    /// silently cut a worker off a topic (or leak the owner's state); they are rare
    /// (first/last subscriber per worker). Nor acks and joins: a publisher or subscriber
    /// would wait for nothing.
    fn droppable(&self) -> bool {
        matches!(self, BusMsg::Publish(_) | BusMsg::Deliver { .. })
    }
}

/// The sending side of one peer worker.
pub struct PeerLink {
    pub inbox: Sender<BusMsg>,
    pub waker: Arc<mio::Waker>,
}

/// A worker's view of the bus: links to every worker (itself included, unused) and per-peer
/// outboxes that keep order when an inbox is momentarily full.
pub struct Bus {
    me: usize,
    links: Vec<PeerLink>,
    outboxes: Vec<VecDeque<BusMsg>>,
    /// Peers that received something this turn and need one wake-up.
    to_wake: Vec<bool>,
    pub inbox: Receiver<BusMsg>,
    /// Publications dropped because a peer's inbox and outbox were both full.
    pub dropped: u64,
}

impl Bus {
    pub fn new(me: usize, links: Vec<PeerLink>, inbox: Receiver<BusMsg>) -> Self {
        let n = links.len();
        Bus {
            me,
            links,
            outboxes: (0..n).map(|_| VecDeque::new()).collect(),
            to_wake: vec![false; n],
            inbox,
            dropped: 0,
        }
    }

    pub fn me(&self) -> usize {
        self.me
    }

    pub fn workers(&self) -> usize {
        self.links.len()
    }

    /// Queue `msg` for worker `to`. Never blocks. Policy when `to` is overwhelmed: its inbox
    /// full, the message waits in our outbox (order kept); with the outbox full too, a
    /// publication is dropped and counted in `dropped` (shown as `full_drops` in stats) —
    /// like a slow consumer, a worker that cannot keep up loses messages rather than making
    /// every other worker wait or grow memory without bound.
    pub fn send(&mut self, to: usize, msg: BusMsg) {
        self.to_wake[to] = true;
        let outbox = &mut self.outboxes[to];
        if outbox.is_empty() {
            match self.links[to].inbox.try_send(msg) {
                Ok(()) => {}
                Err(TrySendError::Full(msg)) => outbox.push_back(msg),
                Err(TrySendError::Disconnected(_)) => {} // the peer has exited (shutdown)
            }
        } else if outbox.len() < OUTBOX_CAPACITY || !msg.droppable() {
            outbox.push_back(msg);
        } else {
            self.dropped += 1;
        }
    }

    /// Move parked messages into inboxes that have room, then wake each peer that got
    /// something this turn — once per turn, however many messages it got.
    pub fn flush(&mut self) {
        for (to, outbox) in self.outboxes.iter_mut().enumerate() {
            while let Some(msg) = outbox.pop_front() {
                match self.links[to].inbox.try_send(msg) {
                    Ok(()) => {}
                    Err(TrySendError::Full(msg)) => {
                        outbox.push_front(msg);
                        break;
                    }
                    Err(TrySendError::Disconnected(_)) => outbox.clear(),
                }
            }
            if std::mem::take(&mut self.to_wake[to]) {
                // A failed wake means the peer's poll is gone: it is shutting down.
                let _ = self.links[to].waker.wake();
            }
        }
    }

    /// True while some messages wait for room in a peer's inbox (poll again soon).
    pub fn has_parked(&self) -> bool {
        self.outboxes.iter().any(|o| !o.is_empty())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn publication() -> BusMsg {
        BusMsg::Publish(Publication {
            topic: "t".into(),
            frame: Bytes::from_static(b"\x81\x01x"),
            received: Instant::now(),
            origin: Origin { worker: 0, conn: 1 },
            ack: None,
        })
    }

    /// A bus from worker 0 to a peer whose inbox holds only `capacity` messages.
    fn bus_with_tiny_peer(capacity: usize) -> (Bus, Receiver<BusMsg>, mio::Poll) {
        let poll = mio::Poll::new().expect("poll");
        let waker = Arc::new(mio::Waker::new(poll.registry(), mio::Token(0)).expect("waker"));
        let (own_tx, own_rx) = crossbeam_channel::bounded(1);
        let (peer_tx, peer_rx) = crossbeam_channel::bounded(capacity);
        let links = vec![
            PeerLink {
                inbox: own_tx,
                waker: waker.clone(),
            },
            PeerLink {
                inbox: peer_tx,
                waker,
            },
        ];
        (Bus::new(0, links, own_rx), peer_rx, poll)
    }

    #[test]
    fn a_full_inbox_parks_in_order_then_drops_and_counts() {
        let (mut bus, peer, _poll) = bus_with_tiny_peer(2);
        for _ in 0..2 + OUTBOX_CAPACITY + 5 {
            bus.send(1, publication());
        }
        assert!(bus.has_parked());
        assert_eq!(
            bus.dropped, 5,
            "only what fits neither inbox nor outbox is dropped"
        );
        // Interest changes are never dropped, even past the cap.
        bus.send(
            1,
            BusMsg::Interest {
                topic: "t".into(),
                worker: 0,
                active: true,
            },
        );
        assert_eq!(bus.dropped, 5);
        // The peer drains; flushing moves parked messages over in order.
        let mut received = 0;
        while bus.has_parked() {
            while peer.try_recv().is_ok() {
                received += 1;
            }
            bus.flush();
        }
        while let Ok(msg) = peer.try_recv() {
            received += 1;
            if received == 2 + OUTBOX_CAPACITY + 1 {
                assert!(
                    matches!(msg, BusMsg::Interest { .. }),
                    "the interest change came last"
                );
            }
        }
        assert_eq!(received, 2 + OUTBOX_CAPACITY + 1);
    }
}
