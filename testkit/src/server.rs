//! A real `herald` process for a test: started on `127.0.0.1:0`, its stdout read on a thread
//! into a channel (so the server never blocks on a full pipe) and its stderr collected,
//! killed on drop; and the `stats:` lines it prints.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use crate::wait_until;

/// A binary of the workspace, next to the running test executable, found the way
/// `assert_cmd` does: a test runs as `target/PROFILE/deps/NAME-HASH`, and cargo builds the
/// package's binaries into `target/PROFILE/` before its integration tests. (`env!
/// ("CARGO_BIN_EXE_herald")` exists only inside herald's own test crates, not in a library.)
/// Panics, saying so, when the binary is not there.
pub fn workspace_bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("the test executable's path");
    let mut dir = exe.parent().expect("the test executable's directory");
    if dir.ends_with("deps") {
        dir = dir.parent().expect("target/PROFILE");
    }
    let bin = dir.join(format!("{name}{}", std::env::consts::EXE_SUFFIX));
    assert!(
        bin.is_file(),
        "{} not found (was `{name}` built? run the tests with `cargo test`)",
        bin.display()
    );
    bin
}

/// The server binary under test.
pub fn herald_bin() -> PathBuf {
    workspace_bin("herald")
}

/// How long to wait for the server to print its first line.
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// A running `herald` process. Killed (and reaped) on drop.
pub struct Server {
    child: Child,
    /// The address from the `listening on ws://…` line.
    pub addr: SocketAddr,
    lines: Receiver<String>,
    /// Every stdout line taken from the channel so far (for diagnostics and late checks).
    seen: Vec<String>,
    stderr: Arc<Mutex<Vec<String>>>,
    /// The thread collecting stderr: finished once the process has closed it.
    stderr_reader: JoinHandle<()>,
}

impl Server {
    /// Starts `herald --listen 127.0.0.1:0 ARGS…` (plus `--stats-interval 0` unless ARGS
    /// set a stats interval) and waits for its `listening on ws://…` line.
    pub fn start(args: &[&str]) -> Server {
        let mut cmd = Command::new(herald_bin());
        cmd.args(server_args(ANY_PORT, args));
        Server::spawn(cmd)
    }

    /// Starts `herald ARGS…` with exactly these arguments (no `--listen` or
    /// `--stats-interval` added: for tests where a config file sets them) and waits for its
    /// `listening on ws://…` line.
    pub fn start_exact(args: &[&str]) -> Server {
        let mut cmd = Command::new(herald_bin());
        cmd.args(args);
        Server::spawn(cmd)
    }

    /// A cluster-mode node: `--threads 2 --broker BROKER` and `extra`, returned once it
    /// printed `broker: up` (20 s at most: it failed to reach Redis otherwise).
    pub fn start_node(broker: &str, extra: &[&str]) -> Server {
        Server::start_node_on(0, broker, extra)
    }

    /// [`Server::start_node`] listening on `127.0.0.1:PORT` (0: a port of the kernel's
    /// choosing): for tests that kill a node and start it again where its clients (a browser
    /// page) look for it.
    pub fn start_node_on(port: u16, broker: &str, extra: &[&str]) -> Server {
        let mut args = vec!["--threads", "2", "--broker", broker];
        args.extend_from_slice(extra);
        let mut cmd = Command::new(herald_bin());
        cmd.args(server_args(&format!("127.0.0.1:{port}"), &args));
        let mut server = Server::spawn(cmd);
        assert!(
            server
                .wait_prefix("broker: up", Duration::from_secs(20))
                .is_some(),
            "node {} did not reach Redis; stdout {:?} stderr {}",
            server.addr,
            server.stdout(),
            server.stderr_text()
        );
        server
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
            .arg(herald_bin())
            .args(server_args(ANY_PORT, args));
        Server::spawn(cmd)
    }

    fn spawn(mut cmd: Command) -> Server {
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot spawn herald: {e}"));

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
        let stderr_reader = thread::spawn(move || {
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
            stderr_reader,
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

    /// Waits until the process has closed its stderr (it has exited) and every line of it is
    /// collected, so that [`Server::stderr_text`] is all it will ever write. False if stderr
    /// is still open after `timeout`.
    pub fn wait_stderr_end(&self, timeout: Duration) -> bool {
        wait_until(timeout, || self.stderr_reader.is_finished())
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

/// The `--listen` address of a server whose port the kernel chooses.
const ANY_PORT: &str = "127.0.0.1:0";

/// `--listen LISTEN`, `--stats-interval 0` unless `args` set one, then `args`.
fn server_args(listen: &str, args: &[&str]) -> Vec<String> {
    let mut all = vec!["--listen".to_string(), listen.to_string()];
    if !args.contains(&"--stats-interval") {
        all.push("--stats-interval".into());
        all.push("0".into());
    }
    all.extend(args.iter().map(|s| s.to_string()));
    all
}

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

/// One entry of a stats line's `busiest=[…]` field.
#[derive(Debug, Clone, PartialEq)]
pub struct Busy {
    pub topic: String,
    pub deliveries_per_sec: u64,
    pub subscribers: u64,
    /// Fan-out p50 and p99 upper bounds, µs (`None`: not measured yet, printed `-`).
    pub p50: Option<u64>,
    pub p99: Option<u64>,
}

/// Parses `busiest=[TOPIC deliveries/s=N subs=N p50<=Nus p99<=Nus; …]` from a stats line or
/// the final report (`None` without the field or when an entry is malformed).
pub fn parse_busiest(line: &str) -> Option<Vec<Busy>> {
    let start = line.find("busiest=[")? + "busiest=[".len();
    let inner = &line[start..start + line[start..].find(']')?];
    let mut out = Vec::new();
    for entry in inner.split("; ").filter(|e| !e.is_empty()) {
        let words: Vec<&str> = entry.split(' ').collect();
        let [topic, rate, subs, p50, p99] = words.as_slice() else {
            return None;
        };
        let micros = |w: &str, key: &str| -> Option<Option<u64>> {
            let v = w.strip_prefix(key)?.strip_suffix("us")?;
            Some(if v == "-" {
                None
            } else {
                Some(v.parse().ok()?)
            })
        };
        out.push(Busy {
            topic: topic.to_string(),
            deliveries_per_sec: rate.strip_prefix("deliveries/s=")?.parse().ok()?,
            subscribers: subs.strip_prefix("subs=")?.parse().ok()?,
            p50: micros(p50, "p50<=")?,
            p99: micros(p99, "p99<=")?,
        });
    }
    Some(out)
}
