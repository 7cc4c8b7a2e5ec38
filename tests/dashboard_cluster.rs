//! `--dashboard` in cluster mode, against the real binary, a real `redis-server` and real
//! Chromium: the page on one node lists every node of the cluster with the figures that
//! node's own `/metrics` gives, and a killed node leaves the list within the snapshot's
//! expiry (5 s) plus a reader period and an event (src/cluster/roster.rs).

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use serde_json::Value;
use testkit::browser::{save_artifact, Chrome};
use testkit::redis_server::Redis;
use testkit::{http_request, Server};

/// A node with the dashboard, connected to Redis; and its id as it printed it.
fn node(redis: &Redis) -> (Server, String) {
    let server = Server::start_node(&redis.url(), &["--dashboard"]);
    let id = server
        .stdout()
        .iter()
        .find_map(|l| l.strip_prefix("cluster: node ")?.split(',').next())
        .expect("the node prints its id")
        .to_owned();
    (server, id)
}

/// The sum of a `/metrics` series over its labels (per worker) or its plain value.
fn metric(addr: SocketAddr, series: &str) -> u64 {
    let (response, _) = http_request(addr, b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(response.status, 200);
    let text = String::from_utf8(response.body).unwrap();
    let values: Vec<u64> = text
        .lines()
        .filter(|l| l.starts_with(&format!("{series} ")) || l.starts_with(&format!("{series}{{")))
        .filter_map(|l| l.rsplit(' ').next()?.parse().ok())
        .collect();
    assert!(!values.is_empty(), "{series} not in /metrics");
    values.iter().sum()
}

/// The page's Nodes rows, by node id.
fn shown(page: &testkit::browser::Page) -> Vec<Value> {
    match page.eval("window.dashboard.shown.nodes || []") {
        Value::Array(rows) => rows,
        other => panic!("shown.nodes: {other}"),
    }
}

#[test]
fn every_node_is_on_every_dashboard_and_a_dead_one_leaves() {
    let Some(redis) = Redis::start_or_skip("the cluster dashboard test") else {
        return;
    };
    let (a, id_a) = node(&redis);
    let (b, id_b) = node(&redis);
    // Different figures on each node: three subscribers on A, one on B; two publishes on A
    // reach all four (A: 2 in, 6 out; B: 0 in, 2 out).
    let mut subs: Vec<_> = (0..3).map(|_| testkit::connect(a.addr, "room")).collect();
    subs.push(testkit::connect(b.addr, "room"));
    // Both nodes listen to the topic's channel before anything is published.
    assert!(testkit::wait_until(Duration::from_secs(5), || {
        let (_, n): (String, u64) = redis::cmd("PUBSUB")
            .arg("NUMSUB")
            .arg("herald:{room}")
            .query(&mut redis.client())
            .expect("PUBSUB NUMSUB");
        n == 2
    }));
    for body in [&b"one"[..], b"two"] {
        let (status, _) = testkit::post(a.addr, "room", "text/plain", "", body);
        assert_eq!(status, 202);
    }
    for sub in &mut subs {
        testkit::recv_data(sub);
        testkit::recv_data(sub);
    }

    let chrome = Chrome::launch(false);
    let page = chrome.page(&format!("http://{}/dashboard", a.addr));
    // Wait until both rows show the settled totals (each node writes its snapshot once a
    // second; the page gets an event once a second).
    page.wait_for(
        "(window.dashboard.shown.nodes || []).length === 2 && window.dashboard.shown.nodes.every((n) => n.deliveries > 0)",
        "both nodes with their deliveries on A's page",
        "({nodes: window.dashboard.shown.nodes, last: window.dashboard.events.slice(-1)[0]?.broker})",
    );
    let rows = shown(&page);
    for (server, id, conns) in [(&a, &id_a, 4), (&b, &id_b, 1)] {
        let row = rows
            .iter()
            .find(|r| r["node"] == id.as_str())
            .unwrap_or_else(|| panic!("node {id} not on the page: {rows:?}"));
        for (series, field) in [
            ("herald_messages_in_total", "messages_in"),
            ("herald_deliveries_total", "deliveries"),
        ] {
            assert_eq!(
                row[field].as_u64(),
                Some(metric(server.addr, series)),
                "{id} {field}: {row}"
            );
        }
        // Connections: the subscribers (and on A the page's stream); `/metrics` may count
        // its own request too.
        assert_eq!(row["connections"], conns, "{id}: {row}");
        let scraped = metric(server.addr, "herald_connections");
        assert!(
            (conns..=conns + 1).contains(&scraped),
            "{id}: /metrics {scraped}"
        );
        assert_eq!(row["broker_up"], true, "{row}");
        assert!(row["age_ms"].as_u64() < Some(2_500), "{row}");
    }
    assert_eq!(
        rows.iter().find(|r| r["node"] == id_a.as_str()).unwrap()["messages_in"],
        2
    );
    // The table itself: one row per node, its id and connections in the cells.
    let cells = page.eval(
        "[...document.querySelectorAll('#nodes tbody tr')].map((tr) => [tr.dataset.node, tr.children[1].textContent, tr.children[5].textContent])",
    );
    let mut expected = vec![
        serde_json::json!([id_a, "4", "up"]),
        serde_json::json!([id_b, "1", "up"]),
    ];
    expected.sort_by_key(|v| v[0].as_str().unwrap().to_owned());
    assert_eq!(cells, Value::Array(expected));
    let png = page.screenshot_png();
    save_artifact("dashboard_cluster.png", &png);

    // B dies without a word: its snapshot expires in Redis and A's page drops it.
    b.signal(Signal::SIGKILL);
    let killed = Instant::now();
    let bound = Duration::from_secs(8);
    loop {
        let rows = shown(&page);
        if rows.len() == 1 {
            assert_eq!(rows[0]["node"], id_a.as_str());
            break;
        }
        assert!(
            killed.elapsed() < bound,
            "node B still listed {bound:?} after it was killed: {rows:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let gone_after = killed.elapsed();
    // Not before the expiry: the snapshot lives 5 s (less its age when B died, at most 1 s).
    assert!(
        gone_after >= Duration::from_secs(3),
        "gone after {gone_after:?}"
    );
    drop(subs);
}
