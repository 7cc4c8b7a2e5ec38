//! One client connection's state machine: connecting → upgrading → open → closing.
//!
//! Reads go through one large buffer shared by all connections of a thread (only a partial
//! trailing frame is kept per connection), so an idle connection costs a few hundred bytes and
//! a busy one a handful of syscalls per batch of frames.

mod tracker;

use std::io::{self, Read, Write};

use hdrhistogram::Histogram;

use crate::cli::{Config, Filler, Mode};
use crate::client::errkind::io_kind;
use crate::client::frame::{self, Head};
use crate::client::handshake;
use crate::client::payload;
use crate::client::transport::Transport;
use crate::client::v1;
use crate::clock::now_ns;
use crate::schedule::{due_ns, Window};
use crate::stats::Stats;
use tracker::{Seen, Tracker};

/// Full-buffer reads per readiness event before yielding to other connections.
const READ_BUDGET: usize = 32;
/// Flag in `Conn::frag_op` (above the 4 opcode bits): the message being reassembled is compressed.
const COMPRESSED: u8 = 0x40;
/// Pending output above which a publisher drops scheduled messages instead of queueing more.
pub const MAX_BACKLOG: usize = 8 << 20;

/// Where a connection is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// TCP connect in progress.
    Connecting,
    /// Upgrade request sent (after the TLS handshake for `wss://`), waiting for the 101.
    Upgrading,
    /// `--v1` subscriber: upgraded, subscribe sent, waiting for `subscribed`.
    Subscribing,
    /// WebSocket open.
    Open,
    /// Our close frame sent; waiting for the server to close.
    Closing,
}

/// What an event did, for the worker's bookkeeping.
#[derive(Debug, PartialEq, Eq)]
pub enum Step {
    /// Nothing the worker needs to know.
    Idle,
    /// The upgrade completed just now.
    Upgraded,
    /// The read budget ran out with data left; call [`Conn::on_ready`] again soon.
    MoreToRead,
    /// The close handshake finished; drop the connection.
    Closed,
}

/// Per-thread state that connection handlers update.
pub struct Ctx {
    /// Run parameters.
    pub cfg: std::sync::Arc<Config>,
    /// Counters and connect latencies of this thread.
    pub stats: Stats,
    /// Delivery latencies since the last progress tick (folded into `stats` at each tick).
    pub interval: Histogram<u64>,
    /// Connect latencies since the last progress tick.
    pub conn_interval: Histogram<u64>,
    /// Measured message range.
    pub window: Window,
    /// Start of traffic (CLOCK_MONOTONIC ns), 0 before the go signal.
    pub t0: u64,
    /// Last time a measured message arrived.
    pub last_delivery_ns: u64,
    /// Shared read buffer.
    pub rbuf: Vec<u8>,
    /// Masking-key generator state (xorshift64).
    pub rng: u64,
    /// `--deflate`: the thread's inflater (each message is inflated afresh: the server
    /// answered server_no_context_takeover) and its output buffer.
    pub inflater: Option<Box<flate2::Decompress>>,
    pub inflated: Vec<u8>,
}

impl Ctx {
    /// A fresh masking key; RFC 6455 asks for unpredictable keys, which xorshift is for a
    /// load generator whose traffic is all its own.
    pub fn mask(&mut self) -> [u8; 4] {
        let mut x = self.rng;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.rng = x;
        (x as u32).to_ne_bytes()
    }
}

/// One WebSocket client connection.
pub struct Conn {
    /// Global connection number (also its publisher index when it publishes).
    pub g: u64,
    /// Index of its URL.
    pub target: usize,
    /// The socket, with TLS on top for `wss://`.
    pub stream: Transport,
    /// Life-cycle state.
    pub state: State,
    /// When the connect attempt started.
    pub started_ns: u64,
    /// Expected `Sec-WebSocket-Accept` while upgrading.
    accept: Option<Box<str>>,
    /// Partial response or frame carried over between reads.
    inbuf: Vec<u8>,
    /// Pending output and how much of it is written.
    out: Vec<u8>,
    out_pos: usize,
    /// Open when traffic started: only such connections publish and count deliveries.
    pub at_go: bool,
    /// Whether it counts deliveries (subscriber, or echo connection).
    pub receiver: bool,
    /// A `--v1` subscriber: subscribes after the upgrade and reads envelopes.
    v1: bool,
    /// Order tracking per publisher (fanout) or of its own stream (echo).
    trackers: Box<[Tracker]>,
    /// A fragmented message being reassembled, and its opcode (0: none).
    frag: Vec<u8>,
    frag_op: u8,
}

impl Conn {
    /// A connection whose TCP connect has been started; `request` is the upgrade to send and
    /// `accept` the answer it expects.
    pub fn new(g: u64, cfg: &Config, stream: Transport, request: Vec<u8>, accept: String) -> Conn {
        let receiver = cfg.is_receiver(g);
        let trackers = match (receiver, cfg.mode) {
            (true, Mode::Fanout) => vec![Tracker::default(); cfg.publishers as usize],
            (true, Mode::Echo) => vec![Tracker::default()],
            _ => Vec::new(),
        };
        Conn {
            g,
            target: cfg.target_of(g),
            stream,
            state: State::Connecting,
            started_ns: now_ns(),
            accept: Some(accept.into_boxed_str()),
            inbuf: Vec::new(),
            out: request,
            out_pos: 0,
            at_go: false,
            receiver,
            v1: cfg.v1 && receiver,
            trackers: trackers.into_boxed_slice(),
            frag: Vec::new(),
            frag_op: 0,
        }
    }

    /// Whether the connection is still connecting or upgrading.
    pub fn in_flight(&self) -> bool {
        matches!(
            self.state,
            State::Connecting | State::Upgrading | State::Subscribing
        )
    }

    /// Bytes queued but not yet written.
    pub fn backlog(&self) -> usize {
        self.out.len() - self.out_pos
    }

    /// Whether anything waits for the socket: queued frames, or TLS records.
    fn has_output(&self) -> bool {
        self.backlog() > 0 || self.stream.pending()
    }

    /// Stage name for errors before the 101: the TLS handshake comes first on `wss://`.
    fn upgrade_stage(&self) -> &'static str {
        if self.stream.is_handshaking() {
            "tls_handshake"
        } else {
            "upgrade"
        }
    }

    /// Whether this connection has seen publisher `p`'s stream up to local sequence `s`.
    pub fn reached(&self, p: u64, s: u64) -> bool {
        let idx = if self.trackers.len() == 1 {
            0
        } else {
            p as usize
        };
        self.trackers.get(idx).is_none_or(|t| t.reached(s))
    }

    /// Handles a readiness event; `Err` carries the error kind and means: drop the connection.
    pub fn on_ready(
        &mut self,
        ctx: &mut Ctx,
        readable: bool,
        writable: bool,
    ) -> Result<Step, String> {
        match self.state {
            State::Connecting => {
                match self.stream.socket().take_error() {
                    Ok(None) => {}
                    Ok(Some(e)) | Err(e) => return Err(io_kind("connect", &e)),
                }
                match self.stream.socket().peer_addr() {
                    Ok(_) => {}
                    Err(e) if e.kind() == io::ErrorKind::NotConnected => return Ok(Step::Idle),
                    Err(e) => return Err(io_kind("connect", &e)),
                }
                self.state = State::Upgrading;
                self.flush()
                    .map_err(|e| io_kind(self.upgrade_stage(), &e))?;
                if readable {
                    return self.read_upgrade(ctx);
                }
                Ok(Step::Idle)
            }
            State::Upgrading => {
                if writable {
                    self.flush()
                        .map_err(|e| io_kind(self.upgrade_stage(), &e))?;
                }
                if readable {
                    return self.read_upgrade(ctx);
                }
                Ok(Step::Idle)
            }
            State::Open | State::Closing => {
                if writable && self.has_output() {
                    self.flush().map_err(|e| io_kind("io", &e))?;
                }
                if readable {
                    return self.read_frames(ctx);
                }
                Ok(Step::Idle)
            }
            State::Subscribing => {
                if writable && self.has_output() {
                    self.flush().map_err(|e| io_kind("subscribe", &e))?;
                }
                if readable {
                    self.read_frames(ctx)?;
                    if self.state == State::Open {
                        // The worker reads again at once, for anything after `subscribed`.
                        return Ok(Step::Upgraded);
                    }
                }
                Ok(Step::Idle)
            }
        }
    }

    /// Reads the upgrade response; on success switches to `Open`.
    fn read_upgrade(&mut self, ctx: &mut Ctx) -> Result<Step, String> {
        let mut chunk = [0u8; 2048];
        // Bounded: the response may not exceed MAX_RESPONSE, checked by parse_response.
        loop {
            match self.stream.read(&mut chunk) {
                Ok(0) => return Err(format!("{}_eof", self.upgrade_stage())),
                Ok(n) => self.inbuf.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(Step::Idle),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(io_kind(self.upgrade_stage(), &e)),
            }
            let accept = self.accept.as_deref().unwrap_or("");
            match handshake::parse_response(&self.inbuf, accept) {
                Ok(None) => continue,
                Err(e) => return Err(e.kind()),
                Ok(Some(n)) => {
                    if self.v1 && !v1::accepted(&self.inbuf[..n]) {
                        return Err("v1_not_accepted".into());
                    }
                    self.inbuf.drain(..n);
                    self.inbuf.shrink_to_fit();
                    self.accept = None;
                    if self.backlog() == 0 {
                        // Release the request buffer: idle connections should cost little.
                        self.out = Vec::new();
                        self.out_pos = 0;
                    }
                    let now = now_ns();
                    if self.v1 {
                        // Ready (and timed) only once `subscribed` is back.
                        let path = &ctx.cfg.targets[self.target].path;
                        let request = v1::subscribe_request(v1::topic_of(path));
                        let mask = ctx.mask();
                        frame::push_frame(&mut self.out, frame::OP_TEXT, &request, mask);
                        self.state = State::Subscribing;
                        self.flush().map_err(|e| io_kind("subscribe", &e))?;
                    } else {
                        self.state = State::Open;
                        self.mark_ready(ctx, now);
                    }
                    if !self.inbuf.is_empty() {
                        // Frames that came with the response; process them before more reads.
                        let mut data = std::mem::take(&mut self.inbuf);
                        let (used, closed) = self.process(ctx, &mut data, now)?;
                        data.drain(..used);
                        self.inbuf = data;
                        if closed {
                            return Ok(Step::Closed);
                        }
                    }
                    if self.state == State::Subscribing {
                        return Ok(Step::Idle);
                    }
                    return Ok(Step::Upgraded);
                }
            }
        }
    }

    /// Counts the connection as established, `now`: after the 101, or for a `--v1`
    /// subscriber after `subscribed`.
    fn mark_ready(&mut self, ctx: &mut Ctx, now: u64) {
        let lat = now.saturating_sub(self.started_ns).max(1);
        // Folded into stats.connect_latency at the next progress tick.
        ctx.conn_interval.saturating_record(lat);
        ctx.stats.connected += 1;
        ctx.stats.last_connected_ns = ctx.stats.last_connected_ns.max(now);
    }

    /// Reads and handles frames through the thread's shared buffer.
    fn read_frames(&mut self, ctx: &mut Ctx) -> Result<Step, String> {
        let mut buf = std::mem::take(&mut ctx.rbuf);
        let result = self.read_frames_into(ctx, &mut buf);
        ctx.rbuf = buf;
        result
    }

    fn read_frames_into(&mut self, ctx: &mut Ctx, buf: &mut Vec<u8>) -> Result<Step, String> {
        let mut filled = self.inbuf.len();
        if buf.len() < filled * 2 {
            buf.resize(filled * 2, 0);
        }
        buf[..filled].copy_from_slice(&self.inbuf);
        self.inbuf.clear();
        let mut step = Step::MoreToRead;
        for _ in 0..READ_BUDGET {
            if filled == buf.len() {
                // One frame larger than the buffer (bounded by frame::MAX_FRAME).
                let len = buf.len();
                buf.resize(len * 2, 0);
            }
            let space = buf.len() - filled;
            let n = match self.stream.read(&mut buf[filled..]) {
                Ok(0) => {
                    return if self.state == State::Closing {
                        Ok(Step::Closed)
                    } else {
                        Err("closed_without_close_frame".into())
                    };
                }
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    step = Step::Idle;
                    break;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(io_kind("io", &e)),
            };
            filled += n;
            let now = now_ns();
            let (used, closed) = self.process(ctx, &mut buf[..filled], now)?;
            if closed {
                self.stream.close_notify();
                return Ok(Step::Closed);
            }
            buf.copy_within(used..filled, 0);
            filled -= used;
            if n < space {
                // The socket is drained; epoll reports the next arrival (edge-triggered).
                step = Step::Idle;
                break;
            }
        }
        self.inbuf.extend_from_slice(&buf[..filled]);
        if self.has_output() {
            self.flush().map_err(|e| io_kind("io", &e))?;
        }
        Ok(step)
    }

    /// Handles complete frames at the start of `data`; returns bytes used and whether the
    /// close handshake completed.
    fn process(
        &mut self,
        ctx: &mut Ctx,
        data: &mut [u8],
        now: u64,
    ) -> Result<(usize, bool), String> {
        let mut pos = 0;
        // Bounded: every iteration consumes at least one frame header.
        while let Some(h) = frame::parse_head(&data[pos..]).map_err(|e| e.kind().to_string())? {
            let Head {
                header_len,
                payload_len,
                ..
            } = h;
            let end = pos + header_len + payload_len;
            if end > data.len() {
                break;
            }
            let body = &mut data[pos + header_len..end];
            if let Some(m) = h.mask {
                frame::apply_mask(body, m);
            }
            pos = end;
            if h.rsv1 && !ctx.cfg.deflate {
                return Err("protocol_error".into());
            }
            match h.opcode {
                frame::OP_TEXT | frame::OP_BINARY if self.frag_op == 0 => {
                    if h.fin && h.rsv1 {
                        self.on_compressed(ctx, body, now)?;
                    } else if h.fin {
                        self.on_message(ctx, body, now)?;
                    } else {
                        // COMPRESSED marks a compressed message in the opcode's spare bits.
                        self.frag_op = h.opcode | if h.rsv1 { COMPRESSED } else { 0 };
                        self.frag.clear();
                        self.frag.extend_from_slice(body);
                    }
                }
                frame::OP_CONT if self.frag_op != 0 => {
                    if (self.frag.len() + body.len()) as u64 > frame::MAX_FRAME {
                        return Err("frame_too_large".into());
                    }
                    self.frag.extend_from_slice(body);
                    if h.fin {
                        let mut msg = std::mem::take(&mut self.frag);
                        if self.frag_op & COMPRESSED != 0 {
                            self.on_compressed(ctx, &msg, now)?;
                        } else {
                            self.on_message(ctx, &mut msg, now)?;
                        }
                        self.frag = msg;
                        self.frag.clear();
                        self.frag_op = 0;
                    }
                }
                frame::OP_PING => {
                    let mask = ctx.mask();
                    frame::push_frame(&mut self.out, frame::OP_PONG, body, mask);
                }
                frame::OP_PONG => {}
                frame::OP_CLOSE => {
                    if self.state == State::Closing {
                        return Ok((pos, true));
                    }
                    // Echo the status code, as RFC 6455 §5.5.1 asks, then report the close.
                    let code = if body.len() >= 2 {
                        [body[0], body[1]]
                    } else {
                        [3, 232]
                    };
                    let mask = ctx.mask();
                    frame::push_frame(&mut self.out, frame::OP_CLOSE, &code, mask);
                    let _ = self.flush();
                    return Err("closed_by_server".into());
                }
                _ => return Err("protocol_error".into()),
            }
        }
        Ok((pos, false))
    }

    /// Accounts one received data message (for a `--v1` subscriber: takes the payload out of
    /// the envelope in place first). `Err` (an error kind) drops the connection.
    fn on_message(&mut self, ctx: &mut Ctx, body: &mut [u8], now: u64) -> Result<(), String> {
        let body: &[u8] = if self.v1 {
            let topic = v1::topic_of(&ctx.cfg.targets[self.target].path);
            match v1::parse(body, topic) {
                Ok(v1::Reply::Message(range)) => &body[range],
                Ok(v1::Reply::Subscribed) if self.state == State::Subscribing => {
                    self.state = State::Open;
                    self.mark_ready(ctx, now);
                    return Ok(());
                }
                Ok(v1::Reply::Error(code)) => return Err(format!("v1_{code}")),
                Ok(_) => {
                    ctx.stats.error("v1_unexpected_reply");
                    return Ok(());
                }
                Err(kind) => {
                    ctx.stats.error(kind);
                    return Ok(());
                }
            }
        } else {
            body
        };
        self.count_message(ctx, body, now);
        Ok(())
    }

    /// Inflates a permessage-deflate message (RFC 7692 7.2.2: the stripped sync tail is put
    /// back) and accounts it.
    fn on_compressed(&mut self, ctx: &mut Ctx, body: &[u8], now: u64) -> Result<(), String> {
        use flate2::{Decompress, FlushDecompress};
        let inflater = ctx
            .inflater
            .get_or_insert_with(|| Box::new(Decompress::new(false)));
        inflater.reset(false);
        let mut out = std::mem::take(&mut ctx.inflated);
        out.clear();
        for chunk in [body, &[0, 0, 0xff, 0xff][..]] {
            let start = inflater.total_in();
            while ((inflater.total_in() - start) as usize) < chunk.len()
                || out.len() == out.capacity()
            {
                if out.len() == out.capacity() {
                    if out.len() as u64 > frame::MAX_FRAME {
                        return Err("frame_too_large".into());
                    }
                    out.reserve(out.capacity().max(4096));
                }
                let used = (inflater.total_in() - start) as usize;
                let produced = out.len();
                inflater
                    .decompress_vec(&chunk[used..], &mut out, FlushDecompress::Sync)
                    .map_err(|_| "bad_deflate".to_string())?;
                let stuck = (inflater.total_in() - start) as usize == used && out.len() == produced;
                if stuck && out.len() < out.capacity() {
                    return Err("bad_deflate".into());
                }
            }
        }
        let result = self.on_message(ctx, &mut out, now);
        ctx.inflated = out;
        result
    }

    /// Accounts one received data message.
    fn count_message(&mut self, ctx: &mut Ctx, body: &[u8], now: u64) {
        ctx.stats.received += 1;
        if !self.receiver {
            return;
        }
        let cfg = &ctx.cfg;
        let (k, sched) = match payload::decode(body, cfg.size, cfg.payload == Filler::Json) {
            Ok(x) => x,
            Err(e) => {
                ctx.stats.error(e.kind());
                return;
            }
        };
        let publishers = cfg.publishers;
        let p = k % publishers;
        let local = k / publishers;
        let own_topic = match cfg.mode {
            Mode::Echo => p == self.g,
            _ => cfg.cluster || cfg.target_of(p) == self.target,
        };
        if !own_topic {
            ctx.stats.error("wrong_topic");
            return;
        }
        if ctx.t0 == 0 || sched != due_ns(ctx.t0, k, cfg.rate) {
            ctx.stats.error("corrupt_payload");
            return;
        }
        let idx = if self.trackers.len() == 1 {
            0
        } else {
            p as usize
        };
        let Some(tracker) = self.trackers.get_mut(idx) else {
            return;
        };
        let seen = tracker.observe(local);
        if !self.at_go || !ctx.window.contains(k) {
            return;
        }
        match seen {
            Seen::Duplicate => {
                ctx.stats.duplicates += 1;
                return;
            }
            Seen::Late => ctx.stats.out_of_order += 1,
            Seen::InOrder => {}
        }
        ctx.stats.delivered += 1;
        ctx.last_delivery_ns = now;
        ctx.interval
            .saturating_record(now.saturating_sub(sched).max(1));
    }

    /// Queues message `k` scheduled at `sched`; false when the connection cannot take it.
    pub fn push_message(&mut self, ctx: &mut Ctx, k: u64, sched: u64) -> bool {
        if self.state != State::Open || self.backlog() > MAX_BACKLOG {
            return false;
        }
        if self.out_pos > 0 && self.out_pos == self.out.len() {
            self.out.clear();
            self.out_pos = 0;
        }
        let size = ctx.cfg.size;
        let mask = ctx.mask();
        let start = frame::push_header(&mut self.out, frame::OP_BINARY, size, mask);
        self.out.resize(start + size, 0);
        payload::encode(
            &mut self.out[start..],
            k,
            sched,
            ctx.cfg.payload == Filler::Json,
        );
        frame::apply_mask(&mut self.out[start..], mask);
        true
    }

    /// Starts the close handshake; false if the connection should just be dropped.
    pub fn start_close(&mut self, ctx: &mut Ctx) -> bool {
        if self.state != State::Open {
            return false;
        }
        let mask = ctx.mask();
        frame::push_frame(&mut self.out, frame::OP_CLOSE, &1000u16.to_be_bytes(), mask);
        self.state = State::Closing;
        self.flush().is_ok()
    }

    /// Writes pending output until done or the socket is full (on `wss://`, until rustls has
    /// taken it all and its records are written or the socket is full).
    pub fn flush(&mut self) -> io::Result<()> {
        // Bounded: each iteration writes at least one byte or returns.
        while self.out_pos < self.out.len() {
            match self.stream.write(&self.out[self.out_pos..]) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => self.out_pos += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    if self.out_pos > 64 * 1024 {
                        self.out.drain(..self.out_pos);
                        self.out_pos = 0;
                    }
                    return Ok(());
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        self.out.clear();
        self.out_pos = 0;
        if self.out.capacity() > 64 * 1024 {
            self.out.shrink_to(4096);
        }
        self.stream.flush_pending()
    }
}
