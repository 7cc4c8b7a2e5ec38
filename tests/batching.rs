//! `--batch-window` against a real server: a busy topic's batches are held (and counted) but
//! nothing is reordered or lost; a topic at low load is written at once even with a long
//! window; the flag refuses bad values; writes per delivery show in `/metrics` and the stats
//! line.

use std::net::SocketAddr;
use std::process::Command;
use std::thread;
use std::time::{Duration, Instant};

use testkit::*;

/// Subscribers of the busy topic: enough that one write pass over them takes a while, so
/// the next message arrives within a pass of the last (the load the window is for).
const SUBSCRIBERS: usize = 300;
/// Messages the publisher streams through the busy topic.
const MESSAGES: usize = 400;

/// The unlabelled sample `name` from `GET /metrics`.
fn metric(addr: SocketAddr, name: &str) -> f64 {
    let (response, _stream) = http_request(addr, b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(response.status, 200, "{}", response.head_text);
    let text = String::from_utf8(response.body).expect("UTF-8 metrics");
    let line = text
        .lines()
        .find(|l| l.split_whitespace().next() == Some(name))
        .unwrap_or_else(|| panic!("no {name} in\n{text}"));
    line.split_whitespace()
        .nth(1)
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("bad sample {line}"))
}

/// Streams `MESSAGES` numbered messages through a topic with `SUBSCRIBERS` subscribers, a
/// little apart (a steady stream, not one burst), and checks every subscriber (the publisher
/// too) gets all of them, once each, in order.
fn stream_and_check(addr: SocketAddr, topic: &str) {
    let mut subs: Vec<Ws> = (0..SUBSCRIBERS).map(|_| connect(addr, topic)).collect();
    let mut publisher = connect(addr, topic);
    for i in 0..MESSAGES {
        send_text(&mut publisher, &format!("m{i}"));
        thread::sleep(Duration::from_micros(100));
    }
    for i in 0..MESSAGES {
        assert_eq!(recv_text(&mut publisher), format!("m{i}"), "publisher");
    }
    for (s, ws) in subs.iter_mut().enumerate() {
        for i in 0..MESSAGES {
            assert_eq!(recv_text(ws), format!("m{i}"), "subscriber {s}");
        }
    }
}

#[test]
fn a_busy_topic_is_held_without_reordering_or_loss() {
    let server = Server::start(&["--threads", "2", "--batch-window", "50ms"]);
    stream_and_check(server.addr, "busy");
    let holds = metric(server.addr, "herald_batch_holds_total");
    assert!(
        holds > 0.0,
        "a steady stream to {SUBSCRIBERS} subscribers was never held"
    );
    let writes = metric(server.addr, "herald_socket_writes_total");
    let deliveries = metric(server.addr, "herald_deliveries_total");
    assert_eq!(deliveries, ((SUBSCRIBERS + 1) * MESSAGES) as f64);
    assert!(
        writes < deliveries,
        "{writes} writes for {deliveries} deliveries: batches carried one message each"
    );
}

#[test]
fn with_the_window_off_nothing_is_held() {
    let server = Server::start(&["--threads", "2", "--batch-window", "off"]);
    stream_and_check(server.addr, "busy");
    assert_eq!(metric(server.addr, "herald_batch_holds_total"), 0.0);
    assert_eq!(
        metric(server.addr, "herald_deliveries_total"),
        ((SUBSCRIBERS + 1) * MESSAGES) as f64
    );
}

/// Low load: messages far apart are written in the turn that reads them, not held for the
/// (10 s) window. The bound below is generous; holding would show in the counter anyway.
#[test]
fn a_lone_message_is_written_at_once_even_with_a_long_window() {
    let mut server = Server::start(&[
        "--threads",
        "1",
        "--batch-window",
        "10s",
        "--stats-interval",
        "1",
    ]);
    let mut a = connect(server.addr, "quiet");
    let mut b = connect(server.addr, "quiet");
    b.get_mut()
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    for i in 0..5 {
        let sent = Instant::now();
        send_text(&mut a, &format!("lone {i}"));
        assert_eq!(recv_text(&mut b), format!("lone {i}"));
        assert!(
            sent.elapsed() < Duration::from_secs(5),
            "message {i} waited for the window"
        );
        assert_eq!(recv_text(&mut a), format!("lone {i}"));
        thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(metric(server.addr, "herald_batch_holds_total"), 0.0);
    assert_eq!(metric(server.addr, "herald_deliveries_total"), 10.0);
    // 10 deliveries, each its own write: the stats line shows 1 write per delivery.
    let line = server
        .line_starting("stats:", Duration::from_secs(5))
        .expect("a stats line");
    let line = if line.contains("frames_out/s=0 ") {
        server
            .line_starting("stats:", Duration::from_secs(5))
            .unwrap_or(line)
    } else {
        line
    };
    let ratio = line
        .split(" writes/delivery=")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .and_then(|r| r.parse::<f64>().ok());
    assert!(ratio.is_some_and(|r| r > 0.0), "{line}");
    assert!(line.contains(" batch_holds/s=0"), "{line}");
}

#[test]
fn bad_batch_windows_are_refused_naming_the_flag() {
    for (value, why) in [
        ("11s", "at most 10s"),
        ("soon", "bad duration"),
        ("-1ms", "bad duration"),
    ] {
        let out = Command::new(herald_bin())
            .args([
                "--listen",
                "127.0.0.1:0",
                &format!("--batch-window={value}"),
            ])
            .output()
            .expect("run herald");
        assert!(!out.status.success(), "--batch-window {value} was accepted");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains("--batch-window") && stderr.contains(why),
            "--batch-window {value}: {stderr}"
        );
    }
}

/// Messages a closed-loop publisher keeps in flight in `closed_loop_round`.
const IN_FLIGHT: usize = 8;

/// One round of a closed loop on a fresh topic: `SUBSCRIBERS` subscribers (read afterwards:
/// their sockets hold it all), a publisher that keeps `IN_FLIGHT` messages in flight, its own
/// echo being the acknowledgement. Every subscriber, the publisher included, gets every
/// message once, in order. Returns (socket writes, deliveries) during the round.
fn closed_loop_round(addr: SocketAddr, topic: &str, messages: usize) -> (f64, f64) {
    let mut subs: Vec<Ws> = (0..SUBSCRIBERS).map(|_| connect(addr, topic)).collect();
    let mut publisher = connect(addr, topic);
    let writes = metric(addr, "herald_socket_writes_total");
    let deliveries = metric(addr, "herald_deliveries_total");
    let mut sent = 0;
    for received in 0..messages {
        while sent < messages && sent < received + IN_FLIGHT {
            send_text(&mut publisher, &format!("m{sent}"));
            sent += 1;
        }
        assert_eq!(recv_text(&mut publisher), format!("m{received}"), "echo");
    }
    for (s, ws) in subs.iter_mut().enumerate() {
        for i in 0..messages {
            assert_eq!(recv_text(ws), format!("m{i}"), "subscriber {s}");
        }
    }
    let expected = ((SUBSCRIBERS + 1) * messages) as f64;
    let counted = || metric(addr, "herald_deliveries_total") - deliveries;
    wait_until(Duration::from_secs(10), || counted() >= expected);
    let delivered = counted();
    assert_eq!(delivered, expected);
    (
        metric(addr, "herald_socket_writes_total") - writes,
        delivered,
    )
}

/// Holding never stalls a sender waiting for its own echo: while a busy topic's batch is
/// held, its sender gets it at once and sends on, so the held batch grows past the sender's
/// in-flight count. Without that, no write could carry more than `IN_FLIGHT` messages (each
/// message would wait for the write of the one `IN_FLIGHT` before it), so writes would be
/// at least deliveries / `IN_FLIGHT`. The pass timing depends on the box, so a round that
/// happened not to hold is tried again (three at most).
#[test]
fn a_closed_loop_sender_gets_its_echo_while_its_batch_is_held() {
    let server = Server::start(&["--threads", "1", "--batch-window", "50ms"]);
    let mut ratios = Vec::new();
    for round in 0..3 {
        let (writes, deliveries) = closed_loop_round(server.addr, &format!("loop{round}"), 1000);
        ratios.push(writes / deliveries);
        if writes * (IN_FLIGHT as f64) < deliveries {
            return;
        }
    }
    panic!(
        "writes per delivery {ratios:?}: no write carried more than the {IN_FLIGHT} messages in flight"
    );
}
