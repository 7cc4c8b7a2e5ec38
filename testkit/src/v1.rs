//! A `herald.v1` test client (tungstenite underneath), for the tests that speak the
//! subprotocol (`tests/v1.rs`, `tests/cluster.rs`).

use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tungstenite::client::IntoClientRequest;

use crate::ws::{is_timeout, send_text, Ws};
use crate::IO_TIMEOUT;

/// A connection that offered `herald.v1` (the server must have selected it).
pub struct V1 {
    pub ws: Ws,
}

impl V1 {
    pub fn connect(addr: SocketAddr) -> V1 {
        V1::connect_to(addr, "/")
    }

    /// A connection presenting `token` the way a browser can (`?token=`).
    pub fn connect_with_token(addr: SocketAddr, token: &str) -> V1 {
        V1::connect_to(addr, &format!("/?token={token}"))
    }

    fn connect_to(addr: SocketAddr, target: &str) -> V1 {
        let stream = TcpStream::connect(addr).expect("TCP connect");
        stream.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
        stream.set_write_timeout(Some(IO_TIMEOUT)).unwrap();
        let mut request = format!("ws://{addr}{target}")
            .into_client_request()
            .unwrap();
        request
            .headers_mut()
            .insert("Sec-WebSocket-Protocol", "herald.v1".parse().unwrap());
        let (ws, response) = tungstenite::client(request, stream).expect("v1 handshake");
        assert_eq!(
            response
                .headers()
                .get("sec-websocket-protocol")
                .map(|v| v.to_str().unwrap()),
            Some("herald.v1")
        );
        V1 { ws }
    }

    pub fn send(&mut self, request: Value) {
        send_text(&mut self.ws, &request.to_string());
    }

    /// The next server message, parsed. Fails the test when none comes within the socket's
    /// read timeout ([`IO_TIMEOUT`] unless the test set another), pings included: the
    /// server's pings (every `--ping-interval` of silence) must not keep a test waiting
    /// forever for a message that never comes.
    pub fn recv(&mut self) -> Value {
        let wait = self.ws.get_ref().read_timeout().ok().flatten();
        let wait = wait.unwrap_or(IO_TIMEOUT);
        self.recv_by(Instant::now() + wait)
            .unwrap_or_else(|| panic!("expected a herald.v1 message, none arrived within {wait:?}"))
    }

    /// The next server message, parsed, or `None` once `deadline` has passed without one
    /// (pings skipped). The socket's read timeout is left as it was.
    pub fn recv_by(&mut self, deadline: Instant) -> Option<Value> {
        let before = self.ws.get_ref().read_timeout().ok().flatten();
        let text = loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break None;
            }
            let socket = self.ws.get_ref();
            socket
                .set_read_timeout(Some(left.max(Duration::from_millis(1))))
                .unwrap();
            match self.ws.read() {
                Ok(tungstenite::Message::Text(t)) => break Some(t.as_str().to_string()),
                Ok(tungstenite::Message::Close(f)) => {
                    panic!("expected a message, got Close({f:?})")
                }
                Ok(tungstenite::Message::Binary(b)) => panic!("expected text, got binary {b:?}"),
                Ok(_) => continue,
                Err(e) if is_timeout(&e) => continue,
                Err(e) => panic!("expected a herald.v1 message, got error: {e}"),
            }
        };
        self.ws.get_ref().set_read_timeout(before).unwrap();
        let text = text?;
        Some(serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}")))
    }

    /// The next message, or `None` once the connection is gone.
    pub fn try_recv(&mut self) -> Option<Value> {
        loop {
            match self.ws.read() {
                Ok(tungstenite::Message::Text(t)) => return serde_json::from_str(&t).ok(),
                Ok(_) => continue,
                Err(_) => return None,
            }
        }
    }

    /// The next message, which must be of `kind`.
    pub fn expect(&mut self, kind: &str) -> Value {
        let v = self.recv();
        assert_eq!(v["type"], kind, "expected {kind}, got {v}");
        v
    }

    /// Sends a subscribe request (the answers are read by the caller).
    pub fn send_subscribe(&mut self, id: u64, topics: Value) {
        self.send(json!({"op": "subscribe", "id": id, "topics": topics}));
    }

    /// Subscribes and returns the (single) `subscribed` answer.
    pub fn subscribe(&mut self, id: u64, topics: Value) -> Value {
        self.send_subscribe(id, topics);
        self.expect("subscribed")
    }

    pub fn publish(&mut self, id: u64, topic: &str, data: &str) {
        self.send(json!({"op": "publish", "id": id, "topic": topic, "data": data}));
    }
}
