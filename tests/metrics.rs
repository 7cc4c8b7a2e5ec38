//! `GET /metrics`, `/health` and `/ready` against a real server: the Prometheus scrape is
//! parsed with `prometheus-parse` and checked against the traffic the test made, and
//! `/ready` turns 503 during the shutdown drain while the listeners keep answering.

use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use testkit::metrics::{scrape, scrape_until};
use testkit::*;

/// Every rejection reason the server must print, even at 0.
const REASONS: [&str; 19] = [
    "bad_request",
    "bad_topic",
    "not_found",
    "method_not_allowed",
    "upgrade_required",
    "unsupported_version",
    "head_too_large",
    "length_required",
    "body_too_large",
    "unavailable",
    "draining",
    "timeout",
    "tls",
    "reset",
    "unauthorized",
    "forbidden",
    "origin",
    "too_many_conns",
    "too_many_conns_per_ip",
];

/// A parsed scrape, with lookups by name and label.
fn get(addr: SocketAddr, path: &str) -> HttpResponse {
    let request = format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n");
    let (mut response, mut stream) = http_request(addr, request.as_bytes());
    assert_closed_by_server(&mut response, &mut stream, path);
    response
}

fn refused(addr: SocketAddr, request: &[u8], status: u16) {
    let (mut response, mut stream) = http_request(addr, request);
    assert_eq!(response.status, status, "{}", response.head_text);
    assert_closed_by_server(&mut response, &mut stream, "refusal");
}

#[test]
fn metrics_match_the_traffic() {
    let server = Server::start(&["--threads", "2"]);
    let addr = server.addr;

    const SUBSCRIBERS: usize = 4;
    const MESSAGES: usize = 25;
    const PAYLOAD: &str = "a metrics test message, 40 bytes long..";
    let mut subs: Vec<Ws> = (0..SUBSCRIBERS).map(|_| connect(addr, "metered")).collect();
    for (i, ws) in subs.iter_mut().enumerate() {
        sync(ws, &i.to_string());
    }
    // Once everyone has the barrier, every earlier message has been delivered too.
    send_text(&mut subs[0], "barrier");
    for ws in subs.iter_mut() {
        assert_eq!(recv_text_after_sync(ws), "barrier");
    }

    // Settled: the counts stopped moving and every subscriber is counted.
    let mut last = -1.0;
    let before = scrape_until(addr, |m| {
        let deliveries = m.value("herald_deliveries_total", &[]);
        let settled = deliveries == std::mem::replace(&mut last, deliveries);
        settled
            && m.by_label("herald_connections", "worker")
                .values()
                .sum::<f64>()
                == SUBSCRIBERS as f64 + 1.0
    });
    let deliveries_before = before.value("herald_deliveries_total", &[]);
    let messages_before = before.value("herald_messages_in_total", &[]);
    let bytes_in_before = before.value("herald_bytes_in_total", &[]);
    let bytes_out_before = before.value("herald_bytes_out_total", &[]);

    for _ in 0..MESSAGES {
        send_text(&mut subs[0], PAYLOAD);
    }
    for ws in subs.iter_mut() {
        for _ in 0..MESSAGES {
            assert_eq!(recv_text(ws), PAYLOAD);
        }
    }
    for _ in 0..3 {
        refused(
            addr,
            upgrade_request("/bad%20topic", "dGhlIHNhbXBsZSBub25jZQ==", &[]).as_bytes(),
            400,
        );
    }
    for _ in 0..2 {
        refused(addr, b"GET /no%20such HTTP/1.1\r\nHost: x\r\n\r\n", 404);
    }

    let want_deliveries = deliveries_before + (SUBSCRIBERS * MESSAGES) as f64;
    let m = scrape_until(addr, |m| {
        m.value("herald_deliveries_total", &[]) >= want_deliveries
            && m.by_label("herald_connections", "worker")
                .values()
                .sum::<f64>()
                == SUBSCRIBERS as f64 + 1.0
    });

    // Every metric has its HELP and TYPE.
    for name in [
        "herald_connections",
        "herald_accepted_total",
        "herald_messages_in_total",
        "herald_deliveries_total",
        "herald_bytes_in_total",
        "herald_bytes_out_total",
        "herald_slow_consumer_closes_total",
        "herald_aborted_connections_total",
        "herald_full_drops_total",
        "herald_rejected_total",
        "herald_auth_failures_total",
        "herald_rate_limited_total",
        "herald_history_messages",
        "herald_history_bytes",
        "herald_replayed_total",
        "herald_v1_refusals_total",
        "herald_fd_pauses_total",
        "herald_fanout_latency_seconds",
    ] {
        assert!(
            m.scrape.docs.contains_key(name),
            "no HELP for {name} in\n{}",
            m.text
        );
        assert!(
            m.text.contains(&format!("\n# TYPE {name} ")),
            "no TYPE for {name}"
        );
    }

    // Deliveries and messages: exactly what was sent.
    let deliveries = m.value("herald_deliveries_total", &[]);
    assert_eq!(deliveries, want_deliveries, "{}", m.text);
    assert_eq!(
        m.value("herald_messages_in_total", &[]),
        messages_before + MESSAGES as f64
    );
    // Bytes: at least the frames themselves (6-byte masked headers in, 2-byte headers out).
    let frame_in = (PAYLOAD.len() + 6) as f64;
    assert!(m.value("herald_bytes_in_total", &[]) - bytes_in_before >= MESSAGES as f64 * frame_in);
    let frame_out = (PAYLOAD.len() + 2) as f64;
    assert!(
        m.value("herald_bytes_out_total", &[]) - bytes_out_before
            >= (SUBSCRIBERS * MESSAGES) as f64 * frame_out
    );

    // Refusals by reason: every reason printed, the ones made counted exactly.
    let rejected = m.by_label("herald_rejected_total", "reason");
    for reason in REASONS {
        let want = match reason {
            "bad_topic" => 3.0,
            "not_found" => 2.0,
            _ => 0.0,
        };
        assert_eq!(
            rejected.get(reason),
            Some(&want),
            "reason {reason}: {rejected:?}"
        );
    }
    assert_eq!(m.value("herald_auth_failures_total", &[]), 0.0);
    assert_eq!(m.value("herald_rate_limited_total", &[]), 0.0);
    assert_eq!(m.value("herald_slow_consumer_closes_total", &[]), 0.0);
    assert!(
        m.value("herald_accepted_total", &[]) >= (SUBSCRIBERS + 5 + 2) as f64,
        "subscribers, refusals and scrapes were all accepted"
    );

    // Connections per worker: one gauge per worker, summing to what is open (this scrape too).
    let per_worker = m.by_label("herald_connections", "worker");
    assert_eq!(
        per_worker.keys().collect::<Vec<_>>(),
        ["0", "1"],
        "{}",
        m.text
    );
    assert_eq!(per_worker.values().sum::<f64>(), SUBSCRIBERS as f64 + 1.0);

    // The latency histogram: live, cumulative, monotonic, counting every delivery.
    let buckets = m.histogram("herald_fanout_latency_seconds");
    assert!(buckets.len() >= 10, "{buckets:?}");
    assert_eq!(buckets[0].0, 0.00005, "first bucket 50 µs");
    assert_eq!(buckets[buckets.len() - 2].0, 5.0, "last finite bucket 5 s");
    assert!(buckets[buckets.len() - 1].0.is_infinite());
    for pair in buckets.windows(2) {
        assert!(pair[0].0 < pair[1].0, "le ascending: {buckets:?}");
        assert!(pair[0].1 <= pair[1].1, "cumulative counts: {buckets:?}");
    }
    let count = m.value("herald_fanout_latency_seconds_count", &[]);
    assert_eq!(count, deliveries, "histogram count = deliveries");
    assert_eq!(buckets[buckets.len() - 1].1, count, "+Inf bucket = count");
    let sum = m.value("herald_fanout_latency_seconds_sum", &[]);
    assert!(sum > 0.0 && sum / count < 5.0, "sum {sum} over {count}");

    for ws in subs {
        close_cleanly(ws);
    }
}

#[test]
fn ready_and_health_answer_while_serving() {
    let server = Server::start(&[]);
    let ready = get(server.addr, "/ready");
    assert_eq!(ready.status, 200, "{}", ready.head_text);
    assert_eq!(ready.body, b"ready");
    let health = get(server.addr, "/health");
    assert_eq!(health.status, 200);
    assert_eq!(health.body, b"ok");
    // With an Upgrade header these paths are topics like any other.
    let _ws = connect(server.addr, "ready");
}

/// SIGTERM with a client that never answers the close: the drain lasts until that client's
/// grace period ends, and meanwhile the listener answers: `/ready` 503, `/health` and
/// `/metrics` 200, new upgrades and publishes 503 with `Retry-After`. A connection accepted
/// during the drain does not keep the process alive; it exits 0.
#[test]
fn during_the_drain_ready_is_503_and_new_clients_are_turned_away() {
    let mut server = Server::start(&[
        "--threads",
        "1",
        "--drain-timeout",
        "30s",
        "--handshake-timeout",
        "30s",
    ]);
    let addr = server.addr;
    let mut mute = RawWs::connect(addr, "mute");
    assert_eq!(get(addr, "/ready").status, 200);

    let signalled = Instant::now();
    server.signal(Signal::SIGTERM);
    let close = mute.expect_frame();
    assert_eq!(close.opcode, OP_CLOSE);
    assert_eq!(close.close_code(), Some(1001));
    // `mute` does not answer: the server waits for it (its close grace is 2 s).

    let ready = get(addr, "/ready");
    assert_eq!(ready.status, 503, "{}", ready.head_text);
    assert_eq!(ready.body, b"draining");
    assert_eq!(ready.header("retry-after"), Some("1"));
    let health = get(addr, "/health");
    assert_eq!(health.status, 200, "{}", health.head_text);

    let (mut upgrade, mut stream) = http_request(
        addr,
        upgrade_request("/chat", "dGhlIHNhbXBsZSBub25jZQ==", &[]).as_bytes(),
    );
    assert_eq!(upgrade.status, 503, "{}", upgrade.head_text);
    assert_eq!(upgrade.header("retry-after"), Some("1"));
    assert_closed_by_server(&mut upgrade, &mut stream, "upgrade while draining");
    refused(
        addr,
        b"POST /chat HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\nhi",
        503,
    );

    let m = scrape(addr);
    assert_eq!(
        m.by_label("herald_rejected_total", "reason")["draining"],
        2.0
    );
    assert!(
        m.by_label("herald_connections", "worker")["0"] >= 2.0,
        "mute and the scrape"
    );

    // A late connection that never sends a request must not hold the drain open (the
    // drain and handshake timeouts are 30 s: only the mute client's grace ends it).
    let _idle = TcpStream::connect(addr).expect("connect during the drain");
    let status = server
        .wait_exit(Duration::from_secs(15))
        .unwrap_or_else(|| {
            panic!(
                "server still running {:?} after SIGTERM: held open by the idle connection?",
                signalled.elapsed()
            )
        });
    assert_eq!(status.code(), Some(0), "exit status {status:?}");
    assert!(server.read_stdout_to_end(Duration::from_secs(5)));
    assert!(
        server.stdout().iter().any(|l| l.starts_with("drained in")),
        "{:?}",
        server.stdout()
    );
}
