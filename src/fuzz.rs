//! Entry points for coverage-guided fuzzing (`fuzz/`, `benches/fuzz.sh`) and for the
//! regression tests that replay what the fuzzer found (`tests/fuzz_regressions.rs`).
//!
//! Each function takes arbitrary bytes, drives one of the parsers a peer controls, and
//! panics only when an invariant breaks: a parser may refuse any input, but it must not
//! panic, loop, over-read, or hand the rest of Herald something malformed. Kept in the
//! library so the fuzz targets and the tests run exactly the same code.

use std::io::{self, Read, Write};
use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;
use rustls::{ClientConfig, ClientConnection, RootCertStore, ServerConfig};

use crate::proto::deflate::Codec;
use crate::proto::frame::{self, Event};
use crate::proto::http::{self, Request};
use crate::worker::tls::Session;

/// The message size limit the targets run with: small, so that the "too large" paths are
/// reached by inputs of a few kilobytes.
pub const MAX_MESSAGE: usize = 4096;

/// Frame decoding as a connection does it: decode the whole input, feeding the unconsumed
/// rest again as if more bytes had arrived, until an error, a close, or no progress; then
/// check that the partial frame left over cannot hold the connection's input unbounded.
/// With `deflate`, messages with RSV1 are inflated (permessage-deflate negotiated).
pub fn frames(data: &[u8], deflate: bool) {
    let mut codec = Codec::default();
    let mut buf = data.to_vec();
    let mut asm = frame::Assembly::default();
    let mut events = Vec::new();
    let mut pos = 0;
    // The input arrives in two reads, split where its first byte says, so that frames cut
    // across reads (the carried-over tail) are exercised too.
    let split = data.first().map_or(0, |&b| usize::from(b)).min(buf.len());
    let mut limit = split;
    let mut ended = false;
    loop {
        let inflater = if deflate { Some(&mut codec) } else { None };
        let result = frame::decode_with(
            &mut buf[pos..limit],
            &mut asm,
            MAX_MESSAGE,
            inflater,
            &mut events,
        );
        let used = match result {
            Ok(used) => used,
            Err(e) => {
                // Every refusal has a close code of its own and a reason that fits a frame.
                assert!(matches!(e.close_code(), 1002 | 1007 | 1009));
                assert!(e.reason().len() <= 123);
                ended = true;
                break;
            }
        };
        assert!(used <= limit - pos, "consumed more than it was given");
        pos += used;
        let closed = events.iter().any(|e| matches!(e, Event::Close(_)));
        check_events(&events);
        events.clear();
        if closed {
            ended = true;
            break;
        }
        if used == 0 {
            if limit == buf.len() {
                break;
            }
            limit = buf.len(); // the second read
        }
    }
    if !ended {
        // What is left is a partial frame. Whatever it announced, one whole message's worth
        // of further bytes must complete it or be refused: the decoder never waits (and a
        // connection never buffers) more than that.
        let mut rest = buf[pos..].to_vec();
        rest.resize(rest.len() + MAX_MESSAGE + 15, 0);
        let inflater = if deflate { Some(&mut codec) } else { None };
        let more = frame::decode_with(&mut rest, &mut asm, MAX_MESSAGE, inflater, &mut events);
        assert!(
            !matches!(more, Ok(0)),
            "the decoder waits for more than a whole message's bytes"
        );
    }
}

/// What the decoder hands on must be well-formed server frames: unmasked, final, and a
/// message's payload within the limit (inflated ones included).
fn check_events(events: &[Event]) {
    for event in events {
        let bytes = match event {
            Event::Message(b) | Event::Ping(b) | Event::Close(b) => b,
        };
        let mut copy = bytes.to_vec();
        let mut asm = frame::Assembly::default();
        let mut again = Vec::new();
        // A server frame is unmasked, which a server-side decoder refuses: check the header
        // by hand instead (FIN set, no mask bit), then the payload length against the limit.
        assert!(copy.len() >= 2, "frame shorter than a header");
        assert_eq!(copy[0] & 0x80, 0x80, "a frame handed on without FIN");
        assert_eq!(copy[1] & 0x80, 0, "a server frame must not be masked");
        if let Event::Message(_) = event {
            let (_, payload) = frame::payload_of(bytes);
            assert!(payload.len() <= MAX_MESSAGE, "message over the limit");
        }
        // Masking it (all-zero key) must make it acceptable to the decoder again.
        copy[1] |= 0x80;
        let header_len = header_len(&copy);
        copy.splice(header_len..header_len, [0u8; 4]);
        let used = frame::decode(&mut copy, &mut asm, MAX_MESSAGE, &mut again)
            .expect("a frame Herald produced is one it accepts");
        assert_eq!(used, copy.len(), "a produced frame decodes whole");
    }
}

/// Length of an unmasked frame header (2, 4 or 10 bytes).
fn header_len(frame: &[u8]) -> usize {
    match frame[1] & 0x7f {
        126 => 4,
        127 => 10,
        _ => 2,
    }
}

/// The HTTP request head parser, on every prefix boundary a read could end at: incomplete
/// input must stay incomplete or become an answer, and a complete head must not claim more
/// bytes than it was given.
pub fn http_head(data: &[u8]) {
    match http::parse_head(data, MAX_MESSAGE) {
        Ok(Some(head)) => {
            assert!(head.len <= data.len(), "head longer than the input");
            if let Request::Publish { body_len, .. } = head.request {
                assert!(body_len <= MAX_MESSAGE, "publish body over the limit");
            }
            // The same head alone parses the same way.
            let again = http::parse_head(&data[..head.len], MAX_MESSAGE);
            assert_eq!(again, Ok(Some(head)), "a head parses differently alone");
        }
        Ok(None) => {}
        Err(e) => {
            // Every refusal is a well-formed response with a status.
            let response = e.response();
            assert!(response.starts_with(b"HTTP/1.1 "));
        }
    }
}

/// `herald.v1` control message decoding: any bytes, refused with an error code or decoded.
pub fn v1_request(data: &[u8]) {
    if let Err((_, refusal)) = crate::proto::v1::decode(data) {
        assert!(!refusal.code().is_empty());
    }
}

/// A TLS server session and a client session already through their handshake, in memory.
pub struct TlsPair {
    server_config: Arc<ServerConfig>,
    client_config: Arc<ClientConfig>,
}

impl TlsPair {
    /// The server configuration Herald would load from this certificate and key, and a
    /// client that trusts the certificate (self-signed, for `localhost`).
    pub fn load(cert_path: &Path, key_path: &Path) -> Result<TlsPair, String> {
        let server_config =
            crate::worker::tls::load_config(cert_path, key_path).map_err(|e| e.to_string())?;
        let cert = CertificateDer::from_pem_file(cert_path).map_err(|e| e.to_string())?;
        let mut roots = RootCertStore::empty();
        roots.add(cert).map_err(|e| e.to_string())?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let client_config = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?
            .with_root_certificates(roots)
            .with_no_client_auth();
        Ok(TlsPair {
            server_config,
            client_config: Arc::new(client_config),
        })
    }
}

/// The `wss://` input path of one connection, driven by arbitrary bytes. The first byte
/// chooses how they arrive:
/// - even: as raw bytes on the socket (ClientHello parsing, records, alerts);
/// - odd: as application data from a real client after a complete handshake, so the
///   plaintext reaches the HTTP head parser and then the frame decoder (with
///   permessage-deflate when the second bit is set), as on a real connection.
pub fn tls_websocket(pair: &TlsPair, data: &[u8]) {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let Ok(mut server) = crate::worker::tls::new_session(&pair.server_config) else {
        return;
    };
    let mut socket = MemorySocket::default();
    if mode & 1 == 0 {
        let plain = server_input(&mut server, &mut socket, rest);
        connection_input(&plain, mode & 2 != 0);
        return;
    }
    let Ok(mut client) = ClientConnection::new(
        pair.client_config.clone(),
        "localhost".try_into().expect("a valid name"),
    ) else {
        return;
    };
    // Handshake in memory: a few round trips of records between the two sessions.
    for _ in 0..8 {
        if !client.is_handshaking() && !server.is_handshaking() {
            break;
        }
        let mut wire = Vec::new();
        while client.wants_write() {
            if client.write_tls(&mut wire).is_err() {
                return;
            }
        }
        let _ = server_input(&mut server, &mut socket, &wire);
        let back = std::mem::take(&mut socket.outbound);
        let mut slice = &back[..];
        while !slice.is_empty() {
            match client.read_tls(&mut slice) {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
            if client.process_new_packets().is_err() {
                return;
            }
        }
    }
    assert!(
        !server.is_handshaking(),
        "an in-memory handshake with a trusting client must complete"
    );
    if client.writer().write_all(rest).is_err() {
        return;
    }
    let mut wire = Vec::new();
    while client.wants_write() {
        if client.write_tls(&mut wire).is_err() {
            return;
        }
    }
    let plain = server_input(&mut server, &mut socket, &wire);
    assert_eq!(plain, rest, "the server decrypts what the client sent");
    connection_input(&plain, mode & 2 != 0);
}

/// A connection's socket in memory: reads take what was put in, in socket-sized pieces,
/// then `WouldBlock`; writes collect what the server sends.
#[derive(Default)]
struct MemorySocket {
    inbound: Vec<u8>,
    read_at: usize,
    outbound: Vec<u8>,
}

impl Read for MemorySocket {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let left = &self.inbound[self.read_at..];
        if left.is_empty() {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        let n = left.len().min(buf.len()).min(4096);
        buf[..n].copy_from_slice(&left[..n]);
        self.read_at += n;
        Ok(n)
    }
}

impl Write for MemorySocket {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.outbound.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Feed ciphertext to the server session through its read path (as the worker does, into
/// a scratch-sized buffer), and return the plaintext it yields before it stops (error,
/// close, or input used up).
fn server_input(server: &mut Session, socket: &mut MemorySocket, wire: &[u8]) -> Vec<u8> {
    socket.inbound = wire.to_vec();
    socket.read_at = 0;
    let mut plain = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match server.read(socket, &mut buf) {
            Ok(0) | Err(_) => return plain, // end of stream, drained, or refused
            Ok(n) => plain.extend_from_slice(&buf[..n]),
        }
    }
}

/// One connection's plaintext: a request head, and after an upgrade, frames.
fn connection_input(plain: &[u8], deflate: bool) {
    http_head(plain);
    if let Ok(Some(head)) = http::parse_head(plain, MAX_MESSAGE) {
        if let Request::Upgrade { .. } = head.request {
            frames(&plain[head.len..], deflate);
        }
    }
}
