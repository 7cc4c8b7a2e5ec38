//! The byte stream under a WebSocket connection: plain TCP for `ws://`, TLS over TCP for
//! `wss://`.
//!
//! An enum rather than a trait object, so a plain connection pays one predictable branch per
//! read or write and nothing else: no extra copy, allocation or indirection. The TLS session is
//! boxed to keep plain connections small.

use std::io::{self, Read, Write};
use std::sync::Arc;

use mio::net::TcpStream;
use rustls::ClientConfig;

use super::tls::TlsStream;
use crate::target::Target;

/// A connection's stream.
pub enum Transport {
    /// `ws://`.
    Plain(TcpStream),
    /// `wss://`.
    Tls(Box<TlsStream>),
}

impl Transport {
    /// The stream for `target` over a socket whose connect has started; `tls` is the client
    /// configuration, present whenever a target is `wss://`. `Err` is an error kind.
    pub fn new(
        sock: TcpStream,
        target: &Target,
        tls: Option<&Arc<ClientConfig>>,
    ) -> Result<Transport, String> {
        if !target.tls {
            return Ok(Transport::Plain(sock));
        }
        let config = tls.ok_or("tls_setup")?;
        let stream = TlsStream::new(sock, config, &target.host).map_err(|_| "tls_setup")?;
        Ok(Transport::Tls(Box::new(stream)))
    }

    /// The socket, for readiness registration and connect status.
    pub fn socket(&self) -> &TcpStream {
        match self {
            Transport::Plain(s) => s,
            Transport::Tls(t) => &t.sock,
        }
    }

    /// The socket, mutably (registration wants `&mut`).
    pub fn socket_mut(&mut self) -> &mut TcpStream {
        match self {
            Transport::Plain(s) => s,
            Transport::Tls(t) => &mut t.sock,
        }
    }

    /// Whether output is waiting below the caller's own buffer (encrypted TLS records).
    #[inline]
    pub fn pending(&self) -> bool {
        match self {
            Transport::Plain(_) => false,
            Transport::Tls(t) => t.pending(),
        }
    }

    /// Pushes that output on; `WouldBlock` is not an error.
    #[inline]
    pub fn flush_pending(&mut self) -> io::Result<()> {
        match self {
            Transport::Plain(_) => Ok(()),
            Transport::Tls(t) => t.flush_tls(),
        }
    }

    /// Whether a TLS handshake is still going (never for plain TCP).
    pub fn is_handshaking(&self) -> bool {
        match self {
            Transport::Plain(_) => false,
            Transport::Tls(t) => t.is_handshaking(),
        }
    }

    /// Ends the TLS session politely once the WebSocket is closed (nothing for plain TCP).
    pub fn close_notify(&mut self) {
        if let Transport::Tls(t) = self {
            t.close_notify();
        }
    }
}

impl Read for Transport {
    #[inline]
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Transport::Plain(s) => s.read(buf),
            Transport::Tls(t) => t.read(buf),
        }
    }
}

impl Write for Transport {
    #[inline]
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Transport::Plain(s) => s.write(buf),
            Transport::Tls(t) => t.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Transport::Plain(s) => s.flush(),
            Transport::Tls(t) => t.flush(),
        }
    }
}
