//! A small threaded broadcast server for the loadtest's tests, over plain TCP or TLS (see
//! [`crate::tls::TestCert::server_config`]): every data message goes to every connection on
//! the same path, the sender included, and [`Counts`] says what it saw.

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;

use rustls::{ServerConfig, ServerConnection};
use tungstenite::handshake::server::{Request, Response};
use tungstenite::protocol::Role;
use tungstenite::WebSocket;

/// One TLS session used from two threads: the reader blocks on the socket without holding the
/// lock, so the writers of other connections' broadcasts are never held up by it.
pub struct Session {
    tls: ServerConnection,
    /// Write half of the socket.
    out: TcpStream,
}

impl Session {
    /// Writes every queued TLS record (blocking).
    fn write_records(&mut self) -> io::Result<()> {
        while self.tls.wants_write() {
            self.tls.write_tls(&mut self.out)?;
        }
        Ok(())
    }
}

/// A blocking stream over a shared [`Session`]: `Read` on the reader thread, `Write` anywhere.
pub struct TlsHalf {
    session: Arc<Mutex<Session>>,
    /// Read half of the socket (unused by writer halves).
    input: TcpStream,
    /// Decrypted bytes not yet handed out.
    plain: Vec<u8>,
    plain_pos: usize,
}

impl TlsHalf {
    /// Moves what rustls decrypted into `plain`; false at the end of the stream.
    fn take_plaintext(&mut self, s: &mut Session) -> io::Result<bool> {
        let mut chunk = [0u8; 4096];
        loop {
            match s.tls.reader().read(&mut chunk) {
                Ok(0) => return Ok(false),
                Ok(k) => self.plain.extend_from_slice(&chunk[..k]),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(true),
                Err(e) => return Err(e),
            }
        }
    }
}

impl Read for TlsHalf {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let mut raw = [0u8; 16 * 1024];
        // Bounded: each round reads from the socket, which ends in data or EOF.
        while self.plain_pos == self.plain.len() {
            self.plain.clear();
            self.plain_pos = 0;
            let session = self.session.clone();
            // Plaintext may have come with the handshake's last flight.
            let open = self.take_plaintext(&mut session.lock().expect("lock"))?;
            if !self.plain.is_empty() {
                break;
            }
            if !open {
                return Ok(0);
            }
            let n = self.input.read(&mut raw)?;
            if n == 0 {
                return Ok(0);
            }
            let mut s = session.lock().expect("lock");
            let mut rest = &raw[..n];
            while !rest.is_empty() {
                s.tls.read_tls(&mut rest)?;
                s.tls.process_new_packets().map_err(io::Error::other)?;
                self.take_plaintext(&mut s)?;
            }
            s.write_records()?;
        }
        let n = buf.len().min(self.plain.len() - self.plain_pos);
        buf[..n].copy_from_slice(&self.plain[self.plain_pos..self.plain_pos + n]);
        self.plain_pos += n;
        Ok(n)
    }
}

impl Write for TlsHalf {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let mut s = self.session.lock().expect("lock");
        let n = s.tls.writer().write(buf)?;
        s.write_records()?;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.session.lock().expect("lock").write_records()
    }
}

/// The stream a test-server connection runs on.
pub enum Half {
    Plain(TcpStream),
    Tls(TlsHalf),
}

impl Read for Half {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Half::Plain(s) => s.read(buf),
            Half::Tls(t) => t.read(buf),
        }
    }
}

impl Write for Half {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Half::Plain(s) => s.write(buf),
            Half::Tls(t) => t.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Half::Plain(s) => s.flush(),
            Half::Tls(t) => t.flush(),
        }
    }
}

/// Completes the TLS handshake (if `tls`) and returns a reader half and a writer half.
pub fn halves(stream: TcpStream, tls: Option<&Arc<ServerConfig>>) -> io::Result<(Half, Half)> {
    let Some(config) = tls else {
        let w = stream.try_clone()?;
        return Ok((Half::Plain(stream), Half::Plain(w)));
    };
    let mut conn = ServerConnection::new(config.clone()).map_err(io::Error::other)?;
    let mut sock = stream;
    // Bounded: the client finishes the handshake or closes (then complete_io fails).
    while conn.is_handshaking() {
        conn.complete_io(&mut sock)?;
    }
    let out = sock.try_clone()?;
    let input2 = sock.try_clone()?;
    let session = Arc::new(Mutex::new(Session { tls: conn, out }));
    let half = |input| {
        Half::Tls(TlsHalf {
            session: session.clone(),
            input,
            plain: Vec::new(),
            plain_pos: 0,
        })
    };
    Ok((half(sock), half(input2)))
}

pub type Writer = Arc<Mutex<WebSocket<Half>>>;
/// Members of each topic (URL path): connection id and its write half.
pub type Topics = Arc<Mutex<HashMap<String, Vec<(u64, Writer)>>>>;

/// What the test server saw.
#[derive(Default)]
pub struct Counts {
    /// Data messages received from clients.
    pub received: AtomicU64,
    /// Data messages written to clients.
    pub delivered: AtomicU64,
    /// Upgrades completed.
    pub upgrades: AtomicU64,
}

/// A threaded broadcast server over TLS (or plain TCP when `tls` is None): every data message
/// goes to every connection on the same path, the sender included.
pub fn broadcast_server(tls: Option<Arc<ServerConfig>>) -> (u16, Arc<Counts>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let counts = Arc::new(Counts::default());
    let topics: Topics = Arc::default();
    let c = counts.clone();
    thread::spawn(move || {
        for (id, stream) in listener.incoming().enumerate() {
            let Ok(stream) = stream else { continue };
            let topics = topics.clone();
            let counts = c.clone();
            let tls = tls.clone();
            thread::spawn(move || serve(id as u64, stream, tls, topics, counts));
        }
    });
    (port, counts)
}

pub fn serve(
    id: u64,
    stream: TcpStream,
    tls: Option<Arc<ServerConfig>>,
    topics: Topics,
    counts: Arc<Counts>,
) {
    let _ = stream.set_nodelay(true);
    let Ok((read_half, write_half)) = halves(stream, tls.as_ref()) else {
        return;
    };
    let mut path = String::new();
    #[allow(clippy::result_large_err)] // the callback signature is tungstenite's
    let cb = |req: &Request, resp: Response| {
        path = req.uri().path().to_string();
        Ok(resp)
    };
    let Ok(mut reader) = tungstenite::accept_hdr(read_half, cb) else {
        return;
    };
    let writer: Writer = Arc::new(Mutex::new(WebSocket::from_raw_socket(
        write_half,
        Role::Server,
        None,
    )));
    counts.upgrades.fetch_add(1, Ordering::SeqCst);
    topics
        .lock()
        .expect("lock")
        .entry(path.clone())
        .or_default()
        .push((id, writer));
    while let Ok(msg) = reader.read() {
        if !(msg.is_binary() || msg.is_text()) {
            continue;
        }
        counts.received.fetch_add(1, Ordering::SeqCst);
        let members: Vec<Writer> = topics.lock().expect("lock")[&path]
            .iter()
            .map(|(_, w)| w.clone())
            .collect();
        for w in members {
            if w.lock().expect("lock").send(msg.clone()).is_ok() {
                counts.delivered.fetch_add(1, Ordering::SeqCst);
            }
        }
    }
    let mut t = topics.lock().expect("lock");
    if let Some(v) = t.get_mut(&path) {
        v.retain(|(i, _)| *i != id);
    }
}
