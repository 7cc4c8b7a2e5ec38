//! Per-topic series on `GET /metrics` (`--metrics-topics`), against a real server with two
//! workers: the scrape is parsed with `prometheus-parse` and checked against the traffic the
//! test made — exact counts per topic, subscriber gauges, the latency histogram's count, no
//! series for topics no pattern matches, and the `other` bucket past `--metrics-topics-max`.

use std::time::{Duration, Instant};

use testkit::metrics::{scrape, scrape_every_until, Metrics};
use testkit::*;

/// Scrapes until `done` holds, 150 ms apart: workers copy their per-topic counts to the
/// shared board every 100 ms, so two scrapes in a row that agree have seen every copy.
fn scrape_until(addr: std::net::SocketAddr, done: impl FnMut(&Metrics) -> bool) -> Metrics {
    scrape_every_until(addr, Duration::from_millis(150), done)
}

const MESSAGES: &str = "herald_topic_messages_total";
const DELIVERIES: &str = "herald_topic_deliveries_total";
const SUBSCRIBERS: &str = "herald_topic_subscribers";
const LATENCY: &str = "herald_topic_fanout_latency_seconds";

#[test]
fn per_topic_series_count_exactly_what_was_sent_to_matching_topics() {
    let server = Server::start(&[
        "--threads",
        "2",
        "--metrics-topics",
        "prices/*",
        "--metrics-topics",
        "orders/**",
        "--metrics-topics-max",
        "3",
    ]);
    let addr = server.addr;
    // (topic, subscribers, messages published). Subscribed in this order, so the first three
    // matching topics get labels of their own and prices/late falls into `other`.
    let plan: [(&str, usize, usize); 5] = [
        ("prices/a", 4, 7),
        ("news", 3, 5),
        ("prices/b", 2, 3),
        ("orders/eu/1", 3, 4),
        ("prices/late", 2, 6),
    ];
    let mut subs: Vec<(usize, Ws)> = Vec::new();
    for (t, &(topic, count, _)) in plan.iter().enumerate() {
        for i in 0..count {
            let mut ws = connect(addr, topic);
            sync(&mut ws, &format!("{t}.{i}"));
            subs.push((t, ws));
        }
    }
    // Every subscriber's sync made it; the sync echoes are counted too: wait for them to
    // settle, then count from there.
    let mut last = String::new();
    let before = scrape_until(addr, |m| {
        let now = format!(
            "{:?}{:?}",
            m.topics(DELIVERIES),
            ["prices/a", "prices/b", "orders/eu/1", "other"]
                .map(|t| (m.topic(DELIVERIES, t), m.topic(MESSAGES, t)))
        );
        let settled = now == last && m.topic(SUBSCRIBERS, "prices/a") == 4.0;
        last = now;
        settled
    });

    for &(topic, _, messages) in &plan {
        for n in 0..messages {
            let (status, body) = post(
                addr,
                topic,
                "text/plain",
                "",
                format!("{topic} {n}").as_bytes(),
            );
            assert_eq!(status, 202, "publish to {topic}: {body}");
        }
    }
    for (t, ws) in subs.iter_mut() {
        let (topic, _, messages) = plan[*t];
        for n in 0..messages {
            assert_eq!(recv_text_after_sync(ws), format!("{topic} {n}"));
        }
    }

    let expect = |m: &Metrics, label: &str, subscribers: usize, messages: usize| {
        (
            m.topic(MESSAGES, label) - before.topic(MESSAGES, label),
            m.topic(DELIVERIES, label) - before.topic(DELIVERIES, label),
            m.topic(SUBSCRIBERS, label),
        ) == (
            messages as f64,
            (messages * subscribers) as f64,
            subscribers as f64,
        )
    };
    let rows = [
        ("prices/a", 4, 7),
        ("prices/b", 2, 3),
        ("orders/eu/1", 3, 4),
        ("other", 2, 6),
    ];
    let m = scrape_until(addr, |m| {
        rows.iter()
            .all(|&(label, subs, msgs)| expect(m, label, subs, msgs))
    });
    for (label, subscribers, messages) in rows {
        assert!(
            expect(&m, label, subscribers, messages),
            "{label}: want {messages} messages, {} deliveries, {subscribers} subscribers in\n{}",
            messages * subscribers,
            m.text
        );
        // Every delivery is in the histogram.
        assert_eq!(
            m.topic(LATENCY, label),
            m.topic(DELIVERIES, label),
            "{label} histogram count in\n{}",
            m.text
        );
    }
    for name in [MESSAGES, DELIVERIES, SUBSCRIBERS, LATENCY] {
        assert_eq!(
            m.topics(name),
            ["orders/eu/1", "other", "prices/a", "prices/b"],
            "{name}: only matching topics, the cap, then other, in\n{}",
            m.text
        );
    }
    assert!(
        !m.text.contains("news"),
        "no series for news in\n{}",
        m.text
    );

    // Leaving lowers the gauge.
    subs.retain(|(t, _)| *t != 0);
    let m = scrape_until(addr, |m| m.topic(SUBSCRIBERS, "prices/a") == 0.0);
    assert_eq!(m.topic(SUBSCRIBERS, "prices/a"), 0.0, "{}", m.text);
    assert_eq!(m.topic(SUBSCRIBERS, "prices/b"), 2.0, "{}", m.text);
}

#[test]
fn without_the_flag_there_are_no_topic_series() {
    let server = Server::start(&["--threads", "2"]);
    let mut ws = connect(server.addr, "prices/a");
    sync(&mut ws, "0");
    let m = scrape(server.addr);
    assert!(!m.text.contains("herald_topic_"), "{}", m.text);
    assert!(m.text.contains("herald_deliveries_total"), "{}", m.text);
}

#[test]
fn a_bad_pattern_is_refused_at_start() {
    let out = std::process::Command::new(herald_bin())
        .args(["--metrics-topics", "prices/a*"])
        .output()
        .expect("run herald");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--metrics-topics"), "{err}");
}

/// The stats line names the busiest topics (over all topics, flag or not), busiest first,
/// with subscribers, deliveries per second and bucketed p50 ≤ p99; the final report too.
#[test]
fn the_stats_line_lists_the_busiest_topics_first() {
    let mut server = Server::start(&["--threads", "2", "--stats-interval", "1"]);
    let addr = server.addr;
    // hot: 4 subscribers (the publisher among them); cold: 2.
    let mut hot: Vec<Ws> = (0..4).map(|_| connect(addr, "hot")).collect();
    let mut cold: Vec<Ws> = (0..2).map(|_| connect(addr, "cold")).collect();
    for (i, ws) in hot.iter_mut().chain(cold.iter_mut()).enumerate() {
        sync(ws, &i.to_string());
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut found = None;
    let mut round = 0;
    while found.is_none() && Instant::now() < deadline && round < 600 {
        round += 1;
        for n in 0..20 {
            send_text(&mut hot[0], &format!("h{n}"));
        }
        send_text(&mut cold[0], "c");
        for ws in hot.iter_mut() {
            for n in 0..20 {
                assert_eq!(recv_text_after_sync(ws), format!("h{n}"));
            }
        }
        for ws in cold.iter_mut() {
            assert_eq!(recv_text_after_sync(ws), "c");
        }
        found = server.wait_line(Duration::from_millis(20), |l| {
            l.starts_with("stats:")
                && parse_busiest(l)
                    .is_some_and(|b| b.len() >= 2 && b[0].topic == "hot" && b[0].p99.is_some())
        });
    }
    let line = found.unwrap_or_else(|| {
        panic!(
            "no stats line with hot first and measured; lines:\n{}",
            server.stdout().join("\n")
        )
    });
    let busiest = parse_busiest(&line).expect("busiest field");
    let (h, c) = (&busiest[0], &busiest[1]);
    assert_eq!((h.topic.as_str(), h.subscribers), ("hot", 4), "{line}");
    assert_eq!((c.topic.as_str(), c.subscribers), ("cold", 2), "{line}");
    assert!(h.deliveries_per_sec > c.deliveries_per_sec, "{line}");
    let (p50, p99) = (h.p50.expect("p50"), h.p99.expect("p99"));
    assert!(0 < p50 && p50 <= p99 && p99 <= 5_000_000, "{line}");

    server.signal(nix::sys::signal::Signal::SIGTERM);
    let report = server
        .wait_prefix("busiest topics:", Duration::from_secs(20))
        .expect("a final busiest-topics line");
    assert!(parse_busiest(&report).is_some(), "{report}");
}
