//! The two bridge threads between a node's workers and Redis (blocking `redis` API; the
//! worker loops never wait for Redis).
//!
//! - [`Publisher`] numbers messages: it takes every publish waiting in its queue, sends them
//!   as one pipeline of `EVALSHA` calls (the `script::PUBLISH` script) and answers each
//!   waiting publisher with its number (or "unavailable": never a pretend success).
//! - [`Listener`] holds the pub/sub connection and a command connection. It SUBSCRIBEs to
//!   the topics this node has subscribers for, forwards what it hears to each topic's owner
//!   worker in numbering order, answers `herald.v1` joins consistently with that stream,
//!   and after a fault reconnects with capped exponential backoff, resubscribes and fills any
//!   hole from the topic's log, or says explicitly that it cannot. It also has Redis place
//!   presence `join`/`leave` events on their topic's channel (`script::EVENT`) and hands
//!   every event it hears to the topic's owner at its place among the messages.
//!
//! Why joins are exact across nodes: the listener first brings its own position on the topic
//! up to Redis's current number (forwarding whatever it had not heard yet), then answers with
//! that number and the logged messages after the client's `since`. Everything above that
//! number is forwarded later, on the same ordered path (listener → owner → worker), so the
//! joiner's worker lets through exactly the live messages above it (`Subscriber::after`).

mod listener;
mod publisher;

pub use listener::{Listener, MAX_PATTERN_TOPICS};
pub use publisher::Publisher;

use std::time::Duration;

use crate::feed::bus::{BusMsg, Origin, PeerLink};

/// Reconnect backoff: starts here, doubles per failure, capped.
const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(5);

/// The origin of a message another node published (no worker has this index, so
/// `--no-echo` never matches it).
const FOREIGN: Origin = Origin {
    worker: u16::MAX,
    conn: 0,
};

/// Sends to workers' inboxes and wakes each worker that got something, once per round.
/// Blocking sends are fine here: this is a bridge thread, and a worker never waits for it.
struct Outbound {
    links: Vec<PeerLink>,
    to_wake: Vec<bool>,
}

impl Outbound {
    fn new(links: Vec<PeerLink>) -> Self {
        let to_wake = vec![false; links.len()];
        Outbound { links, to_wake }
    }

    fn send(&mut self, worker: usize, msg: BusMsg) {
        if let Some(link) = self.links.get(worker) {
            // An error means the worker has exited (shutdown): nothing to deliver to.
            if link.inbox.send(msg).is_ok() {
                self.to_wake[worker] = true;
            }
        }
    }

    fn wake(&mut self) {
        for (link, wake) in self.links.iter().zip(self.to_wake.iter_mut()) {
            if std::mem::take(wake) {
                let _ = link.waker.wake();
            }
        }
    }
}

/// Capped exponential backoff between reconnect attempts.
struct Backoff(Duration);

impl Backoff {
    fn next(&mut self) -> Duration {
        let wait = self.0;
        self.0 = (self.0 * 2).min(BACKOFF_MAX);
        wait
    }

    fn reset(&mut self) {
        self.0 = BACKOFF_MIN;
    }
}

/// Epoch names for topics this node starts (or restarts) in Redis: unique per node start
/// (`node`), per thread (`tag`) and per use.
struct EpochNames {
    prefix: String,
    next: u64,
}

impl EpochNames {
    fn new(node: u32, tag: char) -> Self {
        EpochNames {
            prefix: format!("{node:08x}.{tag}"),
            next: 1,
        }
    }

    fn fresh(&mut self) -> String {
        self.next += 1;
        format!("{}{}", self.prefix, self.next - 1)
    }
}
