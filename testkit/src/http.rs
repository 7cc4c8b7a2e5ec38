//! Raw HTTP for tests: requests written by hand on a fresh connection and their responses
//! parsed ([`http_request`]), upgrade requests ([`upgrade_request`]), the server's closing of
//! the connection after an error ([`assert_closed_by_server`]), and publishing over HTTP
//! ([`post_request`] builds a `POST`, [`post`] sends one and returns status and body).

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::time::Duration;

use crate::raw::read_until_closed;
use crate::IO_TIMEOUT;

/// A well-formed upgrade request for `path` with extra header lines.
pub fn upgrade_request(path: &str, key: &str, extra_headers: &[&str]) -> String {
    let mut r = format!(
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
    );
    for h in extra_headers {
        r.push_str(h);
        r.push_str("\r\n");
    }
    r.push_str("\r\n");
    r
}

/// A parsed HTTP response head (+ body).
#[derive(Debug)]
pub struct HttpResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    pub head_text: String,
}

impl HttpResponse {
    /// First header with this (case-insensitive) name.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

pub(crate) fn parse_head(head: &[u8]) -> HttpResponse {
    let text = String::from_utf8_lossy(head).to_string();
    let mut lines = text.split("\r\n");
    let status_line = lines.next().unwrap_or("");
    let mut parts = status_line.split_whitespace();
    let version = parts.next().unwrap_or("");
    assert!(
        version.starts_with("HTTP/1."),
        "not an HTTP response: {text:?}"
    );
    let status = parts
        .next()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("bad status line {status_line:?}"));
    let headers = lines
        .filter(|l| !l.is_empty())
        .map(|l| {
            let (n, v) = l
                .split_once(':')
                .unwrap_or_else(|| panic!("bad header line {l:?} in {text:?}"));
            (n.trim().to_string(), v.trim().to_string())
        })
        .collect();
    HttpResponse {
        status,
        headers,
        body: Vec::new(),
        head_text: text,
    }
}

/// Reads an HTTP response head one byte at a time (up to and including the blank line).
pub(crate) fn read_head_bytewise(stream: &mut TcpStream) -> io::Result<Vec<u8>> {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        let n = stream.read(&mut byte)?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("EOF after {:?}", String::from_utf8_lossy(&head)),
            ));
        }
        head.push(byte[0]);
        assert!(head.len() < 64 * 1024, "response head too long");
    }
    Ok(head)
}

/// Sends `request` on a fresh connection and reads the response (head, and a body of
/// `Content-Length` bytes). The stream is returned for further checks.
pub fn http_request(addr: SocketAddr, request: &[u8]) -> (HttpResponse, TcpStream) {
    let mut stream = TcpStream::connect(addr).expect("TCP connect");
    stream.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    stream.set_write_timeout(Some(IO_TIMEOUT)).unwrap();
    // The server may answer (and hang up) before reading everything, e.g. for 431: a failed
    // write is fine as long as the response arrives.
    let _ = stream.write_all(request);
    let head = read_head_bytewise(&mut stream).unwrap_or_else(|e| {
        panic!(
            "no HTTP response to {:?}: {e}",
            String::from_utf8_lossy(&request[..request.len().min(200)])
        )
    });
    let mut response = parse_head(&head);
    if let Some(len) = response.header("content-length") {
        let len: usize = len.parse().expect("numeric Content-Length");
        let mut body = vec![0u8; len];
        stream.read_exact(&mut body).expect("read response body");
        response.body = body;
    }
    (response, stream)
}

/// After an error response the server must close the connection: the rest of the stream
/// must end (EOF/reset) within 5 s. Without `Content-Length` the bytes up to the end are the
/// body (appended to `response.body`); with it, any further byte is an error.
pub fn assert_closed_by_server(response: &mut HttpResponse, stream: &mut TcpStream, what: &str) {
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    match read_until_closed(stream) {
        Ok(rest) if response.header("content-length").is_none() => {
            response.body.extend_from_slice(&rest)
        }
        Ok(rest) if rest.is_empty() => {}
        Ok(rest) => panic!(
            "{what}: unexpected bytes after the response: {:?}",
            String::from_utf8_lossy(&rest)
        ),
        Err(e) => panic!("{what}: server did not close the connection after the response: {e}"),
    }
    let _ = stream.shutdown(Shutdown::Both);
}

/// A `POST /TOPIC` request with this `Content-Type` and body. `extra_headers` is written as
/// is after `Content-Length`: whole header lines, each ending in `\r\n` (or empty).
pub fn post_request(topic: &str, content_type: &str, extra_headers: &str, body: &[u8]) -> Vec<u8> {
    let mut request = format!(
        "POST /{topic} HTTP/1.1\r\nHost: x\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n{extra_headers}\r\n",
        body.len()
    )
    .into_bytes();
    request.extend_from_slice(body);
    request
}

/// Publishes `body` to `TOPIC` over HTTP on a fresh connection ([`post_request`] with
/// `Connection: close` added) and returns the response's status and its body as text, with
/// surrounding whitespace trimmed.
pub fn post(
    addr: SocketAddr,
    topic: &str,
    content_type: &str,
    extra_headers: &str,
    body: &[u8],
) -> (u16, String) {
    let headers = format!("Connection: close\r\n{extra_headers}");
    let request = post_request(topic, content_type, &headers, body);
    let (response, _) = http_request(addr, &request);
    (
        response.status,
        String::from_utf8_lossy(&response.body).trim().to_string(),
    )
}
