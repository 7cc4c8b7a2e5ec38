//! `wss://`: rustls's *unbuffered* API driven inside the worker's event loop, without threads
//! or a runtime, and without buffers per connection.
//!
//! rustls's buffered `ServerConnection` keeps a read buffer (at least 4 KiB once anything was
//! read, never given back) and plaintext and ciphertext queues in every session: about 8 KiB
//! for an idle `wss://` connection against a few hundred bytes for a plain one.
//! `UnbufferedServerConnection` works in buffers the caller owns instead, so here ciphertext
//! is read into the worker's input scratch, decrypted into the worker's read scratch (the one
//! plain connections use), and plaintext is encrypted into the worker's output scratch and
//! written straight to the socket. A session keeps bytes of its own only while they are in
//! flight: an incomplete record (`unread`), or ciphertext the socket refused (`unsent`), and
//! frees them as soon as they are gone. Plain connections never touch this module.

use std::cell::RefCell;
use std::io::{self, IoSlice, Read, Write};
use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::UnbufferedServerConnection;
use rustls::unbuffered::{ConnectionState, EncryptError};
use rustls::{HandshakeKind, ServerConfig};

/// Plaintext encrypted per write call: at most this much ciphertext (plus record overhead)
/// waits in a session whose socket is full; the rest stays in the connection's own bounded
/// queue, like any refused output.
const PLAIN_BATCH: usize = 64 * 1024;

/// The largest plaintext of one TLS record (2^14, RFC 8446 5.1).
const MAX_RECORD_PLAIN: usize = 16 * 1024;

/// Room in the output scratch for [`PLAIN_BATCH`] in records (each record adds at most a few
/// dozen bytes) plus handshake flights and tickets.
const OUTPUT_LEN: usize = PLAIN_BATCH + 16 * 1024;

/// Room in the input scratch: a handshake message may span records and must stay in the
/// buffer until complete (up to 64 KiB), plus a full record read after it.
const INPUT_LEN: usize = 128 * 1024;

/// Bound on the state steps taken for one call that produces no plaintext progress (encode,
/// transmit, peer closed): a few per handshake flight.
const STEPS: usize = 64;

/// The worker's TLS scratch: ciphertext in and out. A thread-local because a worker *is* a
/// thread (one per core), so this is one pair of buffers per worker, exactly like `scratch`,
/// without threading them through every write path that may meet a TLS connection.
struct Scratch {
    input: Vec<u8>,
    output: Vec<u8>,
}

thread_local! {
    static SCRATCH: RefCell<Scratch> = RefCell::new(Scratch {
        input: vec![0; INPUT_LEN],
        output: vec![0; OUTPUT_LEN],
    });
}

/// Why the certificate or key could not be used; a start-up error naming the file.
#[derive(Debug, thiserror::Error)]
pub enum TlsSetupError {
    #[error("cannot read TLS certificate {path}: {reason}")]
    Cert { path: String, reason: String },
    #[error("cannot read TLS key {path}: {reason}")]
    Key { path: String, reason: String },
    #[error("TLS certificate and key do not work together: {0}")]
    Config(rustls::Error),
}

/// Load a PEM certificate chain and private key into a server configuration (TLS 1.2 and
/// 1.3, ALPN `http/1.1`, the `ring` provider). TLS 1.3 resumption is by stateless tickets
/// (`Ticketer`: AEAD under a key rotated every 6 hours, nothing kept per session), so a
/// reconnect storm after a deploy or a network blip skips the certificate signature.
pub fn load_config(cert_path: &Path, key_path: &Path) -> Result<Arc<ServerConfig>, TlsSetupError> {
    let cert_err = |reason: String| TlsSetupError::Cert {
        path: cert_path.display().to_string(),
        reason,
    };
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert_path)
        .map_err(|e| cert_err(e.to_string()))?
        .collect::<Result<_, _>>()
        .map_err(|e| cert_err(e.to_string()))?;
    if certs.is_empty() {
        return Err(cert_err("no PEM certificate found".into()));
    }
    let key = PrivateKeyDer::from_pem_file(key_path).map_err(|e| TlsSetupError::Key {
        path: key_path.display().to_string(),
        reason: e.to_string(),
    })?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(TlsSetupError::Config)?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(TlsSetupError::Config)?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    config.ticketer = rustls::crypto::ring::Ticketer::new().map_err(TlsSetupError::Config)?;
    // One ticket per connection: a browser reconnects once per connection lost, and every
    // ticket costs an encryption in the handshake and bytes on the wire.
    config.send_tls13_tickets = 1;
    Ok(Arc::new(config))
}

/// One `wss://` connection's TLS state: the rustls session and the bytes in flight.
pub struct Session {
    conn: UnbufferedServerConnection,
    /// Ciphertext received but not processed yet: an incomplete record (or handshake
    /// message), or records left when the plaintext buffer was full. Empty, unallocated,
    /// between messages.
    unread: Vec<u8>,
    /// Ciphertext the socket refused. Empty, unallocated, unless the socket is full.
    unsent: Vec<u8>,
    /// The peer's close_notify or EOF was seen: reads return end of stream.
    ended: bool,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("handshaking", &self.conn.is_handshaking())
            .field("unread", &self.unread.len())
            .field("unsent", &self.unsent.len())
            .field("ended", &self.ended)
            .finish()
    }
}

/// A new server-side session.
pub fn new_session(config: &Arc<ServerConfig>) -> Result<Box<Session>, rustls::Error> {
    Ok(Box::new(Session {
        conn: UnbufferedServerConnection::new(config.clone())?,
        unread: Vec::new(),
        unsent: Vec::new(),
        ended: false,
    }))
}

fn invalid(e: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, e)
}

impl Session {
    pub fn is_handshaking(&self) -> bool {
        self.conn.is_handshaking()
    }

    /// The handshake resumed an earlier session (a TLS 1.3 ticket): no certificate signature.
    pub fn resumed(&self) -> bool {
        self.conn.handshake_kind() == Some(HandshakeKind::Resumed)
    }

    /// Ciphertext is waiting for the socket to take it.
    pub fn wants_write(&self) -> bool {
        !self.unsent.is_empty()
    }

    /// Read plaintext into `plain` (at least one record's worth long): decrypt what is held
    /// and what the socket has until some plaintext is available. `Ok(0)` is the end of the
    /// stream (close_notify or EOF); `WouldBlock` means the socket is drained. Handshake
    /// records rustls wants to send in reply are written on the way.
    pub fn read(&mut self, socket: &mut impl Socket, plain: &mut [u8]) -> io::Result<usize> {
        debug_assert!(plain.len() >= MAX_RECORD_PLAIN);
        if self.ended {
            return Ok(0);
        }
        SCRATCH.with_borrow_mut(|scratch| {
            let held = self.unread.len();
            scratch.input[..held].copy_from_slice(&self.unread);
            self.unread = Vec::new();
            let mut span = (0, held);
            let result = self.read_held(socket, scratch, &mut span, plain);
            let (start, end) = span;
            if start < end {
                self.unread = scratch.input[start..end].to_vec();
            }
            result
        })
    }

    /// [`Session::read`] over `scratch.input[span]`, which it moves on as records are used.
    fn read_held(
        &mut self,
        socket: &mut impl Socket,
        scratch: &mut Scratch,
        span: &mut (usize, usize),
        plain: &mut [u8],
    ) -> io::Result<usize> {
        let mut filled = 0;
        loop {
            // Every complete record held: decrypt, answer the handshake, note the end.
            let mut encoded = 0;
            let mut steps = 0;
            while plain.len() - filled >= MAX_RECORD_PLAIN {
                let (start, end) = *span;
                let status = self
                    .conn
                    .process_tls_records(&mut scratch.input[start..end]);
                let discard = status.discard;
                let more = match status.state {
                    Err(e) => {
                        span.0 += discard;
                        self.send_alert(socket, &mut scratch.output);
                        return Err(invalid(e));
                    }
                    Ok(ConnectionState::ReadTraffic(mut traffic)) => {
                        while let Some(record) = traffic.next_record() {
                            let payload = record.map_err(invalid)?.payload;
                            plain[filled..filled + payload.len()].copy_from_slice(payload);
                            filled += payload.len();
                        }
                        true
                    }
                    Ok(ConnectionState::EncodeTlsData(mut data)) => {
                        encoded += data
                            .encode(&mut scratch.output[encoded..])
                            .map_err(io::Error::other)?;
                        true
                    }
                    Ok(ConnectionState::TransmitTlsData(transmit)) => {
                        send(&mut self.unsent, socket, &scratch.output[..encoded])?;
                        encoded = 0;
                        transmit.done();
                        true
                    }
                    Ok(ConnectionState::PeerClosed | ConnectionState::Closed) => {
                        self.ended = true;
                        false
                    }
                    // Every complete record is used: the rest needs more bytes.
                    Ok(ConnectionState::BlockedHandshake | ConnectionState::WriteTraffic(_)) => {
                        false
                    }
                    // 0-RTT is not enabled; nothing else is expected of a server session.
                    Ok(other) => return Err(io::Error::other(format!("TLS state {other:?}"))),
                };
                span.0 += discard;
                // Each step uses input or output rustls holds; the bound only guards the loop.
                steps += 1;
                if !more || steps > INPUT_LEN {
                    break;
                }
            }
            if filled > 0 {
                return Ok(filled);
            }
            if self.ended {
                return Ok(0);
            }
            // Need more ciphertext: keep what is held at the front and read behind it.
            let (start, end) = *span;
            scratch.input.copy_within(start..end, 0);
            *span = (0, end - start);
            if span.1 == scratch.input.len() {
                return Err(invalid("TLS handshake message too large"));
            }
            match socket.read(&mut scratch.input[span.1..]) {
                Ok(0) => {
                    self.ended = true;
                    return Ok(0);
                }
                Ok(n) => span.1 += n,
                Err(e) => return Err(e), // WouldBlock: drained
            }
        }
    }

    /// Encrypt plaintext and write it, [`PLAIN_BATCH`] at a time, until all is taken or the
    /// socket is full. A short count therefore means "wait for writable", as on a plain
    /// socket; `WouldBlock` when nothing could be taken (ciphertext from before still waits).
    pub fn write_vectored(
        &mut self,
        socket: &mut impl Socket,
        bufs: &[IoSlice<'_>],
    ) -> io::Result<usize> {
        let total: usize = bufs.iter().map(|b| b.len()).sum();
        let mut accepted = 0;
        while accepted < total && self.flush(socket)? {
            let taken = SCRATCH.with_borrow_mut(|scratch| {
                let (taken, used) = self.encrypt(bufs, accepted, &mut scratch.output)?;
                send(&mut self.unsent, socket, &scratch.output[..used])?;
                Ok::<_, io::Error>(taken)
            })?;
            if taken == 0 {
                break; // still handshaking
            }
            accepted += taken;
        }
        if accepted == 0 && total > 0 {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        Ok(accepted)
    }

    /// Encrypt up to [`PLAIN_BATCH`] of the plaintext in `bufs` after its first `skip` bytes
    /// into `output`, behind any handshake records rustls has queued (a ticket). Returns the
    /// plaintext taken and the ciphertext length.
    fn encrypt(
        &mut self,
        bufs: &[IoSlice<'_>],
        mut skip: usize,
        output: &mut [u8],
    ) -> io::Result<(usize, usize)> {
        let mut used = 0;
        let mut taken = 0;
        for _ in 0..STEPS {
            let mut no_input: [u8; 0] = [];
            match self.conn.process_tls_records(&mut no_input).state {
                Ok(ConnectionState::WriteTraffic(mut traffic)) => {
                    for buf in bufs {
                        let Some(rest) = buf.get(skip..) else {
                            skip -= buf.len();
                            continue;
                        };
                        skip = 0;
                        for piece in rest.chunks(MAX_RECORD_PLAIN) {
                            let take = piece.len().min(PLAIN_BATCH - taken);
                            if take == 0 {
                                return Ok((taken, used));
                            }
                            match traffic.encrypt(&piece[..take], &mut output[used..]) {
                                Ok(n) => {
                                    used += n;
                                    taken += take;
                                }
                                Err(EncryptError::InsufficientSize(_)) => return Ok((taken, used)),
                                Err(e) => return Err(io::Error::other(e)),
                            }
                        }
                    }
                    return Ok((taken, used));
                }
                Ok(ConnectionState::EncodeTlsData(mut data)) => {
                    used += data.encode(&mut output[used..]).map_err(io::Error::other)?;
                }
                // Sent by the caller, in order, right after.
                Ok(ConnectionState::TransmitTlsData(transmit)) => transmit.done(),
                Ok(ConnectionState::PeerClosed) => {}
                // Still handshaking: nothing may be sent yet.
                Ok(ConnectionState::BlockedHandshake) => break,
                Ok(other) => return Err(io::Error::other(format!("TLS state {other:?}"))),
                Err(e) => return Err(invalid(e)),
            }
        }
        Ok((taken, used))
    }

    /// Write the ciphertext the socket refused before. Returns true when nothing is left.
    pub fn flush(&mut self, socket: &mut impl Socket) -> io::Result<bool> {
        flush(&mut self.unsent, socket)
    }

    /// Send close_notify (best effort: a full socket loses it, the FIN still follows).
    pub fn close(&mut self, socket: &mut impl Socket) {
        SCRATCH.with_borrow_mut(|scratch| {
            let output = &mut scratch.output;
            let mut used = 0;
            for _ in 0..STEPS {
                let mut no_input: [u8; 0] = [];
                match self.conn.process_tls_records(&mut no_input).state {
                    Ok(ConnectionState::WriteTraffic(mut traffic)) => {
                        if let Ok(n) = traffic.queue_close_notify(&mut output[used..]) {
                            used += n;
                        }
                        break;
                    }
                    Ok(ConnectionState::EncodeTlsData(mut data)) => {
                        match data.encode(&mut output[used..]) {
                            Ok(n) => used += n,
                            Err(_) => break,
                        }
                    }
                    Ok(ConnectionState::TransmitTlsData(transmit)) => transmit.done(),
                    Ok(ConnectionState::PeerClosed) => {}
                    _ => break,
                }
            }
            let _ = send(&mut self.unsent, socket, &output[..used]);
        });
    }

    /// After a failure: send the alert rustls queued for it (best effort).
    fn send_alert(&mut self, socket: &mut impl Socket, output: &mut [u8]) {
        let mut used = 0;
        for _ in 0..STEPS {
            let mut no_input: [u8; 0] = [];
            match self.conn.process_tls_records(&mut no_input).state {
                Ok(ConnectionState::EncodeTlsData(mut data)) => {
                    match data.encode(&mut output[used..]) {
                        Ok(n) => used += n,
                        Err(_) => break,
                    }
                }
                _ => break,
            }
        }
        let _ = send(&mut self.unsent, socket, &output[..used]);
    }
}

/// What a session reads ciphertext from and writes it to: the connection's socket
/// (non-blocking: `WouldBlock` when empty or full), or memory in the fuzz harness.
pub trait Socket: Read + Write {}

impl<S: Read + Write> Socket for S {}

/// Write `unsent`, the ciphertext the socket refused before. Returns true when nothing is
/// left.
fn flush(unsent: &mut Vec<u8>, socket: &mut impl Socket) -> io::Result<bool> {
    if unsent.is_empty() {
        return Ok(true);
    }
    let written = write_some(socket, unsent)?;
    if written == unsent.len() {
        *unsent = Vec::new(); // give the burst's memory back
        Ok(true)
    } else {
        unsent.drain(..written);
        Ok(false)
    }
}

/// Write `bytes` after anything still `unsent`; what the socket refuses joins `unsent`, in
/// order. A free function so it can run while rustls's state borrows the session.
fn send(unsent: &mut Vec<u8>, socket: &mut impl Socket, bytes: &[u8]) -> io::Result<()> {
    if bytes.is_empty() {
        return Ok(());
    }
    let written = if flush(unsent, socket)? {
        write_some(socket, bytes)?
    } else {
        0
    };
    unsent.extend_from_slice(&bytes[written..]);
    Ok(())
}

/// Write until done or the socket is full; the count written.
fn write_some(socket: &mut impl Socket, bytes: &[u8]) -> io::Result<usize> {
    let mut written = 0;
    while written < bytes.len() {
        match socket.write(&bytes[written..]) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => written += n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(written)
}
