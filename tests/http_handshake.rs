//! The HTTP side: the upgrade handshake, its error responses and `/health`, with raw
//! requests over `std::net::TcpStream`.

use std::io::Write;
use std::net::SocketAddr;
use std::thread;
use std::time::Duration;

use testkit::*;
use tungstenite::Message;

const KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";

/// Sends each request and checks the status and that the server closes the connection
/// afterwards; all failures are reported together.
fn expect_status_for_each(addr: SocketAddr, expected: u16, cases: &[(&str, Vec<u8>)]) {
    let mut failures = Vec::new();
    for (name, request) in cases {
        let result = std::panic::catch_unwind(|| {
            let (mut response, mut stream) = http_request(addr, request);
            if response.status != expected {
                return Err(format!(
                    "status {} (expected {expected}); head: {:?}",
                    response.status, response.head_text
                ));
            }
            assert_closed_by_server(&mut response, &mut stream, name);
            Ok(())
        });
        match result {
            Ok(Ok(())) => {}
            Ok(Err(e)) => failures.push(format!("{name}: {e}")),
            Err(panic) => failures.push(format!(
                "{name}: {}",
                panic
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_default()
            )),
        }
    }
    assert_all_cases_passed(&failures, cases.len());
}

fn upgrade(path: &str) -> Vec<u8> {
    upgrade_request(path, KEY, &[]).into_bytes()
}

fn plain_get(path: &str) -> Vec<u8> {
    format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n").into_bytes()
}

/// An upgrade request with some header lines replaced or removed (`(name, None)` removes).
fn upgrade_with(path: &str, changes: &[(&str, Option<&str>)]) -> Vec<u8> {
    let mut headers = vec![
        ("Host", "127.0.0.1".to_string()),
        ("Upgrade", "websocket".to_string()),
        ("Connection", "Upgrade".to_string()),
        ("Sec-WebSocket-Key", KEY.to_string()),
        ("Sec-WebSocket-Version", "13".to_string()),
    ];
    for (name, value) in changes {
        headers.retain(|(n, _)| !n.eq_ignore_ascii_case(name));
        if let Some(v) = value {
            headers.push((name, v.to_string()));
        }
    }
    let mut r = format!("GET {path} HTTP/1.1\r\n");
    for (n, v) in headers {
        r.push_str(&format!("{n}: {v}\r\n"));
    }
    r.push_str("\r\n");
    r.into_bytes()
}

#[test]
fn health_returns_200_ok() {
    let server = Server::start(&[]);
    let (mut response, mut stream) = http_request(server.addr, &plain_get("/health"));
    assert_eq!(response.status, 200, "{:?}", response.head_text);
    if response.header("content-length").is_none() {
        // No length: the body runs to the end of the connection.
        assert_closed_by_server(&mut response, &mut stream, "/health");
    }
    assert_eq!(String::from_utf8_lossy(&response.body).trim_end(), "ok");
}

#[test]
fn upgrade_of_invalid_topic_is_400() {
    let server = Server::start(&[]);
    let too_long = format!("/{}", "t".repeat(257));
    expect_status_for_each(
        server.addr,
        400,
        &[
            ("empty path /", upgrade("/")),
            ("percent", upgrade("/bad%20topic")),
            ("exclamation mark", upgrade("/bang!")),
            ("at sign", upgrade("/a@b")),
            ("asterisk", upgrade("/a*b")),
            ("non-ASCII byte", {
                let mut r = upgrade("/caf_");
                let at = r.iter().position(|&b| b == b'_').unwrap();
                r[at] = 0xe9;
                r
            }),
            ("257 bytes", upgrade(&too_long)),
        ],
    );
}

/// The longest allowed topic (256 bytes) and every allowed character class are accepted.
#[test]
fn topic_of_256_bytes_and_all_allowed_characters_is_accepted() {
    let server = Server::start(&[]);
    let longest = "t".repeat(256);
    for topic in [
        longest.as_str(),
        "x",
        "prices/BTC-USD",
        "Az09-._~:/",
        "a/b/c/d",
    ] {
        let mut raw = RawWs::connect(server.addr, topic);
        raw.send(&frame(true, 0, OP_TEXT, topic.as_bytes()));
        assert_eq!(
            raw.expect_message(),
            (OP_TEXT, topic.as_bytes().to_vec()),
            "topic {topic:?}"
        );
    }
    // And with a real client.
    let mut ws = connect(server.addr, &longest);
    send_text(&mut ws, "long");
    assert_eq!(recv_data(&mut ws), Message::text("long"));
}

#[test]
fn method_other_than_get_or_post_is_405() {
    let server = Server::start(&[]);
    let with_method = |m: &str| {
        let r = String::from_utf8(upgrade("/chat")).unwrap();
        r.replacen("GET", m, 1).into_bytes()
    };
    expect_status_for_each(
        server.addr,
        405,
        &[
            ("PATCH", with_method("PATCH")),
            ("PUT", with_method("PUT")),
            ("DELETE", with_method("DELETE")),
        ],
    );
}

#[test]
fn websocket_version_other_than_13_is_426_with_version_header() {
    let server = Server::start(&[]);
    for version in ["8", "12", "14"] {
        let request = upgrade_with("/chat", &[("Sec-WebSocket-Version", Some(version))]);
        let (mut response, mut stream) = http_request(server.addr, &request);
        assert_eq!(
            response.status, 426,
            "version {version}: {:?}",
            response.head_text
        );
        assert_eq!(
            response.header("sec-websocket-version"),
            Some("13"),
            "version {version}: {:?}",
            response.head_text
        );
        assert_closed_by_server(&mut response, &mut stream, version);
    }
}

#[test]
fn plain_get_of_a_topic_is_426() {
    let server = Server::start(&[]);
    expect_status_for_each(
        server.addr,
        426,
        &[
            ("GET /chat", plain_get("/chat")),
            ("GET /prices/BTC-USD", plain_get("/prices/BTC-USD")),
        ],
    );
}

#[test]
fn plain_get_of_an_invalid_path_is_404() {
    let server = Server::start(&[]);
    expect_status_for_each(
        server.addr,
        404,
        &[
            ("GET /@page", plain_get("/@page")),
            ("GET /bang!", plain_get("/bang!")),
            ("GET /%41", plain_get("/%41")),
        ],
    );
}

#[test]
fn bad_upgrade_headers_are_400() {
    let server = Server::start(&[]);
    expect_status_for_each(
        server.addr,
        400,
        &[
            (
                "missing Sec-WebSocket-Key",
                upgrade_with("/chat", &[("Sec-WebSocket-Key", None)]),
            ),
            (
                "key not base64",
                upgrade_with("/chat", &[("Sec-WebSocket-Key", Some("not a key!"))]),
            ),
            (
                "key of 15 bytes",
                upgrade_with(
                    "/chat",
                    &[("Sec-WebSocket-Key", Some("AAAAAAAAAAAAAAAAAAAA"))],
                ),
            ),
            (
                "empty key",
                upgrade_with("/chat", &[("Sec-WebSocket-Key", Some(""))]),
            ),
            (
                "missing Connection",
                upgrade_with("/chat", &[("Connection", None)]),
            ),
            (
                "Connection without upgrade",
                upgrade_with("/chat", &[("Connection", Some("keep-alive"))]),
            ),
        ],
    );
}

#[test]
fn malformed_http_is_400() {
    let server = Server::start(&[]);
    expect_status_for_each(
        server.addr,
        400,
        &[
            ("garbage line", b"GARBAGE\r\n\r\n".to_vec()),
            ("no HTTP version", b"GET /chat\r\nHost: x\r\n\r\n".to_vec()),
            (
                "header without colon",
                b"GET /chat HTTP/1.1\r\nHost: x\r\nBad Header Line\r\n\r\n".to_vec(),
            ),
            (
                "TLS client hello",
                vec![
                    0x16, 0x03, 0x01, 0x00, 0xa5, 0x01, 0x00, 0x00, 0xa1, 0x03, 0x03, b'\r', b'\n',
                    b'\r', b'\n',
                ],
            ),
        ],
    );
}

#[test]
fn request_head_over_8_kib_is_431() {
    let server = Server::start(&[]);
    let big = format!("X-Filler: {}", "f".repeat(9000));
    let with_end = upgrade_request("/chat", KEY, &[&big]).into_bytes();
    let mut without_end = format!("GET /chat HTTP/1.1\r\nHost: x\r\n{big}\r\n").into_bytes();
    without_end.extend_from_slice(b"X-More: 1\r\n");
    expect_status_for_each(
        server.addr,
        431,
        &[
            ("complete 9 KiB head", with_end),
            ("unterminated 9 KiB head", without_end),
        ],
    );
}

/// A head just under the limit (about 7.5 KiB) is fine.
#[test]
fn request_head_under_8_kib_is_accepted() {
    let server = Server::start(&[]);
    let filler = format!("X-Filler: {}", "f".repeat(7500));
    let request = upgrade_request("/chat", KEY, &[&filler]);
    assert!(request.len() < 8 * 1024);
    let (response, _stream) = http_request(server.addr, request.as_bytes());
    assert_eq!(response.status, 101, "{:?}", response.head_text);
}

/// Header names and the `Upgrade`/`Connection` tokens are case-insensitive, and
/// `Connection` may list several tokens (as Firefox sends).
#[test]
fn upgrade_headers_are_matched_case_insensitively() {
    let server = Server::start(&[]);
    let variants = [
        "GET /chat HTTP/1.1\r\nhost: x\r\nupgrade: WebSocket\r\nconnection: keep-alive, Upgrade\r\n\
         sec-websocket-key: dGhlIHNhbXBsZSBub25jZQ==\r\nsec-websocket-version: 13\r\n\r\n",
        "GET /chat HTTP/1.1\r\nHOST: x\r\nUPGRADE: WEBSOCKET\r\nCONNECTION: UPGRADE\r\n\
         SEC-WEBSOCKET-KEY: dGhlIHNhbXBsZSBub25jZQ==\r\nSEC-WEBSOCKET-VERSION: 13\r\n\
         Origin: http://example.com\r\n\r\n",
    ];
    let accept = tungstenite::handshake::derive_accept_key(KEY.as_bytes());
    for request in variants {
        let (response, _stream) = http_request(server.addr, request.as_bytes());
        assert_eq!(
            response.status, 101,
            "{request:?} -> {:?}",
            response.head_text
        );
        assert_eq!(
            response.header("sec-websocket-accept"),
            Some(accept.as_str())
        );
        let upgrade = response.header("upgrade").unwrap_or_default();
        assert!(
            upgrade.eq_ignore_ascii_case("websocket"),
            "{:?}",
            response.head_text
        );
    }
}

/// A request head arriving in several TCP segments is assembled.
#[test]
fn request_head_split_across_writes_is_accepted() {
    let server = Server::start(&[]);
    let request = upgrade_request("/split", KEY, &[]);
    let mut stream = std::net::TcpStream::connect(server.addr).unwrap();
    stream.set_nodelay(true).unwrap();
    stream.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    let bytes = request.as_bytes();
    for chunk in [
        &bytes[..5],
        &bytes[5..40],
        &bytes[40..bytes.len() - 1],
        &bytes[bytes.len() - 1..],
    ] {
        stream.write_all(chunk).unwrap();
        // Deliberate: a pause so that each chunk reaches the server in a read of its own (the
        // case under test); nothing is waited for.
        thread::sleep(Duration::from_millis(50));
    }
    let mut raw = RawWs { stream };
    let head = raw.read_response_head();
    assert!(head.starts_with("HTTP/1.1 101"), "{head:?}");
    raw.send(&frame(true, 0, OP_TEXT, b"split ok"));
    assert_eq!(raw.expect_message(), (OP_TEXT, b"split ok".to_vec()));
}

/// A frame sent in the same segment as the request head is not lost.
#[test]
fn frame_sent_together_with_the_request_head_is_processed() {
    let server = Server::start(&[]);
    let mut bytes = upgrade_request("/eager", KEY, &[]).into_bytes();
    bytes.extend(frame(true, 0, OP_TEXT, b"eager"));
    let stream = std::net::TcpStream::connect(server.addr).unwrap();
    stream.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    let mut raw = RawWs { stream };
    raw.send(&bytes);
    let head = raw.read_response_head();
    assert!(head.starts_with("HTTP/1.1 101"), "{head:?}");
    assert_eq!(raw.expect_message(), (OP_TEXT, b"eager".to_vec()));
}
