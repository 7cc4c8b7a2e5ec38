//! `--v1`: subscribers speak Herald's `herald.v1` subprotocol (docs/protocol.md) instead of raw
//! path mode.
//!
//! A v1 subscriber upgrades on `/` offering `Sec-WebSocket-Protocol: herald.v1`, sends
//! `{"op":"subscribe","id":1,"topics":["<topic>"]}` (the topic is its URL's path) and counts as
//! connected only once `{"type":"subscribed",…}` is back. Every message then arrives as an
//! envelope, `{"type":"message","topic":…,"seq":…,"data_b64":"…"}` for the loadtest's binary
//! payloads (`"data":"…"` for text). [`parse`] takes the payload back out of the envelope, in
//! place, so latency and loss are accounted exactly as in raw mode. Publishers stay in raw path
//! mode: a raw publish reaches v1 subscribers of the same topic.
//!
//! The scanner reads one flat JSON object (string, number and literal values): the shape of
//! every server reply. It is not a general JSON parser; a nested value is refused.

use std::ops::Range;

/// The subprotocol name offered in the upgrade request.
pub const PROTOCOL: &str = "herald.v1";

/// Longest topic name Herald accepts, in bytes.
const MAX_TOPIC_LEN: usize = 256;

/// The topic a v1 subscriber of URL path `path` asks for: the path without its leading `/`
/// and without the query, as raw path mode names it.
pub fn topic_of(path: &str) -> &str {
    let path = path.split_once('?').map_or(path, |(p, _)| p);
    path.strip_prefix('/').unwrap_or(path)
}

/// Checks that `path` names a topic Herald accepts (1 to 256 bytes of `A-Za-z0-9-._~:/`).
/// Such a name needs no escaping inside a JSON string.
pub fn check_topic(path: &str) -> Result<(), String> {
    let t = topic_of(path);
    let allowed =
        |b: u8| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~' | b':' | b'/');
    if t.is_empty() || t.len() > MAX_TOPIC_LEN || !t.bytes().all(allowed) {
        return Err(format!(
            "{path:?} is not a herald.v1 topic (1 to {MAX_TOPIC_LEN} bytes of letters, digits \
             and -._~:/ after the leading /)"
        ));
    }
    Ok(())
}

/// Adds `Sec-WebSocket-Protocol: herald.v1` to an upgrade request built by
/// [`super::handshake::request`].
pub fn offer(mut request: Vec<u8>) -> Vec<u8> {
    debug_assert!(request.ends_with(b"\r\n\r\n"));
    request.truncate(request.len().saturating_sub(2));
    request.extend_from_slice(format!("Sec-WebSocket-Protocol: {PROTOCOL}\r\n\r\n").as_bytes());
    request
}

/// Whether the complete upgrade response in `response` selected `herald.v1`.
pub fn accepted(response: &[u8]) -> bool {
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut resp = httparse::Response::new(&mut headers);
    if !matches!(resp.parse(response), Ok(httparse::Status::Complete(_))) {
        return false;
    }
    resp.headers.iter().any(|h| {
        h.name.eq_ignore_ascii_case("sec-websocket-protocol")
            && std::str::from_utf8(h.value).is_ok_and(|v| v.trim() == PROTOCOL)
    })
}

/// The subscribe request for `topic` (already checked by [`check_topic`]).
pub fn subscribe_request(topic: &str) -> Vec<u8> {
    format!(r#"{{"op":"subscribe","id":1,"topics":["{topic}"]}}"#).into_bytes()
}

/// A server message, as far as the loadtest cares.
#[derive(Debug, PartialEq, Eq)]
pub enum Reply {
    /// An envelope of the subscribed topic; the range is the payload, decoded in place.
    Message(Range<usize>),
    /// The subscription is live.
    Subscribed,
    /// A refusal, with its `code` (letters and `_` only).
    Error(String),
    /// Any other reply (`published`, `unsubscribed`, …).
    Other,
}

/// One top-level value: a string's contents (still escaped) and whether it has escapes, or a
/// number or literal.
#[derive(Clone, Copy)]
enum Val {
    Str(usize, usize, bool),
    Scalar,
}

fn skip_ws(m: &[u8], mut i: usize) -> usize {
    while i < m.len() && matches!(m[i], b' ' | b'\t' | b'\n' | b'\r') {
        i += 1;
    }
    i
}

/// The string starting at the quote at `i`: contents range, whether it has escapes, and the
/// index after the closing quote.
fn string_at(m: &[u8], i: usize) -> Option<(usize, usize, bool, usize)> {
    if m.get(i) != Some(&b'"') {
        return None;
    }
    let start = i + 1;
    let mut j = start;
    let mut escaped = false;
    // Bounded: j grows every iteration.
    while j < m.len() {
        match m[j] {
            b'\\' => {
                escaped = true;
                j += 2;
            }
            b'"' => return Some((start, j, escaped, j + 1)),
            _ => j += 1,
        }
    }
    None
}

/// Calls `f` with each key (raw bytes) and value of the flat object `m`.
fn fields(m: &[u8], mut f: impl FnMut(&[u8], Val)) -> Option<()> {
    let mut i = skip_ws(m, 0);
    if m.get(i) != Some(&b'{') {
        return None;
    }
    i = skip_ws(m, i + 1);
    if m.get(i) == Some(&b'}') {
        return (skip_ws(m, i + 1) == m.len()).then_some(());
    }
    // Bounded: every iteration consumes one key and one value.
    loop {
        let (ks, ke, _, next) = string_at(m, i)?;
        i = skip_ws(m, next);
        if m.get(i) != Some(&b':') {
            return None;
        }
        i = skip_ws(m, i + 1);
        let val = match m.get(i)? {
            b'"' => {
                let (s, e, esc, next) = string_at(m, i)?;
                i = next;
                Val::Str(s, e, esc)
            }
            b'{' | b'[' => return None,
            _ => {
                let s = i;
                while i < m.len() && !matches!(m[i], b',' | b'}' | b' ' | b'\t' | b'\n' | b'\r') {
                    i += 1;
                }
                if i == s {
                    return None;
                }
                Val::Scalar
            }
        };
        f(&m[ks..ke], val);
        i = skip_ws(m, i);
        match m.get(i)? {
            b',' => i = skip_ws(m, i + 1),
            b'}' => return (skip_ws(m, i + 1) == m.len()).then_some(()),
            _ => return None,
        }
    }
}

/// Unescapes the JSON string contents `m[s..e]` in place (the result is never longer);
/// returns the new end.
fn unescape_in_place(m: &mut [u8], s: usize, e: usize) -> Option<usize> {
    let mut quoted = Vec::with_capacity(e - s + 2);
    quoted.push(b'"');
    quoted.extend_from_slice(&m[s..e]);
    quoted.push(b'"');
    let text: String = serde_json::from_slice(&quoted).ok()?;
    m[s..s + text.len()].copy_from_slice(text.as_bytes());
    Some(s + text.len())
}

fn b64_value(b: u8) -> Option<u32> {
    Some(match b {
        b'A'..=b'Z' => b - b'A',
        b'a'..=b'z' => b - b'a' + 26,
        b'0'..=b'9' => b - b'0' + 52,
        b'+' => 62,
        b'/' => 63,
        _ => return None,
    } as u32)
}

/// Decodes standard padded base64 in place; returns the decoded length. Safe in place because
/// the output of each 4-character group lands before the group's own position.
pub fn b64_decode_in_place(buf: &mut [u8]) -> Option<usize> {
    if !buf.len().is_multiple_of(4) {
        return None;
    }
    let mut out = 0;
    let n = buf.len();
    for i in (0..n).step_by(4) {
        let group = [buf[i], buf[i + 1], buf[i + 2], buf[i + 3]];
        let pad = if i + 4 == n {
            group.iter().rev().take_while(|&&b| b == b'=').count()
        } else {
            0
        };
        if pad > 2 {
            return None;
        }
        let mut v = 0u32;
        for (j, &b) in group.iter().enumerate() {
            let d = if j >= 4 - pad { 0 } else { b64_value(b)? };
            v = (v << 6) | d;
        }
        let bytes = [(v >> 16) as u8, (v >> 8) as u8, v as u8];
        buf[out..out + 3 - pad].copy_from_slice(&bytes[..3 - pad]);
        out += 3 - pad;
    }
    Some(out)
}

/// Reads one server message `m` of a connection subscribed to `topic`. For an envelope the
/// payload is decoded in place and its range returned. `Err` is an error kind for the report.
pub fn parse(m: &mut [u8], topic: &str) -> Result<Reply, &'static str> {
    let (mut kind, mut topic_v, mut data, mut data_b64, mut code) = (None, None, None, None, None);
    fields(m, |k, v| match k {
        b"type" => kind = Some(v),
        b"topic" => topic_v = Some(v),
        b"data" => data = Some(v),
        b"data_b64" => data_b64 = Some(v),
        b"code" => code = Some(v),
        _ => {}
    })
    .ok_or("v1_bad_json")?;
    let raw = |v: Option<Val>| match v {
        Some(Val::Str(s, e, false)) => Some(s..e),
        _ => None,
    };
    let kind = raw(kind).ok_or("v1_bad_json")?;
    let own_topic = || raw(topic_v).is_some_and(|r| &m[r] == topic.as_bytes());
    match &m[kind] {
        b"message" => {
            if !own_topic() {
                return Err("wrong_topic");
            }
            match (data, data_b64) {
                (Some(Val::Str(s, e, esc)), None) => {
                    let e = if esc {
                        unescape_in_place(m, s, e).ok_or("v1_bad_json")?
                    } else {
                        e
                    };
                    Ok(Reply::Message(s..e))
                }
                (None, Some(Val::Str(s, e, esc))) => {
                    let e = if esc {
                        unescape_in_place(m, s, e).ok_or("v1_bad_json")?
                    } else {
                        e
                    };
                    let n = b64_decode_in_place(&mut m[s..e]).ok_or("v1_bad_base64")?;
                    Ok(Reply::Message(s..s + n))
                }
                _ => Err("v1_bad_envelope"),
            }
        }
        b"subscribed" if own_topic() => Ok(Reply::Subscribed),
        b"error" => {
            let code = raw(code)
                .map(|r| &m[r])
                .filter(|c| !c.is_empty() && c.iter().all(|&b| b.is_ascii_lowercase() || b == b'_'))
                .map_or("unknown", |c| std::str::from_utf8(c).unwrap_or("unknown"));
            Ok(Reply::Error(code.to_string()))
        }
        _ => Ok(Reply::Other),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn payload_of(msg: &str, topic: &str) -> Result<Vec<u8>, &'static str> {
        let mut m = msg.as_bytes().to_vec();
        match parse(&mut m, topic)? {
            Reply::Message(r) => Ok(m[r].to_vec()),
            other => panic!("not a message: {other:?}"),
        }
    }

    #[test]
    fn topics_come_from_the_path() {
        assert_eq!(topic_of("/bench"), "bench");
        assert_eq!(topic_of("/prices/BTC?x=1"), "prices/BTC");
        assert!(check_topic("/a.b_c~d:e/f-1").is_ok());
        assert!(check_topic("/").is_err());
        assert!(check_topic("/caf%C3%A9").is_err());
        assert!(check_topic(&format!("/{}", "a".repeat(257))).is_err());
    }

    #[test]
    fn handshake_offers_and_checks_the_protocol() {
        let req = offer(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n".to_vec());
        assert_eq!(
            req,
            b"GET / HTTP/1.1\r\nHost: x\r\nSec-WebSocket-Protocol: herald.v1\r\n\r\n"
        );
        let ok = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\
                   Sec-WebSocket-Protocol: herald.v1\r\n\r\n";
        assert!(accepted(ok));
        assert!(!accepted(
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n"
        ));
        assert_eq!(
            subscribe_request("a/b"),
            br#"{"op":"subscribe","id":1,"topics":["a/b"]}"#
        );
    }

    #[test]
    fn envelopes_give_the_payload_back() {
        // Exactly what herald writes (src/v1.rs `envelope`): "AAH/" is 00 01 ff.
        let b64 = r#"{"type":"message","topic":"t","seq":7,"data_b64":"AAH/"}"#;
        assert_eq!(payload_of(b64, "t"), Ok(vec![0, 1, 0xff]));
        let padded = r#"{"type":"message","topic":"t","seq":8,"data_b64":"AAE="}"#;
        assert_eq!(payload_of(padded, "t"), Ok(vec![0, 1]));
        let padded2 = r#"{"type":"message","topic":"t","seq":9,"data_b64":"AA=="}"#;
        assert_eq!(payload_of(padded2, "t"), Ok(vec![0]));
        let text = r#"{"type":"message","topic":"t","seq":1,"data":"hi"}"#;
        assert_eq!(payload_of(text, "t"), Ok(b"hi".to_vec()));
        let escaped =
            r#"{"type":"message","topic":"t","seq":2,"data":"a\"b\\c\n\u00e9\ud83d\ude00"}"#;
        assert_eq!(
            payload_of(escaped, "t"),
            Ok("a\"b\\c\né😀".as_bytes().to_vec())
        );
        // Field order and whitespace do not matter.
        let loose = r#" { "data_b64" : "AAH/" , "seq" : 3, "topic":"t", "type":"message" } "#;
        assert_eq!(payload_of(loose, "t"), Ok(vec![0, 1, 0xff]));
    }

    #[test]
    fn a_64_byte_payload_round_trips() {
        let mut p = vec![0u8; 64];
        crate::client::payload::encode(&mut p, 12345, 987_654_321, false);
        // A reference encoder, independent of the decoder under test.
        let abc = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
        let mut b64 = String::new();
        for c in p.chunks(3) {
            let v = (c[0] as u32) << 16
                | (*c.get(1).unwrap_or(&0) as u32) << 8
                | *c.get(2).unwrap_or(&0) as u32;
            for j in 0..4 {
                if j <= c.len() {
                    b64.push(abc[(v >> (18 - 6 * j) & 63) as usize] as char);
                } else {
                    b64.push('=');
                }
            }
        }
        let msg = format!(r#"{{"type":"message","topic":"bench","seq":1,"data_b64":"{b64}"}}"#);
        let got = payload_of(&msg, "bench").expect("payload");
        assert_eq!(
            crate::client::payload::decode(&got, 64, false),
            Ok((12345, 987_654_321))
        );
    }

    #[test]
    fn replies_and_bad_input() {
        let mut sub =
            br#"{"type":"subscribed","id":1,"topic":"t","epoch":"e.0.1","seq":0,"replayed":0}"#
                .to_vec();
        assert_eq!(parse(&mut sub, "t"), Ok(Reply::Subscribed));
        let mut err =
            br#"{"type":"error","id":1,"topic":"t","code":"bad_topic","reason":"x"}"#.to_vec();
        assert_eq!(parse(&mut err, "t"), Ok(Reply::Error("bad_topic".into())));
        let mut other = br#"{"type":"published","id":3,"seq":null}"#.to_vec();
        assert_eq!(parse(&mut other, "t"), Ok(Reply::Other));
        let wrong = r#"{"type":"message","topic":"u","seq":1,"data":"x"}"#;
        assert_eq!(payload_of(wrong, "t"), Err("wrong_topic"));
        let bad = r#"{"type":"message","topic":"t","seq":1,"data_b64":"AA*/"}"#;
        assert_eq!(payload_of(bad, "t"), Err("v1_bad_base64"));
        let short = r#"{"type":"message","topic":"t","seq":1,"data_b64":"AAH"}"#;
        assert_eq!(payload_of(short, "t"), Err("v1_bad_base64"));
        let both = r#"{"type":"message","topic":"t","seq":1,"data":"a","data_b64":"AAH/"}"#;
        assert_eq!(payload_of(both, "t"), Err("v1_bad_envelope"));
        for junk in [
            "",
            "{",
            "[1]",
            r#"{"type":"message""#,
            r#"{"type":"message","topic":"t","x":{}}"#,
            r#"{"type":"message"} x"#,
            "\u{1}\u{2}",
        ] {
            let mut m = junk.as_bytes().to_vec();
            assert_eq!(parse(&mut m, "t"), Err("v1_bad_json"), "{junk:?}");
        }
    }
}
