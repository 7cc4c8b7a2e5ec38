//! Shared set-up of the fuzz targets.

use std::path::Path;

/// The TLS pair of `fuzz/tls/`: a self-signed certificate for `localhost` made once with
/// openssl for fuzzing only (its key protects nothing).
pub fn tls_pair() -> herald::fuzz::TlsPair {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tls");
    herald::fuzz::TlsPair::load(&dir.join("cert.pem"), &dir.join("key.pem"))
        .expect("fuzz/tls/cert.pem and key.pem load")
}
