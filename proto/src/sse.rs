//! Server-Sent Events (the `text/event-stream` format of the HTML standard, section 9.2),
//! sans-IO: the events Herald streams to SSE subscribers, and the `Last-Event-ID` an
//! `EventSource` comes back with after a reconnect.
//!
//! The format (docs/protocol.md, "Server-Sent Events"):
//! - a message of topic `T` numbered `S` in epoch `E` is one event:
//!   `id: E:S`, `event: T`, then the payload as `data:` lines, then a blank line. Text is sent
//!   as is, one `data:` line per line of the payload (CR, LF and CRLF all end a line, as the
//!   format requires, and all come back to the client as LF). Binary payloads are standard
//!   base64 on one `data:` line, and their event type says so: `T;base64` (`;` is not a topic
//!   character, so the two cannot be confused);
//! - a stream of several topics (`GET /sse?topic=a&topic=b`) gives every event an id that
//!   covers all of them: the positions of the topics, in the order of the request's `topic`
//!   parameters, joined by `,`, with `-` for a topic that has no position yet
//!   (`E1:7,-,E3:2`). An `EventSource` sends back the last id it saw, so the reconnect resumes
//!   every topic where that event left it;
//! - a start that cannot be served exactly (the history no longer reaches back, the topic's
//!   epoch changed) is an explicit `gap` event, whose id is the position the stream continues
//!   from;
//! - `retry:` once at the start; comment lines (`: heartbeat`) keep idle proxies from
//!   closing the stream.

use base64::Engine;
use bytes::{BufMut, Bytes, BytesMut};
use tungstenite::protocol::frame::coding::Data;

use crate::frame;

/// The event type of a stream-level notice that history could not be replayed exactly.
pub const GAP_EVENT: &str = "gap";

/// Appended to a topic's event type when the payload is binary, sent as base64.
pub const BASE64_SUFFIX: &str = ";base64";

/// A comment line and the blank line after it: ignored by clients, keeps proxies from
/// timing the stream out.
pub const HEARTBEAT: &[u8] = b": heartbeat\n\n";

/// The head of the `200` that opens a stream. No length and no chunking: the body is the
/// stream, and it ends when the connection does (RFC 9112 6.3). `X-Accel-Buffering: no` asks
/// nginx-style proxies not to buffer it.
pub fn stream_head(retry_ms: u64) -> Vec<u8> {
    format!(
        "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-store\r\nConnection: close\r\nX-Accel-Buffering: no\r\n\r\nretry: {retry_ms}\n\n"
    )
    .into_bytes()
}

/// Where one topic of a stream stands: the last message the client has, by epoch and number.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Position {
    pub epoch: String,
    pub seq: u64,
}

/// Why a `Last-Event-ID` is not one Herald issued for this stream (the request gets 400).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum LastEventIdError {
    #[error("Last-Event-ID must have one position per topic of the stream")]
    WrongCount,
    #[error("Last-Event-ID positions are `epoch:seq` or `-`")]
    Malformed,
}

/// Parse a `Last-Event-ID` for a stream of `topics` topics: one entry per topic, `None` where
/// the id carries no position for it (`-`). An empty value (what a client sends before it saw
/// any id) means no position at all.
pub fn parse_last_event_id(
    value: &str,
    topics: usize,
) -> Result<Vec<Option<Position>>, LastEventIdError> {
    let value = value.trim();
    if value.is_empty() {
        return Ok(vec![None; topics]);
    }
    let positions = value
        .split(',')
        .map(|part| match part.trim() {
            "-" => Ok(None),
            part => {
                let (epoch, seq) = part.rsplit_once(':').ok_or(LastEventIdError::Malformed)?;
                let valid_epoch = !epoch.is_empty()
                    && epoch.len() <= 64
                    && epoch.bytes().all(|b| b.is_ascii_graphic() && b != b',');
                let seq = seq.parse().map_err(|_| LastEventIdError::Malformed)?;
                if !valid_epoch {
                    return Err(LastEventIdError::Malformed);
                }
                Ok(Some(Position {
                    epoch: epoch.to_owned(),
                    seq,
                }))
            }
        })
        .collect::<Result<Vec<_>, _>>()?;
    if positions.len() != topics {
        return Err(LastEventIdError::WrongCount);
    }
    Ok(positions)
}

/// Append one position to an id being built (`E:S`, or `-` for none).
pub fn put_position(out: &mut BytesMut, position: Option<(&str, u64)>) {
    match position {
        Some((epoch, seq)) => {
            out.put_slice(epoch.as_bytes());
            out.put_u8(b':');
            out.put_slice(seq.to_string().as_bytes());
        }
        None => out.put_u8(b'-'),
    }
}

/// The `id:` line of an event of a single-topic stream.
pub fn id_line(epoch: &str, seq: u64) -> Bytes {
    multi_id_line(&[Some((epoch, seq))])
}

/// The `id:` line of an event of a several-topic stream: every topic's position.
pub fn multi_id_line(positions: &[Option<(&str, u64)>]) -> Bytes {
    let mut out = BytesMut::with_capacity(8 + positions.len() * 24);
    out.put_slice(b"id: ");
    for (i, position) in positions.iter().enumerate() {
        if i > 0 {
            out.put_u8(b',');
        }
        put_position(&mut out, *position);
    }
    out.put_u8(b'\n');
    out.freeze()
}

/// Everything of a message's event but its id: `event:`, the `data:` lines and the blank line
/// that dispatches it. Built from the message's raw server frame once per message per worker
/// and shared by every SSE subscriber there (the id line in front of it is per topic, or, for
/// a stream of several topics, per connection).
pub fn event_body(topic: &str, raw_frame: &[u8]) -> Bytes {
    let (data, payload) = frame::payload_of(raw_frame);
    let mut out = BytesMut::with_capacity(payload.len() * 4 / 3 + topic.len() + 32);
    out.put_slice(b"event: ");
    out.put_slice(topic.as_bytes());
    match data {
        Data::Text => {
            out.put_u8(b'\n');
            put_data_lines(&mut out, payload);
        }
        _ => {
            out.put_slice(BASE64_SUFFIX.as_bytes());
            out.put_slice(b"\ndata: ");
            let b64 = base64::engine::general_purpose::STANDARD.encode(payload);
            out.put_slice(b64.as_bytes());
            out.put_u8(b'\n');
        }
    }
    out.put_u8(b'\n');
    out.freeze()
}

/// One `data:` line per line of `text`. CR, LF and CRLF each end a line (a lone CR would
/// otherwise end the field early on the client); an empty payload is one empty `data:` line,
/// which a client receives as an empty message.
fn put_data_lines(out: &mut BytesMut, text: &[u8]) {
    let mut rest = text;
    loop {
        let end = rest.iter().position(|&b| b == b'\n' || b == b'\r');
        out.put_slice(b"data: ");
        match end {
            None => {
                out.put_slice(rest);
                out.put_u8(b'\n');
                return;
            }
            Some(i) => {
                out.put_slice(&rest[..i]);
                out.put_u8(b'\n');
                let skip = if rest[i] == b'\r' && rest.get(i + 1) == Some(&b'\n') {
                    2
                } else {
                    1
                };
                rest = &rest[i + skip..];
            }
        }
    }
}

/// A message's whole event for a single-topic stream: id line, then the body.
pub fn event(topic: &str, epoch: &str, seq: u64, raw_frame: &[u8]) -> Bytes {
    let mut out = BytesMut::new();
    out.put_slice(&id_line(epoch, seq));
    out.put_slice(&event_body(topic, raw_frame));
    out.freeze()
}

/// The `gap` event: `topic` could not be resumed from the client's position (`code` is the
/// `herald.v1` error code, `detail` its message). `id` is the line that carries the position
/// the stream continues from, so a later reconnect does not ask for the gap again.
pub fn gap_event(id: &[u8], topic: &str, code: &str, detail: &str) -> Bytes {
    let json = serde_json::json!({"topic": topic, "reason": code, "detail": detail});
    let mut out = BytesMut::new();
    out.put_slice(id);
    out.put_slice(b"event: ");
    out.put_slice(GAP_EVENT.as_bytes());
    out.put_slice(b"\ndata: ");
    out.put_slice(json.to_string().as_bytes());
    out.put_slice(b"\n\n");
    out.freeze()
}

/// A comment (`: text`): a notice for people reading the stream with `curl`, ignored by
/// `EventSource`. Newlines in `text` are replaced so it stays one line.
pub fn comment(text: &str) -> Bytes {
    let text = text.replace(['\n', '\r'], " ");
    Bytes::from(format!(": {text}\n\n"))
}

#[cfg(test)]
mod tests {
    use tungstenite::protocol::frame::coding::OpCode;

    use super::*;

    fn text(s: &str) -> Bytes {
        frame::encode(OpCode::Data(Data::Text), s.as_bytes())
    }

    #[test]
    fn text_is_split_into_data_lines() {
        let body = event_body("chat", &text("one\ntwo\r\nthree\rfour"));
        assert_eq!(
            &body[..],
            b"event: chat\ndata: one\ndata: two\ndata: three\ndata: four\n\n"
        );
        assert_eq!(
            &event_body("a", &text(""))[..],
            b"event: a\ndata: \n\n",
            "an empty message is one empty data line"
        );
        assert_eq!(
            &event_body("a", &text("end\n"))[..],
            b"event: a\ndata: end\ndata: \n\n",
            "a trailing newline survives as an empty last line"
        );
    }

    #[test]
    fn binary_is_base64_with_its_event_type_saying_so() {
        let raw = frame::encode(OpCode::Data(Data::Binary), &[0, 1, 2, 255]);
        assert_eq!(
            &event_body("t/x", &raw)[..],
            b"event: t/x;base64\ndata: AAEC/w==\n\n"
        );
    }

    #[test]
    fn a_whole_event_has_the_id_first() {
        assert_eq!(
            &event("chat", "0000002a.0.1", 7, &text("hi"))[..],
            b"id: 0000002a.0.1:7\nevent: chat\ndata: hi\n\n"
        );
        assert_eq!(
            &multi_id_line(&[Some(("e1", 3)), None, Some(("e2", 9))])[..],
            b"id: e1:3,-,e2:9\n"
        );
    }

    #[test]
    fn last_event_ids_round_trip() {
        let pos = |e: &str, s| {
            Some(Position {
                epoch: e.into(),
                seq: s,
            })
        };
        assert_eq!(parse_last_event_id("e1:3", 1), Ok(vec![pos("e1", 3)]));
        assert_eq!(
            parse_last_event_id(" e1:3,-,a.b.c:0 ", 3),
            Ok(vec![pos("e1", 3), None, pos("a.b.c", 0)])
        );
        assert_eq!(parse_last_event_id("", 2), Ok(vec![None, None]));
        assert_eq!(
            parse_last_event_id("e1:3", 2),
            Err(LastEventIdError::WrongCount)
        );
        for bad in ["e1", "e1:x", ":3", "e1:-1", "e 1:3", "e1:3,,"] {
            assert!(parse_last_event_id(bad, 1).is_err(), "{bad}");
        }
        // What the server sends comes back as the same positions.
        let line = multi_id_line(&[Some(("e1", 3)), None]);
        let id = std::str::from_utf8(&line[4..line.len() - 1]).unwrap();
        assert_eq!(parse_last_event_id(id, 2), Ok(vec![pos("e1", 3), None]));
    }

    #[test]
    fn gap_and_notices() {
        let gap = gap_event(&id_line("e2", 5), "chat", "history_gap", "gone");
        assert_eq!(
            std::str::from_utf8(&gap).unwrap(),
            "id: e2:5\nevent: gap\ndata: {\"detail\":\"gone\",\"reason\":\"history_gap\",\"topic\":\"chat\"}\n\n"
        );
        assert_eq!(&comment("a\nb")[..], b": a b\n\n");
        let head = String::from_utf8(stream_head(1500)).unwrap();
        assert!(head.starts_with("HTTP/1.1 200 OK\r\n"));
        assert!(head.contains("Content-Type: text/event-stream\r\n"));
        assert!(head.ends_with("\r\n\r\nretry: 1500\n\n"));
    }
}
