//! One client connection: its lifecycle state machine and the output it still owes the peer.
//! Sized for the idle case: no read or write buffer lives here unless bytes are pending.

use std::collections::VecDeque;
use std::io::{self, IoSlice, Read, Write};
use std::sync::Arc;
use std::time::Instant;

use bytes::{Buf, Bytes};
use mio::net::TcpStream;

use crate::policy::guard::Guard;
use crate::proto::deflate::Agreement;
use crate::proto::frame::Assembly;
use crate::proto::topic::TopicName;
use crate::worker::tls;

/// Where a connection is in its life. Every transition happens in `worker`, one place each.
#[derive(Debug)]
pub enum Phase {
    /// Waiting for a complete HTTP request head (dropped at the handshake deadline).
    Handshake { since: u32 },
    /// Upgraded: receiving its `feed`. `last_ping` is when keep-alive last pinged it.
    Open { feed: Feed, last_ping: u32 },
    /// An HTTP publish was handed to its topic's owner; the response waits for the sequence
    /// number. Further (pipelined) requests wait in `inbound`.
    AwaitingAck { since: u32, keep_alive: bool },
    /// `GET /topics/<topic>`: the count was asked of every worker; the response waits for
    /// their shares (`worker::presence`). Bytes the peer sends meanwhile are discarded.
    AwaitingCount { since: u32 },
    /// The dashboard's event stream (`GET /dashboard/feed`): the response head is sent and an
    /// event follows every second until the peer leaves (see `worker::dashboard`). Bytes the
    /// peer sends are discarded.
    Streaming,
    /// A new connection (upgrade or SSE stream) passed the server's own checks and waits for
    /// the backend hooks' answers (`--connect-hook`, and `--subscribe-hook` for the topics it
    /// names) before it is answered. Further bytes wait in `inbound`.
    AwaitingHook {
        since: u32,
        pending: Box<PendingOpen>,
    },
    /// Cluster mode, raw path mode: the connection is subscribed (held back, `JOINING`) and
    /// its join went to the broker; its `101` (`response`) is sent when the join is answered,
    /// so that `onopen` means the node hears the topic in Redis and nothing published after
    /// it is missed. Bytes the client sends meanwhile wait in `inbound`.
    Joining { since: u32, join: Box<PathJoin> },
    /// We sent a close frame (shutdown) and wait for the peer's (or its EOF) until the grace
    /// period ends.
    Closing { since: u32 },
    /// Our last bytes (HTTP response or close reply) are queued; once written, we send FIN.
    Flushing { since: u32 },
    /// FIN sent; reading and discarding until the peer's EOF, so unread bytes don't turn our
    /// close into a reset that could destroy the response we just sent.
    Lingering { since: u32 },
}

impl Phase {
    /// The topics it is subscribed to: open, or (raw path, cluster mode) joining.
    pub fn feed(&self) -> Option<&Feed> {
        match self {
            Phase::Open { feed, .. } => Some(feed),
            Phase::Joining { join, .. } => Some(&join.feed),
            _ => None,
        }
    }

    /// As [`Phase::feed`], to change.
    pub fn feed_mut(&mut self) -> Option<&mut Feed> {
        match self {
            Phase::Open { feed, .. } => Some(feed),
            Phase::Joining { join, .. } => Some(&mut join.feed),
            _ => None,
        }
    }

    /// The moves the lifecycle allows (docs/architecture.md, "Connection lifecycle"); every
    /// other move is a bug, caught by [`Conn::enter`] in debug builds.
    pub fn may_enter(&self, next: &Phase) -> bool {
        use Phase::*;
        matches!(
            (self, next),
            // 101 (raw path or herald.v1), an HTTP publish, an answer that ends it.
            (
                Handshake { .. },
                Open { .. }
                    | AwaitingAck { .. }
                    | AwaitingCount { .. }
                    | AwaitingHook { .. }
                    | Joining { .. }
                    | Flushing { .. }
                    | Streaming
            )
                // The hooks answered: opened (in cluster mode a raw path joins first), or
                // refused.
                | (AwaitingHook { .. }, Open { .. } | Joining { .. } | Flushing { .. })
                // The broker answered the raw path's join: the 101, or a 503.
                | (Joining { .. }, Open { .. } | Flushing { .. })
                // The publish's 202: kept alive for the next request, or closing after it.
                | (AwaitingAck { .. }, Handshake { .. } | Flushing { .. })
                // The count's 200 (or 503 when the shares are late); it closes after it.
                | (AwaitingCount { .. }, Flushing { .. })
                // Our close (shutdown) waits for the peer's; an error or its close ends it now.
                | (Open { .. }, Closing { .. } | Flushing { .. })
                | (Closing { .. }, Flushing { .. })
                // Our last bytes are out: FIN, then read until the peer's EOF.
                | (Flushing { .. }, Lingering { .. })
        )
    }
}

/// A raw path connection waiting for its join (boxed: a phase stays two words and a tag,
/// as every connection carries one).
#[derive(Debug)]
pub struct PathJoin {
    /// Its subscription (`Feed::Path`), held back until the answer.
    pub feed: Feed,
    /// Its `101`.
    pub response: bytes::Bytes,
}

/// A connection waiting for hook answers: what it asked to open, how many answers are still
/// to come, and what they said so far.
#[derive(Debug)]
pub struct PendingOpen {
    pub opening: Opening,
    /// Answers still to come.
    pub waiting: u32,
    /// The first refusal (deny or no decision) among the answers so far.
    pub refused: Option<crate::hooks::Verdict>,
    /// What the connect hook attached (identity and grants), once it allowed.
    pub attached: Option<crate::hooks::Attached>,
}

/// What a connection waiting for hooks will open.
#[derive(Debug)]
pub enum Opening {
    Upgrade {
        mode: crate::proto::http::Mode,
        accept: String,
        deflate: Agreement,
    },
    Events {
        topics: Vec<String>,
        positions: Vec<Option<crate::proto::sse::Position>>,
    },
}

/// Messages of one publisher waiting for `--publish-hook`, in the order it sent them: each is
/// published only when it and every message before it are decided, so the answers' order
/// never reorders a publisher's messages.
#[derive(Debug, Default)]
pub struct HeldPublishes {
    pub next_ticket: u64,
    pub queue: VecDeque<HeldPublish>,
}

/// One held message.
#[derive(Debug)]
pub struct HeldPublish {
    pub ticket: u64,
    pub topic: TopicName,
    pub frame: Bytes,
    pub ack: Option<crate::feed::bus::AckTo>,
    pub verdict: Option<crate::hooks::Verdict>,
}

/// Why a connection ended: the `reason` (and `code`) of its disconnect log line. The first
/// decision to end a connection sets it; later steps (flushing, lingering, the grace timer)
/// keep it. Four bytes, in what was `Conn`'s padding.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub enum Ending {
    /// Nothing decided yet (a disconnect with it is reported as `closed`).
    #[default]
    Unset,
    /// The peer sent a close frame with this code (1005: none).
    PeerClose(u16),
    /// We failed the connection with this close code (1002, 1007, 1009, …).
    ProtocolError(u16),
    /// Closed with 1008 for exceeding `--max-backlog`.
    SlowConsumer,
    /// Keep-alive: silent for two ping intervals.
    Timeout,
    /// The handshake deadline passed.
    HandshakeTimeout,
    /// Server shutdown (1001, or an unfinished handshake dropped).
    Shutdown,
    /// An HTTP request was answered with this status and the connection closed.
    Http(u16),
    /// The peer closed TCP without a close frame.
    Eof,
    /// A socket read or write failed (reset, broken pipe).
    Error,
    /// The TLS handshake or session failed.
    Tls,
}

impl Ending {
    /// The log label: `peer_close`, `protocol_error`, `slow_consumer`, `timeout`, …
    pub fn label(self) -> &'static str {
        match self {
            Ending::Unset => "closed",
            Ending::PeerClose(_) => "peer_close",
            Ending::ProtocolError(_) => "protocol_error",
            Ending::SlowConsumer => "slow_consumer",
            Ending::Timeout => "timeout",
            Ending::HandshakeTimeout => "handshake_timeout",
            Ending::Shutdown => "shutdown",
            Ending::Http(_) => "http",
            Ending::Eof => "eof",
            Ending::Error => "error",
            Ending::Tls => "tls",
        }
    }

    /// The close code or HTTP status that goes with the reason, if any.
    pub fn code(self) -> Option<u16> {
        match self {
            Ending::PeerClose(c) | Ending::ProtocolError(c) | Ending::Http(c) => Some(c),
            Ending::SlowConsumer => Some(1008),
            Ending::Shutdown => Some(1001),
            _ => None,
        }
    }
}

/// What an open connection receives.
#[derive(Debug)]
pub enum Feed {
    /// Raw path mode (the default): the path's topic, bare payloads. `slot` is the
    /// connection's index in the topic's subscriber list (for O(1) removal).
    Path { topic: TopicName, slot: u32 },
    /// `herald.v1`: the topics it subscribed to with control messages, as envelopes.
    V1(Box<V1Feed>),
    /// Server-Sent Events (`GET /<topic>` as `text/event-stream`, or `GET /sse?topic=…`):
    /// a read-only HTTP response that never ends; its topics, as events (`proto::sse`).
    /// It reads nothing after the request, gets comment heartbeats instead of pings, and
    /// ends with a comment and FIN instead of a close frame.
    Sse(Box<SseFeed>),
}

/// An SSE stream's topics, in the order of the request (the order of the positions in its
/// event ids).
#[derive(Debug, Default)]
pub struct SseFeed {
    pub subs: Vec<SseSub>,
    /// Numbers this stream's joins (as `V1Feed::next_join`).
    pub next_join: u32,
    /// Cluster mode: the response head, held (with the replays and `gap` events of the
    /// topics answered so far) until every topic's join is answered, so that the head means
    /// the node hears every topic in Redis (`worker::sse`).
    pub head: Option<Vec<u8>>,
    /// Replayed messages among the held bytes (counted when they are written).
    pub held_messages: u32,
}

/// One topic of an SSE stream.
#[derive(Debug)]
pub struct SseSub {
    pub topic: TopicName,
    /// Index in the topic's subscriber list on this worker.
    pub slot: u32,
    /// While the owner's answer is on its way: the join number.
    pub joining: Option<u32>,
    /// The last message the client has of this topic (epoch, number): what its next event
    /// id says. Until the join is answered, the position the client asked to resume from.
    pub position: Option<(Arc<str>, u64)>,
    /// The start the client asked for could not be served: this `herald.v1` error code and
    /// message become a `gap` event once the stream is joined again from now.
    pub gap: Option<(&'static str, String)>,
}

impl SseFeed {
    /// Every topic's position, as the id of a several-topic stream lists them.
    pub fn positions(&self) -> Vec<Option<(&str, u64)>> {
        self.subs
            .iter()
            .map(|s| s.position.as_ref().map(|(e, seq)| (&**e, *seq)))
            .collect()
    }
}

/// A `herald.v1` connection's subscriptions.
#[derive(Debug, Default)]
pub struct V1Feed {
    pub subs: Vec<Subscription>,
    /// Numbers this connection's subscribe requests, so a late answer from a topic's owner
    /// cannot be taken for the answer to a newer subscribe to the same topic.
    pub next_join: u32,
    /// Pattern subscriptions (`prices/*`); the topics they follow are in `subs` with `via`.
    pub patterns: Vec<PatternSubscription>,
    /// Subscribes waiting for `--subscribe-hook`: (ticket, request id, what was asked).
    pub hooked: Vec<(u64, u64, crate::proto::v1::Wanted)>,
}

impl V1Feed {
    /// Add a subscription, growing the list one slot, then two, then doubling. Most
    /// connections hold one or a few topics, and `Vec`'s first allocation is four slots
    /// (224 B, 168 B more than one topic needs, on every such connection).
    pub fn add(&mut self, subscription: Subscription) {
        if self.subs.len() == self.subs.capacity() {
            self.subs.reserve_exact(self.subs.len().max(1));
        }
        self.subs.push(subscription);
    }
}

/// One topic of a `herald.v1` connection.
#[derive(Debug)]
pub struct Subscription {
    pub topic: TopicName,
    /// Index in the topic's subscriber list on this worker.
    pub slot: u32,
    /// While the owner's answer is on its way: the join number and the request id to
    /// answer.
    pub joining: Option<(u32, u64)>,
    /// Followed through the pattern subscription with this join number (`None`: subscribed
    /// by name). It ends with the pattern, not on its own.
    pub via: Option<u32>,
}

/// One pattern subscription of a `herald.v1` connection (`worker/patterns.rs`).
#[derive(Debug)]
pub struct PatternSubscription {
    pub pattern: crate::proto::pattern::Pattern,
    /// Its join number: the key of its entry in the worker's pattern index and the `via`
    /// of the topics it follows.
    pub join: u32,
    /// The subscribe request's id, repeated in every `subscribed` it causes.
    pub request: u64,
    /// Answers still awaited: every owner's, in cluster mode every listener's, and each
    /// topic join the pattern started (its `since` map; cluster mode: topics known here).
    /// The pattern's own `subscribed` goes out after the last: from then on every newly
    /// numbered matching message reaches it.
    pub unanswered: u32,
}

impl Feed {
    /// Every (topic, slot) this connection is subscribed with.
    pub fn subscriptions(&self) -> Vec<(TopicName, u32)> {
        match self {
            Feed::Path { topic, slot } => vec![(topic.clone(), *slot)],
            Feed::V1(v1) => v1.subs.iter().map(|s| (s.topic.clone(), s.slot)).collect(),
            Feed::Sse(sse) => sse.subs.iter().map(|s| (s.topic.clone(), s.slot)).collect(),
        }
    }

    /// Record that this connection's subscriber entry for `topic` moved to `slot`.
    pub fn set_slot(&mut self, topic: &TopicName, new_slot: u32) {
        match self {
            Feed::Path { slot, .. } => *slot = new_slot,
            Feed::V1(v1) => {
                if let Some(sub) = v1.subs.iter_mut().find(|s| s.topic == *topic) {
                    sub.slot = new_slot;
                }
            }
            Feed::Sse(sse) => {
                if let Some(sub) = sse.subs.iter_mut().find(|s| s.topic == *topic) {
                    sub.slot = new_slot;
                }
            }
        }
    }

    /// A Server-Sent Events stream (not a WebSocket).
    pub fn is_sse(&self) -> bool {
        matches!(self, Feed::Sse(_))
    }
}

/// A queued run of frame bytes. `messages` and `received` let the fan-out latency be recorded
/// when the bytes finally reach the kernel.
#[derive(Debug)]
pub struct OutChunk {
    pub data: Bytes,
    pub received: Instant,
    pub messages: u32,
    /// The per-topic counter slot its deliveries count to (`--metrics-topics`), if any.
    pub topic_stats: Option<u32>,
}

/// Output the kernel has not accepted yet, in order. Empty (and allocation-free) for the vast
/// majority of connections: bytes are written directly and only the refused part lands here.
#[derive(Debug, Default)]
pub struct OutQueue {
    chunks: VecDeque<OutChunk>,
    bytes: usize,
    /// The front chunk is partly written: it must be finished before anything else (a close frame).
    front_started: bool,
}

/// Result of writing a queue out.
#[derive(Debug, Default, Clone, Copy)]
pub struct Written {
    pub bytes: usize,
    /// Chunks completed, for the stats.
    pub chunks: usize,
    /// Write calls that took bytes (`herald_socket_writes_total`).
    pub calls: usize,
}

impl OutQueue {
    pub fn is_empty(&self) -> bool {
        self.chunks.is_empty()
    }

    /// Unsent bytes, compared against `--max-backlog`.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    pub fn push(&mut self, chunk: OutChunk) {
        self.bytes += chunk.data.len();
        self.chunks.push_back(chunk);
    }

    /// Free an empty queue's slots (the sweep, every tick). Every connection queues at least
    /// its `101`, and the smallest allocation (4 chunks, 256 B) was half of an idle
    /// connection's heap. Not done as each write empties the queue: a busy connection would
    /// then allocate again on its next queued write.
    pub fn release_if_empty(&mut self) {
        if self.chunks.is_empty() && self.chunks.capacity() > 0 {
            self.chunks = VecDeque::new();
        }
    }

    /// Give up on what was not started (a slow consumer is being closed); a partly written
    /// frame is kept so the stream stays well-formed for the close frame that follows.
    pub fn truncate_unstarted(&mut self) {
        let keep = usize::from(self.front_started).min(self.chunks.len());
        self.chunks.truncate(keep);
        self.bytes = self.chunks.iter().map(|c| c.data.len()).sum();
        self.chunks.shrink_to_fit();
    }

    /// Write as much as the kernel takes in one vectored write. `on_done` sees each completed
    /// chunk (for latency). `Ok` with fewer bytes than queued means the socket is full; a
    /// writable event will resume it.
    pub fn write_to(
        &mut self,
        socket: &mut impl Write,
        mut on_done: impl FnMut(&OutChunk),
    ) -> io::Result<Written> {
        let mut written = Written::default();
        while !self.chunks.is_empty() {
            let mut slices = [IoSlice::new(&[]); 64];
            let mut offered = 0;
            for (slot, chunk) in slices.iter_mut().zip(&self.chunks) {
                *slot = IoSlice::new(&chunk.data);
                offered += chunk.data.len();
            }
            let count = self.chunks.len().min(slices.len());
            let result = match &slices[..count] {
                [one] => socket.write(one),
                several => socket.write_vectored(several),
            };
            let n = match result {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => return Err(e),
            };
            written.bytes += n;
            written.calls += usize::from(n > 0);
            written.chunks += self.consume(n, &mut on_done);
            if n < offered {
                break; // the kernel took only part: its buffer is full until the next writable event
            }
        }
        if self.chunks.is_empty() && self.chunks.capacity() > 4 {
            self.chunks.shrink_to_fit(); // a burst is over: don't keep its memory per connection
        }
        Ok(written)
    }

    /// Drop `n` written bytes from the front, reporting each chunk that is now complete.
    fn consume(&mut self, n: usize, on_done: &mut impl FnMut(&OutChunk)) -> usize {
        self.bytes -= n;
        let mut left = n;
        let mut completed = 0;
        while let Some(front) = self.chunks.front_mut() {
            if left < front.data.len() {
                front.data.advance(left);
                self.front_started |= left > 0;
                break;
            }
            left -= front.data.len();
            if let Some(done) = self.chunks.pop_front() {
                on_done(&done);
            }
            self.front_started = false;
            completed += 1;
        }
        completed
    }
}

/// A client socket and everything Herald keeps for it.
#[derive(Debug)]
pub struct Conn {
    pub socket: TcpStream,
    /// Unique per worker for the life of the process: pairs with the slab key so a late
    /// message can't reach the next tenant of a reused slot.
    pub id: u64,
    pub phase: Phase,
    /// Worker tick of the last frame (or request bytes) heard from the peer.
    pub last_heard: u32,
    pub out: OutQueue,
    /// Bytes of an incomplete request head or frame, and a fragmented message in progress.
    /// `None` for an idle connection.
    pub inbound: Option<Box<Inbound>>,
    /// Already listed in the worker's to-flush list this turn.
    pub queued_for_flush: bool,
    /// The TLS session of a `wss://` connection; `None` for plain ones.
    pub tls: Option<Box<tls::Session>>,
    /// permessage-deflate as negotiated in the upgrade (off until then): all the
    /// compression state a connection has (no context takeover either way).
    pub deflate: Agreement,
    /// Auth grants, the gate place and rate buckets of an open WebSocket, when any is in use.
    pub guard: Option<Box<Guard>>,
    /// Why it is ending, once something decided it (for the disconnect log line).
    pub ending: Ending,
    /// Messages waiting for `--publish-hook` (`None` when none ever did).
    pub held: Option<Box<HeldPublishes>>,
    /// When it was accepted, in milliseconds since the Unix epoch (presence shows it).
    pub since_ms: u64,
}

/// Where a connection's plaintext output goes: the socket, or the TLS session in front of it.
pub struct Output<'a> {
    socket: &'a mut TcpStream,
    tls: Option<&'a mut tls::Session>,
}

impl Write for Output<'_> {
    /// One buffer (the fan-out's corked batch): a plain socket takes it with `send`, which
    /// skips `writev`'s vector import and file-position step. In a profile at row f the part
    /// of a write spent outside `tcp_sendmsg` fell from 12.6% to 8.4% (`docs/benchmarks.md`,
    /// issue 16); end to end that is within the box's noise.
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match &mut self.tls {
            None => self.socket.write(buf),
            Some(tls) => tls.write_vectored(self.socket, &[IoSlice::new(buf)]),
        }
    }

    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        match &mut self.tls {
            None => self.socket.write_vectored(bufs),
            Some(tls) => tls.write_vectored(self.socket, bufs),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Partial input carried between reads.
#[derive(Debug, Default)]
pub struct Inbound {
    pub pending: Vec<u8>,
    pub assembly: Assembly,
}

impl Inbound {
    /// Nothing is carried: the box can be dropped.
    pub fn is_idle(&self) -> bool {
        self.pending.is_empty() && !self.assembly.is_open()
    }
}

impl Conn {
    pub fn new(socket: TcpStream, id: u64, now: u32, tls: Option<Box<tls::Session>>) -> Self {
        Conn {
            socket,
            id,
            phase: Phase::Handshake { since: now },
            last_heard: now,
            out: OutQueue::default(),
            inbound: None,
            queued_for_flush: false,
            tls,
            deflate: Agreement::OFF,
            guard: None,
            ending: Ending::Unset,
            held: None,
            since_ms: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as u64),
        }
    }

    /// Move to the `next` phase; the one way a phase changes. Returns the phase left (its
    /// feed tells the caller which topics to leave).
    pub fn enter(&mut self, next: Phase) -> Phase {
        debug_assert!(
            self.phase.may_enter(&next),
            "connection {}: {:?} may not become {:?}",
            self.id,
            self.phase,
            next
        );
        std::mem::replace(&mut self.phase, next)
    }

    /// Record why the connection ends, unless an earlier step already did.
    pub fn end(&mut self, why: Ending) {
        if self.ending == Ending::Unset {
            self.ending = why;
        }
    }

    /// An open Server-Sent Events stream (its input is ignored, its keep-alive is comments).
    pub fn is_sse(&self) -> bool {
        matches!(&self.phase, Phase::Open { feed, .. } if feed.is_sse())
    }

    /// An SSE stream whose response head is still held (cluster mode, joins unanswered).
    pub fn held_head(&self) -> Option<&[u8]> {
        match &self.phase {
            Phase::Open {
                feed: Feed::Sse(sse),
                ..
            } => sse.head.as_deref(),
            _ => None,
        }
    }

    /// Read plaintext (decrypting first on a `wss://` connection). `Ok(0)` is end of stream.
    pub fn read_plain(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match &mut self.tls {
            None => self.socket.read(buf),
            Some(tls) => tls.read(&mut self.socket, buf),
        }
    }

    /// The output queue and the writer it drains into, borrowed together.
    pub fn queue_and_output(&mut self) -> (&mut OutQueue, Output<'_>) {
        let output = Output {
            socket: &mut self.socket,
            tls: self.tls.as_deref_mut(),
        };
        (&mut self.out, output)
    }

    /// A writer for output that bypasses the queue (the fan-out's direct write).
    pub fn output(&mut self) -> Output<'_> {
        Output {
            socket: &mut self.socket,
            tls: self.tls.as_deref_mut(),
        }
    }

    /// Write TLS records the session still holds; true when none are left (always for plain).
    pub fn flush_tls(&mut self) -> io::Result<bool> {
        match &mut self.tls {
            None => Ok(true),
            Some(tls) => tls.flush(&mut self.socket),
        }
    }

    /// Bytes still owed to the peer: queued output, or TLS records not yet written.
    pub fn output_pending(&self) -> bool {
        !self.out.is_empty() || self.tls.as_ref().is_some_and(|t| t.wants_write())
    }

    /// End our side of the stream: TLS close_notify (best effort), then FIN.
    pub fn shutdown_write(&mut self) -> io::Result<()> {
        if let Some(tls) = &mut self.tls {
            tls.close(&mut self.socket);
        }
        self.socket.shutdown(std::net::Shutdown::Write)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_empty_queue_is_released_and_a_full_one_kept() {
        let mut queue = OutQueue::default();
        queue.push(OutChunk {
            data: Bytes::from_static(b"HTTP/1.1 101 Switching Protocols\r\n\r\n"),
            received: Instant::now(),
            messages: 0,
            topic_stats: None,
        });
        let mut sink = Vec::new();
        let written = queue
            .write_to(&mut sink, |_| {})
            .expect("a Vec takes it all");
        assert_eq!((written.chunks, queue.is_empty()), (1, true));
        queue.release_if_empty();
        assert_eq!(
            queue.chunks.capacity(),
            0,
            "an idle connection keeps no queue slots"
        );
        queue.push(OutChunk {
            data: Bytes::from_static(b"queued"),
            received: Instant::now(),
            messages: 1,
            topic_stats: None,
        });
        queue.release_if_empty();
        assert!(!queue.is_empty(), "a queue with bytes in it is kept");
        let written = queue
            .write_to(&mut sink, |_| {})
            .expect("a Vec takes it all");
        assert_eq!(written.bytes, 6);
    }

    #[test]
    fn a_v1_list_grows_from_one_slot() {
        let mut feed = V1Feed::default();
        let mut capacities = Vec::new();
        for slot in 0..5 {
            feed.add(Subscription {
                topic: TopicName::from("t"),
                slot,
                joining: None,
                via: None,
            });
            capacities.push(feed.subs.capacity());
        }
        assert_eq!(capacities, [1, 2, 4, 4, 8]);
    }

    #[test]
    fn a_phase_stays_small() {
        // Every connection carries one: a waiting state that needs more goes in a box.
        assert!(
            std::mem::size_of::<Phase>() <= 32,
            "{}",
            std::mem::size_of::<Phase>()
        );
    }

    #[test]
    fn phases_move_only_as_the_lifecycle_draws_them() {
        let phase = |name: &str| match name {
            "handshake" => Phase::Handshake { since: 0 },
            "open" => Phase::Open {
                feed: Feed::V1(Box::default()),
                last_ping: 0,
            },
            "ack" => Phase::AwaitingAck {
                since: 0,
                keep_alive: true,
            },
            "count" => Phase::AwaitingCount { since: 0 },
            "hook" => Phase::AwaitingHook {
                since: 0,
                pending: Box::new(PendingOpen {
                    opening: Opening::Events {
                        topics: vec![],
                        positions: vec![],
                    },
                    waiting: 1,
                    refused: None,
                    attached: None,
                }),
            },
            "joining" => Phase::Joining {
                since: 0,
                join: Box::new(PathJoin {
                    feed: Feed::Path {
                        topic: TopicName::from("t"),
                        slot: 0,
                    },
                    response: bytes::Bytes::new(),
                }),
            },
            "closing" => Phase::Closing { since: 0 },
            "flushing" => Phase::Flushing { since: 0 },
            "streaming" => Phase::Streaming,
            _ => Phase::Lingering { since: 0 },
        };
        let allowed = [
            ("handshake", "open"),
            ("handshake", "ack"),
            ("handshake", "hook"),
            ("hook", "open"),
            ("hook", "flushing"),
            ("handshake", "joining"),
            ("hook", "joining"),
            ("joining", "open"),
            ("joining", "flushing"),
            ("handshake", "flushing"),
            ("handshake", "streaming"),
            ("ack", "handshake"),
            ("ack", "flushing"),
            ("handshake", "count"),
            ("count", "flushing"),
            ("open", "closing"),
            ("open", "flushing"),
            ("closing", "flushing"),
            ("flushing", "lingering"),
        ];
        let all = [
            "handshake",
            "open",
            "ack",
            "count",
            "hook",
            "joining",
            "closing",
            "flushing",
            "lingering",
            "streaming",
        ];
        for from in all {
            for to in all {
                let expected = allowed.contains(&(from, to));
                assert_eq!(
                    phase(from).may_enter(&phase(to)),
                    expected,
                    "{from} -> {to}"
                );
            }
        }
    }
}
