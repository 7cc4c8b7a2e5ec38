//! The bundled loadtest against a real Herald: a few hundred connections in several
//! processes, and its counts checked against the server's own (nothing lost, nothing invented).

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use testkit::{stat_field, Server};

/// The loadtest binary sits next to herald's in the same target directory; `cargo test
/// --workspace` builds both.
fn loadtest_bin() -> PathBuf {
    testkit::workspace_bin("loadtest")
}

#[test]
fn loadtest_counts_match_the_servers_counts() {
    let mut server = Server::start(&["--threads", "2"]);
    let output = Command::new(loadtest_bin())
        .args([
            "--url",
            &server.url("counts"),
            "--connections",
            "300",
            "--publishers",
            "2",
        ])
        .args([
            "--rate",
            "200",
            "--duration",
            "2",
            "--warmup",
            "1",
            "--procs",
            "3",
            "--json",
        ])
        .output()
        .expect("run loadtest");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "loadtest failed: {stderr}");
    let report: serde_json::Value =
        serde_json::from_slice(&output.stdout).expect("one JSON object on stdout");
    let field = |name: &str| {
        report[name]
            .as_u64()
            .unwrap_or_else(|| panic!("no `{name}` in {report}"))
    };

    assert_eq!(field("connections"), 302, "every connection established");
    assert_eq!(field("procs"), 3);
    assert!(field("sent") > 0);
    assert_eq!(
        field("delivered"),
        field("expected"),
        "nothing lost in the measured window"
    );
    for key in ["lost", "duplicates", "out_of_order", "unexpected", "unsent"] {
        assert_eq!(field(key), 0, "{key}");
    }
    assert_eq!(
        report["errors"].as_object().map(|e| e.len()),
        Some(0),
        "errors: {}",
        report["errors"]
    );

    // The server's totals: every message the loadtest sent arrived, and every delivery it
    // counted was written by the server (warmup included on both sides, publishers'
    // own echoes included).
    server.signal(nix::sys::signal::Signal::SIGTERM);
    assert!(
        server
            .wait_exit(Duration::from_secs(10))
            .is_some_and(|s| s.success()),
        "server exits 0"
    );
    server.read_stdout_to_end(Duration::from_secs(5));
    let totals = server
        .stdout()
        .iter()
        .find(|l| l.starts_with("totals:"))
        .cloned()
        .expect("totals line");
    assert_eq!(
        stat_field(&totals, "msgs_in"),
        Some(field("sent_total")),
        "{totals}"
    );
    assert_eq!(
        stat_field(&totals, "frames_out"),
        Some(field("received_total")),
        "{totals}"
    );
}
