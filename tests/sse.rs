//! Server-Sent Events over real sockets, read like `curl -N` reads them: the stream format
//! (ids, event types, multi-line text, base64 binary, `retry:`, heartbeats), `Last-Event-ID`
//! recovery (exactly what was missed, or a `gap` event), several topics in one stream, and
//! SSE streams as ordinary subscribers: same order as WebSocket subscribers, access control,
//! slow-consumer close, drain, `/metrics`, TLS.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use nix::sys::signal::Signal;
use serde_json::json;
use testkit::*;

/// Publish over HTTP; the message's number (`None`: nobody subscribed yet, not numbered).
fn publish_any(server: &Server, topic: &str, body: &str) -> Option<u64> {
    let (status, answer) = post(server.addr, topic, "text/plain", "", body.as_bytes());
    assert_eq!(status, 202, "publish {body:?}: {answer}");
    let v: serde_json::Value = serde_json::from_str(&answer).expect("json");
    v["seq"].as_u64()
}

/// Publish to a topic with a subscriber; its number.
fn publish(server: &Server, topic: &str, body: &str) -> u64 {
    publish_any(server, topic, body).expect("a subscribed topic numbers every message")
}

/// Open a stream and make sure it is live: a marker published after the open comes back.
fn live_stream(server: &Server, target: &str, topic: &str, extra: &[&str]) -> SseClient {
    let mut sse = SseClient::connect(server.addr, target, extra);
    assert_eq!(sse.status, 200, "{}", sse.head);
    sync_stream(server, &mut sse, topic);
    sse
}

/// Publish markers until one comes back on the stream (its joins are asynchronous), reading
/// everything before it.
fn sync_stream(server: &Server, sse: &mut SseClient, topic: &str) {
    sse.set_read_timeout(Duration::from_millis(200));
    for attempt in 0..50 {
        let marker = format!("sync-{attempt}");
        // Before the stream's join reaches the owner, nobody may subscribe yet.
        publish_any(server, topic, &marker);
        loop {
            match sse.poll_event() {
                Ok(Some((_, _, data))) if data == marker => {
                    sse.set_read_timeout(IO_TIMEOUT);
                    return;
                }
                Ok(Some(_)) => continue,
                Ok(None) => panic!("the stream ended while syncing"),
                Err(_) => break,
            }
        }
    }
    panic!("the stream never received a marker");
}

fn event(sse: &mut SseClient) -> (String, String, String) {
    sse.next_event()
        .expect("an event, not the end of the stream")
}

#[test]
fn a_topic_streams_as_events_with_ids_text_lines_and_base64_binary() {
    let server = Server::start(&["--threads", "2"]);
    let mut sse = SseClient::connect(server.addr, "/news", &[]);
    assert_eq!(sse.status, 200);
    assert!(sse.head.contains("Content-Type: text/event-stream"));
    assert_eq!(sse.next_item(), Some(SseItem::Retry(1000)));
    sync_stream(&server, &mut sse, "news");

    let seq = publish(&server, "news", "line one\nline two\r\nline three");
    let (id, kind, data) = event(&mut sse);
    let (epoch, n) = id.rsplit_once(':').expect("id is epoch:seq");
    assert!(!epoch.is_empty());
    assert_eq!(n.parse::<u64>().unwrap(), seq);
    assert_eq!(kind, "news");
    assert_eq!(data, "line one\nline two\nline three");

    let (status, _) = post(
        server.addr,
        "news",
        "application/octet-stream",
        "",
        &[0, 159, 146, 150],
    );
    assert_eq!(status, 202);
    let (id2, kind, data) = event(&mut sse);
    assert_eq!(id2, format!("{epoch}:{}", seq + 1));
    assert_eq!(kind, "news;base64");
    assert_eq!(data, "AJ+Slg==");

    // A WebSocket subscriber and the stream see the same messages in the same order, from
    // two publishers.
    let mut ws = connect(server.addr, "news");
    sync(&mut ws, "ws-sync");
    sync_stream(&server, &mut sse, "news");
    let mut a = connect(server.addr, "news");
    for i in 0..20 {
        send_text(&mut a, &format!("ws-{i}"));
        publish(&server, "news", &format!("http-{i}"));
    }
    let mut from_ws = Vec::new();
    let mut from_sse = Vec::new();
    while from_ws.len() < 40 {
        let text = recv_text(&mut ws);
        if text.starts_with("ws-") || text.starts_with("http-") {
            from_ws.push(text);
        }
    }
    while from_sse.len() < 40 {
        let (_, _, data) = event(&mut sse);
        if data.starts_with("ws-") || data.starts_with("http-") {
            from_sse.push(data);
        }
    }
    assert_eq!(
        from_sse, from_ws,
        "one order per topic for every subscriber"
    );
}

#[test]
fn last_event_id_resumes_exactly_or_reports_a_gap() {
    let server = Server::start(&["--threads", "2", "--history", "5"]);
    let mut sse = live_stream(&server, "/feed", "feed", &[]);
    publish(&server, "feed", "m1");
    let (last_id, _, data) = event(&mut sse);
    assert_eq!(data, "m1");
    drop(sse);

    // Missed while away: exactly these come back, then the live stream.
    publish(&server, "feed", "m2");
    publish(&server, "feed", "m3");
    let header = format!("Last-Event-ID: {last_id}");
    let mut back = SseClient::connect(server.addr, "/feed", &[&header]);
    assert_eq!(back.status, 200);
    assert_eq!(event(&mut back).2, "m2");
    let (m3_id, _, m3) = event(&mut back);
    assert_eq!(m3, "m3");
    publish(&server, "feed", "m4");
    assert_eq!(event(&mut back).2, "m4", "then live, nothing twice");
    drop(back);

    // Too long away (history keeps 5): a gap event, whose id is where the stream goes on.
    for i in 0..8 {
        publish(&server, "feed", &format!("lost-{i}"));
    }
    let header = format!("Last-Event-ID: {m3_id}");
    let mut late = SseClient::connect(server.addr, "/feed", &[&header]);
    let (gap_id, kind, data) = event(&mut late);
    assert_eq!(kind, "gap");
    let gap: serde_json::Value = serde_json::from_str(&data).expect("gap data is JSON");
    assert_eq!(gap["topic"], "feed");
    assert_eq!(gap["reason"], "history_gap");
    let next = publish(&server, "feed", "after-gap");
    let (id, _, data) = event(&mut late);
    assert_eq!(data, "after-gap");
    assert!(id.ends_with(&format!(":{next}")));
    assert!(gap_id.ends_with(&format!(":{}", next - 1)), "{gap_id}");

    // Another epoch (another life of the topic): a gap too, `epoch_changed`.
    let mut other = SseClient::connect(server.addr, "/feed", &["Last-Event-ID: 0.0.0:3"]);
    let (_, kind, data) = event(&mut other);
    assert_eq!(kind, "gap");
    assert!(data.contains("epoch_changed"), "{data}");

    // Garbage is refused, not guessed at.
    let bad = SseClient::connect(server.addr, "/feed", &["Last-Event-ID: nonsense"]);
    assert_eq!(bad.status, 400);
}

#[test]
fn one_stream_of_several_topics_resumes_every_topic() {
    let server = Server::start(&["--threads", "2", "--history", "50"]);
    let mut sse = SseClient::connect(server.addr, "/sse?topic=a&topic=b", &[]);
    assert_eq!(sse.status, 200);
    sync_stream(&server, &mut sse, "a");
    sync_stream(&server, &mut sse, "b");
    publish(&server, "a", "a1");
    publish(&server, "b", "b1");
    // Two topics, two orders (their owners may differ, and a batch may be held): either
    // may come first; the later event's id covers both.
    let (_, first_kind, first) = event(&mut sse);
    let (id, kind, data) = event(&mut sse);
    let mut both = [(first_kind, first), (kind, data)];
    both.sort();
    assert_eq!(both, [("a".into(), "a1".into()), ("b".into(), "b1".into())]);
    let parts: Vec<&str> = id.split(',').collect();
    assert_eq!(parts.len(), 2, "the id covers both topics: {id}");
    drop(sse);

    publish(&server, "a", "a2");
    publish(&server, "b", "b2");
    publish(&server, "a", "a3");
    let header = format!("Last-Event-ID: {id}");
    let mut back = SseClient::connect(server.addr, "/sse?topic=a&topic=b", &[&header]);
    let mut got: Vec<(String, String)> = (0..3)
        .map(|_| {
            let (_, k, d) = event(&mut back);
            (k, d)
        })
        .collect();
    got.sort();
    assert_eq!(
        got,
        vec![
            ("a".into(), "a2".into()),
            ("a".into(), "a3".into()),
            ("b".into(), "b2".into())
        ]
    );
    // The id's topic count must match the stream's.
    let wrong = SseClient::connect(server.addr, "/sse?topic=a", &[&header]);
    assert_eq!(wrong.status, 400);
    let none = SseClient::connect(server.addr, "/sse", &[]);
    assert_eq!(none.status, 400);
}

const SECRET: &str = "test-secret-test-secret-test-secret!";

/// A stream is subscribed when its head arrives (`EventSource.onopen`), like a raw path
/// WebSocket at its 101: a message published right after reaches it, also when the topic's
/// owner is the other worker (the stream's join reaches the owner before the head leaves,
/// and an owner takes in its inbox before it reads its sockets). Each round is a new topic,
/// published at once, with both cores kept busy.
#[test]
fn a_post_right_after_the_head_reaches_the_new_stream() {
    const ROUNDS: usize = 400;
    let server = Server::start(&["--threads", "2"]);
    let busy = BusyCores::start(2);
    let mut missed = Vec::new();
    for round in 0..ROUNDS {
        let topic = format!("fresh-{round}");
        let mut sse = SseClient::connect(server.addr, &format!("/{topic}"), &[]);
        assert_eq!(sse.status, 200, "{}", sse.head);
        match publish_any(&server, &topic, "first") {
            Some(1) => {}
            other => {
                missed.push((round, other));
                continue;
            }
        }
        let (_, _, data) = event(&mut sse);
        assert_eq!(data, "first", "round {round}");
    }
    drop(busy);
    assert!(
        missed.is_empty(),
        "{} of {ROUNDS} posts did not find the new stream (round, seq): {missed:?}",
        missed.len()
    );
}

fn token(subscribe: &[&str]) -> String {
    let claims = json!({"sub": "t", "exp": testkit::jwt::in_an_hour(), "subscribe": subscribe});
    testkit::jwt::hs256(SECRET, &claims)
}

#[test]
fn streams_are_access_controlled_like_websockets() {
    let server = Server::start(&["--jwt-secret", SECRET, "--publish-key", "pk"]);
    let prices = token(&["prices/*"]);
    let status =
        |target: &str, extra: &[&str]| SseClient::connect(server.addr, target, extra).status;
    assert_eq!(status("/prices/x", &[]), 401);
    assert_eq!(status("/prices/x?token=abc.def", &[]), 401);
    assert_eq!(status(&format!("/news?token={prices}"), &[]), 403);
    assert_eq!(
        status(
            &format!("/sse?topic=prices/x&topic=news&token={prices}"),
            &[]
        ),
        403
    );
    let bearer = format!("Authorization: Bearer {prices}");
    let mut sse = SseClient::connect(server.addr, "/prices/x", &[&bearer]);
    assert_eq!(sse.status, 200);
    let mut by_query = SseClient::connect(server.addr, &format!("/prices/x?token={prices}"), &[]);
    assert_eq!(by_query.status, 200);
    for attempt in 0..50 {
        let (s, _) = post(
            server.addr,
            "prices/x",
            "text/plain",
            "Authorization: Bearer pk\r\n",
            format!("p{attempt}").as_bytes(),
        );
        assert_eq!(s, 202);
        std::thread::sleep(Duration::from_millis(20));
        if attempt > 5 {
            break;
        }
    }
    let (_, kind, _) = event(&mut sse);
    assert_eq!(kind, "prices/x");
    let (_, kind, _) = event(&mut by_query);
    assert_eq!(kind, "prices/x");
}

/// The `/metrics` value of a metric without labels.
fn metric(server: &Server, name: &str) -> u64 {
    let (response, _) = http_request(server.addr, b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n");
    let body = String::from_utf8_lossy(&response.body).to_string();
    body.lines()
        .find_map(|l| l.strip_prefix(&format!("{name} ")))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("{name} not in /metrics"))
}

#[test]
fn a_stream_that_does_not_read_is_closed_as_a_slow_consumer_and_counted() {
    let server = Server::start(&["--threads", "1", "--max-backlog", "65536"]);
    let mut bystander = live_stream(&server, "/flood", "flood", &[]);
    // A stream that never reads: a tiny receive buffer so the backlog builds quickly.
    let slow = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    slow.set_recv_buffer_size(4096).unwrap();
    slow.connect(&server.addr.into()).unwrap();
    let mut slow: TcpStream = slow.into();
    slow.write_all(sse_request("/flood", &[]).as_bytes())
        .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let before = metric(&server, "herald_slow_consumer_closes_total");
    let big = "x".repeat(16 * 1024);
    let mut closed = false;
    for i in 0..400 {
        publish(&server, "flood", &format!("{i}{big}"));
        // The bystander keeps up.
        let (_, _, data) = event(&mut bystander);
        assert!(data.starts_with(&i.to_string()));
        if metric(&server, "herald_slow_consumer_closes_total") > before {
            closed = true;
            break;
        }
    }
    assert!(closed, "the stream that does not read was never closed");
    // Its stream ends (after whatever was in flight, and the comment saying why).
    slow.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut rest = Vec::new();
    let mut buf = [0u8; 65536];
    loop {
        match slow.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => rest.extend_from_slice(&buf[..n]),
            Err(_) => break, // reset after the grace: also an end
        }
    }
    assert!(metric(&server, "herald_deliveries_total") > 0);
}

#[test]
fn heartbeats_keep_a_quiet_stream_alive_and_a_drain_ends_it() {
    let mut server = Server::start(&["--threads", "2", "--ping-interval", "1s"]);
    let mut sse = live_stream(&server, "/quiet", "quiet", &[]);
    // Quiet for 3 ping intervals: not dropped (an SSE client never sends), heartbeats come.
    let mut beats = 0;
    sse.set_read_timeout(Duration::from_secs(5));
    while beats < 3 {
        match sse.next_item() {
            Some(SseItem::Comment(c)) if c == "heartbeat" => beats += 1,
            Some(other) => panic!("unexpected {other:?}"),
            None => panic!("the quiet stream was closed"),
        }
    }
    let delivered = metric(&server, "herald_deliveries_total");
    assert!(delivered >= 1, "stream deliveries are counted");

    // Drain: the stream ends with a comment and EOF, so an EventSource reconnects elsewhere.
    server.signal(Signal::SIGTERM);
    let mut said_why = false;
    loop {
        match sse.next_item() {
            Some(SseItem::Comment(c)) if c.contains("shutting down") => said_why = true,
            Some(_) => {}
            None => break,
        }
    }
    assert!(said_why);
    assert!(server.wait_exit(Duration::from_secs(10)).is_some());
}

#[test]
fn streams_work_over_tls() {
    let cert = TestCert::generate();
    let (c, k) = (cert.cert_arg(), cert.key_arg());
    let mut server = Server::start(&[
        "--threads",
        "2",
        "--listen-tls",
        "127.0.0.1:0",
        "--tls-cert",
        &c,
        "--tls-key",
        &k,
    ]);
    let line = server
        .wait_prefix("listening on wss://", Duration::from_secs(10))
        .expect("a `listening on wss://` line");
    let tls_addr: std::net::SocketAddr = line
        .trim_start_matches("listening on wss://")
        .parse()
        .expect("wss address");
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let conn = rustls::ClientConnection::new(cert.client_config(), name).unwrap();
    let tcp = TcpStream::connect(tls_addr).unwrap();
    let mut tls = rustls::StreamOwned::new(conn, tcp.try_clone().unwrap());
    tls.write_all(sse_request("/secure", &[]).as_bytes())
        .unwrap();
    let mut sse = SseClient::over(tcp, Box::new(tls));
    assert_eq!(sse.status, 200, "{}", sse.head);
    sync_stream(&server, &mut sse, "secure");
    publish(&server, "secure", "over tls\nsecond line");
    let (_, kind, data) = event(&mut sse);
    assert_eq!(
        (kind.as_str(), data.as_str()),
        ("secure", "over tls\nsecond line")
    );
}
