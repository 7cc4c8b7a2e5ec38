//! `wss://`: rustls driven inside the worker's event loop, without threads or a runtime.
//! A TLS connection keeps a `rustls::ServerConnection`; bytes pass through it on the way in
//! (ciphertext → plaintext into the worker's scratch buffer) and out (plaintext → its
//! bounded send buffer → socket). Plain connections never touch this module.

use std::io::{self, IoSlice, Read, Write};
use std::path::Path;
use std::sync::Arc;

use mio::net::TcpStream;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::{ServerConfig, ServerConnection};

/// Ciphertext and plaintext rustls may buffer per connection before writes report "full"
/// (the rest waits in the connection's own bounded queue, like any refused output).
const TLS_BUFFER_LIMIT: usize = 64 * 1024;

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
/// 1.3, ALPN `http/1.1`, the `ring` provider).
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
    Ok(Arc::new(config))
}

/// A new server-side session with bounded buffers.
pub fn new_session(config: &Arc<ServerConfig>) -> Result<Box<ServerConnection>, rustls::Error> {
    let mut session = ServerConnection::new(config.clone())?;
    session.set_buffer_limit(Some(TLS_BUFFER_LIMIT));
    Ok(Box::new(session))
}

/// Read plaintext: decrypt what the socket has until some plaintext is available.
/// `Ok(0)` is the end of the stream (close_notify or EOF); `WouldBlock` means the socket is
/// drained. Handshake records rustls wants to send in reply are written on the way.
pub fn read(
    tls: &mut ServerConnection,
    socket: &mut TcpStream,
    buf: &mut [u8],
) -> io::Result<usize> {
    loop {
        match tls.reader().read(buf) {
            Ok(n) => return Ok(n),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(e),
        }
        let got = tls.read_tls(socket)?; // WouldBlock propagates: nothing more to decrypt
        let processed = tls.process_new_packets();
        // Send what rustls produced (handshake, or the alert for a failure) either way.
        flush(tls, socket)?;
        if let Err(e) = processed {
            return Err(io::Error::new(io::ErrorKind::InvalidData, e));
        }
        if got == 0 {
            return Ok(0);
        }
    }
}

/// Write plaintext through the session, encrypting and sending until everything is taken
/// or the socket is full. A short count therefore means "wait for writable", as on a plain
/// socket; `WouldBlock` when nothing could be taken at all.
pub fn write_vectored(
    tls: &mut ServerConnection,
    socket: &mut TcpStream,
    bufs: &[IoSlice<'_>],
) -> io::Result<usize> {
    let mut accepted = 0;
    'bufs: for buf in bufs {
        let mut offset = 0;
        while offset < buf.len() {
            if !flush(tls, socket)? {
                break 'bufs; // the socket is full
            }
            // After a complete flush rustls's buffer is empty, so this takes up to its limit.
            let n = tls.writer().write(&buf[offset..])?;
            if n == 0 {
                break 'bufs;
            }
            offset += n;
            accepted += n;
        }
    }
    flush(tls, socket)?;
    if accepted == 0 && bufs.iter().any(|b| !b.is_empty()) {
        return Err(io::ErrorKind::WouldBlock.into());
    }
    Ok(accepted)
}

/// Write encrypted bytes rustls holds until it holds none or the socket is full.
/// Returns true when nothing is left.
pub fn flush(tls: &mut ServerConnection, socket: &mut TcpStream) -> io::Result<bool> {
    while tls.wants_write() {
        match tls.write_tls(socket) {
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(true)
}
