//! A self-signed certificate for tests ([`TestCert`], made with `rcgen` for `localhost` and
//! `127.0.0.1`), written as PEM files for the server, with the rustls client and server
//! configurations that use it and a `wss://` client ([`connect_wss`]) that trusts only it.

use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::sync::Arc;

use rustls::{ClientConfig, ClientConnection, RootCertStore, ServerConfig, StreamOwned};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use tungstenite::WebSocket;

use crate::temp::TempDir;
use crate::IO_TIMEOUT;

/// A self-signed certificate for `localhost` and `127.0.0.1`, written as PEM files (removed
/// on drop).
pub struct TestCert {
    pub cert_pem: PathBuf,
    pub key_pem: PathBuf,
    pub cert_der: CertificateDer<'static>,
    key_der: PrivatePkcs8KeyDer<'static>,
    _dir: TempDir,
}

impl TestCert {
    pub fn generate() -> TestCert {
        let dir = TempDir::new("tls");
        let ck = rcgen::generate_simple_self_signed(vec![
            "localhost".to_string(),
            "127.0.0.1".to_string(),
        ])
        .expect("rcgen: self-signed certificate");
        let cert_pem = dir.path().join("cert.pem");
        let key_pem = dir.path().join("key.pem");
        std::fs::write(&cert_pem, ck.cert.pem()).expect("write cert.pem");
        std::fs::write(&key_pem, ck.signing_key.serialize_pem()).expect("write key.pem");
        TestCert {
            cert_pem,
            key_pem,
            cert_der: ck.cert.der().clone(),
            key_der: PrivatePkcs8KeyDer::from(ck.signing_key.serialize_der()),
            _dir: dir,
        }
    }

    /// `--tls-cert` and `--tls-key` values for the server.
    pub fn cert_arg(&self) -> String {
        self.cert_pem.display().to_string()
    }

    pub fn key_arg(&self) -> String {
        self.key_pem.display().to_string()
    }

    /// A rustls client configuration trusting only this certificate.
    pub fn client_config(&self) -> Arc<ClientConfig> {
        let mut roots = RootCertStore::empty();
        roots
            .add(self.cert_der.clone())
            .expect("the test certificate as a root");
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("TLS versions")
            .with_root_certificates(roots)
            .with_no_client_auth();
        Arc::new(config)
    }

    /// A rustls server configuration presenting this certificate.
    pub fn server_config(&self) -> Arc<ServerConfig> {
        let key = PrivateKeyDer::Pkcs8(self.key_der.clone_key());
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("TLS versions")
            .with_no_client_auth()
            .with_single_cert(vec![self.cert_der.clone()], key)
            .expect("server config");
        Arc::new(config)
    }
}

pub type TlsWs = WebSocket<StreamOwned<ClientConnection, TcpStream>>;

/// A tungstenite client over rustls to `wss://localhost:PORT/TOPIC`, trusting only `cert`,
/// with [`IO_TIMEOUT`] on reads and writes. The TLS handshake is finished first, so that a
/// TLS failure reads as one.
pub fn connect_wss(addr: SocketAddr, topic: &str, cert: &TestCert) -> TlsWs {
    let name = ServerName::try_from("localhost").unwrap();
    let conn = ClientConnection::new(cert.client_config(), name).expect("TLS client");
    let tcp = TcpStream::connect(addr).unwrap_or_else(|e| panic!("TCP connect {addr}: {e}"));
    tcp.set_nodelay(true).unwrap();
    tcp.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    tcp.set_write_timeout(Some(IO_TIMEOUT)).unwrap();
    let mut stream = StreamOwned::new(conn, tcp);
    while stream.conn.is_handshaking() {
        stream
            .conn
            .complete_io(&mut stream.sock)
            .unwrap_or_else(|e| panic!("TLS handshake with {addr}: {e}"));
    }
    let url = format!("wss://localhost:{}/{topic}", addr.port());
    match tungstenite::client(url.as_str(), stream) {
        Ok((ws, response)) => {
            assert_eq!(response.status().as_u16(), 101);
            ws
        }
        Err(e) => panic!("WebSocket handshake over TLS to /{topic}: {e}"),
    }
}
