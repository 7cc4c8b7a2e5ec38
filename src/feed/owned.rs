//! The owner's side of topics: numbering, which workers subscribe, each topic's epoch, and
//! its history. Every topic has exactly one owner worker (a hash of its name), so everything
//! here is single-threaded and needs no lock.
//!
//! A topic's state lives while some worker subscribes to it or its history holds a message.
//! When it goes and later comes back, it starts over at number 1 under a new **epoch**, and
//! epochs also change with every server start: a client's `since` from another life of the
//! topic is refused (`epoch_changed`) instead of being misread.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use bytes::Bytes;

use std::hash::{BuildHasher, BuildHasherDefault, DefaultHasher};

use crate::feed::history::{Kept, Ring, Unrecoverable};
use crate::feed::patterns::{IndexError, PatternIndex};
use crate::proto::pattern::Pattern;
use crate::proto::topic::{Start, TopicName};

/// Pattern registrations an owner keeps (one per pattern per subscribing worker), a bound
/// on the index's memory; past it a pattern subscribe is refused `unavailable`.
pub const MAX_PATTERNS_PER_OWNER: usize = 1 << 20;

/// The worker that numbers a topic's messages. Every publish of a topic passes through this
/// one worker, which is what gives every subscriber the same order. The hash is fixed (no
/// random seed) so every worker computes the same owner.
pub fn owner_of(name: &str, workers: usize) -> usize {
    let hash = BuildHasherDefault::<DefaultHasher>::default().hash_one(name);
    (hash % workers as u64) as usize
}

/// Memory charged per kept message beyond its frame bytes (ring slot, eviction-order entry,
/// the topic's share of the table), so many tiny messages cannot dodge the cap.
pub const KEPT_OVERHEAD: usize = 128;

/// The owner's record of a topic.
#[derive(Debug)]
pub struct OwnedTopic {
    /// Number of the last message; 0 before the first.
    pub last_seq: u64,
    /// Workers the topic's messages go to: those in `direct` or `by_pattern`.
    pub interested: Vec<u16>,
    /// Workers with at least one subscriber (they said so with `Interest`).
    direct: Vec<u16>,
    /// Workers with a pattern matching the topic that were sent the topic's start (an
    /// `Attach` or a pattern answer) and have not taken it in yet (`Decline`). Routing to
    /// them meanwhile is what keeps a pattern subscriber's stream whole.
    by_pattern: Vec<u16>,
    /// This life of the topic, unique per server start and owner (see the module doc).
    epoch: u64,
    ring: Ring,
    /// Per-topic counter slot (`--metrics-topics`): `None` until first asked, then resolved
    /// once for this life of the topic.
    stats: Option<Option<u32>>,
}

/// What a subscriber gets when it joins a topic: where the live stream starts and the kept
/// messages to send before it.
#[derive(Debug)]
pub struct Joined {
    pub epoch: String,
    pub last_seq: u64,
    /// Cluster mode: how many presence events Redis had placed on the topic at the answer;
    /// the subscription gets only the later ones. 0 on one node, where events and the
    /// answer share the owner's ordered channel.
    pub events: u64,
    pub replay: Vec<Kept>,
}

/// A topic a pattern matches, with where a subscriber attached now starts: its epoch and
/// the number of its last message, so every message numbered later reaches it once.
#[derive(Debug, Clone)]
pub struct Matched {
    pub topic: TopicName,
    pub epoch: String,
    /// `None` in cluster mode for a topic already known here: Redis numbers it, so the
    /// subscriber joins it through the broker like a direct subscriber (from now).
    pub last: Option<u64>,
}

impl OwnedTopic {
    fn reroute(&mut self) {
        self.interested.clear();
        self.interested.extend_from_slice(&self.direct);
        for w in &self.by_pattern {
            if !self.interested.contains(w) {
                self.interested.push(*w);
            }
        }
    }

    fn unwanted(&self) -> bool {
        self.interested.is_empty() && self.ring.is_empty()
    }
}

/// History settings (`--history`, `--history-ttl`, `--history-max-bytes` per worker).
#[derive(Debug, Clone, Copy)]
pub struct HistoryLimits {
    pub per_topic: usize,
    pub ttl: Option<Duration>,
    pub max_bytes: usize,
}

/// All the topics one worker owns.
#[derive(Debug)]
pub struct Owned {
    topics: HashMap<TopicName, OwnedTopic>,
    limits: HistoryLimits,
    /// Prefix of every epoch name this worker hands out: server start and worker.
    epoch_prefix: String,
    next_epoch: u64,
    /// Every kept message, oldest first across topics: the order the memory cap and the age
    /// limit forget them in. Entries of messages already pushed out of their ring by newer
    /// ones go stale and are skipped (and compacted away).
    order: VecDeque<(TopicName, u64, u64, Instant, usize)>,
    kept: usize,
    kept_bytes: usize,
    /// Patterns of subscribers, keyed by their worker.
    patterns: PatternIndex<u16>,
    /// Topics just created that registered patterns match: (worker, where it starts), to
    /// be sent as `Attach` before the topic's first message (`take_attaches`).
    attaches: Vec<(u16, Matched)>,
    scratch: Vec<u16>,
    /// Cluster mode: Redis numbers the topics, so this side's numbers are not theirs.
    numbered_elsewhere: bool,
}

impl Owned {
    /// `boot` differs between server starts; `worker` tells owners apart.
    pub fn new(boot: u32, worker: u16, limits: HistoryLimits) -> Self {
        Owned {
            topics: HashMap::new(),
            limits,
            epoch_prefix: format!("{boot:08x}.{worker}."),
            next_epoch: 1,
            order: VecDeque::new(),
            kept: 0,
            kept_bytes: 0,
            patterns: PatternIndex::new(MAX_PATTERNS_PER_OWNER),
            attaches: Vec::new(),
            scratch: Vec::new(),
            numbered_elsewhere: false,
        }
    }

    /// Cluster mode: Redis numbers every topic (pattern answers then say "join it").
    pub fn numbered_elsewhere(&mut self) {
        self.numbered_elsewhere = true;
    }

    /// Cluster mode: the listener follows `topic`, unknown here, for a pattern; its
    /// stream goes on after `last` of `epoch`. The topic is created (matched against the
    /// patterns once, as any new topic) and its `Attach` notices carry that position.
    /// Nothing if the topic is known already (a subscriber got there first).
    pub fn discover(&mut self, topic: &TopicName, epoch: &str, last: u64) {
        if self.topics.contains_key(topic) {
            return;
        }
        let from = self.attaches.len();
        self.create(topic).last_seq = last;
        for (_, matched) in &mut self.attaches[from..] {
            matched.epoch = epoch.to_owned();
            matched.last = Some(last);
        }
    }

    /// Whether `topic` goes to no worker (cluster mode: the listener may drop it).
    pub fn unrouted(&self, topic: &TopicName) -> bool {
        self.topics
            .get(topic)
            .is_none_or(|t| t.interested.is_empty())
    }

    pub fn is_empty(&self) -> bool {
        self.topics.is_empty()
    }

    /// Messages kept, and the memory charged for them (for stats).
    pub fn kept(&self) -> (usize, usize) {
        (self.kept, self.kept_bytes)
    }

    fn epoch_name(&self, epoch: u64) -> String {
        format!("{}{epoch}", self.epoch_prefix)
    }

    /// A new life of `topic`. Workers with a matching pattern are routed to from its first
    /// message on, and told so (`attaches`). The pattern walk runs here, once per topic
    /// life, never per message.
    fn create(&mut self, topic: &TopicName) -> &mut OwnedTopic {
        let epoch = self.next_epoch;
        self.next_epoch += 1;
        let mut by_pattern = Vec::new();
        if !self.patterns.is_empty() {
            self.patterns.matching(topic, &mut self.scratch);
            by_pattern.extend_from_slice(&self.scratch);
            for &worker in &by_pattern {
                let matched = Matched {
                    topic: topic.clone(),
                    epoch: self.epoch_name(epoch),
                    last: (!self.numbered_elsewhere).then_some(0),
                };
                self.attaches.push((worker, matched));
            }
        }
        self.topics.entry(topic.clone()).or_insert(OwnedTopic {
            last_seq: 0,
            interested: by_pattern.clone(),
            direct: Vec::new(),
            by_pattern,
            epoch,
            ring: Ring::default(),
            stats: None,
        })
    }

    /// Whether a registered pattern matches `topic` (checked only for a topic not known
    /// here, and only while patterns are registered).
    fn pattern_wants(&mut self, topic: &str) -> bool {
        if self.patterns.is_empty() {
            return false;
        }
        self.patterns.matching(topic, &mut self.scratch);
        !self.scratch.is_empty()
    }

    /// The `Attach` notices of topics created since the last call: sent before anything
    /// else of those topics.
    pub fn take_attaches(&mut self) -> Vec<(u16, Matched)> {
        std::mem::take(&mut self.attaches)
    }

    /// A subscriber of `pattern` on `worker`: register the pattern (once per worker) and
    /// route every known matching topic to the worker from its current number on.
    pub fn register_pattern(
        &mut self,
        pattern: &Pattern,
        worker: u16,
    ) -> Result<Vec<Matched>, IndexError> {
        self.patterns.insert(pattern, worker)?;
        let mut matched = Vec::new();
        for (name, owned) in &mut self.topics {
            if !pattern.matches(name) {
                continue;
            }
            if !owned.by_pattern.contains(&worker) {
                owned.by_pattern.push(worker);
                owned.reroute();
            }
            matched.push(Matched {
                topic: name.clone(),
                epoch: format!("{}{}", self.epoch_prefix, owned.epoch),
                last: (!self.numbered_elsewhere).then_some(owned.last_seq),
            });
        }
        Ok(matched)
    }

    /// `worker` has no subscriber of `pattern` left: new topics are no longer routed there
    /// for it (topics already routed stay so until the worker declines them).
    pub fn unregister_pattern(&mut self, pattern: &Pattern, worker: u16) {
        self.patterns.remove(pattern, worker);
    }

    /// `worker` took in the start of `topic` it was sent for a pattern: from now on only
    /// its own interest (`set_interest`) routes the topic there.
    pub fn decline(&mut self, topic: &TopicName, worker: u16) {
        let Some(owned) = self.topics.get_mut(topic) else {
            return;
        };
        owned.by_pattern.retain(|&w| w != worker);
        owned.reroute();
        if owned.unwanted() {
            self.topics.remove(topic);
        }
    }

    /// Number the next message of `topic` and keep it in history. Without history, a topic
    /// nobody subscribes to is neither numbered nor remembered (`None`). One table lookup
    /// for a known topic: this runs for every published message.
    pub fn sequence(&mut self, topic: &TopicName, frame: &Bytes, now: Instant) -> Option<u64> {
        let per_topic = self.limits.per_topic;
        let owned = match self.topics.get_mut(topic) {
            Some(owned) => owned,
            None => {
                if per_topic == 0 && !self.pattern_wants(topic) {
                    return None;
                }
                self.create(topic)
            }
        };
        owned.last_seq += 1;
        let seq = owned.last_seq;
        if per_topic > 0 {
            let epoch = owned.epoch;
            let kept = Kept {
                seq,
                frame: frame.clone(),
                at: now,
            };
            if let Some(out) = owned.ring.push(kept, per_topic) {
                self.kept -= 1;
                self.kept_bytes -= out.frame.len() + KEPT_OVERHEAD;
            }
            self.kept += 1;
            self.kept_bytes += frame.len() + KEPT_OVERHEAD;
            self.order
                .push_back((topic.clone(), epoch, seq, now, frame.len()));
            self.enforce_cap();
        }
        Some(seq)
    }

    /// The number of `topic`'s last message (0: none yet, or the topic is not known here):
    /// where a presence event falls in the topic's order.
    pub fn last_seq(&self, topic: &TopicName) -> u64 {
        self.topics.get(topic).map_or(0, |t| t.last_seq)
    }

    /// The workers with subscribers of `topic` (cluster mode: where a message numbered by
    /// Redis goes).
    pub fn interested(&self, topic: &TopicName) -> &[u16] {
        self.topics
            .get(topic)
            .map_or(&[], |t| t.interested.as_slice())
    }

    /// The per-topic counter slot of `topic` (`--metrics-topics`), resolved by `resolve` the
    /// first time and kept on the topic: one table lookup, asked only when the flag is set.
    pub fn stats_slot(
        &mut self,
        topic: &TopicName,
        resolve: impl FnOnce(&str) -> Option<u32>,
    ) -> Option<u32> {
        let owned = self.topics.get_mut(topic)?;
        *owned.stats.get_or_insert_with(|| resolve(topic))
    }

    /// Record that `worker` gained or lost its subscribers for `topic`.
    pub fn set_interest(&mut self, topic: &TopicName, worker: u16, active: bool) {
        if active {
            let owned = match self.topics.get_mut(topic) {
                Some(owned) => owned,
                None => self.create(topic),
            };
            if !owned.direct.contains(&worker) {
                owned.direct.push(worker);
                owned.reroute();
            }
        } else if let Some(owned) = self.topics.get_mut(topic) {
            owned.direct.retain(|&w| w != worker);
            owned.reroute();
            if owned.unwanted() {
                self.topics.remove(topic);
            }
        }
    }

    /// A subscriber joins `topic` from `start`. Its worker registered interest first (same
    /// channel, so in order), hence every message numbered after this answer reaches it live,
    /// and every message up to `last_seq` it needs is in `replay`: no gap, no duplicate.
    pub fn join(&mut self, topic: &TopicName, start: &Start) -> Result<Joined, Unrecoverable> {
        if !self.topics.contains_key(topic) {
            self.create(topic);
        }
        let owned = &self.topics[topic];
        let epoch = self.epoch_name(owned.epoch);
        let replay = owned.ring.replay(start, &epoch, owned.last_seq)?;
        Ok(Joined {
            epoch,
            last_seq: owned.last_seq,
            events: 0,
            replay,
        })
    }

    /// Forget messages older than `--history-ttl` (called once per tick).
    pub fn expire(&mut self, now: Instant) {
        let Some(ttl) = self.limits.ttl else {
            return;
        };
        while self
            .order
            .front()
            .is_some_and(|e| now.saturating_duration_since(e.3) >= ttl)
        {
            self.forget_oldest();
        }
    }

    /// Keep the charged memory under the cap, oldest messages first, and the eviction order
    /// from filling up with stale entries.
    fn enforce_cap(&mut self) {
        while self.kept_bytes > self.limits.max_bytes && !self.order.is_empty() {
            self.forget_oldest();
        }
        if self.order.len() > 2 * self.kept + 1024 {
            let topics = &self.topics;
            self.order.retain(|(name, epoch, seq, _, _)| {
                topics
                    .get(name)
                    .is_some_and(|t| t.epoch == *epoch && t.ring.holds(*seq))
            });
        }
    }

    fn forget_oldest(&mut self) {
        let Some((name, epoch, seq, _, len)) = self.order.pop_front() else {
            return;
        };
        let Some(owned) = self.topics.get_mut(&name).filter(|t| t.epoch == epoch) else {
            return;
        };
        if owned.ring.pop_if_oldest(seq).is_some() {
            self.kept -= 1;
            self.kept_bytes -= len + KEPT_OVERHEAD;
        }
        if owned.unwanted() {
            self.topics.remove(&name);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(per_topic: usize, max_bytes: usize) -> HistoryLimits {
        HistoryLimits {
            per_topic,
            ttl: Some(Duration::from_secs(10)),
            max_bytes,
        }
    }

    fn frame(n: usize) -> Bytes {
        Bytes::from(vec![b'x'; n])
    }

    #[test]
    fn without_history_only_interest_keeps_a_topic() {
        let mut o = Owned::new(1, 0, limits(0, 1 << 20));
        let t: TopicName = "chat".into();
        let now = Instant::now();
        assert!(o.sequence(&t, &frame(1), now).is_none());
        o.set_interest(&t, 1, true);
        o.set_interest(&t, 0, true);
        assert_eq!(o.sequence(&t, &frame(1), now), Some(1));
        assert_eq!(o.interested(&t), &[1, 0]);
        assert_eq!(o.sequence(&t, &frame(1), now), Some(2));
        o.set_interest(&t, 1, false);
        o.set_interest(&t, 0, false);
        assert!(o.is_empty());
        assert_eq!(o.kept(), (0, 0));
    }

    #[test]
    fn history_outlives_subscribers_and_a_new_life_gets_a_new_epoch() {
        let mut o = Owned::new(1, 0, limits(3, 1 << 20));
        let t: TopicName = "chat".into();
        let now = Instant::now();
        for _ in 0..5 {
            o.sequence(&t, &frame(10), now);
        }
        assert_eq!(o.kept(), (3, 3 * (10 + KEPT_OVERHEAD)));
        let joined = o.join(&t, &Start::Rewind(10)).unwrap();
        assert_eq!(joined.last_seq, 5);
        assert_eq!(
            joined.replay.iter().map(|k| k.seq).collect::<Vec<_>>(),
            vec![3, 4, 5]
        );
        let first_epoch = joined.epoch;
        // Everything expires: the topic is forgotten, and comes back as a new life.
        o.expire(now + Duration::from_secs(11));
        assert!(o.is_empty());
        assert_eq!(o.kept(), (0, 0));
        assert_eq!(o.sequence(&t, &frame(10), now), Some(1));
        let again = o.join(&t, &Start::Now).unwrap();
        assert_ne!(again.epoch, first_epoch);
        let since_old = Start::Since {
            epoch: first_epoch.clone(),
            seq: 5,
        };
        assert_eq!(
            o.join(&t, &since_old).unwrap_err(),
            Unrecoverable::EpochChanged {
                epoch: first_epoch,
                current: again.epoch
            }
        );
    }

    #[test]
    fn the_memory_cap_forgets_the_oldest_messages_of_any_topic() {
        let cap = 4 * (100 + KEPT_OVERHEAD);
        let mut o = Owned::new(1, 0, limits(100, cap));
        let (a, b): (TopicName, TopicName) = ("a".into(), "b".into());
        let now = Instant::now();
        for _ in 0..3 {
            o.sequence(&a, &frame(100), now);
        }
        for _ in 0..3 {
            o.sequence(&b, &frame(100), now);
        }
        let (kept, bytes) = o.kept();
        assert_eq!(kept, 4);
        assert!(bytes <= cap);
        // a kept only its newest message, b all three.
        assert_eq!(o.join(&a, &Start::Rewind(9)).unwrap().replay.len(), 1);
        assert_eq!(o.join(&b, &Start::Rewind(9)).unwrap().replay.len(), 3);
    }

    #[test]
    fn stale_eviction_entries_are_compacted() {
        let mut o = Owned::new(1, 0, limits(1, 1 << 30));
        let t: TopicName = "t".into();
        let now = Instant::now();
        for _ in 0..10_000 {
            o.sequence(&t, &frame(1), now);
        }
        assert_eq!(o.kept().0, 1);
        assert!(o.order.len() <= 2 + 1024 + 1, "{}", o.order.len());
    }
    #[test]
    fn patterns_route_new_and_known_topics_until_declined() {
        let mut o = Owned::new(1, 0, limits(0, 1 << 20));
        let now = Instant::now();
        let (a, b, other): (TopicName, TopicName, TopicName) =
            ("p/a".into(), "p/b".into(), "q/a".into());
        o.set_interest(&a, 0, true);
        let pattern = Pattern::parse("p/*").unwrap();
        let matched = o.register_pattern(&pattern, 1).unwrap();
        assert_eq!(matched.len(), 1);
        assert_eq!(
            (matched[0].topic.as_ref(), matched[0].last),
            ("p/a", Some(0))
        );
        assert_eq!(o.interested(&a), &[0, 1]);
        // A topic nobody subscribes to is numbered (and created) for the pattern...
        assert_eq!(o.sequence(&b, &frame(1), now), Some(1));
        let attaches = o.take_attaches();
        assert_eq!(attaches.len(), 1);
        assert_eq!((attaches[0].0, attaches[0].1.last), (1, Some(0)));
        assert_eq!(o.interested(&b), &[1]);
        // ...a topic it does not match is not.
        assert!(o.sequence(&other, &frame(1), now).is_none());
        // Interest leaving does not cut the pattern's route; the decline does.
        o.set_interest(&b, 1, true);
        o.set_interest(&b, 1, false);
        assert_eq!(o.interested(&b), &[1]);
        o.decline(&b, 1);
        assert!(o.interested(&b).is_empty());
        assert_eq!(o.last_seq(&b), 0, "the topic is forgotten");
        o.unregister_pattern(&pattern, 1);
        assert!(o.sequence(&b, &frame(1), now).is_none());
        assert!(o.take_attaches().is_empty());
    }

    #[test]
    fn owner_is_stable_and_in_range() {
        for w in 1..8 {
            let o = owner_of("chat", w);
            assert!(o < w);
            assert_eq!(o, owner_of("chat", w));
        }
    }
}
