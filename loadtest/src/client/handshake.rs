//! The client side of the HTTP/1.1 upgrade (RFC 6455 §4), plus a blocking preflight probe
//! (which does the TLS handshake first for `wss://`).
//!
//! The request is a fixed GET written by hand; the response is parsed with `httparse` and the
//! `Sec-WebSocket-Accept` value checked with tungstenite's `derive_accept_key`.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls::ClientConfig;

use tungstenite::handshake::client::generate_key;
use tungstenite::handshake::derive_accept_key;

use crate::target::Target;

/// Largest upgrade response accepted.
pub const MAX_RESPONSE: usize = 16 * 1024;

/// Why an upgrade failed.
#[derive(Debug, PartialEq, Eq)]
pub enum UpgradeError {
    /// The server answered with a status other than 101.
    Status(u16, String),
    /// 101 but without the right `Sec-WebSocket-Accept`.
    BadAccept,
    /// 101 but without `Upgrade: websocket`.
    NotWebSocket,
    /// Not parseable as an HTTP response, or too long.
    Malformed,
}

impl UpgradeError {
    /// Error-kind name used in reports, e.g. `http_404`.
    pub fn kind(&self) -> String {
        match self {
            UpgradeError::Status(code, _) => format!("http_{code}"),
            UpgradeError::BadAccept => "bad_accept_key".into(),
            UpgradeError::NotWebSocket => "not_websocket".into(),
            UpgradeError::Malformed => "bad_http_response".into(),
        }
    }

    /// Human-readable description.
    pub fn describe(&self) -> String {
        match self {
            UpgradeError::Status(code, reason) => {
                format!("the server refused the WebSocket upgrade: HTTP {code} {reason}")
            }
            UpgradeError::BadAccept => "the server sent a wrong Sec-WebSocket-Accept".into(),
            UpgradeError::NotWebSocket => "the 101 response lacks Upgrade: websocket".into(),
            UpgradeError::Malformed => "the server's reply is not an HTTP response".into(),
        }
    }
}

/// A new upgrade request for `path`, and the accept key the server must answer with.
pub fn request(target: &Target, path: &str, deflate: bool) -> (Vec<u8>, String) {
    let key = generate_key();
    let accept = derive_accept_key(key.as_bytes());
    // --deflate: the offer browsers send; the server must add server_no_context_takeover.
    let offer = if deflate {
        "Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n"
    } else {
        ""
    };
    let req = format!(
        "GET {path} HTTP/1.1\r\nHost: {}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n{offer}\r\n",
        target.host_header
    );
    (req.into_bytes(), accept)
}

/// Parses the upgrade response at the start of `buf`: `Ok(Some(n))` when complete and valid,
/// `n` being the header length (bytes after it are already WebSocket frames).
pub fn parse_response(buf: &[u8], accept: &str) -> Result<Option<usize>, UpgradeError> {
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut resp = httparse::Response::new(&mut headers);
    let n = match resp.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) if buf.len() < MAX_RESPONSE => return Ok(None),
        _ => return Err(UpgradeError::Malformed),
    };
    let code = resp.code.unwrap_or(0);
    if code != 101 {
        let reason = resp.reason.unwrap_or("").to_string();
        return Err(UpgradeError::Status(code, reason));
    }
    let header = |name: &str| {
        resp.headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case(name))
            .map(|h| String::from_utf8_lossy(h.value).trim().to_string())
    };
    if !header("upgrade").is_some_and(|v| v.eq_ignore_ascii_case("websocket")) {
        return Err(UpgradeError::NotWebSocket);
    }
    if header("sec-websocket-accept").as_deref() != Some(accept) {
        return Err(UpgradeError::BadAccept);
    }
    Ok(Some(n))
}

/// Connects once to `target` with blocking I/O and completes an upgrade (after the TLS
/// handshake for `wss://`, with `tls` as the client configuration), so that an unreachable
/// server, a rejected certificate or a refused upgrade is reported plainly before any load is
/// generated.
pub fn preflight(
    target: &Target,
    timeout: Duration,
    tls: Option<&Arc<ClientConfig>>,
) -> Result<(), String> {
    let url = &target.url;
    let s = TcpStream::connect_timeout(&target.addr, timeout).map_err(|e| {
        let hint = if e.kind() == std::io::ErrorKind::ConnectionRefused {
            " (is the server running and listening there?)"
        } else {
            ""
        };
        format!("cannot reach {url}: {e}{hint}")
    })?;
    let io_err = |e: std::io::Error| format!("{url}: upgrade failed: {e}");
    s.set_read_timeout(Some(timeout)).map_err(io_err)?;
    s.set_write_timeout(Some(timeout)).map_err(io_err)?;
    match tls {
        Some(config) if target.tls => {
            let mut stream = super::tls::blocking_handshake(config, &target.host, s)
                .map_err(|e| format!("{url}: {e}"))?;
            upgrade(target, &mut stream, timeout)
        }
        _ => {
            let mut s = s;
            upgrade(target, &mut s, timeout)
        }
    }
}

/// The blocking upgrade of [`preflight`] over an established stream.
fn upgrade<S: Read + Write>(target: &Target, s: &mut S, timeout: Duration) -> Result<(), String> {
    let url = &target.url;
    let io_err = |e: std::io::Error| format!("{url}: upgrade failed: {e}");
    let (req, accept) = request(target, &target.path, false);
    s.write_all(&req).map_err(io_err)?;
    let deadline = Instant::now() + timeout;
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    // Bounded: each read either grows the buffer toward MAX_RESPONSE or ends the loop.
    while Instant::now() < deadline {
        let n = match s.read(&mut chunk) {
            Ok(n) => n,
            // TLS without close_notify: the same as a plain close here.
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => 0,
            Err(e) => return Err(io_err(e)),
        };
        if n == 0 {
            return Err(format!(
                "{url}: the server closed the connection during the upgrade"
            ));
        }
        buf.extend_from_slice(&chunk[..n]);
        match parse_response(&buf, &accept) {
            Ok(Some(_)) => {
                // Close politely: a masked close frame with code 1000.
                let mut close = Vec::new();
                super::frame::push_frame(&mut close, super::frame::OP_CLOSE, &[3, 232], [9; 4]);
                let _ = s.write_all(&close).and_then(|_| s.flush());
                return Ok(());
            }
            Ok(None) => continue,
            Err(e) => return Err(format!("{url}: {}", e.describe())),
        }
    }
    Err(format!("{url}: no upgrade response within {timeout:?}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::target::parse;

    #[test]
    fn request_is_a_valid_upgrade() {
        let t = parse("ws://127.0.0.1:9000/bench").expect("url");
        let (req, accept) = request(&t, "/bench", false);
        let text = String::from_utf8(req).expect("ascii");
        assert!(text.starts_with("GET /bench HTTP/1.1\r\nHost: 127.0.0.1:9000\r\n"));
        assert!(text.ends_with("\r\n\r\n"));
        let key = text
            .lines()
            .find_map(|l| l.strip_prefix("Sec-WebSocket-Key: "))
            .expect("key");
        assert_eq!(derive_accept_key(key.as_bytes()), accept);
    }

    #[test]
    fn parses_responses() {
        let ok =
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
                   Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n\x82\x00";
        let accept = "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=";
        assert_eq!(parse_response(ok, accept), Ok(Some(ok.len() - 2)));
        assert_eq!(parse_response(&ok[..20], accept), Ok(None));
        assert_eq!(parse_response(ok, "other"), Err(UpgradeError::BadAccept));
        let refused = b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n";
        let e = parse_response(refused, accept).unwrap_err();
        assert_eq!(e.kind(), "http_404");
        assert!(e.describe().contains("404 Not Found"));
        assert_eq!(
            parse_response(b"garbage\r\n\r\n", accept),
            Err(UpgradeError::Malformed)
        );
        let no_upgrade = b"HTTP/1.1 101 OK\r\n\r\n";
        assert_eq!(
            parse_response(no_upgrade, accept),
            Err(UpgradeError::NotWebSocket)
        );
    }
}
