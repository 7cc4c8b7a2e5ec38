//! TLS for `wss://` targets: the rustls client configuration, a non-blocking TLS stream for the
//! `mio` loops, the blocking handshake of the preflight probe, and names for TLS failures.
//!
//! rustls does no I/O of its own, which is what lets it run inside the edge-triggered event
//! loops without threads or a runtime: bytes read from the socket go in through `read_tls` and
//! `process_new_packets`, plaintext comes out of `reader()`, and plaintext put into `writer()`
//! leaves through `write_tls`.

use std::io::{self, Read, Write};
use std::sync::Arc;

use mio::net::TcpStream;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::Resumption;
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{
    ClientConfig, ClientConnection, DigitallySignedStruct, RootCertStore, SignatureScheme,
};

/// The client configuration shared by every TLS connection of a process.
///
/// By default the server's certificate is checked against the system's trust store (so a local
/// CA such as mkcert's is trusted, as a browser would trust it); `insecure` accepts any
/// certificate, for the self-signed ones test servers use. Session resumption is off: each
/// connection stands for a different browser, so each pays for a full handshake.
pub fn client_config(insecure: bool) -> Result<Arc<ClientConfig>, String> {
    // Named explicitly rather than taken from the process default, which is ambiguous when
    // another crate in the build enables a second provider.
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS setup failed: {e}"))?;
    let mut config = if insecure {
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AcceptAnyServerCert { provider }))
            .with_no_client_auth()
    } else {
        builder
            .with_root_certificates(system_roots())
            .with_no_client_auth()
    };
    config.resumption = Resumption::disabled();
    Ok(Arc::new(config))
}

/// The system's trusted roots. Unreadable or unparsable entries are skipped: with no roots at
/// all every certificate fails as `UnknownIssuer`, which the error message explains.
fn system_roots() -> RootCertStore {
    let mut roots = RootCertStore::empty();
    let found = rustls_native_certs::load_native_certs();
    roots.add_parsable_certificates(found.certs);
    roots
}

/// The certificate verifier of `--insecure`: it accepts any server certificate (self-signed,
/// expired, for another name), and nothing else can select it. The handshake signatures are
/// still verified with the provider's algorithms, so the peer must hold the key of the
/// certificate it presented and the session keys are sound; only the identity goes unchecked.
#[derive(Debug)]
struct AcceptAnyServerCert {
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for AcceptAnyServerCert {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// The TLS server name for a URL host: an IP address for `127.0.0.1` or `::1` (sent without
/// SNI, checked against the certificate's IP entries), a DNS name for `localhost`.
fn server_name(host: &str) -> Result<ServerName<'static>, String> {
    ServerName::try_from(host.to_string())
        .map_err(|e| format!("{host:?} is not usable as a TLS server name: {e}"))
}

/// A TLS failure carried inside an `io::Error`, remembering whether the handshake was still
/// going, so that reports can name it (see [`failure_kind`]).
#[derive(Debug)]
pub struct TlsFailure {
    /// What rustls rejected.
    pub error: rustls::Error,
    /// Whether it happened during the handshake.
    pub handshaking: bool,
}

impl std::fmt::Display for TlsFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.handshaking {
            write!(f, "TLS handshake failed: {}", self.error)
        } else {
            write!(f, "TLS error: {}", self.error)
        }
    }
}

impl std::error::Error for TlsFailure {}

/// Report name of an I/O error that is a TLS failure: `tls_cert` (the certificate was
/// rejected), `tls_handshake` (any other handshake failure) or `tls_protocol` (after it).
pub fn failure_kind(e: &io::Error) -> Option<&'static str> {
    let f = e.get_ref()?.downcast_ref::<TlsFailure>()?;
    Some(match (&f.error, f.handshaking) {
        (rustls::Error::InvalidCertificate(_), _) => "tls_cert",
        (_, true) => "tls_handshake",
        (_, false) => "tls_protocol",
    })
}

/// A hint for the user after a TLS error message, if one helps.
fn hint(e: &rustls::Error) -> &'static str {
    match e {
        rustls::Error::InvalidCertificate(_) => " (use --insecure for a self-signed certificate)",
        rustls::Error::InvalidMessage(_) => " (is the server speaking TLS on that port?)",
        _ => "",
    }
}

/// One `wss://` connection: a non-blocking socket with a rustls client session on top.
///
/// `Read` yields plaintext and `Write` takes plaintext; both do the socket I/O the session
/// needs (handshake included) as a side effect, and report `WouldBlock` like a socket does.
pub struct TlsStream {
    /// The socket, registered with the event loop.
    pub sock: TcpStream,
    /// The TLS session.
    conn: ClientConnection,
}

impl TlsStream {
    /// Starts a session over `sock` (whose connect may still be in progress): the ClientHello
    /// is queued and goes out with the first write or flush.
    pub fn new(sock: TcpStream, config: &Arc<ClientConfig>, host: &str) -> Result<Self, String> {
        let name = server_name(host)?;
        let conn = ClientConnection::new(config.clone(), name).map_err(|e| e.to_string())?;
        Ok(TlsStream { sock, conn })
    }

    /// Whether the TLS handshake is still going.
    pub fn is_handshaking(&self) -> bool {
        self.conn.is_handshaking()
    }

    /// Whether encrypted records are waiting for room in the socket.
    pub fn pending(&self) -> bool {
        self.conn.wants_write()
    }

    /// Writes waiting records until done or the socket is full (`WouldBlock` is not an error
    /// here: the next writable event resumes).
    pub fn flush_tls(&mut self) -> io::Result<()> {
        match self.write_pending() {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(()),
            r => r,
        }
    }

    /// Writes waiting records; `WouldBlock` when the socket filled up first.
    fn write_pending(&mut self) -> io::Result<()> {
        // Bounded: each iteration writes at least one byte or returns.
        while self.conn.wants_write() {
            match self.conn.write_tls(&mut self.sock) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Sends close_notify, best effort: the WebSocket close handshake is already done.
    pub fn close_notify(&mut self) {
        self.conn.send_close_notify();
        let _ = self.flush_tls();
    }

    /// Turns a rejected record into an I/O error, after trying to send the alert rustls queued
    /// to tell the server why.
    fn fail(&mut self, error: rustls::Error) -> io::Error {
        let handshaking = self.conn.is_handshaking();
        let _ = self.flush_tls();
        io::Error::new(
            io::ErrorKind::InvalidData,
            TlsFailure { error, handshaking },
        )
    }
}

impl Read for TlsStream {
    /// Fills `buf` with plaintext until it is full or the socket has nothing more, so a short
    /// read means "drained" exactly as it does on a plain socket: the caller relies on that
    /// under edge-triggered polling, and one TLS record is often smaller than `buf`.
    ///
    /// The end of the stream is `Ok(0)` whether or not the server sent close_notify: the
    /// WebSocket close handshake already tells a complete stream from a cut one.
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let mut filled = 0;
        // Bounded: each round reads from the socket, which ends in WouldBlock or EOF, or
        // fills `buf`.
        loop {
            while filled < buf.len() {
                match self.conn.reader().read(&mut buf[filled..]) {
                    Ok(0) => return Ok(filled),
                    Ok(n) => filled += n,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(filled),
                    Err(e) => return Err(e),
                }
            }
            if filled == buf.len() {
                return Ok(filled);
            }
            // The decrypted plaintext is all taken, so rustls' receive buffer has room.
            match self.conn.read_tls(&mut self.sock) {
                // EOF: recorded by rustls; the reader above reports it after the last data.
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    return if filled > 0 { Ok(filled) } else { Err(e) };
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
            if let Err(e) = self.conn.process_new_packets() {
                return Err(self.fail(e));
            }
            // Handshake messages to answer with, or plaintext queued before it finished.
            self.flush_tls()?;
        }
    }
}

impl Write for TlsStream {
    /// Encrypts what rustls' send buffer takes (64 KiB) and pushes records to the socket;
    /// `WouldBlock` only when both are full. Before the handshake completes the plaintext is
    /// held by rustls and sent as soon as it can be.
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        // Bounded: a second round only follows a complete flush, which frees the buffer.
        for _ in 0..2 {
            let n = self.conn.writer().write(buf)?;
            let full = match self.write_pending() {
                Ok(()) => false,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => true,
                Err(e) => return Err(e),
            };
            if n > 0 {
                return Ok(n);
            }
            if full {
                break;
            }
        }
        Err(io::ErrorKind::WouldBlock.into())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.flush_tls()
    }
}

/// Completes a TLS handshake over a blocking socket (whose timeouts bound it), for the
/// preflight probe, with a message for the user on failure.
pub fn blocking_handshake(
    config: &Arc<ClientConfig>,
    host: &str,
    mut sock: std::net::TcpStream,
) -> Result<rustls::StreamOwned<ClientConnection, std::net::TcpStream>, String> {
    let name = server_name(host)?;
    let mut conn = ClientConnection::new(config.clone(), name)
        .map_err(|e| format!("TLS setup failed: {e}"))?;
    let io_err = |e: io::Error| match e.kind() {
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => {
            "TLS handshake failed: no answer from the server in time".to_string()
        }
        _ => format!("TLS handshake failed: {e}"),
    };
    // Bounded by the socket timeouts: every round blocks on a read or a write.
    while conn.is_handshaking() {
        while conn.wants_write() {
            conn.write_tls(&mut sock).map_err(io_err)?;
        }
        if !conn.is_handshaking() {
            break;
        }
        if conn.read_tls(&mut sock).map_err(io_err)? == 0 {
            return Err(
                "TLS handshake failed: the server closed the connection (is it a \
                        wss:// server?)"
                    .into(),
            );
        }
        if let Err(e) = conn.process_new_packets() {
            // Tell the server why, as a browser would.
            let _ = conn.write_tls(&mut sock);
            return Err(format!("TLS handshake failed: {e}{}", hint(&e)));
        }
    }
    Ok(rustls::StreamOwned::new(conn, sock))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_names() {
        assert!(matches!(
            server_name("127.0.0.1"),
            Ok(ServerName::IpAddress(_))
        ));
        assert!(matches!(server_name("::1"), Ok(ServerName::IpAddress(_))));
        assert!(matches!(
            server_name("localhost"),
            Ok(ServerName::DnsName(_))
        ));
    }

    #[test]
    fn failure_kinds() {
        let cert = rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer);
        let e = io::Error::new(
            io::ErrorKind::InvalidData,
            TlsFailure {
                error: cert.clone(),
                handshaking: true,
            },
        );
        assert_eq!(failure_kind(&e), Some("tls_cert"));
        assert!(e.to_string().contains("UnknownIssuer"));
        assert!(hint(&cert).contains("--insecure"));
        let e = io::Error::new(
            io::ErrorKind::InvalidData,
            TlsFailure {
                error: rustls::Error::DecryptError,
                handshaking: false,
            },
        );
        assert_eq!(failure_kind(&e), Some("tls_protocol"));
        assert_eq!(failure_kind(&io::Error::other("x")), None);
    }

    #[test]
    fn configs_build() {
        assert!(client_config(true).is_ok());
        assert!(client_config(false).is_ok());
    }
}
