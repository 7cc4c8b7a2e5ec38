//! `--v1` against the real Herald server: subscribers speak `herald.v1` (subscribe, envelopes),
//! publishers raw path mode, and the report must account every message exactly as raw mode
//! does. The herald binary is not this crate's, so it is looked up in the workspace's target
//! directory (`cargo test --workspace` builds it; so does `cargo build -p herald`).

mod common;

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

use common::*;
use testkit::broadcast::broadcast_server;

/// The herald binary: next to this loadtest binary (same target directory and profile) if
/// there, else the newest of the workspace's `target/{release,debug}/herald`.
fn herald_bin() -> PathBuf {
    let here = PathBuf::from(env!("CARGO_BIN_EXE_loadtest")).with_file_name("herald");
    if here.exists() {
        return here;
    }
    let workspace = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut candidates: Vec<PathBuf> = ["release", "debug"]
        .iter()
        .map(|p| workspace.join("target").join(p).join("herald"))
        .filter(|p| p.exists())
        .collect();
    candidates.sort_by_key(|p| std::fs::metadata(p).and_then(|m| m.modified()).ok());
    candidates.pop().unwrap_or_else(|| {
        panic!(
            "the herald binary is missing (looked for {} and target/{{release,debug}}/herald in \
             the workspace): build it first with `cargo build -p herald` or run \
             `cargo test --workspace`",
            here.display()
        )
    })
}

/// A real herald on 127.0.0.1:0, killed when dropped.
struct Herald {
    child: Child,
    addr: String,
}

impl Herald {
    fn start() -> Herald {
        let bin = herald_bin();
        let mut child = Command::new(&bin)
            .args(["--listen", "127.0.0.1:0", "--threads", "1"])
            .args(["--stats-interval", "0"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", bin.display()));
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, rx) = mpsc::channel();
        thread::spawn(move || {
            // Keep draining stdout so the server never blocks on it.
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        let mut server = Herald {
            child,
            addr: String::new(),
        };
        let first = rx
            .recv_timeout(Duration::from_secs(10))
            .expect("herald prints `listening on ws://ADDR:PORT`");
        server.addr = first
            .strip_prefix("listening on ws://")
            .unwrap_or_else(|| panic!("unexpected first line {first:?}"))
            .to_string();
        server
    }
}

impl Drop for Herald {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn v1_subscribers_get_every_message_from_raw_publishers() {
    let server = Herald::start();
    let url = format!("ws://{}/bench/v1", server.addr);
    let r = json_report(&[
        "--url",
        &url,
        "--v1",
        "--connections",
        "20",
        "--publishers",
        "2",
        "--rate",
        "200",
        "--warmup",
        "0.5",
        "--duration",
        "1.5",
        "--procs",
        "2",
        "--json",
        "--quiet",
    ]);
    assert_eq!(u(&r, "connections"), 22, "20 subscribed plus 2 publishers");
    assert_eq!(u(&r, "subscribers"), 20);
    no_errors(&r);
    let sent = u(&r, "sent");
    assert_eq!(sent, 300, "1.5 s at 200 msg/s");
    assert_eq!(u(&r, "expected"), sent * 20);
    assert_eq!(u(&r, "delivered"), sent * 20);
    assert_eq!(u(&r, "lost"), 0);
    assert_eq!(u(&r, "duplicates"), 0);
    assert_eq!(u(&r, "out_of_order"), 0);
    assert_eq!(u(&r, "unexpected"), 0);
    // Every subscriber got every message of the run, warmup included (the raw publishers, on
    // the topic's path, may get some too).
    let total = u(&r, "sent_total");
    assert!(u(&r, "received_total") >= total * 20, "{r}");
    assert!(r["latency_us"]["p50"].as_f64().is_some_and(|v| v > 0.0));
}

#[test]
fn v1_against_a_server_without_it_is_an_error_per_subscriber() {
    // The test broadcast server answers the upgrade without `Sec-WebSocket-Protocol`.
    let (port, _counts) = broadcast_server(None);
    let url = format!("ws://127.0.0.1:{port}/bench");
    let r = json_report(&[
        "--url",
        &url,
        "--v1",
        "--connections",
        "5",
        "--duration",
        "0.2",
        "--warmup",
        "0",
        "--json",
        "--quiet",
    ]);
    assert_eq!(r["errors"]["v1_not_accepted"], 5, "{r}");
    assert_eq!(u(&r, "connections"), 1, "only the raw publisher");
}
