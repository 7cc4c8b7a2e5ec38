//! One `wss://` connection's input path driven by arbitrary bytes
//! (`herald::fuzz::tls_websocket`): TLS records, then the HTTP head and frames.
fn main() {
    // Configurations only: a panic inside one run leaves nothing in them half-changed.
    let pair = std::panic::AssertUnwindSafe(herald_fuzz::tls_pair());
    afl::fuzz!(|data: &[u8]| herald::fuzz::tls_websocket(&pair, data));
}
