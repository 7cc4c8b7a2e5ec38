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

use std::time::{Duration, Instant};

/// Write passes that are written at once after a hold that gained no message.
pub const IDLE_HOLD_BACKOFF: u32 = 32;

/// Messages in a held batch at which it is written without waiting any longer.
pub const MAX_HELD: usize = 4096;

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

#[cfg(test)]
mod tests {
    use super::*;

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
