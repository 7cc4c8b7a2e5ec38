//! One event-loop thread: it opens its share of the connections, publishes its share of the
//! messages on schedule, and records what its connections receive.
//!
//! Thread-per-core: a worker owns its connections outright (connection `g` belongs to worker
//! `g % workers`), so nothing on the hot path is shared or locked. Deadlines (next send, next
//! connect, next progress tick) are kept with an absolute `timerfd`, which wakes the loop with
//! microsecond precision where an epoll timeout would round to milliseconds.

use std::collections::VecDeque;
use std::io;
use std::os::fd::{AsFd, AsRawFd};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Arc};
use std::time::Duration;

use hdrhistogram::Histogram;
use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token};
use nix::sys::time::TimeSpec;
use nix::sys::timerfd::{ClockId, Expiration, TimerFd, TimerFlags, TimerSetTimeFlags};
use slab::Slab;

use crate::child::conn::{Conn, Ctx, State, Step};
use crate::cli::{Config, Mode};
use crate::client::dial::{open_socket, ramp_deadline};
use crate::client::errkind::io_kind;
use crate::client::handshake;
use crate::client::transport::Transport;
use crate::clock::{now_ns, NS_PER_SEC};
use crate::plan::Plan;
use crate::schedule::{connect_due_ns, due_ns, owned_count, PublishCursor, Window};
use crate::stats::{bump, merge_hist, new_histogram, Stats};

/// Token of the cross-thread waker (go / abort signals).
pub const WAKE: Token = Token(usize::MAX - 1);
/// Token of the deadline timer.
const TIMER: Token = Token(usize::MAX - 2);
/// Size of the shared read buffer.
const READ_BUF: usize = 256 * 1024;
/// Messages sent per loop iteration at most, so a late publisher still serves its sockets.
const SEND_BATCH: usize = 10_000;
/// How often the drain phase checks whether every receiver has everything.
const DRAIN_CHECK_NS: u64 = 10_000_000;
/// How long the close handshake may take at the end.
const CLOSE_WAIT_NS: u64 = NS_PER_SEC;

/// Go and abort signals shared by the workers of one process.
#[derive(Default)]
pub struct Signal {
    /// Start of traffic (CLOCK_MONOTONIC ns); 0 until the parent says go.
    pub go_ns: AtomicU64,
    /// Set when the parent went away: stop at once.
    pub abort: AtomicBool,
}

/// Messages from a worker to its process's main thread.
pub enum Report {
    /// Once a second.
    Progress {
        /// Worker index within the process.
        local: usize,
        /// Open connections now.
        open: u64,
        /// Data messages received since the last tick.
        received: u64,
        /// Messages sent since the last tick.
        sent: u64,
        /// Errors so far.
        errors: u64,
        /// Latencies recorded since the last tick (delivery, or connect in connect mode).
        hist: Box<Histogram<u64>>,
    },
    /// All connection attempts finished.
    Ready,
    /// The worker is done.
    Final(Box<Stats>),
    /// The worker could not start.
    Fatal(String),
}

/// Everything a worker thread is started with.
pub struct Setup {
    /// Global worker index.
    pub w: u64,
    /// Index within its process.
    pub local: usize,
    /// Run parameters.
    pub cfg: Arc<Config>,
    /// Layout of the run.
    pub plan: Plan,
    /// Its poll instance (the waker is registered on it).
    pub poll: Poll,
    /// Go / abort.
    pub signal: Arc<Signal>,
    /// Where reports go.
    pub tx: mpsc::Sender<Report>,
    /// TLS client configuration, when a target is `wss://` (built once per process).
    pub tls: Option<Arc<rustls::ClientConfig>>,
}

/// Thread entry point: runs the worker and sends its final report.
pub fn run(setup: Setup) {
    let tx = setup.tx.clone();
    if !setup.cfg.cores.is_empty() {
        let cores = &setup.cfg.cores;
        let id = cores[(setup.w as usize) % cores.len()];
        core_affinity::set_for_current(core_affinity::CoreId { id });
    }
    // Precise wakeups for the publish schedule (the default slack is 50 µs).
    let _ = nix::sys::prctl::set_timerslack(1);
    match Worker::new(setup) {
        Ok(mut w) => {
            w.run();
            let _ = tx.send(Report::Final(Box::new(w.ctx.stats)));
        }
        Err(e) => {
            let _ = tx.send(Report::Fatal(format!("worker start failed: {e}")));
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Ramp,
    WaitGo,
    Run,
    Drain,
    Closing,
}

struct Worker {
    w: u64,
    workers: u64,
    local: usize,
    plan: Plan,
    poll: Poll,
    events: Events,
    timer: TimerFd,
    armed_ns: u64,
    signal: Arc<Signal>,
    tx: mpsc::Sender<Report>,
    tls: Option<Arc<rustls::ClientConfig>>,
    conns: Slab<Conn>,
    /// Slab key + 1 of owned connection `m` (g = w + workers * m); 0 when not connected.
    slot: Vec<u32>,
    ctx: Ctx,
    phase: Phase,
    owned: u64,
    next_m: u64,
    ramp_start: u64,
    ramp_deadline: u64,
    inflight: VecDeque<(usize, u64, u64)>,
    inflight_count: u64,
    inflight_cap: u64,
    open: u64,
    t_end: u64,
    cursor: PublishCursor,
    dirty: Vec<usize>,
    retry: Vec<usize>,
    drain_deadline: u64,
    next_drain_check: u64,
    close_deadline: u64,
    next_progress: u64,
    reported_received: u64,
    reported_sent: u64,
}

impl Worker {
    fn new(s: Setup) -> io::Result<Worker> {
        let cfg = s.cfg.clone();
        let workers = s.plan.workers();
        let timer = TimerFd::new(
            ClockId::CLOCK_MONOTONIC,
            TimerFlags::TFD_NONBLOCK | TimerFlags::TFD_CLOEXEC,
        )
        .map_err(io::Error::from)?;
        s.poll.registry().register(
            &mut SourceFd(&timer.as_fd().as_raw_fd()),
            TIMER,
            Interest::READABLE,
        )?;
        let owned = owned_count(s.w, workers, cfg.total);
        let now = now_ns();
        let ramp_ns = if cfg.connect_rate == 0 {
            0
        } else {
            (cfg.total as u128 * NS_PER_SEC as u128 / cfg.connect_rate as u128) as u64
        };
        let ctx = Ctx {
            cfg: cfg.clone(),
            stats: Stats::default(),
            interval: new_histogram(),
            conn_interval: new_histogram(),
            window: Window::new(cfg.rate.max(1), cfg.warmup_ns, cfg.duration_ns),
            t0: 0,
            last_delivery_ns: 0,
            rbuf: vec![0; READ_BUF],
            rng: (now ^ (s.w + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15)) | 1,
            inflater: None,
            inflated: Vec::new(),
        };
        Ok(Worker {
            w: s.w,
            workers,
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
            ramp_deadline: ramp_deadline(now, ramp_ns, cfg.connect_timeout_ns),
            inflight: VecDeque::new(),
            inflight_count: 0,
            inflight_cap: (cfg.max_inflight / workers).max(1),
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
        })
    }

    /// The event loop; returns when the worker is done or aborted.
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
                if e.token() == WAKE || e.token() == TIMER {
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

    /// Phase logic; false when the worker is finished.
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
                    let _ = self.tx.send(Report::Ready);
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
                if now >= self.t_end && self.cursor.peek().is_none() {
                    self.phase = Phase::Drain;
                    self.drain_deadline = self.t_end + self.ctx.cfg.drain_ns;
                    self.next_drain_check = now;
                }
            }
            Phase::Drain => {
                self.expire_inflight(now);
                if now >= self.next_drain_check {
                    self.next_drain_check = now + DRAIN_CHECK_NS;
                    let quiet = self.ctx.cfg.drain_ns.min(NS_PER_SEC);
                    let last = self.ctx.last_delivery_ns.max(self.t_end);
                    if now >= self.drain_deadline || now >= last + quiet || self.all_delivered() {
                        self.close_all(now);
                    }
                }
            }
            Phase::Closing => {
                if self.conns.is_empty() || now >= self.close_deadline {
                    return false;
                }
            }
        }
        true
    }

    /// Starts due connection attempts within the in-flight cap.
    fn ramp(&mut self, now: u64) {
        self.expire_inflight(now);
        if now >= self.ramp_deadline && self.next_m < self.owned {
            self.give_up_ramp();
        }
        let rate = self.ctx.cfg.connect_rate;
        // Bounded by the in-flight cap per call.
        while self.next_m < self.owned
            && self.inflight_count < self.inflight_cap
            && connect_due_ns(self.ramp_start, self.next_m, rate, self.workers) <= now
        {
            let m = self.next_m;
            self.next_m += 1;
            self.connect(m, now);
        }
    }

    /// Counts the attempts never started (ramp cut short) as errors.
    fn give_up_ramp(&mut self) {
        let left = self.owned.saturating_sub(self.next_m);
        if left > 0 {
            *self
                .ctx
                .stats
                .errors
                .entry("not_attempted".into())
                .or_insert(0) += left;
            self.next_m = self.owned;
        }
    }

    /// Starts connecting owned connection `m`.
    fn connect(&mut self, m: u64, now: u64) {
        let g = self.w + self.workers * m;
        let cfg = self.ctx.cfg.clone();
        let t = cfg.target_of(g);
        let target = &cfg.targets[t];
        self.ctx.stats.attempted += 1;
        self.ctx.stats.first_attempt_ns = self.ctx.stats.first_attempt_ns.min(now);
        let n_targets = cfg.targets.len() as u64;
        let src_index = (g / n_targets) % self.plan.source_ips as u64;
        let sock = match open_socket(target.addr, src_index) {
            Ok(s) => s,
            Err(e) => {
                self.ctx.stats.error(&io_kind("connect", &e));
                return;
            }
        };
        let stream = match Transport::new(sock, target, self.tls.as_ref()) {
            Ok(s) => s,
            Err(kind) => {
                self.ctx.stats.error(&kind);
                return;
            }
        };
        let v1 = cfg.v1 && cfg.is_receiver(g);
        let path = match cfg.mode {
            Mode::Echo => target.echo_path(g),
            // herald.v1 takes the topic in the subscribe request, not the path.
            _ if v1 => "/".to_string(),
            _ => target.path.clone(),
        };
        let (mut req, accept) = handshake::request(target, &path, cfg.deflate);
        if v1 {
            req = crate::client::v1::offer(req);
        }
        let entry = self.conns.vacant_entry();
        let key = entry.key();
        let mut conn = Conn::new(g, &cfg, stream, req, accept);
        conn.started_ns = now;
        if let Err(e) = self.poll.registry().register(
            conn.stream.socket_mut(),
            Token(key),
            Interest::READABLE | Interest::WRITABLE,
        ) {
            self.ctx.stats.error(&io_kind("connect", &e));
            return;
        }
        entry.insert(conn);
        if let Some(s) = self.slot.get_mut(m as usize) {
            *s = key as u32 + 1;
        }
        self.inflight
            .push_back((key, g, now + cfg.connect_timeout_ns));
        self.inflight_count += 1;
    }

    /// Fails attempts whose connect timeout passed.
    fn expire_inflight(&mut self, now: u64) {
        // Bounded by the queue length; each iteration pops one entry.
        while let Some(&(key, g, deadline)) = self.inflight.front() {
            let live = self
                .conns
                .get(key)
                .is_some_and(|c| c.g == g && c.in_flight());
            if live && deadline > now {
                break;
            }
            self.inflight.pop_front();
            if live {
                let c = &self.conns[key];
                let kind = match c.state {
                    State::Connecting => "connect_timeout",
                    State::Subscribing => "subscribe_timeout",
                    _ if c.stream.is_handshaking() => "tls_handshake_timeout",
                    _ => "upgrade_timeout",
                };
                self.fail(key, kind);
            }
        }
    }

    /// The go signal: fixes who counts, and starts the schedule.
    fn start(&mut self, t0: u64, now: u64) {
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
            self.cursor =
                PublishCursor::new(self.w, self.workers, cfg.publishers, self.ctx.window.k_hi);
            self.phase = Phase::Run;
        } else {
            self.close_all(now);
        }
    }

    /// Sends every message that is due.
    fn publish(&mut self, now: u64) {
        let t0 = self.ctx.t0;
        let rate = self.ctx.cfg.rate;
        let publishers = self.ctx.cfg.publishers;
        for _ in 0..SEND_BATCH {
            let Some((k, i)) = self.cursor.peek() else {
                break;
            };
            let due = due_ns(t0, k, rate);
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
                if self.ctx.window.contains(k) {
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

    /// Whether every counted receiver has seen the last message of every publisher it should.
    fn all_delivered(&self) -> bool {
        let cfg = &self.ctx.cfg;
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
    fn close_all(&mut self, now: u64) {
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
        let m = (c.g - self.w) / self.workers;
        if let Some(s) = self.slot.get_mut(m as usize) {
            if *s == key as u32 + 1 {
                *s = 0;
            }
        }
    }

    /// Earliest time the loop must wake up, and whether that is a scheduled send.
    fn next_deadline(&self, now: u64) -> (u64, bool) {
        let mut next = self.next_progress;
        let mut send_due = false;
        let cfg = &self.ctx.cfg;
        if let Some(&(_, _, d)) = self.inflight.front() {
            next = next.min(d);
        }
        match self.phase {
            Phase::Ramp => {
                if self.next_m < self.owned && self.inflight_count < self.inflight_cap {
                    let due = connect_due_ns(
                        self.ramp_start,
                        self.next_m,
                        cfg.connect_rate,
                        self.workers,
                    );
                    next = next.min(due).min(self.ramp_deadline);
                }
            }
            Phase::WaitGo => {}
            Phase::Run => {
                next = next.min(self.t_end);
                if let Some((k, _)) = self.cursor.peek() {
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
    fn arm(&mut self, at: u64) {
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

    /// Sends a progress report and folds the interval histograms into the totals.
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
        let _ = self.tx.send(Report::Progress {
            local: self.local,
            open: self.open,
            received: st.received - self.reported_received,
            sent: st.sent_total - self.reported_sent,
            errors: st.error_total(),
            hist: Box::new(hist),
        });
        self.reported_received = st.received;
        self.reported_sent = st.sent_total;
    }
}
