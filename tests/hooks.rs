//! Backend hooks against a real HTTP backend started by each test (a small server on a std
//! `TcpListener`, keep-alive like a real one): the JSON herald posts, allow and deny (with the
//! reason reaching the client as an HTTP status, a close code or a `herald.v1` error),
//! attached identity and grants, publish order with answers coming back out of order, the
//! allow cache, the in-flight bound, and a failing backend (down, slow, 5xx, garbage): clear
//! refusals, counted in `/metrics`, nobody else affected, recovery when it answers again.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

use serde_json::{json, Value};
use testkit::v1::V1;
use testkit::*;

/// What the backend answers one request with.
#[derive(Clone)]
struct Reply {
    status: u16,
    body: String,
    delay: Duration,
}

fn allow() -> Reply {
    Reply {
        status: 200,
        body: r#"{"allow":true}"#.into(),
        delay: Duration::ZERO,
    }
}

fn deny(reason: &str) -> Reply {
    Reply {
        status: 200,
        body: json!({"allow": false, "reason": reason}).to_string(),
        delay: Duration::ZERO,
    }
}

type Rule = Arc<dyn Fn(&Value) -> Reply + Send + Sync>;

/// A hook backend: records every JSON body, answers by `rule`.
struct Backend {
    addr: SocketAddr,
    seen: Arc<Mutex<Vec<Value>>>,
    rule: Arc<Mutex<Rule>>,
    connections: Arc<AtomicUsize>,
}

impl Backend {
    fn start(rule: impl Fn(&Value) -> Reply + Send + Sync + 'static) -> Backend {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let rule: Arc<Mutex<Rule>> = Arc::new(Mutex::new(Arc::new(rule)));
        let connections = Arc::new(AtomicUsize::new(0));
        let (s, r, c) = (seen.clone(), rule.clone(), connections.clone());
        thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                c.fetch_add(1, SeqCst);
                let (s, r) = (s.clone(), r.clone());
                thread::spawn(move || serve(stream, &s, &r));
            }
        });
        Backend {
            addr,
            seen,
            rule,
            connections,
        }
    }

    fn url(&self) -> String {
        format!("http://{}/hook", self.addr)
    }

    fn set(&self, rule: impl Fn(&Value) -> Reply + Send + Sync + 'static) {
        *self.rule.lock().unwrap() = Arc::new(rule);
    }

    fn seen(&self) -> Vec<Value> {
        self.seen.lock().unwrap().clone()
    }
}

/// One keep-alive connection: requests with a Content-Length body, one answer each.
fn serve(stream: TcpStream, seen: &Mutex<Vec<Value>>, rule: &Mutex<Rule>) {
    let mut writer = stream.try_clone().unwrap();
    let mut reader = BufReader::new(stream);
    loop {
        let mut len = 0usize;
        let mut first = true;
        loop {
            let mut line = String::new();
            match reader.read_line(&mut line) {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
            if line == "\r\n" && !first {
                break;
            }
            first = false;
            if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                len = v.trim().parse().unwrap_or(0);
            }
        }
        let mut body = vec![0u8; len];
        if reader.read_exact(&mut body).is_err() {
            return;
        }
        let value: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
        seen.lock().unwrap().push(value.clone());
        let rule = rule.lock().unwrap().clone();
        let reply = rule(&value);
        thread::sleep(reply.delay);
        let response = format!(
            "HTTP/1.1 {} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{}",
            reply.status,
            reply.body.len(),
            reply.body
        );
        if writer.write_all(response.as_bytes()).is_err() {
            return;
        }
    }
}

/// The `/metrics` value of a hook counter.
fn hook_metric(server: &Server, hook: &str, result: &str) -> u64 {
    let (response, _) = http_request(server.addr, b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n");
    let body = String::from_utf8_lossy(&response.body).to_string();
    let prefix = format!("herald_hook_requests_total{{hook=\"{hook}\",result=\"{result}\"}} ");
    body.lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("{prefix} not in /metrics"))
}

const KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";

/// Status and body of an upgrade of `path`.
fn upgrade(server: &Server, path: &str) -> (u16, String) {
    let (response, _) = http_request(server.addr, upgrade_request(path, KEY, &[]).as_bytes());
    (
        response.status,
        String::from_utf8_lossy(&response.body).to_string(),
    )
}

#[test]
fn the_connect_hook_allows_denies_and_attaches_identity_and_grants() {
    let backend = Backend::start(|v| {
        match v["token"].as_str() {
        Some("alice") => Reply {
            status: 200,
            body: json!({"allow": true, "identity": "user-alice", "grants": {"subscribe": ["a/*"], "publish": []}}).to_string(),
            delay: Duration::ZERO,
        },
        Some("mallory") => deny("banned user"),
        _ => allow(),
    }
    });
    let url = backend.url();
    let server = Server::start(&["--threads", "2", "--connect-hook", &url]);

    // Denied: 403 with the backend's reason; SSE the same.
    let (status, body) = upgrade(&server, "/news?token=mallory");
    assert_eq!(status, 403);
    assert!(body.contains("banned user"), "{body}");
    let sse = SseClient::connect(server.addr, "/news?token=mallory", &[]);
    assert_eq!(sse.status, 403);

    // Allowed: a raw subscriber gets messages.
    let mut ws = connect(server.addr, "news");
    sync(&mut ws, "hello");

    // What the backend saw: the transport, the address, the topics, the token.
    let seen = backend.seen();
    let first = &seen[0];
    assert_eq!(first["hook"], "connect");
    assert_eq!(first["transport"], "websocket");
    assert_eq!(first["topics"], json!(["news"]));
    assert_eq!(first["token"], "mallory");
    assert!(first["address"].as_str().unwrap().starts_with("127.0.0.1:"));
    assert!(seen.iter().any(|v| v["transport"] == "sse"));

    // Attached grants replace the (anonymous) default: alice may subscribe to a/* only.
    let stream = TcpStream::connect(server.addr).unwrap();
    stream.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    let mut request = tungstenite::client::IntoClientRequest::into_client_request(format!(
        "ws://{}/?token=alice",
        server.addr
    ))
    .unwrap();
    request
        .headers_mut()
        .insert("Sec-WebSocket-Protocol", "herald.v1".parse().unwrap());
    let (ws, _) = tungstenite::client(request, stream).expect("v1 handshake");
    let mut alice = V1 { ws };
    alice.subscribe(1, json!(["a/x"]));
    alice.send_subscribe(2, json!(["b"]));
    let refused = alice.expect("error");
    assert_eq!(refused["code"], "forbidden");
    alice.publish(3, "a/x", "no publish grant");
    assert_eq!(alice.expect("error")["code"], "forbidden");
    assert!(hook_metric(&server, "connect", "deny") >= 2);
}

#[test]
fn the_subscribe_hook_decides_each_topic() {
    let backend = Backend::start(|v| {
        if v["topic"].as_str().is_some_and(|t| t.starts_with("secret")) {
            deny("not for you")
        } else {
            allow()
        }
    });
    let url = backend.url();
    let server = Server::start(&["--threads", "2", "--subscribe-hook", &url]);
    let mut client = V1::connect(server.addr);
    client.subscribe(1, json!(["open"]));
    client.send_subscribe(2, json!(["secret/plans"]));
    let refused = client.expect("error");
    assert_eq!(refused["code"], "forbidden");
    assert!(
        refused["reason"].as_str().unwrap().contains("not for you"),
        "{refused}"
    );
    // Raw path and SSE topics are asked too.
    assert_eq!(upgrade(&server, "/secret/x").0, 403);
    assert_eq!(
        SseClient::connect(server.addr, "/sse?topic=open&topic=secret/y", &[]).status,
        403
    );
    let mut ok = SseClient::connect(server.addr, "/open", &[]);
    assert_eq!(ok.status, 200);
    // A pattern is asked once, as the pattern, and says so.
    client.send_subscribe(3, json!(["secret/*"]));
    assert_eq!(client.expect("error")["code"], "forbidden");
    assert_eq!(client.subscribe(4, json!(["open/*"]))["pattern"], "open/*");
    let seen = backend.seen();
    assert!(seen.iter().all(|v| v["hook"] == "subscribe"));
    assert!(seen.iter().any(|v| v["topic"] == "secret/y"));
    let asked = |t: &str| seen.iter().find(|v| v["topic"] == t).cloned();
    assert_eq!(
        asked("open/*").map(|v| v["pattern"].clone()),
        Some(json!(true))
    );
    assert_eq!(
        asked("secret/*").map(|v| v["pattern"].clone()),
        Some(json!(true))
    );
    assert_eq!(
        asked("open").map(|v| v.get("pattern").is_none()),
        Some(true)
    );
    let _ = ok.next_item(); // retry:
}

#[test]
fn publish_hook_keeps_each_publishers_order_when_answers_come_back_out_of_order() {
    // Earlier messages are answered later: message i waits (40 - i) * 3 ms.
    let backend = Backend::start(|v| {
        let data = v["data"].as_str().unwrap_or_default();
        if data.contains("forbidden") {
            return deny("no swearing");
        }
        let i: u64 = data.trim_start_matches('m').parse().unwrap_or(0);
        Reply {
            delay: Duration::from_millis(40u64.saturating_sub(i) * 3),
            ..allow()
        }
    });
    let url = backend.url();
    let server = Server::start(&[
        "--threads",
        "2",
        "--hook-threads",
        "8",
        "--publish-hook",
        &url,
    ]);
    let mut sub = V1::connect(server.addr);
    sub.subscribe(1, json!(["ordered"]));
    let mut publisher = V1::connect(server.addr);
    for i in 0..40 {
        publisher.publish(100 + i, "ordered", &format!("m{i}"));
    }
    let mut got = Vec::new();
    let mut seqs = Vec::new();
    while got.len() < 40 {
        let m = sub.expect("message");
        got.push(m["data"].as_str().unwrap().to_owned());
        seqs.push(m["seq"].as_u64().unwrap());
    }
    let expected: Vec<String> = (0..40).map(|i| format!("m{i}")).collect();
    assert_eq!(
        got, expected,
        "one publisher's order, whatever the answers' order"
    );
    assert!(seqs.windows(2).all(|w| w[1] == w[0] + 1), "{seqs:?}");
    // The publisher's acks come in its order too.
    let acks: Vec<u64> = (0..40)
        .map(|_| publisher.expect("published")["id"].as_u64().unwrap())
        .collect();
    assert_eq!(acks, (100..140).collect::<Vec<u64>>());

    // Denied messages: a herald.v1 error, an HTTP 403, a raw publisher closed with 1008.
    publisher.publish(7, "ordered", "forbidden word");
    let e = publisher.expect("error");
    assert_eq!(e["code"], "forbidden");
    let (status, body) = post(server.addr, "ordered", "text/plain", "", b"forbidden too");
    assert_eq!(status, 403, "{body}");
    let mut raw = connect(server.addr, "ordered");
    send_text(&mut raw, "forbidden here");
    let closed = loop {
        match raw.read() {
            Ok(tungstenite::Message::Close(frame)) => break frame,
            Ok(_) => continue,
            Err(e) => panic!("expected a close frame: {e}"),
        }
    };
    assert_eq!(closed.map(|f| u16::from(f.code)), Some(1008));
    // The backend saw the payloads.
    assert!(backend
        .seen()
        .iter()
        .any(|v| v["data"] == "m39" && v["topic"] == "ordered"));
    assert_eq!(hook_metric(&server, "publish", "deny"), 3);
}

#[test]
fn a_failing_backend_gets_clear_refusals_is_counted_and_recovers() {
    let backend = Backend::start(|_| allow());
    let url = backend.url();
    let server = Server::start(&[
        "--threads",
        "2",
        "--connect-hook",
        &url,
        "--hook-timeout",
        "300ms",
    ]);
    // A bystander connected while the backend was fine keeps receiving throughout.
    let mut bystander = connect(server.addr, "bystander");
    sync(&mut bystander, "start");
    let mut n = 0;
    let mut check_bystander = |what: &str| {
        n += 1;
        let body = format!("still {n}");
        assert_eq!(
            post(server.addr, "bystander", "text/plain", "", body.as_bytes()).0,
            202
        );
        assert_eq!(recv_text(&mut bystander), body, "after {what}");
    };

    let failures: Vec<(&str, Reply)> = vec![
        (
            "5xx",
            Reply {
                status: 500,
                body: "oops".into(),
                delay: Duration::ZERO,
            },
        ),
        (
            "garbage",
            Reply {
                status: 200,
                body: "<html>".into(),
                delay: Duration::ZERO,
            },
        ),
        (
            "slow",
            Reply {
                delay: Duration::from_millis(1500),
                ..allow()
            },
        ),
    ];
    let mut errors = 0;
    for (what, reply) in failures {
        backend.set(move |_| reply.clone());
        let (status, body) = upgrade(&server, "/t");
        assert_eq!(status, 503, "{what}: {body}");
        assert!(body.contains("backend"), "{what}: {body}");
        errors += 1;
        assert_eq!(hook_metric(&server, "connect", "error"), errors, "{what}");
        check_bystander(what);
    }
    // Recovery: the backend answers again.
    backend.set(|_| allow());
    assert_eq!(upgrade(&server, "/t").0, 101);
    check_bystander("recovery");

    // Down: nothing listens at the hook URL.
    let closed = TcpListener::bind("127.0.0.1:0").unwrap();
    let down = format!("http://{}/hook", closed.local_addr().unwrap());
    drop(closed);
    let lonely = Server::start(&["--connect-hook", &down, "--hook-timeout", "300ms"]);
    let (status, body) = upgrade(&lonely, "/t");
    assert_eq!(status, 503, "{body}");
    assert_eq!(hook_metric(&lonely, "connect", "error"), 1);
}

#[test]
fn in_flight_is_bounded_keep_alive_is_used_and_allows_are_cached() {
    let backend = Backend::start(|_| Reply {
        delay: Duration::from_millis(300),
        ..allow()
    });
    let url = backend.url();
    let server = Server::start(&[
        "--connect-hook",
        &url,
        "--hook-threads",
        "1",
        "--hook-max-inflight",
        "1",
    ]);
    // Eight at once: one is asked, one waits, the rest are refused at once.
    let handles: Vec<_> = (0..8)
        .map(|i| {
            let addr = server.addr;
            thread::spawn(move || {
                let request = upgrade_request(&format!("/t?token=c{i}"), KEY, &[]);
                http_request(addr, request.as_bytes()).0.status
            })
        })
        .collect();
    let statuses: Vec<u16> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    let refused = statuses.iter().filter(|&&s| s == 503).count();
    assert!(refused >= 5, "{statuses:?}");
    assert!(statuses.contains(&101), "{statuses:?}");
    assert_eq!(
        hook_metric(&server, "connect", "overloaded") as usize,
        refused
    );

    // Keep-alive: ten connects one after another, one backend connection.
    let before = backend.connections.load(SeqCst);
    backend.set(|_| allow());
    for i in 0..10 {
        assert_eq!(upgrade(&server, &format!("/k?token=k{i}")).0, 101);
    }
    assert!(backend.connections.load(SeqCst) - before <= 1);

    // The allow cache: the same question within --hook-cache is not asked again.
    let cached = Server::start(&["--connect-hook", &url, "--hook-cache", "30s"]);
    let asked = backend.seen().len();
    for _ in 0..5 {
        assert_eq!(upgrade(&cached, "/c?token=same").0, 101);
    }
    assert_eq!(backend.seen().len(), asked + 1);
    assert_eq!(hook_metric(&cached, "connect", "cached"), 4);
}

#[test]
fn hook_flags_are_validated() {
    for (args, message) in [
        (
            vec!["--connect-hook", "ftp://x"],
            "--connect-hook must be an http:// URL",
        ),
        (
            vec!["--hook-threads", "0"],
            "--hook-threads must be between 1 and 1024",
        ),
        (
            vec!["--hook-max-inflight", "0"],
            "--hook-max-inflight must be at least 1",
        ),
    ] {
        let out = std::process::Command::new(herald_bin())
            .args(&args)
            .output()
            .expect("run herald");
        assert!(!out.status.success());
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(message), "{args:?}: {stderr}");
    }
}
