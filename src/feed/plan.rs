//! The fan-out decision, apart from the writing: what one subscriber gets of a topic's batch
//! this turn. Pure (a batch and a subscriber in, a [`Delivery`] out), so every rule is unit
//! tested here; `worker/output.rs` carries the decision out on the socket.
//!
//! The rules, in the order they apply:
//! - a subscriber still joining (`after = JOINING`), or one that has every message of the
//!   batch already (its join answer brought them), gets nothing;
//! - a subscriber whose join started inside the batch, or whose own message is in it under
//!   `--no-echo`, gets part of the batch, message by message;
//! - everyone else gets the whole batch: the one corked buffer, one write. This is the
//!   common case, and the one the hot path is shaped for.
//!
//! Which bytes a delivery uses (bare payloads or `herald.v1` envelopes, plain or compressed)
//! follows from the subscriber (`Subscriber::envelope`) and its connection's deflate
//! agreement; the worker builds each variant at most once per topic per turn.

use crate::feed::bus::Origin;
use crate::feed::fanout::{Staged, Subscriber};

/// What the planner needs to know of a topic's batch, computed once per batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchView {
    first_seq: u64,
    last_seq: u64,
    /// `--no-echo` is on and a message of the batch came from a connection of this worker:
    /// only then can a subscriber here be the sender of one of them.
    may_echo: bool,
}

impl BatchView {
    /// `None` for an empty batch (nothing to deliver). `me` is this worker's index.
    pub fn new(batch: &[Staged], no_echo: bool, me: u16) -> Option<Self> {
        let (first, last) = (batch.first()?, batch.last()?);
        Some(BatchView {
            first_seq: first.seq,
            last_seq: last.seq,
            may_echo: no_echo && batch.iter().any(|s| s.origin.worker == me),
        })
    }
}

/// What one subscriber gets of the batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivery {
    /// Nothing: it is joining, or already has every message of the batch.
    Nothing,
    /// The whole batch, as the one shared corked buffer.
    Whole,
    /// Only the messages [`Part::includes`] accepts, each on its own.
    Part(Part),
}

/// The messages of a batch one subscriber gets when it gets only some of them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Part {
    /// Messages numbered at most this were delivered already (by a join's replay).
    after: u64,
    /// Under `--no-echo`: the subscriber's own connection, whose messages it does not get.
    skip: Option<Origin>,
}

impl Part {
    /// Whether `staged` is for this subscriber.
    pub fn includes(&self, staged: &Staged) -> bool {
        staged.seq > self.after && self.skip != Some(staged.origin)
    }
}

/// What `subscriber`, whose connection is `own`, gets of `batch` (see the module doc).
#[inline]
pub fn delivery(
    view: &BatchView,
    batch: &[Staged],
    subscriber: &Subscriber,
    own: Origin,
) -> Delivery {
    if subscriber.after >= view.last_seq {
        return Delivery::Nothing;
    }
    let sender_here = view.may_echo && batch.iter().any(|s| s.origin == own);
    if sender_here || subscriber.after >= view.first_seq {
        Delivery::Part(Part {
            after: subscriber.after,
            skip: sender_here.then_some(own),
        })
    } else {
        Delivery::Whole
    }
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use bytes::Bytes;

    use super::*;
    use crate::feed::fanout::JOINING;

    const ME: u16 = 0;

    fn origin(worker: u16, conn: u64) -> Origin {
        Origin { worker, conn }
    }

    /// Messages numbered `seqs`, sent by `from`.
    fn batch(seqs: &[(u64, Origin)]) -> Vec<Staged> {
        let received = Instant::now();
        seqs.iter()
            .map(|&(seq, origin)| Staged {
                seq,
                frame: Bytes::from(seq.to_string()),
                received,
                origin,
            })
            .collect()
    }

    fn subscriber(after: u64) -> Subscriber {
        Subscriber {
            key: 7,
            envelope: false,
            sse: false,
            after,
        }
    }

    /// The seqs a subscriber gets.
    fn delivered(batch: &[Staged], no_echo: bool, sub: Subscriber, own: Origin) -> Vec<u64> {
        let view = BatchView::new(batch, no_echo, ME).expect("a batch");
        match delivery(&view, batch, &sub, own) {
            Delivery::Nothing => Vec::new(),
            Delivery::Whole => batch.iter().map(|s| s.seq).collect(),
            Delivery::Part(part) => batch
                .iter()
                .filter(|s| part.includes(s))
                .map(|s| s.seq)
                .collect(),
        }
    }

    #[test]
    fn an_empty_batch_has_no_view() {
        assert_eq!(BatchView::new(&[], true, ME), None);
    }

    #[test]
    fn a_live_subscriber_gets_the_whole_batch_corked() {
        let b = batch(&[(4, origin(1, 9)), (5, origin(0, 3))]);
        let view = BatchView::new(&b, false, ME).unwrap();
        let own = origin(ME, 3);
        assert_eq!(delivery(&view, &b, &subscriber(0), own), Delivery::Whole);
        assert_eq!(delivery(&view, &b, &subscriber(3), own), Delivery::Whole);
    }

    #[test]
    fn a_joining_subscriber_gets_nothing() {
        let b = batch(&[(4, origin(1, 9)), (5, origin(1, 9))]);
        assert!(delivered(&b, false, subscriber(JOINING), origin(ME, 3)).is_empty());
        // Its join answer already brought 5: nothing left in this batch.
        assert!(delivered(&b, false, subscriber(5), origin(ME, 3)).is_empty());
    }

    #[test]
    fn a_join_inside_the_batch_gets_what_follows_its_start() {
        let b = batch(&[(4, origin(1, 9)), (5, origin(1, 9)), (6, origin(1, 9))]);
        let view = BatchView::new(&b, false, ME).unwrap();
        assert!(matches!(
            delivery(&view, &b, &subscriber(4), origin(ME, 3)),
            Delivery::Part(_)
        ));
        assert_eq!(
            delivered(&b, false, subscriber(4), origin(ME, 3)),
            vec![5, 6]
        );
    }

    #[test]
    fn no_echo_skips_only_the_senders_own_messages() {
        let sender = origin(ME, 3);
        let b = batch(&[(4, sender), (5, origin(1, 9)), (6, sender)]);
        assert_eq!(delivered(&b, true, subscriber(0), sender), vec![5]);
        // Other subscribers of this worker get everything, corked.
        let view = BatchView::new(&b, true, ME).unwrap();
        assert_eq!(
            delivery(&view, &b, &subscriber(0), origin(ME, 4)),
            Delivery::Whole
        );
        // Echo on: the sender gets its own messages too.
        assert_eq!(delivered(&b, false, subscriber(0), sender), vec![4, 5, 6]);
        // A sender whose only message it is gets nothing of it.
        let alone = batch(&[(7, sender)]);
        assert!(delivered(&alone, true, subscriber(0), sender).is_empty());
    }

    #[test]
    fn a_sender_on_another_worker_is_not_skipped_here() {
        // Same connection id on another worker is another connection.
        let b = batch(&[(4, origin(1, 3))]);
        let view = BatchView::new(&b, true, ME).unwrap();
        assert_eq!(
            delivery(&view, &b, &subscriber(0), origin(ME, 3)),
            Delivery::Whole
        );
    }

    #[test]
    fn no_echo_and_a_join_together() {
        let sender = origin(ME, 3);
        let b = batch(&[(4, origin(1, 9)), (5, sender), (6, origin(1, 9))]);
        assert_eq!(delivered(&b, true, subscriber(4), sender), vec![6]);
    }
}
