//! One client connection as an event loop drives it: the state machine connecting →
//! upgrading → (subscribing →) open → closing, and the per-connection delivery tracking.
//!
//! Reads go through one large buffer shared by all connections of a thread (only a partial
//! trailing frame is kept per connection), so an idle connection costs a few hundred bytes and
//! a busy one a handful of syscalls per batch of frames. The parts live in their own files:
//! the upgrade response (`upgrade.rs`), reading and dispatching frames (`read.rs`), and
//! accounting each received message (`deliver.rs`, with `tracker.rs` for order).

mod ctx;
mod deliver;
mod read;
mod tracker;
mod upgrade;

use std::io::{self, Write};

use crate::cli::{Config, Filler, Mode};
use crate::client::errkind::io_kind;
use crate::client::frame;
use crate::client::payload;
use crate::client::transport::Transport;
use crate::clock::now_ns;
pub use ctx::Ctx;
use tracker::Tracker;

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

/// What an event did, for the event loop's bookkeeping.
#[derive(Debug, PartialEq, Eq)]
pub enum Step {
    /// Nothing the event loop needs to know.
    Idle,
    /// The upgrade completed just now.
    Upgraded,
    /// The read budget ran out with data left; call [`Conn::on_ready`] again soon.
    MoreToRead,
    /// The close handshake finished; drop the connection.
    Closed,
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
                        // The event loop reads again at once, for anything after `subscribed`.
                        return Ok(Step::Upgraded);
                    }
                }
                Ok(Step::Idle)
            }
        }
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
