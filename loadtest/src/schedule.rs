//! The open-loop schedules: when each message and each connection attempt is due.
//!
//! Message `k` (a global sequence number) is due at `t0 + k / rate` no matter how late earlier
//! sends were, and it is sent by publisher `k % publishers`; its latency is measured from that
//! scheduled time, so a stalled publisher shows up in the latency instead of hiding it
//! (no coordinated omission). Connection `g` belongs to event loop `g % loops` of the run.
//!
//! Shared by the parent (when to give up waiting for the connect ramp) and the child processes
//! (when each event loop connects and publishes), so both sides compute the same times.

use crate::cli::Config;
use crate::clock::NS_PER_SEC;

/// Scheduled send time of message `k` at `rate` messages per second from `t0_ns`.
pub fn due_ns(t0_ns: u64, k: u64, rate: u64) -> u64 {
    t0_ns + (k as u128 * NS_PER_SEC as u128 / rate as u128) as u64
}

/// The measured messages: those scheduled in `[warmup, warmup + duration)`, as `k_lo..k_hi`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    /// First measured sequence number.
    pub k_lo: u64,
    /// One past the last sequence number sent at all (sending stops at the window's end).
    pub k_hi: u64,
}

impl Window {
    /// The window for a rate and warmup/duration lengths in nanoseconds.
    pub fn new(rate: u64, warmup_ns: u64, duration_ns: u64) -> Window {
        let first_at_or_after = |t_ns: u64| -> u64 {
            // Smallest k with k * 1e9 / rate >= t, i.e. ceil(t * rate / 1e9).
            let num = t_ns as u128 * rate as u128;
            num.div_ceil(NS_PER_SEC as u128) as u64
        };
        Window {
            k_lo: first_at_or_after(warmup_ns),
            k_hi: first_at_or_after(warmup_ns + duration_ns),
        }
    }

    /// Whether message `k` counts.
    pub fn contains(&self, k: u64) -> bool {
        k >= self.k_lo && k < self.k_hi
    }

    /// The last sequence number of publisher `p` (of `n`) that is sent, in that publisher's own
    /// numbering (`k / n`); `None` if it sends nothing.
    pub fn last_local(&self, p: u64, n: u64) -> Option<u64> {
        if self.k_hi > p {
            Some((self.k_hi - 1 - p) / n)
        } else {
            None
        }
    }
}

/// Walks, in time order, the messages sent by the publishers one event loop owns.
///
/// Publisher `p` is connection `p`; event loop `id` of `loops` owns publishers
/// `id, id + loops, …` below `publishers`. Its messages are `k = p + publishers * round`, so walking rounds and,
/// within a round, owned publishers in ascending order yields increasing `k`.
#[derive(Debug, Clone)]
pub struct PublishCursor {
    first: u64,
    step: u64,
    owned: u64,
    publishers: u64,
    end: u64,
    round: u64,
    index: u64,
}

impl PublishCursor {
    /// Cursor for event loop `id` of `loops`, with messages below `end` only.
    pub fn new(id: u64, loops: u64, publishers: u64, end: u64) -> PublishCursor {
        let owned = if id < publishers {
            (publishers - id).div_ceil(loops)
        } else {
            0
        };
        PublishCursor {
            first: id,
            step: loops,
            owned,
            publishers,
            end,
            round: 0,
            index: 0,
        }
    }

    /// The next message as `(k, owned publisher index)`, without consuming it.
    pub fn peek(&self) -> Option<(u64, u64)> {
        if self.owned == 0 {
            return None;
        }
        let p = self.first + self.step * self.index;
        let k = p + self.publishers * self.round;
        (k < self.end).then_some((k, self.index))
    }

    /// Consumes the message returned by [`peek`](Self::peek).
    pub fn advance(&mut self) {
        self.index += 1;
        if self.index == self.owned {
            self.index = 0;
            self.round += 1;
        }
    }
}

/// Connections owned by event loop `id` of `loops` out of `total`: `g = id + loops * m`.
pub fn owned_count(id: u64, loops: u64, total: u64) -> u64 {
    if id < total {
        (total - id).div_ceil(loops)
    } else {
        0
    }
}

/// Due time of an event loop's `i`-th connection attempt when `rate` connections per second
/// are shared by `loops` event loops (rate 0: all at once).
pub fn connect_due_ns(start_ns: u64, i: u64, rate: u64, loops: u64) -> u64 {
    if rate == 0 {
        start_ns
    } else {
        start_ns + (i as u128 * loops as u128 * NS_PER_SEC as u128 / rate as u128) as u64
    }
}

/// Length of the paced connect ramp (`--connections` at `--connect-rate`; 0 when unpaced), the
/// base of both sides' ramp deadlines.
pub fn ramp_ns(cfg: &Config) -> u64 {
    if cfg.connect_rate == 0 {
        0
    } else {
        (cfg.total as u128 * NS_PER_SEC as u128 / cfg.connect_rate as u128) as u64
    }
}

/// Latest time an event loop keeps starting connections: the paced ramp with 50% slack plus
/// time for the last attempts to time out. The parent adds a grace period before it says go
/// without waiting for every child.
pub fn ramp_deadline(start: u64, ramp_ns: u64, connect_timeout_ns: u64) -> u64 {
    start + ramp_ns + ramp_ns / 2 + 2 * connect_timeout_ns + 5 * NS_PER_SEC
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn due_times_are_exact() {
        assert_eq!(due_ns(100, 0, 1000), 100);
        assert_eq!(due_ns(100, 1, 1000), 1_000_100);
        assert_eq!(due_ns(0, 3, 3), NS_PER_SEC);
        assert_eq!(due_ns(0, 1_000_000, 1_000_000), NS_PER_SEC);
    }

    #[test]
    fn window_bounds() {
        let w = Window::new(1000, 1_000_000_000, 2_000_000_000);
        assert_eq!((w.k_lo, w.k_hi), (1000, 3000));
        assert!(!w.contains(999) && w.contains(1000) && w.contains(2999) && !w.contains(3000));
        // Fractional: 3 msg/s, 0.5 s warmup: k=2 is at 0.667 s, the first after 0.5 s.
        let w = Window::new(3, 500_000_000, 1_000_000_000);
        assert_eq!((w.k_lo, w.k_hi), (2, 5));
        let w = Window::new(10, 0, 1_000_000_000);
        assert_eq!((w.k_lo, w.k_hi), (0, 10));
        assert_eq!(w.last_local(0, 3), Some(3)); // k = 9
        assert_eq!(w.last_local(1, 3), Some(2)); // k = 7
        assert_eq!(w.last_local(2, 3), Some(2)); // k = 8
        assert_eq!(w.last_local(10, 20), None);
    }

    #[test]
    fn cursors_partition_all_messages_in_order() {
        for (loops, publishers) in [(1u64, 1u64), (2, 1), (2, 3), (3, 7), (4, 2), (5, 5)] {
            let end = 50;
            let mut all = Vec::new();
            for id in 0..loops {
                let mut c = PublishCursor::new(id, loops, publishers, end);
                let mut last = None;
                while let Some((k, i)) = c.peek() {
                    assert!(last.is_none_or(|l| k > l), "increasing");
                    assert_eq!(k % publishers, id + loops * i, "owner of k");
                    last = Some(k);
                    all.push(k);
                    c.advance();
                }
            }
            all.sort_unstable();
            assert_eq!(
                all,
                (0..end).collect::<Vec<_>>(),
                "loops={loops} p={publishers}"
            );
        }
    }

    #[test]
    fn ownership_and_connect_pacing() {
        assert_eq!(owned_count(0, 3, 10), 4);
        assert_eq!(owned_count(2, 3, 10), 3);
        assert_eq!(owned_count(5, 8, 4), 0);
        let total: u64 = (0..6).map(|w| owned_count(w, 6, 100_000)).sum();
        assert_eq!(total, 100_000);
        assert_eq!(connect_due_ns(10, 5, 1000, 2), 10 + 10_000_000);
        assert_eq!(connect_due_ns(10, 5, 0, 2), 10);
    }

    #[test]
    fn ramp_deadline_allows_slack() {
        let d = ramp_deadline(0, 10 * NS_PER_SEC, NS_PER_SEC);
        assert_eq!(d, 15 * NS_PER_SEC + 2 * NS_PER_SEC + 5 * NS_PER_SEC);
    }
}
