//! When a topic's staged messages are written: at once, or held a little so that the next
//! write to each subscriber carries more of them (`--batch-window`).
//!
//! Why: on loopback and real NICs alike, a fan-out server's cost is one `write` per subscriber
//! per flush, almost whatever the number of messages in it. Writing every turn makes the batch
//! size "whatever arrived during the previous turn". Holding a busy topic a little makes each
//! write carry more messages, so the same deliveries take fewer writes.
//!
//! The policy, per topic and per worker (pure, unit tested here):
//! - **Load is detected per topic from its own writes.** A topic is *under load* when its next
//!   message arrives less than one write pass after its previous write pass ended: writing it
//!   at once would keep this worker writing that topic more than half of the time. Only then
//!   is the batch held, until `last pass end + min(last pass duration, --batch-window)`. A
//!   message that arrives later than that (low load: rows a and b) is written in the same turn
//!   it is read, exactly as without a window.
//! - **The added delay is bounded** by the shorter of `--batch-window` and the duration of the
//!   topic's previous write pass (which every message of that pass already waited for).
//! - **A hold that gained nothing turns holding off for a while.** When a held batch has not
//!   grown by the time it is written (a closed-loop publisher waiting for its own echo, a
//!   rate too low for the window), the next [`IDLE_HOLD_BACKOFF`] passes are written at once:
//!   holding must not slow down a sender that waits for us.
//! - **A held batch is bounded**: at [`MAX_HELD`] messages it is written at once.
//! - **Holding never stalls a sender waiting for its own echo** ([`EchoAhead`]). While a
//!   batch is held, a connection of this worker whose own message is in it, and that
//!   subscribes to the topic, gets what it has not had of the batch at once; the others get it
//!   when the hold ends. A closed-loop publisher (its echo is its acknowledgement) then sends
//!   its next messages during the hold, and they join the held batch instead of the next one.
//!   Not after a pass that left bytes queued on a subscriber (its socket was full): then the
//!   echo waits with everyone's, so a fast publisher cannot outrun slow subscribers.

use std::time::{Duration, Instant};

use crate::feed::bus::Origin;

/// Write passes that are written at once after a hold that gained no message.
pub const IDLE_HOLD_BACKOFF: u32 = 32;

/// Messages in a held batch at which it is written without waiting any longer. At 64 messages
/// a write's fixed cost (the syscall and the loopback or NIC path) is shared 64 ways; holding
/// longer would add delay and gain little.
pub const MAX_HELD: usize = 64;

/// What to do with a topic's staged batch at the end of this turn.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Write it now.
    Write,
    /// Keep it staged; write it at this time (or earlier if it reaches [`MAX_HELD`]).
    HoldUntil(Instant),
}

/// One topic's pacing state on one worker (a few words, kept in `fanout::LocalTopic`).
#[derive(Debug, Default, Clone)]
pub struct Pace {
    /// When the previous write pass ended.
    last_end: Option<Instant>,
    /// How long the previous write pass took.
    last_took: Duration,
    /// Batch length when the current hold began (`None`: not holding).
    held_len: Option<usize>,
    /// Passes still to be written at once after a hold that gained nothing.
    backoff: u32,
}

impl Pace {
    /// The decision for a batch of `len` messages at `now`, with `window` the configured bound
    /// (`Duration::ZERO`: batching off, always [`Decision::Write`]).
    pub fn decide(&mut self, now: Instant, len: usize, window: Duration) -> Decision {
        if window.is_zero() || self.backoff > 0 || len >= MAX_HELD {
            return Decision::Write;
        }
        let Some(last_end) = self.last_end else {
            return Decision::Write;
        };
        let hold = self.last_took.min(window);
        let due = last_end + hold;
        if now >= due {
            return Decision::Write;
        }
        if self.held_len.is_none() {
            self.held_len = Some(len);
        }
        Decision::HoldUntil(due)
    }

    /// A write pass of a batch of `len` messages ran from `started` to `ended`.
    pub fn wrote(&mut self, started: Instant, ended: Instant, len: usize) {
        match self.held_len.take() {
            Some(at_hold) if len <= at_hold => self.backoff = IDLE_HOLD_BACKOFF,
            _ => self.backoff = self.backoff.saturating_sub(1),
        }
        self.last_took = ended.saturating_duration_since(started);
        self.last_end = Some(ended);
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
    /// Each sender met in the held batch, once.
    pub senders: Vec<Sender>,
    /// Messages of the batch already looked at for senders.
    scanned: usize,
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
    /// How many messages of the batch (from its start) it has been given.
    pub has: usize,
}

impl EchoAhead {
    /// The senders of `origins` (the held batch's, in order) not met before: those whose
    /// `worker` is `me`, each once. `find` tells where one subscribes (slab key, slot).
    pub fn meet(
        &mut self,
        origins: impl ExactSizeIterator<Item = Origin>,
        me: u16,
        mut find: impl FnMut(u64) -> Option<(u32, u32)>,
    ) {
        let len = origins.len();
        for origin in origins.skip(self.scanned) {
            if origin.worker == me && !self.senders.iter().any(|s| s.conn == origin.conn) {
                let at = find(origin.conn);
                self.senders.push(Sender {
                    conn: origin.conn,
                    at,
                    has: 0,
                });
            }
        }
        self.scanned = len;
    }

    /// How many messages of the batch the subscriber with slab key `key` was given ahead.
    pub fn given(&self, key: u32) -> usize {
        self.senders
            .iter()
            .find(|s| s.at.is_some_and(|(k, _)| k == key))
            .map_or(0, |s| s.has)
    }

    /// The batch is being written: what was given ahead of it, leaving this empty for the
    /// next batch (`blocked` stays until the pass decides it).
    pub fn take(&mut self) -> EchoAhead {
        let blocked = self.blocked;
        let taken = std::mem::take(self);
        self.blocked = blocked;
        taken
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
        // Only what was appended since is looked at.
        let longer = [o(0, 7), o(1, 7), o(0, 7), o(0, 9), o(0, 11)];
        e.meet(longer.iter().copied(), 0, |conn| {
            asked.push(conn);
            None
        });
        assert_eq!(asked, vec![7, 9, 11]);
        e.blocked = true;
        let taken = e.take();
        assert_eq!(taken.given(3), 4);
        assert!(e.senders.is_empty());
        assert_eq!(e.given(3), 0);
        assert!(e.blocked, "kept until a pass decides it");
    }

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn off_or_first_pass_writes_at_once() {
        let t = Instant::now();
        let mut p = Pace::default();
        assert_eq!(p.decide(t, 1, 5 * MS), Decision::Write, "no pass yet");
        p.wrote(t, t + 2 * MS, 1);
        assert_eq!(p.decide(t + 2 * MS, 1, Duration::ZERO), Decision::Write);
    }

    #[test]
    fn low_load_writes_at_once() {
        let t = Instant::now();
        let mut p = Pace::default();
        p.wrote(t, t + 2 * MS, 1);
        // The next message comes after one pass length past the end: not under load.
        assert_eq!(p.decide(t + 4 * MS, 1, 5 * MS), Decision::Write);
        assert!(!p.holding());
    }

    #[test]
    fn under_load_holds_for_the_shorter_of_pass_and_window() {
        let t = Instant::now();
        let mut p = Pace::default();
        p.wrote(t, t + 2 * MS, 1);
        assert_eq!(
            p.decide(t + 3 * MS, 1, 5 * MS),
            Decision::HoldUntil(t + 4 * MS),
            "held for the pass length"
        );
        let mut q = Pace::default();
        q.wrote(t, t + 20 * MS, 1);
        assert_eq!(
            q.decide(t + 21 * MS, 1, 5 * MS),
            Decision::HoldUntil(t + 25 * MS),
            "held at most the window"
        );
        assert_eq!(q.decide(t + 25 * MS, 3, 5 * MS), Decision::Write);
    }

    #[test]
    fn a_hold_that_gains_nothing_backs_off() {
        let t = Instant::now();
        let mut p = Pace::default();
        p.wrote(t, t + 2 * MS, 8);
        assert!(matches!(
            p.decide(t + 2 * MS, 8, 5 * MS),
            Decision::HoldUntil(_)
        ));
        p.wrote(t + 4 * MS, t + 6 * MS, 8); // nothing came while held
        let mut end = t + 6 * MS;
        for i in 0..IDLE_HOLD_BACKOFF {
            // Right after the last pass: under load, yet written at once while backing off.
            assert_eq!(p.decide(end, 8, 5 * MS), Decision::Write, "pass {i}");
            p.wrote(end, end + 2 * MS, 8);
            end += 2 * MS;
        }
        assert!(matches!(p.decide(end, 8, 5 * MS), Decision::HoldUntil(_)));
    }

    #[test]
    fn a_hold_that_gains_keeps_holding() {
        let t = Instant::now();
        let mut p = Pace::default();
        p.wrote(t, t + 2 * MS, 2);
        assert!(matches!(
            p.decide(t + 2 * MS, 2, 5 * MS),
            Decision::HoldUntil(_)
        ));
        p.wrote(t + 4 * MS, t + 6 * MS, 5); // grew from 2 to 5 while held
        assert!(matches!(
            p.decide(t + 6 * MS, 1, 5 * MS),
            Decision::HoldUntil(_)
        ));
    }

    #[test]
    fn a_full_batch_is_written() {
        let t = Instant::now();
        let mut p = Pace::default();
        p.wrote(t, t + 2 * MS, 1);
        assert_eq!(p.decide(t + 2 * MS, MAX_HELD, 5 * MS), Decision::Write);
    }
}
