//! `--dashboard`: the page at `GET /dashboard` and its Server-Sent Events feed, against the
//! real binary: off by default, opened only with the publish key when one is set, bounded,
//! and (in real Chromium, while the loadtest runs) showing what `/metrics` says.

use std::io::{BufRead, BufReader, Read};
use std::net::{SocketAddr, TcpStream};
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::Value;
use testkit::browser::{save_artifact, Chrome};
use testkit::v1::V1;
use testkit::{http_request, Server};

const KEY: &str = "dash-key-0123";

fn get(addr: SocketAddr, target: &str) -> (u16, Vec<u8>) {
    let request = format!("GET {target} HTTP/1.1\r\nHost: x\r\n\r\n");
    let (response, _) = http_request(addr, request.as_bytes());
    (response.status, response.body)
}

/// Opens the feed with `key`: the response head checked, the reader positioned at the body.
fn open_feed(addr: SocketAddr, key: &str) -> BufReader<TcpStream> {
    let request = format!("GET /dashboard/feed?key={key} HTTP/1.1\r\nHost: x\r\n\r\n");
    let (response, stream) = http_request(addr, request.as_bytes());
    assert_eq!(response.status, 200, "{}", response.head_text);
    assert_eq!(response.header("content-type"), Some("text/event-stream"));
    assert!(response.header("content-length").is_none());
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    BufReader::new(stream)
}

/// The next `data:` event of a feed, parsed.
fn next_event(feed: &mut BufReader<TcpStream>) -> Value {
    loop {
        let mut line = String::new();
        let n = feed.read_line(&mut line).expect("an event within 5 s");
        assert!(n > 0, "the feed ended");
        if let Some(json) = line.strip_prefix("data: ") {
            return serde_json::from_str(json).expect("event JSON");
        }
    }
}

/// The first of the next five events that satisfies `cond`.
fn event_where(feed: &mut BufReader<TcpStream>, cond: impl Fn(&Value) -> bool) -> Value {
    let mut last = Value::Null;
    for _ in 0..5 {
        last = next_event(feed);
        if cond(&last) {
            return last;
        }
    }
    panic!("no event in five seconds satisfied the condition; last: {last}")
}

/// One sample of `/metrics` (a plain series, no labels).
fn metric(addr: SocketAddr, series: &str) -> u64 {
    let (status, body) = get(addr, "/metrics");
    assert_eq!(status, 200);
    let text = String::from_utf8(body).unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .unwrap_or_else(|| panic!("{series} not in /metrics"))
        .parse()
        .unwrap()
}

#[test]
fn the_dashboard_is_off_by_default() {
    let server = Server::start(&[]);
    // Without --dashboard the paths are topic paths, as before: a plain GET is told to upgrade.
    assert_eq!(get(server.addr, "/dashboard").0, 426);
    assert_eq!(
        get(server.addr, &format!("/dashboard/feed?key={KEY}")).0,
        426
    );
}

#[test]
fn the_feed_needs_the_publish_key_and_counts_what_happens() {
    let server = Server::start(&["--dashboard", "--publish-key", KEY, "--threads", "2"]);
    let (status, page) = get(server.addr, "/dashboard");
    assert_eq!(status, 200);
    let page = String::from_utf8(page).unwrap();
    assert!(page.contains("<title>Herald dashboard</title>"));
    assert!(
        page.contains("const HeraldChart"),
        "the chart code is inlined"
    );
    assert!(!page.contains("/*HERALD_CHART_JS*/"));

    for target in [
        "/dashboard/feed",
        "/dashboard/feed?key=wrong",
        "/dashboard/feed?key=",
    ] {
        assert_eq!(get(server.addr, target).0, 401, "{target}");
    }
    let mut feed = open_feed(server.addr, KEY);
    // The refusals are counted by the turn that answered them: at most one event late.
    let first = event_where(&mut feed, |e| {
        e["total"]["auth_failures"].as_u64() >= Some(3)
    });
    assert_eq!(first["format"], "herald.dashboard.v1");
    assert_eq!(first["workers"].as_array().map(Vec::len), Some(2));
    assert!(
        first["total"]["auth_failures"].as_u64() >= Some(3),
        "{first}"
    );
    assert_eq!(
        first["rejected"]["unauthorized"],
        first["total"]["auth_failures"]
    );
    assert_eq!(first["broker"], Value::Null);
    assert_eq!(first["topics"], serde_json::json!([]));

    // A subscriber and an HTTP publish show up in the next events. The subscriber is a
    // herald.v1 one: its `subscribed` says the topic's owner has it, so the publish below
    // cannot overtake the subscription (a path-mode 101 says nothing of the kind).
    let mut sub = V1::connect(server.addr);
    sub.subscribe(1, serde_json::json!(["news"]));
    let bearer = format!("Authorization: Bearer {KEY}\r\n");
    let (status, _) = testkit::post(server.addr, "news", "text/plain", &bearer, b"hi");
    assert_eq!(status, 202);
    assert_eq!(sub.expect("message")["data"], "hi");
    let seen = event_where(&mut feed, |e| e["total"]["deliveries"].as_u64() >= Some(1));
    assert!(seen["unix_ms"].as_u64() > first["unix_ms"].as_u64());
    assert_eq!(seen["total"]["messages_in"], 1, "{seen}");
    assert_eq!(seen["total"]["deliveries"], 1, "{seen}");
    let buckets: u64 = seen["latency"]["counts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap())
        .sum();
    assert_eq!(buckets, 1, "one delivery timed");
    // The subscriber and the feed itself are open.
    assert!(seen["total"]["connections"].as_u64() >= Some(2), "{seen}");
}

#[test]
fn each_worker_keeps_at_most_sixteen_streams() {
    let server = Server::start(&["--dashboard", "--threads", "1"]);
    let feeds: Vec<_> = (0..16).map(|_| open_feed(server.addr, "")).collect();
    assert_eq!(get(server.addr, "/dashboard/feed").0, 503);
    drop(feeds);
    // Once the pages are gone, a new one is served again.
    assert!(testkit::wait_until(Duration::from_secs(5), || {
        get(server.addr, "/dashboard/feed?x=1").0 == 200
    }));
}

#[test]
fn jwt_without_a_publish_key_cannot_open_the_dashboard() {
    let output = Command::new(testkit::herald_bin())
        .args([
            "--listen",
            "127.0.0.1:0",
            "--dashboard",
            "--jwt-secret",
            "0123456789abcdef0123456789abcdef",
        ])
        .stdin(Stdio::null())
        .output()
        .expect("run herald");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("--dashboard on a server with JWT auth needs --publish-key"),
        "{stderr}"
    );
}

/// The page in real Chromium while the loadtest runs: it connects, its figures lie between
/// two `/metrics` scrapes taken around the event it shows, and a screenshot is kept.
#[test]
fn the_page_shows_what_metrics_says_while_the_loadtest_runs() {
    let server = Server::start(&["--dashboard", "--publish-key", KEY, "--threads", "2"]);
    let mut load = Command::new(testkit::workspace_bin("loadtest"))
        .args(["--url", &server.url("dash"), "--connections", "200"])
        .args(["--publishers", "2", "--rate", "400", "--duration", "20"])
        .args(["--warmup", "1", "--procs", "1"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the loadtest");

    let chrome = Chrome::launch(false);
    let page = chrome.page(&format!("http://{}/dashboard#key={KEY}", server.addr));
    page.wait_for(
        "window.dashboard.events.length >= 2 && window.dashboard.shown.deliveries > 0",
        "the page to show deliveries",
        "({errors: window.dashboard.errors, n: window.dashboard.events.length, state: document.getElementById('state').textContent})",
    );
    assert_eq!(
        page.eval("document.getElementById('state').textContent"),
        "live"
    );

    let dom = |id: &str| -> u64 {
        let text = page.eval(&format!("document.getElementById('{id}').textContent"));
        text.as_str()
            .unwrap()
            .replace(',', "")
            .parse()
            .unwrap_or_else(|e| panic!("#{id} shows {text}: {e}"))
    };
    for round in 0..3 {
        let n0 = page
            .eval("window.dashboard.events.length")
            .as_u64()
            .unwrap();
        let before: Vec<u64> = SERIES.iter().map(|(m, _)| metric(server.addr, m)).collect();
        // Two events later, the one shown was built after the first scrape.
        page.wait_for(
            &format!("window.dashboard.events.length >= {}", n0 + 2),
            "two more events",
            "window.dashboard.events.length",
        );
        let shown: Vec<u64> = SERIES.iter().map(|(_, id)| dom(id)).collect();
        let after: Vec<u64> = SERIES.iter().map(|(m, _)| metric(server.addr, m)).collect();
        for (i, (series, id)) in SERIES.iter().enumerate() {
            assert!(
                before[i] <= shown[i] && shown[i] <= after[i],
                "round {round}: #{id} shows {} but {series} went {} -> {}",
                shown[i],
                before[i],
                after[i]
            );
        }
        assert!(after[1] > before[1] || round > 0, "deliveries were moving");
    }
    // Connections: the loadtest's 202, the page's stream, a scrape or two.
    let conns = dom("fig-connections");
    assert!((202..=206).contains(&conns), "connections shown: {conns}");
    let drawn = page.eval("document.getElementById('chart-rates').plotted[1].points.length");
    assert!(
        drawn.as_u64() >= Some(2),
        "the deliveries/s line is drawn: {drawn}"
    );
    let png = page.screenshot_png();
    let path = save_artifact("dashboard.png", &png);
    assert!(png.starts_with(b"\x89PNG"), "{}", path.display());

    let status = load.wait().expect("loadtest exit");
    let mut stderr = String::new();
    load.stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    assert!(status.success(), "loadtest failed: {stderr}");
}

/// `/metrics` series and the element of the page showing the same total.
const SERIES: [(&str, &str); 4] = [
    ("herald_messages_in_total", "fig-messages-in"),
    ("herald_deliveries_total", "fig-deliveries"),
    ("herald_bytes_out_total", "fig-bytes-out"),
    ("herald_accepted_total", "fig-accepted"),
];

#[test]
fn the_feed_shows_the_busiest_topics_with_subscribers_and_deliveries_per_second() {
    let server = Server::start(&["--dashboard", "--threads", "2"]);
    // busy: 3 subscribers (the publisher among them); quiet: 2.
    let mut busy: Vec<_> = (0..3)
        .map(|_| testkit::connect(server.addr, "busy"))
        .collect();
    let mut quiet: Vec<_> = (0..2)
        .map(|_| testkit::connect(server.addr, "quiet"))
        .collect();
    for (i, ws) in busy.iter_mut().chain(quiet.iter_mut()).enumerate() {
        testkit::sync(ws, &i.to_string());
    }
    let mut feed = open_feed(server.addr, "");
    let mut last = Value::Null;
    for _ in 0..30 {
        for n in 0..50 {
            testkit::send_text(&mut busy[0], &format!("b{n}"));
        }
        testkit::send_text(&mut quiet[0], "q");
        for ws in busy.iter_mut() {
            for n in 0..50 {
                assert_eq!(testkit::recv_text_after_sync(ws), format!("b{n}"));
            }
        }
        for ws in quiet.iter_mut() {
            assert_eq!(testkit::recv_text_after_sync(ws), "q");
        }
        last = next_event(&mut feed);
        let topics = &last["topics"];
        if topics[0]["topic"] == "busy" && topics[1]["topic"] == "quiet" {
            assert_eq!(topics[0]["subscribers"], 3, "{last}");
            assert_eq!(topics[1]["subscribers"], 2, "{last}");
            let (b, q) = (
                topics[0]["deliveries_per_s"].as_u64().unwrap_or(0),
                topics[1]["deliveries_per_s"].as_u64().unwrap_or(0),
            );
            assert!(b > 0 && b >= q, "{last}");
            return;
        }
    }
    panic!("no event listed busy then quiet; last: {last}");
}
