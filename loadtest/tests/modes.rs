//! Runs the `loadtest` binary in its three modes against a tiny path-topic broadcast server
//! started by the test itself, and checks the JSON report against the server's own counts.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;

use serde_json::Value;
use tungstenite::handshake::server::{Request, Response};
use tungstenite::protocol::Role;
use tungstenite::WebSocket;

type Writer = Arc<Mutex<WebSocket<TcpStream>>>;
/// Members of each topic (URL path): connection id and its write half.
type Topics = Arc<Mutex<HashMap<String, Vec<(u64, Writer)>>>>;

/// What the test server saw.
#[derive(Default)]
struct Counts {
    /// Data messages received from clients.
    received: AtomicU64,
    /// Data messages written to clients.
    delivered: AtomicU64,
    /// Upgrades completed.
    upgrades: AtomicU64,
}

/// A threaded broadcast server: every data message goes to every connection on the same path,
/// the sender included. Returns its port and counters.
fn broadcast_server() -> (u16, Arc<Counts>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let counts = Arc::new(Counts::default());
    let topics: Topics = Arc::default();
    let c = counts.clone();
    thread::spawn(move || {
        for (id, stream) in listener.incoming().enumerate() {
            let Ok(stream) = stream else { continue };
            let topics = topics.clone();
            let counts = c.clone();
            thread::spawn(move || serve(id as u64, stream, topics, counts));
        }
    });
    (port, counts)
}

fn serve(id: u64, stream: TcpStream, topics: Topics, counts: Arc<Counts>) {
    let _ = stream.set_nodelay(true);
    let mut path = String::new();
    #[allow(clippy::result_large_err)] // the callback signature is tungstenite's
    let cb = |req: &Request, resp: Response| {
        path = req.uri().path().to_string();
        Ok(resp)
    };
    let Ok(mut reader) = tungstenite::accept_hdr(stream, cb) else {
        return;
    };
    let Ok(write_half) = reader.get_ref().try_clone() else {
        return;
    };
    let writer: Writer = Arc::new(Mutex::new(WebSocket::from_raw_socket(
        write_half,
        Role::Server,
        None,
    )));
    counts.upgrades.fetch_add(1, Ordering::SeqCst);
    topics
        .lock()
        .expect("lock")
        .entry(path.clone())
        .or_default()
        .push((id, writer));
    while let Ok(msg) = reader.read() {
        if !(msg.is_binary() || msg.is_text()) {
            continue;
        }
        counts.received.fetch_add(1, Ordering::SeqCst);
        let members: Vec<Writer> = topics.lock().expect("lock")[&path]
            .iter()
            .map(|(_, w)| w.clone())
            .collect();
        for w in members {
            if w.lock().expect("lock").send(msg.clone()).is_ok() {
                counts.delivered.fetch_add(1, Ordering::SeqCst);
            }
        }
    }
    let mut t = topics.lock().expect("lock");
    if let Some(v) = t.get_mut(&path) {
        v.retain(|(i, _)| *i != id);
    }
}

fn loadtest(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_loadtest"))
        .args(args)
        .output()
        .expect("run loadtest")
}

fn json_report(args: &[&str]) -> Value {
    let out = loadtest(args);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "loadtest failed: {stderr}");
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "bad JSON ({e}): {}\nstderr: {stderr}",
            String::from_utf8_lossy(&out.stdout)
        )
    })
}

fn u(v: &Value, key: &str) -> u64 {
    v[key]
        .as_u64()
        .unwrap_or_else(|| panic!("{key} missing in {v}"))
}

#[test]
fn fanout_counts_match_the_server() {
    let (port, counts) = broadcast_server();
    let url = format!("ws://127.0.0.1:{port}/bench");
    let hgrm = std::env::temp_dir().join(format!("loadtest-test-{}.hgrm", std::process::id()));
    let hgrm_s = hgrm.to_string_lossy().to_string();
    let r = json_report(&[
        "--url",
        &url,
        "--connections",
        "20",
        "--publishers",
        "2",
        "--rate",
        "200",
        "--warmup",
        "0.5",
        "--duration",
        "1.5",
        "--procs",
        "2",
        "--json",
        "--hgrm",
        &hgrm_s,
    ]);
    assert_eq!(u(&r, "connections"), 22);
    assert_eq!(u(&r, "subscribers"), 20);
    assert!(r["errors"].as_object().is_some_and(|e| e.is_empty()), "{r}");
    let sent = u(&r, "sent");
    assert_eq!(sent, 300, "1.5 s at 200 msg/s");
    assert_eq!(u(&r, "expected"), sent * 20);
    assert_eq!(u(&r, "delivered"), sent * 20);
    assert_eq!(u(&r, "lost"), 0);
    assert_eq!(u(&r, "duplicates"), 0);
    assert_eq!(u(&r, "out_of_order"), 0);
    assert_eq!(u(&r, "unexpected"), 0);
    assert!(r["latency_us"]["p50"].as_f64().is_some_and(|v| v > 0.0));
    assert!(r["latency_us"]["p99"].as_f64() <= r["latency_us"]["max"].as_f64());
    assert!(r["connect_latency_us"]["p999"].as_f64().is_some());
    // The server saw exactly what the loadtest sent, and delivered it to all 22 members.
    let total = u(&r, "sent_total");
    assert_eq!(
        counts.received.load(Ordering::SeqCst),
        total,
        "nothing invented or dropped"
    );
    assert_eq!(counts.delivered.load(Ordering::SeqCst), total * 22);
    assert_eq!(
        counts.upgrades.load(Ordering::SeqCst),
        23,
        "22 plus the preflight probe"
    );
    assert!(u(&r, "received_total") == total * 22);
    let text = std::fs::read_to_string(&hgrm).expect("hgrm written");
    let _ = std::fs::remove_file(&hgrm);
    assert!(text.starts_with("       Value     Percentile"), "{text}");
    assert!(text.contains("#[Max"));
}

#[test]
fn echo_mode_times_round_trips() {
    let (port, counts) = broadcast_server();
    let url = format!("ws://127.0.0.1:{port}/echo");
    let r = json_report(&[
        "--url",
        &url,
        "--mode",
        "echo",
        "--connections",
        "20",
        "--rate",
        "400",
        "--warmup",
        "0.2",
        "--duration",
        "1",
        "--json",
        "--quiet",
    ]);
    assert_eq!(u(&r, "connections"), 20);
    assert!(r["errors"].as_object().is_some_and(|e| e.is_empty()), "{r}");
    assert_eq!(u(&r, "sent"), 400);
    assert_eq!(u(&r, "delivered"), 400);
    assert_eq!(u(&r, "lost"), 0);
    assert!(r["latency_us"]["p50"].as_f64().is_some_and(|v| v > 0.0));
    // One topic per connection: every message came back to its sender only.
    assert_eq!(
        counts.delivered.load(Ordering::SeqCst),
        counts.received.load(Ordering::SeqCst)
    );
}

#[test]
fn connect_mode_counts_handshakes() {
    let (port, counts) = broadcast_server();
    let url = format!("ws://127.0.0.1:{port}/storm");
    let r = json_report(&[
        "--url",
        &url,
        "--mode",
        "connect",
        "--connections",
        "50",
        "--connect-rate",
        "0",
        "--max-inflight",
        "16",
        "--json",
        "--quiet",
    ]);
    assert_eq!(u(&r, "connections"), 50);
    assert_eq!(u(&r, "connections_attempted"), 50);
    assert!(r["errors"].as_object().is_some_and(|e| e.is_empty()), "{r}");
    assert!(r["handshakes_per_sec"].as_f64().is_some_and(|v| v > 0.0));
    assert_eq!(r["connect_latency_us"]["count"], 50);
    assert_eq!(counts.upgrades.load(Ordering::SeqCst), 51);
}

#[test]
fn clear_errors() {
    // Nothing listening.
    let port = TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("a")
        .port();
    let out = loadtest(&[
        "--url",
        &format!("ws://127.0.0.1:{port}/x"),
        "--duration",
        "1",
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        err.contains("cannot reach") && err.contains("refused"),
        "{err}"
    );

    // A server that refuses the upgrade.
    let l = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = l.local_addr().expect("addr").port();
    thread::spawn(move || {
        for s in l.incoming().flatten() {
            let mut s = s;
            let mut buf = [0u8; 4096];
            let _ = s.read(&mut buf);
            let _ = s.write_all(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n");
        }
    });
    let out = loadtest(&[
        "--url",
        &format!("ws://127.0.0.1:{port}/x"),
        "--duration",
        "1",
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        err.contains("refused the WebSocket upgrade: HTTP 403 Forbidden"),
        "{err}"
    );

    // Not loopback, and bad flags.
    let out = loadtest(&["--url", "ws://10.1.2.3:9000/"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("loopback"));
    let out = loadtest(&["--url", "ws://127.0.0.1:9000/", "--size", "8"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--size"));
    let out = loadtest(&[
        "--url",
        "ws://127.0.0.1:9000/",
        "--connections",
        "100000",
        "--procs",
        "1",
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("--procs"),
        "file limit explained"
    );
}
