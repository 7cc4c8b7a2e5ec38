//! Property tests for the parsers that read untrusted bytes: the HTTP upgrade head
//! (`http::parse_head`), `herald.v1` requests (`v1::decode`), the WebSocket frame path
//! (`frame::decode` / `decode_with` with the permessage-deflate inflater) and the
//! `Sec-WebSocket-Extensions` negotiation (`deflate::negotiate`).
//!
//! Each property runs a fixed number of cases from a fixed seed, with no failure
//! persistence, so CI runs exactly the same inputs every time (about 2 s in release mode, 25 s
//! in a debug build, on 2 cores). To search harder locally, change the count or the seed:
//!
//! ```sh
//! PROPTEST_CASES=100000 cargo test --release --test proptest_parsers
//! PROPTEST_RNG_SEED=12345 cargo test --release --test proptest_parsers
//! ```
//!
//! `PROPTEST_CASES` replaces every property's case count; `PROPTEST_RNG_SEED` the seed. A
//! failure prints the shrunk input; paste it into a unit test of the module concerned.

use std::collections::HashSet;

use base64::Engine as _;
use bytes::Bytes;
use proptest::prelude::*;
use proptest::sample::Index;
use proptest::test_runner::{RngAlgorithm, RngSeed};
use tungstenite::handshake::derive_accept_key;
use tungstenite::protocol::frame::coding::{Control, Data, OpCode};

use herald::proto::deflate::{self, Codec};
use herald::proto::frame::{self, Assembly, Event, FrameError};
use herald::proto::http::{self, HttpError, Mode, Request as HttpRequest, MAX_HEAD};
use herald::proto::topic::{self, Start};
use herald::proto::v1::{self, Refusal, Request, Wanted};

/// The seed every property starts from unless `PROPTEST_RNG_SEED` says otherwise.
const SEED: u64 = 0x6865_7261_6c64; // "herald"

/// A deterministic configuration: `cases` cases (or `PROPTEST_CASES`), a fixed seed, no
/// files written.
fn config(cases: u32) -> ProptestConfig {
    let env = |name: &str| std::env::var(name).ok().and_then(|v| v.parse::<u64>().ok());
    ProptestConfig {
        cases: env("PROPTEST_CASES").map_or(cases, |n| n.min(u32::MAX.into()) as u32),
        failure_persistence: None,
        rng_algorithm: RngAlgorithm::ChaCha,
        rng_seed: RngSeed::Fixed(env("PROPTEST_RNG_SEED").unwrap_or(SEED)),
        ..ProptestConfig::default()
    }
}

// ---------------------------------------------------------------------------------------------
// Shared strategies
// ---------------------------------------------------------------------------------------------

/// A valid topic: short mostly, sometimes near or at the 256-byte limit.
fn topic() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => "[A-Za-z0-9._~:/-]{1,16}",
        1 => "[A-Za-z0-9._~:/-]{250,256}",
    ]
}

/// An invalid topic: empty, too long, or with a character outside the alphabet.
fn bad_topic() -> impl Strategy<Value = String> {
    prop_oneof![
        Just(String::new()),
        "[a-z]{257,300}",
        "[a-z]{0,5}[ #?%&+=é\"\\\\\u{0}\u{7f}€]{1,3}[a-z]{0,5}",
    ]
}

/// Splits `len` at the given indices: sorted, distinct cut points strictly inside.
fn cut_points(len: usize, cuts: &[Index]) -> Vec<usize> {
    if len < 2 {
        return Vec::new();
    }
    let mut points: Vec<usize> = cuts.iter().map(|i| 1 + i.index(len - 1)).collect();
    points.sort_unstable();
    points.dedup();
    points
}

// ---------------------------------------------------------------------------------------------
// HTTP: parse_head
// ---------------------------------------------------------------------------------------------

/// A valid upgrade request and what it must parse to.
#[derive(Debug, Clone)]
struct Upgrade {
    bytes: Vec<u8>,
    topic: String,
    key: String,
    v1: bool,
}

/// `s` with the letters whose bit is set in `bits` upper-cased (others lower-cased).
fn mangle_case(s: &str, bits: u64) -> String {
    s.chars()
        .enumerate()
        .map(|(i, c)| {
            if bits >> (i % 64) & 1 == 1 {
                c.to_ascii_uppercase()
            } else {
                c.to_ascii_lowercase()
            }
        })
        .collect()
}

/// Valid upgrade requests: random topics, keys, query strings, header order and case,
/// spacing, optional subprotocol and extension offers, extra headers.
fn upgrade() -> impl Strategy<Value = Upgrade> {
    (
        topic(),
        any::<[u8; 16]>(),
        proptest::option::of("[A-Za-z0-9=&._-]{0,20}"),
        any::<bool>(),
        prop::sample::select(vec!["Upgrade", "keep-alive, Upgrade", "upgrade,keep-alive"]),
        prop::collection::vec(("X-[A-Za-z0-9-]{1,20}", "[ -~]{0,40}"), 0..6),
        proptest::option::of("[ -~]{0,60}"),
        any::<u64>(),
        any::<bool>(),
    )
        .prop_flat_map(
            |(topic, nonce, query, v1, connection, extra, extensions, case_bits, tight)| {
                let key = base64::engine::general_purpose::STANDARD.encode(nonce);
                let mut headers: Vec<(String, String)> = vec![
                    ("Host".into(), "127.0.0.1:9000".into()),
                    ("Upgrade".into(), mangle_case("websocket", case_bits)),
                    ("Connection".into(), connection.to_string()),
                    ("Sec-WebSocket-Key".into(), key.clone()),
                    ("Sec-WebSocket-Version".into(), "13".into()),
                ];
                if v1 {
                    headers.push(("Sec-WebSocket-Protocol".into(), "chat, herald.v1".into()));
                }
                if let Some(ext) = extensions {
                    headers.push(("Sec-WebSocket-Extensions".into(), ext));
                }
                headers.extend(extra);
                let headers: Vec<(String, String)> = headers
                    .into_iter()
                    .enumerate()
                    .map(|(i, (n, v))| (mangle_case(&n, case_bits.rotate_left(i as u32 * 7)), v))
                    .collect();
                (
                    Just(topic),
                    Just(key),
                    Just(query),
                    Just(v1),
                    Just(headers).prop_shuffle(),
                    Just(tight),
                )
            },
        )
        .prop_map(|(topic, key, query, v1, headers, tight)| {
            let mut text = format!("GET /{topic}");
            if let Some(q) = query {
                text.push('?');
                text.push_str(&q);
            }
            text.push_str(" HTTP/1.1\r\n");
            for (name, value) in headers {
                let sep = if tight { ":" } else { ": " };
                text.push_str(&format!("{name}{sep}{}\r\n", value.trim()));
            }
            text.push_str("\r\n");
            Upgrade {
                bytes: text.into_bytes(),
                topic,
                key,
                v1,
            }
        })
}

/// One edit of a byte string.
#[derive(Debug, Clone)]
enum Mutation {
    Flip(Index, u8),
    Insert(Index, Vec<u8>),
    Delete(Index, usize),
    Truncate(Index),
    Duplicate(Index, usize),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (any::<Index>(), any::<u8>()).prop_map(|(i, b)| Mutation::Flip(i, b)),
        (
            any::<Index>(),
            prop_oneof![
                prop::collection::vec(any::<u8>(), 1..8),
                prop::sample::select(vec![
                    b"\r\n".to_vec(),
                    b"\r\n\r\n".to_vec(),
                    b":".to_vec(),
                    b" ".to_vec(),
                    b"\0".to_vec(),
                    b"%".to_vec(),
                    b"Sec-WebSocket-Version: 13\r\n".to_vec(),
                ]),
            ]
        )
            .prop_map(|(i, b)| Mutation::Insert(i, b)),
        (any::<Index>(), 1..20usize).prop_map(|(i, n)| Mutation::Delete(i, n)),
        any::<Index>().prop_map(Mutation::Truncate),
        (any::<Index>(), 1..40usize).prop_map(|(i, n)| Mutation::Duplicate(i, n)),
    ]
}

fn apply(bytes: &mut Vec<u8>, m: &Mutation) {
    let at = |i: &Index, len: usize| if len == 0 { 0 } else { i.index(len) };
    match m {
        Mutation::Flip(i, b) if !bytes.is_empty() => {
            let p = at(i, bytes.len());
            bytes[p] ^= b | 1;
        }
        Mutation::Flip(..) => {}
        Mutation::Insert(i, b) => {
            let p = at(i, bytes.len() + 1);
            bytes.splice(p..p, b.iter().copied());
        }
        Mutation::Delete(i, n) => {
            let p = at(i, bytes.len());
            let end = (p + n).min(bytes.len());
            bytes.drain(p..end);
        }
        Mutation::Truncate(i) => bytes.truncate(at(i, bytes.len())),
        Mutation::Duplicate(i, n) => {
            let p = at(i, bytes.len());
            let end = (p + n).min(bytes.len());
            let copy = bytes[p..end].to_vec();
            bytes.splice(p..p, copy);
        }
    }
}

/// Whatever `parse_head` answers, a complete head never claims more bytes than it was given.
fn parse_head_is_sane(buf: &[u8]) {
    if let Ok(Some(head)) = http::parse_head(buf, 1 << 20) {
        assert!(head.len <= buf.len() && head.len <= MAX_HEAD);
    }
}

proptest! {
    #![proptest_config(config(2000))]

    #[test]
    fn parse_head_never_panics_on_arbitrary_bytes(
        bytes in prop::collection::vec(any::<u8>(), 0..2048),
        prefixed in any::<bool>(),
    ) {
        let mut buf = if prefixed { b"GET /chat HTTP/1.1\r\n".to_vec() } else { Vec::new() };
        buf.extend_from_slice(&bytes);
        parse_head_is_sane(&buf);
    }

    #[test]
    fn parse_head_never_panics_on_mutated_requests(
        up in upgrade(),
        mutations in prop::collection::vec(mutation(), 1..6),
        trailing in prop::collection::vec(any::<u8>(), 0..32),
    ) {
        let mut bytes = up.bytes;
        for m in &mutations {
            apply(&mut bytes, m);
        }
        bytes.extend_from_slice(&trailing);
        parse_head_is_sane(&bytes);
    }

    #[test]
    fn valid_upgrades_are_accepted_with_their_topic(
        up in upgrade(),
        frames_after in prop::collection::vec(any::<u8>(), 0..64),
    ) {
        let mut buf = up.bytes.clone();
        buf.extend_from_slice(&frames_after);
        let head = http::parse_head(&buf, 1 << 20)
            .unwrap_or_else(|e| panic!("refused ({e}): {:?}", String::from_utf8_lossy(&up.bytes)))
            .expect("a complete head");
        prop_assert_eq!(head.len, up.bytes.len());
        let HttpRequest::Upgrade { mode, accept, .. } = head.request else {
            panic!("not an upgrade: {:?}", head.request);
        };
        let want = if up.v1 { Mode::V1 } else { Mode::Path(up.topic.clone()) };
        prop_assert_eq!(mode, want);
        prop_assert_eq!(accept, derive_accept_key(up.key.as_bytes()));
    }

    #[test]
    fn every_strict_prefix_of_a_valid_head_is_incomplete(up in upgrade()) {
        for end in 0..up.bytes.len() {
            prop_assert_eq!(http::parse_head(&up.bytes[..end], 1 << 20), Ok(None), "prefix of {} bytes", end);
        }
        prop_assert!(matches!(http::parse_head(&up.bytes, 1 << 20), Ok(Some(_))));
    }

    #[test]
    fn header_bloat_over_the_limit_is_refused(
        up in upgrade(),
        count in 1..80usize,
        extra in 0..400usize,
        at in any::<Index>(),
        complete in any::<bool>(),
    ) {
        // Enough bloat that the head passes MAX_HEAD whatever the request's own size.
        let each = (MAX_HEAD + 1).div_ceil(count) + extra;
        let bloat: String = (0..count)
            .map(|i| format!("X-Bloat-{i}: {}\r\n", "b".repeat(each)))
            .collect();
        let text = String::from_utf8(up.bytes).unwrap();
        // Insert after the request line, or among the headers.
        let lines: Vec<&str> = text.trim_end_matches("\r\n").split("\r\n").collect();
        let split = 1 + at.index(lines.len());
        let mut head = lines[..split].join("\r\n") + "\r\n" + &bloat + &lines[split..].join("\r\n");
        if split < lines.len() {
            head.push_str("\r\n");
        }
        if complete {
            head.push_str("\r\n");
        }
        prop_assert!(head.len() > MAX_HEAD);
        prop_assert_eq!(http::parse_head(head.as_bytes(), 1 << 20), Err(HttpError::HeadTooLarge));
    }
}

// ---------------------------------------------------------------------------------------------
// herald.v1: decode
// ---------------------------------------------------------------------------------------------

/// Arbitrary JSON, with the protocol's own names common among keys and strings so that
/// generated objects get past the first checks.
fn json() -> impl Strategy<Value = serde_json::Value> {
    use serde_json::Value;
    let names = vec![
        "op",
        "id",
        "topics",
        "topic",
        "data",
        "data_b64",
        "since",
        "rewind",
        "epoch",
        "seq",
        "subscribe",
        "unsubscribe",
        "publish",
        "chat",
    ];
    let name = prop_oneof![
        3 => prop::sample::select(names).prop_map(str::to_owned),
        1 => ".{0,8}",
    ];
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(Value::from),
        name.clone().prop_map(Value::from),
        "[A-Za-z0-9+/=]{0,12}".prop_map(Value::from),
    ];
    leaf.prop_recursive(4, 48, 6, move |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::vec((name.clone(), inner), 0..6)
                .prop_map(|kv| Value::Object(kv.into_iter().collect())),
        ]
    })
}

/// A request that `decode` must accept, as JSON and as the value it must decode to.
fn v1_request() -> impl Strategy<Value = (serde_json::Value, Request)> {
    use serde_json::json;
    let start = prop_oneof![
        Just(Start::Now),
        (".{0,12}", any::<u64>()).prop_map(|(epoch, seq)| Start::Since { epoch, seq }),
        any::<u64>().prop_map(Start::Rewind),
    ];
    let wanted =
        (topic(), start, any::<bool>(), any::<bool>()).prop_map(|(topic, start, plain, events)| {
            let mut value = match &start {
                Start::Now if plain => json!(topic),
                Start::Now => json!({ "topic": topic }),
                Start::Since { epoch, seq } => {
                    json!({ "topic": topic, "since": { "epoch": epoch, "seq": seq } })
                }
                Start::Rewind(n) => json!({ "topic": topic, "rewind": n }),
            };
            // `"presence":true` (join/leave events) is said in the object form only.
            let presence = events && value.is_object();
            if presence {
                value["presence"] = json!(true);
            }
            (
                value,
                Wanted {
                    topic,
                    start,
                    presence,
                    pattern: None,
                    since_each: vec![],
                },
            )
        });
    prop_oneof![
        (any::<u64>(), prop::collection::vec(wanted, 0..5)).prop_map(|(id, topics)| {
            let (values, wanted): (Vec<_>, Vec<_>) = topics.into_iter().unzip();
            (
                json!({ "op": "subscribe", "id": id, "topics": values }),
                Request::Subscribe { id, topics: wanted },
            )
        }),
        (any::<u64>(), prop::collection::vec(topic(), 0..5)).prop_map(|(id, topics)| (
            json!({ "op": "unsubscribe", "id": id, "topics": topics }),
            Request::Unsubscribe { id, topics },
        )),
        (any::<u64>(), topic(), ".{0,64}").prop_map(|(id, topic, text)| (
            json!({ "op": "publish", "id": id, "topic": topic, "data": text }),
            Request::Publish {
                id,
                topic,
                data: Data::Text,
                payload: text.into_bytes()
            },
        )),
        (
            any::<u64>(),
            topic(),
            prop::collection::vec(any::<u8>(), 0..96)
        )
            .prop_map(|(id, topic, bytes)| {
                let b64 = base64::engine::general_purpose::STANDARD.encode(&bytes);
                (
                    json!({ "op": "publish", "id": id, "topic": topic, "data_b64": b64 }),
                    Request::Publish {
                        id,
                        topic,
                        data: Data::Binary,
                        payload: bytes,
                    },
                )
            }),
    ]
}

proptest! {
    #![proptest_config(config(2000))]

    #[test]
    fn v1_decode_never_panics_on_arbitrary_bytes(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        let _ = v1::decode(&bytes);
    }

    #[test]
    fn v1_decode_never_panics_on_arbitrary_json(value in json(), op in proptest::option::of(
        prop::sample::select(vec!["subscribe", "unsubscribe", "publish", "dance"]),
    )) {
        let mut value = value;
        if let (Some(op), serde_json::Value::Object(map)) = (op, &mut value) {
            map.insert("op".into(), op.into());
        }
        let text = serde_json::to_vec(&value).unwrap();
        if let Err((id, refusal)) = v1::decode(&text) {
            // An id is only ever reported when the message is an object carrying that id.
            if let Some(id) = id {
                let carried = match &value {
                    serde_json::Value::Object(map) => map.get("id"),
                    _ => None,
                };
                prop_assert_eq!(carried.and_then(|v| v.as_u64()), Some(id));
            }
            prop_assert!(!refusal.to_string().is_empty());
        }
    }

    #[test]
    fn v1_valid_requests_round_trip((value, want) in v1_request()) {
        let text = serde_json::to_vec(&value).unwrap();
        prop_assert_eq!(v1::decode(&text), Ok(want));
    }

    #[test]
    fn v1_publish_to_an_invalid_topic_is_refused(
        id in any::<u64>(),
        topic in bad_topic(),
        text in ".{0,16}",
    ) {
        let why = topic::validate(&topic).expect_err("the generator makes invalid topics");
        let value = serde_json::json!({ "op": "publish", "id": id, "topic": topic, "data": text });
        let got = v1::decode(&serde_json::to_vec(&value).unwrap());
        prop_assert_eq!(got, Err((Some(id), Refusal::BadTopic(why))));
    }
}

// ---------------------------------------------------------------------------------------------
// Frames: decode / decode_with
// ---------------------------------------------------------------------------------------------

/// One client message to put on the wire.
#[derive(Debug, Clone)]
struct Message {
    text: bool,
    payload: Vec<u8>,
    /// Cut points of the payload (as sent: compressed bytes when `compress`) into fragments.
    cuts: Vec<Index>,
    /// A ping (its payload) after each fragment, where `Some`.
    pings: Vec<Option<Vec<u8>>>,
    mask: [u8; 4],
    compress: bool,
}

/// Payload sizes: small mostly, the 7/16/64-bit length boundaries often, large sometimes.
fn size() -> impl Strategy<Value = usize> {
    prop_oneof![
        6 => 0..=130usize,
        2 => prop::sample::select(vec![0usize, 125, 126, 127, 65535, 65536]),
        1 => 131..=70_000usize,
    ]
}

/// A payload of exactly `len` bytes: UTF-8 text (multi-byte characters that fragments may
/// split) or binary.
fn payload(text: bool, len: usize, seed: &str, byte: u8) -> Vec<u8> {
    if !text {
        return (0..len)
            .map(|i| (i as u8).wrapping_mul(31).wrapping_add(byte))
            .collect();
    }
    let mut out = String::with_capacity(len + 4);
    let seed = if seed.is_empty() { "é€x" } else { seed };
    while out.len() < len {
        for c in seed.chars() {
            if out.len() + c.len_utf8() > len {
                break;
            }
            out.push(c);
        }
        if out.len() + 4 > len {
            while out.len() < len {
                out.push('a');
            }
        }
    }
    out.into_bytes()
}

fn message(compressible: bool) -> impl Strategy<Value = Message> {
    (
        any::<bool>(),
        size(),
        ".{0,6}",
        any::<u8>(),
        prop::collection::vec(any::<Index>(), 0..4),
        prop::collection::vec(
            proptest::option::weighted(0.3, prop::collection::vec(any::<u8>(), 0..=125)),
            5,
        ),
        any::<[u8; 4]>(),
        if compressible {
            any::<bool>().boxed()
        } else {
            Just(false).boxed()
        },
    )
        .prop_map(
            |(text, len, seed, byte, cuts, pings, mask, compress)| Message {
                text,
                payload: payload(text, len, &seed, byte),
                cuts,
                pings,
                mask,
                compress,
            },
        )
}

/// Raw deflate of `data`, sync-flushed, with the sync tail removed (RFC 7692 7.2.1).
fn deflated(data: &[u8]) -> Vec<u8> {
    let mut c = flate2::Compress::new(flate2::Compression::default(), false);
    let mut out = Vec::with_capacity(data.len() + data.len() / 100 + 1024);
    c.compress_vec(data, &mut out, flate2::FlushCompress::Sync)
        .unwrap();
    assert_eq!(c.total_in() as usize, data.len(), "output buffer too small");
    assert!(out.ends_with(&[0, 0, 0xff, 0xff]), "sync flush tail");
    out.truncate(out.len() - 4);
    out
}

/// A masked client frame: `first` is the header's first byte (FIN, RSV bits, opcode).
fn client_frame(first: u8, mask: [u8; 4], payload: &[u8]) -> Vec<u8> {
    let (fin, rsv, opcode) = (first & 0x80 != 0, (first >> 4) & 7, first & 0x0f);
    testkit::encode_frame(fin, rsv, opcode, payload, Some(mask))
}

/// The wire bytes of `messages`, and the events a server must decode from them in order.
fn wire(messages: &[Message]) -> (Vec<u8>, Vec<Event>) {
    let mut bytes = Vec::new();
    let mut events = Vec::new();
    for m in messages {
        let sent = if m.compress {
            deflated(&m.payload)
        } else {
            m.payload.clone()
        };
        let mut bounds = vec![0];
        bounds.extend(cut_points(sent.len(), &m.cuts));
        bounds.push(sent.len());
        let frames = bounds.len() - 1;
        for f in 0..frames {
            let fin = if f + 1 == frames { 0x80 } else { 0 };
            let opcode = match (f, m.text) {
                (0, true) => 0x1,
                (0, false) => 0x2,
                _ => 0x0,
            };
            let rsv1 = if f == 0 && m.compress { 0x40 } else { 0 };
            let mut mask = m.mask;
            mask[0] = mask[0].wrapping_add(f as u8);
            bytes.extend(client_frame(
                fin | rsv1 | opcode,
                mask,
                &sent[bounds[f]..bounds[f + 1]],
            ));
            if let Some(Some(ping)) = m.pings.get(f) {
                bytes.extend(client_frame(0x89, m.mask, ping));
                events.push(Event::Ping(frame::encode(
                    OpCode::Control(Control::Pong),
                    ping,
                )));
            }
        }
        let kind = if m.text { Data::Text } else { Data::Binary };
        // A ping after the last fragment comes after the message.
        let message = Event::Message(frame::encode(OpCode::Data(kind), &m.payload));
        match m.pings.get(frames - 1) {
            Some(Some(_)) => events.insert(events.len() - 1, message),
            _ => events.push(message),
        }
    }
    (bytes, events)
}

/// What a connection makes of `stream` arriving in pieces cut at `cuts`: its events, and
/// the error that ended it (if any). Stops after a close frame, as a connection does.
fn feed(
    stream: &[u8],
    cuts: &[usize],
    max: usize,
    inflate: bool,
) -> (Vec<Event>, Result<(), FrameError>) {
    let mut codec = Codec::default();
    let mut asm = Assembly::default();
    let mut buf = Vec::new();
    let mut events = Vec::new();
    let mut from = 0;
    for &to in cuts.iter().chain(std::iter::once(&stream.len())) {
        buf.extend_from_slice(&stream[from..to]);
        from = to;
        let decoded = if inflate {
            frame::decode_with(&mut buf, &mut asm, max, Some(&mut codec), &mut events)
        } else {
            frame::decode(&mut buf, &mut asm, max, &mut events)
        };
        match decoded {
            Ok(n) => {
                assert!(n <= buf.len());
                buf.drain(..n);
            }
            Err(e) => return (events, Err(e)),
        }
        if matches!(events.last(), Some(Event::Close(_))) {
            break;
        }
    }
    (events, Ok(()))
}

/// Frame-shaped noise: headers with random bits (mostly masked), lengths around the
/// encodings' boundaries, random payloads; deeper into the decoder than uniform bytes.
fn frame_noise() -> impl Strategy<Value = Vec<u8>> {
    let one = (
        any::<u8>(),
        prop::bool::weighted(0.9),
        prop_oneof![0..20usize, Just(125), Just(126), Just(127), 0..300usize],
        any::<[u8; 4]>(),
        any::<u8>(),
    )
        .prop_map(|(first, masked, len, mask, fill)| {
            let payload: Vec<u8> = (0..len)
                .map(|i| fill.wrapping_add((i as u8).wrapping_mul(7)))
                .collect();
            let mut f = client_frame(first, mask, &payload);
            if !masked {
                f[1] &= 0x7f;
            }
            f
        });
    prop::collection::vec(one, 0..8).prop_map(|frames| frames.concat())
}

proptest! {
    #![proptest_config(config(2000))]

    #[test]
    fn frame_decode_never_panics_and_ignores_how_bytes_are_split(
        bytes in prop_oneof![prop::collection::vec(any::<u8>(), 0..1024), frame_noise()],
        cuts in prop::collection::vec(any::<Index>(), 0..12),
        max in prop_oneof![1..200usize, Just(1usize << 20)],
        inflate in any::<bool>(),
    ) {
        let whole = feed(&bytes, &[], max, inflate);
        let split = feed(&bytes, &cut_points(bytes.len(), &cuts), max, inflate);
        prop_assert_eq!(whole, split);
    }
}

proptest! {
    #![proptest_config(config(2000))]

    #[test]
    fn valid_client_frames_decode_to_the_messages_sent(
        messages in prop::collection::vec(message(false), 1..5),
        cuts in prop::collection::vec(any::<Index>(), 0..16),
        cuts2 in prop::collection::vec(any::<Index>(), 0..16),
    ) {
        let (stream, want) = wire(&messages);
        let split = feed(&stream, &cut_points(stream.len(), &cuts), 1 << 20, false);
        prop_assert_eq!(&split.0, &want);
        prop_assert_eq!(&split.1, &Ok(()));
        // The same, whatever the split, and with the extension negotiated but unused.
        let other = feed(&stream, &cut_points(stream.len(), &cuts2), 1 << 20, true);
        prop_assert_eq!(&other, &split);
        let whole = feed(&stream, &[], 1 << 20, false);
        prop_assert_eq!(whole, split);
    }

    #[test]
    fn compressed_and_plain_client_messages_decode_to_the_messages_sent(
        messages in prop::collection::vec(message(true), 1..5),
        cuts in prop::collection::vec(any::<Index>(), 0..16),
    ) {
        let (stream, want) = wire(&messages);
        let got = feed(&stream, &cut_points(stream.len(), &cuts), 1 << 20, true);
        prop_assert_eq!(got, (want, Ok(())));
    }

    #[test]
    fn oversized_messages_are_too_large(
        before in prop::collection::vec(message(true), 0..3),
        max in 1..2000usize,
        over in 1..3000usize,
        big in message(true),
        cuts in prop::collection::vec(any::<Index>(), 0..16),
        inflate in any::<bool>(),
    ) {
        // Messages within the limit, then one over it (plain or, with the extension, a
        // compressed one that only inflates past it).
        let limit = |m: &Message| Message {
            payload: payload(m.text, m.payload.len().min(max), "é", 1),
            compress: m.compress && inflate,
            ..m.clone()
        };
        let mut messages: Vec<Message> = before.iter().map(limit).collect();
        let text = big.text;
        messages.push(Message {
            payload: payload(text, max + over, "€", 0),
            compress: big.compress && inflate,
            ..big
        });
        let (stream, want) = wire(&messages);
        let (_, small) = wire(&messages[..messages.len() - 1]);
        let kind = if text { Data::Text } else { Data::Binary };
        let refused = Event::Message(frame::encode(OpCode::Data(kind), &messages[messages.len() - 1].payload));
        let (got, result) = feed(&stream, &cut_points(stream.len(), &cuts), max, inflate);
        prop_assert_eq!(result, Err(FrameError::TooLarge));
        // What was decoded is what was sent, in order, up to the refusal; never the big one.
        prop_assert_eq!(&got[..], &want[..got.len()]);
        prop_assert!(!got.contains(&refused));
        // A compressed message is limited by its compressed size on the wire too, so only
        // when every earlier one fits is every earlier event certain to come out.
        let fits = messages[..messages.len() - 1]
            .iter()
            .all(|m| !m.compress || deflated(&m.payload).len() <= max);
        if fits {
            prop_assert!(got.len() >= small.len(), "{} events of {}", got.len(), small.len());
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Sec-WebSocket-Extensions: negotiate
// ---------------------------------------------------------------------------------------------

/// Header values built from the grammar's own pieces, so that most reach the parameter
/// parsing, plus arbitrary text.
fn extension_header() -> impl Strategy<Value = String> {
    let piece = prop::sample::select(vec![
        "permessage-deflate",
        "PerMessage-Deflate",
        "x-webkit-deflate-frame",
        "; ",
        ";",
        ", ",
        ",",
        "=",
        "\"",
        "\\",
        " ",
        "server_no_context_takeover",
        "client_no_context_takeover",
        "server_max_window_bits",
        "client_max_window_bits",
        "8",
        "15",
        "16",
        "08",
        "9",
        "\"10\"",
        "é",
    ]);
    prop_oneof![
        prop::collection::vec(piece, 0..16).prop_map(|p| p.concat()),
        ".{0,80}",
    ]
}

/// A valid offer: permessage-deflate with distinct known parameters in any order and case.
fn valid_offer() -> impl Strategy<Value = (String, Option<u8>)> {
    (
        any::<bool>(),
        any::<bool>(),
        proptest::option::of(8u8..=15),
        proptest::option::of(proptest::option::of(8u8..=15)),
        any::<u64>(),
        any::<bool>(),
    )
        .prop_flat_map(|(snct, cnct, smwb, cmwb, case_bits, quoted)| {
            let mut params = Vec::new();
            if snct {
                params.push("server_no_context_takeover".to_string());
            }
            if cnct {
                params.push("client_no_context_takeover".to_string());
            }
            if let Some(b) = smwb {
                params.push(if quoted {
                    format!("server_max_window_bits=\"{b}\"")
                } else {
                    format!("server_max_window_bits={b}")
                });
            }
            match cmwb {
                Some(Some(b)) => params.push(format!("client_max_window_bits={b}")),
                Some(None) => params.push("client_max_window_bits".into()),
                None => {}
            }
            let params: Vec<String> = params
                .into_iter()
                .map(|p| mangle_case(&p, case_bits))
                .collect();
            (Just(params).prop_shuffle(), Just(smwb))
        })
        .prop_map(|(params, smwb)| {
            let mut offer = String::from("permessage-deflate");
            for p in params {
                offer.push_str("; ");
                offer.push_str(&p);
            }
            (offer, smwb)
        })
}

proptest! {
    #![proptest_config(config(2000))]

    #[test]
    fn negotiate_never_panics(values in prop::collection::vec(extension_header(), 0..4)) {
        let agreement = deflate::negotiate(values.iter().map(String::as_str));
        let header = agreement.response_header();
        prop_assert_eq!(header.is_some(), agreement.is_on());
        if let Some(h) = header {
            prop_assert!(h.starts_with(
                "permessage-deflate; server_no_context_takeover; client_no_context_takeover"
            ));
        }
    }

    #[test]
    fn valid_offers_are_accepted(
        (offer, bits) in valid_offer(),
        before in prop::sample::select(vec!["", "foo, ", "permessage-deflate; bogus, "]),
    ) {
        let value = format!("{before}{offer}");
        let agreement = deflate::negotiate([value.as_str()]);
        prop_assert!(agreement.is_on(), "{} declined", value);
        let header = agreement.response_header().unwrap();
        let want = bits.map(|b| format!("; server_max_window_bits={b}")).unwrap_or_default();
        prop_assert!(header.ends_with(&format!("client_no_context_takeover{want}")), "{}", header);
    }
}

/// The frame helpers themselves: a stream of known bytes decodes as the unit tests say, so a
/// bug in `wire` cannot make the properties above vacuous.
#[test]
fn wire_matches_a_hand_built_stream() {
    let hello = Message {
        text: true,
        payload: b"hello".to_vec(),
        cuts: vec![],
        pings: vec![Some(b"p".to_vec())],
        mask: [1, 2, 3, 4],
        compress: false,
    };
    let (bytes, events) = wire(&[hello]);
    let mut want = client_frame(0x81, [1, 2, 3, 4], b"hello");
    want.extend(client_frame(0x89, [1, 2, 3, 4], b"p"));
    assert_eq!(bytes, want);
    assert_eq!(
        events,
        vec![
            Event::Message(Bytes::from_static(b"\x81\x05hello")),
            Event::Ping(Bytes::from_static(b"\x8a\x01p")),
        ]
    );
    let distinct: HashSet<usize> = [0usize, 125, 126, 65535, 65536]
        .into_iter()
        .map(|n| payload(true, n, "é€x", 0).len())
        .collect();
    assert_eq!(distinct.len(), 5, "text payloads have their exact size");
}
