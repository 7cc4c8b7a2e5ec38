//! Presence on the wire, sans-IO: who subscribes to a topic. The `herald.v1` `presence`
//! reply, the `join` / `leave` events, and the body of `GET /topics/<topic>`
//! (`docs/protocol.md`, "Presence"). The server decides the figures; this module only
//! spells them.

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use tungstenite::protocol::frame::coding::{Data, OpCode};

use crate::frame;

/// Who a subscriber is, as presence shows it: its token's `sub` claim, or (anonymous) a
/// connection id unique in the cluster (`"<node>.<worker>.<connection>"`, the node being the
/// process's start id in hex), and when it connected.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    /// The JWT `sub` claim; absent for an anonymous connection.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sub: Option<String>,
    /// The anonymous connection's id; absent when `sub` is given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conn: Option<String>,
    /// When the connection was accepted, in milliseconds since the Unix epoch.
    pub since_ms: u64,
}

impl Member {
    /// A member known by its token's `sub`, or else by its connection.
    pub fn new(sub: Option<String>, node: u32, worker: u16, conn: u64, since_ms: u64) -> Self {
        match sub {
            Some(sub) => Member {
                sub: Some(sub),
                conn: None,
                since_ms,
            },
            None => Member {
                sub: None,
                conn: Some(format!("{node:08x}.{worker}.{conn}")),
                since_ms,
            },
        }
    }
}

/// A topic's subscribers as one answer: the exact count and, where the topic keeps member
/// lists, at most the cap's worth of members (`truncated` when some were left out).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Tally {
    pub count: u64,
    /// `None`: the topic keeps no member list (`--presence` does not match it).
    pub members: Option<Vec<Member>>,
    pub truncated: bool,
}

impl Tally {
    /// Add another worker's (or node's) share, keeping at most `cap` members.
    pub fn merge(&mut self, other: Tally, cap: usize) {
        self.count += other.count;
        self.truncated |= other.truncated;
        if let Some(theirs) = other.members {
            let mine = self.members.get_or_insert_with(Vec::new);
            for member in theirs {
                if mine.len() < cap {
                    mine.push(member);
                } else {
                    self.truncated = true;
                }
            }
        }
    }
}

#[derive(Serialize)]
#[serde(tag = "type", rename_all = "lowercase")]
enum Out<'a> {
    Presence {
        id: u64,
        topic: &'a str,
        count: u64,
        #[serde(skip_serializing_if = "Option::is_none")]
        members: Option<&'a [Member]>,
        #[serde(skip_serializing_if = "std::ops::Not::not")]
        truncated: bool,
    },
    Join {
        topic: &'a str,
        after: u64,
        member: &'a Member,
    },
    Leave {
        topic: &'a str,
        after: u64,
        member: &'a Member,
    },
}

fn text_frame(out: &Out) -> Bytes {
    // Serializing these plain structs into a Vec cannot fail.
    let json = serde_json::to_vec(out).unwrap_or_default();
    frame::encode(OpCode::Data(Data::Text), &json)
}

/// The `herald.v1` `presence` reply: `{"type":"presence","id","topic","count"}`, with
/// `members` where the topic keeps them and `"truncated":true` past the cap.
pub fn reply(id: u64, topic: &str, tally: &Tally) -> Bytes {
    text_frame(&Out::Presence {
        id,
        topic,
        count: tally.count,
        members: tally.members.as_deref(),
        truncated: tally.truncated,
    })
}

/// A `join` (`joined`) or `leave` event of `topic`, which happened after message `after`
/// (0: before any message) in the topic's order.
pub fn event(joined: bool, topic: &str, after: u64, member: &Member) -> Bytes {
    let out = if joined {
        Out::Join {
            topic,
            after,
            member,
        }
    } else {
        Out::Leave {
            topic,
            after,
            member,
        }
    };
    text_frame(&out)
}

/// `200 {"subscribers":N}` for `GET /topics/<topic>` (the connection closes after it).
pub fn count_response(count: u64) -> Vec<u8> {
    let body = format!("{{\"subscribers\":{count}}}\n");
    format!(
        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nCache-Control: no-store\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn json(frame: &[u8]) -> serde_json::Value {
        serde_json::from_slice(frame::payload_of(frame).1).unwrap()
    }

    fn member(i: u64) -> Member {
        Member::new(None, 10, 0, i, 1000 + i)
    }

    #[test]
    fn merging_keeps_the_count_exact_and_the_list_capped() {
        let mut all = Tally::default();
        for w in 0..3 {
            let share = Tally {
                count: 4,
                members: Some((0..4).map(|i| member(w * 10 + i)).collect()),
                truncated: false,
            };
            all.merge(share, 10);
        }
        assert_eq!(all.count, 12);
        assert_eq!(all.members.as_ref().unwrap().len(), 10);
        assert!(all.truncated);
        let mut small = Tally::default();
        small.merge(
            Tally {
                count: 2,
                members: Some(vec![member(1), member(2)]),
                truncated: false,
            },
            10,
        );
        assert!(!small.truncated);
        assert_eq!(small.members.unwrap().len(), 2);
    }

    #[test]
    fn replies_and_events_spell_members() {
        let tally = Tally {
            count: 2,
            members: Some(vec![
                Member::new(Some("alice".into()), 10, 1, 7, 5),
                member(3),
            ]),
            truncated: false,
        };
        let v = json(&reply(9, "room", &tally));
        assert_eq!(v["type"], "presence");
        assert_eq!(v["count"], 2);
        assert_eq!(v["members"][0]["sub"], "alice");
        assert!(v["members"][0].get("conn").is_none());
        assert_eq!(v["members"][1]["conn"], "0000000a.0.3");
        assert!(v.get("truncated").is_none());
        let counted = json(&reply(
            1,
            "t",
            &Tally {
                count: 5,
                members: None,
                truncated: false,
            },
        ));
        assert!(counted.get("members").is_none());
        let v = json(&event(false, "room", 42, &member(3)));
        assert_eq!(v["type"], "leave");
        assert_eq!(v["after"], 42);
        assert_eq!(v["member"]["since_ms"], 1003);
    }

    #[test]
    fn the_http_count_is_json() {
        let r = String::from_utf8(count_response(17)).unwrap();
        assert!(r.starts_with("HTTP/1.1 200 OK\r\n"));
        assert!(r.ends_with("\r\n\r\n{\"subscribers\":17}\n"));
    }
}
