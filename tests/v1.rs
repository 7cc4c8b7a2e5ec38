//! The `herald.v1` subprotocol over real sockets: many topics per connection, envelopes,
//! publish acks, error codes, and history: `rewind`, `since` recovery with no gap and no
//! duplicate while publishing goes on, and the explicit answers when recovery is impossible.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use testkit::v1::V1;
use testkit::*;
use tungstenite::Message;

#[test]
fn the_subprotocol_is_negotiated_and_raw_mode_is_unchanged() {
    let server = Server::start(&[]);
    let key = "dGhlIHNhbXBsZSBub25jZQ==";
    // herald.v1: any path, the protocol echoed.
    let request = upgrade_request("/", key, &["Sec-WebSocket-Protocol: chat, herald.v1"]);
    let (response, _) = http_request(server.addr, request.as_bytes());
    assert_eq!(response.status, 101, "{response:?}");
    assert_eq!(response.header("sec-websocket-protocol"), Some("herald.v1"));
    // Another protocol only: raw mode, no protocol header, and "/" is still no topic.
    let request = upgrade_request("/chat", key, &["Sec-WebSocket-Protocol: chat"]);
    let (response, _) = http_request(server.addr, request.as_bytes());
    assert_eq!(response.status, 101, "{response:?}");
    assert_eq!(response.header("sec-websocket-protocol"), None);
    let (response, _) = http_request(server.addr, upgrade_request("/", key, &[]).as_bytes());
    assert_eq!(response.status, 400, "{response:?}");
}

#[test]
fn one_connection_gets_many_topics_as_envelopes_and_publishes_with_acks() {
    let server = Server::start(&["--threads", "2"]);
    let mut v1 = V1::connect(server.addr);
    v1.send_subscribe(1, json!(["a", {"topic": "b"}]));
    let mut subscribed: Vec<Value> = (0..2).map(|_| v1.expect("subscribed")).collect();
    subscribed.sort_by_key(|v| v["topic"].as_str().unwrap().to_string());
    for (v, topic) in subscribed.iter().zip(["a", "b"]) {
        assert_eq!(v["id"], 1);
        assert_eq!(v["topic"], topic);
        assert_eq!(v["seq"], 0);
        assert_eq!(v["replayed"], 0);
        assert!(v["epoch"].as_str().is_some_and(|e| !e.is_empty()), "{v}");
    }

    // A raw-mode subscriber and publisher on a; HTTP publishes on b.
    let mut raw = connect(server.addr, "a");
    sync(&mut raw, "raw");
    let m = v1.expect("message");
    assert_eq!(
        m,
        json!({"type": "message", "topic": "a", "seq": 1, "data": "sync:raw"})
    );
    send_text(&mut raw, "hello \"v1\"");
    let m = v1.expect("message");
    assert_eq!(
        m,
        json!({"type": "message", "topic": "a", "seq": 2, "data": "hello \"v1\""})
    );
    assert_eq!(recv_text(&mut raw), "hello \"v1\"");
    assert_eq!(
        post(
            server.addr,
            "b",
            "application/octet-stream",
            "",
            &[0, 1, 255]
        ),
        (202, "{\"seq\":1}".to_string())
    );
    let m = v1.expect("message");
    assert_eq!(
        m,
        json!({"type": "message", "topic": "b", "seq": 1, "data_b64": "AAH/"})
    );

    // Publishing from v1: text and binary, each acknowledged with its number; the raw
    // subscriber gets bare payloads, v1 (subscribed to a) gets its own message back too.
    v1.send(json!({"op": "publish", "id": 7, "topic": "a", "data": "from v1"}));
    v1.send(json!({"op": "publish", "id": 8, "topic": "a", "data_b64": "AQI="}));
    let mut got = Vec::new();
    for _ in 0..4 {
        got.push(v1.recv());
    }
    let acks: Vec<&Value> = got.iter().filter(|v| v["type"] == "published").collect();
    assert_eq!(acks.len(), 2, "{got:?}");
    assert!(
        acks.contains(&&json!({"type": "published", "id": 7, "seq": 3})),
        "{got:?}"
    );
    assert!(
        acks.contains(&&json!({"type": "published", "id": 8, "seq": 4})),
        "{got:?}"
    );
    let msgs: Vec<&Value> = got.iter().filter(|v| v["type"] == "message").collect();
    assert_eq!(msgs[0]["data"], "from v1");
    assert_eq!(msgs[1]["data_b64"], "AQI=");
    assert_eq!(recv_text(&mut raw), "from v1");
    assert_eq!(recv_data(&mut raw), Message::binary(vec![1u8, 2]));
    // Publishing to a topic nobody subscribes to (no history): acknowledged, not numbered.
    v1.send(json!({"op": "publish", "id": 9, "topic": "empty", "data": "x"}));
    assert_eq!(
        v1.expect("published"),
        json!({"type": "published", "id": 9, "seq": null})
    );

    // Unsubscribed from a: a's messages stop, b's go on.
    v1.send(json!({"op": "unsubscribe", "id": 10, "topics": ["a"]}));
    assert_eq!(
        v1.expect("unsubscribed"),
        json!({"type": "unsubscribed", "id": 10, "topic": "a"})
    );
    send_text(&mut raw, "not for v1");
    assert_eq!(recv_text(&mut raw), "not for v1");
    assert_eq!(post(server.addr, "b", "text/plain", "", b"b2").0, 202);
    let m = v1.expect("message");
    assert_eq!(
        (m["topic"].clone(), m["seq"].clone(), m["data"].clone()),
        (json!("b"), json!(2), json!("b2"))
    );
}

#[test]
fn bad_requests_get_error_codes_and_the_connection_goes_on() {
    let mut server = Server::start(&["--max-topics-per-conn", "2", "--stats-interval", "100ms"]);
    let mut v1 = V1::connect(server.addr);
    let mut failures = Vec::new();
    let cases: Vec<(&str, Value, Value)> = vec![
        (
            "not JSON",
            json!("{nope"),
            json!({"id": null, "code": "bad_request"}),
        ),
        (
            "unknown op",
            json!({"op": "dance", "id": 1}),
            json!({"id": 1, "code": "bad_request"}),
        ),
        (
            "publish without data",
            json!({"op": "publish", "id": 2, "topic": "a"}),
            json!({"id": 2, "code": "bad_request"}),
        ),
        (
            "bad topic",
            json!({"op": "subscribe", "id": 3, "topics": ["a b"]}),
            json!({"id": 3, "topic": "a b", "code": "bad_topic"}),
        ),
        (
            "not subscribed",
            json!({"op": "unsubscribe", "id": 4, "topics": ["zz"]}),
            json!({"id": 4, "topic": "zz", "code": "not_subscribed"}),
        ),
        (
            "since and rewind",
            json!({"op": "subscribe", "id": 5, "topics": [{"topic": "a", "rewind": 1, "since": {"epoch": "e", "seq": 1}}]}),
            json!({"id": 5, "code": "bad_request"}),
        ),
    ];
    let total = cases.len();
    for (name, request, want) in cases {
        match &request {
            Value::String(raw) => send_text(&mut v1.ws, raw),
            _ => v1.send(request.clone()),
        }
        let got = v1.expect("error");
        let reason_ok = got["reason"].as_str().is_some_and(|r| !r.is_empty());
        let fields_ok = want
            .as_object()
            .unwrap()
            .iter()
            .all(|(k, v)| got.get(k) == Some(v));
        if !(reason_ok && fields_ok) {
            failures.push(format!("{name}: got {got}, want {want}"));
        }
    }
    assert_all_cases_passed(&failures, total);

    // Per-connection topic limit: the third topic is refused, the first two work.
    v1.send_subscribe(6, json!(["a", "b", "c"]));
    let replies: Vec<Value> = (0..3).map(|_| v1.recv()).collect();
    let refused: Vec<&Value> = replies.iter().filter(|v| v["type"] == "error").collect();
    assert_eq!(refused.len(), 1, "{replies:?}");
    assert_eq!(refused[0]["code"], "too_many_topics");
    assert_eq!(refused[0]["topic"], "c");
    v1.send_subscribe(7, json!(["a"]));
    let again = v1.expect("error");
    assert_eq!(again["code"], "already_subscribed");
    assert_eq!(
        post(server.addr, "b", "text/plain", "", b"still here").0,
        202
    );
    assert_eq!(v1.expect("message")["data"], "still here");
    let counted = server.wait_line(Duration::from_secs(5), |l| {
        stat_field(l, "v1_refusals").is_some_and(|n| n >= 8)
    });
    assert!(
        counted.is_some(),
        "refusals not counted: {:?}",
        server.stdout().last()
    );

    // A binary message is not a request: closed with 1003, other clients unaffected.
    let mut other = V1::connect(server.addr);
    other.send_subscribe(1, json!(["b"]));
    other.expect("subscribed");
    v1.ws.send(Message::binary(vec![1u8, 2, 3])).unwrap();
    let code = loop {
        match v1.ws.read() {
            Ok(Message::Close(frame)) => break frame.map(|f| u16::from(f.code)),
            Ok(_) => continue,
            Err(e) => panic!("expected a close frame, got {e}"),
        }
    };
    assert_eq!(code, Some(1003));
    assert_eq!(post(server.addr, "b", "text/plain", "", b"after").0, 202);
    assert_eq!(other.expect("message")["data"], "after");
}

#[test]
fn rewind_replays_the_last_messages_even_of_a_topic_nobody_subscribed_to() {
    let server = Server::start(&["--threads", "2", "--history", "5"]);
    for i in 1..=8 {
        let body = format!("m{i}");
        assert_eq!(
            post(server.addr, "h", "text/plain", "", body.as_bytes()),
            (202, format!("{{\"seq\":{i}}}"))
        );
    }
    let mut v1 = V1::connect(server.addr);
    v1.send_subscribe(1, json!([{"topic": "h", "rewind": 3}]));
    let s = v1.expect("subscribed");
    assert_eq!(
        (s["seq"].clone(), s["replayed"].clone()),
        (json!(8), json!(3))
    );
    for seq in 6..=8 {
        let m = v1.expect("message");
        assert_eq!(m["seq"], seq);
        assert_eq!(m["data"], format!("m{seq}"));
    }
    assert_eq!(post(server.addr, "h", "text/plain", "", b"live").0, 202);
    let m = v1.expect("message");
    assert_eq!(
        (m["seq"].clone(), m["data"].clone()),
        (json!(9), json!("live"))
    );
}

/// Publishes `count` numbered text messages ("0", "1", …) to `topic` over one kept-alive
/// HTTP connection, pipelined in batches, as fast as the server answers.
fn publish_numbers(addr: SocketAddr, topic: &str, count: usize) {
    let mut stream = TcpStream::connect(addr).expect("connect publisher");
    stream.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    let mut buf = Vec::new();
    let mut chunk = vec![0u8; 64 * 1024];
    let mut sent = 0;
    while sent < count {
        let batch = (count - sent).min(200);
        let mut requests = Vec::new();
        for n in sent..sent + batch {
            let body = n.to_string();
            requests.extend_from_slice(
                format!(
                    "POST /{topic} HTTP/1.1\r\nHost: x\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\r\n{body}",
                    body.len()
                )
                .as_bytes(),
            );
        }
        stream.write_all(&requests).expect("write publishes");
        sent += batch;
        // Read this batch's responses (each "HTTP/1.1 202 …" with a small body).
        let mut answered = 0;
        while answered < batch {
            let text = String::from_utf8_lossy(&buf);
            let complete = text.matches("HTTP/1.1 202").count();
            let bodies = text.matches("}\n").count();
            if complete >= batch && bodies >= batch {
                answered = batch;
                buf.clear();
                continue;
            }
            let n = stream.read(&mut chunk).expect("read publish answers");
            assert!(n > 0, "publisher connection closed");
            buf.extend_from_slice(&chunk[..n]);
        }
    }
}

#[test]
fn a_subscriber_killed_and_resubscribed_with_since_misses_nothing_under_load() {
    const COUNT: usize = 30_000;
    let server = Server::start(&["--threads", "2", "--history", "100000"]);
    let addr = server.addr;
    let mut v1 = V1::connect(addr);
    v1.send_subscribe(1, json!(["feed"]));
    let epoch = v1.expect("subscribed")["epoch"]
        .as_str()
        .unwrap()
        .to_string();

    // Steady raw subscribers on both workers (8 connections spread by SO_REUSEPORT): a
    // rejoining subscriber's worker then already receives the topic, so live messages race
    // the owner's answer, the case the join protocol exists for.
    let steady: Vec<_> = (0..8)
        .map(|_| {
            let mut ws = connect(addr, "feed");
            thread::spawn(move || {
                let mut got = 0;
                while got < COUNT {
                    match ws.read() {
                        Ok(Message::Text(_)) => got += 1,
                        Ok(_) => {}
                        Err(e) => panic!("steady subscriber after {got}: {e}"),
                    }
                }
            })
        })
        .collect();
    let publisher = thread::spawn(move || publish_numbers(addr, "feed", COUNT));
    let mut seen: Vec<u64> = Vec::with_capacity(COUNT);
    let mut reconnects = 0;
    let deadline = Instant::now() + Duration::from_secs(60);
    while seen.len() < COUNT {
        assert!(
            Instant::now() < deadline,
            "stuck at {} messages",
            seen.len()
        );
        let m = v1.recv();
        match m["type"].as_str() {
            Some("message") => {
                let seq = m["seq"].as_u64().unwrap();
                assert_eq!(m["data"], (seq - 1).to_string(), "payload of seq {seq}");
                seen.push(seq);
            }
            Some("subscribed") => {
                assert_eq!(m["epoch"], epoch);
                let start = m["seq"].as_u64().unwrap();
                assert!(start >= seen.last().copied().unwrap_or(0), "{m}");
            }
            _ => panic!("unexpected {m}"),
        }
        // Kill the connection (no close handshake) three times mid-stream, and come back
        // with the last number seen.
        if [3_000, 12_000, 24_000].contains(&seen.len()) && reconnects < 3 && m["type"] == "message"
        {
            reconnects += 1;
            drop(v1);
            v1 = V1::connect(addr);
            let last = *seen.last().unwrap();
            v1.send_subscribe(
                2,
                json!([{"topic": "feed", "since": {"epoch": epoch, "seq": last}}]),
            );
        }
    }
    publisher.join().expect("publisher");
    for s in steady {
        s.join().expect("steady subscriber");
    }
    assert_eq!(reconnects, 3);
    let expected: Vec<u64> = (1..=COUNT as u64).collect();
    if seen != expected {
        let first_bad = seen.iter().zip(&expected).position(|(a, b)| a != b);
        panic!(
            "gap or duplicate: first difference at index {first_bad:?} (len {})",
            seen.len()
        );
    }
}

#[test]
fn recovery_that_cannot_be_complete_is_refused_explicitly() {
    let args = ["--threads", "2", "--history", "3"];
    // Messages 0..10 on topic `t`, each accepted.
    let publish_ten = |addr| {
        for i in 0..10 {
            let status = post(addr, "t", "text/plain", "", format!("{i}").as_bytes()).0;
            assert_eq!(status, 202);
        }
    };
    let server = Server::start(&args);
    publish_ten(server.addr);
    let mut v1 = V1::connect(server.addr);
    v1.send_subscribe(1, json!(["t"]));
    let s = v1.expect("subscribed");
    let epoch = s["epoch"].as_str().unwrap().to_string();
    assert_eq!(s["seq"], 10);
    v1.send(json!({"op": "unsubscribe", "id": 2, "topics": ["t"]}));
    v1.expect("unsubscribed");

    let mut failures = Vec::new();
    let cases = [
        ("too old", json!({"epoch": epoch, "seq": 5}), "history_gap"),
        (
            "other epoch",
            json!({"epoch": "0.0.1", "seq": 9}),
            "epoch_changed",
        ),
        ("ahead", json!({"epoch": epoch, "seq": 11}), "since_ahead"),
    ];
    for (name, since, code) in &cases {
        v1.send_subscribe(3, json!([{"topic": "t", "since": since}]));
        let got = v1.recv();
        if got["type"] != "error" || got["code"] != *code || got["topic"] != "t" {
            failures.push(format!("{name}: got {got}, want error {code}"));
        }
    }
    assert_all_cases_passed(&failures, cases.len());
    // Refused means not subscribed: a plain subscribe works afterwards, and the oldest
    // message still kept (8) can be recovered from.
    v1.send_subscribe(
        4,
        json!([{"topic": "t", "since": {"epoch": epoch, "seq": 7}}]),
    );
    let s = v1.expect("subscribed");
    assert_eq!(s["replayed"], 3);
    for seq in 8..=10 {
        assert_eq!(v1.expect("message")["seq"], seq);
    }

    // A restarted server has new epochs: the old numbers are refused, not misread.
    drop(v1);
    drop(server);
    let server = Server::start(&args);
    publish_ten(server.addr);
    let mut v1 = V1::connect(server.addr);
    v1.send_subscribe(
        1,
        json!([{"topic": "t", "since": {"epoch": epoch, "seq": 9}}]),
    );
    let got = v1.expect("error");
    assert_eq!(got["code"], "epoch_changed", "{got}");
}

#[test]
fn history_memory_is_capped_and_messages_expire() {
    let charge = 1004 + 128; // a 1000-byte text frame plus the per-message overhead
    let cap = (20 * charge).to_string();
    let mut server = Server::start(&[
        "--threads",
        "1",
        "--history",
        "1000",
        "--history-ttl",
        "1s",
        "--history-max-bytes",
        &cap,
        "--stats-interval",
        "100ms",
    ]);
    let body = vec![b'x'; 1000];
    for _ in 0..100 {
        assert_eq!(post(server.addr, "big", "text/plain", "", &body).0, 202);
    }
    let line = server
        .wait_line(Duration::from_secs(5), |l| {
            stat_field(l, "history_msgs") == Some(20)
        })
        .unwrap_or_else(|| {
            panic!(
                "no stats line with history_msgs=20: {:?}",
                server.stdout().last()
            )
        });
    assert_eq!(
        stat_field(&line, "history_bytes"),
        Some(20 * charge as u64),
        "{line}"
    );
    let mut v1 = V1::connect(server.addr);
    v1.send_subscribe(1, json!([{"topic": "big", "rewind": 1000}]));
    assert_eq!(v1.expect("subscribed")["replayed"], 20);
    for seq in 81..=100 {
        assert_eq!(v1.expect("message")["seq"], seq);
    }
    // After the TTL everything is forgotten.
    let expired = server.wait_line(Duration::from_secs(5), |l| {
        stat_field(l, "history_msgs") == Some(0)
    });
    assert!(
        expired.is_some(),
        "history did not expire: {:?}",
        server.stdout().last()
    );
    v1.send_subscribe(2, json!([{"topic": "other", "rewind": 5}]));
    assert_eq!(v1.expect("subscribed")["replayed"], 0);
}
