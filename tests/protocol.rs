//! RFC 6455 framing: pings, fragmentation, UTF-8, size limits, protocol errors and the close
//! handshake, driven by a raw client sending hand-made frames.

use testkit::*;
use tungstenite::{Bytes, Message};

/// Runs each `(name, bytes)` case on a fresh raw connection to `/topic` and checks that the
/// server closes with `expected` and then closes TCP. All failures are reported together.
fn expect_close_code_for_each(server: &Server, expected: u16, cases: &[(&str, Vec<u8>)]) {
    let mut failures = Vec::new();
    for (name, bytes) in cases {
        let mut raw = RawWs::connect(server.addr, "proto");
        if let Err(e) = raw.try_send(bytes) {
            failures.push(format!("{name}: write failed: {e}"));
            continue;
        }
        match raw.expect_close() {
            Ok(Some(code)) if code == expected => {}
            Ok(code) => failures.push(format!("{name}: close code {code:?}, expected {expected}")),
            Err(e) => failures.push(format!("{name}: {e}")),
        }
    }
    assert_all_cases_passed(&failures, cases.len());
}

#[test]
fn ping_is_answered_with_pong_carrying_the_same_payload() {
    let server = Server::start(&[]);
    let mut raw = RawWs::connect(server.addr, "pings");
    let payloads: [Vec<u8>; 4] = [
        Vec::new(),
        b"hello".to_vec(),
        vec![0xff, 0x00, 0x80], // pings may carry any bytes
        (0..125u8).collect(),   // the largest control payload
    ];
    for payload in &payloads {
        raw.send(&frame(true, 0, OP_PING, payload));
        let pong = raw.expect_frame();
        assert_eq!(
            pong.opcode,
            OP_PONG,
            "answer to a ping of {} bytes",
            payload.len()
        );
        assert!(pong.fin);
        assert_eq!(&pong.payload, payload);
    }
}

/// An unsolicited pong is ignored; the connection keeps working.
#[test]
fn unsolicited_pong_is_ignored() {
    let server = Server::start(&[]);
    let mut raw = RawWs::connect(server.addr, "pongs");
    raw.send(&frame(true, 0, OP_PONG, b"unsolicited"));
    raw.send(&frame(true, 0, OP_TEXT, b"still here"));
    assert_eq!(raw.expect_message(), (OP_TEXT, b"still here".to_vec()));
}

/// A text message in three fragments with pings in between: the pings are answered
/// right away and every subscriber receives one whole message (a UTF-8 character split
/// across fragments included).
#[test]
fn fragmented_text_is_reassembled_and_interleaved_pings_answered() {
    let server = Server::start(&["--threads", "1"]);
    let mut subscriber = connect(server.addr, "frag");
    let mut raw = RawWs::connect(server.addr, "frag");

    let whole = "Hello, wörld";
    let bytes = whole.as_bytes();
    let split_in_o = whole.find('ö').unwrap() + 1; // between the two bytes of 'ö'
    raw.send(&frame(false, 0, OP_TEXT, &bytes[..3]));
    raw.send(&frame(true, 0, OP_PING, b"p1"));
    raw.send(&frame(false, 0, OP_CONT, &bytes[3..split_in_o]));
    raw.send(&frame(true, 0, OP_PING, b"p2"));
    raw.send(&frame(true, 0, OP_CONT, &bytes[split_in_o..]));

    // The sender sees: pong p1, pong p2 (answered before the message completes), then the
    // whole message.
    let pong1 = raw.expect_frame();
    assert_eq!(
        (pong1.opcode, pong1.payload.as_slice()),
        (OP_PONG, &b"p1"[..])
    );
    let pong2 = raw.expect_frame();
    assert_eq!(
        (pong2.opcode, pong2.payload.as_slice()),
        (OP_PONG, &b"p2"[..])
    );
    assert_eq!(raw.expect_message(), (OP_TEXT, bytes.to_vec()));

    assert_eq!(recv_data(&mut subscriber), Message::text(whole));
    // Exactly one message: the next one the subscriber gets is the marker.
    raw.send(&frame(true, 0, OP_TEXT, b"marker"));
    assert_eq!(recv_data(&mut subscriber), Message::text("marker"));
}

/// A binary message in fragments (one of them empty) arrives whole, as binary.
#[test]
fn fragmented_binary_is_reassembled() {
    let server = Server::start(&["--threads", "1"]);
    let mut subscriber = connect(server.addr, "fragbin");
    let mut raw = RawWs::connect(server.addr, "fragbin");
    let part1: Vec<u8> = (0..200u8).collect();
    let part3 = vec![0xAB; 70_000];
    raw.send(&frame(false, 0, OP_BINARY, &part1));
    raw.send(&frame(false, 0, OP_CONT, b""));
    raw.send(&frame(true, 0, OP_CONT, &part3));
    let mut whole = part1.clone();
    whole.extend_from_slice(&part3);

    assert_eq!(
        recv_data(&mut subscriber),
        Message::Binary(Bytes::from(whole.clone()))
    );
    assert_eq!(raw.expect_message(), (OP_BINARY, whole));
    raw.send(&frame(true, 0, OP_BINARY, b"marker"));
    assert_eq!(
        recv_data(&mut subscriber),
        Message::binary(b"marker".to_vec())
    );
}

#[test]
fn invalid_utf8_text_is_closed_with_1007() {
    let server = Server::start(&[]);
    expect_close_code_for_each(
        &server,
        1007,
        &[
            (
                "single frame 0xff",
                frame(true, 0, OP_TEXT, &[b'a', 0xff, b'b']),
            ),
            ("overlong encoding", frame(true, 0, OP_TEXT, &[0xc0, 0xaf])),
            (
                "UTF-16 surrogate",
                frame(true, 0, OP_TEXT, &[0xed, 0xa0, 0x80]),
            ),
            (
                "truncated at the end",
                frame(true, 0, OP_TEXT, b"abc\xe2\x82"),
            ),
            ("invalid across fragments", {
                let mut f = frame(false, 0, OP_TEXT, b"ab\xce");
                f.extend(frame(true, 0, OP_CONT, b"A"));
                f
            }),
            ("invalid in the last of three fragments", {
                let mut f = frame(false, 0, OP_TEXT, "λ".as_bytes());
                f.extend(frame(false, 0, OP_CONT, b"ok"));
                f.extend(frame(true, 0, OP_CONT, &[0xf8, 0x88, 0x80, 0x80, 0x80]));
                f
            }),
        ],
    );
}

#[test]
fn oversize_message_is_closed_with_1009() {
    let server = Server::start(&["--max-message", "1024"]);
    expect_close_code_for_each(
        &server,
        1009,
        &[
            (
                "binary frame of 1025 bytes",
                frame(true, 0, OP_BINARY, &[1u8; 1025]),
            ),
            (
                "text frame of 2000 bytes",
                frame(true, 0, OP_TEXT, &[b'x'; 2000]),
            ),
            ("three fragments of 500 bytes", {
                let mut f = frame(false, 0, OP_BINARY, &[2u8; 500]);
                f.extend(frame(false, 0, OP_CONT, &[2u8; 500]));
                f.extend(frame(true, 0, OP_CONT, &[2u8; 500]));
                f
            }),
            ("text fragments 1000 + 25", {
                let mut f = frame(false, 0, OP_TEXT, &[b'y'; 1000]);
                f.extend(frame(true, 0, OP_CONT, &[b'y'; 25]));
                f
            }),
        ],
    );
}

/// Messages of exactly `--max-message` bytes, whole or fragmented, are accepted.
#[test]
fn message_of_exactly_max_size_is_accepted() {
    let server = Server::start(&["--max-message", "1024"]);
    let mut raw = RawWs::connect(server.addr, "limit");
    let payload: Vec<u8> = (0..1024u32).map(|i| i as u8).collect();
    raw.send(&frame(true, 0, OP_BINARY, &payload));
    assert_eq!(raw.expect_message(), (OP_BINARY, payload.clone()));
    raw.send(&frame(false, 0, OP_BINARY, &payload[..512]));
    raw.send(&frame(true, 0, OP_CONT, &payload[512..]));
    assert_eq!(raw.expect_message(), (OP_BINARY, payload));
}

#[test]
fn protocol_errors_are_closed_with_1002() {
    let server = Server::start(&[]);
    let two = |a: Vec<u8>, b: Vec<u8>| [a, b].concat();
    expect_close_code_for_each(
        &server,
        1002,
        &[
            ("reserved data opcode 0x3", frame(true, 0, 0x3, b"x")),
            ("reserved data opcode 0x7", frame(true, 0, 0x7, b"")),
            ("reserved control opcode 0xB", frame(true, 0, 0xB, b"")),
            ("reserved control opcode 0xF", frame(true, 0, 0xF, b"x")),
            ("RSV1 set", frame(true, 4, OP_TEXT, b"x")),
            ("RSV2 set", frame(true, 2, OP_TEXT, b"x")),
            ("RSV3 set", frame(true, 1, OP_BINARY, b"x")),
            ("RSV bits on a ping", frame(true, 7, OP_PING, b"x")),
            (
                "unmasked text frame",
                frame_unmasked(true, 0, OP_TEXT, b"hello"),
            ),
            ("unmasked ping", frame_unmasked(true, 0, OP_PING, b"")),
            ("fragmented ping", frame(false, 0, OP_PING, b"x")),
            (
                "fragmented close",
                frame(false, 0, OP_CLOSE, &close_payload(1000, "")),
            ),
            (
                "ping payload of 126 bytes",
                frame(true, 0, OP_PING, &[b'p'; 126]),
            ),
            (
                "close payload of 126 bytes",
                frame(true, 0, OP_CLOSE, &close_payload(1000, &"r".repeat(124))),
            ),
            (
                "continuation without a start",
                frame(true, 0, OP_CONT, b"x"),
            ),
            (
                "non-final continuation without a start",
                frame(false, 0, OP_CONT, b"x"),
            ),
            (
                "text frame while a fragmented message is open",
                two(
                    frame(false, 0, OP_TEXT, b"a"),
                    frame(true, 0, OP_TEXT, b"b"),
                ),
            ),
            (
                "binary frame while a fragmented text is open",
                two(
                    frame(false, 0, OP_TEXT, b"a"),
                    frame(false, 0, OP_BINARY, b"b"),
                ),
            ),
            ("close payload of 1 byte", frame(true, 0, OP_CLOSE, &[0x03])),
            (
                "close code 0",
                frame(true, 0, OP_CLOSE, &close_payload(0, "")),
            ),
            (
                "close code 999",
                frame(true, 0, OP_CLOSE, &close_payload(999, "")),
            ),
            (
                "close code 1004",
                frame(true, 0, OP_CLOSE, &close_payload(1004, "")),
            ),
            (
                "close code 1005",
                frame(true, 0, OP_CLOSE, &close_payload(1005, "")),
            ),
            (
                "close code 1006",
                frame(true, 0, OP_CLOSE, &close_payload(1006, "")),
            ),
            (
                "close code 1015",
                frame(true, 0, OP_CLOSE, &close_payload(1015, "")),
            ),
            (
                "close code 1016",
                frame(true, 0, OP_CLOSE, &close_payload(1016, "")),
            ),
            (
                "close code 2999",
                frame(true, 0, OP_CLOSE, &close_payload(2999, "")),
            ),
        ],
    );
}

/// A client Close is answered with a Close echoing its code, then the server closes TCP.
#[test]
fn client_close_is_echoed_and_tcp_closed() {
    let server = Server::start(&[]);
    let mut failures = Vec::new();
    for (code, reason) in [
        (1000, ""),
        (1000, "bye"),
        (1001, "going away"),
        (1003, ""),
        (1011, ""),
        (3000, "app"),
        (4999, "private ✓"),
    ] {
        let mut raw = RawWs::connect(server.addr, "bye");
        raw.send(&frame(true, 0, OP_CLOSE, &close_payload(code, reason)));
        let answer = raw.expect_frame();
        if answer.opcode != OP_CLOSE {
            failures.push(format!(
                "close {code}: answered with opcode {:#x}",
                answer.opcode
            ));
            continue;
        }
        if answer.close_code() != Some(code) {
            failures.push(format!(
                "close {code}: answered with code {:?}",
                answer.close_code()
            ));
        }
        if let Err(e) = raw.read_to_end_of_stream() {
            failures.push(format!(
                "close {code}: TCP not closed after the close handshake: {e}"
            ));
        }
    }
    // A close without payload is answered with an empty close (its code echoed: none).
    let mut raw = RawWs::connect(server.addr, "bye");
    raw.send(&frame(true, 0, OP_CLOSE, b""));
    let answer = raw.expect_frame();
    if answer.opcode != OP_CLOSE || !answer.payload.is_empty() {
        failures.push(format!("empty close: answered with {answer:?}"));
    } else if let Err(e) = raw.read_to_end_of_stream() {
        failures.push(format!("empty close: TCP not closed: {e}"));
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// A close arriving in the middle of a fragmented message still completes the close
/// handshake (control frames are allowed between fragments).
#[test]
fn close_between_fragments_is_answered() {
    let server = Server::start(&[]);
    let mut raw = RawWs::connect(server.addr, "midclose");
    raw.send(&frame(false, 0, OP_TEXT, b"half"));
    raw.send(&frame(true, 0, OP_CLOSE, &close_payload(1000, "")));
    let answer = raw.expect_frame();
    assert_eq!(answer.opcode, OP_CLOSE, "got {answer:?}");
    assert_eq!(answer.close_code(), Some(1000));
    raw.read_to_end_of_stream()
        .expect("server closes TCP after the close handshake");
}

/// The tungstenite client's own close handshake works (code echoed, then
/// `ConnectionClosed`).
#[test]
fn tungstenite_close_handshake_completes() {
    let server = Server::start(&[]);
    let mut ws = connect(server.addr, "tclose");
    ws.close(Some(tungstenite::protocol::CloseFrame {
        code: tungstenite::protocol::frame::coding::CloseCode::Normal,
        reason: "done".into(),
    }))
    .unwrap();
    loop {
        match ws.read() {
            Ok(Message::Close(Some(frame))) => {
                assert_eq!(u16::from(frame.code), 1000);
            }
            Ok(Message::Close(None)) => panic!("close answered without a code"),
            Ok(other) => panic!("unexpected {other:?} after sending close"),
            Err(tungstenite::Error::ConnectionClosed) => break,
            Err(e) => panic!("close handshake did not complete cleanly: {e}"),
        }
    }
}
