//! Structured logs on stderr: `--log-format json` writes one JSON object per line, and
//! `--log-level debug` adds a line per connect and disconnect with the peer, the worker, the
//! connection id and why it ended. At the default level there are none.

use std::time::Duration;

use serde_json::Value;
use testkit::*;

/// Every stderr line parsed as JSON (each one must be an object with the four keys).
fn json_lines(server: &Server) -> Vec<Value> {
    server
        .stderr_text()
        .lines()
        .filter(|l| !l.is_empty())
        .map(|l| {
            let v: Value = serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}"));
            for key in ["ts", "level", "target", "msg"] {
                assert!(v[key].is_string(), "{key} missing in {l}");
            }
            assert!(v["fields"].is_object(), "fields missing in {l}");
            v
        })
        .collect()
}

/// `YYYY-MM-DDTHH:MM:SS.mmmZ`
fn is_rfc3339_millis(ts: &str) -> bool {
    let b = ts.as_bytes();
    b.len() == 24
        && b.iter().enumerate().all(|(i, &c)| match i {
            4 | 7 => c == b'-',
            10 => c == b'T',
            13 | 16 => c == b':',
            19 => c == b'.',
            23 => c == b'Z',
            _ => c.is_ascii_digit(),
        })
}

#[test]
fn debug_json_logs_a_connect_and_a_disconnect_with_peer_and_reason() {
    let server = Server::start(&["--log-level", "debug", "--log-format", "json"]);
    let ws = connect(server.addr, "logged");
    let peer = ws
        .get_ref()
        .local_addr()
        .expect("local address")
        .to_string();
    close_cleanly(ws);

    let with_peer = |msg: &str| {
        json_lines(&server)
            .into_iter()
            .find(|v| v["msg"] == msg && v["fields"]["peer"] == peer.as_str())
    };
    assert!(
        wait_until(Duration::from_secs(10), || with_peer("disconnect")
            .is_some()),
        "no disconnect line for {peer} in:\n{}",
        server.stderr_text()
    );
    let connect = with_peer("connect").expect("a connect line");
    let disconnect = with_peer("disconnect").expect("a disconnect line");
    for line in [&connect, &disconnect] {
        assert_eq!(line["level"], "DEBUG", "{line}");
        assert!(
            line["target"].as_str().unwrap().starts_with("herald::"),
            "{line}"
        );
        assert!(is_rfc3339_millis(line["ts"].as_str().unwrap()), "{line}");
        assert!(line["fields"]["worker"].is_u64(), "{line}");
        assert!(line["fields"]["conn"].is_u64(), "{line}");
    }
    assert_eq!(connect["fields"]["tls"], false, "{connect}");
    assert_eq!(connect["fields"]["conn"], disconnect["fields"]["conn"]);
    assert_eq!(connect["fields"]["worker"], disconnect["fields"]["worker"]);
    // The client closed with a close frame (tungstenite sends no code: 1005).
    assert_eq!(disconnect["fields"]["reason"], "peer_close", "{disconnect}");
    assert_eq!(disconnect["fields"]["code"], 1005, "{disconnect}");
}

#[test]
fn debug_text_logs_name_the_reason_of_a_refused_request() {
    let server = Server::start(&["--log-level", "debug"]);
    let (response, _stream) =
        http_request(server.addr, b"GET /no%20such HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(response.status, 404);
    drop(_stream);
    let found = wait_until(Duration::from_secs(10), || {
        server.stderr_text().lines().any(|l| {
            l.contains(" DEBUG herald::worker")
                && l.contains(": disconnect ")
                && l.contains(" reason=http code=404")
        })
    });
    assert!(
        found,
        "no text disconnect line with the 404:\n{}",
        server.stderr_text()
    );
    let line = server
        .stderr_text()
        .lines()
        .find(|l| l.contains(": connect "))
        .map(str::to_string)
        .expect("a connect line");
    assert!(is_rfc3339_millis(&line[..24]), "{line}");
    assert!(
        line.contains(" worker=") && line.contains(" conn=") && line.contains(" peer=127.0.0.1:"),
        "{line}"
    );
}

#[test]
fn the_default_level_logs_no_connections() {
    let mut server = Server::start(&[]);
    let ws = connect(server.addr, "quiet");
    close_cleanly(ws);
    let (response, _) = http_request(server.addr, b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(response.status, 200);
    // Everything the server will ever log is in once it has exited and closed stderr.
    server.signal(nix::sys::signal::Signal::SIGTERM);
    assert!(
        server.wait_exit(Duration::from_secs(10)).is_some(),
        "no exit after SIGTERM"
    );
    assert!(
        server.wait_stderr_end(Duration::from_secs(5)),
        "stderr still open after exit"
    );
    let stderr = server.stderr_text();
    assert!(!stderr.contains("connect"), "{stderr}");
}
