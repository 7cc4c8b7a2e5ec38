//! `wss://`: the same behaviour over TLS as over plain TCP, and the TLS-specific failure
//! modes (stalled handshake, garbage, bad certificate files) contained to one connection.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls::pki_types::ServerName;
use rustls::{ClientConfig, ClientConnection, HandshakeKind, StreamOwned};
use testkit::{connect_wss, herald_bin, recv_data, Server, TestCert};
use tungstenite::Message;

/// A server with a plain and a TLS listener; returns it and the TLS address.
fn start_tls(cert: &TestCert, extra: &[&str]) -> (Server, SocketAddr) {
    let (c, k) = (cert.cert_arg(), cert.key_arg());
    let mut args = vec![
        "--listen-tls",
        "127.0.0.1:0",
        "--tls-cert",
        &c,
        "--tls-key",
        &k,
    ];
    args.extend_from_slice(extra);
    let mut server = Server::start(&args);
    let line = server
        .wait_prefix("listening on wss://", Duration::from_secs(10))
        .expect("a `listening on wss://` line");
    let addr = line
        .trim_start_matches("listening on wss://")
        .parse()
        .expect("wss address");
    (server, addr)
}

fn tls_stream(cert: &TestCert, addr: SocketAddr) -> StreamOwned<ClientConnection, TcpStream> {
    let name = ServerName::try_from("localhost").expect("server name");
    let conn = ClientConnection::new(cert.client_config(), name).expect("client connection");
    let tcp = TcpStream::connect(addr).expect("connect");
    tcp.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    StreamOwned::new(conn, tcp)
}

#[test]
fn tls_clients_get_the_same_fanout_as_plain_ones() {
    let cert = TestCert::generate();
    let (server, tls_addr) = start_tls(&cert, &["--threads", "1"]);
    let mut plain = testkit::connect(server.addr, "mixed");
    testkit::sync(&mut plain, "plain-ready");
    // One worker: this subscription is in place before anything below is published.
    let mut secure = connect_wss(tls_addr, "mixed", &cert);

    let big: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
    secure.send(Message::text("over tls")).expect("send text");
    secure
        .send(Message::binary(big.clone()))
        .expect("send binary");
    for ws_msg in [recv_data(&mut secure), recv_data(&mut plain)] {
        assert_eq!(ws_msg, Message::text("over tls"));
    }
    assert_eq!(
        recv_data(&mut secure),
        Message::binary(big.clone()),
        "large binary echo over TLS"
    );
    assert_eq!(recv_data(&mut plain), Message::binary(big), "TLS → plain");

    testkit::send(&mut plain, Message::binary(vec![1, 2, 3]));
    assert_eq!(
        recv_data(&mut secure),
        Message::binary(vec![1, 2, 3]),
        "plain → TLS"
    );

    secure.close(None).expect("close");
    loop {
        match secure.read() {
            Ok(_) => continue,
            Err(tungstenite::Error::ConnectionClosed) => break,
            Err(e) => panic!("clean close expected, got {e}"),
        }
    }
}

#[test]
fn plain_http_is_served_over_tls_too() {
    let cert = TestCert::generate();
    let (_server, tls_addr) = start_tls(&cert, &[]);
    for (path, want) in [("/health", "200 OK"), ("/", "200 OK"), ("/chat", "426")] {
        let mut stream = tls_stream(&cert, tls_addr);
        write!(stream, "GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n").expect("request");
        let mut response = Vec::new();
        // The server closes after the response (with close_notify).
        let _ = stream.read_to_end(&mut response);
        let text = String::from_utf8_lossy(&response);
        assert!(
            text.starts_with(&format!("HTTP/1.1 {want}")),
            "{path}: {text:.200}"
        );
    }
}

#[test]
fn a_client_stalled_mid_tls_handshake_is_dropped_at_the_timeout() {
    let cert = TestCert::generate();
    let (_server, tls_addr) = start_tls(&cert, &["--handshake-timeout", "1s"]);
    let mut stalled = TcpStream::connect(tls_addr).expect("connect");
    // The first bytes of a TLS record header, then nothing.
    stalled
        .write_all(&[0x16, 0x03, 0x01])
        .expect("partial hello");
    stalled
        .set_read_timeout(Some(Duration::from_secs(8)))
        .expect("timeout");
    let started = Instant::now();
    let mut buf = [0u8; 64];
    let outcome = stalled.read(&mut buf);
    assert!(
        matches!(outcome, Ok(0))
            || outcome
                .as_ref()
                .is_err_and(|e| e.kind() == std::io::ErrorKind::ConnectionReset),
        "expected the server to hang up, got {outcome:?}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(7),
        "dropped only after {:?}",
        started.elapsed()
    );
    // The listener still works.
    let mut ws = connect_wss(tls_addr, "after-stall", &cert);
    ws.send(Message::text("alive")).expect("send");
    assert_eq!(recv_data(&mut ws), Message::text("alive"));
}

#[test]
fn garbage_on_the_tls_port_closes_only_that_connection() {
    let cert = TestCert::generate();
    let (mut server, tls_addr) = start_tls(&cert, &["--stats-interval", "500ms"]);
    let mut good = connect_wss(tls_addr, "garbage", &cert);
    let mut bad = TcpStream::connect(tls_addr).expect("connect");
    bad.set_read_timeout(Some(Duration::from_secs(8)))
        .expect("timeout");
    bad.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n this is not TLS at all")
        .expect("garbage");
    let mut rest = Vec::new();
    let outcome = bad.read_to_end(&mut rest);
    assert!(
        outcome.is_ok() || outcome.is_err_and(|e| e.kind() == std::io::ErrorKind::ConnectionReset)
    );
    // Nothing but (at most) a TLS alert record comes back: no HTTP answer of any kind.
    assert!(
        rest.is_empty() || rest[0] == 0x15,
        "plain HTTP must not be answered on the TLS port; got {:?}",
        String::from_utf8_lossy(&rest[..rest.len().min(64)])
    );
    good.send(Message::text("still here")).expect("send");
    assert_eq!(recv_data(&mut good), Message::text("still here"));
    // The failed handshake is counted as rejected.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let line = server
            .wait_prefix("stats:", Duration::from_secs(5))
            .expect("a stats line");
        if testkit::stat_field(&line, "rejected") == Some(1) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no stats line with rejected=1; last: {line}"
        );
    }
}

#[test]
fn bad_certificate_or_key_files_are_clear_startup_errors() {
    let cert = TestCert::generate();
    let cases = [
        (
            cert.cert_pem
                .with_file_name("missing.pem")
                .display()
                .to_string(),
            cert.key_arg(),
            "cannot read TLS certificate",
        ),
        (cert.cert_arg(), cert.cert_arg(), "cannot read TLS key"),
        (
            cert.key_arg(),
            cert.key_arg(),
            "cannot read TLS certificate",
        ),
    ];
    for (c, k, want) in cases {
        let output = Command::new(herald_bin())
            .args([
                "--listen",
                "127.0.0.1:0",
                "--listen-tls",
                "127.0.0.1:0",
                "--tls-cert",
                &c,
                "--tls-key",
                &k,
            ])
            .output()
            .expect("run herald");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{c} / {k}: {stderr}");
        assert!(stderr.contains(want), "{c} / {k}: {stderr}");
        assert!(!stderr.contains("panicked"), "{stderr}");
    }
}

/// `/metrics` and `/ready` are served on the `wss://` listener like everything else, and a
/// failed TLS handshake is counted under `herald_rejected_total{reason="tls"}`.
#[test]
fn metrics_and_ready_over_tls_count_failed_tls_handshakes() {
    let cert = TestCert::generate();
    let (_server, tls_addr) = start_tls(&cert, &["--threads", "1"]);
    let get = |path: &str| {
        let mut stream = tls_stream(&cert, tls_addr);
        write!(stream, "GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n").expect("request");
        let mut response = Vec::new();
        let _ = stream.read_to_end(&mut response);
        String::from_utf8_lossy(&response).to_string()
    };
    let ready = get("/ready");
    assert!(ready.starts_with("HTTP/1.1 200 OK"), "{ready:.200}");
    assert!(ready.ends_with("\r\n\r\nready"), "{ready:.200}");

    for _ in 0..2 {
        let mut bad = TcpStream::connect(tls_addr).expect("connect");
        bad.set_read_timeout(Some(Duration::from_secs(8)))
            .expect("timeout");
        bad.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
            .expect("plain HTTP on the TLS port");
        // The server answers with a TLS alert (or nothing) and closes.
        let _ = bad.read_to_end(&mut Vec::new());
    }

    let metrics = get("/metrics");
    assert!(metrics.starts_with("HTTP/1.1 200 OK\r\n"), "{metrics:.300}");
    assert!(
        metrics.contains("\r\nContent-Type: text/plain; version=0.0.4\r\n"),
        "{metrics:.300}"
    );
    assert!(
        metrics.contains("\nherald_rejected_total{reason=\"tls\"} 2\n"),
        "{metrics}"
    );
    assert!(
        metrics.contains("\nherald_connections{worker=\"0\"} 1\n"),
        "only the scrape is open: {metrics}"
    );
}

/// A `wss://` client like [`connect_wss`], but with the given client configuration (its
/// session cache is what makes a second connection resume) and socket wrapper.
fn wss_over<S: Read + Write>(
    config: Arc<ClientConfig>,
    socket: S,
    port: u16,
    topic: &str,
) -> tungstenite::WebSocket<StreamOwned<ClientConnection, S>> {
    let name = ServerName::try_from("localhost").expect("server name");
    let conn = ClientConnection::new(config, name).expect("client connection");
    let mut stream = StreamOwned::new(conn, socket);
    while stream.conn.is_handshaking() {
        stream
            .conn
            .complete_io(&mut stream.sock)
            .expect("TLS handshake");
    }
    let url = format!("wss://localhost:{port}/{topic}");
    let (ws, response) = tungstenite::client(url.as_str(), stream).expect("upgrade over TLS");
    assert_eq!(response.status().as_u16(), 101);
    ws
}

fn tcp(addr: SocketAddr) -> TcpStream {
    let tcp = TcpStream::connect(addr).expect("connect");
    tcp.set_nodelay(true).expect("nodelay");
    tcp.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    tcp
}

/// The server keeps no TLS buffers for an idle connection: records are decrypted and
/// encrypted in the worker's scratch. Many connections that sat idle (every buffer given
/// back) must still get every message, small and spanning several records.
#[test]
fn many_idle_tls_connections_receive_a_message_after_being_idle() {
    let cert = TestCert::generate();
    let (server, tls_addr) = start_tls(&cert, &["--threads", "1"]);
    let mut idle: Vec<_> = (0..100)
        .map(|_| connect_wss(tls_addr, "idle-tls", &cert))
        .collect();
    std::thread::sleep(Duration::from_secs(2));
    let mut publisher = testkit::connect(server.addr, "idle-tls");
    let big: Vec<u8> = (0..100_000u32).map(|i| (i % 241) as u8).collect();
    testkit::send(&mut publisher, Message::text("after the silence"));
    testkit::send(&mut publisher, Message::binary(big.clone()));
    for (i, ws) in idle.iter_mut().enumerate() {
        assert_eq!(
            recv_data(ws),
            Message::text("after the silence"),
            "connection {i}"
        );
        assert_eq!(
            recv_data(ws),
            Message::binary(big.clone()),
            "connection {i}"
        );
    }
    // And they still talk back.
    idle[7].send(Message::text("from 7")).expect("send");
    assert_eq!(
        recv_data(&mut publisher),
        Message::text("after the silence")
    );
    assert_eq!(recv_data(&mut publisher), Message::binary(big));
    assert_eq!(recv_data(&mut publisher), Message::text("from 7"));
}

/// TLS 1.3 resumption: a client that kept the ticket from its first connection resumes on
/// the second (no certificate, no signature), and the connection works.
#[test]
fn a_returning_client_resumes_its_tls_session_with_a_ticket() {
    let cert = TestCert::generate();
    let (_server, tls_addr) = start_tls(&cert, &["--threads", "1"]);
    // One configuration, one session cache: like one browser coming back.
    let config = cert.client_config();
    let mut first = wss_over(config.clone(), tcp(tls_addr), tls_addr.port(), "resume");
    assert_eq!(
        first.get_ref().conn.handshake_kind(),
        Some(HandshakeKind::Full)
    );
    // Reading the echo also reads the ticket, which the server sends after the handshake.
    first.send(Message::text("first")).expect("send");
    assert_eq!(recv_data(&mut first), Message::text("first"));
    first.close(None).expect("close");
    while first.read().is_ok() {}

    let mut second = wss_over(config, tcp(tls_addr), tls_addr.port(), "resume");
    assert_eq!(
        second.get_ref().conn.handshake_kind(),
        Some(HandshakeKind::Resumed),
        "the second connection must resume with the ticket"
    );
    second.send(Message::text("second")).expect("send");
    assert_eq!(recv_data(&mut second), Message::text("second"));
}

/// A socket that sends one byte per write and pauses after it, so each byte of the client's
/// TLS records (handshake, upgrade request, frames) is its own TCP segment.
struct OneByteAtATime(TcpStream);

impl Read for OneByteAtATime {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.0.read(buf)
    }
}

impl Write for OneByteAtATime {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        let n = self.0.write(&buf[..1])?;
        std::thread::sleep(Duration::from_micros(200));
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.0.flush()
    }
}

/// Records arriving a byte at a time are held (only while incomplete) and put together:
/// the handshake, the upgrade and a message all get through.
#[test]
fn a_client_sending_its_tls_records_one_byte_at_a_time_is_served() {
    let cert = TestCert::generate();
    let (_server, tls_addr) = start_tls(&cert, &["--threads", "1"]);
    let socket = OneByteAtATime(tcp(tls_addr));
    let mut ws = wss_over(cert.client_config(), socket, tls_addr.port(), "bytes");
    ws.send(Message::text("one byte at a time")).expect("send");
    assert_eq!(recv_data(&mut ws), Message::text("one byte at a time"));
    ws.send(Message::binary(vec![9; 3_000])).expect("send");
    assert_eq!(recv_data(&mut ws), Message::binary(vec![9; 3_000]));
}
