//! A Server-Sent Events client over a raw socket, like `curl -N`: sends the `GET`, checks
//! nothing itself, and parses the `text/event-stream` body into events and comments as the
//! HTML standard's parser does (for the LF line ends Herald sends).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use crate::IO_TIMEOUT;

/// One dispatched event (`data` lines joined with `\n`), or a comment line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SseItem {
    Event {
        id: Option<String>,
        event: String,
        data: String,
    },
    Retry(u64),
    Comment(String),
}

/// Nothing complete arrived within the read timeout (nothing read is lost: call again).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimedOut;

/// A streaming SSE response.
pub struct SseClient {
    pub status: u16,
    /// The response head, as text.
    pub head: String,
    stream: Box<dyn Read + Send>,
    tcp: TcpStream,
    /// Bytes read but not parsed yet (survives a read timeout).
    buf: Vec<u8>,
    /// The fields of the event being parsed (survive a read timeout).
    id: Option<String>,
    event: Option<String>,
    data: Option<String>,
}

/// The request `curl -N -H 'Accept: text/event-stream' URL` sends, with `extra` header lines.
pub fn sse_request(target: &str, extra: &[&str]) -> String {
    let mut request =
        format!("GET {target} HTTP/1.1\r\nHost: localhost\r\nAccept: text/event-stream\r\n");
    for header in extra {
        request.push_str(header);
        request.push_str("\r\n");
    }
    request.push_str("\r\n");
    request
}

impl SseClient {
    /// `GET target` on a fresh plain connection.
    pub fn connect(addr: SocketAddr, target: &str, extra: &[&str]) -> SseClient {
        let tcp = TcpStream::connect(addr).unwrap_or_else(|e| panic!("connect {addr}: {e}"));
        let stream: Box<dyn Read + Send> = Box::new(tcp.try_clone().expect("clone"));
        (&tcp)
            .write_all(sse_request(target, extra).as_bytes())
            .expect("send request");
        SseClient::over(tcp, stream)
    }

    /// A stream whose request was already sent on `stream` (say, over TLS); `tcp` is the
    /// socket under it (for timeouts).
    pub fn over(tcp: TcpStream, stream: Box<dyn Read + Send>) -> SseClient {
        tcp.set_read_timeout(Some(IO_TIMEOUT)).expect("timeout");
        let mut client = SseClient {
            status: 0,
            head: String::new(),
            stream,
            tcp,
            buf: Vec::new(),
            id: None,
            event: None,
            data: None,
        };
        loop {
            if let Some(end) = client.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                client.head = String::from_utf8_lossy(&client.buf[..end + 2]).to_string();
                client.buf.drain(..end + 4);
                break;
            }
            match client.fill() {
                Ok(true) => {}
                _ => {
                    client.head = String::from_utf8_lossy(&client.buf).to_string();
                    break;
                }
            }
        }
        client.status = client
            .head
            .get(9..12)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        client
    }

    pub fn set_read_timeout(&self, t: Duration) {
        self.tcp.set_read_timeout(Some(t)).expect("timeout");
    }

    /// Read more. `Ok(false)`: end of stream (or reset); `Err`: the read timed out.
    fn fill(&mut self) -> Result<bool, TimedOut> {
        let mut chunk = [0u8; 16 * 1024];
        match self.stream.read(&mut chunk) {
            Ok(0) => Ok(false),
            Ok(n) => {
                self.buf.extend_from_slice(&chunk[..n]);
                Ok(true)
            }
            Err(e)
                if e.kind() == std::io::ErrorKind::WouldBlock
                    || e.kind() == std::io::ErrorKind::TimedOut =>
            {
                Err(TimedOut)
            }
            Err(_) => Ok(false),
        }
    }

    /// The next event, retry or comment; `Ok(None)`: the stream ended; `Err`: nothing
    /// complete within the read timeout (call again: nothing is lost).
    pub fn poll_item(&mut self) -> Result<Option<SseItem>, TimedOut> {
        loop {
            while let Some(end) = self.buf.iter().position(|&b| b == b'\n') {
                let line = String::from_utf8_lossy(&self.buf[..end]).to_string();
                self.buf.drain(..=end);
                if let Some(item) = self.line(&line) {
                    return Ok(Some(item));
                }
            }
            if !self.fill()? {
                return Ok(None);
            }
        }
    }

    /// One line of the stream; an item when it completes one.
    fn line(&mut self, line: &str) -> Option<SseItem> {
        if line.is_empty() {
            if self.data.is_some() || self.event.is_some() {
                return Some(SseItem::Event {
                    id: self.id.take(),
                    event: self.event.take().unwrap_or_else(|| "message".into()),
                    data: self.data.take().unwrap_or_default(),
                });
            }
            return None;
        }
        if let Some(comment) = line.strip_prefix(':') {
            return Some(SseItem::Comment(comment.trim_start().to_owned()));
        }
        let (field, value) = line.split_once(':').unwrap_or((line, ""));
        let value = value.strip_prefix(' ').unwrap_or(value).to_owned();
        match field {
            "id" => self.id = Some(value),
            "event" => self.event = Some(value),
            "data" => match &mut self.data {
                Some(d) => {
                    d.push('\n');
                    d.push_str(&value);
                }
                None => self.data = Some(value),
            },
            "retry" => return Some(SseItem::Retry(value.parse().unwrap_or(0))),
            _ => {}
        }
        None
    }

    /// The next event, retry or comment. `None`: the stream ended; a timeout panics.
    pub fn next_item(&mut self) -> Option<SseItem> {
        self.poll_item()
            .unwrap_or_else(|TimedOut| panic!("no complete SSE item within the read timeout"))
    }

    /// The next event (comments and `retry:` skipped): (id, event type, data). `None`: the
    /// stream ended; a timeout panics.
    pub fn next_event(&mut self) -> Option<(String, String, String)> {
        loop {
            if let SseItem::Event { id, event, data } = self.next_item()? {
                return Some((id.unwrap_or_default(), event, data));
            }
        }
    }

    /// Like [`SseClient::next_event`], but `Err` on a timeout.
    pub fn poll_event(&mut self) -> Result<Option<(String, String, String)>, TimedOut> {
        loop {
            match self.poll_item()? {
                Some(SseItem::Event { id, event, data }) => {
                    return Ok(Some((id.unwrap_or_default(), event, data)))
                }
                Some(_) => continue,
                None => return Ok(None),
            }
        }
    }
}
