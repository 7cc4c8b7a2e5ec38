//! What a presence subscriber receives, read as one list of messages and `join` / `leave`
//! events, and the order checks the presence tests make on it. One node's test
//! (`tests/presence.rs`) and the cluster's (`tests/presence_cluster.rs`) check the same
//! ordering rule, so they read and check the list the same way, here.

use serde_json::Value;

use crate::v1::V1;

/// One item a subscriber saw: (kind, the `seq` of a message or the `after` of an event, the
/// message's data or the event member's `conn`).
pub type Seen = (String, u64, String);

/// What a `join` / `leave` event's member must carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Member {
    /// An anonymous member: a `conn` id is required (the test fails without one).
    Conn,
    /// Any member: the `conn` id when there is one, an empty string otherwise.
    AnyId,
}

/// One received `herald.v1` message as a [`Seen`] item; fails the test on anything but a
/// `message`, `join` or `leave`, or on a member without the id `member` asks for.
pub fn seen_item(v: &Value, member: Member) -> Seen {
    match v["type"].as_str().unwrap() {
        "message" => (
            "message".into(),
            v["seq"].as_u64().unwrap(),
            v["data"].as_str().unwrap().into(),
        ),
        kind @ ("join" | "leave") => {
            let conn = v["member"]["conn"].as_str();
            let conn = match member {
                Member::Conn => conn.unwrap(),
                Member::AnyId => conn.unwrap_or_default(),
            };
            (kind.into(), v["after"].as_u64().unwrap(), conn.into())
        }
        other => panic!("unexpected {other}: {v}"),
    }
}

/// How many of each kind [`read_in_order`] reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Expected {
    pub messages: u64,
    pub joins: u64,
    pub leaves: u64,
}

/// Reads from `client` until it has seen `expected`'s messages, joins and leaves, checking
/// on the way that the messages come in order with no gap after `last` (the seq the
/// subscriber starts from) and that every event comes right where its `after` says (after
/// the message it names); returns the list in the order received.
pub fn read_in_order(client: &mut V1, last: u64, expected: Expected, member: Member) -> Vec<Seen> {
    let mut list = Vec::new();
    let (mut messages, mut joins, mut leaves) = (0, 0, 0);
    let mut last = last;
    while messages < expected.messages || joins < expected.joins || leaves < expected.leaves {
        let item = seen_item(&client.recv(), member);
        match item.0.as_str() {
            "message" => {
                assert_eq!(item.1, last + 1, "messages in order, no gap");
                last = item.1;
                messages += 1;
            }
            "join" | "leave" => {
                assert_eq!(item.1, last, "event placed after message {last}: {item:?}");
                if item.0 == "join" {
                    joins += 1;
                } else {
                    leaves += 1;
                }
            }
            _ => unreachable!(),
        }
        list.push(item);
    }
    assert_eq!(
        (messages, joins, leaves),
        (expected.messages, expected.joins, expected.leaves)
    );
    list
}
