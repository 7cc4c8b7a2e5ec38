//! Messages per second one browser page can take from one topic through `herald-client`,
//! next to a bare herald.v1 socket: a measurement, run by hand (docs/benchmarks.md has the
//! command and results), not a check. Needs Chromium and `target/release/loadtest`:
//!
//! ```sh
//! cargo build --release -p loadtest
//! HERALD_BENCH_RATES=5000,10000,15000,20000,30000 cargo bench --bench browser_client
//! ```

use std::process::Command;
use std::time::Duration;

use serde_json::Value;
use testkit::browser::{js_string, Chrome};
use testkit::{http_request, wait_until, Server};

/// The page side of [`main`], with `URL` and `VARIANT` filled in. The
/// handler does nothing but count. `client`: through herald-client. `bare`: the least any
/// herald.v1 page must do by hand (a WebSocket, `JSON.parse`, base64 decoding, a seq check),
/// for comparison.
const BENCH_PAGE: &str = r#"
(() => {
  window.__b = { n: 0, first: 0, last: 0, seq: 0, gaps: 0, errors: [], live: false };
  const count = (data, meta) => { const t = performance.now(); if (__b.n++ === 0) __b.first = t; __b.last = t; __b.seq = meta.seq; };
  if (VARIANT === "client") {
    import("/herald-client.js").then(({ Herald }) => {
      const h = new Herald(URL);
      h.on("error", (e) => __b.errors.push(String(e)));
      h.subscribe("bench", { onMessage: count, onGap: () => __b.gaps++, onSubscribed: () => { __b.live = true; } });
    });
  } else {
    const ws = new WebSocket(URL, "herald.v1");
    let last = 0;
    ws.onopen = () => ws.send(JSON.stringify({ op: "subscribe", id: 1, topics: ["bench"] }));
    ws.onclose = (e) => __b.errors.push("close " + e.code);
    ws.onmessage = (e) => {
      const m = JSON.parse(e.data);
      if (m.type === "subscribed") { last = m.seq; __b.seq = m.seq; __b.live = true; return; }
      if (m.type !== "message") return;
      if (m.seq !== last + 1) __b.gaps++;
      last = m.seq;
      const s = atob(m.data_b64), bytes = new Uint8Array(s.length);
      for (let i = 0; i < s.length; i++) bytes[i] = s.charCodeAt(i);
      count(bytes, m);
    };
  }
  return true;
})()
"#;

/// How many messages per second one page can take from one topic through `herald-client`
/// with a handler that does nothing, next to a bare herald.v1 socket. `target/release/loadtest`
/// publishes 64-byte binary messages (`data_b64` in the envelope) in raw mode for 5 s at each
/// rate of `HERALD_BENCH_RATES` (comma-separated); the page counts what its handler got, from
/// the first message to the last: once it has the topic's last seq, or after 30 s.
fn main() {
    let loadtest = concat!(env!("CARGO_MANIFEST_DIR"), "/target/release/loadtest");
    assert!(
        std::path::Path::new(loadtest).is_file(),
        "{loadtest} missing: cargo build --release -p loadtest"
    );
    let rates: Vec<u64> = std::env::var("HERALD_BENCH_RATES")
        .unwrap_or_else(|_| "5000,10000,15000,20000,40000".into())
        .split(',')
        .filter_map(|r| r.trim().parse().ok())
        .collect();
    println!("variant\trate/s\tsent\treceived\tpage msgs/s\tgaps\terrors");
    for variant in ["client", "bare"] {
        let server = Server::start(&["--threads", "1"]);
        let chrome = Chrome::launch(false);
        let page = chrome.page(&format!("http://{}/", server.addr));
        let url = js_string(&format!("ws://{}/", server.addr));
        page.eval(
            &BENCH_PAGE
                .replace("URL", &url)
                .replace("VARIANT", &js_string(variant)),
        );
        page.wait_for(
            "window.__b.live",
            "the page subscribed",
            "JSON.stringify(window.__b)",
        );
        // Messages published to the topic so far: the seq the page must reach.
        let mut total = 0;
        for &rate in &rates {
            page.eval("Object.assign(window.__b, { n: 0, first: 0, last: 0, gaps: 0 })");
            let out = Command::new(loadtest)
                .args(["--url", &format!("ws://{}/bench", server.addr)])
                .args(["--connections", "1", "--size", "64"])
                .args(["--duration", "5", "--warmup", "0.5"])
                .args(["--rate", &rate.to_string(), "--json", "--quiet"])
                .output()
                .expect("run loadtest");
            let report: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
                panic!(
                    "loadtest output: {e}: {} {}",
                    String::from_utf8_lossy(&out.stdout),
                    String::from_utf8_lossy(&out.stderr)
                )
            });
            let sent = report["sent_total"].as_u64().unwrap_or(0);
            total += sent;
            // Until the page has the topic's last message (at most 30 s).
            let _ = wait_until(Duration::from_secs(30), || {
                page.eval("window.__b.seq").as_u64() >= Some(total)
                    || !page
                        .eval("window.__b.errors.length == 0")
                        .as_bool()
                        .unwrap_or(true)
            });
            let b = page.eval("window.__b");
            let n = b["n"].as_f64().unwrap_or(0.0);
            let ms = b["last"].as_f64().unwrap_or(0.0) - b["first"].as_f64().unwrap_or(0.0);
            let per_s = if ms > 0.0 { n * 1000.0 / ms } else { 0.0 };
            println!(
                "{variant}\t{rate}\t{sent}\t{n}\t{per_s:.0}\t{}\t{}",
                b["gaps"], b["errors"]
            );
            if !b["errors"].as_array().is_none_or(Vec::is_empty) {
                break;
            }
        }
        let metrics = http_request(
            server.addr,
            b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        )
        .0;
        let text = String::from_utf8_lossy(&metrics.body);
        for line in text.lines().filter(|l| {
            l.starts_with("herald_full_drops_total") || l.starts_with("herald_slow_consumer")
        }) {
            println!("{variant}: herald {line}");
        }
    }
}
