//! The HTTP request head parser (`herald::fuzz::http_head`).
fn main() {
    afl::fuzz!(|data: &[u8]| herald::fuzz::http_head(data));
}
