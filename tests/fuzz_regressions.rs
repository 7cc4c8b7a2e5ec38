//! Replays the fuzz targets' inputs under `cargo test`, with the same entry points the fuzzer
//! drives (`herald::fuzz`): the committed seed corpus (`fuzz/corpus/TARGET/`) and every input
//! a fuzzing run found to crash or hang (`fuzz/regressions/TARGET/`, kept forever). A fix that
//! regresses fails here without a fuzzer installed. See docs/security.md.

use std::path::{Path, PathBuf};

use herald::fuzz;
use testkit::*;

/// Every file under `fuzz/corpus/TARGET` and `fuzz/regressions/TARGET`.
fn inputs(target: &str) -> Vec<(PathBuf, Vec<u8>)> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz");
    let mut all = Vec::new();
    for set in ["corpus", "regressions"] {
        let Ok(dir) = std::fs::read_dir(root.join(set).join(target)) else {
            continue; // no regressions for this target (yet)
        };
        for entry in dir {
            let path = entry.expect("readable directory").path();
            let bytes = std::fs::read(&path).expect("readable input");
            all.push((path, bytes));
        }
    }
    all.sort();
    all
}

/// Runs `f` on every input of `target`; there must be some (the corpus is committed).
fn replay(target: &str, f: impl Fn(&[u8])) {
    let inputs = inputs(target);
    assert!(!inputs.is_empty(), "no inputs for {target} under fuzz/");
    for (path, bytes) in &inputs {
        eprintln!("{}", path.display());
        f(bytes);
    }
}

#[test]
fn frame_inputs() {
    replay("frame", |d| fuzz::frames(d, false));
}

#[test]
fn frame_deflate_inputs() {
    replay("frame_deflate", |d| fuzz::frames(d, true));
}

#[test]
fn http_head_inputs() {
    replay("http_head", fuzz::http_head);
}

#[test]
fn v1_request_inputs() {
    replay("v1_request", fuzz::v1_request);
}

#[test]
fn tls_websocket_inputs() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/tls");
    let pair = fuzz::TlsPair::load(&dir.join("cert.pem"), &dir.join("key.pem"))
        .expect("fuzz/tls certificate loads");
    replay("tls_websocket", |d| fuzz::tls_websocket(&pair, d));
}

/// The seeds reach where they are meant to: after the in-memory handshake the plaintext is
/// what the client sent (checked inside `tls_websocket`), and a seed that upgrades gets
/// through the head parser to the frames.
#[test]
fn seeds_are_valid_requests() {
    for (path, bytes) in inputs("http_head") {
        let head = herald::proto::http::parse_head(&bytes, fuzz::MAX_MESSAGE);
        assert!(matches!(head, Ok(Some(_))), "{}: {head:?}", path.display());
    }
}

/// Found by the `frame` target within seconds: a continuation frame whose 64-bit length is
/// near `u64::MAX` overflowed the size check (`so far + len`). With overflow checks off (a
/// release build) the sum wrapped to a small number, the frame passed as "within
/// --max-message", and the decoder waited for its payload, buffering whatever the client sent
/// next without a bound. Over a real socket: the connection must be closed with 1009 at once.
#[test]
fn a_continuation_claiming_an_enormous_length_is_refused() {
    let server = Server::start(&[]);
    let mut ws = RawWs::connect(server.addr, "huge");
    // A text message opened with one byte, then a continuation of 2^64 - 1 bytes (the
    // 127 form: eight length bytes), masked, with a little payload after it.
    ws.send(&frame(false, 0, OP_TEXT, b"a"));
    let mut continuation = vec![0x00, 0x80 | 127];
    continuation.extend_from_slice(&u64::MAX.to_be_bytes());
    continuation.extend_from_slice(&[1, 2, 3, 4]); // the mask
    continuation.extend_from_slice(&[0u8; 1024]);
    let _ = ws.try_send(&continuation);
    assert_eq!(ws.expect_close(), Ok(Some(1009)));
}
