//! Hostile and unauthorized clients over real sockets: tokens (missing, wrong, expired,
//! forbidden topic, expiring on an open connection), the publish key, origins, connection
//! limits, rate limits, oversized and garbage requests. Each gets its documented answer, and
//! a bystander on the same server keeps receiving throughout.

use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use serde_json::{json, Value};
use testkit::*;

const SECRET: &str = "test-secret-test-secret-test-secret!";
const KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn token(claims: Value) -> String {
    testkit::jwt::hs256(SECRET, &claims)
}

/// A token for `sub` valid for an hour with these grants.
fn grant(subscribe: &[&str], publish: &[&str]) -> String {
    token(json!({"sub": "tester", "exp": now() + 3600, "subscribe": subscribe, "publish": publish}))
}

/// Status of an upgrade of `path` with extra headers.
fn upgrade_status(addr: SocketAddr, path: &str, headers: &[&str]) -> u16 {
    let (response, _) = http_request(addr, upgrade_request(path, KEY, headers).as_bytes());
    response.status
}

/// A subscriber and a publisher on `bystander`, to check that the server still serves
/// everyone else after each hostile case.
struct Bystander {
    sub: RawWs,
    n: usize,
}

impl Bystander {
    fn new(addr: SocketAddr, headers: &[&str]) -> Bystander {
        let (mut sub, _) = RawWs::connect_with(addr, "bystander", headers);
        // Its own message coming back proves the subscription is in effect at the topic's
        // owner (same channel, in order), so no later publish can miss it.
        sub.send(&frame(true, 0, OP_TEXT, b"sync"));
        assert_eq!(sub.expect_message(), (OP_TEXT, b"sync".to_vec()));
        Bystander { sub, n: 0 }
    }

    /// Publishes one message to the topic (via `publish_headers` over HTTP) and reads it.
    fn check(&mut self, addr: SocketAddr, publish_headers: &str, case: &str) {
        self.n += 1;
        let body = format!("still serving {}", self.n);
        let status = post(
            addr,
            "bystander",
            "text/plain",
            publish_headers,
            body.as_bytes(),
        )
        .0;
        assert_eq!(
            status, 202,
            "after {case}: the bystander's publish was refused"
        );
        let (op, payload) = self.sub.expect_message();
        assert_eq!((op, payload), (OP_TEXT, body.into_bytes()), "after {case}");
    }
}

#[test]
fn tokens_decide_who_may_subscribe_and_publish() {
    let server = Server::start(&[
        "--threads",
        "2",
        "--jwt-secret",
        SECRET,
        "--jwt-leeway",
        "0s",
    ]);
    let addr = server.addr;
    let all = grant(&["*"], &["*"]);
    let bearer_all = format!("Authorization: Bearer {all}");
    let mut bystander = Bystander::new(addr, &[&bearer_all]);
    bystander.check(addr, &format!("{bearer_all}\r\n"), "start");

    let prices = grant(&["prices/*"], &[]);
    let expired = token(json!({"exp": now() - 5, "subscribe": ["*"]}));
    let forged = encode(
        &Header::new(Algorithm::HS256),
        &json!({"exp": now() + 60, "subscribe": ["*"]}),
        &EncodingKey::from_secret(b"someone else's secret, long enough"),
    )
    .unwrap();
    let mut failures = Vec::new();
    let cases: Vec<(&str, String, Vec<String>, u16)> = vec![
        ("no token", "/prices/BTC".into(), vec![], 401),
        (
            "forged token",
            format!("/prices/BTC?token={forged}"),
            vec![],
            401,
        ),
        (
            "expired token",
            format!("/prices/BTC?token={expired}"),
            vec![],
            401,
        ),
        (
            "garbage token",
            "/prices/BTC?token=abc.def".into(),
            vec![],
            401,
        ),
        (
            "granted topic, query token",
            format!("/prices/BTC?token={prices}"),
            vec![],
            101,
        ),
        (
            "granted topic, bearer header",
            "/prices/ETH".into(),
            vec![format!("Authorization: Bearer {prices}")],
            101,
        ),
        (
            "topic not granted",
            format!("/chat?token={prices}"),
            vec![],
            403,
        ),
    ];
    let total = cases.len();
    for (name, path, headers, want) in cases {
        let headers: Vec<&str> = headers.iter().map(String::as_str).collect();
        let got = upgrade_status(addr, &path, &headers);
        if got != want {
            failures.push(format!("{name}: got {got}, want {want}"));
        }
        bystander.check(addr, &format!("{bearer_all}\r\n"), name);
    }
    assert_all_cases_passed(&failures, total);

    // HTTP publish needs a token granting the topic.
    assert_eq!(post(addr, "chat", "text/plain", "", b"x").0, 401);
    assert_eq!(
        post(
            addr,
            "chat",
            "text/plain",
            &format!("Authorization: Bearer {prices}\r\n"),
            b"x"
        )
        .0,
        403
    );
    let chat_publisher = grant(&[], &["chat"]);
    assert_eq!(
        post(
            addr,
            "chat",
            "text/plain",
            &format!("Authorization: Bearer {chat_publisher}\r\n"),
            b"x"
        )
        .0,
        202
    );

    // A raw subscriber whose token does not grant publishing is closed with 1008 if it sends.
    let (mut reader, _) = RawWs::connect_with(addr, &format!("prices/BTC?token={prices}"), &[]);
    reader.send(&frame(true, 0, OP_TEXT, b"may I?"));
    assert_eq!(reader.expect_close(), Ok(Some(1008)));
    bystander.check(addr, &format!("{bearer_all}\r\n"), "publish without grant");

    // herald.v1 with the token as a subprotocol entry: per-topic answers.
    let v1_token = grant(&["prices/*"], &["prices/BTC"]);
    let protocols = format!("Sec-WebSocket-Protocol: herald.v1, bearer.{v1_token}");
    let (mut v1, response) = RawWs::connect_with(addr, "", &[&protocols]);
    assert_eq!(response.header("sec-websocket-protocol"), Some("herald.v1"));
    let request = json!({"op": "subscribe", "id": 1, "topics": ["prices/BTC", "chat"]}).to_string();
    v1.send(&frame(true, 0, OP_TEXT, request.as_bytes()));
    let mut replies: Vec<Value> = (0..2)
        .map(|_| serde_json::from_slice(&v1.expect_message().1).unwrap())
        .collect();
    replies.sort_by_key(|r| r["topic"].as_str().unwrap_or_default().to_string());
    assert_eq!(
        (replies[0]["type"].as_str(), replies[0]["code"].as_str()),
        (Some("error"), Some("forbidden")),
        "{replies:?}"
    );
    assert_eq!(replies[1]["type"], "subscribed", "{replies:?}");
    for (id, topic, want) in [(2, "prices/ETH", "error"), (3, "prices/BTC", "published")] {
        let request = json!({"op": "publish", "id": id, "topic": topic, "data": "d"}).to_string();
        v1.send(&frame(true, 0, OP_TEXT, request.as_bytes()));
        loop {
            let reply: Value = serde_json::from_slice(&v1.expect_message().1).unwrap();
            if reply["type"] == "message" {
                continue; // its own message on prices/BTC
            }
            assert_eq!(reply["type"], want, "publish to {topic}: {reply}");
            assert_eq!(reply["id"], id);
            break;
        }
    }
    bystander.check(addr, &format!("{bearer_all}\r\n"), "herald.v1");
}

#[test]
fn a_connection_is_closed_when_its_token_expires() {
    let server = Server::start(&["--jwt-secret", SECRET, "--jwt-leeway", "0s"]);
    let short = token(json!({"exp": now() + 2, "subscribe": ["*"]}));
    let (mut ws, _) = RawWs::connect_with(server.addr, &format!("t?token={short}"), &[]);
    let long = grant(&["*"], &["*"]);
    let (mut other, _) = RawWs::connect_with(server.addr, &format!("t?token={long}"), &[]);
    let started = Instant::now();
    ws.set_read_timeout(Duration::from_secs(10));
    let frame = ws.expect_frame();
    assert_eq!(frame.close_code(), Some(1008), "{frame:?}");
    assert!(String::from_utf8_lossy(&frame.payload[2..]).contains("token expired"));
    assert!(
        started.elapsed() <= Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    // The other connection is untouched.
    other.send(&frame_text(b"ping-pong"));
    assert_eq!(other.expect_message(), (OP_TEXT, b"ping-pong".to_vec()));
}

fn frame_text(payload: &[u8]) -> Vec<u8> {
    frame(true, 0, OP_TEXT, payload)
}

#[test]
fn public_keys_verify_es256_tokens_and_bad_key_files_stop_the_start() {
    let dir = std::env::temp_dir().join(format!("herald-es256-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let pair = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let public = dir.join("public.pem");
    std::fs::write(&public, pair.public_key_pem()).unwrap();
    let server = Server::start(&["--jwt-public-key", public.to_str().unwrap()]);
    let es256 = encode(
        &Header::new(Algorithm::ES256),
        &json!({"exp": now() + 60, "subscribe": ["t"]}),
        &EncodingKey::from_ec_pem(pair.serialize_pem().as_bytes()).unwrap(),
    )
    .unwrap();
    assert_eq!(
        upgrade_status(server.addr, &format!("/t?token={es256}"), &[]),
        101
    );
    // An HS256 token (signed with anything) is not accepted by an ES256 server.
    assert_eq!(
        upgrade_status(
            server.addr,
            &format!("/t?token={}", grant(&["t"], &[])),
            &[]
        ),
        401
    );

    let bad = dir.join("bad.pem");
    std::fs::write(&bad, "not a key").unwrap();
    let out = std::process::Command::new(herald_bin())
        .args([
            "--listen",
            "127.0.0.1:0",
            "--jwt-public-key",
            bad.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("bad.pem") && stderr.contains("public key"),
        "{stderr}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn the_publish_key_guards_http_publishing_and_anonymous_mode_is_announced() {
    let mut server = Server::start(&["--publish-key", "backend-key"]);
    let line = server
        .line_starting("auth:", Duration::from_secs(5))
        .expect("auth line");
    assert!(
        line.contains("anonymous") && line.contains("publish key"),
        "{line}"
    );
    let addr = server.addr;
    let mut sub = connect(addr, "news");
    sync(&mut sub, "news");
    assert_eq!(post(addr, "news", "text/plain", "", b"x").0, 401);
    assert_eq!(
        post(
            addr,
            "news",
            "text/plain",
            "Authorization: Bearer wrong-key\r\n",
            b"x"
        )
        .0,
        401
    );
    assert_eq!(
        post(
            addr,
            "news",
            "text/plain",
            "Authorization: Bearer backend-key\r\n",
            b"hello"
        )
        .0,
        202
    );
    assert_eq!(recv_text(&mut sub), "hello");
}

#[test]
fn only_listed_origins_may_open_websockets() {
    let server = Server::start(&["--allowed-origins", "https://app.example.com"]);
    let addr = server.addr;
    assert_eq!(
        upgrade_status(addr, "/t", &["Origin: https://app.example.com"]),
        101
    );
    assert_eq!(
        upgrade_status(addr, "/t", &["Origin: https://evil.example"]),
        403
    );
    assert_eq!(
        upgrade_status(addr, "/t", &[]),
        101,
        "no Origin: not a browser"
    );
}

/// Upgrade from a given loopback source address; returns the status and the stream.
fn upgrade_from(source: IpAddr, addr: SocketAddr, path: &str) -> (u16, TcpStream) {
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    socket.bind(&SocketAddr::new(source, 0).into()).unwrap();
    socket.connect(&addr.into()).unwrap();
    let mut stream: TcpStream = socket.into();
    stream.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    stream
        .write_all(upgrade_request(path, KEY, &[]).as_bytes())
        .unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        assert_eq!(
            stream.read(&mut byte).unwrap(),
            1,
            "closed before the response"
        );
        head.push(byte[0]);
    }
    let status = String::from_utf8_lossy(&head[9..12]).parse().unwrap();
    (status, stream)
}

#[test]
fn connection_limits_answer_503_and_429_and_free_up_on_close() {
    let server = Server::start(&[
        "--threads",
        "2",
        "--max-conns",
        "4",
        "--max-conns-per-ip",
        "2",
    ]);
    let addr = server.addr;
    let (one, two, three) = (
        "127.0.0.1".parse().unwrap(),
        "127.0.0.2".parse().unwrap(),
        "127.0.0.3".parse().unwrap(),
    );
    let (s, a1) = upgrade_from(one, addr, "/t");
    assert_eq!(s, 101);
    let (s, _a2) = upgrade_from(one, addr, "/t");
    assert_eq!(s, 101);
    assert_eq!(
        upgrade_from(one, addr, "/t").0,
        429,
        "third from one address"
    );
    let (s, _b1) = upgrade_from(two, addr, "/t");
    assert_eq!(s, 101);
    let (s, _b2) = upgrade_from(two, addr, "/t");
    assert_eq!(s, 101);
    assert_eq!(upgrade_from(three, addr, "/t").0, 503, "fifth in total");
    // The listener keeps working for plain requests, and a closed WebSocket frees its place.
    let (health, _) = http_request(addr, b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(health.status, 200);
    drop(a1);
    assert!(
        wait_until(Duration::from_secs(5), || upgrade_from(three, addr, "/t").0
            == 101),
        "the place of a closed connection was not given back"
    );
}

#[test]
fn a_client_over_its_rate_limit_is_closed_and_others_go_on() {
    let server = Server::start(&["--rate-limit-msgs", "20", "--rate-limit-bytes", "4000"]);
    let addr = server.addr;
    let mut bystander = Bystander::new(addr, &[]);
    // 20 messages at once pass (one second's burst); the 21st does not.
    let (mut chatty, _) = RawWs::connect_with(addr, "chatty", &[]);
    for i in 0..25 {
        if chatty
            .try_send(&frame_text(format!("m{i}").as_bytes()))
            .is_err()
        {
            break;
        }
    }
    let code = loop {
        let f = chatty.expect_frame();
        if f.opcode == OP_CLOSE {
            break f.close_code();
        }
    };
    assert_eq!(code, Some(1008));
    bystander.check(addr, "", "message rate");
    // Bytes: one 5,000-byte message is over 4,000 bytes/s.
    let (mut bulky, _) = RawWs::connect_with(addr, "bulky", &[]);
    bulky.send(&frame(true, 0, OP_BINARY, &[7u8; 5000]));
    assert_eq!(bulky.expect_close(), Ok(Some(1008)));
    bystander.check(addr, "", "byte rate");
}

#[test]
fn oversized_and_garbage_requests_get_their_answer_and_others_go_on() {
    let server = Server::start(&["--max-topic-len", "16"]);
    let addr = server.addr;
    let mut bystander = Bystander::new(addr, &[]);
    let huge = format!("X-Filler: {}", "a".repeat(9000));
    assert_eq!(upgrade_status(addr, "/t", &[&huge]), 431);
    bystander.check(addr, "", "oversized head");
    assert_eq!(upgrade_status(addr, "/a-topic-name-over-16", &[]), 400);
    bystander.check(addr, "", "long topic");
    let mut garbage = TcpStream::connect(addr).unwrap();
    garbage.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    garbage
        .write_all(&[
            0x16, 0x03, 0x01, 0xff, 0x00, 0x13, 0x37, b'\r', b'\n', b'\r', b'\n',
        ])
        .unwrap();
    let mut answer = Vec::new();
    let _ = garbage.read_to_end(&mut answer);
    assert!(
        answer.starts_with(b"HTTP/1.1 400"),
        "{:?}",
        String::from_utf8_lossy(&answer)
    );
    bystander.check(addr, "", "garbage bytes");
}
