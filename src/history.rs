//! A topic's recent messages, kept by its owner for recovery (`since`) and `rewind`. Sans-IO
//! and clock-free: times come in as arguments. The owner worker holds one [`Ring`] per topic;
//! the memory cap and age limit across all of a worker's rings are enforced by `owned`.

use std::collections::VecDeque;
use std::time::Instant;

use bytes::Bytes;

use crate::v1::{Refusal, Start};

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
    /// topic's `epoch` and `last` number. Recovery is all or nothing: a client that cannot
    /// get every message it missed is told so instead of getting a stream with a hole.
    pub fn replay(&self, start: &Start, epoch: &str, last: u64) -> Result<Vec<Kept>, Refusal> {
        match start {
            Start::Now => Ok(Vec::new()),
            Start::Rewind(n) => {
                let n = (*n).min(self.entries.len() as u64) as usize;
                Ok(self
                    .entries
                    .range(self.entries.len() - n..)
                    .cloned()
                    .collect())
            }
            Start::Since { epoch: theirs, .. } if theirs != epoch => Err(Refusal::EpochChanged {
                epoch: theirs.clone(),
                current: epoch.to_owned(),
            }),
            Start::Since { seq, .. } if *seq > last => {
                Err(Refusal::SinceAhead { since: *seq, last })
            }
            Start::Since { seq, .. } if *seq == last => Ok(Vec::new()),
            Start::Since { seq, .. } => {
                let first = self.entries.front().map_or(last + 1, |k| k.seq);
                if first > seq + 1 {
                    return Err(Refusal::HistoryGap { since: *seq, first });
                }
                let skip = (seq + 1 - first) as usize;
                Ok(self.entries.range(skip..).cloned().collect())
            }
        }
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
            Refusal::HistoryGap { since: 4, first: 6 }
        );
        assert_eq!(
            r.replay(&since(4), "f", 10).unwrap_err().code(),
            "epoch_changed"
        );
        assert_eq!(
            r.replay(&since(11), "e", 10).unwrap_err().code(),
            "since_ahead"
        );
        // Nothing kept (history off, or all expired): only an up-to-date client is served.
        let empty = Ring::default();
        assert!(empty.replay(&since(10), "e", 10).unwrap().is_empty());
        assert_eq!(
            empty.replay(&since(9), "e", 10).unwrap_err(),
            Refusal::HistoryGap {
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
}
