//! The end of a run: after the schedule, wait until every counted receiver has the last
//! message of every publisher it should (or the drain time runs out, or deliveries go quiet),
//! then close every connection.

use super::{EventLoop, Phase};
use crate::child::conn::State;
use crate::cli::Mode;
use crate::clock::NS_PER_SEC;

/// How often the drain phase checks whether every receiver has everything.
const DRAIN_CHECK_NS: u64 = 10_000_000;
/// How long the close handshake may take at the end.
const CLOSE_WAIT_NS: u64 = NS_PER_SEC;

impl EventLoop {
    /// The schedule is done: start waiting for the last deliveries.
    pub(super) fn start_drain(&mut self, now: u64) {
        self.phase = Phase::Drain;
        self.drain_deadline = self.t_end + self.ctx.cfg.drain_ns;
        self.next_drain_check = now;
    }

    /// Every `DRAIN_CHECK_NS`: closes everything once the drain is over.
    pub(super) fn check_drain(&mut self, now: u64) {
        if now < self.next_drain_check {
            return;
        }
        self.next_drain_check = now + DRAIN_CHECK_NS;
        let quiet = self.ctx.cfg.drain_ns.min(NS_PER_SEC);
        let last = self.ctx.last_delivery_ns.max(self.t_end);
        if now >= self.drain_deadline || now >= last + quiet || self.all_delivered() {
            self.close_all(now);
        }
    }

    /// Whether every counted receiver has seen the last message of every publisher it should.
    fn all_delivered(&self) -> bool {
        let cfg = &self.ctx.cfg;
        if cfg.inflight > 0 {
            // Closed loop: no loop knows another's last message; the drain ends when
            // deliveries go quiet (at most --inflight per publisher were still on their way).
            return false;
        }
        let win = self.ctx.window;
        let n_targets = cfg.targets.len() as u64;
        self.conns.iter().all(|(_, c)| {
            if !c.receiver || !c.at_go || c.state != State::Open {
                return true;
            }
            match cfg.mode {
                Mode::Echo => win
                    .last_local(c.g, cfg.publishers)
                    .is_none_or(|s| c.reached(c.g, s)),
                _ => (0..cfg.publishers)
                    .filter(|&p| cfg.cluster || (p % n_targets) as usize == c.target)
                    .all(|p| {
                        win.last_local(p, cfg.publishers)
                            .is_none_or(|s| c.reached(p, s))
                    }),
            }
        })
    }

    /// Sends close frames everywhere and enters the closing phase.
    pub(super) fn close_all(&mut self, now: u64) {
        let keys: Vec<usize> = self.conns.iter().map(|(k, _)| k).collect();
        for key in keys {
            let keep = match self.conns.get_mut(key) {
                Some(c) => {
                    if c.in_flight() {
                        self.ctx.stats.error("unfinished_at_end");
                    }
                    c.start_close(&mut self.ctx)
                }
                None => continue,
            };
            if !keep {
                self.remove(key);
            }
        }
        self.phase = Phase::Closing;
        self.close_deadline = now + CLOSE_WAIT_NS;
    }
}
