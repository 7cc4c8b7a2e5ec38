//! permessage-deflate (RFC 7692) over real sockets: what the 101 answers to each offer, a
//! deflate client getting compressed frames that inflate to the message while a plain client
//! on the same topic gets plain ones, the window-size rule, and the protocol errors
//! (compression bomb → 1009, RSV1 misuse → 1002, bad UTF-8 after inflating → 1007).
//!
//! tungstenite's client has no permessage-deflate, so the deflate client here is a raw one
//! that compresses with flate2 itself, sets RSV1 and masks.

use std::time::Duration;

use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress};
use testkit::*;

const EXT: &str = "Sec-WebSocket-Extensions";
const AGREED: &str = "permessage-deflate; server_no_context_takeover; client_no_context_takeover";
const BROWSER_OFFER: &str = "Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits";

/// A JSON feed update, long enough to be compressed (over the default --compress-min).
fn json_update(i: usize) -> String {
    format!(
        "{{\"type\":\"ticker\",\"sequence\":{i},\"product_id\":\"BTC-USD\",\"price\":\"64123.45\",\
         \"open_24h\":\"63012.10\",\"volume_24h\":\"12345.678\",\"low_24h\":\"62800.00\",\
         \"high_24h\":\"64500.00\",\"best_bid\":\"64123.44\",\"best_ask\":\"64123.46\"}}"
    )
}

/// Raw deflate, sync-flushed, tail removed: a message as RFC 7692 puts it on the wire.
fn compress(data: &[u8]) -> Vec<u8> {
    let mut c = Compress::new(Compression::default(), false);
    let mut out = Vec::with_capacity(data.len() + 64);
    c.compress_vec(data, &mut out, FlushCompress::Sync)
        .expect("compress");
    assert!(out.ends_with(&[0, 0, 0xff, 0xff]), "sync flush tail");
    out.truncate(out.len() - 4);
    out
}

/// Inflate a compressed message payload (the tail put back), as a client would.
fn inflate(data: &[u8]) -> Vec<u8> {
    let mut d = Decompress::new(false);
    let mut input = data.to_vec();
    input.extend_from_slice(&[0, 0, 0xff, 0xff]);
    let mut out = Vec::with_capacity(data.len() * 20 + 1024);
    d.decompress_vec(&input, &mut out, FlushDecompress::Sync)
        .expect("server sent a valid deflate stream");
    assert_eq!(
        d.total_in() as usize,
        input.len(),
        "output buffer too small"
    );
    out
}

/// RSV1: the compressed-message bit as `frame`'s `rsv` argument.
const RSV1: u8 = 4;

/// A raw client that negotiated permessage-deflate with the browser's offer.
fn deflate_client(server: &Server, topic: &str, offer: &str) -> RawWs {
    let (ws, response) = RawWs::connect_with(server.addr, topic, &[offer]);
    assert!(
        response
            .header(EXT)
            .is_some_and(|v| v.starts_with("permessage-deflate")),
        "offer {offer:?} not accepted: {}",
        response.head_text
    );
    ws
}

/// Reads the next data message: `(opcode, compressed?, payload after inflating)`.
fn recv(ws: &mut RawWs) -> (u8, bool, Vec<u8>) {
    let f = loop {
        let f = ws.expect_frame();
        if f.opcode != OP_PING && f.opcode != OP_PONG {
            break f;
        }
    };
    assert!(f.fin, "Herald sends whole messages in one frame");
    assert_ne!(f.opcode, OP_CLOSE, "unexpected close {:?}", f.close_code());
    let compressed = f.rsv == RSV1;
    assert!(f.rsv == 0 || compressed, "only RSV1 may be set: {}", f.rsv);
    let payload = if compressed {
        inflate(&f.payload)
    } else {
        f.payload
    };
    (f.opcode, compressed, payload)
}

/// [`recv`], skipping `sync:` messages left over from [`raw_sync`] and [`sync`] calls.
fn recv_after_sync(ws: &mut RawWs) -> (u8, bool, Vec<u8>) {
    loop {
        let got = recv(ws);
        if !got.2.starts_with(b"sync:") {
            return got;
        }
    }
}

/// Sends `sync:ID` (plain) and reads until it is echoed: the subscription is then in
/// effect on every worker. Returns the messages skipped on the way (none expected).
fn raw_sync(ws: &mut RawWs, id: &str) {
    let mine = format!("sync:{id}");
    ws.send(&frame(true, 0, OP_TEXT, mine.as_bytes()));
    loop {
        let (_, _, payload) = recv(ws);
        if payload == mine.as_bytes() {
            return;
        }
        assert!(payload.starts_with(b"sync:"), "unexpected {payload:?}");
    }
}

#[test]
fn negotiation_answers() {
    let server = Server::start(&[]);
    let answer = |offers: &[&str]| {
        let (_ws, response) = RawWs::connect_with(server.addr, "neg", offers);
        response.header(EXT).map(str::to_owned)
    };
    let cases: &[(&[&str], Option<String>)] = &[
        (&[], None),
        (&[BROWSER_OFFER], Some(AGREED.into())),
        (
            &["Sec-WebSocket-Extensions: permessage-deflate; server_max_window_bits=10"],
            Some(format!("{AGREED}; server_max_window_bits=10")),
        ),
        (
            &["Sec-WebSocket-Extensions: permessage-deflate; server_max_window_bits=8; client_max_window_bits=8"],
            Some(format!("{AGREED}; server_max_window_bits=8")),
        ),
        // Invalid offers are declined (RFC 7692 section 5); the next one is taken.
        (
            &["Sec-WebSocket-Extensions: permessage-deflate; server_max_window_bits=16, permessage-deflate; server_no_context_takeover"],
            Some(AGREED.into()),
        ),
        (
            &[
                "Sec-WebSocket-Extensions: permessage-deflate; unknown_param",
                "Sec-WebSocket-Extensions: permessage-deflate; client_no_context_takeover",
            ],
            Some(AGREED.into()),
        ),
        (
            &["Sec-WebSocket-Extensions: permessage-deflate; server_no_context_takeover; server_no_context_takeover"],
            None,
        ),
        (
            &["Sec-WebSocket-Extensions: x-webkit-deflate-frame"],
            None,
        ),
    ];
    let mut failures = Vec::new();
    for (offers, expected) in cases {
        let got = answer(offers);
        if &got != expected {
            failures.push(format!("{offers:?}: expected {expected:?}, got {got:?}"));
        }
    }
    assert_all_cases_passed(&failures, cases.len());
}

#[test]
fn compression_off_answers_without_the_extension_and_refuses_rsv1() {
    let server = Server::start(&["--compression", "off"]);
    let (mut ws, response) = RawWs::connect_with(server.addr, "off", &[BROWSER_OFFER]);
    assert_eq!(response.status, 101);
    assert_eq!(response.header(EXT), None, "{}", response.head_text);
    ws.send(&frame(true, RSV1, OP_TEXT, &compress(b"hello")));
    assert_eq!(ws.expect_close(), Ok(Some(1002)));
}

#[test]
fn deflate_and_plain_subscribers_share_one_topic() {
    let server = Server::start(&[]);
    let mut zipped = deflate_client(&server, "feed", BROWSER_OFFER);
    let mut small_window = deflate_client(
        &server,
        "feed",
        "Sec-WebSocket-Extensions: permessage-deflate; server_max_window_bits=8",
    );
    let mut plain = connect(server.addr, "feed");
    raw_sync(&mut zipped, "zipped");
    raw_sync(&mut small_window, "small");
    sync(&mut plain, "plain");

    // A deflate client publishes a compressed message, in two fragments.
    let big = json_update(1).repeat(4); // > 256 bytes: over the 8-bit window
    let medium = json_update(2); // between --compress-min (128) and 256 bytes
    assert!(big.len() > 256 && (128..=256).contains(&medium.len()));
    let packed = compress(big.as_bytes());
    let (a, b) = packed.split_at(packed.len() / 2);
    zipped.send(&frame(false, RSV1, OP_TEXT, a));
    zipped.send(&frame(true, 0, OP_CONT, b));
    assert_eq!(recv_text_after_sync(&mut plain), big);
    // Then a plain client publishes a small one and the medium one.
    send_text(&mut plain, "tiny");
    send_text(&mut plain, &medium);

    for (who, ws) in [("zipped", &mut zipped), ("small", &mut small_window)] {
        let (op, compressed, payload) = recv_after_sync(ws);
        assert_eq!((op, payload.as_slice()), (OP_TEXT, big.as_bytes()), "{who}");
        assert_eq!(
            compressed,
            who == "zipped",
            "{who}: big message compressed?"
        );
        let (_, compressed, payload) = recv(ws);
        assert_eq!(payload, b"tiny", "{who}");
        assert!(!compressed, "{who}: under --compress-min goes plain");
        let (_, compressed, payload) = recv(ws);
        assert_eq!(payload, medium.as_bytes(), "{who}");
        assert!(compressed, "{who}: medium message fits every window");
    }
    assert_eq!(recv_text(&mut plain), "tiny");
    assert_eq!(recv_text(&mut plain), medium);
}

#[test]
fn many_messages_in_one_turn_compress_and_keep_their_order() {
    let server = Server::start(&["--threads", "1"]);
    let mut zipped = deflate_client(&server, "burst", BROWSER_OFFER);
    let mut plain = connect(server.addr, "burst");
    raw_sync(&mut zipped, "z");
    sync(&mut plain, "p");
    assert_eq!(recv(&mut zipped).2, b"sync:p");
    // One write with many frames: they are staged in one batch and corked together.
    let burst: Vec<u8> = (0..50)
        .flat_map(|i| frame(true, RSV1, OP_TEXT, &compress(json_update(i).as_bytes())))
        .collect();
    zipped.send(&burst);
    for i in 0..50 {
        let (_, compressed, payload) = recv(&mut zipped);
        assert!(compressed, "message {i}");
        assert_eq!(payload, json_update(i).as_bytes(), "message {i}");
        assert_eq!(recv_text(&mut plain), json_update(i), "message {i}");
    }
}

#[test]
fn a_compression_bomb_is_closed_with_1009_and_the_rest_keep_working() {
    let server = Server::start(&["--max-message", "65536"]);
    let mut watcher = connect(server.addr, "bomb");
    sync(&mut watcher, "w");
    let mut bomber = deflate_client(&server, "bomb", BROWSER_OFFER);
    let bomb = compress(&vec![0u8; 32 << 20]); // 32 MiB of zeros: ~32 KiB compressed
    assert!(bomb.len() < 65536, "the bomb itself is under --max-message");
    bomber.send(&frame(true, RSV1, OP_BINARY, &bomb));
    assert_eq!(bomber.expect_close(), Ok(Some(1009)));

    let mut publisher = deflate_client(&server, "bomb", BROWSER_OFFER);
    publisher.send(&frame(true, RSV1, OP_TEXT, &compress(b"still here")));
    assert_eq!(recv_text_after_sync(&mut watcher), "still here");
    // At most one --max-message of inflated output was ever held.
    let status = std::fs::read_to_string(format!("/proc/{}/status", server.pid()))
        .expect("the server's /proc/PID/status");
    let kib = status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
        .unwrap_or_else(|| panic!("no VmHWM in /proc/PID/status:\n{status}"));
    assert!(kib < 48 * 1024, "peak RSS {kib} KiB: the bomb was inflated");
}

#[test]
fn rsv1_misuse_and_bad_inflated_text_fail_the_connection() {
    let server = Server::start(&[]);
    let packed = compress(b"hello");
    let cases: &[(&str, Vec<u8>, u16)] = &[
        (
            "RSV1 on a continuation",
            [
                frame(false, RSV1, OP_TEXT, &packed),
                frame(true, RSV1, OP_CONT, b""),
            ]
            .concat(),
            1002,
        ),
        ("RSV1 on a ping", frame(true, RSV1, OP_PING, b"p"), 1002),
        ("RSV2", frame(true, 2, OP_TEXT, b"x"), 1002),
        (
            "invalid UTF-8 after inflating",
            frame(true, RSV1, OP_TEXT, &compress(&[0xce, 0xba, 0xff, 0xfe])),
            1007,
        ),
        (
            "not a deflate stream",
            frame(true, RSV1, OP_BINARY, &[0xff; 8]),
            1002,
        ),
    ];
    let mut failures = Vec::new();
    for (what, bytes, code) in cases {
        let mut ws = deflate_client(&server, "errors", BROWSER_OFFER);
        ws.set_read_timeout(Duration::from_secs(5));
        ws.send(bytes);
        match ws.expect_close() {
            Ok(Some(got)) if got == *code => {}
            other => failures.push(format!("{what}: expected close {code}, got {other:?}")),
        }
    }
    assert_all_cases_passed(&failures, cases.len());
}

#[test]
fn herald_v1_envelopes_are_compressed_once_for_deflate_clients() {
    let server = Server::start(&["--threads", "2"]);
    let offers = [BROWSER_OFFER, "Sec-WebSocket-Protocol: herald.v1"];
    let (mut zipped, response) = RawWs::connect_with(server.addr, "any/path", &offers);
    assert_eq!(response.header("Sec-WebSocket-Protocol"), Some("herald.v1"));
    assert!(response.header(EXT).is_some(), "{}", response.head_text);
    let subscribe = br#"{"op":"subscribe","id":1,"topics":["feed"]}"#;
    zipped.send(&frame(true, 0, OP_TEXT, subscribe));
    let (_, _, reply) = recv(&mut zipped);
    let reply: serde_json::Value = serde_json::from_slice(&reply).expect("JSON reply");
    assert_eq!(reply["type"], "subscribed", "{reply}");

    let mut plain = connect(server.addr, "feed");
    let update = json_update(7);
    send_text(&mut plain, &update);
    let (op, compressed, payload) = recv(&mut zipped);
    assert_eq!(op, OP_TEXT);
    assert!(
        compressed,
        "an envelope over --compress-min is sent compressed"
    );
    let envelope: serde_json::Value = serde_json::from_slice(&payload).expect("JSON envelope");
    assert_eq!(envelope["type"], "message");
    assert_eq!(envelope["topic"], "feed");
    assert_eq!(envelope["data"], update.as_str());
    assert_eq!(recv_text(&mut plain), update);
}
