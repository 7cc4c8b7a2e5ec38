//! The publish schedule: at the go signal the loop fixes which connections count, then sends
//! each message its publishers own when it is due (open loop: lateness is recorded, never
//! waited out), or, with `--inflight N`, whenever fewer than N of its own messages are still
//! on their way back to it (closed loop).

use super::{EventLoop, Phase};
use crate::child::conn::State;
use crate::cli::Mode;
use crate::client::errkind::io_kind;
use crate::schedule::{due_ns, owned_count, PublishCursor};
use crate::stats::bump;

/// Messages sent per loop iteration at most, so a late publisher still serves its sockets.
const SEND_BATCH: usize = 10_000;

impl EventLoop {
    /// The go signal: fixes who counts, and starts the schedule.
    pub(super) fn start(&mut self, t0: u64, now: u64) {
        let cfg = self.ctx.cfg.clone();
        self.ctx.t0 = t0;
        self.t_end = t0 + cfg.warmup_ns + cfg.duration_ns;
        for (_, c) in self.conns.iter_mut() {
            if c.state == State::Open {
                c.at_go = true;
                if c.receiver {
                    bump(&mut self.ctx.stats.receivers, c.target);
                }
            }
        }
        if cfg.mode != Mode::Connect {
            // Closed loop: no schedule, so no last message; the run's end stops sending.
            let end = if cfg.inflight > 0 {
                u64::MAX
            } else {
                self.ctx.window.k_hi
            };
            self.cursor = PublishCursor::new(self.id, self.loops, cfg.publishers, end);
            self.phase = Phase::Run;
        } else {
            self.close_all(now);
        }
    }

    /// Sends every message that is due.
    pub(super) fn publish(&mut self, now: u64) {
        let t0 = self.ctx.t0;
        let rate = self.ctx.cfg.rate;
        let publishers = self.ctx.cfg.publishers;
        let closed = self.ctx.cfg.inflight > 0;
        let cap = self.ctx.cfg.inflight * owned_count(self.id, self.loops, publishers);
        for _ in 0..SEND_BATCH {
            let Some((k, i)) = self.cursor.peek() else {
                break;
            };
            let due = if closed {
                // Closed loop: a free slot, until the end of the run; stamped with now.
                if now >= self.t_end || self.ctx.stats.sent_total >= self.ctx.acks + cap {
                    break;
                }
                now
            } else {
                due_ns(t0, k, rate)
            };
            if due > now {
                break;
            }
            self.cursor.advance();
            let key = self.slot.get(i as usize).copied().unwrap_or(0);
            let sent = match key.checked_sub(1).map(|k| k as usize) {
                Some(key) => match self.conns.get_mut(key) {
                    Some(c) if c.at_go => {
                        let ok = c.push_message(&mut self.ctx, k, due);
                        if ok && !self.dirty.contains(&key) {
                            self.dirty.push(key);
                        }
                        if !ok && c.state == State::Open {
                            self.ctx.stats.error("send_backlog");
                        }
                        ok
                    }
                    _ => false,
                },
                None => false,
            };
            if sent {
                self.ctx.stats.sent_total += 1;
                self.ctx
                    .stats
                    .send_lag
                    .saturating_record(now.saturating_sub(due).max(1));
                if self.ctx.measured(k, due) {
                    let t = self.ctx.cfg.target_of(k % publishers);
                    bump(&mut self.ctx.stats.sent, t);
                }
            } else {
                self.ctx.stats.unsent += 1;
            }
        }
        for key in std::mem::take(&mut self.dirty) {
            let r = match self.conns.get_mut(key) {
                Some(c) => c.flush(),
                None => Ok(()),
            };
            if let Err(e) = r {
                self.fail(key, &io_kind("io", &e));
            }
        }
    }
}
