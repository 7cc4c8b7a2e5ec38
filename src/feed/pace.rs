//! When a topic's staged messages are written: at once, or held a little so that the next
//! write to each subscriber carries more of them (`--batch-window`).
//!
//! Why: on loopback and real NICs alike, a fan-out server's cost is one `write` per subscriber
//! per flush, almost whatever the number of messages in it. Writing every turn makes the batch
//! size "whatever arrived during the previous turn". Holding a busy topic a little makes each
//! write carry more messages, so the same deliveries take fewer writes.
//!
//! The policy, per topic and per worker (pure, unit tested here):
//! - **Load is detected per topic from its own messages and writes.** A topic is *under
//!   load* when its messages arrive, on average over about the last eight, less than half a
//!   write pass (over all its subscribers here) apart: written as they come, its passes would
//!   follow each other back to back, each carrying more than one message. At lower rates
//!   (rows a and b: a pass takes a few ms, messages are 10 ms or more apart) every message is
//!   written in the turn that reads it, exactly as without a window.
//! - **Under load the subscribers are written one group at a time** ([`GROUPS`] groups by
//!   slab key), one group every `min(pass, --batch-window) / GROUPS` after the previous
//!   write ended: a cycle over all groups takes a pass plus `min(pass, --batch-window)`, so
//!   each write carries the messages of about two passes, and a message waits for its
//!   group's next write plus a quarter pass, not for a whole pass over every subscriber.
//! - **The added delay is bounded** by the shorter of `--batch-window` and the duration of a
//!   pass (which every message already waits for); a worker that comes back later than that
//!   writes everyone at once.
//! - **Holds that gain nothing turn holding off for a while.** When a whole cycle of holds
//!   gained no message (a closed-loop publisher waiting for its own echo that is no
//!   subscriber here), the next [`IDLE_HOLD_BACKOFF`] writes are made at once: holding must
//!   not slow down a sender that waits for us.
//! - **A held batch is bounded**: when a group's batch reaches [`MAX_HELD`] messages every
//!   group is written at once.
//! - **Holding never stalls a sender waiting for its own echo** ([`EchoAhead`]). While a
//!   batch is held, a connection of this worker whose own message is in it, and that
//!   subscribes to the topic, gets what it has not had of the batch at once; the others get it
//!   when their group is written. A closed-loop publisher (its echo is its acknowledgement) then sends
//!   its next messages during the hold, and they join the held batch instead of the next one.
//!   Not after a pass that left bytes queued on a subscriber (its socket was full): then the
//!   echo waits with everyone's, so a fast publisher cannot outrun slow subscribers.

use std::time::{Duration, Instant};

use crate::feed::bus::Origin;

/// Writes made at once after a whole cycle of holds that gained no message.
pub const IDLE_HOLD_BACKOFF: u32 = 32;

/// Messages in a held batch at which it is written without waiting any longer. At 64 messages
/// a write's fixed cost (the syscall and the loopback or NIC path) is shared 64 ways; holding
/// longer would add delay and gain little.
pub const MAX_HELD: usize = 64;

/// Groups a topic's subscribers on a worker are split into (by slab key). Under load the
/// groups are written one at a time, spread evenly over the cycle, so a message waits for
/// its group's next write plus a quarter pass, not for a whole pass over every subscriber.
pub const GROUPS: usize = 4;

/// The group a subscriber with slab key `key` belongs to (fixed for the connection's life).
pub fn group_of(key: u32) -> usize {
    key as usize % GROUPS
}

/// What to do with a topic's staged batches at the end of this turn.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Write every group's batch now.
    Write,
    /// Under load: write this group's batch now, the others later.
    WriteGroup(usize),
    /// Keep them staged; decide again at this time (or earlier if one reaches [`MAX_HELD`]).
    HoldUntil(Instant),
}

/// One topic's pacing state on one worker (a few words, kept in `fanout::LocalTopic`).
#[derive(Debug, Default, Clone)]
pub struct Pace {
    /// When the previous write (of every group or of one) ended.
    last_end: Option<Instant>,
    /// How long a write pass over all the topic's subscribers here takes (measured, or
    /// scaled up from a one-group write).
    pass: Duration,
    /// Longest batch when the current hold began (`None`: not holding).
    held_len: Option<usize>,
    /// Holds in a row that gained no message.
    idle_holds: u32,
    /// Writes still to be made at once after holds that gained nothing.
    backoff: u32,
    /// The group to write next under load.
    next: usize,
    /// When the topic's newest message arrived (`Staged::received`).
    last_arrival: Option<Instant>,
    /// The time between its messages' arrivals, averaged over about the last eight
    /// (`None`: fewer than two so far).
    gap: Option<Duration>,
}

impl Pace {
    /// The decision at `now`, `len` being the longest batch (the one of the group written
    /// longest ago) and `pending(g)` whether group `g` has messages to write; `window` is the
    /// configured bound (`Duration::ZERO`: batching off, always [`Decision::Write`]).
    ///
    /// Under load (messages less than half a pass apart) one group is written every
    /// `min(pass, window) / GROUPS` after the previous write ended, so a full cycle over the
    /// groups takes a pass plus `min(pass, window)`, as a whole-topic hold of that length
    /// would, but each message waits for a quarter pass instead of a whole one. A worker that
    /// comes back later than `min(pass, window)` after the last write writes every group.
    pub fn decide(
        &mut self,
        now: Instant,
        len: usize,
        window: Duration,
        pending: impl Fn(usize) -> bool,
    ) -> Decision {
        if window.is_zero() || self.backoff > 0 || len >= MAX_HELD {
            return Decision::Write;
        }
        let Some(last_end) = self.last_end else {
            return Decision::Write;
        };
        if self.gap.is_none_or(|gap| gap * 2 >= self.pass) {
            // Not under load: messages come at least half a pass apart, so written as they
            // come a pass carries one or two of them. (At one pass apart, row a's rate on a
            // busy box, a few coalesced reads were enough to start holding.)
            return Decision::Write;
        }
        let budget = self.pass.min(window);
        if now >= last_end + budget {
            return Decision::Write; // late (the worker was busy): everyone at once
        }
        let due = last_end + budget / GROUPS as u32;
        if now < due {
            if self.held_len.is_none() {
                self.held_len = Some(len);
            }
            return Decision::HoldUntil(due);
        }
        for i in 0..GROUPS {
            let g = (self.next + i) % GROUPS;
            if pending(g) {
                self.next = (g + 1) % GROUPS;
                return Decision::WriteGroup(g);
            }
        }
        Decision::Write
    }

    /// A write ran from `started` to `ended`, with `len` the longest batch then; it went to
    /// `written` of the topic's `total` subscribers here (all of them, or one group).
    pub fn wrote(
        &mut self,
        started: Instant,
        ended: Instant,
        len: usize,
        written: usize,
        total: usize,
    ) {
        match self.held_len.take() {
            Some(at_hold) if len <= at_hold => {
                // A whole cycle of holds that gained nothing: the sender waits for us.
                self.idle_holds += 1;
                if self.idle_holds >= GROUPS as u32 {
                    self.idle_holds = 0;
                    self.backoff = IDLE_HOLD_BACKOFF;
                }
            }
            _ => {
                self.idle_holds = 0;
                self.backoff = self.backoff.saturating_sub(1);
            }
        }
        let took = ended.saturating_duration_since(started);
        self.pass = if written == 0 || written >= total {
            took
        } else {
            took.mul_f64(total as f64 / written as f64)
        };
        self.last_end = Some(ended);
    }

    /// A message of the topic arrived (was read) at `received`: keeps the average gap.
    pub fn arrived(&mut self, received: Instant) {
        if let Some(last) = self.last_arrival {
            let d = received.saturating_duration_since(last);
            self.gap = Some(match self.gap {
                Some(gap) => gap - gap / 8 + d / 8,
                None => d,
            });
        }
        if self.last_arrival.is_none_or(|last| received > last) {
            self.last_arrival = Some(received);
        }
    }

    /// When the next group is due under load (`None`: nothing written yet).
    pub fn next_due(&self, window: Duration) -> Option<Instant> {
        let budget = self.pass.min(window);
        self.last_end.map(|end| end + budget / GROUPS as u32)
    }

    /// Whether a batch is being held now (for tests and the debug view).
    pub fn holding(&self) -> bool {
        self.held_len.is_some()
    }
}

/// The senders on this worker that got part of a topic's held batch ahead of the others
/// (kept in `fanout::LocalTopic`; empty unless a batch is held).
#[derive(Debug, Default, Clone)]
pub struct EchoAhead {
    /// Each sender met in the held batches, once.
    pub senders: Vec<Sender>,
    /// The last write pass left bytes queued on a subscriber: no echo ahead until a pass
    /// does not.
    pub blocked: bool,
}

/// A connection of this worker that sent a message of the held batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sender {
    /// Its connection id (`Origin::conn`).
    pub conn: u64,
    /// Its slab key and subscriber slot, when it subscribes to the topic here (`None`: it
    /// does not, or it left).
    pub at: Option<(u32, u32)>,
    /// How many messages of its group's batch (from its start) it has been given.
    pub has: usize,
}

impl EchoAhead {
    /// The senders of `origins` (the held messages, in order) not met before: those whose
    /// `worker` is `me`, each once. `find` tells where one subscribes (slab key, slot).
    pub fn meet(
        &mut self,
        origins: impl Iterator<Item = Origin>,
        me: u16,
        mut find: impl FnMut(u64) -> Option<(u32, u32)>,
    ) {
        for origin in origins {
            if origin.worker == me && !self.senders.iter().any(|s| s.conn == origin.conn) {
                let at = find(origin.conn);
                self.senders.push(Sender {
                    conn: origin.conn,
                    at,
                    has: 0,
                });
            }
        }
    }

    /// How many messages of its group's batch the subscriber with slab key `key` was given
    /// ahead.
    pub fn given(&self, key: u32) -> usize {
        self.senders
            .iter()
            .find(|s| s.at.is_some_and(|(k, _)| k == key))
            .map_or(0, |s| s.has)
    }

    /// The batches of the groups `written(g)` were written: their senders start over.
    pub fn written(&mut self, written: impl Fn(usize) -> bool) {
        for s in &mut self.senders {
            if s.at.is_some_and(|(k, _)| written(group_of(k))) {
                s.has = 0;
            }
        }
    }

    /// Nothing is staged any more: forget the senders (`blocked` stays until a pass decides
    /// it).
    pub fn clear(&mut self) {
        self.senders.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn echo_ahead_meets_each_local_sender_once() {
        let o = |worker, conn| Origin { worker, conn };
        let batch = [o(0, 7), o(1, 7), o(0, 7), o(0, 9)];
        let mut e = EchoAhead::default();
        let mut asked = Vec::new();
        e.meet(batch.iter().copied(), 0, |conn| {
            asked.push(conn);
            (conn == 7).then_some((3, 1))
        });
        assert_eq!(asked, vec![7, 9], "each sender of this worker, once");
        assert_eq!(e.senders.len(), 2);
        assert_eq!(e.senders[0].at, Some((3, 1)));
        assert_eq!(e.senders[1].at, None, "9 does not subscribe here");
        e.senders[0].has = 4;
        assert_eq!(e.given(3), 4);
        assert_eq!(e.given(5), 0);
        // Only senders not met before are looked up.
        let longer = [o(0, 7), o(1, 7), o(0, 7), o(0, 9), o(0, 11)];
        e.meet(longer.iter().copied(), 0, |conn| {
            asked.push(conn);
            None
        });
        assert_eq!(asked, vec![7, 9, 11]);
        // Key 3 is in group 3 % GROUPS: writing another group keeps what it was given.
        let other = (group_of(3) + 1) % GROUPS;
        e.written(|g| g == other);
        assert_eq!(e.given(3), 4);
        e.written(|g| g == group_of(3));
        assert_eq!(
            e.given(3),
            0,
            "its group's batch was written: it starts over"
        );
        e.blocked = true;
        e.clear();
        assert!(e.senders.is_empty());
        assert!(e.blocked, "kept until a pass decides it");
    }

    const MS: Duration = Duration::from_millis(1);

    /// Every group has messages.
    fn all(_: usize) -> bool {
        true
    }

    /// Messages arrive 0.1 ms apart until `t`: under load for any pass over 0.1 ms.
    fn busy(p: &mut Pace, t: Instant) {
        for i in (0..10).rev() {
            p.arrived(t - Duration::from_micros(100 * i));
        }
    }

    #[test]
    fn off_or_first_pass_writes_at_once() {
        let t = Instant::now();
        let mut p = Pace::default();
        assert_eq!(p.decide(t, 1, 5 * MS, all), Decision::Write, "no pass yet");
        p.wrote(t, t + 2 * MS, 1, 10, 10);
        assert_eq!(
            p.decide(t + 2 * MS, 1, Duration::ZERO, all),
            Decision::Write
        );
    }

    #[test]
    fn low_load_writes_at_once() {
        let t = Instant::now();
        let mut p = Pace::default();
        // Messages 10 ms apart, passes of 4 ms: written as they come, even right after a pass
        // (and so at 6 ms apart: more than half a pass).
        for i in 0..20 {
            p.arrived(t + 10 * i * MS);
        }
        p.wrote(t + 190 * MS, t + 194 * MS, 1, 10, 10);
        p.arrived(t + 195 * MS);
        assert_eq!(p.decide(t + 195 * MS, 1, 5 * MS, all), Decision::Write);
        assert!(!p.holding());
        let mut r = Pace::default();
        for i in 0..100 {
            r.arrived(t + 3 * i * MS);
        }
        r.wrote(t + 290 * MS, t + 296 * MS, 1, 10, 10);
        assert_eq!(r.decide(t + 297 * MS, 1, 5 * MS, all), Decision::Write);
        // The same pass with messages 1 ms apart: under load.
        let mut q = Pace::default();
        for i in 0..195 {
            q.arrived(t + i * MS);
        }
        q.wrote(t + 190 * MS, t + 194 * MS, 1, 10, 10);
        assert_eq!(
            q.decide(t + 194 * MS, 1, 5 * MS, all),
            Decision::HoldUntil(t + 195 * MS)
        );
    }

    #[test]
    fn under_load_the_groups_are_written_one_by_one_spread_over_the_budget() {
        let t = Instant::now();
        let mut p = Pace::default();
        busy(&mut p, t);
        p.wrote(t, t + 8 * MS, 1, 10, 10); // a pass over everyone took 8 ms
                                           // Right after: under load; the first group is due a quarter of min(8, 20) ms later.
        assert_eq!(
            p.decide(t + 9 * MS, 1, 20 * MS, all),
            Decision::HoldUntil(t + 10 * MS)
        );
        assert_eq!(
            p.decide(t + 10 * MS, 2, 20 * MS, all),
            Decision::WriteGroup(0)
        );
        // Group 0 (a quarter of the subscribers) took 2 ms: the pass is still 8 ms.
        p.wrote(t + 10 * MS, t + 12 * MS, 2, 25, 100);
        assert_eq!(
            p.decide(t + 12 * MS, 1, 20 * MS, all),
            Decision::HoldUntil(t + 14 * MS)
        );
        // Groups without messages are skipped.
        assert_eq!(
            p.decide(t + 14 * MS, 3, 20 * MS, |g| g == 3),
            Decision::WriteGroup(3)
        );
        p.wrote(t + 14 * MS, t + 16 * MS, 3, 25, 100);
        assert_eq!(
            p.decide(t + 18 * MS, 1, 20 * MS, all),
            Decision::WriteGroup(0)
        );
        // The window bounds the budget: min(8, 4) / 4 = 1 ms.
        let mut q = Pace::default();
        busy(&mut q, t);
        q.wrote(t, t + 8 * MS, 1, 10, 10);
        assert_eq!(
            q.decide(t + 8 * MS, 1, 4 * MS, all),
            Decision::HoldUntil(t + 9 * MS)
        );
        // Long after the last write: not under load any more, everyone is written.
        assert_eq!(q.decide(t + 12 * MS, 3, 4 * MS, all), Decision::Write);
    }

    #[test]
    fn holds_that_gain_nothing_for_a_whole_cycle_back_off() {
        let t = Instant::now();
        let mut p = Pace::default();
        busy(&mut p, t);
        p.wrote(t, t + 8 * MS, 8, 10, 10);
        let mut end = t + 8 * MS;
        for _ in 0..GROUPS {
            assert!(matches!(
                p.decide(end, 8, 5 * MS, all),
                Decision::HoldUntil(_)
            ));
            // Nothing came while held: the batch is still 8 long.
            assert!(matches!(
                p.decide(end + 2 * MS, 8, 5 * MS, all),
                Decision::WriteGroup(_)
            ));
            p.wrote(end + 2 * MS, end + 4 * MS, 8, 25, 100);
            end += 4 * MS;
        }
        for i in 0..IDLE_HOLD_BACKOFF {
            // Right after the last write: under load, yet written at once while backing off.
            assert_eq!(p.decide(end, 8, 5 * MS, all), Decision::Write, "write {i}");
            p.wrote(end, end + 8 * MS, 8, 100, 100);
            end += 8 * MS;
        }
        assert!(matches!(
            p.decide(end, 8, 5 * MS, all),
            Decision::HoldUntil(_)
        ));
    }

    #[test]
    fn a_hold_that_gains_keeps_holding() {
        let t = Instant::now();
        let mut p = Pace::default();
        busy(&mut p, t);
        p.wrote(t, t + 8 * MS, 2, 10, 10);
        assert!(matches!(
            p.decide(t + 8 * MS, 2, 5 * MS, all),
            Decision::HoldUntil(_)
        ));
        p.wrote(t + 10 * MS, t + 12 * MS, 5, 25, 100); // grew from 2 to 5 while held
        assert!(matches!(
            p.decide(t + 12 * MS, 1, 5 * MS, all),
            Decision::HoldUntil(_)
        ));
    }

    #[test]
    fn a_full_batch_is_written() {
        let t = Instant::now();
        let mut p = Pace::default();
        p.wrote(t, t + 2 * MS, 1, 10, 10);
        assert_eq!(p.decide(t + 2 * MS, MAX_HELD, 5 * MS, all), Decision::Write);
    }

    #[test]
    fn groups_are_fixed_by_slab_key() {
        assert_eq!(group_of(0), group_of(GROUPS as u32));
        assert_ne!(group_of(0), group_of(1));
        assert!((0..100).all(|k| group_of(k) < GROUPS));
    }
}
