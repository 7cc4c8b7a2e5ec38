//! Real-browser end-to-end tests: headless Chromium (Debian's `chromium` at
//! `/usr/bin/chromium`, installed by `.ci/run`) driven over CDP with `headless_chrome`,
//! against the real `herald` binary.
//!
//! The pages use the standard WebSocket API through a small harness (see
//! `testkit::browser`) that records every event into `window.__events`; the tests poll it
//! until the expected events are there, with generous timeouts (never sleeps as assertions).
//! One browser runs at a time; each test starts its own server and browser.
//!
//! Without Chromium these tests fail, saying how to install it (they never skip).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener};

use serde_json::Value;
use testkit::browser::{hex, js_string, pattern, save_artifact, Chrome, Page, JS_PATTERN, WAIT};
use testkit::{connect_wss, recv_data, recv_data_after_sync, sync, Server, TestCert};
use tungstenite::{Message, WebSocket};

/// Text with 2-, 3- and 4-byte UTF-8 sequences.
const TEXT_FROM_PAGE: &str = "héllo from page A ✓ 🦀";

/// Checks one recorded browser message: text with `data == text`.
fn assert_text(msg: &Value, text: &str, ctx: &str) {
    assert_eq!(
        (msg["kind"].as_str(), msg["data"].as_str()),
        (Some("text"), Some(text)),
        "{ctx}: expected the text {text:?}, got {}",
        short(msg)
    );
}

/// Checks one recorded browser message: binary of the given kind (`arraybuffer`/`blob`)
/// with exactly `bytes`.
fn assert_binary(msg: &Value, kind: &str, bytes: &[u8], ctx: &str) {
    assert_eq!(
        msg["kind"].as_str(),
        Some(kind),
        "{ctx}: expected a binary message as {kind}, got {}",
        short(msg)
    );
    let got = msg["hex"]
        .as_str()
        .unwrap_or_else(|| panic!("{ctx}: binary message without `hex`: {}", short(msg)));
    assert!(
        got == hex(bytes),
        "{ctx}: binary message ({kind}) differs: got {} bytes, expected {} bytes ({}…)",
        got.len() / 2,
        bytes.len(),
        &got[..got.len().min(64)]
    );
}

/// A recorded event for an assertion message, with long hex cut short.
fn short(msg: &Value) -> String {
    let s = msg.to_string();
    if s.len() > 300 {
        format!("{}…", &s[..300])
    } else {
        s
    }
}

fn assert_binary_msg(msg: Message, bytes: &[u8], ctx: &str) {
    match msg {
        Message::Binary(b) => assert!(
            b.as_ref() == bytes,
            "{ctx}: binary differs: got {} bytes, expected {}",
            b.len(),
            bytes.len()
        ),
        other => panic!(
            "{ctx}: expected a binary message, got {:.200}",
            format!("{other:?}")
        ),
    }
}

/// No `error` or `close` event on socket `name` so far.
fn assert_still_open(page: &Page, name: &str) {
    let events = page.events(name);
    let bad: Vec<_> = events
        .iter()
        .filter(|e| {
            matches!(
                e["type"].as_str(),
                Some("error" | "close" | "harness-error")
            )
        })
        .collect();
    assert!(bad.is_empty(), "socket {name}: unexpected events {bad:?}");
}

/// Case 1, over `ws://` or `wss://`: pages A and B (loaded from `origin`) and the Rust client
/// `rust` on one topic (`ws_url`). A sends a string, an ArrayBuffer and a Blob; B and the Rust
/// client get them intact with the right type; the Rust client's binary message reaches both
/// pages as binary. Page A keeps the browser's default `binaryType` (`blob`), page B uses
/// `arraybuffer` (like the demo page), so both ways of receiving binary are covered. Every
/// client also gets its own messages back (the sender is included).
fn fan_out<S: Read + Write>(chrome: &Chrome, origin: &str, ws_url: &str, rust: &mut WebSocket<S>) {
    sync(rust, "rust");

    let a = chrome.page(origin);
    a.install_harness();
    a.eval(JS_PATTERN);
    a.open_ws("a", ws_url, None);
    a.wait_open("a");
    a.sync("a");

    let b = chrome.page(origin);
    b.install_harness();
    b.open_ws("b", ws_url, Some("arraybuffer"));
    b.wait_open("b");
    b.sync("b");

    // A string, an ArrayBuffer (> 125 bytes: 16-bit length) and a Blob made of two parts
    // (> 64 KiB: 64-bit length), sent back to back.
    let array_buffer = pattern(300, 1);
    let mut blob = pattern(40_000, 2);
    blob.extend(pattern(30_000, 3));
    a.eval(&format!(
        "(() => {{ const ws = __herald.sockets.a; ws.send({}); ws.send(__pattern(300, 1).buffer); \
         ws.send(new Blob([__pattern(40000, 2), __pattern(30000, 3)], \
         {{ type: 'application/octet-stream' }})); return ws.bufferedAmount; }})()",
        js_string(TEXT_FROM_PAGE)
    ));

    match recv_data_after_sync(rust) {
        Message::Text(t) => assert_eq!(t.as_str(), TEXT_FROM_PAGE, "Rust client: the string"),
        other => panic!("Rust client: expected the string as a text message, got {other:?}"),
    }
    assert_binary_msg(
        recv_data_after_sync(rust),
        &array_buffer,
        "Rust client: the ArrayBuffer",
    );
    assert_binary_msg(recv_data_after_sync(rust), &blob, "Rust client: the Blob");

    // Binary from the Rust client, not valid UTF-8, so it cannot pass as text.
    let mut from_rust = vec![0xff, 0xfe, 0x00, 0xc3, 0x28];
    from_rust.extend(pattern(200, 4));
    rust.send(Message::binary(from_rust.clone()))
        .expect("Rust client: send binary");
    assert_binary_msg(
        recv_data_after_sync(rust),
        &from_rust,
        "Rust client: its own message back",
    );

    for (page, name, kind) in [(&b, "b", "arraybuffer"), (&a, "a", "blob")] {
        let msgs = page.wait_messages(name, 4);
        let ctx = format!("page {}", name.to_uppercase());
        assert_eq!(
            msgs.len(),
            4,
            "{ctx}: {:?}",
            msgs.iter().map(short).collect::<Vec<_>>()
        );
        assert_text(&msgs[0], TEXT_FROM_PAGE, &format!("{ctx}: the string"));
        assert_binary(
            &msgs[1],
            kind,
            &array_buffer,
            &format!("{ctx}: the ArrayBuffer"),
        );
        assert_binary(&msgs[2], kind, &blob, &format!("{ctx}: the Blob"));
        assert_binary(
            &msgs[3],
            kind,
            &from_rust,
            &format!("{ctx}: the Rust client's binary"),
        );
        assert_still_open(page, name);
    }
}

/// Two browser pages and a Rust client on one topic over `ws://`.
#[test]
fn pages_and_rust_client_exchange_text_arraybuffer_and_blob() {
    let server = Server::start(&["--threads", "2"]);
    let chrome = Chrome::launch(false);
    let mut rust = testkit::connect(server.addr, "room");
    fan_out(
        &chrome,
        &format!("http://{}/", server.addr),
        &server.url("room"),
        &mut rust,
    );
}

/// The same over `wss://`, with a self-signed certificate (Chromium started with
/// `--ignore-certificate-errors`; the Rust client trusts the certificate).
#[test]
fn pages_and_rust_client_exchange_over_wss() {
    let cert = TestCert::generate();
    let mut server = Server::start(&[
        "--threads",
        "2",
        "--listen-tls",
        "127.0.0.1:0",
        "--tls-cert",
        cert.cert_pem.to_str().unwrap(),
        "--tls-key",
        cert.key_pem.to_str().unwrap(),
    ]);
    let line = server
        .wait_prefix("listening on wss://", WAIT)
        .expect("herald prints `listening on wss://ADDR:PORT` with --listen-tls");
    let tls_addr: SocketAddr = line["listening on wss://".len()..]
        .parse()
        .unwrap_or_else(|e| panic!("bad address in {line:?}: {e}"));
    assert_ne!(tls_addr.port(), 0, "{line:?}");

    let chrome = Chrome::launch(true);
    let mut rust = connect_wss(tls_addr, "room", &cert);
    fan_out(
        &chrome,
        &format!("https://{tls_addr}/"),
        &format!("wss://{tls_addr}/room"),
        &mut rust,
    );
}

/// On SIGTERM the server closes every browser socket with 1001 and exits 0.
#[test]
fn onclose_gets_1001_when_the_server_shuts_down() {
    let mut server = Server::start(&["--threads", "2"]);
    let chrome = Chrome::launch(false);
    let page = chrome.page(&format!("http://{}/", server.addr));
    page.install_harness();
    // Two topics, so two owners (likely on different workers).
    for (name, topic) in [("s1", "shutdown-1"), ("s2", "shutdown-2")] {
        page.open_ws(name, &server.url(topic), None);
    }
    for name in ["s1", "s2"] {
        page.wait_open(name);
        page.sync(name);
    }

    server.signal(nix::sys::signal::Signal::SIGTERM);

    for name in ["s1", "s2"] {
        let events = page.wait_closed(name);
        let close = events.iter().find(|e| e["type"] == "close").unwrap();
        assert_eq!(
            close["code"].as_u64(),
            Some(1001),
            "socket {name}: close code; events {events:?}"
        );
        assert_eq!(
            close["wasClean"],
            Value::Bool(true),
            "socket {name}: a clean close (close handshake completed); events {events:?}"
        );
        assert!(
            !events.iter().any(|e| e["type"] == "error"),
            "socket {name}: no error event on a server shutdown; events {events:?}"
        );
    }
    let status = server
        .wait_exit(WAIT)
        .expect("herald still running after SIGTERM");
    assert!(
        status.success(),
        "herald exit status after SIGTERM: {status:?}"
    );
}

/// `onerror` then `onclose` (1006) for a port nobody serves and for a topic the server
/// refuses (HTTP 400 before the upgrade); never `onopen`.
#[test]
fn onerror_then_onclose_1006_for_unserved_url_and_refused_topic() {
    let server = Server::start(&["--threads", "2"]);

    // A port nobody serves: bound, then released.
    let unserved = {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        listener.local_addr().unwrap()
    };
    // The topic is refused before the upgrade (so the browser sees an HTTP error).
    let (response, _stream) = testkit::http_request(
        server.addr,
        testkit::upgrade_request("/bad%20topic", "dGhlIHNhbXBsZSBub25jZQ==", &[]).as_bytes(),
    );
    assert_eq!(response.status, 400, "{}", response.head_text);

    let chrome = Chrome::launch(false);
    let page = chrome.page(&format!("http://{}/", server.addr));
    page.install_harness();
    page.open_ws("unserved", &format!("ws://{unserved}/topic"), None);
    page.open_ws("refused", &server.url("bad%20topic"), None);

    for name in ["unserved", "refused"] {
        let events = page.wait_closed(name);
        let types: Vec<_> = events.iter().filter_map(|e| e["type"].as_str()).collect();
        assert_eq!(
            types,
            ["error", "close"],
            "socket {name}: events {events:?}"
        );
        assert_eq!(
            events[1]["code"].as_u64(),
            Some(1006),
            "socket {name}: close code; events {events:?}"
        );
        assert_eq!(
            events[1]["wasClean"],
            Value::Bool(false),
            "socket {name}: events {events:?}"
        );
    }
}

/// The demo page at `/` loads, connects, sends from its controls and shows the messages of a
/// Rust client on its topic; a screenshot is kept in `target/browser-artifacts/demo.png`.
#[test]
fn demo_page_connects_and_shows_messages() {
    let server = Server::start(&["--threads", "2"]);
    let chrome = Chrome::launch(false);
    let page = chrome.page(&format!("http://{}/", server.addr));
    page.wait_for(
        "['topic', 'connect', 'state', 'text', 'send-text', 'file', 'send-file', 'hex', 'send-hex', 'log']\
         .every((id) => document.getElementById(id))",
        "the demo page's controls",
        "document.documentElement.outerHTML.slice(0, 2000)",
    );
    let topic = page.eval("document.getElementById('topic').value.trim()");
    assert_eq!(topic, "demo", "default topic");

    let click = |selector: &str| {
        page.tab
            .wait_for_element(selector)
            .and_then(|el| el.click().map(|_| ()))
            .unwrap_or_else(|e| panic!("click {selector}: {e:#}"));
    };
    let set_value = |id: &str, value: &str| {
        page.eval(&format!(
            "(() => {{ const el = document.getElementById({}); el.value = {}; \
             el.dispatchEvent(new Event('input', {{ bubbles: true }})); return true; }})()",
            js_string(id),
            js_string(value)
        ));
    };
    let log = "Array.from(document.querySelectorAll('#log .msg'), (m) => ({ kind: m.dataset.kind, text: m.textContent }))";
    let state = "document.getElementById('state').textContent";

    click("#connect");
    page.wait_for(
        &format!("{state} === 'open'"),
        "#state to read `open`",
        state,
    );

    // Sent with the page's own controls; its echo in the log also shows that the page's
    // subscription is in effect, so the Rust client's messages below reach it.
    let page_text = "hello from the demo page";
    set_value("text", page_text);
    click("#send-text");
    page.wait_for(
        &format!(
            "{log}.some((m) => m.kind === 'text' && m.text.includes({}))",
            js_string(page_text)
        ),
        "the page's own text in #log",
        log,
    );

    let mut rust = testkit::connect(server.addr, "demo");
    testkit::sync(&mut rust, "rust");
    let rust_text = "hellö from Rust · ünïcödé";
    let rust_bytes = [0xde, 0xad, 0xbe, 0xef, 0x00, 0x01, 0x02, 0xff];
    testkit::send_text(&mut rust, rust_text);
    testkit::send(&mut rust, Message::binary(rust_bytes.to_vec()));
    page.wait_for(
        &format!(
            "{log}.some((m) => m.kind === 'text' && m.text.includes({}))",
            js_string(rust_text)
        ),
        "the Rust client's text in #log",
        log,
    );
    // The hex preview's format is the page's business: compare its hex digits only.
    page.wait_for(
        &format!(
            "{log}.some((m) => m.kind === 'binary' && \
             m.text.toLowerCase().replace(/0x/g, '').replace(/[^0-9a-f]/g, '').includes({}))",
            js_string(&hex(&rust_bytes))
        ),
        "the Rust client's binary message (hex preview) in #log",
        log,
    );

    // Bytes from the page's hex control reach the Rust client as binary.
    set_value("hex", "c0 ff ee 00");
    click("#send-hex");
    loop {
        match recv_data(&mut rust) {
            Message::Binary(b) if b.as_ref() == [0xc0, 0xff, 0xee, 0x00] => break,
            // Its own messages back, the sync text.
            Message::Text(t) if t.as_str() == rust_text || t.as_str() == "sync:rust" => {}
            Message::Binary(b) if b.as_ref() == rust_bytes => {}
            other => panic!("Rust client: expected the page's hex bytes, got {other:?}"),
        }
    }
    assert_eq!(page.eval(state), "open", "still connected");

    let png = page.screenshot_png();
    assert!(png.starts_with(b"\x89PNG"), "screenshot is not a PNG");
    let path = save_artifact("demo.png", &png);
    eprintln!("screenshot: {}", path.display());
}
