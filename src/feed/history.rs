//! A topic's recent messages, kept by its owner for recovery (`since`) and `rewind`. Sans-IO
//! and clock-free: times come in as arguments. The owner worker holds one [`Ring`] per topic;
//! the memory cap and age limit across all of a worker's rings are enforced by `owned`.

use std::collections::VecDeque;
use std::time::Instant;

use bytes::Bytes;

use crate::proto::topic::Start;

/// One kept message: its number, its server frame (shared with the live fan-out, not a
/// copy) and when it was numbered (for `--history-ttl`).
#[derive(Debug, Clone)]
pub struct Kept {
    pub seq: u64,
    pub frame: Bytes,
    pub at: Instant,
}

/// The last messages of one topic, oldest first, numbers consecutive.
#[derive(Debug, Default)]
pub struct Ring {
    entries: VecDeque<Kept>,
}

impl Ring {
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether message `seq` is still kept here.
    pub fn holds(&self, seq: u64) -> bool {
        self.entries.front().is_some_and(|k| k.seq <= seq)
            && self.entries.back().is_some_and(|k| seq <= k.seq)
    }

    /// Keep `kept` (the topic's newest message); returns what fell out past `capacity`.
    pub fn push(&mut self, kept: Kept, capacity: usize) -> Option<Kept> {
        self.entries.push_back(kept);
        if self.entries.len() > capacity {
            self.entries.pop_front()
        } else {
            None
        }
    }

    /// Forget the oldest message if it is number `seq` (the memory cap and the age limit
    /// evict in numbering order across topics; a message already pushed out is skipped).
    pub fn pop_if_oldest(&mut self, seq: u64) -> Option<Kept> {
        if self.entries.front().is_some_and(|k| k.seq == seq) {
            self.entries.pop_front()
        } else {
            None
        }
    }

    /// What a subscriber starting at `start` must be sent before the live stream, given the
    /// topic's `epoch` and `last` number (the decision is [`decide`]'s).
    pub fn replay(
        &self,
        start: &Start,
        epoch: &str,
        last: u64,
    ) -> Result<Vec<Kept>, Unrecoverable> {
        match decide(start, epoch, last)? {
            Need::Nothing => Ok(Vec::new()),
            Need::Last(n) => {
                let n = n.min(self.entries.len() as u64) as usize;
                Ok(self
                    .entries
                    .range(self.entries.len() - n..)
                    .cloned()
                    .collect())
            }
            Need::Range { from, to } => {
                // The ring's numbers are consecutive and end at `to`: only its start can be late.
                let first = self.entries.front().map_or(to + 1, |k| k.seq);
                if first > from {
                    return Err(Unrecoverable::HistoryGap {
                        since: from - 1,
                        first,
                    });
                }
                let skip = (from - first) as usize;
                Ok(self.entries.range(skip..).cloned().collect())
            }
        }
    }
}

/// Why a subscription cannot start where the client asked. Recovery is all or nothing: a
/// client that cannot get every message it missed is told so (`worker` turns this into the
/// `herald.v1` error code) instead of getting a stream with a hole.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Unrecoverable {
    /// The messages after `since` are no longer all kept; the oldest kept one is `first`.
    #[error("history gap: messages after {since} are gone (the oldest kept is {first})")]
    HistoryGap { since: u64, first: u64 },
    /// The client's numbers belong to another life of the topic (`epoch`); it is `current` now.
    #[error("epoch changed from {epoch} to {current}")]
    EpochChanged { epoch: String, current: String },
    /// The client claims a message the topic has not numbered yet.
    #[error("since {since} is ahead of the last message ({last})")]
    SinceAhead { since: u64, last: u64 },
}

/// Which kept messages a joining subscriber needs, before looking at what is kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Need {
    /// None: live from the topic's current number.
    Nothing,
    /// The last `n` kept (`rewind`; fewer if fewer are kept).
    Last(u64),
    /// Every message `from..=to`, all of them (`since` recovery).
    Range { from: u64, to: u64 },
}

/// The recovery decision, one rule for every store of kept messages (an owner's [`Ring`],
/// cluster mode's Redis log): what a subscriber starting at `start` needs, given the topic's
/// `epoch` and `last` number, or why it cannot start there.
pub fn decide(start: &Start, epoch: &str, last: u64) -> Result<Need, Unrecoverable> {
    match start {
        Start::Now => Ok(Need::Nothing),
        Start::Rewind(n) => Ok(Need::Last(*n)),
        Start::Since { epoch: theirs, .. } if theirs != epoch => Err(Unrecoverable::EpochChanged {
            epoch: theirs.clone(),
            current: epoch.to_owned(),
        }),
        Start::Since { seq, .. } if *seq > last => {
            Err(Unrecoverable::SinceAhead { since: *seq, last })
        }
        Start::Since { seq, .. } if *seq == last => Ok(Need::Nothing),
        Start::Since { seq, .. } => Ok(Need::Range {
            from: seq + 1,
            to: last,
        }),
    }
}

/// Whether `seqs` (the numbers read back from a store) are exactly `from..=to`; if not, the
/// gap a subscriber after `from - 1` must be told of.
pub fn complete(seqs: &[u64], from: u64, to: u64) -> Result<(), Unrecoverable> {
    let whole = seqs.len() as u64 == to + 1 - from
        && seqs.first() == Some(&from)
        && seqs.windows(2).all(|w| w[1] == w[0] + 1);
    if whole {
        Ok(())
    } else {
        Err(Unrecoverable::HistoryGap {
            since: from - 1,
            first: seqs.first().map_or(to + 1, |&s| s),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ring(seqs: std::ops::RangeInclusive<u64>, capacity: usize) -> Ring {
        let mut r = Ring::default();
        let now = Instant::now();
        for seq in seqs {
            let frame = Bytes::from(seq.to_string());
            r.push(
                Kept {
                    seq,
                    frame,
                    at: now,
                },
                capacity,
            );
        }
        r
    }

    fn seqs(kept: Vec<Kept>) -> Vec<u64> {
        kept.into_iter().map(|k| k.seq).collect()
    }

    fn since(seq: u64) -> Start {
        Start::Since {
            epoch: "e".into(),
            seq,
        }
    }

    #[test]
    fn since_replays_exactly_what_was_missed() {
        let r = ring(1..=10, 5); // keeps 6..=10
        assert_eq!(r.len(), 5);
        assert_eq!(seqs(r.replay(&since(7), "e", 10).unwrap()), vec![8, 9, 10]);
        assert_eq!(
            seqs(r.replay(&since(5), "e", 10).unwrap()),
            vec![6, 7, 8, 9, 10]
        );
        assert!(r.replay(&since(10), "e", 10).unwrap().is_empty());
    }

    #[test]
    fn since_too_old_wrong_epoch_or_ahead_is_refused() {
        let r = ring(1..=10, 5);
        assert_eq!(
            r.replay(&since(4), "e", 10).unwrap_err(),
            Unrecoverable::HistoryGap { since: 4, first: 6 }
        );
        assert_eq!(
            r.replay(&since(4), "f", 10).unwrap_err(),
            Unrecoverable::EpochChanged {
                epoch: "e".into(),
                current: "f".into()
            }
        );
        assert_eq!(
            r.replay(&since(11), "e", 10).unwrap_err(),
            Unrecoverable::SinceAhead {
                since: 11,
                last: 10
            }
        );
        // Nothing kept (history off, or all expired): only an up-to-date client is served.
        let empty = Ring::default();
        assert!(empty.replay(&since(10), "e", 10).unwrap().is_empty());
        assert_eq!(
            empty.replay(&since(9), "e", 10).unwrap_err(),
            Unrecoverable::HistoryGap {
                since: 9,
                first: 11
            }
        );
    }

    #[test]
    fn rewind_gives_the_last_n_kept() {
        let r = ring(1..=10, 5);
        assert_eq!(
            seqs(r.replay(&Start::Rewind(2), "e", 10).unwrap()),
            vec![9, 10]
        );
        assert_eq!(
            seqs(r.replay(&Start::Rewind(99), "e", 10).unwrap()).len(),
            5
        );
        assert!(r.replay(&Start::Now, "e", 10).unwrap().is_empty());
    }

    #[test]
    fn eviction_takes_only_the_oldest() {
        let mut r = ring(1..=3, 5);
        assert!(r.pop_if_oldest(2).is_none());
        assert_eq!(r.pop_if_oldest(1).map(|k| k.seq), Some(1));
        assert_eq!(r.len(), 2);
    }

    #[test]
    fn a_store_must_hold_every_number_asked_for() {
        assert_eq!(complete(&[4, 5, 6], 4, 6), Ok(()));
        let gap = |first| Err(Unrecoverable::HistoryGap { since: 3, first });
        assert_eq!(complete(&[5, 6], 4, 6), gap(5));
        assert_eq!(complete(&[4, 6], 4, 6), gap(4));
        assert_eq!(complete(&[4, 5], 4, 6), gap(4));
        assert_eq!(complete(&[], 4, 6), gap(7));
    }
}
