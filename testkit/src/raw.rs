//! A raw-socket WebSocket client for tests ([`RawWs`]: the upgrade done by hand, frames read
//! one by one) and the frame codec: masked client frames ([`frame`], [`encode_frame`]) made by
//! hand, so a test can send the protocol errors a real client library refuses to produce, and
//! server frames parsed back ([`parse_frames`]).

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use crate::http::{parse_head, read_head_bytewise, upgrade_request, HttpResponse};
use crate::IO_TIMEOUT;

pub const OP_CONT: u8 = 0x0;
pub const OP_TEXT: u8 = 0x1;
pub const OP_BINARY: u8 = 0x2;
pub const OP_CLOSE: u8 = 0x8;
pub const OP_PING: u8 = 0x9;
pub const OP_PONG: u8 = 0xA;

const MASK: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];

/// A masked client frame. `rsv` is the three RSV bits (0..=7).
pub fn frame(fin: bool, rsv: u8, opcode: u8, payload: &[u8]) -> Vec<u8> {
    encode_frame(fin, rsv, opcode, payload, Some(MASK))
}

/// An unmasked frame (illegal from a client).
pub fn frame_unmasked(fin: bool, rsv: u8, opcode: u8, payload: &[u8]) -> Vec<u8> {
    encode_frame(fin, rsv, opcode, payload, None)
}

pub fn encode_frame(
    fin: bool,
    rsv: u8,
    opcode: u8,
    payload: &[u8],
    mask: Option<[u8; 4]>,
) -> Vec<u8> {
    assert!(rsv < 8 && opcode < 16);
    let mut out = Vec::with_capacity(payload.len() + 14);
    out.push(((fin as u8) << 7) | (rsv << 4) | opcode);
    let mask_bit = if mask.is_some() { 0x80 } else { 0 };
    let len = payload.len();
    if len < 126 {
        out.push(mask_bit | len as u8);
    } else if len <= 0xffff {
        out.push(mask_bit | 126);
        out.extend_from_slice(&(len as u16).to_be_bytes());
    } else {
        out.push(mask_bit | 127);
        out.extend_from_slice(&(len as u64).to_be_bytes());
    }
    match mask {
        Some(key) => {
            out.extend_from_slice(&key);
            out.extend(payload.iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
        }
        None => out.extend_from_slice(payload),
    }
    out
}

/// A close frame payload: code + reason.
pub fn close_payload(code: u16, reason: &str) -> Vec<u8> {
    let mut p = code.to_be_bytes().to_vec();
    p.extend_from_slice(reason.as_bytes());
    p
}

/// One frame sent by the server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawFrame {
    pub fin: bool,
    pub rsv: u8,
    pub opcode: u8,
    pub payload: Vec<u8>,
}

impl RawFrame {
    /// The close code of a close frame (`None` for an empty close payload).
    pub fn close_code(&self) -> Option<u16> {
        assert_eq!(self.opcode, OP_CLOSE);
        (self.payload.len() >= 2).then(|| u16::from_be_bytes([self.payload[0], self.payload[1]]))
    }
}

/// What reading from a raw socket gave.
#[derive(Debug)]
pub enum Read1 {
    Frame(RawFrame),
    /// EOF or connection reset: the server closed the socket.
    Closed,
    /// Nothing within the socket's read timeout.
    TimedOut,
}

/// Classifies a read error: `Some(Closed)` for EOF/reset, `Some(TimedOut)`, or `None`.
fn classify(e: &io::Error) -> Option<Read1> {
    match e.kind() {
        io::ErrorKind::UnexpectedEof
        | io::ErrorKind::ConnectionReset
        | io::ErrorKind::ConnectionAborted
        | io::ErrorKind::BrokenPipe => Some(Read1::Closed),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => Some(Read1::TimedOut),
        _ => None,
    }
}

/// A raw WebSocket client: TCP stream + hand-made upgrade, frames by hand.
pub struct RawWs {
    pub stream: TcpStream,
}

impl RawWs {
    /// Connects and upgrades to `/TOPIC` by hand; checks the 101 response and its
    /// `Sec-WebSocket-Accept`. Reads the response head byte by byte so that no frame
    /// bytes following it are consumed.
    pub fn connect(addr: SocketAddr, topic: &str) -> RawWs {
        RawWs::connect_with(addr, topic, &[]).0
    }

    /// [`RawWs::connect`] with extra request header lines (e.g. `Sec-WebSocket-Extensions`);
    /// also returns the 101 response, to check what the server answered.
    pub fn connect_with(
        addr: SocketAddr,
        topic: &str,
        extra_headers: &[&str],
    ) -> (RawWs, HttpResponse) {
        let stream = TcpStream::connect(addr).expect("TCP connect");
        stream.set_nodelay(true).unwrap();
        stream.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
        stream.set_write_timeout(Some(IO_TIMEOUT)).unwrap();
        let mut raw = RawWs { stream };
        let key = "dGhlIHNhbXBsZSBub25jZQ==";
        let request = upgrade_request(&format!("/{topic}"), key, extra_headers);
        raw.stream
            .write_all(request.as_bytes())
            .expect("send upgrade");
        let head = read_head_bytewise(&mut raw.stream)
            .unwrap_or_else(|e| panic!("reading the upgrade response for /{topic}: {e}"));
        let response = parse_head(&head);
        assert_eq!(
            response.status,
            101,
            "upgrade of /{topic} refused: {:?}",
            String::from_utf8_lossy(&head)
        );
        let expected = tungstenite::handshake::derive_accept_key(key.as_bytes());
        assert_eq!(
            response.header("sec-websocket-accept"),
            Some(expected.as_str()),
            "bad Sec-WebSocket-Accept in {:?}",
            String::from_utf8_lossy(&head)
        );
        (raw, response)
    }

    /// Reads an HTTP response head (byte by byte, so frames after it stay unread).
    pub fn read_response_head(&mut self) -> String {
        let head = read_head_bytewise(&mut self.stream).expect("reading a response head");
        String::from_utf8_lossy(&head).to_string()
    }

    /// Writes bytes; panics on failure.
    pub fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).expect("raw write");
    }

    /// Writes bytes; the error (if the server already hung up) is returned.
    pub fn try_send(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.stream.write_all(bytes)
    }

    pub fn set_read_timeout(&self, t: Duration) {
        self.stream.set_read_timeout(Some(t)).unwrap();
    }

    /// Reads one server frame. Panics if the server masked it (RFC 6455 §5.1).
    pub fn read_frame(&mut self) -> Read1 {
        let mut head = [0u8; 2];
        if let Err(e) = self.stream.read_exact(&mut head) {
            return classify(&e).unwrap_or_else(|| panic!("raw read: {e}"));
        }
        let fin = head[0] & 0x80 != 0;
        let rsv = (head[0] >> 4) & 0x7;
        let opcode = head[0] & 0x0f;
        assert_eq!(head[1] & 0x80, 0, "server frames must not be masked");
        let len = match head[1] & 0x7f {
            126 => {
                let mut b = [0u8; 2];
                if let Err(e) = self.stream.read_exact(&mut b) {
                    return classify(&e).unwrap_or_else(|| panic!("raw read: {e}"));
                }
                u16::from_be_bytes(b) as usize
            }
            127 => {
                let mut b = [0u8; 8];
                if let Err(e) = self.stream.read_exact(&mut b) {
                    return classify(&e).unwrap_or_else(|| panic!("raw read: {e}"));
                }
                u64::from_be_bytes(b) as usize
            }
            n => n as usize,
        };
        let mut payload = vec![0u8; len];
        if let Err(e) = self.stream.read_exact(&mut payload) {
            return classify(&e).unwrap_or_else(|| panic!("raw read: {e}"));
        }
        Read1::Frame(RawFrame {
            fin,
            rsv,
            opcode,
            payload,
        })
    }

    /// Reads the next frame, which must be there.
    pub fn expect_frame(&mut self) -> RawFrame {
        match self.read_frame() {
            Read1::Frame(f) => f,
            other => panic!("expected a frame from the server, got {other:?}"),
        }
    }

    /// Reads one whole data message (reassembling continuation frames; pings and pongs are
    /// skipped). Returns `(opcode, payload)`.
    pub fn expect_message(&mut self) -> (u8, Vec<u8>) {
        let mut opcode = None;
        let mut data = Vec::new();
        loop {
            let f = self.expect_frame();
            match f.opcode {
                OP_PING | OP_PONG => continue,
                OP_CLOSE => panic!("expected a data message, got close {:?}", f.close_code()),
                OP_CONT => {
                    assert!(opcode.is_some(), "continuation frame without a start");
                    data.extend_from_slice(&f.payload);
                }
                op => {
                    assert!(
                        opcode.is_none(),
                        "new data frame inside a fragmented message"
                    );
                    opcode = Some(op);
                    data.extend_from_slice(&f.payload);
                }
            }
            if f.fin {
                return (opcode.unwrap(), data);
            }
        }
    }

    /// The server is expected to close this connection with a Close frame: reads frames
    /// (skipping data, pings and pongs) until the close frame, answers it, then requires the
    /// server to close the TCP connection. Returns the close code (`None` for an empty close
    /// payload), or a description of what happened instead.
    pub fn expect_close(&mut self) -> Result<Option<u16>, String> {
        loop {
            match self.read_frame() {
                Read1::Frame(f) if f.opcode == OP_CLOSE => {
                    let code = f.close_code();
                    let _ = self.try_send(&frame(
                        true,
                        0,
                        OP_CLOSE,
                        &f.payload[..f.payload.len().min(2)],
                    ));
                    return match self.read_to_end_of_stream() {
                        Ok(_) => Ok(code),
                        Err(e) => Err(format!(
                            "got close {code:?} but then the server did not close TCP: {e}"
                        )),
                    };
                }
                Read1::Frame(_) => continue,
                Read1::Closed => return Err("TCP closed without a close frame".into()),
                Read1::TimedOut => return Err(format!("no close frame within {IO_TIMEOUT:?}")),
            }
        }
    }

    /// Reads until EOF/reset and returns the bytes read; `Err` if the read timeout passes
    /// first.
    pub fn read_to_end_of_stream(&mut self) -> Result<Vec<u8>, String> {
        read_until_closed(&mut self.stream)
    }
}

/// Reads until EOF/reset; `Err` if a read times out (the socket's read timeout) first.
pub fn read_until_closed(stream: &mut TcpStream) -> Result<Vec<u8>, String> {
    let mut all = Vec::new();
    let mut buf = [0u8; 64 * 1024];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => return Ok(all),
            Ok(n) => all.extend_from_slice(&buf[..n]),
            Err(e) => match classify(&e) {
                Some(Read1::Closed) => return Ok(all),
                Some(Read1::TimedOut) => {
                    return Err(format!(
                        "socket still open after the read timeout ({} bytes read)",
                        all.len()
                    ))
                }
                _ => return Err(format!("read error: {e}")),
            },
        }
    }
}

/// Splits a byte stream of server frames into frames; stops at the first incomplete one.
pub fn parse_frames(mut bytes: &[u8]) -> Vec<RawFrame> {
    let mut frames = Vec::new();
    loop {
        if bytes.len() < 2 {
            return frames;
        }
        let (len, header) = match bytes[1] & 0x7f {
            126 if bytes.len() >= 4 => (u16::from_be_bytes([bytes[2], bytes[3]]) as usize, 4),
            127 if bytes.len() >= 10 => (
                u64::from_be_bytes(bytes[2..10].try_into().unwrap()) as usize,
                10,
            ),
            126 | 127 => return frames,
            n => (n as usize, 2),
        };
        if bytes.len() < header + len {
            return frames;
        }
        frames.push(RawFrame {
            fin: bytes[0] & 0x80 != 0,
            rsv: (bytes[0] >> 4) & 7,
            opcode: bytes[0] & 0x0f,
            payload: bytes[header..header + len].to_vec(),
        });
        bytes = &bytes[header + len..];
    }
}
