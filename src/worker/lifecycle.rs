//! How connections end, and the timers that end them: every transition out of `Open` and
//! every deadline lives here.

use std::time::Instant;

use super::{access, Worker};
use crate::proto::http::HttpError;
use crate::proto::{frame, sse};
use crate::worker::conn::{Ending, Feed, Phase};

/// Close code and reason sent to every client when the server shuts down.
const GOING_AWAY: (u16, &str) = (1001, "server shutting down");
/// Close code and reason for a subscriber that fell `--max-backlog` behind.
const SLOW_CONSUMER: (u16, &str) = (1008, "slow consumer");

/// Slab capacity below which an emptier slab is left as it is (a few hundred KiB at most).
const SHRINK_ABOVE: usize = 1024;

/// Whether a worker serves normally or drains. Draining starts at the shutdown signal and
/// ends when the connections the worker had then are gone, or at `deadline`. Connections
/// accepted during the drain (probes, refused upgrades; ids from `first_late_id` on) are
/// answered but do not hold it open: `late` counts those still in the slab.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Serving {
    Live,
    Draining {
        deadline: Instant,
        first_late_id: u64,
        late: usize,
    },
}

impl Serving {
    pub(super) fn is_draining(&self) -> bool {
        matches!(self, Serving::Draining { .. })
    }

    /// When the drain gives up on the connections left (the loop's poll must wake by then).
    pub(super) fn deadline(&self) -> Option<Instant> {
        match self {
            Serving::Live => None,
            Serving::Draining { deadline, .. } => Some(*deadline),
        }
    }

    /// A connection was accepted.
    pub(super) fn accepted(&mut self) {
        if let Serving::Draining { late, .. } = self {
            *late += 1;
        }
    }

    /// Connection `id` left the slab.
    pub(super) fn dropped(&mut self, id: u64) {
        if let Serving::Draining {
            first_late_id,
            late,
            ..
        } = self
        {
            if id >= *first_late_id {
                *late = late.saturating_sub(1);
            }
        }
    }

    /// Whether a drain is over, with `conns` connections in the slab at `now`.
    pub(super) fn drained(&self, conns: usize, now: Instant) -> bool {
        match *self {
            Serving::Live => false,
            Serving::Draining { deadline, late, .. } => conns <= late || now >= deadline,
        }
    }
}

/// What the sweep decided for one connection.
enum Expired {
    HangUp,
    /// Past the close grace with bytes still owed (or a slow consumer): reset, don't close.
    Abort,
    /// The handshake deadline passed (counted as a rejected handshake).
    HandshakeTimeout,
    Ping,
    /// An SSE stream's keep-alive comment is due.
    Heartbeat,
    /// An HTTP publish got no sequence number in time (its owner dropped it: full queues).
    NoAck,
    /// A new connection got no hook answer in time.
    NoHookAnswer,
}

impl Worker {
    /// Drop the connection now: leave its topic and close the socket (closing the last
    /// descriptor of a socket removes it from epoll, so no separate deregister call).
    pub(super) fn hang_up(&mut self, key: usize) {
        if !self.conns.contains(key) {
            return;
        }
        let conn = self.conns.remove(key);
        self.serving.dropped(conn.id);
        if log::log_enabled!(log::Level::Debug) {
            let peer = self.peers.remove(&key).map(|a| a.to_string());
            log::debug!(
                worker = self.index,
                conn = conn.id,
                peer = peer.as_deref().unwrap_or("unknown"),
                reason = conn.ending.label(),
                code = conn.ending.code();
                "disconnect"
            );
        }
        if let Some(feed) = conn.phase.feed() {
            self.presence_hang_up(key, &conn);
            self.leave_feed(key, feed);
            self.presence_gone();
        }
        self.release_guard(conn.guard.as_deref());
    }

    /// Drop the connection with a reset (`SO_LINGER` 0) instead of a FIN: the kernel frees
    /// its send buffer at once rather than keeping an orphaned socket that retransmits into
    /// a zero window for minutes. For peers that will not take their last bytes.
    pub(super) fn abort(&mut self, key: usize, why: Ending) {
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        conn.end(why);
        // Best effort: if it fails, the close below is an ordinary one.
        let _ = socket2::SockRef::from(&conn.socket).set_linger(Some(std::time::Duration::ZERO));
        self.counters.aborts += 1;
        self.hang_up(key);
    }

    /// Drop the connection now, for this reason (unless an earlier one was recorded).
    pub(super) fn hang_up_for(&mut self, key: usize, why: Ending) {
        if let Some(conn) = self.conns.get_mut(key) {
            conn.end(why);
        }
        self.hang_up(key);
    }

    /// Leave `Open` (if open): the connection stops receiving topic messages at once.
    fn leave_topic(&mut self, key: usize, next: Phase) {
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        let previous = conn.enter(next);
        if let Some(feed) = previous.feed() {
            self.leave_feed(key, feed);
        }
    }

    /// Remove the connection from every topic it receives.
    fn leave_feed(&mut self, key: usize, feed: &Feed) {
        for (topic, slot) in feed.subscriptions() {
            self.unsubscribe(&topic, slot);
        }
        if let Feed::V1(v1) = feed {
            for gone in &v1.patterns {
                self.forget_pattern(key, gone);
            }
        }
    }

    /// Fail the connection (RFC 6455 7.1.7) for a peer's protocol error: send our close
    /// frame with the error's code, then close TCP ourselves without waiting for a reply.
    pub(super) fn fail(&mut self, key: usize, code: u16, reason: &str) {
        self.end(key, Ending::ProtocolError(code));
        let last = self.goodbye(key, code, reason);
        self.reply_and_close(key, last);
    }

    /// The last bytes of an open connection that we end: a close frame, or for an SSE stream
    /// (which has no close frame) a comment with the reason before the FIN.
    fn goodbye(&self, key: usize, code: u16, reason: &str) -> bytes::Bytes {
        if let Some(conn) = self.conns.get(key).filter(|c| c.is_sse()) {
            let comment = sse::comment(&format!("closed ({code}): {reason}"));
            match conn.held_head() {
                // Not joined yet (cluster mode): the head first, so that an `EventSource`
                // reconnects after `retry:` (a 503 would make it give up for good).
                Some(head) => [head, &comment[..]].concat().into(),
                None => comment,
            }
        } else {
            frame::close_frame(code, reason)
        }
    }

    /// A clean server-initiated close (shutdown): send our close frame and wait for the
    /// peer's reply, within the grace period, so browsers see a clean `onclose`.
    fn go_away(&mut self, key: usize) {
        let (code, reason) = GOING_AWAY;
        self.end(key, Ending::Shutdown);
        if self.conns.get(key).is_some_and(|c| c.is_sse()) {
            // No close handshake in SSE: the comment, then FIN; the client reconnects.
            let last = self.goodbye(key, code, reason);
            return self.reply_and_close(key, last);
        }
        self.leave_topic(key, Phase::Closing { since: self.tick });
        self.queue_output(key, frame::close_frame(code, reason), 0);
    }

    /// Send final bytes (an HTTP response or the reply to the peer's close), then close TCP.
    pub(super) fn reply_and_close(&mut self, key: usize, last: impl Into<bytes::Bytes>) {
        let last = last.into();
        if let Some(status) = http_status(&last) {
            self.end(key, Ending::Http(status));
        }
        self.leave_topic(key, Phase::Flushing { since: self.tick });
        self.queue_output(key, last, 0);
    }

    /// Record why connection `key` ends (the first reason wins).
    pub(super) fn end(&mut self, key: usize, why: Ending) {
        if let Some(conn) = self.conns.get_mut(key) {
            conn.end(why);
        }
    }

    /// A subscriber over `--max-backlog`: drop what it has not started receiving, close it
    /// with 1008 (best effort: it may not read that either), and count it.
    pub(super) fn close_slow_consumer(&mut self, key: usize) {
        // A connection can be found over its cap more than once in a turn; close it once.
        if !matches!(
            self.conns.get(key).map(|c| &c.phase),
            Some(Phase::Open { .. })
        ) {
            return;
        }
        self.counters.slow_closes += 1;
        if let Some(conn) = self.conns.get_mut(key) {
            conn.out.truncate_unstarted();
            conn.end(Ending::SlowConsumer);
        }
        let (code, reason) = SLOW_CONSUMER;
        let last = self.goodbye(key, code, reason);
        self.reply_and_close(key, last);
    }

    /// Our last bytes are out: send FIN and linger until the peer closes too.
    pub(super) fn finish_flushing(&mut self, key: usize) {
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        if conn.shutdown_write().is_err() {
            return self.hang_up(key);
        }
        conn.enter(Phase::Lingering { since: self.tick });
    }

    /// Once per tick: handshake deadlines, keep-alive pings and silence limits, the grace
    /// period of closing connections, and empty output queues' memory. A linear pass over the
    /// slab: a few ns per connection.
    pub(super) fn sweep(&mut self) {
        let now = self.tick;
        let handshake = Self::ticks(self.config.handshake_timeout);
        let ping = Self::ticks(self.config.ping_interval);
        let grace = Self::ticks(self.config.close_grace);
        let mut expired = Vec::new();
        for (key, conn) in self.conns.iter_mut() {
            conn.out.release_if_empty();
            let verdict = match conn.phase {
                Phase::Handshake { since } if now.saturating_sub(since) >= handshake => {
                    Some(Expired::HandshakeTimeout)
                }
                Phase::AwaitingAck { since, .. } if now.saturating_sub(since) >= handshake => {
                    Some(Expired::NoAck)
                }
                Phase::AwaitingCount { since } if now.saturating_sub(since) >= handshake => {
                    Some(Expired::NoAck)
                }
                Phase::AwaitingHook { since, .. } if now.saturating_sub(since) >= handshake => {
                    Some(Expired::NoHookAnswer)
                }
                Phase::Joining { since, .. } if now.saturating_sub(since) >= handshake => {
                    Some(Expired::NoAck)
                }
                // An SSE client never sends: only its socket tells that it is gone.
                Phase::Open {
                    ref feed,
                    last_ping,
                } if feed.is_sse() => {
                    (now.saturating_sub(last_ping) >= ping).then_some(Expired::Heartbeat)
                }
                Phase::Open { last_ping, .. } => {
                    let silent = now.saturating_sub(conn.last_heard);
                    if silent >= 2 * ping && conn.output_pending() {
                        Some(Expired::Abort)
                    } else if silent >= 2 * ping {
                        Some(Expired::HangUp)
                    } else if silent >= ping && now.saturating_sub(last_ping) >= ping {
                        Some(Expired::Ping)
                    } else {
                        None
                    }
                }
                Phase::Closing { since }
                | Phase::Flushing { since }
                | Phase::Lingering { since }
                    if now.saturating_sub(since) >= grace =>
                {
                    // Bytes still queued here, or a slow consumer (whose kernel buffer was
                    // full when it was closed): a FIN would leave them pinned in the kernel.
                    if conn.output_pending() || conn.ending == Ending::SlowConsumer {
                        Some(Expired::Abort)
                    } else {
                        Some(Expired::HangUp)
                    }
                }
                _ => None,
            };
            if let Some(v) = verdict {
                expired.push((key, v));
            }
        }
        for key in self.expired_tokens() {
            if matches!(self.conns[key].phase, Phase::Open { .. }) {
                self.fail(key, access::POLICY, access::TOKEN_EXPIRED);
            }
        }
        for (key, verdict) in expired {
            match verdict {
                Expired::HangUp => self.hang_up_for(key, Ending::Timeout),
                Expired::Abort => self.abort(key, Ending::Timeout),
                Expired::HandshakeTimeout => {
                    self.counters
                        .rejected
                        .count(crate::ops::stats::Reject::Timeout);
                    self.hang_up_for(key, Ending::HandshakeTimeout);
                }
                Expired::NoAck => {
                    // A publish still waiting for its hook answer is not published late.
                    if let Some(conn) = self.conns.get_mut(key) {
                        conn.held = None;
                    }
                    self.refuse(key, HttpError::Unavailable);
                }
                Expired::NoHookAnswer => {
                    let why = "no hook answer within --handshake-timeout".to_owned();
                    self.refuse(key, HttpError::HookUnavailable(why));
                }
                Expired::Ping | Expired::Heartbeat => {
                    if let Some(Phase::Open { last_ping, .. }) =
                        self.conns.get_mut(key).map(|c| &mut c.phase)
                    {
                        *last_ping = now;
                    }
                    match verdict {
                        Expired::Heartbeat => self.sse_heartbeat(key),
                        _ => self.queue_output(key, frame::ping_frame(), 0),
                    }
                }
            }
        }
        self.shrink_after_a_drop();
    }

    /// After a storm of connections has gone, give back the slab's empty tail: the slab never
    /// shrinks by itself, and at 10k connections its entries are megabytes. Only when at most
    /// a quarter is in use, so a steady population never pays for it.
    fn shrink_after_a_drop(&mut self) {
        let capacity = self.conns.capacity();
        if capacity > SHRINK_ABOVE && self.conns.len() * 4 < capacity {
            self.conns.shrink_to_fit();
        }
    }

    /// Shutdown: drop unfinished handshakes and send 1001 to every open connection; the loop
    /// then runs until they are gone or the drain deadline passes. The listeners keep
    /// accepting meanwhile, so probes see the drain: `/ready` answers 503, `/health` and
    /// `/metrics` 200, new upgrades and publishes 503 (see `on_request_bytes`).
    pub(super) fn begin_drain(&mut self) {
        self.serving = Serving::Draining {
            deadline: self.now + self.config.drain_timeout,
            first_late_id: self.next_conn_id,
            late: 0,
        };
        // Batches held by --batch-window go out before the close frames.
        self.flush_topics(true);
        let keys: Vec<usize> = self.conns.iter().map(|(key, _)| key).collect();
        for key in keys {
            match self.conns[key].phase {
                Phase::Handshake { .. }
                | Phase::AwaitingHook { .. }
                | Phase::Joining { .. }
                | Phase::Streaming => self.hang_up_for(key, Ending::Shutdown),
                Phase::Open { .. } => self.go_away(key),
                _ => {}
            }
        }
        self.flush();
    }
}

/// The status of an HTTP response (`HTTP/1.1 503 …` → 503); `None` for anything else (a
/// close frame).
fn http_status(bytes: &[u8]) -> Option<u16> {
    let digits = bytes.strip_prefix(b"HTTP/1.1 ")?.get(..3)?;
    std::str::from_utf8(digits).ok()?.parse().ok()
}
