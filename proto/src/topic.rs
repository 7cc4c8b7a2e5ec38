//! Topic names (what a valid one looks like) and where a subscription starts in a topic's
//! numbered stream.

use std::sync::Arc;

/// A topic name, shared by every subscriber and every message of the topic (cloning is a
/// reference-count bump, never a copy of the string).
pub type TopicName = Arc<str>;

/// Longest topic name accepted, in bytes.
pub const MAX_TOPIC_LEN: usize = 256;

/// Why a path is not a topic; becomes HTTP 400 before the upgrade.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TopicError {
    #[error("empty topic")]
    Empty,
    #[error("topic too long (at most --max-topic-len bytes; 256 at most)")]
    TooLong,
    #[error("topic may contain only letters, digits and -._~:/")]
    BadChar,
}

/// Where a subscription starts in a topic's numbered stream: what a `herald.v1` client asks
/// for, and what the topic's history decides on (`feed::history::decide`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Start {
    /// Live messages only, after the topic's current number.
    Now,
    /// Recovery: every message after `seq` of `epoch` (the last one the client saw).
    Since { epoch: String, seq: u64 },
    /// The last `n` kept messages, then live.
    Rewind(u64),
}

/// Turn a request target (`/prices/BTC-USD?x=1`) into a topic name (`prices/BTC-USD`).
/// The query string is not part of the topic.
pub fn topic_from_target(target: &str) -> Result<&str, TopicError> {
    let path = target.split_once('?').map_or(target, |(p, _)| p);
    let name = path.strip_prefix('/').unwrap_or(path);
    validate(name)?;
    Ok(name)
}

/// Check a topic name against the allowed alphabet and length.
pub fn validate(name: &str) -> Result<(), TopicError> {
    if name.is_empty() {
        return Err(TopicError::Empty);
    }
    if name.len() > MAX_TOPIC_LEN {
        return Err(TopicError::TooLong);
    }
    let allowed =
        |b: u8| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~' | b':' | b'/');
    if name.bytes().all(allowed) {
        Ok(())
    } else {
        Err(TopicError::BadChar)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_become_topics() {
        assert_eq!(topic_from_target("/chat"), Ok("chat"));
        assert_eq!(topic_from_target("/prices/BTC-USD"), Ok("prices/BTC-USD"));
        assert_eq!(topic_from_target("/a.b_c~d:e?token=x"), Ok("a.b_c~d:e"));
        assert_eq!(topic_from_target("/"), Err(TopicError::Empty));
        assert_eq!(topic_from_target("/a b"), Err(TopicError::BadChar));
        assert_eq!(topic_from_target("/caf%C3%A9"), Err(TopicError::BadChar));
        assert_eq!(
            topic_from_target(&format!("/{}", "a".repeat(256))),
            Ok(&*"a".repeat(256))
        );
        assert_eq!(
            topic_from_target(&format!("/{}", "a".repeat(257))),
            Err(TopicError::TooLong)
        );
    }
}
