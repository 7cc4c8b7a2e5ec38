//! Topic bookkeeping for one worker: who subscribes here (and the messages staged for them
//! this turn), and the topics this worker owns (`owned`: numbers, interest, history).

use std::collections::HashMap;
use std::time::Instant;

use bytes::{Bytes, BytesMut};

use crate::feed::bus::Origin;
use crate::feed::owned::Owned;
use crate::feed::pace::{group_of, EchoAhead, Pace, GROUPS};
use crate::proto::deflate::Frame;
use crate::proto::topic::TopicName;

/// A message waiting for the end-of-turn flush.
#[derive(Debug, Clone)]
pub struct Staged {
    /// The topic-wide sequence number assigned by the owner (kept for history and recovery).
    pub seq: u64,
    pub frame: Bytes,
    pub received: Instant,
    pub origin: Origin,
}

/// A staged message as the compressor reads it (bare payloads).
impl Frame for Staged {
    fn frame(&self) -> &Bytes {
        &self.frame
    }
}

/// One subscriber of a topic on this worker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Subscriber {
    /// Slab key of the connection.
    pub key: u32,
    /// A `herald.v1` connection: gets envelopes (topic, seq, data), not bare payloads.
    pub envelope: bool,
    /// A Server-Sent Events stream: gets events (`proto::sse`), built once per message per
    /// worker like envelopes.
    pub sse: bool,
    /// Deliver only messages numbered above this. 0 for a plain subscriber; [`JOINING`]
    /// while the owner's answer to a `herald.v1` subscribe is on its way (the answer sets
    /// it to the number the live stream starts after, and brings the replay up to it).
    pub after: u64,
}

/// `Subscriber::after` while waiting for the owner's answer: nothing is delivered.
pub const JOINING: u64 = u64::MAX;

/// Subscribers of one topic on this worker.
#[derive(Debug, Default)]
pub struct LocalTopic {
    /// The subscribed connections; each connection knows its own index here.
    pub subscribers: Vec<Subscriber>,
    /// How many of them are `herald.v1` (envelopes are built only if some are).
    pub envelope_subscribers: usize,
    /// Per subscriber group (`pace::group_of`): the messages its subscribers have not been
    /// written yet (this turn's, or held from earlier turns by `pace`), in sequence order;
    /// written to each subscriber of the group at once (one write, however many). The groups
    /// are written together unless the topic is under load; then one at a time, so each
    /// group's batch is a suffix of the longest one. Empty for a group without subscribers.
    pub batches: [Vec<Staged>; GROUPS],
    /// Subscribers here in each group.
    pub group_subs: [u32; GROUPS],
    /// Whether the batch is written this turn or held a little (`--batch-window`).
    pub pace: Pace,
    /// The senders here that got part of the held batch ahead of the others (`feed::pace`).
    pub echo: EchoAhead,
    /// Slot of the topic's per-topic counters (`--metrics-topics`), resolved once when this
    /// state is created; `None`: not counted per topic.
    pub stats: Option<u32>,
    /// Deliveries handed out here (written or queued; busiest-topics ranking, approximate:
    /// partial replays to joining subscribers are left out).
    pub delivered: u64,
    /// `delivered` at the last busiest-topics pick (the difference is this interval's).
    pub delivered_at_pick: u64,
    /// Slot of the topic's latency buckets while it is one of this worker's busiest topics
    /// (allocated only for those, chosen once per stats interval); `None` otherwise.
    pub busy: Option<u32>,
}

impl LocalTopic {
    /// Some group has messages to write.
    pub fn has_staged(&self) -> bool {
        self.batches.iter().any(|b| !b.is_empty())
    }

    /// The longest group batch (the group written longest ago).
    pub fn longest(&self) -> usize {
        self.batches.iter().map(Vec::len).max().unwrap_or(0)
    }
}

/// Per-worker topic tables.
#[derive(Debug)]
pub struct Topics {
    pub local: HashMap<TopicName, LocalTopic>,
    /// Local topics with a non-empty batch, in the order they became dirty.
    pub dirty: Vec<TopicName>,
    /// Topics this worker owns: numbering, interest, history.
    pub owned: Owned,
}

/// Result of adding a subscriber.
pub struct Subscribed {
    pub slot: u32,
    /// This worker had no subscriber for the topic until now: tell the owner.
    pub first_here: bool,
}

/// Result of removing a subscriber.
pub struct Unsubscribed {
    /// The subscriber that moved into the freed slot: its connection must learn its new slot.
    pub moved: Option<(usize, u32)>,
    /// That was the last subscriber here: tell the owner.
    pub last_here: bool,
}

impl Topics {
    pub fn new(owned: Owned) -> Self {
        Topics {
            local: HashMap::new(),
            dirty: Vec::new(),
            owned,
        }
    }

    /// Add `subscriber` to `topic`'s local subscribers.
    pub fn subscribe(&mut self, topic: &TopicName, subscriber: Subscriber) -> Subscribed {
        let entry = self.local.entry(topic.clone()).or_default();
        entry.envelope_subscribers += usize::from(subscriber.envelope);
        entry.group_subs[group_of(subscriber.key)] += 1;
        entry.subscribers.push(subscriber);
        Subscribed {
            slot: (entry.subscribers.len() - 1) as u32,
            first_here: entry.subscribers.len() == 1,
        }
    }

    /// The subscriber at `slot` of `topic`, to update its delivery start.
    pub fn subscriber_mut(&mut self, topic: &TopicName, slot: u32) -> Option<&mut Subscriber> {
        self.local
            .get_mut(topic)?
            .subscribers
            .get_mut(slot as usize)
    }

    /// Remove the subscriber at `slot` (O(1): the last one moves into its place).
    pub fn unsubscribe(&mut self, topic: &TopicName, slot: u32) -> Unsubscribed {
        let Some(entry) = self.local.get_mut(topic) else {
            return Unsubscribed {
                moved: None,
                last_here: false,
            };
        };
        let slot = slot as usize;
        if slot < entry.subscribers.len() {
            let gone = entry.subscribers.swap_remove(slot);
            entry.envelope_subscribers -= usize::from(gone.envelope);
            let group = group_of(gone.key);
            entry.group_subs[group] = entry.group_subs[group].saturating_sub(1);
            if entry.group_subs[group] == 0 {
                entry.batches[group].clear(); // nobody left in the group to write it to
            }
        }
        let moved = entry
            .subscribers
            .get(slot)
            .map(|s| (s.key as usize, slot as u32));
        let last_here = entry.subscribers.is_empty();
        if last_here {
            self.local.remove(topic);
        } else if entry.subscribers.capacity() > 64
            && entry.subscribers.len() * 4 < entry.subscribers.capacity()
        {
            // Most of a crowd left: don't keep its list's memory for the few who stay.
            let keep = entry.subscribers.len() * 2;
            entry.subscribers.shrink_to(keep);
        }
        Unsubscribed { moved, last_here }
    }

    /// The per-topic counter slot of `topic` here (`--metrics-topics`), if it has one.
    pub fn stats_slot(&self, topic: &TopicName) -> Option<u32> {
        self.local.get(topic)?.stats
    }

    /// Stage a numbered message for this worker's subscribers of its topic (dropped if none
    /// are left: they all left since the owner routed it, which is not a loss).
    pub fn stage(&mut self, staged: Staged, topic: &TopicName) {
        if let Some(entry) = self.local.get_mut(topic) {
            if !entry.has_staged() {
                self.dirty.push(topic.clone());
            }
            entry.pace.arrived(staged.received);
            let last = entry.group_subs.iter().rposition(|&n| n > 0);
            for g in 0..GROUPS {
                if Some(g) == last {
                    entry.batches[g].push(staged);
                    break;
                }
                if entry.group_subs[g] > 0 {
                    entry.batches[g].push(staged.clone());
                }
            }
        }
    }
}

/// One buffer with the turn's messages of a topic back to back: the same bytes go to every
/// subscriber, so they are gathered once here rather than once per subscriber (as iovecs).
/// A single message is already a buffer and is shared as is. (`benches/fanout_write.rs`
/// measures this against one `writev` of the separate frames per subscriber.)
pub fn cork<'a>(frames: impl Iterator<Item = &'a Bytes> + Clone) -> Bytes {
    let mut count = frames.clone();
    if let (Some(only), None) = (count.next(), count.next()) {
        return only.clone();
    }
    let mut buf = BytesMut::with_capacity(frames.clone().map(Bytes::len).sum());
    for frame in frames {
        buf.extend_from_slice(frame);
    }
    buf.freeze()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::feed::owned::HistoryLimits;

    fn plain(key: u32) -> Subscriber {
        Subscriber {
            key,
            envelope: false,
            sse: false,
            after: 0,
        }
    }

    #[test]
    fn unsubscribe_moves_the_last_subscriber_into_the_hole() {
        let limits = HistoryLimits {
            per_topic: 0,
            ttl: None,
            max_bytes: 0,
        };
        let mut t = Topics::new(Owned::new(0, 0, limits));
        let topic: TopicName = "chat".into();
        assert!(t.subscribe(&topic, plain(10)).first_here);
        assert!(!t.subscribe(&topic, plain(11)).first_here);
        assert_eq!(t.subscribe(&topic, plain(12)).slot, 2);
        let u = t.unsubscribe(&topic, 0);
        assert_eq!(u.moved, Some((12, 0)));
        assert!(!u.last_here);
        assert_eq!(t.local[&topic].subscribers, vec![plain(12), plain(11)]);
        t.unsubscribe(&topic, 1);
        assert!(t.unsubscribe(&topic, 0).last_here);
        assert!(t.local.is_empty());
    }
}
