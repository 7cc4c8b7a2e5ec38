//! tungstenite clients for tests, with read timeouts so that a missing message fails the
//! test instead of hanging it. The send and receive helpers work over any stream (plain TCP
//! or TLS).

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use tungstenite::{Message, WebSocket};

use crate::IO_TIMEOUT;

pub type Ws = WebSocket<TcpStream>;

/// Connects a tungstenite client to `/TOPIC`; panics on failure.
pub fn connect(addr: SocketAddr, topic: &str) -> Ws {
    try_connect(addr, topic, IO_TIMEOUT).unwrap_or_else(|e| panic!("connect to /{topic}: {e}"))
}

/// Connects a tungstenite client to `/TOPIC`, allowing `handshake_timeout` for the server's
/// answer. Afterwards the socket's read timeout is [`IO_TIMEOUT`].
pub fn try_connect(
    addr: SocketAddr,
    topic: &str,
    handshake_timeout: Duration,
) -> Result<Ws, String> {
    let stream = TcpStream::connect(addr).map_err(|e| format!("TCP connect: {e}"))?;
    stream.set_nodelay(true).unwrap();
    stream.set_read_timeout(Some(handshake_timeout)).unwrap();
    stream.set_write_timeout(Some(IO_TIMEOUT)).unwrap();
    let url = format!("ws://{addr}/{topic}");
    match tungstenite::client(url.as_str(), stream) {
        Ok((ws, response)) => {
            assert_eq!(response.status().as_u16(), 101);
            ws.get_ref().set_read_timeout(Some(IO_TIMEOUT)).unwrap();
            Ok(ws)
        }
        Err(e) => Err(format!("handshake: {e}")),
    }
}

pub fn is_timeout(e: &tungstenite::Error) -> bool {
    matches!(e, tungstenite::Error::Io(io) if matches!(io.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut))
}

/// Whether the error is the transport ending abruptly (reset, or a write after the peer
/// left), which after a completed close handshake still means "closed".
pub fn is_reset(e: &tungstenite::Error) -> bool {
    matches!(e, tungstenite::Error::Io(io) if matches!(io.kind(), io::ErrorKind::ConnectionReset | io::ErrorKind::BrokenPipe))
}

/// Sends a message, panicking with context on failure.
pub fn send<S: Read + Write>(ws: &mut WebSocket<S>, msg: Message) {
    ws.send(msg).unwrap_or_else(|e| panic!("send failed: {e}"));
}

pub fn send_text<S: Read + Write>(ws: &mut WebSocket<S>, text: &str) {
    send(ws, Message::text(text));
}

/// Reads the next text or binary message (pings/pongs skipped); panics on close, error or
/// timeout.
pub fn recv_data<S: Read + Write>(ws: &mut WebSocket<S>) -> Message {
    loop {
        match ws.read() {
            Ok(Message::Ping(_)) | Ok(Message::Pong(_)) | Ok(Message::Frame(_)) => continue,
            Ok(Message::Close(frame)) => panic!("expected a data message, got Close({frame:?})"),
            Ok(msg) => return msg,
            Err(e) if is_timeout(&e) => {
                panic!("expected a data message, none arrived within the read timeout")
            }
            Err(e) => panic!("expected a data message, got error: {e}"),
        }
    }
}

/// Reads the next message, which must be text.
pub fn recv_text<S: Read + Write>(ws: &mut WebSocket<S>) -> String {
    match recv_data(ws) {
        Message::Text(t) => t.as_str().to_string(),
        other => panic!("expected a text message, got {other:?}"),
    }
}

/// Makes sure this client's subscription is in effect everywhere (on every worker): sends
/// `sync:ID` and reads until its own echo comes back, skipping other clients' `sync:`
/// messages. A topic's messages are numbered by one owner, so once the echo is back, every
/// later message on the topic reaches this client.
///
/// Requires echo (not `--no-echo`).
pub fn sync<S: Read + Write>(ws: &mut WebSocket<S>, id: &str) {
    let mine = format!("sync:{id}");
    send_text(ws, &mine);
    loop {
        match recv_data(ws) {
            Message::Text(t) if t.as_str() == mine => return,
            Message::Text(t) if t.as_str().starts_with("sync:") => continue,
            other => panic!("while syncing {id}: unexpected message {other:?}"),
        }
    }
}

/// Like [`recv_data`], but skips `sync:` messages left over from [`sync`] calls.
pub fn recv_data_after_sync<S: Read + Write>(ws: &mut WebSocket<S>) -> Message {
    loop {
        match recv_data(ws) {
            Message::Text(t) if t.as_str().starts_with("sync:") => continue,
            other => return other,
        }
    }
}

/// Like [`recv_text`], but skips `sync:` messages left over from [`sync`] calls.
pub fn recv_text_after_sync<S: Read + Write>(ws: &mut WebSocket<S>) -> String {
    match recv_data_after_sync(ws) {
        Message::Text(t) => t.as_str().to_string(),
        other => panic!("expected a text message, got {other:?}"),
    }
}

/// Closes a client cleanly: sends Close and reads until the server has answered and the
/// connection has ended.
pub fn close_cleanly(mut ws: Ws) {
    ws.close(None).expect("send close");
    loop {
        match ws.read() {
            Ok(_) => continue,
            Err(tungstenite::Error::ConnectionClosed) | Err(tungstenite::Error::AlreadyClosed) => {
                return
            }
            Err(e) if is_timeout(&e) => panic!("server did not finish the close handshake"),
            // The server may reset the connection after the close frames: still closed.
            Err(e) if is_reset(&e) => return,
            Err(e) => panic!("the close handshake failed: {e}"),
        }
    }
}
