//! When the loop must wake up next, and the absolute `timerfd` that wakes it then with
//! microsecond precision (an epoll timeout would round to milliseconds).

use std::io;
use std::os::fd::{AsFd, AsRawFd};
use std::time::Duration;

use mio::unix::SourceFd;
use mio::{Interest, Poll, Token};
use nix::sys::time::TimeSpec;
use nix::sys::timerfd::{ClockId, Expiration, TimerFd, TimerFlags, TimerSetTimeFlags};

use super::{EventLoop, Phase};
use crate::schedule::{connect_due_ns, due_ns};

/// Token of the deadline timer.
pub(super) const TIMER: Token = Token(usize::MAX - 2);

/// A fresh timer, registered on `poll` under [`TIMER`].
pub(super) fn register(poll: &Poll) -> io::Result<TimerFd> {
    let timer = TimerFd::new(
        ClockId::CLOCK_MONOTONIC,
        TimerFlags::TFD_NONBLOCK | TimerFlags::TFD_CLOEXEC,
    )
    .map_err(io::Error::from)?;
    poll.registry().register(
        &mut SourceFd(&timer.as_fd().as_raw_fd()),
        TIMER,
        Interest::READABLE,
    )?;
    Ok(timer)
}

impl EventLoop {
    /// Earliest time the loop must wake up, and whether that is a scheduled send.
    pub(super) fn next_deadline(&self, now: u64) -> (u64, bool) {
        let mut next = self.next_progress;
        let mut send_due = false;
        let cfg = &self.ctx.cfg;
        if let Some(&(_, _, d)) = self.inflight.front() {
            next = next.min(d);
        }
        match self.phase {
            Phase::Ramp => {
                if self.next_m < self.owned && self.inflight_count < self.inflight_cap {
                    let due =
                        connect_due_ns(self.ramp_start, self.next_m, cfg.connect_rate, self.loops);
                    next = next.min(due).min(self.ramp_deadline);
                }
            }
            Phase::WaitGo => {}
            Phase::Run => {
                next = next.min(self.t_end);
                if cfg.inflight > 0 {
                    // Closed loop: sends are due when acknowledgements (reads) free a slot,
                    // and the publish step after each turn takes them.
                } else if let Some((k, _)) = self.cursor.peek() {
                    let due = due_ns(self.ctx.t0, k, cfg.rate);
                    if due <= next {
                        next = due;
                        send_due = true;
                    }
                }
            }
            Phase::Drain => next = next.min(self.next_drain_check),
            Phase::Closing => next = next.min(self.close_deadline),
        }
        (next.max(now), send_due)
    }

    /// Arms the timer for absolute time `at` (CLOCK_MONOTONIC ns).
    pub(super) fn arm(&mut self, at: u64) {
        if at == self.armed_ns {
            return;
        }
        let ts = TimeSpec::from_duration(Duration::from_nanos(at.max(1)));
        if self
            .timer
            .set(
                Expiration::OneShot(ts),
                TimerSetTimeFlags::TFD_TIMER_ABSTIME,
            )
            .is_ok()
        {
            self.armed_ns = at;
        }
    }
}
