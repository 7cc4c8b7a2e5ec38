//! Runs the `loadtest` binary against `wss://` URLs: a broadcast server started by the test
//! speaks TLS with a self-signed certificate made at test time, so runs with `--insecure` must
//! deliver everything and runs without it must stop with a clear certificate error.

mod common;

use std::sync::atomic::Ordering;

use common::*;
use testkit::broadcast::broadcast_server;
use testkit::TestCert;

#[test]
fn wss_fanout_delivers_everything() {
    let (port, counts) = broadcast_server(Some(TestCert::generate().server_config()));
    let url = format!("wss://127.0.0.1:{port}/t");
    let r = json_report(&[
        "--url",
        &url,
        "--insecure",
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
        "--quiet",
    ]);
    no_errors(&r);
    assert_eq!(r["tls"], "insecure");
    assert_eq!(u(&r, "connections"), 22);
    let sent = u(&r, "sent");
    assert_eq!(sent, 300, "1.5 s at 200 msg/s");
    assert_eq!(u(&r, "expected"), sent * 20);
    assert_eq!(u(&r, "delivered"), sent * 20);
    assert_eq!(u(&r, "lost"), 0);
    assert_eq!(u(&r, "duplicates"), 0);
    assert!(r["latency_us"]["p50"].as_f64().is_some_and(|v| v > 0.0));
    let total = u(&r, "sent_total");
    assert_eq!(counts.received.load(Ordering::SeqCst), total);
    assert_eq!(counts.delivered.load(Ordering::SeqCst), total * 22);
    assert_eq!(
        counts.upgrades.load(Ordering::SeqCst),
        23,
        "22 plus the preflight probe"
    );
}

#[test]
fn wss_echo_times_round_trips() {
    let (port, counts) = broadcast_server(Some(TestCert::generate().server_config()));
    let url = format!("wss://localhost:{port}/echo");
    let r = json_report(&[
        "--url",
        &url,
        "--insecure",
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
    no_errors(&r);
    assert_eq!(u(&r, "sent"), 400);
    assert_eq!(u(&r, "delivered"), 400);
    assert_eq!(u(&r, "lost"), 0);
    assert_eq!(
        counts.delivered.load(Ordering::SeqCst),
        counts.received.load(Ordering::SeqCst)
    );
}

#[test]
fn wss_connect_storm_includes_the_tls_handshake() {
    let (port, counts) = broadcast_server(Some(TestCert::generate().server_config()));
    let url = format!("wss://127.0.0.1:{port}/storm");
    let r = json_report(&[
        "--url",
        &url,
        "--insecure",
        "--mode",
        "connect",
        "--connections",
        "30",
        "--connect-rate",
        "0",
        "--max-inflight",
        "8",
        "--json",
        "--quiet",
    ]);
    no_errors(&r);
    assert_eq!(u(&r, "connections"), 30);
    assert_eq!(r["connect_latency_us"]["count"], 30);
    assert_eq!(counts.upgrades.load(Ordering::SeqCst), 31);
}

#[test]
fn wss_without_insecure_rejects_a_self_signed_certificate() {
    let (port, counts) = broadcast_server(Some(TestCert::generate().server_config()));
    let url = format!("wss://127.0.0.1:{port}/t");
    let out = loadtest(&["--url", &url, "--connections", "5", "--duration", "1"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains(
            "TLS handshake failed: invalid peer certificate: UnknownIssuer (use --insecure for a \
             self-signed certificate)"
        ),
        "{err}"
    );
    assert_eq!(counts.upgrades.load(Ordering::SeqCst), 0);

    // A plain server on a wss:// URL.
    let (port, _) = broadcast_server(None);
    let url = format!("wss://127.0.0.1:{port}/t");
    let out = loadtest(&["--url", &url, "--insecure", "--duration", "1"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("TLS handshake failed"), "{err}");
}
