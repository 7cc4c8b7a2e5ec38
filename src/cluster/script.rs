//! What cluster mode keeps in Redis and how it reads it back (sans-IO, so it is unit-tested
//! without a server): key names, the two Lua scripts, the PUBLISH payload, stream entries.
//!
//! Per topic `T` (the braces are a Redis Cluster hash tag, so all of a topic's keys live in
//! one slot):
//!
//! | key | type | holds |
//! | --- | --- | --- |
//! | `herald:{T}:seq` | string | the last sequence number given out (0 before the first) |
//! | `herald:{T}:epoch` | string | this life of the topic's numbering |
//! | `herald:{T}:log` | stream | the last `--broker-history` messages, entry id `0-<seq>` |
//! | `herald:{T}:events` | string | how many `join`/`leave` events were placed on the topic |
//! | channel `herald:{T}` | pub/sub | every message as it is numbered, and every event |
//! | channel `herald:new-topics` | pub/sub | the first message of every topic life ([`NOTICES`]) |
//!
//! A missing `seq` key means a new life: Redis never had the topic, or lost it (restarted
//! without persistence, flushed, evicted). Both scripts then start a new epoch and drop any
//! stale log, so a client's `since` from the old life is answered `epoch_changed`, never
//! misread as a position in the new numbering.

use bytes::Bytes;
use redis::Value;
use tungstenite::protocol::frame::coding::{Data, OpCode};

use crate::feed::bus::Origin;
use crate::proto::frame;
use crate::proto::pattern::{Pattern, Segment};
use crate::proto::presence::Member;
use crate::proto::topic::{self, TopicName};

/// The start both scripts share: read the topic's epoch (`epoch`), and if Redis has no
/// numbering for the topic, begin a new life (number 0, no log, epoch `ARGV[1]`).
/// KEYS: seq, log, epoch.
macro_rules! start_topic_if_new {
    () => {
        r"
local epoch = redis.call('GET', KEYS[3])
if redis.call('EXISTS', KEYS[1]) == 0 or not epoch then
  redis.call('DEL', KEYS[2])
  redis.call('SET', KEYS[1], 0)
  epoch = ARGV[1]
  redis.call('SET', KEYS[3], epoch)
end"
    };
}

/// Where the topic's numbering lives: `home` (KEYS[4]) names the Redis process that numbers
/// it (`run_id HOST:PORT`, given by the caller: ARGV[$home]). A script run by another process
/// (the slot's master changed, or Redis restarted) numbers nothing until the caller has
/// decided (ARGV[$decision]): `adopt <old home>` when the old process handed the topic over
/// (it is alive: a planned failover, a slot migration), `retire <old home>` when it did not
/// (it died or restarted, so acknowledged messages may be lost): a new life begins, epoch
/// ARGV[1], before any number is given, so no number is ever reused within an epoch.
/// Without a decision the script answers `HOMELESS <old home>`. Both conditional on the old
/// home: decided once, whichever node asks first.
macro_rules! settle_home {
    ($home:literal, $decision:literal) => {
        concat!(
            r"
local home = redis.call('GET', KEYS[4])
if home ~= ARGV[",
            $home,
            r"] then
  if home then
    local decision = ARGV[",
            $decision,
            r"]
    if decision == 'retire ' .. home then
      redis.call('DEL', KEYS[2])
      redis.call('SET', KEYS[1], 0)
      epoch = ARGV[1]
      redis.call('SET', KEYS[3], epoch)
    elseif decision ~= 'adopt ' .. home then
      return redis.error_reply('HOMELESS ' .. home)
    end
  end
  redis.call('SET', KEYS[4], ARGV[",
            $home,
            r"])
end"
        )
    };
}

/// The channel of [`NOTICES`], as a literal the scripts can be built with.
macro_rules! notices {
    () => {
        "herald:new-topics"
    };
}

/// The channel on which the publish script announces every topic life's first message
/// (the payload is the topic's channel, `herald:{T}`): how a node with pattern subscribers
/// learns of a matching topic created after it looked ([`seq_key_glob`]), so it can
/// SUBSCRIBE to that one topic instead of hearing a whole glob of channels. Plain `PUBLISH`
/// even on a Redis Cluster: one notice per topic life, heard on any node of the cluster.
pub const NOTICES: &str = notices!();

/// The publish script, with the pub/sub command to announce the message with.
macro_rules! publish_with {
    ($command:literal) => {
        concat!(
            start_topic_if_new!(),
            settle_home!("6", "7"),
            r"
local seq = redis.call('INCR', KEYS[1])
redis.call('XADD', KEYS[2], 'MAXLEN', ARGV[2], '0-' .. seq, 'b', ARGV[4])
redis.call('",
            $command,
            r"', ARGV[5], epoch .. ' ' .. seq .. ' ' .. ARGV[3] .. '\n' .. ARGV[4])
if seq == 1 then
  redis.call('PUBLISH', '",
            notices!(),
            r"', ARGV[5])
end
return seq
"
        )
    };
}

/// Numbers one message, keeps it in the topic's log and publishes it, atomically: every node
/// sees the topic's messages in numbering order, and a message is in the log before anyone
/// can hear of it.
///
/// KEYS: seq, log, epoch, home. ARGV: epoch for a new life, log length, origin, body,
/// channel, this process's home, home decision (see `settle_home`; both appended by
/// `Wire`). Returns the message's number.
pub const PUBLISH: &str = publish_with!("PUBLISH");

/// [`PUBLISH`] for a Redis Cluster: `SPUBLISH` keeps the message on the shard that owns the
/// topic's slot (the channel shares the keys' hash tag), instead of broadcasting it to
/// every node of the cluster.
pub const SPUBLISH: &str = publish_with!("SPUBLISH");

/// The event script, with the pub/sub command to announce the event with.
macro_rules! event_with {
    ($command:literal) => {
        concat!(
            start_topic_if_new!(),
            settle_home!("4", "5"),
            r"
local n = redis.call('INCR', KEYS[5])
redis.call('",
            $command,
            r"', ARGV[3], '!event ' .. epoch .. ' ' .. redis.call('GET', KEYS[1]) .. ' ' .. n .. '\n' .. ARGV[2])
return n
"
        )
    };
}

/// Places one presence `join`/`leave` event among the topic's messages without numbering
/// it: it reads the topic's current number (`after`) and counts the event (its place among
/// events, so a joiner can tell the events older than its start), then publishes it on the
/// topic's own channel, atomically. Every node hears it at the same place in the stream.
///
/// KEYS: seq, log, epoch, home, events. ARGV: epoch for a new life, body ([`event_body`]),
/// channel, this process's home, home decision (see `settle_home`; both appended by
/// `Wire`). Returns the event's count.
pub const EVENT: &str = event_with!("PUBLISH");

/// [`EVENT`] for a Redis Cluster (`SPUBLISH`, like [`SPUBLISH`]).
pub const SEVENT: &str = event_with!("SPUBLISH");

/// Where a topic stands, creating it (a new epoch at 0) if Redis does not have it. Used when
/// a node starts listening to a topic, and after every reconnect.
///
/// `ARGV[2]`, when not empty, is an epoch to retire: if the topic still has it, a new life
/// begins. A node asks for that after a Redis Cluster failover it cannot prove lossless
/// (replication is asynchronous: the promoted replica may lack the last messages, and would
/// give their numbers to other messages), so no number is ever reused within one epoch.
///
/// KEYS: seq, log, epoch, home, events. ARGV: epoch for a new life, epoch to retire (or
/// empty), this process's home, home decision (both appended by `Wire`). Returns
/// `{epoch, seq, events}` (`events`: how many presence events were placed so far).
pub const POSITION: &str = concat!(
    start_topic_if_new!(),
    settle_home!("3", "4"),
    r"
if ARGV[2] ~= '' and epoch == ARGV[2] then
  redis.call('DEL', KEYS[2])
  redis.call('SET', KEYS[1], 0)
  epoch = ARGV[1]
  redis.call('SET', KEYS[3], epoch)
end
return {epoch, redis.call('GET', KEYS[1]), redis.call('GET', KEYS[5]) or '0'}
"
);

/// The Redis names of one topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Keys {
    pub seq: String,
    pub log: String,
    pub epoch: String,
    pub events: String,
    /// The Redis process that numbers the topic (see `settle_home`).
    pub home: String,
    pub channel: String,
}

impl Keys {
    /// Names for `topic` (hash-tagged: one Redis Cluster slot per topic).
    pub fn of(topic: &str) -> Keys {
        Keys {
            seq: format!("herald:{{{topic}}}:seq"),
            log: format!("herald:{{{topic}}}:log"),
            epoch: format!("herald:{{{topic}}}:epoch"),
            events: format!("herald:{{{topic}}}:events"),
            home: format!("herald:{{{topic}}}:home"),
            channel: channel_of(topic),
        }
    }

    /// `EVALSHA sha 5` with the five keys the `EVENT` and `POSITION` scripts take (seq,
    /// log, epoch, home, events); the caller adds the script's arguments.
    pub fn evalsha_all(&self, sha: &str) -> redis::Cmd {
        let mut cmd = redis::cmd("EVALSHA");
        cmd.arg(sha)
            .arg(5)
            .arg(&self.seq)
            .arg(&self.log)
            .arg(&self.epoch)
            .arg(&self.home)
            .arg(&self.events);
        cmd
    }
}

/// The pub/sub channel of `topic`.
pub fn channel_of(topic: &str) -> String {
    format!("herald:{{{topic}}}")
}

/// A Redis glob (for `SCAN … MATCH`) covering the `seq` key of every topic `pattern`
/// matches: every topic Redis numbers has one. Topic names have no glob character
/// (`*?[]\\` are not allowed in them), and a glob `*` matches across `/`, so the glob is
/// wider than the pattern (`prices/*` also covers `prices/a/b`): the caller checks each
/// topic against the pattern itself.
pub fn seq_key_glob(pattern: &Pattern) -> String {
    let mut glob = String::from("herald:{");
    for (i, seg) in pattern.segments().iter().enumerate() {
        if i > 0 {
            glob.push('/');
        }
        match seg {
            Segment::Literal(text) => glob.push_str(text),
            Segment::One | Segment::Rest => glob.push('*'),
        }
    }
    glob.push_str("}:seq");
    glob
}

/// The topic whose `seq` key this is, if it is one ([`Keys::seq`]).
pub fn topic_of_seq_key(key: &str) -> Option<TopicName> {
    let name = key.strip_prefix("herald:{")?.strip_suffix("}:seq")?;
    topic::validate(name).ok()?;
    Some(name.into())
}

/// The topic a channel name belongs to, if it is a valid Herald channel.
pub fn topic_of_channel(channel: &str) -> Option<TopicName> {
    let name = channel.strip_prefix("herald:{")?.strip_suffix('}')?;
    topic::validate(name).ok()?;
    Some(name.into())
}

/// A message as stored in the log and published: one kind byte (`t` text, `b` binary), then
/// the payload. Frames are re-encoded on the way out of Redis, so nothing Redis holds is
/// ever sent to a client unchecked.
pub fn body_of(frame: &[u8]) -> Vec<u8> {
    let (data, payload) = frame::payload_of(frame);
    let mut body = Vec::with_capacity(payload.len() + 1);
    body.push(if data == Data::Text { b't' } else { b'b' });
    body.extend_from_slice(payload);
    body
}

/// The server frame for a stored body, or `None` if the body is malformed (unknown kind, or
/// text that is not UTF-8): such a message is skipped and counted, never forwarded.
pub fn frame_of(body: &[u8]) -> Option<Bytes> {
    let (&kind, payload) = body.split_first()?;
    let data = match kind {
        b't' => {
            std::str::from_utf8(payload).ok()?;
            Data::Text
        }
        b'b' => Data::Binary,
        _ => return None,
    };
    Some(frame::encode(OpCode::Data(data), payload))
}

/// How the publishing node names the publisher inside the message (`node worker conn`), so
/// `--no-echo` works on the publisher's own node and nowhere else.
pub fn origin_arg(node: u32, origin: Origin) -> String {
    format!("{node:08x} {} {}", origin.worker, origin.conn)
}

/// One message heard on a topic's channel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Heard {
    pub epoch: String,
    pub seq: u64,
    /// Set only when this node published it.
    pub origin: Option<Origin>,
    pub frame: Bytes,
}

/// Parse a PUBLISH payload (`epoch seq node worker conn\n` + body). `node` is this node's id,
/// to recognise its own publishers. `None` for anything malformed.
pub fn parse_heard(payload: &[u8], node: u32) -> Option<Heard> {
    let newline = payload.iter().position(|&b| b == b'\n')?;
    let (head, body) = (&payload[..newline], &payload[newline + 1..]);
    let head = std::str::from_utf8(head).ok()?;
    let mut parts = head.split(' ');
    let epoch = parts.next().filter(|e| !e.is_empty())?.to_owned();
    let seq: u64 = parts.next()?.parse().ok()?;
    let from = u32::from_str_radix(parts.next()?, 16).ok()?;
    let worker: u16 = parts.next()?.parse().ok()?;
    let conn: u64 = parts.next()?.parse().ok()?;
    if parts.next().is_some() || seq == 0 {
        return None;
    }
    Some(Heard {
        epoch,
        seq,
        origin: (from == node).then_some(Origin { worker, conn }),
        frame: frame_of(body)?,
    })
}

/// What marks an event on a topic's channel (a message's head starts with its epoch,
/// which never starts with `!`).
const EVENT_MARK: &[u8] = b"!event ";

/// The body of an event in Redis: `j` (join) or `l` (leave), then the member as JSON.
pub fn event_body(joined: bool, member: &Member) -> Vec<u8> {
    let mut body = vec![if joined { b'j' } else { b'l' }];
    // Serializing a plain struct into a Vec cannot fail.
    body.extend(serde_json::to_vec(member).unwrap_or_default());
    body
}

/// One presence event heard on a topic's channel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeardEvent {
    pub epoch: String,
    /// The topic's number when the event was placed: it comes after that message.
    pub after: u64,
    /// The event's count on the topic (1, 2, …): events up to a joiner's count are older
    /// than its start.
    pub number: u64,
    pub joined: bool,
    pub member: Member,
}

/// Whether a payload heard on a topic's channel is a presence event, not a message.
pub fn is_event(payload: &[u8]) -> bool {
    payload.starts_with(EVENT_MARK)
}

/// Parse an event payload (`!event epoch after number\n` + [`event_body`]). `None` for
/// anything malformed; the member is checked (JSON, known fields) and re-encoded before it
/// reaches a client.
pub fn parse_event(payload: &[u8]) -> Option<HeardEvent> {
    let rest = payload.strip_prefix(EVENT_MARK)?;
    let newline = rest.iter().position(|&b| b == b'\n')?;
    let (head, body) = (&rest[..newline], &rest[newline + 1..]);
    let mut parts = std::str::from_utf8(head).ok()?.split(' ');
    let epoch = parts.next().filter(|e| !e.is_empty())?.to_owned();
    let after: u64 = parts.next()?.parse().ok()?;
    let number: u64 = parts.next()?.parse().ok()?;
    if parts.next().is_some() || number == 0 {
        return None;
    }
    let (&kind, member) = body.split_first()?;
    let joined = match kind {
        b'j' => true,
        b'l' => false,
        _ => return None,
    };
    let member: Member = serde_json::from_slice(member).ok()?;
    if member.sub.is_some() == member.conn.is_some() {
        return None;
    }
    Some(HeardEvent {
        epoch,
        after,
        number,
        joined,
        member,
    })
}

/// Stream entries from XRANGE / XREVRANGE as `(seq, frame)`, in the order given. An entry
/// that is not ours (bad id, no body, malformed body) makes the whole answer unusable:
/// recovery is all or nothing.
pub fn parse_entries(value: &Value) -> Option<Vec<(u64, Bytes)>> {
    let Value::Array(entries) = value else {
        return None;
    };
    entries
        .iter()
        .map(|entry| {
            let Value::Array(pair) = entry else {
                return None;
            };
            let [id, fields] = pair.as_slice() else {
                return None;
            };
            let seq = bulk(id)
                .and_then(|id| std::str::from_utf8(id).ok())
                .and_then(|id| id.strip_prefix("0-"))
                .and_then(|n| n.parse::<u64>().ok())?;
            let Value::Array(fields) = fields else {
                return None;
            };
            let [name, body] = fields.as_slice() else {
                return None;
            };
            if bulk(name)? != b"b" {
                return None;
            }
            Some((seq, frame_of(bulk(body)?)?))
        })
        .collect()
}

/// The `{epoch, seq, events}` answer of [`POSITION`].
pub fn parse_position(value: &Value) -> Option<(String, u64, u64)> {
    let Value::Array(triple) = value else {
        return None;
    };
    let [epoch, seq, events] = triple.as_slice() else {
        return None;
    };
    let epoch = String::from_utf8(bulk(epoch)?.to_vec()).ok()?;
    let number = |v: &Value| std::str::from_utf8(bulk(v)?).ok()?.parse().ok();
    Some((epoch, number(seq)?, number(events)?))
}

fn bulk(value: &Value) -> Option<&[u8]> {
    match value {
        Value::BulkString(b) => Some(b),
        Value::SimpleString(s) => Some(s.as_bytes()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b(s: &[u8]) -> Value {
        Value::BulkString(s.to_vec())
    }

    #[test]
    fn keys_are_hash_tagged_and_channels_map_back() {
        let k = Keys::of("prices/BTC");
        assert_eq!(k.seq, "herald:{prices/BTC}:seq");
        assert_eq!(k.channel, "herald:{prices/BTC}");
        assert_eq!(topic_of_channel(&k.channel).as_deref(), Some("prices/BTC"));
        assert_eq!(topic_of_channel("other:{x}"), None);
        assert_eq!(topic_of_channel("herald:{bad topic}"), None);
    }

    #[test]
    fn pattern_globs_cover_the_seq_keys_of_matching_topics() {
        let glob = |p: &str| seq_key_glob(&Pattern::parse(p).unwrap());
        assert_eq!(glob("prices/*"), "herald:{prices/*}:seq");
        assert_eq!(glob("a/**"), "herald:{a/*}:seq");
        assert_eq!(glob("*/x/*"), "herald:{*/x/*}:seq");
        let seq = Keys::of("prices/BTC").seq;
        assert_eq!(topic_of_seq_key(&seq).as_deref(), Some("prices/BTC"));
        assert_eq!(topic_of_seq_key("herald:{prices/BTC}:log"), None);
        assert_eq!(topic_of_seq_key("herald:{bad topic}:seq"), None);
    }

    #[test]
    fn bodies_round_trip_and_malformed_ones_are_refused() {
        let text = frame::encode(OpCode::Data(Data::Text), b"hi");
        assert_eq!(body_of(&text), b"thi");
        assert_eq!(frame_of(b"thi"), Some(text));
        let bin = frame::encode(OpCode::Data(Data::Binary), &[0, 255]);
        assert_eq!(frame_of(&body_of(&bin)), Some(bin));
        assert_eq!(frame_of(b"t\xff"), None, "text must be UTF-8");
        assert_eq!(frame_of(b"x"), None);
        assert_eq!(frame_of(b""), None);
    }

    #[test]
    fn heard_messages_parse_and_only_our_node_keeps_the_origin() {
        let origin = Origin { worker: 3, conn: 9 };
        let mut payload = format!("e1.2 42 {}\n", origin_arg(0xab, origin)).into_bytes();
        payload.extend_from_slice(b"thello");
        let heard = parse_heard(&payload, 0xab).unwrap();
        assert_eq!((heard.epoch.as_str(), heard.seq), ("e1.2", 42));
        assert_eq!(heard.origin, Some(origin));
        assert_eq!(frame::payload_of(&heard.frame).1, b"hello");
        assert_eq!(parse_heard(&payload, 0xac).unwrap().origin, None);
        for bad in [
            &b"e 1 ab 0 0"[..],
            b"e x ab 0 0\nthi",
            b"e 0 ab 0 0\nthi",
            b"e 1 ab 0\nthi",
            b" 1 ab 0 0\nthi",
            b"e 1 ab 0 0\nq",
        ] {
            assert_eq!(parse_heard(bad, 0xab), None, "{bad:?}");
        }
    }

    #[test]
    fn stream_entries_parse_all_or_nothing() {
        let entry = |id: &[u8], body: &[u8]| {
            Value::Array(vec![b(id), Value::Array(vec![b(b"b"), b(body)])])
        };
        let good = Value::Array(vec![entry(b"0-5", b"ta"), entry(b"0-6", b"tb")]);
        let parsed = parse_entries(&good).unwrap();
        assert_eq!(parsed.iter().map(|e| e.0).collect::<Vec<_>>(), vec![5, 6]);
        let bad = Value::Array(vec![entry(b"0-5", b"ta"), entry(b"12-1", b"tb")]);
        assert_eq!(parse_entries(&bad), None);
        assert_eq!(parse_entries(&Value::Nil), None);
        assert_eq!(
            parse_position(&Value::Array(vec![b(b"e"), b(b"7"), b(b"2")])),
            Some(("e".to_string(), 7, 2))
        );
        assert_eq!(parse_position(&Value::Array(vec![b(b"e"), b(b"7")])), None);
    }

    #[test]
    fn events_round_trip_and_are_never_taken_for_messages() {
        let member = Member::new(None, 0xab, 1, 7, 1000);
        let mut payload = b"!event e1.2 41 3\n".to_vec();
        payload.extend(event_body(true, &member));
        assert!(is_event(&payload));
        let event = parse_event(&payload).unwrap();
        assert_eq!(
            (event.epoch.as_str(), event.after, event.number),
            ("e1.2", 41, 3)
        );
        assert!(event.joined);
        assert_eq!(event.member, member);
        assert_eq!(parse_heard(&payload, 0xab), None, "not a message");
        let named = Member::new(Some("alice".into()), 1, 0, 0, 5);
        let mut leave = b"!event e 0 1\n".to_vec();
        leave.extend(event_body(false, &named));
        assert!(!parse_event(&leave).unwrap().joined);
        for bad in [
            &b"!event e 1 0\nj{\"sub\":\"a\",\"since_ms\":1}"[..],
            b"!event e x 1\nj{\"sub\":\"a\",\"since_ms\":1}",
            b"!event e 1 1\nq{\"sub\":\"a\",\"since_ms\":1}",
            b"!event e 1 1\nj{\"since_ms\":1}",
            b"!event e 1 1\nj{\"sub\":\"a\",\"conn\":\"b\",\"since_ms\":1}",
            b"!event e 1 1\nj{\"sub\":",
            b"!event e 1 1 9\nj{\"sub\":\"a\",\"since_ms\":1}",
            b"!event e 1 1",
        ] {
            assert_eq!(parse_event(bad), None, "{bad:?}");
        }
        let message = b"e1.2 42 000000ab 0 0\nthi";
        assert!(!is_event(message));
    }
}
