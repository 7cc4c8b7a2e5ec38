//! Per-subscriber, per-publisher sequence tracking: duplicates and out-of-order deliveries.
//!
//! A server only promises order per sending connection, so order is tracked per publisher, in
//! that publisher's own contiguous sequence (0, 1, 2, …). Each tracker is 16 bytes: the highest
//! sequence seen and a bitmap of the 64 sequences below it, which is enough to tell a late
//! (reordered) message from a duplicate within that distance.

/// How one received sequence number relates to those seen before.
#[derive(Debug, PartialEq, Eq, Clone, Copy)]
pub enum Seen {
    /// Newer than everything seen so far.
    InOrder,
    /// Not seen before, but older than the newest one seen: it was overtaken.
    Late,
    /// Already seen (or too old to tell, see [`Tracker`]).
    Duplicate,
}

/// Order state of one publisher's stream as seen by one subscriber.
#[derive(Debug, Default, Clone, Copy)]
pub struct Tracker {
    /// Highest sequence seen plus one; 0 when nothing was seen.
    next: u64,
    /// Bit `i` set: sequence `next - 1 - i` was seen.
    bits: u64,
}

/// Bits of history kept below the newest sequence.
const HISTORY: u64 = 64;

impl Tracker {
    /// Records sequence `s` and classifies it.
    pub fn observe(&mut self, s: u64) -> Seen {
        if s >= self.next {
            let shift = s + 1 - self.next;
            self.bits = if self.next == 0 || shift >= HISTORY {
                0
            } else {
                self.bits << shift
            };
            self.bits |= 1;
            self.next = s + 1;
            return Seen::InOrder;
        }
        let back = self.next - 1 - s;
        if back >= HISTORY {
            // Too old to tell apart; a message this late is almost certainly a replay.
            return Seen::Duplicate;
        }
        let bit = 1u64 << back;
        if self.bits & bit != 0 {
            Seen::Duplicate
        } else {
            self.bits |= bit;
            Seen::Late
        }
    }

    /// Whether sequence `s` or a later one has been seen, i.e. the stream reached `s`.
    pub fn reached(&self, s: u64) -> bool {
        self.next > s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn in_order_stream() {
        let mut t = Tracker::default();
        assert!(!t.reached(0));
        for s in 0..200 {
            assert_eq!(t.observe(s), Seen::InOrder);
        }
        assert!(t.reached(199) && !t.reached(200));
    }

    #[test]
    fn duplicates_and_reordering() {
        let mut t = Tracker::default();
        assert_eq!(t.observe(5), Seen::InOrder, "a stream may start late");
        assert_eq!(t.observe(5), Seen::Duplicate);
        assert_eq!(t.observe(7), Seen::InOrder);
        assert_eq!(t.observe(6), Seen::Late);
        assert_eq!(t.observe(6), Seen::Duplicate);
        assert_eq!(t.observe(4), Seen::Late);
        assert_eq!(t.observe(100), Seen::InOrder);
        assert_eq!(t.observe(99), Seen::Late);
        assert_eq!(t.observe(37), Seen::Late, "63 back is still tracked");
        assert_eq!(
            t.observe(36),
            Seen::Duplicate,
            "beyond the history counts as a replay"
        );
        assert_eq!(t.observe(1000), Seen::InOrder);
        assert_eq!(t.observe(100), Seen::Duplicate);
    }
}
