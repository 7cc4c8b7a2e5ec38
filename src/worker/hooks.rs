//! Where backend hooks meet connections: asking (`hooks::HookLink::submit`, never blocking),
//! waiting (a new connection in `Phase::AwaitingHook`, a `herald.v1` subscribe in
//! `V1Feed::hooked`, a publisher's messages in `Conn::held`), and carrying out the answers
//! that come back through the worker's hook inbox.
//!
//! Publish-hook ordering: a publisher's messages are held in one queue in the order it sent
//! them, and a message is published only once it and every message before it are decided.
//! Hook threads answer in any order; the topic's owner still receives, numbers and delivers
//! one publisher's messages in its send order.

use std::sync::Arc;

use bytes::Bytes;
use serde_json::{json, Value};

use super::conn::{Feed, HeldPublish, Opening, PendingOpen, Phase};
use super::Worker;
use crate::feed::bus::AckTo;
use crate::hooks::{Attached, HookAnswer, HookJob, HookKind, HookTo, Verdict};
use crate::policy::auth::Grants;
use crate::proto::frame;
use crate::proto::http::{Credentials, Denied, HttpError, Mode};
use crate::proto::topic::TopicName;
use crate::proto::v1::{self, Refusal, Wanted};
use tungstenite::protocol::frame::coding::Data;

/// Close code for a raw-mode publisher whose message a hook refused (RFC 6455: policy), and
/// for one the hook backend could not decide on (1013: try again later).
const HOOK_DENIED: u16 = 1008;
const HOOK_UNAVAILABLE: u16 = 1013;

/// Most messages one publisher may have waiting for the publish hook; past it a message is
/// refused at once (as unavailable) instead of held, so a flood cannot grow the queue.
const MAX_HELD: usize = 1024;

impl Worker {
    fn hook_on(&self, kind: HookKind) -> bool {
        self.hooks.as_ref().is_some_and(|h| h.has(kind))
    }

    fn next_ticket(&mut self) -> u64 {
        self.hook_ticket += 1;
        self.hook_ticket
    }

    /// The identity the connection goes by (its token's `sub`, or what a connect hook
    /// attached); `None` when anonymous.
    pub(super) fn identity(&self, key: usize) -> Option<String> {
        self.conns
            .get(key)?
            .guard
            .as_ref()?
            .grants
            .as_ref()?
            .sub
            .clone()
    }

    fn address(&self, key: usize) -> String {
        self.conns
            .get(key)
            .and_then(|c| c.socket.peer_addr().ok())
            .map(|a| a.to_string())
            .unwrap_or_default()
    }

    /// Ask one hook for connection `key`. `false`: refused at once (too many in flight).
    fn ask(
        &mut self,
        kind: HookKind,
        key: usize,
        ticket: u64,
        body: Value,
        cache: Option<String>,
    ) -> bool {
        let Some(conn) = self.conns.get(key) else {
            return false;
        };
        let job = HookJob {
            kind,
            to: HookTo {
                worker: self.index,
                key,
                conn: conn.id,
                ticket,
            },
            body: body.to_string().into_bytes(),
            cache_key: cache,
        };
        self.hooks.as_ref().is_some_and(|h| h.submit(job).is_ok())
    }

    /// Whether opening a connection with these topics waits for hooks.
    pub(super) fn open_needs_hooks(&self, topics: usize) -> bool {
        self.hook_on(HookKind::Connect) || (topics > 0 && self.hook_on(HookKind::Subscribe))
    }

    /// The topics a connection names when it opens (raw path mode: its path's).
    pub(super) fn opening_topics(opening: &Opening) -> Vec<String> {
        match opening {
            Opening::Upgrade {
                mode: Mode::Path(topic),
                ..
            } => vec![topic.clone()],
            Opening::Upgrade { .. } => Vec::new(),
            Opening::Events { topics, .. } => topics.clone(),
        }
    }

    /// Send a new connection's questions (connect, and subscribe for each topic it names) and
    /// let it wait for the answers.
    pub(super) fn await_open_hooks(
        &mut self,
        key: usize,
        opening: Opening,
        credentials: &Credentials,
    ) {
        let topics = Self::opening_topics(&opening);
        let transport = match &opening {
            Opening::Upgrade { mode: Mode::V1, .. } => "herald.v1",
            Opening::Upgrade { .. } => "websocket",
            Opening::Events { .. } => "sse",
        };
        let identity = self.identity(key);
        let address = self.address(key);
        let token = credentials.token.clone();
        let mut questions = Vec::new();
        if self.hook_on(HookKind::Connect) {
            let body = json!({
                "hook": "connect", "transport": transport, "address": address,
                "identity": identity, "token": token, "origin": credentials.origin,
                "topics": topics,
            });
            let cache = format!("{:?}|{}", token, topics.join(","));
            questions.push((HookKind::Connect, body, cache));
        }
        if self.hook_on(HookKind::Subscribe) {
            for topic in &topics {
                let body = json!({
                    "hook": "subscribe", "address": address, "identity": identity,
                    "token": token, "topic": topic,
                });
                let cache = format!("{:?}|{:?}|{topic}", identity, token);
                questions.push((HookKind::Subscribe, body, cache));
            }
        }
        let conn = &mut self.conns[key];
        conn.enter(Phase::AwaitingHook {
            since: self.tick,
            pending: Box::new(PendingOpen {
                opening,
                waiting: questions.len() as u32,
                refused: None,
                attached: None,
            }),
        });
        for (kind, body, cache) in questions {
            if !self.ask(kind, key, 0, body, Some(cache)) {
                let verdict = Verdict::Unavailable("too many hook requests in flight".into());
                self.on_open_answer(key, kind, verdict);
            }
        }
    }

    /// Carry out every answer the hook threads sent back since the last turn.
    pub(super) fn drain_hook_answers(&mut self) {
        let Some(hooks) = &self.hooks else {
            return;
        };
        let answers: Vec<HookAnswer> = hooks.answers.try_iter().collect();
        for answer in answers {
            let HookTo {
                key, conn, ticket, ..
            } = answer.to;
            if self.conns.get(key).is_none_or(|c| c.id != conn) {
                continue; // gone meanwhile
            }
            match answer.kind {
                HookKind::Publish => self.on_publish_answer(key, ticket, answer.verdict),
                HookKind::Subscribe if ticket != 0 => {
                    self.on_subscribe_answer(key, ticket, answer.verdict)
                }
                kind => self.on_open_answer(key, kind, answer.verdict),
            }
        }
    }

    /// One answer for a connection waiting to open; the last one decides.
    fn on_open_answer(&mut self, key: usize, kind: HookKind, verdict: Verdict) {
        let Some(Phase::AwaitingHook { pending, .. }) =
            self.conns.get_mut(key).map(|c| &mut c.phase)
        else {
            return;
        };
        pending.waiting = pending.waiting.saturating_sub(1);
        match verdict {
            Verdict::Allow(attached) if kind == HookKind::Connect => {
                pending.attached = Some(attached);
            }
            Verdict::Allow(_) => {}
            // A deny says more than a failure: it wins over one.
            refusal @ Verdict::Deny(_) => pending.refused = Some(refusal),
            refusal @ Verdict::Unavailable(_) => {
                pending.refused.get_or_insert(refusal);
            }
        }
        if pending.waiting > 0 {
            return;
        }
        let refused = pending.refused.take();
        let attached = pending.attached.take();
        match refused {
            Some(Verdict::Deny(reason)) => {
                self.counters.auth_failures += 1;
                self.refuse(key, HttpError::Denied(Denied::ByHook(reason)));
            }
            Some(Verdict::Unavailable(why)) => {
                self.refuse(key, HttpError::HookUnavailable(why));
            }
            Some(Verdict::Allow(_)) => {} // never recorded as a refusal
            None => self.finish_open(key, attached),
        }
    }

    /// Every hook allowed: attach what the connect hook gave, and open.
    fn finish_open(&mut self, key: usize, attached: Option<Attached>) {
        if let Some(attached) = attached {
            self.attach(key, attached);
        }
        let conn = &mut self.conns[key];
        let Phase::AwaitingHook { pending, .. } = &mut conn.phase else {
            return;
        };
        let placeholder = Opening::Events {
            topics: Vec::new(),
            positions: Vec::new(),
        };
        let opening = std::mem::replace(&mut pending.opening, placeholder);
        match opening {
            Opening::Upgrade {
                mode,
                accept,
                deflate,
            } => {
                self.open(key, mode, &accept, deflate);
                self.read_held_frames(key);
            }
            Opening::Events { topics, positions } => self.start_events(key, topics, positions),
        }
    }

    /// A connect hook's identity and grants replace the token's (docs/security.md).
    fn attach(&mut self, key: usize, attached: Attached) {
        if attached.identity.is_none() && attached.grants.is_none() {
            return;
        }
        let conn = &mut self.conns[key];
        let guard = conn.guard.get_or_insert_with(|| {
            Box::new(crate::policy::guard::Guard {
                grants: None,
                counted: None,
                messages: None,
                bytes: None,
                last_refill: self.now,
            })
        });
        let token = guard.grants.as_deref();
        let expires = token.map_or(u64::MAX, |g| g.expires);
        let sub = attached
            .identity
            .or_else(|| token.and_then(|g| g.sub.clone()));
        let grants = match (attached.grants, token) {
            (Some(g), _) => Grants::from_hook(sub, g.subscribe, g.publish, expires),
            (None, Some(t)) => t.with_sub(sub),
            (None, None) => Grants::from_hook(sub, vec!["*".into()], vec!["*".into()], expires),
        };
        guard.grants = Some(Arc::new(grants));
    }

    /// A `herald.v1` subscribe that passed the server's checks: ask the subscribe hook if one
    /// is set (the subscribe then waits), else go on at once.
    pub(super) fn v1_subscribe_hooked(&mut self, key: usize, id: u64, wanted: Wanted) {
        if !self.hook_on(HookKind::Subscribe) {
            return self.v1_subscribe_now(key, id, wanted);
        }
        let ticket = self.next_ticket();
        let mut body = json!({
            "hook": "subscribe", "address": self.address(key), "identity": self.identity(key),
            "topic": &*wanted.topic,
        });
        if wanted.pattern.is_some() {
            // Asked once for the pattern; the topics it follows are not asked one by one.
            body["pattern"] = json!(true);
        }
        let cache = format!("{:?}|None|{}", self.identity(key), wanted.topic);
        let Some(Phase::Open {
            feed: Feed::V1(feed),
            ..
        }) = self.conns.get_mut(key).map(|c| &mut c.phase)
        else {
            return;
        };
        feed.hooked.push((ticket, id, wanted));
        if !self.ask(HookKind::Subscribe, key, ticket, body, Some(cache)) {
            let why = Verdict::Unavailable("too many hook requests in flight".into());
            self.on_subscribe_answer(key, ticket, why);
        }
    }

    fn on_subscribe_answer(&mut self, key: usize, ticket: u64, verdict: Verdict) {
        let Some(Phase::Open {
            feed: Feed::V1(feed),
            ..
        }) = self.conns.get_mut(key).map(|c| &mut c.phase)
        else {
            return;
        };
        let Some(i) = feed.hooked.iter().position(|(t, _, _)| *t == ticket) else {
            return;
        };
        let (_, id, wanted) = feed.hooked.swap_remove(i);
        match verdict {
            Verdict::Allow(_) => self.v1_subscribe_now(key, id, wanted),
            Verdict::Deny(reason) => {
                self.counters.auth_failures += 1;
                let refusal = Refusal::DeniedByHook(reason);
                self.v1_refuse(key, Some(id), Some(&wanted.topic), &refusal);
            }
            Verdict::Unavailable(why) => {
                let refusal = Refusal::HookUnavailable(why);
                self.v1_refuse(key, Some(id), Some(&wanted.topic), &refusal);
            }
        }
    }

    /// A client's message, checked by the publish hook when one is set: held in the
    /// publisher's queue until it and every earlier one are decided (see the module doc).
    pub(super) fn publish_hooked(
        &mut self,
        key: usize,
        topic: TopicName,
        frame: Bytes,
        ack: Option<AckTo>,
    ) {
        let Some(conn_id) = self.conns.get(key).map(|c| c.id) else {
            return;
        };
        if !self.hook_on(HookKind::Publish) {
            return self.accept_message(conn_id, topic, frame, ack);
        }
        let (data, payload) = frame::payload_of(&frame);
        let mut body = json!({
            "hook": "publish", "address": self.address(key), "identity": self.identity(key),
            "topic": &*topic,
        });
        match data {
            Data::Text => body["data"] = Value::from(String::from_utf8_lossy(payload)),
            _ => body["data_b64"] = Value::from(v1::base64(payload)),
        }
        let conn = &mut self.conns[key];
        let held = conn.held.get_or_insert_with(Box::default);
        if held.queue.len() >= MAX_HELD {
            let why = "too many messages waiting for the publish hook".to_owned();
            return self.refuse_publish(key, &topic, ack, Verdict::Unavailable(why));
        }
        held.next_ticket += 1;
        let ticket = held.next_ticket;
        held.queue.push_back(HeldPublish {
            ticket,
            topic,
            frame,
            ack,
            verdict: None,
        });
        if !self.ask(HookKind::Publish, key, ticket, body, None) {
            let why = Verdict::Unavailable("too many hook requests in flight".into());
            self.on_publish_answer(key, ticket, why);
        }
    }

    /// A publish decision: record it, then release the publisher's decided messages from the
    /// front of its queue, in its send order.
    fn on_publish_answer(&mut self, key: usize, ticket: u64, verdict: Verdict) {
        let Some(held) = self.conns.get_mut(key).and_then(|c| c.held.as_mut()) else {
            return;
        };
        if let Some(entry) = held.queue.iter_mut().find(|h| h.ticket == ticket) {
            entry.verdict = Some(verdict);
        }
        loop {
            let Some(conn) = self.conns.get_mut(key) else {
                return;
            };
            let Some(held) = conn.held.as_mut() else {
                return;
            };
            if held.queue.front().is_none_or(|h| h.verdict.is_none()) {
                if held.queue.is_empty() {
                    conn.held = None; // nothing waits: the connection keeps no queue
                }
                return;
            }
            let Some(entry) = held.queue.pop_front() else {
                return;
            };
            let conn_id = conn.id;
            match entry.verdict {
                Some(Verdict::Allow(_)) => {
                    self.accept_message(conn_id, entry.topic, entry.frame, entry.ack)
                }
                Some(refusal) => self.refuse_publish(key, &entry.topic, entry.ack, refusal),
                None => {}
            }
        }
    }

    /// A message the publish hook refused (or could not decide on): the publisher hears it
    /// the way its protocol can say it.
    fn refuse_publish(&mut self, key: usize, topic: &str, ack: Option<AckTo>, verdict: Verdict) {
        let denied = matches!(verdict, Verdict::Deny(_));
        if denied {
            self.counters.auth_failures += 1;
        }
        let why = match verdict {
            Verdict::Deny(reason) | Verdict::Unavailable(reason) => reason,
            Verdict::Allow(_) => return,
        };
        match ack {
            // herald.v1: an error for that request; the connection stays.
            Some(AckTo {
                request: Some(id), ..
            }) => {
                let refusal = if denied {
                    Refusal::DeniedByHook(why)
                } else {
                    Refusal::HookUnavailable(why)
                };
                self.v1_refuse(key, Some(id), Some(topic), &refusal);
            }
            // HTTP publish: its status, and the connection closes.
            Some(_) => {
                let error = if denied {
                    HttpError::Denied(Denied::ByHook(why))
                } else {
                    HttpError::HookUnavailable(why)
                };
                self.refuse(key, error);
            }
            // Raw path mode has no way to answer one message: the connection is closed with
            // the reason.
            None => {
                let code = if denied {
                    HOOK_DENIED
                } else {
                    HOOK_UNAVAILABLE
                };
                let reason = format!("publish refused: {why}");
                let reason = truncate(&reason, 120);
                self.fail(key, code, reason);
                // Its later messages, still held, go with it.
                if let Some(conn) = self.conns.get_mut(key) {
                    conn.held = None;
                }
            }
        }
    }
}

/// A close reason must fit a control frame (123 bytes): cut on a character boundary.
fn truncate(s: &str, max: usize) -> &str {
    let mut end = s.len().min(max);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}
