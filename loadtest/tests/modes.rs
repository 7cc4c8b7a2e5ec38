//! Runs the `loadtest` binary in its three modes against a tiny path-topic broadcast server
//! started by the test itself, and checks the JSON report against the server's own counts.

mod common;

use std::io::{Read, Write};
use std::net::TcpListener;
use std::sync::atomic::Ordering;
use std::thread;

use common::*;
use testkit::broadcast::broadcast_server;

#[test]
fn fanout_counts_match_the_server() {
    let (port, counts) = broadcast_server(None);
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
    no_errors(&r);
    let sent = u(&r, "sent");
    assert_eq!(sent, 300, "1.5 s at 200 msg/s");
    assert_eq!(u(&r, "expected"), sent * 20);
    assert_eq!(u(&r, "delivered"), sent * 20);
    assert_eq!(u(&r, "lost"), 0);
    assert_eq!(u(&r, "duplicates"), 0);
    assert_eq!(u(&r, "out_of_order"), 0);
    assert_eq!(u(&r, "unexpected"), 0);
    assert!(r["latency_us"]["p50"].as_f64().is_some_and(|v| v > 0.0));
    let p99 = r["latency_us"]["p99"].as_f64().expect("latency_us.p99");
    let max = r["latency_us"]["max"].as_f64().expect("latency_us.max");
    assert!(p99 <= max, "p99 {p99} > max {max}: {r}");
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
    let (port, counts) = broadcast_server(None);
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
    no_errors(&r);
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
    let (port, counts) = broadcast_server(None);
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
    no_errors(&r);
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

#[test]
fn hgrm_dash_prints_the_distribution_on_stdout() {
    let (port, _counts) = broadcast_server(None);
    let url = format!("ws://127.0.0.1:{port}/bench");
    // Run where a file named `-` would land, to see that none is made.
    let dir = std::env::temp_dir().join(format!("loadtest-hgrm-dash-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_loadtest"))
        .current_dir(&dir)
        .args(["--url", &url, "--connections", "5", "--rate", "100"])
        .args(["--warmup", "0.2", "--duration", "0.5", "--hgrm", "-"])
        .output()
        .expect("run loadtest");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let table = stdout
        .find("       Value     Percentile")
        .expect("the .hgrm table on stdout");
    assert!(stdout[table..].contains("#[Max"), "{stdout}");
    assert!(table > 0, "the text report comes first: {stdout}");
    assert!(!dir.join("-").exists(), "a file named - was written");
    let _ = std::fs::remove_dir_all(&dir);

    // With --json, stdout is the JSON object's alone: the combination is refused.
    let out = loadtest(&["--url", &url, "--json", "--hgrm", "-"]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("--json and --hgrm -"), "{stderr}");
}

/// `--inflight N`: the publisher sends only while fewer than N of its own messages are on
/// their way back, so the server never holds more than N of them; everything sent in the
/// window is delivered and counted by send time.
#[test]
fn inflight_is_a_closed_loop() {
    let (port, counts) = broadcast_server(None);
    let url = format!("ws://127.0.0.1:{port}/closed");
    let r = json_report(&[
        "--url",
        &url,
        "--connections",
        "10",
        "--inflight",
        "4",
        "--warmup",
        "0.3",
        "--duration",
        "1",
        "--json",
    ]);
    no_errors(&r);
    assert_eq!(u(&r, "inflight"), 4);
    assert!(r["rate"].is_null(), "no rate in a closed loop: {r}");
    let sent = u(&r, "sent");
    assert!(sent > 0, "{r}");
    assert_eq!(u(&r, "expected"), sent * 10);
    assert_eq!(u(&r, "delivered"), sent * 10);
    assert_eq!(u(&r, "lost"), 0);
    assert_eq!(u(&r, "duplicates"), 0);
    assert_eq!(u(&r, "out_of_order"), 0);
    // Every message sent (warmup included) reached all 11 members, the publisher's echo too.
    let total = u(&r, "sent_total");
    assert_eq!(counts.received.load(Ordering::SeqCst), total);
    assert_eq!(counts.delivered.load(Ordering::SeqCst), total * 11);
}
