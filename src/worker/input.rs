//! Bytes in: reading sockets into the worker's one scratch buffer, the HTTP upgrade, and
//! client frames. A connection keeps bytes only while a request head or frame is incomplete.

use std::io;
use std::sync::Arc;

use super::{access, Doom, Worker, READS_PER_EVENT};
use crate::feed::bus::{AckTo, Origin, Publication};
use crate::ops::config::Switch;
use crate::ops::metrics;
use crate::ops::stats::Reject;
use crate::proto::deflate::Agreement;
use crate::proto::frame::{self, Event};
use crate::proto::http::{self, Mode, Request};
use crate::proto::topic::TopicName;
use crate::proto::v1;
use crate::worker::conn::{Ending, Feed, Inbound, Opening, OutChunk, Phase};
use bytes::Bytes;
use tungstenite::protocol::frame::coding::{Data, OpCode};

/// The frame a publish body becomes: text (validated) or binary.
fn publish_frame(body: &[u8], text: bool) -> Result<Bytes, http::HttpError> {
    let kind = if text {
        if std::str::from_utf8(body).is_err() {
            return Err(http::HttpError::BadRequest("text body is not valid UTF-8"));
        }
        Data::Text
    } else {
        Data::Binary
    };
    Ok(frame::encode(OpCode::Data(kind), body))
}

impl Worker {
    /// Read until the socket is empty (edge-triggered) or the fairness budget runs out.
    pub(super) fn on_readable(&mut self, key: usize) {
        for _ in 0..READS_PER_EVENT {
            let Some(conn) = self.conns.get_mut(key) else {
                return;
            };
            match conn.read_plain(&mut self.scratch) {
                Ok(0) => return self.on_eof(key),
                Ok(n) => {
                    conn.last_heard = self.tick;
                    self.counters.bytes_in += n as u64;
                    if !self.on_bytes(key, n) {
                        return;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    // A failed TLS handshake (or a reset mid-request) is a refused handshake.
                    let tls_failed = conn.tls.as_ref().is_some_and(|t| t.is_handshaking());
                    if matches!(conn.phase, Phase::Handshake { .. }) {
                        let reason = if tls_failed {
                            Reject::Tls
                        } else {
                            Reject::Reset
                        };
                        self.counters.rejected.count(reason);
                    }
                    log::debug!(worker = self.index, conn = conn.id, error:% = e; "read failed");
                    let why = if tls_failed {
                        Ending::Tls
                    } else {
                        Ending::Error
                    };
                    return self.hang_up_for(key, why);
                }
            }
        }
        self.read_again.push(key);
    }

    /// Resume connections whose read budget ran out last turn.
    pub(super) fn retry_reads(&mut self) {
        let keys = std::mem::take(&mut self.read_again);
        for &key in &keys {
            // A kept-alive HTTP connection may hold pipelined requests: serve the next one.
            let held = self.conns.get(key).is_some_and(|c| {
                matches!(c.phase, Phase::Handshake { .. })
                    && c.inbound.as_ref().is_some_and(|i| !i.pending.is_empty())
            });
            if held && !self.on_request_bytes(key, 0) {
                continue;
            }
            self.on_readable(key);
        }
        let mut keys = keys;
        keys.clear();
        if self.read_again.is_empty() {
            self.read_again = keys; // keep the allocation
        }
    }

    /// The peer closed its side. Whatever we still owed it (the reply to its close) gets one
    /// last write attempt; then the connection is gone.
    fn on_eof(&mut self, key: usize) {
        if matches!(self.conns[key].phase, Phase::Flushing { .. }) {
            self.write_queued(key);
        }
        self.hang_up_for(key, Ending::Eof);
    }

    /// Route `n` fresh bytes in `scratch` by phase. Returns false when the connection is gone
    /// (or, for a handshake, waits for its response to be written).
    fn on_bytes(&mut self, key: usize, n: usize) -> bool {
        match self.conns[key].phase {
            Phase::Handshake { .. } => self.on_request_bytes(key, n),
            Phase::AwaitingAck { .. } | Phase::AwaitingHook { .. } | Phase::Joining { .. } => {
                self.hold_request_bytes(key, n)
            }
            Phase::AwaitingCount { .. } => true, // discarded: it closes after the answer
            // An SSE client has nothing more to say after its request.
            Phase::Open { ref feed, .. } if feed.is_sse() => true,
            Phase::Open { .. } | Phase::Closing { .. } => self.on_frame_bytes(key, n),
            Phase::Flushing { .. } | Phase::Lingering { .. } | Phase::Streaming => true, // discarded
        }
    }

    /// Bytes of an HTTP request. A complete head is answered or upgraded; frames the client
    /// sent right behind an upgrade are parsed at once; a publish waits for its whole body.
    /// Anything after a plain GET is discarded: the connection closes after the response.
    fn on_request_bytes(&mut self, key: usize, n: usize) -> bool {
        let mut inbound = self.borrow_inbound(key);
        inbound.pending.extend_from_slice(&self.scratch[..n]);
        let parsed = http::parse_head(&inbound.pending, self.config.max_message);
        let mut body = Ok(Bytes::new());
        match &parsed {
            Ok(Some(head)) => match &head.request {
                Request::Upgrade { .. } => {
                    inbound.pending.drain(..head.len);
                }
                Request::Publish { text, body_len, .. } => {
                    let end = head.len + body_len;
                    if inbound.pending.len() < end {
                        self.return_inbound(key, inbound);
                        return true; // the body is still on its way
                    }
                    body = publish_frame(&inbound.pending[head.len..end], *text);
                    inbound.pending.drain(..end);
                }
                _ => inbound.pending.clear(),
            },
            Ok(None) => {}
            Err(_) => inbound.pending.clear(),
        }
        let has_more = !inbound.pending.is_empty();
        self.return_inbound(key, inbound);
        let request = match parsed {
            Ok(None) => return true,
            Ok(Some(head)) => head.request,
            Err(e) => return self.refuse(key, e),
        };
        // Shutting down: the listeners still accept so that probes see it, but new
        // subscribers and publishes are sent elsewhere.
        let draining = self.serving.is_draining();
        if draining && matches!(request, Request::Upgrade { .. } | Request::Publish { .. }) {
            return self.refuse(key, http::HttpError::ShuttingDown);
        }
        match request {
            Request::Upgrade {
                mode,
                accept,
                deflate,
                credentials,
            } => {
                let guard = match self.admit_upgrade(key, &mode, &credentials) {
                    Ok(guard) => guard,
                    Err(e) => return self.refuse(key, e),
                };
                self.conns[key].guard = guard;
                let topics = usize::from(matches!(mode, Mode::Path(_)));
                if self.open_needs_hooks(topics) {
                    let opening = Opening::Upgrade {
                        mode,
                        accept,
                        deflate,
                    };
                    self.await_open_hooks(key, opening, &credentials);
                    return true;
                }
                self.open(key, mode, &accept, deflate);
                // Frames behind the request are read now, or once a join lets it open.
                let open = matches!(self.conns[key].phase, Phase::Open { .. });
                !has_more || !open || self.on_frame_bytes(key, 0)
            }
            Request::Publish {
                topic,
                keep_alive,
                bearer,
                ..
            } => match body.and_then(|frame| {
                self.check_http_publish(&topic, bearer.as_deref())?;
                Ok(frame)
            }) {
                Ok(frame) => {
                    self.publish_http(key, &topic, frame, keep_alive);
                    true
                }
                Err(e) => self.refuse(key, e),
            },
            Request::Events {
                topics,
                last_event_id,
                credentials,
            } => {
                if draining {
                    self.refuse_events_draining(key);
                    return true;
                }
                match self.open_events(key, topics, last_event_id.as_deref(), &credentials) {
                    Ok(()) => true,
                    Err(e) => self.refuse(key, e),
                }
            }
            Request::TopicCount { topic, bearer } => {
                match self.check_http_publish(&topic, bearer.as_deref()) {
                    Ok(()) => self.http_topic_count(key, &topic),
                    Err(e) => self.refuse(key, e),
                }
            }
            Request::Health => {
                self.reply_and_close(key, http::health_response());
                true
            }
            Request::Ready => {
                self.reply_and_close(key, http::ready_response(!draining));
                true
            }
            Request::Metrics => {
                let body = self.metrics_body();
                self.reply_and_close(key, metrics::response(&body));
                true
            }
            Request::Page { target } => {
                if let Some(page) = self.dashboard_route(&target) {
                    return self.serve_dashboard(key, page, &target);
                }
                match self.site.response(&target) {
                    Ok(response) => self.reply_and_close(key, response),
                    Err(e) => return self.refuse(key, e),
                }
                true
            }
        }
    }

    /// Answer a refused request with its status and close; count it under its reason.
    pub(super) fn refuse(&mut self, key: usize, error: http::HttpError) -> bool {
        self.counters.rejected.count(Reject::from(&error));
        self.reply_and_close(key, error.response());
        true
    }

    /// `POST /<topic>`: publish the body like a WebSocket message (same owner, same order);
    /// the 202 response waits for the owner's sequence number (see `on_ack`).
    fn publish_http(&mut self, key: usize, topic: &str, frame: Bytes, keep_alive: bool) {
        let topic = self.shared_topic_name(topic);
        let conn = &mut self.conns[key];
        conn.enter(Phase::AwaitingAck {
            since: self.tick,
            keep_alive,
        });
        let ack = AckTo { key, request: None };
        self.publish_hooked(key, topic, frame, Some(ack));
    }

    /// A client's message (WebSocket or HTTP) enters the server: count it and publish it.
    pub(super) fn accept_message(
        &mut self,
        conn_id: u64,
        topic: TopicName,
        frame: Bytes,
        ack: Option<AckTo>,
    ) {
        self.counters.msgs_in += 1;
        let origin = Origin {
            worker: self.index as u16,
            conn: conn_id,
        };
        self.publish(Publication {
            topic,
            frame,
            received: self.now,
            origin,
            ack,
        });
    }

    /// The owner numbered a publish. A `herald.v1` publisher gets a `published` reply; an
    /// HTTP publisher its 202, then (kept alive) the next request from the next turn, so a
    /// long pipeline never recurses.
    pub(super) fn on_ack(&mut self, to: AckTo, conn_id: u64, seq: Option<u64>) {
        let key = to.key;
        let Some(conn) = self.conns.get_mut(key).filter(|c| c.id == conn_id) else {
            return; // gone (or timed out and replaced) meanwhile
        };
        if let Some(id) = to.request {
            if matches!(conn.phase, Phase::Open { .. }) {
                self.queue_output(key, v1::published(id, seq), 0);
            }
            return;
        }
        let Phase::AwaitingAck { keep_alive, .. } = conn.phase else {
            return;
        };
        // While shutting down, answer and close instead of waiting for another request.
        let keep_alive = keep_alive && !self.serving.is_draining();
        let response = http::publish_response(seq, keep_alive);
        if !keep_alive {
            self.reply_and_close(key, response);
            return;
        }
        conn.enter(Phase::Handshake { since: self.tick });
        self.queue_output(key, response.into(), 0);
        self.read_again.push(key);
    }

    /// While a publish awaits its number, later requests wait as bytes; past one request's
    /// worth, reading stops until the answer (`on_ack` resumes it).
    fn hold_request_bytes(&mut self, key: usize, n: usize) -> bool {
        let mut inbound = self.borrow_inbound(key);
        inbound.pending.extend_from_slice(&self.scratch[..n]);
        let full = inbound.pending.len() > http::MAX_HEAD + self.config.max_message;
        self.return_inbound(key, inbound);
        !full
    }

    /// Complete the upgrade: answer 101 (with the agreed subprotocol and compression) and,
    /// in raw path mode, subscribe the connection to its topic (a `herald.v1` connection
    /// starts with no topic).
    pub(super) fn open(&mut self, key: usize, mode: Mode, accept: &str, deflate: Agreement) {
        let deflate = match self.config.compression {
            Switch::On => deflate,
            Switch::Off => Agreement::OFF,
        };
        self.conns[key].deflate = deflate;
        let extensions = deflate
            .response_header()
            .map(|v| format!("Sec-WebSocket-Extensions: {v}\r\n"))
            .unwrap_or_default();
        let response = http::upgrade_response(accept, &mode, &extensions);
        if let (Mode::Path(topic), Some(_)) = (&mode, &self.cluster) {
            let name = self.shared_topic_name(topic);
            return self.join_path(key, name, response.into());
        }
        self.queue_output(key, response.into(), 0);
        match mode {
            Mode::Path(topic) => {
                let name = self.shared_topic_name(&topic);
                self.subscribe_path(key, name);
            }
            Mode::V1 => {
                self.conns[key].enter(Phase::Open {
                    feed: Feed::V1(Box::default()),
                    last_ping: self.tick,
                });
            }
        }
    }

    /// Frames the client sent right behind its upgrade, held while the answer waited (for
    /// hooks, or for the broker's join): read them now that it is open.
    pub(super) fn read_held_frames(&mut self, key: usize) {
        let held = self.conns.get(key).is_some_and(|c| {
            matches!(c.phase, Phase::Open { .. })
                && c.inbound.as_ref().is_some_and(|i| !i.pending.is_empty())
        });
        if held {
            self.on_frame_bytes(key, 0);
        }
    }

    /// The topic's name, shared with its existing subscribers here instead of another copy.
    pub(super) fn shared_topic_name(&self, topic: &str) -> TopicName {
        match self.topics.local.get_key_value(topic) {
            Some((existing, _)) => existing.clone(),
            None => Arc::from(topic),
        }
    }

    /// Client frames: the carried partial frame plus `n` fresh bytes from `scratch`.
    pub(super) fn on_frame_bytes(&mut self, key: usize, n: usize) -> bool {
        let mut inbound = self.borrow_inbound(key);
        let mut events = std::mem::take(&mut self.frame_events);
        let max = self.config.max_message;
        let inflater = self.conns[key].deflate.is_on().then_some(&mut self.deflate);
        let result = {
            let Inbound { pending, assembly } = &mut *inbound;
            if pending.is_empty() {
                let r = frame::decode_with(
                    &mut self.scratch[..n],
                    assembly,
                    max,
                    inflater,
                    &mut events,
                );
                if let Ok(used) = r {
                    pending.extend_from_slice(&self.scratch[used..n]);
                }
                r
            } else {
                pending.extend_from_slice(&self.scratch[..n]);
                let r = frame::decode_with(pending, assembly, max, inflater, &mut events);
                if let Ok(used) = r {
                    pending.drain(..used);
                }
                r
            }
        };
        self.return_inbound(key, inbound);
        self.on_frame_events(key, &mut events);
        self.frame_events = events;
        if let Err(e) = result {
            match self.conns.get(key).map(|c| &c.phase) {
                Some(Phase::Open { .. }) => self.fail(key, e.close_code(), e.reason()),
                // Garbage while closing: no more courtesy.
                Some(_) => self.hang_up_for(key, Ending::ProtocolError(e.close_code())),
                None => {}
            }
        }
        // Keep reading until the socket is empty, whatever the phase: with edge-triggered
        // readiness an unread close frame or EOF would otherwise wait for the grace timeout.
        self.conns.contains(key)
    }

    /// Act on decoded frames in order. While closing, only the peer's close matters.
    fn on_frame_events(&mut self, key: usize, events: &mut Vec<Event>) {
        for event in events.drain(..) {
            let Some(conn) = self.conns.get(key) else {
                return;
            };
            let topic = match &conn.phase {
                Phase::Open {
                    feed: Feed::Path { topic, .. },
                    ..
                } => Some(topic.clone()),
                Phase::Open { .. } => None, // herald.v1
                Phase::Closing { .. } if matches!(event, Event::Close(_)) => {
                    self.hang_up(key); // close handshake complete: we close TCP first
                    return;
                }
                _ => continue,
            };
            match event {
                Event::Message(frame) => {
                    let len = frame::payload_of(&frame).1.len();
                    if !self.within_rate(key, len, self.now) {
                        self.fail(key, access::POLICY, access::RATE_LIMITED);
                        return;
                    }
                    match topic {
                        Some(topic) if !self.may_publish(key, &topic) => {
                            self.counters.auth_failures += 1;
                            self.fail(key, access::POLICY, access::NOT_PUBLISHER);
                            return;
                        }
                        Some(topic) => self.publish_hooked(key, topic, frame, None),
                        None => self.on_v1_message(key, &frame),
                    }
                }
                Event::Ping(pong) => self.queue_output(key, pong, 0),
                Event::Close(reply) => {
                    self.end(key, Ending::PeerClose(close_code(&reply)));
                    self.reply_and_close(key, reply);
                    return;
                }
            }
        }
    }

    /// Take the connection's partial-input state, or lend it the worker's empty one.
    fn borrow_inbound(&mut self, key: usize) -> Box<Inbound> {
        match self.conns[key].inbound.take() {
            Some(inbound) => inbound,
            None => self.spare_inbound.take().unwrap_or_default(),
        }
    }

    /// Give partial-input state back: the connection keeps it only if it carries something,
    /// so an idle connection holds no buffer at all.
    fn return_inbound(&mut self, key: usize, mut inbound: Box<Inbound>) {
        if inbound.is_idle() {
            if inbound.pending.capacity() > 0 {
                inbound.pending = Vec::new();
            }
            self.spare_inbound = Some(inbound);
        } else if let Some(conn) = self.conns.get_mut(key) {
            conn.inbound = Some(inbound);
        }
    }

    /// Queue bytes for this connection's end-of-turn write. A peer that makes us queue more
    /// than the backlog limit (say, pings it never reads the pongs of) is a slow consumer.
    pub(super) fn queue_output(&mut self, key: usize, data: bytes::Bytes, messages: u32) {
        let limit = self.config.backlog_limit();
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        conn.out.push(OutChunk {
            data,
            received: self.now,
            messages,
            topic_stats: None,
        });
        if conn.out.bytes() > limit && matches!(conn.phase, Phase::Open { .. }) {
            self.doomed.push((key, conn.id, Doom::SlowConsumer));
        }
        if !conn.queued_for_flush {
            conn.queued_for_flush = true;
            self.to_flush.push(key);
        }
    }
}

/// The code in our reply to a peer's close frame (an unmasked control frame: two header
/// bytes, then the code); 1005 ("no status") when the peer sent none.
fn close_code(reply: &[u8]) -> u16 {
    match reply {
        [_, len, hi, lo, ..] if *len >= 2 => u16::from_be_bytes([*hi, *lo]),
        _ => 1005,
    }
}
