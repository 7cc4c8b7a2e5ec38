//! Running the loadtest binary from its integration tests and reading its JSON report. (The
//! broadcast server they run it against, plain or TLS, is `testkit::broadcast`.) Every test
//! file uses all of these, so no `allow(dead_code)` is needed.

use std::process::{Command, Output};

use serde_json::Value;

pub fn loadtest(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_loadtest"))
        .args(args)
        .output()
        .expect("run loadtest")
}

pub fn json_report(args: &[&str]) -> Value {
    let out = loadtest(args);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "loadtest failed: {stderr}");
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "bad JSON ({e}): {}\nstderr: {stderr}",
            String::from_utf8_lossy(&out.stdout)
        )
    })
}

pub fn u(v: &Value, key: &str) -> u64 {
    v[key]
        .as_u64()
        .unwrap_or_else(|| panic!("{key} missing in {v}"))
}

pub fn no_errors(r: &Value) {
    assert!(r["errors"].as_object().is_some_and(|e| e.is_empty()), "{r}");
}
