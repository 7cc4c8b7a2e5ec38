//! The `herald-client` library (clients/js) in real headless Chromium: a page imports
//! `/herald-client.js` from a herald node, subscribes to two topics on one connection, and the
//! nodes of a cluster (`--broker`, a real `redis-server`) are killed with SIGKILL and
//! restarted one at a time under it while messages are published over HTTP. The page must
//! end with exactly `1..N` on both topics, and no gap reported. The Node tests of the library
//! (clients/js/test) cover each behaviour one by one; this is the whole in a browser.
//!
//! Without Chromium the test fails saying how to install it; without `redis-server` it says so
//! loudly and passes locally, and fails with `CI=true` (like tests/cluster.rs).

use std::net::SocketAddr;

use serde_json::Value;
use testkit::browser::{js_string, Chrome};
use testkit::redis_server::Redis;
use testkit::{free_port, Server};

/// A cluster node on a fixed port (so that it can be restarted where the page looks for it).
fn node(port: u16, redis: &Redis) -> Server {
    Server::start_node_on(port, &redis.url(), &[])
}

/// HTTP publish of a text body; the status.
fn post(addr: SocketAddr, topic: &str, body: &str) -> u16 {
    testkit::post(addr, topic, "text/plain", "", body.as_bytes()).0
}

/// Loads the library into the page from `/herald-client.js` and starts one client that
/// tries the nodes in turn, subscribed to `t1` and `t2`; everything it sees goes to `window.__c`.
const PAGE_CLIENT: &str = r#"
(() => {
  window.__c = { got: { t1: [], t2: [] }, gaps: [], subscribed: 0, replayed: 0, reconnecting: [], errors: [], ready: false };
  import("/herald-client.js").then(({ Herald }) => {
    let turn = 0;
    const urls = URLS;
    const h = new Herald(() => urls[turn++ % urls.length], { minDelay: 100, maxDelay: 1000 });
    h.on("reconnecting", (e) => __c.reconnecting.push(e));
    h.on("error", (e) => __c.errors.push(String(e)));
    for (const topic of ["t1", "t2"]) {
      h.subscribe(topic, {
        onMessage: (data, meta) => __c.got[topic].push(typeof data === "string" ? data : "bytes?" + meta.seq),
        onGap: (g) => __c.gaps.push(g),
        onError: (e) => __c.errors.push(String(e)),
        onSubscribed: (s) => { __c.subscribed++; __c.replayed += s.replayed; },
      });
    }
    window.__client = h;
    __c.ready = true;
  }, (e) => __c.errors.push("import failed: " + e));
  return true;
})()
"#;

#[test]
fn page_with_herald_client_sees_exactly_1_to_n_while_cluster_nodes_are_killed_and_restarted() {
    let Some(redis) = Redis::start_or_skip("the herald-client browser test") else {
        return;
    };
    let ports = [free_port(), free_port()];
    let mut nodes = [Some(node(ports[0], &redis)), Some(node(ports[1], &redis))];
    let addr = |i: usize| -> SocketAddr { format!("127.0.0.1:{}", ports[i]).parse().unwrap() };

    let chrome = Chrome::launch(false);
    let page = chrome.page(&format!("http://{}/", addr(0)));
    let urls: Vec<String> = (0..2).map(|i| format!("ws://{}/", addr(i))).collect();
    let urls_js = format!("[{}, {}]", js_string(&urls[0]), js_string(&urls[1]));
    page.eval(&PAGE_CLIENT.replace("URLS", &urls_js));
    let state = "JSON.stringify(window.__c)";
    page.wait_for(
        "window.__c.ready && window.__c.subscribed === 2",
        "the library loaded from /herald-client.js and both topics subscribed",
        state,
    );

    // Publish 1..N on both topics through whichever node is up, while each node in turn is
    // killed (SIGKILL) and restarted. The publisher is the only writer and waits for each
    // answer, so no publish is in flight when a node dies.
    const N: usize = 200;
    let mut target = 1;
    for i in 1..=N {
        match i {
            40 => nodes[0] = None, // SIGKILL (Server's drop) of the page's first node
            80 => nodes[0] = Some(node(ports[0], &redis)),
            120 => nodes[1] = None, // then the other one
            160 => nodes[1] = Some(node(ports[1], &redis)),
            _ => {}
        }
        target = (target + 1) % 2;
        if nodes[target].is_none() {
            target = (target + 1) % 2;
        }
        for topic in ["t1", "t2"] {
            let status = post(addr(target), topic, &i.to_string());
            assert_eq!(status, 202, "publish {i} on {topic} through node {target}");
        }
    }

    let expected: Vec<Value> = (1..=N).map(|i| Value::String(i.to_string())).collect();
    page.wait_for(
        &format!("__c.got.t1.length >= {N} && __c.got.t2.length >= {N}"),
        &format!("{N} messages on both topics"),
        state,
    );
    let c = page.eval("window.__c");
    for topic in ["t1", "t2"] {
        assert_eq!(
            c["got"][topic].as_array().expect("got"),
            &expected,
            "{topic}: exactly 1..{N}, in order"
        );
    }
    assert_eq!(c["gaps"], Value::Array(vec![]), "no gap reported: {c}");
    assert_eq!(c["errors"], Value::Array(vec![]), "no error: {c}");
    let reconnects = c["reconnecting"].as_array().map_or(0, Vec::len);
    eprintln!(
        "page: {reconnects} reconnects, {} subscribes, {} messages replayed through since",
        c["subscribed"], c["replayed"]
    );
    assert!(
        reconnects >= 2,
        "the page was under both killed nodes (reconnected at least twice): {c}"
    );
    assert!(
        c["replayed"].as_u64() > Some(0),
        "messages published while the page was reconnecting came back through since: {c}"
    );
    assert_eq!(page.eval("window.__client.state"), "open");
}
