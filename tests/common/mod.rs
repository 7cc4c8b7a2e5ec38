//! Shared helpers for Herald's integration tests.
//!
//! * [`Server`]: a real `herald` process on `127.0.0.1:0`, its stdout read on a thread and
//!   collected into a channel (so the server never blocks on a full pipe), killed on drop.
//! * tungstenite clients ([`connect`], [`recv_data`], [`sync`]) with read timeouts, so a test
//!   fails instead of hanging.
//! * [`RawWs`] + [`frame`]: a raw TCP client doing the upgrade by hand and sending hand-made
//!   masked frames, for the protocol-error cases a real client library refuses to produce.
//! * [`http_request`]: raw HTTP requests for the handshake error cases.
//!
//! Every test crate uses a different subset of these helpers.
#![allow(dead_code)]

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use tungstenite::{Message, WebSocket};

/// The server binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_herald");

/// Read/write timeout on every client socket: long enough for a loaded 2-core machine,
/// short enough that a missing message fails the test instead of hanging it.
pub const IO_TIMEOUT: Duration = Duration::from_secs(10);

/// How long to wait for the server to print its first line.
const START_TIMEOUT: Duration = Duration::from_secs(30);

// ---------------------------------------------------------------------------------------------
// Server process
// ---------------------------------------------------------------------------------------------

/// A running `herald` process. Killed (and reaped) on drop.
pub struct Server {
    child: Child,
    /// The address from the `listening on ws://…` line.
    pub addr: SocketAddr,
    lines: Receiver<String>,
    /// Every stdout line taken from the channel so far (for diagnostics and late checks).
    seen: Vec<String>,
    stderr: Arc<Mutex<Vec<String>>>,
}

impl Server {
    /// Starts `herald --listen 127.0.0.1:0 ARGS…` (plus `--stats-interval 0` unless ARGS
    /// set a stats interval) and waits for its `listening on ws://…` line.
    pub fn start(args: &[&str]) -> Server {
        let mut cmd = Command::new(BIN);
        cmd.args(server_args(args));
        Server::spawn(cmd)
    }

    /// Starts `herald ARGS…` with exactly these arguments (no `--listen` or
    /// `--stats-interval` added: for tests where a config file sets them) and waits for its
    /// `listening on ws://…` line.
    pub fn start_exact(args: &[&str]) -> Server {
        let mut cmd = Command::new(BIN);
        cmd.args(args);
        Server::spawn(cmd)
    }

    /// Like [`Server::start`], but the process starts with the given soft and hard
    /// `RLIMIT_NOFILE` (set by `sh`'s `ulimit` right before it `exec`s the server, so the
    /// child's pid is the server's).
    pub fn start_with_nofile(soft: u64, hard: u64, args: &[&str]) -> Server {
        let mut cmd = Command::new("sh");
        cmd.arg("-c")
            .arg(format!(
                "ulimit -Sn {soft} && ulimit -Hn {hard} && exec \"$0\" \"$@\""
            ))
            .arg(BIN)
            .args(server_args(args));
        Server::spawn(cmd)
    }

    fn spawn(mut cmd: Command) -> Server {
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot spawn {BIN}: {e}"));

        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, lines) = mpsc::channel();
        thread::spawn(move || {
            let mut reader = BufReader::new(stdout);
            let mut buf = Vec::new();
            loop {
                buf.clear();
                match reader.read_until(b'\n', &mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {
                        let line = String::from_utf8_lossy(&buf).trim_end().to_string();
                        // Keep draining even when nobody listens any more.
                        let _ = tx.send(line);
                    }
                }
            }
        });

        let stderr_lines = Arc::new(Mutex::new(Vec::new()));
        let stderr = child.stderr.take().expect("piped stderr");
        let sink = Arc::clone(&stderr_lines);
        thread::spawn(move || {
            let mut reader = BufReader::new(stderr);
            let mut buf = Vec::new();
            loop {
                buf.clear();
                match reader.read_until(b'\n', &mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(_) => sink
                        .lock()
                        .unwrap()
                        .push(String::from_utf8_lossy(&buf).trim_end().to_string()),
                }
            }
        });

        let mut server = Server {
            child,
            addr: "0.0.0.0:0".parse().unwrap(),
            lines,
            seen: Vec::new(),
            stderr: stderr_lines,
        };
        let first = match server.lines.recv_timeout(START_TIMEOUT) {
            Ok(line) => line,
            Err(e) => panic!(
                "herald printed no first line within {START_TIMEOUT:?} ({e:?}); exit: {:?}; stderr:\n{}",
                server.child.try_wait(),
                server.stderr_text()
            ),
        };
        server.seen.push(first.clone());
        let rest = first.strip_prefix("listening on ws://").unwrap_or_else(|| {
            panic!("first stdout line must be `listening on ws://ADDR:PORT`, got {first:?}")
        });
        server.addr = rest
            .parse()
            .unwrap_or_else(|e| panic!("bad address in {first:?}: {e}"));
        assert_eq!(
            server.addr.ip().to_string(),
            "127.0.0.1",
            "listen line: {first:?}"
        );
        assert_ne!(
            server.addr.port(),
            0,
            "listen line must carry the real port: {first:?}"
        );
        server
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// `ws://127.0.0.1:PORT/TOPIC`
    pub fn url(&self, topic: &str) -> String {
        format!("ws://{}/{}", self.addr, topic)
    }

    /// Waits for the next stdout line satisfying `pred` (lines skipped on the way are kept in
    /// [`Server::stdout`]). `None` on timeout or when stdout has ended.
    pub fn wait_line(
        &mut self,
        timeout: Duration,
        mut pred: impl FnMut(&str) -> bool,
    ) -> Option<String> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    self.seen.push(line.clone());
                    if pred(&line) {
                        return Some(line);
                    }
                }
                Err(RecvTimeoutError::Timeout) | Err(RecvTimeoutError::Disconnected) => {
                    return None
                }
            }
        }
    }

    /// Waits for the next stdout line starting with `prefix`.
    pub fn wait_prefix(&mut self, prefix: &str, timeout: Duration) -> Option<String> {
        self.wait_line(timeout, |l| l.starts_with(prefix))
    }

    /// The first stdout line (already read, or arriving within `timeout`) that starts with
    /// `prefix`.
    pub fn line_starting(&mut self, prefix: &str, timeout: Duration) -> Option<String> {
        if let Some(line) = self.seen.iter().find(|l| l.starts_with(prefix)) {
            return Some(line.clone());
        }
        self.wait_prefix(prefix, timeout)
    }

    /// Every stdout line read so far.
    pub fn stdout(&self) -> &[String] {
        &self.seen
    }

    /// Collects stdout lines until the stream ends (process exited) or `timeout` passes.
    /// Returns whether the stream ended.
    pub fn read_stdout_to_end(&mut self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => self.seen.push(line),
                Err(RecvTimeoutError::Disconnected) => return true,
                Err(RecvTimeoutError::Timeout) => return false,
            }
        }
    }

    pub fn stderr_text(&self) -> String {
        self.stderr.lock().unwrap().join("\n")
    }

    /// Sends a signal to the server process.
    pub fn signal(&self, sig: nix::sys::signal::Signal) {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        nix::sys::signal::kill(pid, sig).expect("kill(2) on the server");
    }

    /// Waits for the process to exit. `None` if it is still running after `timeout`.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        self.child.try_wait().expect("try_wait").is_none()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if thread::panicking() {
            // Give the reader threads a moment to collect the tail of the output.
            while let Ok(line) = self.lines.recv_timeout(Duration::from_millis(200)) {
                self.seen.push(line);
            }
            eprintln!(
                "---- herald stdout ----\n{}\n---- herald stderr ----\n{}\n-----------------------",
                self.seen.join("\n"),
                self.stderr_text()
            );
        }
    }
}

fn server_args(args: &[&str]) -> Vec<String> {
    let mut all = vec!["--listen".to_string(), "127.0.0.1:0".to_string()];
    if !args.contains(&"--stats-interval") {
        all.push("--stats-interval".into());
        all.push("0".into());
    }
    all.extend(args.iter().map(|s| s.to_string()));
    all
}

// ---------------------------------------------------------------------------------------------
// Stats lines
// ---------------------------------------------------------------------------------------------

/// The parts of a `stats:` line the tests look at.
#[derive(Debug, Clone)]
pub struct Stats {
    pub conns: u64,
    /// `(worker index, open connections)` from `(w0=A w1=B …)`.
    pub per_worker: Vec<(usize, u64)>,
    pub line: String,
}

/// Parses `stats: … conns=TOTAL (w0=A w1=B …) …`.
pub fn parse_stats(line: &str) -> Option<Stats> {
    if !line.starts_with("stats:") {
        return None;
    }
    let conns = stat_field(line, "conns")?;
    let after = &line[line.find("conns=")?..];
    let open = after.find('(')?;
    let close = after.find(')')?;
    let mut per_worker = Vec::new();
    for item in after[open + 1..close].split_whitespace() {
        let (name, value) = item.split_once('=')?;
        let index = name.strip_prefix('w')?.parse().ok()?;
        per_worker.push((index, value.parse().ok()?));
    }
    Some(Stats {
        conns,
        per_worker,
        line: line.to_string(),
    })
}

/// Table-driven tests collect every failing case, then fail once listing them all.
pub fn assert_all_cases_passed(failures: &[String], total: usize) {
    assert!(
        failures.is_empty(),
        "{} of {} cases failed:\n  {}",
        failures.len(),
        total,
        failures.join("\n  ")
    );
}

/// The number after `NAME=` in a line (`NAME` must start a whitespace-separated word).
pub fn stat_field(line: &str, name: &str) -> Option<u64> {
    let key = format!("{name}=");
    line.split(|c: char| c.is_whitespace() || c == '(' || c == ',')
        .find_map(|word| word.strip_prefix(key.as_str()))
        .map(|rest| {
            rest.chars()
                .take_while(|c| c.is_ascii_digit())
                .collect::<String>()
        })
        .and_then(|digits| digits.parse().ok())
}

// ---------------------------------------------------------------------------------------------
// tungstenite clients
// ---------------------------------------------------------------------------------------------

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

/// Sends a message, panicking with context on failure.
pub fn send(ws: &mut Ws, msg: Message) {
    ws.send(msg).unwrap_or_else(|e| panic!("send failed: {e}"));
}

pub fn send_text(ws: &mut Ws, text: &str) {
    send(ws, Message::text(text));
}

/// Reads the next text or binary message (pings/pongs skipped); panics on close, error or
/// timeout.
pub fn recv_data(ws: &mut Ws) -> Message {
    loop {
        match ws.read() {
            Ok(Message::Ping(_)) | Ok(Message::Pong(_)) | Ok(Message::Frame(_)) => continue,
            Ok(Message::Close(frame)) => panic!("expected a data message, got Close({frame:?})"),
            Ok(msg) => return msg,
            Err(e) if is_timeout(&e) => {
                panic!("expected a data message, none arrived within {IO_TIMEOUT:?}")
            }
            Err(e) => panic!("expected a data message, got error: {e}"),
        }
    }
}

/// Reads the next message, which must be text.
pub fn recv_text(ws: &mut Ws) -> String {
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
pub fn sync(ws: &mut Ws, id: &str) {
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
pub fn recv_data_after_sync(ws: &mut Ws) -> Message {
    loop {
        match recv_data(ws) {
            Message::Text(t) if t.as_str().starts_with("sync:") => continue,
            other => return other,
        }
    }
}

/// Like [`recv_text`], but skips `sync:` messages left over from [`sync`] calls.
pub fn recv_text_after_sync(ws: &mut Ws) -> String {
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
            Err(_) => return, // reset after the close frames: fine
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Raw frames
// ---------------------------------------------------------------------------------------------

pub const OP_CONT: u8 = 0x0;
pub const OP_TEXT: u8 = 0x1;
pub const OP_BINARY: u8 = 0x2;
pub const OP_CLOSE: u8 = 0x8;
pub const OP_PING: u8 = 0x9;
pub const OP_PONG: u8 = 0xA;

const MASK: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];

/// A masked client frame. `rsv` is the three RSV bits (0..=7).
pub fn frame(fin: bool, rsv: u8, opcode: u8, payload: &[u8]) -> Vec<u8> {
    encode_frame(fin, rsv, opcode, payload, Some(MASK))
}

/// An unmasked frame (illegal from a client).
pub fn frame_unmasked(fin: bool, rsv: u8, opcode: u8, payload: &[u8]) -> Vec<u8> {
    encode_frame(fin, rsv, opcode, payload, None)
}

pub fn encode_frame(
    fin: bool,
    rsv: u8,
    opcode: u8,
    payload: &[u8],
    mask: Option<[u8; 4]>,
) -> Vec<u8> {
    assert!(rsv < 8 && opcode < 16);
    let mut out = Vec::with_capacity(payload.len() + 14);
    out.push(((fin as u8) << 7) | (rsv << 4) | opcode);
    let mask_bit = if mask.is_some() { 0x80 } else { 0 };
    let len = payload.len();
    if len < 126 {
        out.push(mask_bit | len as u8);
    } else if len <= 0xffff {
        out.push(mask_bit | 126);
        out.extend_from_slice(&(len as u16).to_be_bytes());
    } else {
        out.push(mask_bit | 127);
        out.extend_from_slice(&(len as u64).to_be_bytes());
    }
    match mask {
        Some(key) => {
            out.extend_from_slice(&key);
            out.extend(payload.iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
        }
        None => out.extend_from_slice(payload),
    }
    out
}

/// A close frame payload: code + reason.
pub fn close_payload(code: u16, reason: &str) -> Vec<u8> {
    let mut p = code.to_be_bytes().to_vec();
    p.extend_from_slice(reason.as_bytes());
    p
}

/// One frame sent by the server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawFrame {
    pub fin: bool,
    pub rsv: u8,
    pub opcode: u8,
    pub payload: Vec<u8>,
}

impl RawFrame {
    /// The close code of a close frame (`None` for an empty close payload).
    pub fn close_code(&self) -> Option<u16> {
        assert_eq!(self.opcode, OP_CLOSE);
        (self.payload.len() >= 2).then(|| u16::from_be_bytes([self.payload[0], self.payload[1]]))
    }
}

/// What reading from a raw socket gave.
#[derive(Debug)]
pub enum Read1 {
    Frame(RawFrame),
    /// EOF or connection reset: the server closed the socket.
    Closed,
    /// Nothing within the socket's read timeout.
    TimedOut,
}

/// Classifies a read error: `Some(Closed)` for EOF/reset, `Some(TimedOut)`, or `None`.
fn classify(e: &io::Error) -> Option<Read1> {
    match e.kind() {
        io::ErrorKind::UnexpectedEof
        | io::ErrorKind::ConnectionReset
        | io::ErrorKind::ConnectionAborted
        | io::ErrorKind::BrokenPipe => Some(Read1::Closed),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => Some(Read1::TimedOut),
        _ => None,
    }
}

/// A raw WebSocket client: TCP stream + hand-made upgrade, frames by hand.
pub struct RawWs {
    pub stream: TcpStream,
}

impl RawWs {
    /// Connects and upgrades to `/TOPIC` by hand; checks the 101 response and its
    /// `Sec-WebSocket-Accept`. Reads the response head byte by byte so that no frame
    /// bytes following it are consumed.
    pub fn connect(addr: SocketAddr, topic: &str) -> RawWs {
        RawWs::connect_with(addr, topic, &[]).0
    }

    /// [`RawWs::connect`] with extra request header lines (e.g. `Sec-WebSocket-Extensions`);
    /// also returns the 101 response, to check what the server answered.
    pub fn connect_with(
        addr: SocketAddr,
        topic: &str,
        extra_headers: &[&str],
    ) -> (RawWs, HttpResponse) {
        let stream = TcpStream::connect(addr).expect("TCP connect");
        stream.set_nodelay(true).unwrap();
        stream.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
        stream.set_write_timeout(Some(IO_TIMEOUT)).unwrap();
        let mut raw = RawWs { stream };
        let key = "dGhlIHNhbXBsZSBub25jZQ==";
        let request = upgrade_request(&format!("/{topic}"), key, extra_headers);
        raw.stream
            .write_all(request.as_bytes())
            .expect("send upgrade");
        let head = read_head_bytewise(&mut raw.stream)
            .unwrap_or_else(|e| panic!("reading the upgrade response for /{topic}: {e}"));
        let response = parse_head(&head);
        assert_eq!(
            response.status,
            101,
            "upgrade of /{topic} refused: {:?}",
            String::from_utf8_lossy(&head)
        );
        let expected = tungstenite::handshake::derive_accept_key(key.as_bytes());
        assert_eq!(
            response.header("sec-websocket-accept"),
            Some(expected.as_str()),
            "bad Sec-WebSocket-Accept in {:?}",
            String::from_utf8_lossy(&head)
        );
        (raw, response)
    }

    /// Reads an HTTP response head (byte by byte, so frames after it stay unread).
    pub fn read_response_head(&mut self) -> String {
        let head = read_head_bytewise(&mut self.stream).expect("reading a response head");
        String::from_utf8_lossy(&head).to_string()
    }

    /// Writes bytes; panics on failure.
    pub fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).expect("raw write");
    }

    /// Writes bytes; the error (if the server already hung up) is returned.
    pub fn try_send(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.stream.write_all(bytes)
    }

    pub fn set_read_timeout(&self, t: Duration) {
        self.stream.set_read_timeout(Some(t)).unwrap();
    }

    /// Reads one server frame. Panics if the server masked it (RFC 6455 §5.1).
    pub fn read_frame(&mut self) -> Read1 {
        let mut head = [0u8; 2];
        if let Err(e) = self.stream.read_exact(&mut head) {
            return classify(&e).unwrap_or_else(|| panic!("raw read: {e}"));
        }
        let fin = head[0] & 0x80 != 0;
        let rsv = (head[0] >> 4) & 0x7;
        let opcode = head[0] & 0x0f;
        assert_eq!(head[1] & 0x80, 0, "server frames must not be masked");
        let len = match head[1] & 0x7f {
            126 => {
                let mut b = [0u8; 2];
                if let Err(e) = self.stream.read_exact(&mut b) {
                    return classify(&e).unwrap_or_else(|| panic!("raw read: {e}"));
                }
                u16::from_be_bytes(b) as usize
            }
            127 => {
                let mut b = [0u8; 8];
                if let Err(e) = self.stream.read_exact(&mut b) {
                    return classify(&e).unwrap_or_else(|| panic!("raw read: {e}"));
                }
                u64::from_be_bytes(b) as usize
            }
            n => n as usize,
        };
        let mut payload = vec![0u8; len];
        if let Err(e) = self.stream.read_exact(&mut payload) {
            return classify(&e).unwrap_or_else(|| panic!("raw read: {e}"));
        }
        Read1::Frame(RawFrame {
            fin,
            rsv,
            opcode,
            payload,
        })
    }

    /// Reads the next frame, which must be there.
    pub fn expect_frame(&mut self) -> RawFrame {
        match self.read_frame() {
            Read1::Frame(f) => f,
            other => panic!("expected a frame from the server, got {other:?}"),
        }
    }

    /// Reads one whole data message (reassembling continuation frames; pings and pongs are
    /// skipped). Returns `(opcode, payload)`.
    pub fn expect_message(&mut self) -> (u8, Vec<u8>) {
        let mut opcode = None;
        let mut data = Vec::new();
        loop {
            let f = self.expect_frame();
            match f.opcode {
                OP_PING | OP_PONG => continue,
                OP_CLOSE => panic!("expected a data message, got close {:?}", f.close_code()),
                OP_CONT => {
                    assert!(opcode.is_some(), "continuation frame without a start");
                    data.extend_from_slice(&f.payload);
                }
                op => {
                    assert!(
                        opcode.is_none(),
                        "new data frame inside a fragmented message"
                    );
                    opcode = Some(op);
                    data.extend_from_slice(&f.payload);
                }
            }
            if f.fin {
                return (opcode.unwrap(), data);
            }
        }
    }

    /// The server is expected to close this connection with a Close frame: reads frames
    /// (skipping data, pings and pongs) until the close frame, answers it, then requires the
    /// server to close the TCP connection. Returns the close code (`None` for an empty close
    /// payload), or a description of what happened instead.
    pub fn expect_close(&mut self) -> Result<Option<u16>, String> {
        loop {
            match self.read_frame() {
                Read1::Frame(f) if f.opcode == OP_CLOSE => {
                    let code = f.close_code();
                    let _ = self.try_send(&frame(
                        true,
                        0,
                        OP_CLOSE,
                        &f.payload[..f.payload.len().min(2)],
                    ));
                    return match self.read_to_end_of_stream() {
                        Ok(_) => Ok(code),
                        Err(e) => Err(format!(
                            "got close {code:?} but then the server did not close TCP: {e}"
                        )),
                    };
                }
                Read1::Frame(_) => continue,
                Read1::Closed => return Err("TCP closed without a close frame".into()),
                Read1::TimedOut => return Err(format!("no close frame within {IO_TIMEOUT:?}")),
            }
        }
    }

    /// Reads until EOF/reset and returns the bytes read; `Err` if the read timeout passes
    /// first.
    pub fn read_to_end_of_stream(&mut self) -> Result<Vec<u8>, String> {
        read_until_closed(&mut self.stream)
    }
}

/// Reads until EOF/reset; `Err` if a read times out (the socket's read timeout) first.
pub fn read_until_closed(stream: &mut TcpStream) -> Result<Vec<u8>, String> {
    let mut all = Vec::new();
    let mut buf = [0u8; 64 * 1024];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => return Ok(all),
            Ok(n) => all.extend_from_slice(&buf[..n]),
            Err(e) => match classify(&e) {
                Some(Read1::Closed) => return Ok(all),
                Some(Read1::TimedOut) => {
                    return Err(format!(
                        "socket still open after the read timeout ({} bytes read)",
                        all.len()
                    ))
                }
                _ => return Err(format!("read error: {e}")),
            },
        }
    }
}

/// Splits a byte stream of server frames into frames; stops at the first incomplete one.
pub fn parse_frames(mut bytes: &[u8]) -> Vec<RawFrame> {
    let mut frames = Vec::new();
    loop {
        if bytes.len() < 2 {
            return frames;
        }
        let (len, header) = match bytes[1] & 0x7f {
            126 if bytes.len() >= 4 => (u16::from_be_bytes([bytes[2], bytes[3]]) as usize, 4),
            127 if bytes.len() >= 10 => (
                u64::from_be_bytes(bytes[2..10].try_into().unwrap()) as usize,
                10,
            ),
            126 | 127 => return frames,
            n => (n as usize, 2),
        };
        if bytes.len() < header + len {
            return frames;
        }
        frames.push(RawFrame {
            fin: bytes[0] & 0x80 != 0,
            rsv: (bytes[0] >> 4) & 7,
            opcode: bytes[0] & 0x0f,
            payload: bytes[header..header + len].to_vec(),
        });
        bytes = &bytes[header + len..];
    }
}

// ---------------------------------------------------------------------------------------------
// Raw HTTP
// ---------------------------------------------------------------------------------------------

/// A well-formed upgrade request for `path` with extra header lines.
pub fn upgrade_request(path: &str, key: &str, extra_headers: &[&str]) -> String {
    let mut r = format!(
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
    );
    for h in extra_headers {
        r.push_str(h);
        r.push_str("\r\n");
    }
    r.push_str("\r\n");
    r
}

/// A parsed HTTP response head (+ body).
#[derive(Debug)]
pub struct HttpResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    pub head_text: String,
}

impl HttpResponse {
    /// First header with this (case-insensitive) name.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

fn parse_head(head: &[u8]) -> HttpResponse {
    let text = String::from_utf8_lossy(head).to_string();
    let mut lines = text.split("\r\n");
    let status_line = lines.next().unwrap_or("");
    let mut parts = status_line.split_whitespace();
    let version = parts.next().unwrap_or("");
    assert!(
        version.starts_with("HTTP/1."),
        "not an HTTP response: {text:?}"
    );
    let status = parts
        .next()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("bad status line {status_line:?}"));
    let headers = lines
        .filter(|l| !l.is_empty())
        .map(|l| {
            let (n, v) = l
                .split_once(':')
                .unwrap_or_else(|| panic!("bad header line {l:?} in {text:?}"));
            (n.trim().to_string(), v.trim().to_string())
        })
        .collect();
    HttpResponse {
        status,
        headers,
        body: Vec::new(),
        head_text: text,
    }
}

/// Reads an HTTP response head one byte at a time (up to and including the blank line).
fn read_head_bytewise(stream: &mut TcpStream) -> io::Result<Vec<u8>> {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        let n = stream.read(&mut byte)?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("EOF after {:?}", String::from_utf8_lossy(&head)),
            ));
        }
        head.push(byte[0]);
        assert!(head.len() < 64 * 1024, "response head too long");
    }
    Ok(head)
}

/// Sends `request` on a fresh connection and reads the response (head, and a body of
/// `Content-Length` bytes). The stream is returned for further checks.
pub fn http_request(addr: SocketAddr, request: &[u8]) -> (HttpResponse, TcpStream) {
    let mut stream = TcpStream::connect(addr).expect("TCP connect");
    stream.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    stream.set_write_timeout(Some(IO_TIMEOUT)).unwrap();
    // The server may answer (and hang up) before reading everything, e.g. for 431: a failed
    // write is fine as long as the response arrives.
    let _ = stream.write_all(request);
    let head = read_head_bytewise(&mut stream).unwrap_or_else(|e| {
        panic!(
            "no HTTP response to {:?}: {e}",
            String::from_utf8_lossy(&request[..request.len().min(200)])
        )
    });
    let mut response = parse_head(&head);
    if let Some(len) = response.header("content-length") {
        let len: usize = len.parse().expect("numeric Content-Length");
        let mut body = vec![0u8; len];
        stream.read_exact(&mut body).expect("read response body");
        response.body = body;
    }
    (response, stream)
}

/// After an error response the server must close the connection: the rest of the stream
/// must end (EOF/reset) within 5 s. Without `Content-Length` the bytes up to the end are the
/// body (appended to `response.body`); with it, any further byte is an error.
pub fn assert_closed_by_server(response: &mut HttpResponse, stream: &mut TcpStream, what: &str) {
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    match read_until_closed(stream) {
        Ok(rest) if response.header("content-length").is_none() => {
            response.body.extend_from_slice(&rest)
        }
        Ok(rest) if rest.is_empty() => {}
        Ok(rest) => panic!(
            "{what}: unexpected bytes after the response: {:?}",
            String::from_utf8_lossy(&rest)
        ),
        Err(e) => panic!("{what}: server did not close the connection after the response: {e}"),
    }
    let _ = stream.shutdown(Shutdown::Both);
}

/// Polls `cond` every 20 ms until it is true or `timeout` passes.
pub fn wait_until(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        thread::sleep(Duration::from_millis(20));
    }
}
