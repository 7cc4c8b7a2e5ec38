//! A worker: one thread, pinned to one core, with its own `mio::Poll`, its own `SO_REUSEPORT`
//! listener and its own slab of connections. The loop below is the spine of the server; each
//! step is delegated: `input` (bytes in), `output` (the fan-out hot path and writes),
//! `lifecycle` (closing and timers).

mod access;
mod busiest;
mod cluster;
pub mod conn;
mod dashboard;
mod hooks;
mod input;
mod lifecycle;
mod output;
mod patterns;
mod presence;
mod sse;
mod subscriptions;
pub mod tls;

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token};
use slab::Slab;

use crate::cluster::interest::{InterestBacklog, PatternBacklog};
use crate::cluster::ClusterLink;
use crate::feed::bus::{Bus, BusMsg};
use crate::feed::fanout::{Staged, Topics};
use crate::feed::owned::{HistoryLimits, Owned};
use crate::hooks::HookLink;
use crate::ops::config::Config;
use crate::ops::os;
use crate::ops::stats::{self, Counters, LatencyBuckets, SharedCounters};
use crate::ops::topic_stats::{TopicBoard, TopicTally};
use crate::policy::auth::Auth;
use crate::policy::guard::Gate;
use crate::proto::deflate::Codec;
use crate::proto::frame;
use crate::site::Site;
use conn::{Conn, Inbound};
use lifecycle::Serving;

/// Token of the waker other workers (and the control thread) use to get our attention.
pub const WAKER: Token = Token(usize::MAX);
/// Token of listener `i` is `LISTENERS - i`; connection tokens are slab keys, far below.
const LISTENERS: usize = usize::MAX - 1;
/// Most listeners a worker has (ws:// and wss://), to tell their tokens from slab keys.
const MAX_LISTENERS: usize = 8;

/// One accepting socket of this worker, and the TLS configuration if it serves `wss://`.
pub struct Listener {
    pub socket: TcpListener,
    pub tls: Option<Arc<rustls::ServerConfig>>,
}

/// Timer granularity: handshake deadlines, keep-alive and close grace periods are checked by
/// one sweep over the slab per tick. A sweep costs a few ns per connection, so even 100k
/// connections cost well under 1% of a core at this rate.
const TICK: Duration = Duration::from_millis(250);

/// Back-off when the process is out of file descriptors: accepting again sooner would only
/// spin on `EMFILE`; existing connections are served meanwhile.
/// How often a worker publishes its per-topic counts (`--metrics-topics`) when they changed:
/// a lock per interval, not per message (a scrape also publishes the scraping worker's).
const TOPIC_PUBLISH: Duration = Duration::from_millis(100);

/// How often the busiest topics are picked when no stats line is printed (the dashboard
/// still shows them).
const BUSY_PICK_WITHOUT_STATS: Duration = Duration::from_secs(1);

const FD_BACKOFF: Duration = Duration::from_millis(100);

/// Socket reads per readiness event before yielding to other connections (fairness: one
/// flooding client cannot starve the rest; it is resumed next turn).
const READS_PER_EVENT: usize = 8;

/// Connections accepted per turn before the ones already accepted get their responses
/// written (the loop comes straight back for the rest). Keeps handshake latency low in a
/// connection storm.
const ACCEPTS_PER_TURN: usize = 256;

/// Extra zero-timeout polls per turn before writing staged batches (`Worker::top_up`).
const TOP_UPS: usize = 2;

/// Bus messages handled per turn before sockets get their turn again.
const INBOX_PER_TURN: usize = 16 * 1024;

/// Size of the per-worker read buffer every connection reads into.
const SCRATCH_LEN: usize = 64 * 1024;

/// What a worker hands back when it exits.
pub struct WorkerReport {
    pub counters: Counters,
    pub latency: Histogram<u64>,
}

/// Everything a worker thread owns. Nothing here is shared except the bus endpoints, the
/// published counters and the shutdown flag.
pub struct Worker {
    index: usize,
    poll: Poll,
    /// Kept through the drain (probes and refusals are answered); closed when the worker ends.
    listeners: Vec<Listener>,
    conns: Slab<Conn>,
    next_conn_id: u64,
    topics: Topics,
    bus: Bus,
    config: Arc<Config>,
    auth: Arc<Auth>,
    gate: Arc<Gate>,
    site: Arc<Site>,
    /// One read buffer for all connections of this worker.
    scratch: Vec<u8>,
    /// An empty `Inbound` lent to connections that have none while their bytes are parsed.
    spare_inbound: Option<Box<Inbound>>,
    frame_events: Vec<frame::Event>,
    /// permessage-deflate: the one compressor and inflater of this worker (lazily created).
    deflate: Codec,
    /// Connections with queued output to write at the end of this turn.
    to_flush: Vec<usize>,
    /// Connections whose read budget ran out; read again next turn.
    read_again: Vec<usize>,
    /// Connections to close once the current pass over a topic's subscribers is done.
    doomed: Vec<(usize, u64, Doom)>,
    /// Earliest time a batch held by `--batch-window` is due (`None`: none is held).
    held_until: Option<Instant>,
    counters: Counters,
    shared: Arc<SharedCounters>,
    /// Every worker's published counters (ours included), read to answer `GET /metrics`.
    everyone: Arc<[Arc<SharedCounters>]>,
    /// `--metrics-topics`: which topics are counted, and every worker's published counts.
    topic_board: Arc<TopicBoard>,
    /// This worker's per-topic counts (plain integers; empty when the flag is not set).
    topic_tally: TopicTally,
    /// When `topic_tally` was last published.
    topic_published: Instant,
    /// Latency buckets of this worker's busiest topics (`LocalTopic::busy` indexes them).
    busy_latency: Vec<LatencyBuckets>,
    /// When the busiest topics were last picked (`busiest.rs`).
    busy_picked: Instant,
    latency: Histogram<u64>,
    started: Instant,
    now: Instant,
    tick: u32,
    next_sweep: Instant,
    accept_paused_until: Option<Instant>,
    /// The listener still had connections when the per-turn accept budget ran out.
    accept_pending: bool,
    shutdown: Arc<AtomicBool>,
    /// Live, or draining after the shutdown signal (see `lifecycle::Serving`).
    serving: Serving,
    /// Peer addresses by slab key, for the disconnect log line (by then the socket may no
    /// longer know its peer). Kept only while debug logging is on; otherwise never touched.
    peers: HashMap<usize, SocketAddr>,
    /// Cluster mode (`--broker`): the bridge to Redis; `None` on a single node.
    cluster: Option<ClusterLink>,
    /// Cluster mode: interest changes the listening bridges' full queues could not take yet
    /// (the latest state per topic), retried every turn (`worker/cluster.rs`).
    interest_backlog: InterestBacklog,
    pattern_backlog: PatternBacklog,
    /// `--dashboard`: the event streams this worker serves.
    streams: dashboard::Streams,
    /// Backend hooks (`--connect-hook` …): where questions go and answers come from.
    hooks: Option<HookLink>,
    /// Numbers this worker's hook questions that wait on an open connection.
    hook_ticket: u64,
    /// Presence queries waiting for shares, and the presence subscribers here.
    presence: presence::Presence,
    patterns: patterns::LocalPatterns,
}

/// Why a connection found broken mid-pass must be closed.
#[derive(Debug, Clone, Copy)]
enum Doom {
    /// The socket failed (reset, broken pipe).
    Broken,
    /// Its unsent output passed `--max-backlog`.
    SlowConsumer,
}

/// The parts a worker is built from (made by the server before the thread starts).
pub struct WorkerParts {
    pub index: usize,
    pub poll: Poll,
    pub listeners: Vec<Listener>,
    pub bus: Bus,
    pub config: Arc<Config>,
    pub shared: Arc<SharedCounters>,
    /// Every worker's published counters, in worker order (`GET /metrics` reads them all).
    pub everyone: Arc<[Arc<SharedCounters>]>,
    /// Per-topic counting (`--metrics-topics`), shared by all workers.
    pub topic_board: Arc<TopicBoard>,
    pub shutdown: Arc<AtomicBool>,
    /// Differs between server starts: part of every topic epoch.
    pub boot: u32,
    /// Who may do what (shared by all workers).
    pub auth: Arc<Auth>,
    /// Open-WebSocket counts for the connection limits (shared by all workers).
    pub gate: Arc<Gate>,
    /// The pages plain GETs get, loaded at start (shared by all workers).
    pub site: Arc<Site>,
    /// Cluster mode: the bridge to Redis (`None`: single node).
    pub cluster: Option<ClusterLink>,
    /// Backend hooks, when any is set (`None`: no hook).
    pub hooks: Option<HookLink>,
}

impl Worker {
    pub fn new(parts: WorkerParts) -> io::Result<Self> {
        let WorkerParts {
            index,
            poll,
            mut listeners,
            bus,
            config,
            shared,
            everyone,
            topic_board,
            shutdown,
            boot,
            auth,
            gate,
            site,
            cluster,
            hooks,
        } = parts;
        let limits = HistoryLimits {
            per_topic: config.history,
            ttl: Some(config.history_ttl).filter(|t| !t.is_zero()),
            max_bytes: config.history_max_bytes / bus.workers().max(1),
        };
        let mut owned = Owned::new(boot, index as u16, limits);
        if cluster.is_some() {
            owned.numbered_elsewhere();
        }
        for (i, listener) in listeners.iter_mut().take(MAX_LISTENERS).enumerate() {
            poll.registry().register(
                &mut listener.socket,
                Token(LISTENERS - i),
                Interest::READABLE,
            )?;
        }
        let now = Instant::now();
        let presence = presence::Presence::new(&config, boot);
        Ok(Worker {
            index,
            poll,
            listeners,
            conns: Slab::with_capacity(1024),
            next_conn_id: 1,
            topics: Topics::new(owned),
            bus,
            config,
            auth,
            gate,
            site,
            scratch: vec![0; SCRATCH_LEN],
            spare_inbound: None,
            frame_events: Vec::new(),
            deflate: Codec::default(),
            to_flush: Vec::new(),
            read_again: Vec::new(),
            doomed: Vec::new(),
            held_until: None,
            counters: Counters::default(),
            shared,
            everyone,
            topic_tally: TopicTally::new(if topic_board.selector.enabled() {
                topic_board.selector.slots()
            } else {
                0
            }),
            topic_board,
            topic_published: now,
            busy_latency: Vec::new(),
            busy_picked: now,
            latency: stats::new_latency_histogram(),
            started: now,
            now,
            tick: 0,
            next_sweep: now + TICK,
            accept_paused_until: None,
            accept_pending: false,
            shutdown,
            serving: Serving::Live,
            peers: HashMap::new(),
            cluster,
            interest_backlog: InterestBacklog::default(),
            pattern_backlog: PatternBacklog::default(),
            streams: dashboard::Streams::new(now),
            hooks,
            hook_ticket: 0,
            presence,
            patterns: patterns::LocalPatterns::new(),
        })
    }

    /// The event loop. One turn: wait for readiness, handle socket events, handle the bus
    /// inbox, run timers, then write everything queued this turn (once per connection) and
    /// wake the peers we sent to. Returns at shutdown, after draining.
    pub fn run(mut self) -> WorkerReport {
        let mut events = Events::with_capacity(1024);
        loop {
            let timeout = self.poll_timeout();
            if let Err(e) = self.poll.poll(&mut events, timeout) {
                if e.kind() != io::ErrorKind::Interrupted {
                    log::warn!(worker = self.index, error:% = e; "poll failed, worker stops");
                    break;
                }
            }
            self.now = Instant::now();
            // The inbox before the sockets: what peers sent before this poll came back (a
            // subscription among them) is in effect before any message read now is numbered.
            self.drain_inbox();
            self.handle_events(&events);
            if std::mem::take(&mut self.accept_pending) {
                self.accept_all();
            }
            self.retry_interest_backlog();
            self.drain_inbox();
            self.drain_hook_answers();
            self.retry_reads();
            self.top_up(&mut events);
            self.run_timers();
            // The bus before the sockets: a subscription made this turn reaches its owner
            // before the 101 that tells the client it is open leaves, so a message published
            // after `onopen` is routed to it. Then again for what the writes themselves sent
            // (a slow consumer closed, its subscriptions ended).
            self.bus.flush();
            self.flush();
            self.bus.flush();
            self.publish_counters();
            if self.shutdown_done() {
                break;
            }
        }
        self.publish_counters();
        WorkerReport {
            counters: self.counters,
            latency: self.latency,
        }
    }

    /// Dispatch one poll's readiness events.
    fn handle_events(&mut self, events: &Events) {
        for event in events.iter() {
            match event.token() {
                WAKER => {} // the inbox is drained every turn
                Token(t) if t > LISTENERS - MAX_LISTENERS => self.accept_all(),
                Token(key) => {
                    if event.is_readable() || event.is_read_closed() || event.is_error() {
                        self.on_readable(key);
                    }
                    if event.is_writable() {
                        self.on_writable(key);
                    }
                }
            }
        }
    }

    /// Fewer, fuller turns: before the end-of-turn write, take in what became ready while
    /// this turn's events were handled (one more poll with zero timeout, and the inbox), so
    /// that a batch about to be written is not written without messages already waiting for
    /// it, which would take a whole extra pass of writes one turn later. Only when something
    /// is staged: a turn with nothing to write has nothing to gain. Bounded to
    /// [`TOP_UPS`] polls, so a steady stream still gets written.
    fn top_up(&mut self, events: &mut Events) {
        for _ in 0..TOP_UPS {
            if self.topics.dirty.is_empty() {
                return;
            }
            if self.poll.poll(events, Some(Duration::ZERO)).is_err() || events.is_empty() {
                return;
            }
            self.now = Instant::now();
            self.drain_inbox();
            self.handle_events(events);
            self.drain_inbox();
        }
    }

    /// Sleep until the next timer, or not at all while work is waiting.
    fn poll_timeout(&self) -> Option<Duration> {
        if self.accept_pending || !self.read_again.is_empty() || !self.bus.inbox.is_empty() {
            return Some(Duration::ZERO);
        }
        let now = Instant::now();
        let mut deadline = self.next_sweep;
        if let Some(t) = self.held_until {
            // A batch held by --batch-window is due then (mio rounds the wait up to whole
            // milliseconds, so a hold may end up to 1 ms late; it never ends early).
            deadline = deadline.min(t);
        }
        if let Some(t) = self.accept_paused_until {
            deadline = deadline.min(t);
        }
        if let Some(t) = self.serving.deadline() {
            deadline = deadline.min(t);
        }
        let mut timeout = deadline.saturating_duration_since(now);
        if self.bus.has_parked()
            || !self.interest_backlog.is_empty()
            || !self.pattern_backlog.is_empty()
        {
            // Retry a full peer inbox, or a full listening bridge queue, soon.
            timeout = timeout.min(Duration::from_millis(1));
        }
        Some(timeout)
    }

    /// Accept until the listener is empty (edge-triggered: a missed connection would wait for
    /// the next one to arrive), or until this turn's budget is spent (then next turn goes on).
    fn accept_all(&mut self) {
        for i in 0..self.listeners.len() {
            self.accept_from(i);
        }
    }

    fn accept_from(&mut self, i: usize) {
        if self.accept_paused_until.is_some() {
            return;
        }
        for _ in 0..ACCEPTS_PER_TURN {
            let Some(listener) = self.listeners.get(i) else {
                return;
            };
            match listener.socket.accept() {
                Ok((socket, peer)) => {
                    let tls = listener.tls.clone();
                    self.admit(socket, peer, tls);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::Interrupted | io::ErrorKind::ConnectionAborted
                    ) => {}
                Err(e) => {
                    if os::is_fd_exhaustion(&e) {
                        self.counters.fd_pauses += 1;
                    } else {
                        log::warn!(worker = self.index, error:% = e; "accept failed");
                    }
                    self.accept_paused_until = Some(self.now + FD_BACKOFF);
                    return;
                }
            }
        }
        self.accept_pending = true;
    }

    /// Take a new socket into the slab and the poll, and read at once: a client sends its
    /// request right after connecting, so it is usually already here, and reading now saves
    /// a trip through the poll.
    fn admit(
        &mut self,
        mut socket: TcpStream,
        peer: SocketAddr,
        tls: Option<Arc<rustls::ServerConfig>>,
    ) {
        // Herald coalesces its own writes per turn; Nagle would only add delay on top.
        let _ = socket.set_nodelay(true);
        if self.config.socket_send_buffer > 0 {
            // Caps what a stalled client can pin in the kernel (best effort, like nodelay).
            let _ = socket2::SockRef::from(&socket)
                .set_send_buffer_size(self.config.socket_send_buffer);
        }
        let session = match tls.as_ref().map(tls::new_session).transpose() {
            Ok(session) => session,
            Err(e) => {
                log::warn!(worker = self.index, peer:% = peer, error:% = e; "TLS session failed");
                return;
            }
        };
        let entry = self.conns.vacant_entry();
        let key = entry.key();
        let interest = Interest::READABLE | Interest::WRITABLE;
        if let Err(e) = self
            .poll
            .registry()
            .register(&mut socket, Token(key), interest)
        {
            log::warn!(worker = self.index, peer:% = peer, error:% = e; "register failed");
            return;
        }
        let id = self.next_conn_id;
        self.next_conn_id += 1;
        let is_tls = session.is_some();
        entry.insert(Conn::new(socket, id, self.tick, session));
        self.counters.accepted += 1;
        self.serving.accepted();
        if log::log_enabled!(log::Level::Debug) {
            log::debug!(worker = self.index, conn = id, peer:% = peer, tls = is_tls; "connect");
            self.peers.insert(key, peer);
        }
        self.on_readable(key);
    }

    /// Handle what other workers sent, up to a budget per turn.
    fn drain_inbox(&mut self) {
        for _ in 0..INBOX_PER_TURN {
            let Ok(msg) = self.bus.inbox.try_recv() else {
                return;
            };
            match msg {
                BusMsg::Publish(publication) => self.sequence_and_route(publication),
                BusMsg::Deliver { seq, publication } => {
                    let staged = Staged {
                        seq,
                        frame: publication.frame,
                        received: publication.received,
                        origin: publication.origin,
                    };
                    self.topics.stage(staged, &publication.topic);
                }
                BusMsg::Ack { to, conn, seq } => self.on_ack(to, conn, seq),
                BusMsg::Interest {
                    topic,
                    worker,
                    active,
                } => self.owner_interest(&topic, worker, active),
                BusMsg::Join(request) => self.on_join(request),
                BusMsg::Joined { request, result } => self.on_joined(request, result),
                BusMsg::Remote { seq, publication } => self.deliver_remote(seq, publication),
                BusMsg::Gap {
                    topic,
                    refusal,
                    forwarded,
                } => self.on_broker_gap(topic, refusal, forwarded),
                BusMsg::PublishFailed { to, conn } => self.on_publish_failed(to, conn),
                BusMsg::PresenceAsk {
                    topic,
                    worker,
                    ticket,
                    members,
                } => self.on_presence_ask(topic, worker, ticket, members),
                BusMsg::PresenceShare { ticket, tally } => self.on_presence_share(ticket, tally),
                BusMsg::PresenceChange {
                    topic,
                    joined,
                    member,
                } => self.on_presence_change(topic, joined, member),
                BusMsg::PresenceEvent {
                    topic,
                    frame,
                    number,
                } => self.on_presence_event(&topic, frame, number),
                BusMsg::RemoteEvent {
                    topic,
                    frame,
                    number,
                } => self.hand_event_to_workers(&topic, frame, number),
                BusMsg::PatternJoin(request) => self.on_pattern_join(request),
                BusMsg::PatternJoined { request, result } => {
                    self.on_pattern_joined(request, result)
                }
                BusMsg::PatternLeave { pattern, worker } => self.on_pattern_leave(&pattern, worker),
                BusMsg::Attach(matched) => self.on_attach(matched),
                BusMsg::Decline { topic, worker } => self.on_decline(&topic, worker),
                BusMsg::Discovered { topic, epoch, last } => {
                    self.on_discovered(&topic, &epoch, last)
                }
            }
        }
    }

    /// Timers: resume accepting after an fd back-off, and sweep deadlines once per tick.
    fn run_timers(&mut self) {
        if self.accept_paused_until.is_some_and(|t| self.now >= t) {
            self.accept_paused_until = None;
            self.accept_all();
        }
        if self.now >= self.next_sweep {
            self.tick =
                (self.now.duration_since(self.started).as_millis() / TICK.as_millis()) as u32;
            self.next_sweep = self.now + TICK;
            self.sweep();
            self.topics.owned.expire(self.now);
            self.dashboard_timer();
            self.presence_timer();
        }
        let pick_every = if self.config.stats_interval.is_zero() {
            BUSY_PICK_WITHOUT_STATS
        } else {
            self.config.stats_interval
        };
        if self.now.saturating_duration_since(self.busy_picked) >= pick_every {
            self.pick_busiest();
        }
    }

    fn publish_counters(&mut self) {
        self.counters.open = self.conns.len() as u64;
        self.counters.full_drops = self.bus.dropped;
        let (kept, kept_bytes) = self.topics.owned.kept();
        self.counters.history_msgs = kept as u64;
        self.counters.history_bytes = kept_bytes as u64;
        self.shared.publish(&self.counters);
        if self.topic_tally.dirty
            && self.now.saturating_duration_since(self.topic_published) >= TOPIC_PUBLISH
        {
            self.publish_topic_tally();
        }
    }

    /// Copy this worker's per-topic counts to the board (a lock: once per interval or scrape).
    fn publish_topic_tally(&mut self) {
        self.topic_published = self.now;
        self.topic_board.publish(self.index, &mut self.topic_tally);
    }

    /// Start draining when the shutdown flag is up; report true once drained or out of time.
    /// Connections accepted during the drain (probes, refused upgrades) do not count: the
    /// listeners stay open until the worker exits, and must not keep it alive.
    fn shutdown_done(&mut self) -> bool {
        if !self.serving.is_draining() && self.shutdown.load(Relaxed) {
            self.begin_drain();
        }
        self.serving.drained(self.conns.len(), self.now)
    }

    /// `GET /metrics`: every worker's last published counters (ours published just now).
    fn metrics_body(&mut self) -> String {
        self.publish_counters();
        let snapshot: Vec<Counters> = self.everyone.iter().map(|s| s.read()).collect();
        let mut body = crate::ops::metrics::render(&snapshot);
        if self.topic_board.selector.enabled() {
            self.publish_topic_tally();
            body.push_str(&self.topic_board.prometheus());
        }
        if let Some(cluster) = &self.cluster {
            body.push_str(&cluster.stats.prometheus());
        }
        if let Some(hooks) = &self.hooks {
            body.push_str(&hooks.stats.prometheus());
        }
        body
    }

    /// Converts a duration into whole ticks (at least one).
    fn ticks(d: Duration) -> u32 {
        (d.as_millis().div_ceil(TICK.as_millis())).max(1) as u32
    }
}
