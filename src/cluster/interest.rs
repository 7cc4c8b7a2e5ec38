//! The owner worker's side of the bounded queue to a listening bridge thread
//! (`cluster::LISTEN_QUEUE` per bridge). Sans-IO: it only calls [`ListenQueue::try_send`].
//!
//! Why it looks like this:
//! - **A worker never blocks.** Everything is `try_send`.
//! - **An interest change is never lost.** One the queue cannot take waits here, one entry
//!   per topic holding the latest state, and is retried every turn ([`InterestBacklog::retry`]).
//!   Collapsing is safe because the listener's handling of a change is idempotent: what it
//!   ends up with is the last state it was sent, and that is the owner's latest state.
//! - **Per topic, the order is kept.** While a topic's change waits here, later changes of
//!   that topic replace it instead of going ahead of it into the queue, and a join of that
//!   topic goes into the queue only right after it. A join is refused (`unavailable`, for the
//!   caller to count) when it cannot be queued: a client may retry a join, but a change of
//!   interest has no one to retry it.

use std::collections::{HashMap, VecDeque};

use crossbeam_channel::{Sender, TrySendError};

use super::{SubReq, ToShards};
use crate::feed::bus::JoinRequest;
use crate::proto::topic::TopicName;

/// Where interest changes and joins go: one bounded queue (lane) per listening bridge. A full
/// lane does not hold back the others.
pub trait ListenQueue {
    /// How many lanes there are.
    fn lanes(&self) -> usize;
    /// The lane that `topic`'s requests go to (always the same one for a topic).
    fn lane(&self, topic: &str) -> usize;
    /// Queue `request` on its topic's lane, without waiting.
    fn try_send(&self, request: SubReq) -> Result<(), TrySendError<SubReq>>;
    /// Queue `request` on lane `lane`, without waiting (a request for every lane).
    fn try_send_to(&self, lane: usize, request: SubReq) -> Result<(), TrySendError<SubReq>>;
}

impl ListenQueue for ToShards<SubReq> {
    fn lanes(&self) -> usize {
        self.queues.len()
    }

    fn lane(&self, topic: &str) -> usize {
        ToShards::lane(self, topic)
    }

    fn try_send(&self, request: SubReq) -> Result<(), TrySendError<SubReq>> {
        ToShards::try_send(self, request)
    }

    fn try_send_to(&self, lane: usize, request: SubReq) -> Result<(), TrySendError<SubReq>> {
        ToShards::try_send_to(self, lane, request)
    }
}

/// One lane (one bridge).
impl ListenQueue for Sender<SubReq> {
    fn lanes(&self) -> usize {
        1
    }

    fn lane(&self, _topic: &str) -> usize {
        0
    }

    fn try_send_to(&self, _lane: usize, request: SubReq) -> Result<(), TrySendError<SubReq>> {
        Sender::try_send(self, request)
    }

    fn try_send(&self, request: SubReq) -> Result<(), TrySendError<SubReq>> {
        Sender::try_send(self, request)
    }
}

/// Why a join was not queued; the request comes back to be answered `unavailable`.
#[derive(Debug)]
pub enum JoinRefused {
    /// Its lane is full, or its topic's interest change still waits behind a full lane
    /// (counted as unavailable by the caller).
    Full(JoinRequest),
    /// The bridge has exited (shutdown).
    Closed(JoinRequest),
}

/// Interest changes a full lane could not take yet: the latest state per topic.
#[derive(Debug, Default)]
pub struct InterestBacklog {
    waiting: HashMap<TopicName, bool>,
}

impl InterestBacklog {
    /// The node gained its first (`active`) or lost its last subscriber of `topic`: queue
    /// the change, or keep it here (replacing an older waiting state of the topic).
    pub fn change(&mut self, topic: &TopicName, active: bool, queue: &impl ListenQueue) {
        if let Some(waiting) = self.waiting.get_mut(topic) {
            // Behind a change still waiting: going ahead of it would reverse their order.
            *waiting = active;
            return;
        }
        let request = SubReq::Interest {
            topic: topic.clone(),
            active,
        };
        // Disconnected only when the bridge has exited (shutdown): nothing to tell.
        if let Err(TrySendError::Full(_)) = queue.try_send(request) {
            self.waiting.insert(topic.clone(), active);
        }
    }

    /// Once a turn: queue the waiting changes until their lanes are full again.
    pub fn retry(&mut self, queue: &impl ListenQueue) {
        if self.waiting.is_empty() {
            return;
        }
        let mut full = vec![false; queue.lanes()];
        let mut open = full.len();
        self.waiting.retain(|topic, active| {
            let lane = queue.lane(topic);
            if open == 0 || full.get(lane).copied().unwrap_or(true) {
                return true;
            }
            let request = SubReq::Interest {
                topic: topic.clone(),
                active: *active,
            };
            match queue.try_send(request) {
                Ok(()) | Err(TrySendError::Disconnected(_)) => false,
                Err(TrySendError::Full(_)) => {
                    full[lane] = true;
                    open -= 1;
                    true
                }
            }
        });
    }

    /// Queue a join of `request.topic`, right after that topic's waiting change if there is
    /// one (the join must not overtake the interest it depends on).
    pub fn join(
        &mut self,
        request: JoinRequest,
        queue: &impl ListenQueue,
    ) -> Result<(), JoinRefused> {
        if let Some(&active) = self.waiting.get(&request.topic) {
            let change = SubReq::Interest {
                topic: request.topic.clone(),
                active,
            };
            match queue.try_send(change) {
                Ok(()) => {
                    self.waiting.remove(&request.topic);
                }
                Err(TrySendError::Full(_)) => return Err(JoinRefused::Full(request)),
                Err(TrySendError::Disconnected(_)) => {
                    self.waiting.remove(&request.topic);
                    return Err(JoinRefused::Closed(request));
                }
            }
        }
        let Err(refused) = queue.try_send(SubReq::Join(request)) else {
            return Ok(());
        };
        let full = refused.is_full();
        match refused.into_inner() {
            SubReq::Join(request) if full => Err(JoinRefused::Full(request)),
            SubReq::Join(request) => Err(JoinRefused::Closed(request)),
            SubReq::Interest { .. }
            | SubReq::PatternJoin(_)
            | SubReq::PatternLeave(_)
            | SubReq::Event { .. } => {
                unreachable!("a refused join comes back as a join")
            }
        }
    }

    /// Topics whose change waits (at most one entry per topic).
    pub fn len(&self) -> usize {
        self.waiting.len()
    }

    /// Nothing waits (the worker's poll need not come back soon to retry).
    pub fn is_empty(&self) -> bool {
        self.waiting.is_empty()
    }
}

/// Pattern requests (`SubReq::PatternJoin` / `PatternLeave`) go to every bridge. One that a
/// bridge's full queue cannot take waits here, in order per bridge (a leave never overtakes
/// its join), and is retried every turn. Never dropped: a lost leave would keep a pattern
/// subscribed in Redis. Bounded by the worker's pattern subscriptions (each adds at most one
/// join and one leave per bridge).
#[derive(Default)]
pub struct PatternBacklog {
    lanes: Vec<VecDeque<SubReq>>,
}

impl PatternBacklog {
    /// Send `make()` to every bridge, behind whatever waits for it.
    pub fn send_all(&mut self, queue: &impl ListenQueue, mut make: impl FnMut() -> SubReq) {
        self.lanes.resize_with(queue.lanes(), VecDeque::new);
        for (lane, waiting) in self.lanes.iter_mut().enumerate() {
            let request = make();
            if !waiting.is_empty() {
                waiting.push_back(request);
                continue;
            }
            match queue.try_send_to(lane, request) {
                Ok(()) | Err(TrySendError::Disconnected(_)) => {}
                Err(TrySendError::Full(request)) => waiting.push_back(request),
            }
        }
    }

    /// Hand each bridge what waits for it, until its queue is full again.
    pub fn retry(&mut self, queue: &impl ListenQueue) {
        for (lane, waiting) in self.lanes.iter_mut().enumerate() {
            while let Some(request) = waiting.pop_front() {
                match queue.try_send_to(lane, request) {
                    Ok(()) | Err(TrySendError::Disconnected(_)) => {}
                    Err(TrySendError::Full(request)) => {
                        waiting.push_front(request);
                        break;
                    }
                }
            }
        }
    }

    /// Nothing waits.
    pub fn is_empty(&self) -> bool {
        self.lanes.iter().all(VecDeque::is_empty)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::ForTopic;
    use crate::proto::topic::Start;
    use crossbeam_channel::{bounded, Receiver};

    fn topic(name: &str) -> TopicName {
        name.into()
    }

    fn join(name: &str, join: u32) -> JoinRequest {
        JoinRequest {
            topic: topic(name),
            worker: 0,
            key: 0,
            conn: 1,
            join,
            request: u64::from(join),
            start: Start::Now,
        }
    }

    /// What the listener would read, in order: `+t` / `-t` for changes, `j<n>` for joins.
    fn drain(rx: &Receiver<SubReq>) -> Vec<String> {
        rx.try_iter()
            .map(|r| match r {
                SubReq::Interest { topic, active } => {
                    format!("{}{}", if active { '+' } else { '-' }, &*topic)
                }
                SubReq::Join(j) => format!("j{}", j.join),
                SubReq::PatternJoin(p) => format!("p{}", p.pattern),
                SubReq::PatternLeave(p) => format!("q{p}"),
                SubReq::Event { topic, joined, .. } => {
                    format!("{}{}", if joined { 'J' } else { 'L' }, &*topic)
                }
            })
            .collect()
    }

    #[test]
    fn changes_go_straight_through_while_there_is_room() {
        let (tx, rx) = bounded(4);
        let mut backlog = InterestBacklog::default();
        backlog.change(&topic("a"), true, &tx);
        backlog.change(&topic("a"), false, &tx);
        backlog.change(&topic("b"), true, &tx);
        assert!(backlog.is_empty());
        assert_eq!(drain(&rx), ["+a", "-a", "+b"]);
    }

    #[test]
    fn a_change_the_full_queue_cannot_take_waits_and_goes_through_later() {
        let (tx, rx) = bounded(1);
        let mut backlog = InterestBacklog::default();
        backlog.change(&topic("a"), true, &tx);
        backlog.change(&topic("b"), true, &tx);
        assert_eq!(backlog.len(), 1);
        backlog.retry(&tx); // still full: nothing lost, nothing sent
        assert_eq!(backlog.len(), 1);
        assert_eq!(drain(&rx), ["+a"]);
        backlog.retry(&tx);
        assert!(backlog.is_empty());
        assert_eq!(drain(&rx), ["+b"]);
    }

    #[test]
    fn the_latest_state_of_a_topic_wins_and_never_overtakes_what_waits() {
        let (tx, rx) = bounded(1);
        let mut backlog = InterestBacklog::default();
        backlog.change(&topic("a"), true, &tx);
        backlog.change(&topic("a"), false, &tx); // waits
        assert_eq!(drain(&rx), ["+a"]);
        // Room again, but an older change of the topic waits: the new one must not go
        // first (the listener would end with `-a` while the node wants `+a`).
        backlog.change(&topic("a"), true, &tx);
        assert_eq!(drain(&rx), Vec::<String>::new());
        assert_eq!(backlog.len(), 1);
        backlog.retry(&tx);
        assert_eq!(drain(&rx), ["+a"]);
        assert!(backlog.is_empty());

        // And the other way round: on, off collapsing to off.
        let (tx, rx) = bounded(1);
        let mut backlog = InterestBacklog::default();
        backlog.change(&topic("x"), false, &tx); // fills the queue
        backlog.change(&topic("a"), true, &tx);
        backlog.change(&topic("a"), false, &tx);
        assert_eq!(drain(&rx), ["-x"]);
        backlog.retry(&tx);
        assert_eq!(drain(&rx), ["-a"]);
    }

    #[test]
    fn a_join_follows_its_topics_waiting_change_or_is_refused() {
        let (tx, rx) = bounded(2);
        let mut backlog = InterestBacklog::default();
        backlog.change(&topic("x"), true, &tx);
        backlog.change(&topic("y"), true, &tx);
        backlog.change(&topic("a"), true, &tx); // waits
                                                // Full: the join cannot follow the change, so it is refused (not sent ahead).
        assert!(matches!(
            backlog.join(join("a", 1), &tx),
            Err(JoinRefused::Full(r)) if r.join == 1
        ));
        assert_eq!(backlog.len(), 1);
        assert_eq!(drain(&rx), ["+x", "+y"]);
        // Room: the waiting change goes first, then the join.
        assert!(backlog.join(join("a", 2), &tx).is_ok());
        assert!(backlog.is_empty());
        assert_eq!(drain(&rx), ["+a", "j2"]);
    }

    #[test]
    fn a_join_with_no_room_for_itself_is_refused_after_its_change_went() {
        let (tx, rx) = bounded(2);
        let mut backlog = InterestBacklog::default();
        backlog.change(&topic("x"), true, &tx);
        backlog.change(&topic("y"), true, &tx);
        backlog.change(&topic("a"), true, &tx); // waits
        assert_eq!(drain(&rx).len(), 2);
        backlog.change(&topic("z"), true, &tx); // takes one place
        assert!(matches!(
            backlog.join(join("a", 3), &tx),
            Err(JoinRefused::Full(_))
        ));
        // The change itself got the last place: never lost.
        assert!(backlog.is_empty());
        assert_eq!(drain(&rx), ["+z", "+a"]);
    }

    #[test]
    fn a_join_of_a_topic_with_nothing_waiting_goes_straight_through() {
        let (tx, rx) = bounded(1);
        let mut backlog = InterestBacklog::default();
        assert!(backlog.join(join("a", 1), &tx).is_ok());
        assert!(matches!(
            backlog.join(join("a", 2), &tx),
            Err(JoinRefused::Full(_))
        ));
        assert_eq!(drain(&rx), ["j1"]);
    }

    #[test]
    fn after_shutdown_nothing_waits_and_joins_are_handed_back() {
        let (tx, rx) = bounded(1);
        let mut backlog = InterestBacklog::default();
        backlog.change(&topic("x"), true, &tx);
        backlog.change(&topic("a"), true, &tx); // waits
        drop(rx);
        assert!(matches!(
            backlog.join(join("a", 1), &tx),
            Err(JoinRefused::Closed(_))
        ));
        backlog.change(&topic("b"), true, &tx);
        backlog.retry(&tx);
        assert!(backlog.is_empty());
    }

    /// Two lanes of one slot each; topics name their lane (`0…`, `1…`).
    struct Lanes([Sender<SubReq>; 2]);

    impl ListenQueue for Lanes {
        fn lanes(&self) -> usize {
            2
        }
        fn lane(&self, topic: &str) -> usize {
            usize::from(topic.starts_with('1'))
        }
        fn try_send(&self, request: SubReq) -> Result<(), TrySendError<SubReq>> {
            self.0[self.lane(request.topic())].try_send(request)
        }
        fn try_send_to(&self, lane: usize, request: SubReq) -> Result<(), TrySendError<SubReq>> {
            self.0[lane].try_send(request)
        }
    }

    #[test]
    fn pattern_requests_reach_every_lane_in_order_whatever_is_full() {
        let (a, ra) = bounded(1);
        let (b, rb) = bounded(8);
        let lanes = Lanes([a, b]);
        let mut backlog = PatternBacklog::default();
        let p = |s: &str| crate::proto::pattern::Pattern::parse(s).unwrap();
        backlog.send_all(&lanes, || SubReq::PatternLeave(p("a/*")));
        backlog.send_all(&lanes, || SubReq::PatternLeave(p("b/*"))); // lane 0 full: waits
        backlog.send_all(&lanes, || SubReq::PatternLeave(p("c/*"))); // behind it
        assert!(!backlog.is_empty());
        assert_eq!(drain(&rb), ["qa/*", "qb/*", "qc/*"]);
        assert_eq!(drain(&ra), ["qa/*"]);
        backlog.retry(&lanes);
        assert_eq!(drain(&ra), ["qb/*"]);
        backlog.retry(&lanes);
        assert_eq!(drain(&ra), ["qc/*"]);
        assert!(backlog.is_empty());
    }

    #[test]
    fn a_full_lane_does_not_hold_back_another() {
        let (a, ra) = bounded(1);
        let (b, rb) = bounded(1);
        let lanes = Lanes([a, b]);
        let mut backlog = InterestBacklog::default();
        backlog.change(&topic("0x"), true, &lanes);
        backlog.change(&topic("0y"), true, &lanes); // waits: lane 0 full
        backlog.change(&topic("1x"), true, &lanes);
        backlog.change(&topic("1y"), true, &lanes); // waits: lane 1 full
        assert_eq!(backlog.len(), 2);
        assert_eq!(drain(&rb), ["+1x"]);
        backlog.retry(&lanes); // lane 0 still full, lane 1 has room
        assert_eq!(backlog.len(), 1);
        assert_eq!(drain(&rb), ["+1y"]);
        assert_eq!(drain(&ra), ["+0x"]);
        backlog.retry(&lanes);
        assert!(backlog.is_empty());
        assert_eq!(drain(&ra), ["+0y"]);
    }
}
