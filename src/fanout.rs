//! Topic bookkeeping for one worker: who subscribes here (and the messages staged for them
//! this turn), and, for the topics this worker owns, the sequence numbers and which workers
//! have subscribers.

use std::collections::HashMap;
use std::time::Instant;

use bytes::{Bytes, BytesMut};

use crate::bus::Origin;
use crate::topic::TopicName;

/// A message waiting for the end-of-turn flush.
#[derive(Debug)]
pub struct Staged {
    /// The topic-wide sequence number assigned by the owner (kept for history and recovery).
    pub seq: u64,
    pub frame: Bytes,
    pub received: Instant,
    pub origin: Origin,
}

/// Subscribers of one topic on this worker.
#[derive(Debug, Default)]
pub struct LocalTopic {
    /// Slab keys of the subscribed connections; each connection knows its own index here.
    pub subscribers: Vec<usize>,
    /// Messages delivered this turn, in sequence order; written to every subscriber at once at
    /// the end of the turn (one write per subscriber, however many messages).
    pub batch: Vec<Staged>,
}

/// The owner's record of a topic.
#[derive(Debug, Default)]
pub struct OwnedTopic {
    /// Number of the last message; 0 before the first.
    pub last_seq: u64,
    /// Workers with at least one subscriber.
    pub interested: Vec<u16>,
}

/// Per-worker topic tables.
#[derive(Debug, Default)]
pub struct Topics {
    pub local: HashMap<TopicName, LocalTopic>,
    /// Local topics with a non-empty batch, in the order they became dirty.
    pub dirty: Vec<TopicName>,
    /// Topics this worker owns (numbers), while some worker has subscribers for them.
    pub owned: HashMap<TopicName, OwnedTopic>,
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
    /// Add connection `key` to `topic`'s local subscribers.
    pub fn subscribe(&mut self, topic: &TopicName, key: usize) -> Subscribed {
        let entry = self.local.entry(topic.clone()).or_default();
        entry.subscribers.push(key);
        Subscribed {
            slot: (entry.subscribers.len() - 1) as u32,
            first_here: entry.subscribers.len() == 1,
        }
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
            entry.subscribers.swap_remove(slot);
        }
        let moved = entry.subscribers.get(slot).map(|&key| (key, slot as u32));
        let last_here = entry.subscribers.is_empty();
        if last_here {
            self.local.remove(topic);
        }
        Unsubscribed { moved, last_here }
    }

    /// Stage a numbered message for this worker's subscribers of its topic (dropped if none
    /// are left: they all left since the owner routed it, which is not a loss).
    pub fn stage(&mut self, staged: Staged, topic: &TopicName) {
        if let Some(entry) = self.local.get_mut(topic) {
            if entry.batch.is_empty() {
                self.dirty.push(topic.clone());
            }
            entry.batch.push(staged);
        }
    }

    /// Owner side: number the next message of `topic`. Returns the number and the workers
    /// to deliver it to. A topic nobody subscribes to is not remembered.
    pub fn sequence(&mut self, topic: &TopicName) -> Option<(u64, &[u16])> {
        let owned = self.owned.get_mut(topic)?;
        owned.last_seq += 1;
        Some((owned.last_seq, &owned.interested))
    }

    /// Owner side: record that `worker` gained or lost its subscribers for `topic`.
    pub fn set_interest(&mut self, topic: &TopicName, worker: u16, active: bool) {
        if active {
            let owned = self.owned.entry(topic.clone()).or_default();
            if !owned.interested.contains(&worker) {
                owned.interested.push(worker);
            }
        } else if let Some(owned) = self.owned.get_mut(topic) {
            owned.interested.retain(|&w| w != worker);
            if owned.interested.is_empty() {
                self.owned.remove(topic);
            }
        }
    }
}

/// One buffer with the turn's messages of a topic back to back: the same bytes go to every
/// subscriber, so they are gathered once here rather than once per subscriber (as iovecs).
/// A single message is already a buffer and is shared as is. (`benches/fanout_write.rs`
/// measures this against one `writev` of the separate frames per subscriber.)
pub fn cork(batch: &[Staged]) -> Bytes {
    if let [only] = batch {
        return only.frame.clone();
    }
    let mut buf = BytesMut::with_capacity(batch.iter().map(|s| s.frame.len()).sum());
    for staged in batch {
        buf.extend_from_slice(&staged.frame);
    }
    buf.freeze()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unsubscribe_moves_the_last_subscriber_into_the_hole() {
        let mut t = Topics::default();
        let topic: TopicName = "chat".into();
        assert!(t.subscribe(&topic, 10).first_here);
        assert!(!t.subscribe(&topic, 11).first_here);
        assert_eq!(t.subscribe(&topic, 12).slot, 2);
        let u = t.unsubscribe(&topic, 0);
        assert_eq!(u.moved, Some((12, 0)));
        assert!(!u.last_here);
        assert_eq!(t.local[&topic].subscribers, vec![12, 11]);
        t.unsubscribe(&topic, 1);
        assert!(t.unsubscribe(&topic, 0).last_here);
        assert!(t.local.is_empty());
    }

    #[test]
    fn owner_numbers_while_interested() {
        let mut t = Topics::default();
        let topic: TopicName = "chat".into();
        assert!(t.sequence(&topic).is_none());
        t.set_interest(&topic, 1, true);
        t.set_interest(&topic, 0, true);
        assert_eq!(
            t.sequence(&topic).map(|(s, w)| (s, w.to_vec())),
            Some((1, vec![1, 0]))
        );
        assert_eq!(t.sequence(&topic).map(|(s, _)| s), Some(2));
        t.set_interest(&topic, 1, false);
        t.set_interest(&topic, 0, false);
        assert!(t.owned.is_empty());
    }
}
