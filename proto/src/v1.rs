//! The `herald.v1` subprotocol, sans-IO: client requests in (JSON text messages), server
//! replies and message envelopes out. `docs/protocol.md` is the specification; this module
//! is its one implementation. A client opts in by offering `Sec-WebSocket-Protocol: herald.v1`;
//! without it a connection stays in raw path mode (one topic, bare payloads).

use base64::Engine as _;
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use tungstenite::protocol::frame::coding::{Data, OpCode};

use crate::frame;
use crate::pattern::{self, Pattern, PatternError};
use crate::topic::{self, Start, TopicError};

/// The subprotocol name a client offers and the server echoes.
pub const PROTOCOL: &str = "herald.v1";

/// One client request, decoded. Every request carries an `id` that its answers repeat.
#[derive(Debug, PartialEq, Eq)]
pub enum Request {
    Subscribe {
        id: u64,
        topics: Vec<Wanted>,
    },
    Unsubscribe {
        id: u64,
        topics: Vec<String>,
    },
    Publish {
        id: u64,
        topic: String,
        data: Data,
        payload: Vec<u8>,
    },
    /// How many subscribe to `topic` (and who, where the topic keeps member lists).
    Presence {
        id: u64,
        topic: String,
    },
}

/// A topic (or topic pattern) a client subscribes to, and from where it wants the stream to
/// start.
#[derive(Debug, PartialEq, Eq)]
pub struct Wanted {
    /// The topic name, or the pattern as written.
    pub topic: String,
    pub start: Start,
    /// Also deliver the topic's `join` / `leave` events (`"presence":true`).
    pub presence: bool,
    /// Set when `topic` is a pattern (`prices/*`): the subscription follows every matching
    /// topic.
    pub pattern: Option<Pattern>,
    /// A pattern's `since` map: the concrete topics to resume, each from its own position
    /// (always `Start::Since`), every one matching the pattern.
    pub since_each: Vec<(String, Start)>,
}

/// Why a request (or one topic of it) was not done; `code` is what a client program matches
/// on, `reason` what a person reads.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("{0}")]
    BadRequest(String),
    #[error("invalid topic: {0}")]
    BadTopic(TopicError),
    /// A subscribe's topic has a `*` but is not a valid pattern (code `bad_topic`).
    #[error("invalid topic pattern: {0}")]
    BadPattern(PatternError),
    /// The connection already receives some topic of this subscription through another
    /// one (a pattern and a topic it matches, or two overlapping patterns); each message
    /// reaches a connection once, so the second is refused (code `already_subscribed`).
    #[error("overlaps this connection's subscription {0}: a topic would arrive twice")]
    Overlaps(String),
    #[error("at most {0} topics per connection")]
    TooManyTopics(usize),
    #[error("already subscribed")]
    AlreadySubscribed,
    #[error("not subscribed")]
    NotSubscribed,
    #[error("the topic's history no longer holds the messages after seq {since}; resubscribe without since (history now starts at seq {first})")]
    HistoryGap { since: u64, first: u64 },
    #[error("the topic was restarted: sequence numbers of epoch {epoch} do not apply (it is now epoch {current}); resubscribe without since")]
    EpochChanged { epoch: String, current: String },
    #[error("seq {since} is ahead of the topic's last message ({last})")]
    SinceAhead { since: u64, last: u64 },
    #[error("the connection's token does not grant this topic")]
    Forbidden,
    #[error("the cluster broker (Redis) is unreachable; retry shortly")]
    Unavailable,
    /// The application's backend (a hook) said no, with this reason (code `forbidden`).
    #[error("denied: {0}")]
    DeniedByHook(String),
    /// A backend hook gave no decision (code `unavailable`).
    #[error("the application backend is unavailable: {0}")]
    HookUnavailable(String),
    /// `presence:true` on a topic that keeps no member list (`--presence` does not match it).
    #[error("this topic has no presence events (the server's --presence does not list it)")]
    PresenceOff,
}

impl Refusal {
    /// The stable, machine-readable name of the refusal.
    pub fn code(&self) -> &'static str {
        match self {
            Refusal::BadRequest(_) => "bad_request",
            Refusal::BadTopic(_) | Refusal::BadPattern(_) => "bad_topic",
            Refusal::Overlaps(_) => "already_subscribed",
            Refusal::TooManyTopics(_) => "too_many_topics",
            Refusal::AlreadySubscribed => "already_subscribed",
            Refusal::NotSubscribed => "not_subscribed",
            Refusal::HistoryGap { .. } => "history_gap",
            Refusal::EpochChanged { .. } => "epoch_changed",
            Refusal::SinceAhead { .. } => "since_ahead",
            Refusal::Forbidden | Refusal::DeniedByHook(_) => "forbidden",
            Refusal::Unavailable | Refusal::HookUnavailable(_) => "unavailable",
            Refusal::PresenceOff => "presence_off",
        }
    }
}

/// Wire form of a request (serde does the JSON; `decode` turns it into a checked [`Request`]).
#[derive(Deserialize)]
#[serde(tag = "op", rename_all = "lowercase", deny_unknown_fields)]
enum RawRequest {
    Subscribe {
        id: u64,
        topics: Vec<RawWanted>,
    },
    Unsubscribe {
        id: u64,
        topics: Vec<String>,
    },
    Publish {
        id: u64,
        topic: String,
        data: Option<String>,
        data_b64: Option<String>,
    },
    Presence {
        id: u64,
        topic: String,
    },
}

#[derive(Deserialize)]
#[serde(untagged)]
enum RawWanted {
    Name(String),
    Full(RawWantedFull),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawWantedFull {
    topic: String,
    since: Option<RawStart>,
    rewind: Option<u64>,
    #[serde(default)]
    presence: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSince {
    epoch: String,
    seq: u64,
}

/// `since`: one position (a topic), or a map of topic → position (a pattern).
#[derive(Deserialize)]
#[serde(untagged)]
enum RawStart {
    One(RawSince),
    Each(std::collections::BTreeMap<String, RawSince>),
}

/// Decode one client text message. On failure, the id (if one could be read) and why.
pub fn decode(text: &[u8]) -> Result<Request, (Option<u64>, Refusal)> {
    let raw: RawRequest = serde_json::from_slice(text).map_err(|e| {
        // Only an object has an id (serde would also read a struct from an array).
        let id = match serde_json::from_slice::<serde_json::Value>(text) {
            Ok(serde_json::Value::Object(map)) => map.get("id").and_then(|v| v.as_u64()),
            _ => None,
        };
        (id, Refusal::BadRequest(format!("invalid request: {e}")))
    })?;
    match raw {
        RawRequest::Subscribe { id, topics } => {
            let topics = topics
                .into_iter()
                .map(|w| wanted(w).map_err(|r| (Some(id), r)))
                .collect::<Result<Vec<_>, _>>()?;
            Ok(Request::Subscribe { id, topics })
        }
        RawRequest::Unsubscribe { id, topics } => Ok(Request::Unsubscribe { id, topics }),
        RawRequest::Publish {
            id,
            topic,
            data,
            data_b64,
        } => {
            let (data, payload) = match (data, data_b64) {
                (Some(text), None) => (Data::Text, text.into_bytes()),
                (None, Some(b64)) => {
                    let bytes = base64::engine::general_purpose::STANDARD
                        .decode(b64)
                        .map_err(|e| (Some(id), Refusal::BadRequest(format!("data_b64: {e}"))))?;
                    (Data::Binary, bytes)
                }
                _ => {
                    let why = "publish needs exactly one of data (text) or data_b64 (binary)";
                    return Err((Some(id), Refusal::BadRequest(why.into())));
                }
            };
            topic::validate(&topic).map_err(|e| (Some(id), Refusal::BadTopic(e)))?;
            Ok(Request::Publish {
                id,
                topic,
                data,
                payload,
            })
        }
        RawRequest::Presence { id, topic } => {
            topic::validate(&topic).map_err(|e| (Some(id), Refusal::BadTopic(e)))?;
            Ok(Request::Presence { id, topic })
        }
    }
}

fn wanted(raw: RawWanted) -> Result<Wanted, Refusal> {
    let full = match raw {
        RawWanted::Name(topic) => RawWantedFull {
            topic,
            since: None,
            rewind: None,
            presence: false,
        },
        RawWanted::Full(full) => full,
    };
    if pattern::is_pattern(&full.topic) {
        return wanted_pattern(full);
    }
    let RawWantedFull {
        topic,
        since,
        rewind,
        presence,
    } = full;
    let start = match (since, rewind) {
        (None, None) => Start::Now,
        (Some(RawStart::One(RawSince { epoch, seq })), None) => Start::Since { epoch, seq },
        (Some(RawStart::Each(_)), None) => {
            let why = "since is one {\"epoch\",\"seq\"} for a topic (a map is for a pattern)";
            return Err(Refusal::BadRequest(why.into()));
        }
        (None, Some(n)) => Start::Rewind(n),
        (Some(_), Some(_)) => {
            return Err(Refusal::BadRequest("give since or rewind, not both".into()))
        }
    };
    Ok(Wanted {
        topic,
        start,
        presence,
        pattern: None,
        since_each: Vec::new(),
    })
}

/// A pattern subscription: a valid pattern, and `since` (if any) a map whose every topic
/// the pattern matches. `rewind` and `presence` are per topic, so not accepted here.
fn wanted_pattern(full: RawWantedFull) -> Result<Wanted, Refusal> {
    let pattern = Pattern::parse(&full.topic).map_err(Refusal::BadPattern)?;
    if full.rewind.is_some() || full.presence {
        let why = "rewind and presence are per topic; a pattern takes neither";
        return Err(Refusal::BadRequest(why.into()));
    }
    let since_each = match full.since {
        None => Vec::new(),
        Some(RawStart::One(_)) => {
            let why = "a pattern's since is a map of topic → {\"epoch\",\"seq\"}";
            return Err(Refusal::BadRequest(why.into()));
        }
        Some(RawStart::Each(map)) => {
            let mut each = Vec::with_capacity(map.len());
            for (topic, RawSince { epoch, seq }) in map {
                topic::validate(&topic).map_err(Refusal::BadTopic)?;
                if !pattern.matches(&topic) {
                    let why = format!("since names {topic}, which {pattern} does not match");
                    return Err(Refusal::BadRequest(why));
                }
                each.push((topic, Start::Since { epoch, seq }));
            }
            each
        }
    };
    Ok(Wanted {
        topic: full.topic,
        start: Start::Now,
        presence: false,
        pattern: Some(pattern),
        since_each,
    })
}

/// Server → client messages other than envelopes, in the order of the spec.
#[derive(Serialize)]
#[serde(tag = "type", rename_all = "lowercase")]
enum Reply<'a> {
    Subscribed {
        id: u64,
        topic: &'a str,
        epoch: &'a str,
        seq: u64,
        replayed: usize,
        /// Set when the topic is followed through this pattern subscription.
        #[serde(skip_serializing_if = "Option::is_none")]
        pattern: Option<&'a str>,
    },
    /// A pattern subscription is in place (each matching topic then gets a `subscribed`
    /// of its own, with `pattern` set, before its first message).
    #[serde(rename = "subscribed")]
    PatternSubscribed {
        id: u64,
        pattern: &'a str,
    },
    Unsubscribed {
        id: u64,
        topic: &'a str,
    },
    Published {
        id: u64,
        seq: Option<u64>,
    },
    Error {
        id: Option<u64>,
        #[serde(skip_serializing_if = "Option::is_none")]
        topic: Option<&'a str>,
        code: &'static str,
        reason: String,
    },
}

fn text_frame(reply: &Reply) -> Bytes {
    // Serializing these plain structs into a Vec cannot fail.
    let json = serde_json::to_vec(reply).unwrap_or_default();
    frame::encode(OpCode::Data(Data::Text), &json)
}

/// `subscribed`: the subscription is live from `seq` of `epoch`, after `replayed` messages
/// of history (which follow this reply at once).
pub fn subscribed(id: u64, topic: &str, epoch: &str, seq: u64, replayed: usize) -> Bytes {
    subscribed_via(id, topic, None, epoch, seq, replayed)
}

/// `subscribed` for a topic followed through a pattern subscription (`pattern`), or a
/// direct one (`None`): the client learns the topic's epoch and position for `since`.
pub fn subscribed_via(
    id: u64,
    topic: &str,
    pattern: Option<&str>,
    epoch: &str,
    seq: u64,
    replayed: usize,
) -> Bytes {
    text_frame(&Reply::Subscribed {
        id,
        topic,
        epoch,
        seq,
        replayed,
        pattern,
    })
}

/// `subscribed` for a pattern: the subscription is registered; matching topics follow.
pub fn pattern_subscribed(id: u64, pattern: &str) -> Bytes {
    text_frame(&Reply::PatternSubscribed { id, pattern })
}

/// `unsubscribed`: no message of `topic` follows.
pub fn unsubscribed(id: u64, topic: &str) -> Bytes {
    text_frame(&Reply::Unsubscribed { id, topic })
}

/// `published`: the topic's owner gave the message number `seq` (`null`: nobody subscribes
/// and history is off, so nobody got it).
pub fn published(id: u64, seq: Option<u64>) -> Bytes {
    text_frame(&Reply::Published { id, seq })
}

/// `error`: a request (or one topic of it, when `topic` is given) was refused.
pub fn error(id: Option<u64>, topic: Option<&str>, refusal: &Refusal) -> Bytes {
    text_frame(&Reply::Error {
        id,
        topic,
        code: refusal.code(),
        reason: refusal.to_string(),
    })
}

/// Standard base64, as envelopes and hook payloads carry binary data.
pub fn base64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// The envelope a subscriber receives for message `seq` of `topic`, built from the message's
/// raw server frame: `{"type":"message","topic":…,"seq":…,"data":…}` for text, `data_b64`
/// (standard base64) for binary. Built once per message per worker, shared by every
/// `herald.v1` subscriber there.
pub fn envelope(topic: &str, seq: u64, raw_frame: &[u8]) -> Bytes {
    let (data, payload) = frame::payload_of(raw_frame);
    let mut json = Vec::with_capacity(payload.len() * 4 / 3 + topic.len() + 64);
    json.extend_from_slice(b"{\"type\":\"message\",\"topic\":");
    // Writing JSON strings into a Vec cannot fail.
    let _ = serde_json::to_writer(&mut json, topic);
    json.extend_from_slice(b",\"seq\":");
    json.extend_from_slice(seq.to_string().as_bytes());
    match data {
        Data::Text => {
            json.extend_from_slice(b",\"data\":");
            // Text payloads were validated as UTF-8 on the way in.
            let text = std::str::from_utf8(payload).unwrap_or_default();
            let _ = serde_json::to_writer(&mut json, text);
        }
        _ => {
            json.extend_from_slice(b",\"data_b64\":\"");
            let b64 = base64::engine::general_purpose::STANDARD.encode(payload);
            json.extend_from_slice(b64.as_bytes());
            json.push(b'"');
        }
    }
    json.push(b'}');
    frame::encode(OpCode::Data(Data::Text), &json)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn payload_json(frame: &[u8]) -> serde_json::Value {
        serde_json::from_slice(frame::payload_of(frame).1).unwrap()
    }

    #[test]
    fn decodes_every_request_form() {
        let r = decode(br#"{"op":"subscribe","id":1,"topics":["a",{"topic":"b","since":{"epoch":"e","seq":4}},{"topic":"c","rewind":3}]}"#);
        assert_eq!(
            r.unwrap(),
            Request::Subscribe {
                id: 1,
                topics: vec![
                    Wanted {
                        topic: "a".into(),
                        start: Start::Now,
                        presence: false,
                        pattern: None,
                        since_each: vec![],
                    },
                    Wanted {
                        topic: "b".into(),
                        start: Start::Since {
                            epoch: "e".into(),
                            seq: 4
                        },
                        presence: false,
                        pattern: None,
                        since_each: vec![],
                    },
                    Wanted {
                        topic: "c".into(),
                        start: Start::Rewind(3),
                        presence: false,
                        pattern: None,
                        since_each: vec![],
                    },
                ]
            }
        );
        let r = decode(br#"{"op":"publish","id":2,"topic":"a","data_b64":"AAH/"}"#).unwrap();
        assert_eq!(
            r,
            Request::Publish {
                id: 2,
                topic: "a".into(),
                data: Data::Binary,
                payload: vec![0, 1, 255]
            }
        );
        let r = decode(br#"{"op":"unsubscribe","id":3,"topics":["a"]}"#).unwrap();
        assert_eq!(
            r,
            Request::Unsubscribe {
                id: 3,
                topics: vec!["a".into()]
            }
        );
    }

    #[test]
    fn malformed_requests_are_refused_with_their_id_when_readable() {
        for (text, id) in [
            (&br#"{"op":"dance","id":7}"#[..], Some(7)),
            (br#"not json"#, None),
            (br#"{"op":"publish","id":8,"topic":"a"}"#, Some(8)),
            (br#"{"op":"publish","id":9,"topic":"a b","data":"x"}"#, Some(9)),
            (br#"{"op":"subscribe","id":10,"topics":[{"topic":"a","since":{"epoch":"e","seq":1},"rewind":2}]}"#, Some(10)),
            (br#"{"op":"subscribe","id":11,"topics":["a"],"extra":1}"#, Some(11)),
        ] {
            let (got, refusal) = decode(text).unwrap_err();
            assert_eq!(got, id, "{}", String::from_utf8_lossy(text));
            assert!(matches!(refusal, Refusal::BadRequest(_) | Refusal::BadTopic(_)));
        }
    }

    #[test]
    fn patterns_take_a_since_map_and_nothing_per_topic() {
        let r = decode(br#"{"op":"subscribe","id":1,"topics":[{"topic":"p/*","since":{"p/a":{"epoch":"e","seq":4}}}]}"#).unwrap();
        let Request::Subscribe { topics, .. } = r else {
            panic!("{r:?}")
        };
        assert_eq!(topics[0].pattern.as_ref().map(|p| p.as_str()), Some("p/*"));
        assert_eq!(
            topics[0].since_each,
            vec![(
                "p/a".to_string(),
                Start::Since {
                    epoch: "e".into(),
                    seq: 4
                }
            )]
        );
        for (text, code) in [
            (&br#"{"op":"subscribe","id":2,"topics":[{"topic":"p/*","since":{"q/a":{"epoch":"e","seq":4}}}]}"#[..], "bad_request"),
            (br#"{"op":"subscribe","id":2,"topics":[{"topic":"p/*","since":{"epoch":"e","seq":4}}]}"#, "bad_request"),
            (br#"{"op":"subscribe","id":2,"topics":[{"topic":"p/*","rewind":3}]}"#, "bad_request"),
            (br#"{"op":"subscribe","id":2,"topics":[{"topic":"p/*","presence":true}]}"#, "bad_request"),
            (br#"{"op":"subscribe","id":2,"topics":["p/x*"]}"#, "bad_topic"),
            (br#"{"op":"subscribe","id":2,"topics":["a/**/b"]}"#, "bad_topic"),
            (br#"{"op":"subscribe","id":2,"topics":[{"topic":"a","since":{"a":{"epoch":"e","seq":1}}}]}"#, "bad_request"),
        ] {
            let (id, refusal) = decode(text).unwrap_err();
            assert_eq!(id, Some(2));
            assert_eq!(refusal.code(), code, "{}", String::from_utf8_lossy(text));
        }
    }

    #[test]
    fn envelopes_carry_topic_seq_and_data() {
        let text = frame::encode(OpCode::Data(Data::Text), "hé \"q\"\n".as_bytes());
        let v = payload_json(&envelope("chat", 42, &text));
        assert_eq!(
            v,
            serde_json::json!({"type":"message","topic":"chat","seq":42,"data":"hé \"q\"\n"})
        );
        let bin = frame::encode(OpCode::Data(Data::Binary), &[0, 1, 255]);
        let v = payload_json(&envelope("chat", 43, &bin));
        assert_eq!(v["data_b64"], "AAH/");
        let big = frame::encode(OpCode::Data(Data::Text), &vec![b'x'; 70_000]);
        let v = payload_json(&envelope("t", 1, &big));
        assert_eq!(v["data"].as_str().unwrap().len(), 70_000);
    }

    #[test]
    fn replies_have_their_documented_shape() {
        let v = payload_json(&subscribed(1, "a", "e1", 5, 2));
        assert_eq!(
            v,
            serde_json::json!({"type":"subscribed","id":1,"topic":"a","epoch":"e1","seq":5,"replayed":2})
        );
        let gap = Refusal::HistoryGap { since: 3, first: 9 };
        let v = payload_json(&error(Some(4), Some("a"), &gap));
        assert_eq!(v["code"], "history_gap");
        assert_eq!(v["topic"], "a");
        let v = payload_json(&error(None, None, &Refusal::BadRequest("x".into())));
        assert_eq!(v["id"], serde_json::Value::Null);
        assert!(v.get("topic").is_none());
        let v = payload_json(&pattern_subscribed(3, "p/*"));
        assert_eq!(
            v,
            serde_json::json!({"type":"subscribed","id":3,"pattern":"p/*"})
        );
        let v = payload_json(&subscribed_via(3, "p/a", Some("p/*"), "e", 0, 0));
        assert_eq!(v["pattern"], "p/*");
        assert_eq!(v["topic"], "p/a");
        let v = payload_json(&published(2, None));
        assert_eq!(v, serde_json::json!({"type":"published","id":2,"seq":null}));
    }
}
