//! Publishing from a backend over HTTP: `POST /<topic>` delivers the body to the topic's
//! subscribers (same owner, same order as WebSocket publishers) and answers 202 with the
//! message's sequence number; keep-alive and pipelined requests work; bad requests get
//! their status.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use testkit::*;
use tungstenite::Message;

/// Reads `count` responses (each with a Content-Length body) from a kept-alive connection.
fn read_responses(stream: &mut TcpStream, count: usize) -> Vec<(u16, String)> {
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let mut buf = Vec::new();
    let mut out = Vec::new();
    let mut chunk = [0u8; 4096];
    while out.len() < count {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).to_string();
            let len: usize = head
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase()
                        .strip_prefix("content-length:")
                        .map(|v| v.trim().to_string())
                })
                .and_then(|v| v.parse().ok())
                .expect("Content-Length");
            if buf.len() >= end + 4 + len {
                let status = head[9..12].parse().expect("status");
                let body = String::from_utf8_lossy(&buf[end + 4..end + 4 + len]).to_string();
                out.push((status, body));
                buf.drain(..end + 4 + len);
                continue;
            }
        }
        let n = stream.read(&mut chunk).expect("read responses");
        assert!(n > 0, "connection closed after {} responses", out.len());
        buf.extend_from_slice(&chunk[..n]);
    }
    out
}

fn send_raw(addr: SocketAddr, bytes: &[u8]) -> TcpStream {
    let mut stream = TcpStream::connect(addr).expect("connect");
    stream.write_all(bytes).expect("write");
    stream
}

#[test]
fn a_post_reaches_subscribers_with_its_sequence_number() {
    let server = Server::start(&["--threads", "2"]);
    let mut sub = connect(server.addr, "news");
    sync(&mut sub, "sub"); // the sync message is number 1

    let mut conn = send_raw(
        server.addr,
        &post_request("news", "text/plain; charset=utf-8", "", "héllo".as_bytes()),
    );
    assert_eq!(
        read_responses(&mut conn, 1),
        vec![(202, "{\"seq\":2}\n".to_string())]
    );
    assert_eq!(
        recv_data_after_sync(&mut sub),
        Message::text("héllo"),
        "text stays text"
    );

    conn.write_all(&post_request("news", "application/json", "", b"{\"a\":1}"))
        .expect("second post");
    assert_eq!(
        read_responses(&mut conn, 1),
        vec![(202, "{\"seq\":3}\n".to_string())],
        "kept alive"
    );
    assert_eq!(recv_data(&mut sub), Message::text("{\"a\":1}"));

    conn.write_all(&post_request(
        "news",
        "application/octet-stream",
        "",
        &[0, 159, 255],
    ))
    .expect("binary");
    assert_eq!(read_responses(&mut conn, 1)[0].0, 202);
    assert_eq!(
        recv_data(&mut sub),
        Message::binary(vec![0u8, 159, 255]),
        "binary stays binary"
    );
}

#[test]
fn pipelined_posts_are_answered_in_order_and_delivered_in_order() {
    let server = Server::start(&["--threads", "2"]);
    let mut subs: Vec<_> = (0..4).map(|_| connect(server.addr, "pipe")).collect();
    for (i, sub) in subs.iter_mut().enumerate() {
        sync(sub, &format!("s{i}"));
    }
    let mut burst = Vec::new();
    for i in 0..200 {
        burst.extend(post_request(
            "pipe",
            "text/plain",
            "",
            format!("m{i}").as_bytes(),
        ));
    }
    let mut conn = send_raw(server.addr, &burst);
    let responses = read_responses(&mut conn, 200);
    let seqs: Vec<u64> = responses
        .iter()
        .map(|(status, body)| {
            assert_eq!(*status, 202, "{body}");
            body.trim()
                .trim_start_matches("{\"seq\":")
                .trim_end_matches('}')
                .parse()
                .expect("numeric seq")
        })
        .collect();
    assert!(
        seqs.windows(2).all(|w| w[1] == w[0] + 1),
        "consecutive numbers in request order: {seqs:?}"
    );
    for sub in &mut subs {
        for i in 0..200 {
            assert_eq!(recv_data_after_sync(sub), Message::text(format!("m{i}")));
        }
    }
}

/// Raw path mode has no `subscribed` message: the 101 is all a client learns. So a message
/// published right after it must reach the new subscriber, also when the topic's owner is
/// another worker than the subscriber's (its subscription reaches the owner before the 101
/// leaves, and an owner takes in its inbox before it reads its sockets). Each round is a new
/// topic, published at once over a kept-alive HTTP connection, while two threads keep both
/// cores busy so that the workers are preempted at any point of their turns.
#[test]
fn a_post_right_after_the_101_reaches_the_new_path_subscriber() {
    const ROUNDS: usize = 1000;
    let server = Server::start(&["--threads", "2"]);
    let busy = BusyCores::start(2);
    let mut http = TcpStream::connect(server.addr).expect("connect");
    let mut missed = Vec::new();
    for round in 0..ROUNDS {
        let topic = format!("fresh-{round}");
        let mut sub = connect(server.addr, &topic);
        http.write_all(&post_request(&topic, "text/plain", "", b"first"))
            .expect("post");
        let answer = read_responses(&mut http, 1);
        if answer != vec![(202, "{\"seq\":1}\n".to_string())] {
            missed.push((round, answer));
            continue;
        }
        assert_eq!(recv_data(&mut sub), Message::text("first"), "round {round}");
    }
    drop(busy);
    assert!(
        missed.is_empty(),
        "{} of {ROUNDS} posts found no subscriber (round, answer): {missed:?}",
        missed.len()
    );
}

#[test]
fn a_post_to_a_topic_nobody_subscribes_is_accepted_unnumbered() {
    let server = Server::start(&[]);
    let mut conn = send_raw(
        server.addr,
        &post_request("empty", "text/plain", "Connection: close\r\n", b"x"),
    );
    assert_eq!(
        read_responses(&mut conn, 1),
        vec![(202, "{\"seq\":null}\n".to_string())]
    );
    let mut rest = Vec::new();
    conn.read_to_end(&mut rest)
        .expect("closed after Connection: close");
    assert!(rest.is_empty());
}

#[test]
fn bad_posts_get_their_status_and_the_server_goes_on() {
    let server = Server::start(&["--max-message", "16"]);
    let cases: Vec<(&str, Vec<u8>, u16)> =
        vec![
        ("too large", post_request("t", "text/plain", "", &[b'a'; 17]), 413),
        (
            "no length",
            b"POST /t HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(),
            411,
        ),
        (
            "chunked",
            b"POST /t HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n1\r\na\r\n0\r\n\r\n"
                .to_vec(),
            411,
        ),
        ("bad topic", post_request("a%20b", "text/plain", "", b"x"), 400),
        (
            "invalid utf-8 text",
            post_request("t", "text/plain", "", &[0xff, 0xfe]),
            400,
        ),
        (
            "bad length",
            b"POST /t HTTP/1.1\r\nHost: x\r\nContent-Length: lots\r\n\r\n".to_vec(),
            400,
        ),
    ];
    for (what, request, status) in cases {
        let (mut response, mut stream) = http_request(server.addr, &request);
        assert_eq!(response.status, status, "{what}: {}", response.head_text);
        assert_closed_by_server(&mut response, &mut stream, what);
    }
    let mut ok = send_raw(server.addr, &post_request("t", "text/plain", "", b"fine"));
    assert_eq!(read_responses(&mut ok, 1)[0].0, 202);
}
