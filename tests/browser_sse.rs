//! A real Chromium `EventSource` on a cluster node (`--broker`, a real `redis-server`): the
//! page streams two topics from `/sse?topic=t1&topic=t2` while its node is drained and
//! restarted (SIGTERM), then killed and restarted (SIGKILL), and messages keep being
//! published through the other node. The browser's own reconnect (with `Last-Event-ID`) must
//! end with exactly `1..N` on both topics, and no `gap` event.
//!
//! Without Chromium the test fails saying how to install it; without `redis-server` it says so
//! loudly and passes locally, and fails with `CI=true` (like tests/cluster.rs).

use std::net::SocketAddr;
use std::time::Duration;

use nix::sys::signal::Signal;
use serde_json::Value;
use testkit::browser::Chrome;
use testkit::redis_server::Redis;
use testkit::{free_port, Server};

/// A cluster node on a fixed port (so that it can be restarted where the page looks for it).
fn node(port: u16, redis: &Redis) -> Server {
    Server::start_node_on(port, &redis.url(), &["--drain-timeout", "2s"])
}

/// HTTP publish of a text body; the status.
fn post(addr: SocketAddr, topic: &str, body: &str) -> u16 {
    testkit::post(addr, topic, "text/plain", "", body.as_bytes()).0
}

/// One `EventSource` for both topics; everything it sees goes to `window.__s`.
const PAGE: &str = r#"
(() => {
  window.__s = { got: { t1: [], t2: [] }, gaps: [], opens: 0, errors: 0, ids: [] };
  const es = new EventSource("/sse?topic=t1&topic=t2");
  es.onopen = () => __s.opens++;
  es.onerror = () => __s.errors++;
  for (const t of ["t1", "t2"]) {
    es.addEventListener(t, (e) => { __s.got[t].push(e.data); __s.ids.push(e.lastEventId); });
  }
  es.addEventListener("gap", (e) => __s.gaps.push(e.data));
  window.__es = es;
  return true;
})()
"#;

#[test]
fn event_source_reconnects_through_node_restarts_without_loss() {
    let Some(redis) = Redis::start_or_skip("the EventSource browser test") else {
        return;
    };
    let ports = [free_port(), free_port()];
    let addr = |i: usize| -> SocketAddr { format!("127.0.0.1:{}", ports[i]).parse().unwrap() };
    let mut page_node = Some(node(ports[0], &redis));
    let other = node(ports[1], &redis);

    let chrome = Chrome::launch(false);
    let page = chrome.page(&format!("http://{}/", addr(0)));
    page.eval(PAGE);
    let state = "JSON.stringify(window.__s)";
    page.wait_for("window.__s.opens === 1", "the EventSource opened", state);
    // The stream's joins are asynchronous: publish warm-up messages until the page has
    // one of each topic (they are left out of the count below).
    for k in 0..100 {
        if page.eval("__s.got.t1.length > 0 && __s.got.t2.length > 0") == Value::Bool(true) {
            break;
        }
        for topic in ["t1", "t2"] {
            assert_eq!(post(addr(1), topic, &format!("w{k}")), 202);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    page.wait_for(
        "__s.got.t1.length > 0 && __s.got.t2.length > 0",
        "a warm-up message on both topics",
        state,
    );

    // Publish 1..N on both topics through the other node while the page's node is drained
    // and restarted, then killed and restarted.
    const N: usize = 160;
    for i in 1..=N {
        match i {
            40 => {
                let mut drained = page_node.take().expect("up");
                drained.signal(Signal::SIGTERM);
                assert!(drained.wait_exit(Duration::from_secs(10)).is_some());
            }
            60 => {
                page_node = Some(node(ports[0], &redis));
                // The browser reconnects by itself (after its own, growing, delay): let it
                // be back on the restarted node before that node is killed.
                page.wait_for("__s.opens >= 2", "the reconnect after the drain", state);
            }
            100 => page_node = None, // SIGKILL (Server's drop)
            120 => page_node = Some(node(ports[0], &redis)),
            _ => {}
        }
        for topic in ["t1", "t2"] {
            assert_eq!(post(addr(1), topic, &i.to_string()), 202, "publish {i}");
        }
        std::thread::sleep(Duration::from_millis(10));
    }

    let expected: Vec<Value> = (1..=N).map(|i| Value::String(i.to_string())).collect();
    page.wait_for("__s.opens >= 3", "the reconnect after the kill", state);
    page.wait_for(
        &format!("__s.got.t1.slice(-1)[0] === '{N}' && __s.got.t2.slice(-1)[0] === '{N}'"),
        &format!("message {N} on both topics"),
        state,
    );
    let s = page.eval("window.__s");
    for topic in ["t1", "t2"] {
        let got: Vec<Value> = s["got"][topic]
            .as_array()
            .expect("got")
            .iter()
            .filter(|v| !v.as_str().is_some_and(|t| t.starts_with('w')))
            .cloned()
            .collect();
        assert_eq!(
            got, expected,
            "{topic}: exactly 1..={N}, in order, nothing twice"
        );
    }
    assert_eq!(s["gaps"], Value::Array(vec![]), "no gap: {s}");
    let opens = s["opens"].as_u64().unwrap_or(0);
    eprintln!("EventSource: {opens} opens, {} errors", s["errors"]);
    assert!(opens >= 3, "the page reconnected after both restarts: {s}");
    drop(other);
}
