//! `--config FILE` against the real binary: a file's settings take effect, the command line
//! overrides them, every mistake in the file stops the start with the key and the file named,
//! and the shipped `herald.example.toml` loads.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use testkit::*;

/// A config file in the temp directory, removed on drop.
struct TempFile(PathBuf);

impl TempFile {
    fn new(name: &str, text: &str) -> TempFile {
        let path = std::env::temp_dir().join(format!(
            "herald-config-test-{}-{name}.toml",
            std::process::id()
        ));
        std::fs::write(&path, text).unwrap();
        TempFile(path)
    }

    fn arg(&self) -> &str {
        self.0.to_str().unwrap()
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Sends a text message of `len` bytes and expects it back (echo is on).
fn echoes(raw: &mut RawWs, len: usize) {
    let payload = vec![b'x'; len];
    raw.send(&frame(true, 0, OP_TEXT, &payload));
    assert_eq!(raw.expect_message(), (OP_TEXT, payload));
}

/// Runs herald with `args`, which must make it fail at start-up: it must exit on its own
/// (with a non-zero status) without ever listening. Returns its stderr.
fn start_fails(args: &[&str]) -> String {
    let mut child = Command::new(herald_bin())
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn herald");
    let deadline = Instant::now() + Duration::from_secs(20);
    while child.try_wait().expect("try_wait").is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            let out = child.wait_with_output().unwrap();
            panic!(
                "herald {args:?} kept running; stdout:\n{}",
                String::from_utf8_lossy(&out.stdout)
            );
        }
        thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert_eq!(
        out.status.code(),
        Some(2),
        "herald {args:?}: expected exit 2; stderr:\n{stderr}"
    );
    assert!(
        !stdout.contains("listening on"),
        "herald {args:?} started listening: {stdout}"
    );
    stderr
}

#[test]
fn a_file_sets_listen_threads_and_max_message() {
    let file = TempFile::new(
        "limits",
        "listen = \"127.0.0.1:0\"\nthreads = 1\nmax-message = 10\nstats-interval = 0\n",
    );
    let mut server = Server::start_exact(&["--config", file.arg()]);
    let workers = server
        .line_starting("workers:", Duration::from_secs(10))
        .expect("a workers line");
    assert!(workers.starts_with("workers: 1 "), "{workers}");

    let mut raw = RawWs::connect(server.addr, "limits");
    echoes(&mut raw, 10);
    raw.send(&frame(true, 0, OP_TEXT, &[b'y'; 11]));
    assert_eq!(raw.expect_close(), Ok(Some(1009)));
}

#[test]
fn the_command_line_overrides_the_file() {
    // Port 1 would be taken from the file if the command line did not win.
    let file = TempFile::new(
        "override",
        "listen = \"127.0.0.1:1\"\nmax-message = 10\nno-echo = true\nstats-interval = \"1s\"\n",
    );
    for args in [
        &["--config", file.arg(), "--listen", "127.0.0.1:0"][..],
        &["--listen=127.0.0.1:0", "--config", file.arg()],
    ] {
        let server = Server::start_exact(args);
        assert_ne!(server.addr.port(), 1, "{args:?}");
    }

    // Flags on either side of --config win; the file's other settings still apply.
    let file = TempFile::new(
        "override2",
        "threads = 1\nmax-message = 10\nno-echo = true\nstats-interval = \"200ms\"\n",
    );
    for args in [
        &["--config", file.arg(), "--max-message", "100"][..],
        &["--max-message", "100", "--config", file.arg()],
    ] {
        // Server::start also passes `--stats-interval 0`, overriding the file's 200ms.
        let mut server = Server::start(args);
        let mut publisher = RawWs::connect(server.addr, "o");
        let mut subscriber = RawWs::connect(server.addr, "o");
        publisher.send(&frame(true, 0, OP_TEXT, &[b'z'; 11]));
        assert_eq!(subscriber.expect_message(), (OP_TEXT, vec![b'z'; 11]));
        // no-echo from the file: had the publisher been sent its own message, it would
        // arrive before this one (one order per topic).
        subscriber.send(&frame(true, 0, OP_TEXT, b"back"));
        assert_eq!(publisher.expect_message(), (OP_TEXT, b"back".to_vec()));
        assert!(server
            .wait_prefix("stats:", Duration::from_millis(1000))
            .is_none());
    }
}

#[test]
fn the_stats_interval_from_the_file_applies() {
    let file = TempFile::new(
        "stats",
        "listen = \"127.0.0.1:0\"\nstats-interval = \"200ms\"\n",
    );
    let mut server = Server::start_exact(&["--config", file.arg()]);
    assert!(server
        .wait_prefix("stats:", Duration::from_secs(10))
        .is_some());
}

#[test]
fn mistakes_in_the_file_stop_the_start_naming_key_and_file() {
    let cases: &[(&str, &str, &[&str])] = &[
        (
            "unknown",
            "threads = 1\nmax_message = 10\n",
            &[
                "key `max_message`: unknown key",
                "did you mean `max-message`?",
            ],
        ),
        (
            "value",
            "max-message = \"abc\"\n",
            &["key `max-message`: invalid value 'abc': invalid digit found in string"],
        ),
        (
            "duration",
            "ping-interval = \"5h\"\n",
            &["key `ping-interval`: invalid value '5h'"],
        ),
        (
            "type",
            "no-echo = \"yes\"\n",
            &["key `no-echo`: expected true or false"],
        ),
        (
            "nested",
            "config = \"other.toml\"\n",
            &["key `config`: a config file cannot name another config file"],
        ),
        ("table", "[limits]\nmax-message = 1\n", &["key `limits`"]),
        ("syntax", "listen = 127.0.0.1\n", &["not valid TOML"]),
        (
            "validate",
            "threads = 0\n",
            &["key `threads`: --threads must be at least 1"],
        ),
        ("requires", "tls-cert = \"cert.pem\"\n", &["--tls-key"]),
    ];
    let mut failures = Vec::new();
    for (name, text, wanted) in cases {
        let file = TempFile::new(name, text);
        let stderr = start_fails(&["--config", file.arg(), "--listen", "127.0.0.1:0"]);
        let prefix = format!("error: {}: ", file.arg());
        if !stderr.starts_with(&prefix) {
            failures.push(format!(
                "{name}: stderr does not start with {prefix:?}: {stderr}"
            ));
        }
        for w in *wanted {
            if !stderr.contains(w) {
                failures.push(format!("{name}: stderr lacks {w:?}: {stderr}"));
            }
        }
    }
    assert_all_cases_passed(&failures, cases.len());
}

#[test]
fn a_missing_file_stops_the_start() {
    let missing = std::env::temp_dir().join("herald-config-test-no-such-file.toml");
    let missing = missing.to_str().unwrap();
    let stderr = start_fails(&["--config", missing, "--listen", "127.0.0.1:0"]);
    assert!(
        stderr.starts_with(&format!("error: {missing}: cannot read the config file")),
        "{stderr}"
    );
}

#[test]
fn the_example_file_loads() {
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/herald.example.toml");
    let server = Server::start_exact(&[
        "--config",
        example,
        "--listen",
        "127.0.0.1:0",
        "--stats-interval",
        "0",
    ]);
    let mut ws = connect(server.addr, "example");
    send_text(&mut ws, "hello");
    assert_eq!(recv_text(&mut ws), "hello");
}
