//! Access control and abuse limits on a worker: the checks before an upgrade or an HTTP
//! publish (origin, token, topic grant, connection limits), the per-message checks on an open
//! connection (publish grant, rate limit), and giving a connection's gate place back.
//! The decisions themselves live in `auth` and `guard`; this is where they meet connections.

use std::time::Instant;

use super::Worker;
use crate::policy::auth::unix_now;
use crate::policy::guard::{Bucket, Guard};
use crate::proto::http::Denied;
use crate::proto::http::{Credentials, HttpError, Mode};
use crate::proto::topic::TopicError;

/// Close code and reasons for policy violations on an open connection (RFC 6455: 1008).
pub const POLICY: u16 = 1008;
pub const RATE_LIMITED: &str = "rate limit exceeded";
pub const NOT_PUBLISHER: &str = "the token does not grant publishing on this topic";
pub const TOKEN_EXPIRED: &str = "token expired";

impl Worker {
    /// Everything an upgrade must pass before the 101: the origin, the token (and, in raw
    /// path mode, its grant for the path's topic), the topic length, and a place at the gate.
    /// Returns the connection's guard (`None` when no check needs state on the connection).
    pub(super) fn admit_upgrade(
        &mut self,
        key: usize,
        mode: &Mode,
        credentials: &Credentials,
    ) -> Result<Option<Box<Guard>>, HttpError> {
        if let Mode::Path(topic) = mode {
            self.check_topic_len(topic)?;
        }
        self.auth
            .check_origin(credentials.origin.as_deref())
            .map_err(HttpError::Denied)?;
        let grants = self
            .auth
            .verify(credentials.token.as_deref())
            .map_err(|e| {
                self.counters.auth_failures += 1;
                HttpError::Denied(e)
            })?;
        if let (Mode::Path(topic), Some(grants)) = (mode, &grants) {
            if !grants.may_subscribe(topic) {
                self.counters.auth_failures += 1;
                return Err(HttpError::Denied(Denied::Forbidden));
            }
        }
        let counted = if self.gate.is_on() {
            let ip = self.conns[key]
                .socket
                .peer_addr()
                .map_err(|_| HttpError::BadRequest("connection already gone"))?
                .ip();
            self.gate.acquire(ip)?;
            Some(ip)
        } else {
            None
        };
        let rate = |per_second: f64| (per_second > 0.0).then(|| Bucket::new(per_second));
        let messages = rate(f64::from(self.config.rate_limit_msgs));
        let bytes = rate(self.config.rate_limit_bytes as f64);
        if grants.is_none() && counted.is_none() && messages.is_none() && bytes.is_none() {
            return Ok(None);
        }
        Ok(Some(Box::new(Guard {
            grants,
            counted,
            messages,
            bytes,
            last_refill: self.now,
        })))
    }

    /// An HTTP publish: the topic length, and the publish key or a token granting the topic.
    pub(super) fn check_http_publish(
        &mut self,
        topic: &str,
        bearer: Option<&str>,
    ) -> Result<(), HttpError> {
        self.check_topic_len(topic)?;
        self.auth.check_http_publish(bearer, topic).map_err(|e| {
            self.counters.auth_failures += 1;
            HttpError::Denied(e)
        })
    }

    /// `--max-topic-len` (the protocol's own limit, 256 bytes, is checked by `topic`).
    pub(super) fn check_topic_len(&self, topic: &str) -> Result<(), HttpError> {
        if topic.len() > self.config.max_topic_len {
            return Err(HttpError::BadTopic(TopicError::TooLong));
        }
        Ok(())
    }

    /// Account one message from an open connection against its rate limits. False: over a
    /// limit (the caller closes the connection).
    pub(super) fn within_rate(&mut self, key: usize, len: usize, now: Instant) -> bool {
        let allowed = self
            .conns
            .get_mut(key)
            .and_then(|c| c.guard.as_mut())
            .is_none_or(|g| g.allow_message(len, now));
        if !allowed {
            self.counters.rate_limited += 1;
        }
        allowed
    }

    /// Whether the connection's token lets it publish on `topic` (always, when anonymous).
    pub(super) fn may_publish(&self, key: usize, topic: &str) -> bool {
        self.conns
            .get(key)
            .and_then(|c| c.guard.as_ref())
            .is_none_or(|g| g.may_publish(topic))
    }

    /// Whether the connection's token lets it subscribe to `topic` (always, when anonymous).
    pub(super) fn may_subscribe(&self, key: usize, topic: &str) -> bool {
        self.conns
            .get(key)
            .and_then(|c| c.guard.as_ref())
            .is_none_or(|g| g.may_subscribe(topic))
    }

    /// A WebSocket ended: give its place at the gate back.
    pub(super) fn release_guard(&self, guard: Option<&Guard>) {
        if let Some(ip) = guard.and_then(|g| g.counted) {
            self.gate.release(ip);
        }
    }

    /// Open connections whose token has expired (checked once per tick by the sweep).
    pub(super) fn expired_tokens(&self) -> Vec<usize> {
        if self.auth.is_anonymous() {
            return Vec::new();
        }
        let now = unix_now();
        self.conns
            .iter()
            .filter(|(_, c)| {
                c.guard
                    .as_ref()
                    .and_then(|g| g.grants.as_ref())
                    .is_some_and(|g| g.expires <= now)
            })
            .map(|(key, _)| key)
            .collect()
    }
}
