//! One event-loop thread: it opens its share of the connections, publishes its share of the
//! messages on schedule, and records what its connections receive.
//!
//! Thread-per-core: an event loop owns its connections outright (connection `g` belongs to
//! event loop `g % loops` of the run), so nothing on the hot path is shared or locked. Its life
//! is a sequence of phases, each in its own file: the connect ramp (`ramp.rs`), the publish
//! schedule (`publish.rs`), and the drain that checks deliveries and closes (`drain.rs`).
//! Deadlines (next send, next connect, next progress tick) are kept with an absolute `timerfd`
//! (`timer.rs`), which wakes the loop with microsecond precision where an epoll timeout would
//! round to milliseconds.

mod drain;
mod publish;
mod ramp;
mod timer;

use std::collections::VecDeque;
use std::io;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Arc};
use std::time::Duration;

use mio::{Events, Poll, Token};
use nix::sys::timerfd::TimerFd;
use slab::Slab;

use super::conn::{Conn, Ctx, Step};
use crate::cli::{Config, Mode};
use crate::clock::{now_ns, NS_PER_SEC};
use crate::pipe::Progress;
use crate::plan::Plan;
use crate::schedule::{owned_count, ramp_deadline, ramp_ns, PublishCursor, Window};
use crate::stats::{merge_hist, new_histogram, Stats};

/// Token of the cross-thread waker (go / abort signals).
pub const WAKE: Token = Token(usize::MAX - 1);
/// Size of the shared read buffer.
const READ_BUF: usize = 256 * 1024;

/// Go and abort signals shared by the event loops of one child process, set by its stdin
/// listener, so a loop learns them without a message queue of its own.
#[derive(Default)]
pub struct Signal {
    /// Start of traffic (CLOCK_MONOTONIC ns); 0 until the parent says go.
    pub go_ns: AtomicU64,
    /// Set when the parent went away: stop at once.
    pub abort: AtomicBool,
}

/// Messages from an event loop to its child process's main thread, which merges them into the
/// child's lines to the parent.
pub enum LoopMsg {
    /// Once a second, from event loop `local` (its index within the child process).
    Progress {
        /// The loop's index within the child process (its gauges replace the last ones).
        local: usize,
        /// What it saw since its last progress message.
        progress: Progress,
    },
    /// All connection attempts finished.
    Ready,
    /// The event loop is done: everything it measured.
    Final(Box<Stats>),
    /// The event loop could not start.
    Fatal(String),
}

/// Everything an event-loop thread is started with, built by the child's main thread (which
/// registers the waker on `poll` before the thread starts).
pub struct Setup {
    /// Index of this event loop in the whole run (across child processes).
    pub id: u64,
    /// Index within its child process.
    pub local: usize,
    /// Run parameters.
    pub cfg: Arc<Config>,
    /// Layout of the run.
    pub plan: Plan,
    /// Its poll instance (the waker is registered on it).
    pub poll: Poll,
    /// Go / abort.
    pub signal: Arc<Signal>,
    /// Where its messages go.
    pub tx: mpsc::Sender<LoopMsg>,
    /// TLS client configuration, when a target is `wss://` (built once per process).
    pub tls: Option<Arc<rustls::ClientConfig>>,
}

/// Thread entry point: runs the event loop and sends its final stats.
pub fn run(setup: Setup) {
    let tx = setup.tx.clone();
    if !setup.cfg.cores.is_empty() {
        let cores = &setup.cfg.cores;
        let id = cores[(setup.id as usize) % cores.len()];
        core_affinity::set_for_current(core_affinity::CoreId { id });
    }
    // Precise wakeups for the publish schedule (the default slack is 50 µs).
    let _ = nix::sys::prctl::set_timerslack(1);
    match EventLoop::new(setup) {
        Ok(mut l) => {
            l.run();
            let _ = tx.send(LoopMsg::Final(Box::new(l.ctx.stats)));
        }
        Err(e) => {
            let _ = tx.send(LoopMsg::Fatal(format!("event loop start failed: {e}")));
        }
    }
}

/// Where an event loop is in the run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Opening connections at the connect rate.
    Ramp,
    /// All attempts finished; waiting for the parent's go.
    WaitGo,
    /// Publishing on schedule.
    Run,
    /// Schedule done; waiting for the last deliveries.
    Drain,
    /// Close frames sent; waiting for the server to close.
    Closing,
}

/// The state of one event-loop thread.
struct EventLoop {
    /// Index in the whole run.
    id: u64,
    /// Event loops in the whole run.
    loops: u64,
    /// Index within the child process.
    local: usize,
    plan: Plan,
    poll: Poll,
    events: Events,
    timer: TimerFd,
    armed_ns: u64,
    signal: Arc<Signal>,
    tx: mpsc::Sender<LoopMsg>,
    tls: Option<Arc<rustls::ClientConfig>>,
    conns: Slab<Conn>,
    /// Slab key + 1 of owned connection `m` (g = id + loops * m); 0 when not connected.
    slot: Vec<u32>,
    ctx: Ctx,
    phase: Phase,
    /// Connections this loop owns.
    owned: u64,
    /// Next owned connection to attempt.
    next_m: u64,
    ramp_start: u64,
    ramp_deadline: u64,
    /// Attempts not yet upgraded: (slab key, g, timeout deadline), oldest first.
    inflight: VecDeque<(usize, u64, u64)>,
    inflight_count: u64,
    inflight_cap: u64,
    open: u64,
    /// End of the publish schedule.
    t_end: u64,
    cursor: PublishCursor,
    /// Connections with output queued by this round of publishing.
    dirty: Vec<usize>,
    /// Connections to read again without waiting for an event.
    retry: Vec<usize>,
    drain_deadline: u64,
    next_drain_check: u64,
    close_deadline: u64,
    next_progress: u64,
    reported_received: u64,
    reported_sent: u64,
    reported_duplicates: u64,
    reported_out_of_order: u64,
}

impl EventLoop {
    fn new(s: Setup) -> io::Result<EventLoop> {
        let cfg = s.cfg.clone();
        let loops = s.plan.event_loops();
        let timer = timer::register(&s.poll)?;
        let owned = owned_count(s.id, loops, cfg.total);
        let now = now_ns();
        let ctx = Ctx {
            cfg: cfg.clone(),
            stats: Stats::default(),
            interval: new_histogram(),
            conn_interval: new_histogram(),
            window: Window::new(cfg.rate.max(1), cfg.warmup_ns, cfg.duration_ns),
            t0: 0,
            last_delivery_ns: 0,
            rbuf: vec![0; READ_BUF],
            rng: (now ^ (s.id + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15)) | 1,
            inflater: None,
            inflated: Vec::new(),
            acks: 0,
        };
        Ok(EventLoop {
            id: s.id,
            loops,
            local: s.local,
            plan: s.plan,
            poll: s.poll,
            events: Events::with_capacity(1024),
            timer,
            armed_ns: 0,
            signal: s.signal,
            tx: s.tx,
            tls: s.tls,
            conns: Slab::with_capacity(owned.min(1 << 20) as usize),
            slot: vec![0; owned as usize],
            ctx,
            phase: Phase::Ramp,
            owned,
            next_m: 0,
            ramp_start: now,
            ramp_deadline: ramp_deadline(now, ramp_ns(&cfg), cfg.connect_timeout_ns),
            inflight: VecDeque::new(),
            inflight_count: 0,
            inflight_cap: (cfg.max_inflight / loops).max(1),
            open: 0,
            t_end: 0,
            cursor: PublishCursor::new(0, 1, 0, 0),
            dirty: Vec::new(),
            retry: Vec::new(),
            drain_deadline: 0,
            next_drain_check: 0,
            close_deadline: 0,
            next_progress: now + NS_PER_SEC,
            reported_received: 0,
            reported_sent: 0,
            reported_duplicates: 0,
            reported_out_of_order: 0,
        })
    }

    /// The event loop; returns when the loop is done or aborted.
    fn run(&mut self) {
        loop {
            if self.signal.abort.load(Ordering::Acquire) {
                return;
            }
            let now = now_ns();
            if !self.advance(now) {
                break;
            }
            if now >= self.next_progress {
                self.progress();
                self.next_progress = now + NS_PER_SEC;
            }
            let (next, send_due) = self.next_deadline(now);
            let spin = if send_due { self.ctx.cfg.spin_ns } else { 0 };
            let timeout = if !self.retry.is_empty() || next <= now + spin {
                // Busy-poll up to a scheduled send: waking from sleep can take tens of µs.
                Duration::ZERO
            } else {
                self.arm(next - spin);
                // The timerfd wakes us precisely; this is only a backstop.
                Duration::from_nanos(next.saturating_sub(now) + 2_000_000)
            };
            if let Err(e) = self.poll.poll(&mut self.events, Some(timeout)) {
                if e.kind() != io::ErrorKind::Interrupted {
                    self.ctx.stats.error("poll_failed");
                    return;
                }
            }
            let events = std::mem::replace(&mut self.events, Events::with_capacity(0));
            for e in events.iter() {
                if e.token() == WAKE || e.token() == timer::TIMER {
                    continue;
                }
                let err = e.is_error();
                let readable = e.is_readable() || e.is_read_closed() || err;
                self.handle(e.token().0, readable, e.is_writable() || err);
            }
            self.events = events;
            for key in std::mem::take(&mut self.retry) {
                self.handle(key, true, false);
            }
        }
        self.progress();
    }

    /// Phase logic; false when the event loop is finished.
    fn advance(&mut self, now: u64) -> bool {
        let go = self.signal.go_ns.load(Ordering::Acquire);
        match self.phase {
            Phase::Ramp => {
                if go != 0 {
                    self.give_up_ramp();
                    self.start(go, now);
                    return true;
                }
                self.ramp(now);
                if self.next_m >= self.owned && self.inflight_count == 0 {
                    let _ = self.tx.send(LoopMsg::Ready);
                    self.phase = Phase::WaitGo;
                }
            }
            Phase::WaitGo => {
                if go != 0 {
                    self.start(go, now);
                }
            }
            Phase::Run => {
                self.expire_inflight(now);
                self.publish(now);
                let done = self.cursor.peek().is_none() || self.ctx.cfg.inflight > 0;
                if now >= self.t_end && done {
                    self.start_drain(now);
                }
            }
            Phase::Drain => {
                self.expire_inflight(now);
                self.check_drain(now);
            }
            Phase::Closing => {
                if self.conns.is_empty() || now >= self.close_deadline {
                    return false;
                }
            }
        }
        true
    }

    /// Dispatches one readiness event.
    fn handle(&mut self, key: usize, readable: bool, writable: bool) {
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        match conn.on_ready(&mut self.ctx, readable, writable) {
            Ok(Step::Idle) => {}
            Ok(Step::Upgraded) => {
                self.inflight_count = self.inflight_count.saturating_sub(1);
                self.open += 1;
                if self.ctx.cfg.v1 {
                    // `subscribed` may have come with more; read on (edge-triggered).
                    self.retry.push(key);
                }
                if self.phase == Phase::Closing {
                    let keep = self
                        .conns
                        .get_mut(key)
                        .is_some_and(|c| c.start_close(&mut self.ctx));
                    if !keep {
                        self.remove(key);
                    }
                }
            }
            Ok(Step::MoreToRead) => self.retry.push(key),
            Ok(Step::Closed) => self.remove(key),
            Err(kind) => self.fail(key, &kind),
        }
    }

    /// Drops a connection after an error, counting it unless the run is ending anyway.
    fn fail(&mut self, key: usize, kind: &str) {
        if self.phase != Phase::Closing {
            self.ctx.stats.error(kind);
        }
        self.remove(key);
    }

    /// Drops a connection and its bookkeeping.
    fn remove(&mut self, key: usize) {
        let Some(c) = self.conns.try_remove(key) else {
            return;
        };
        if c.in_flight() {
            self.inflight_count = self.inflight_count.saturating_sub(1);
        } else {
            self.open = self.open.saturating_sub(1);
        }
        let m = (c.g - self.id) / self.loops;
        if let Some(s) = self.slot.get_mut(m as usize) {
            if *s == key as u32 + 1 {
                *s = 0;
            }
        }
    }

    /// Sends a progress message and folds the interval histograms into the totals.
    fn progress(&mut self) {
        let st = &mut self.ctx.stats;
        merge_hist(&mut st.latency, &self.ctx.interval);
        merge_hist(&mut st.connect_latency, &self.ctx.conn_interval);
        let hist = if self.ctx.cfg.mode == Mode::Connect {
            std::mem::replace(&mut self.ctx.conn_interval, new_histogram())
        } else {
            self.ctx.conn_interval.reset();
            std::mem::replace(&mut self.ctx.interval, new_histogram())
        };
        self.ctx.interval.reset();
        let st = &self.ctx.stats;
        let _ = self.tx.send(LoopMsg::Progress {
            local: self.local,
            progress: Progress {
                open: self.open,
                received: st.received - self.reported_received,
                sent: st.sent_total - self.reported_sent,
                errors: st.error_total(),
                duplicates: st.duplicates - self.reported_duplicates,
                out_of_order: st.out_of_order - self.reported_out_of_order,
                hist,
            },
        });
        self.reported_received = st.received;
        self.reported_sent = st.sent_total;
        self.reported_duplicates = st.duplicates;
        self.reported_out_of_order = st.out_of_order;
    }
}
