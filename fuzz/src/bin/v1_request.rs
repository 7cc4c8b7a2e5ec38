//! `herald.v1` control message decoding (`herald::fuzz::v1_request`).
fn main() {
    afl::fuzz!(|data: &[u8]| herald::fuzz::v1_request(data));
}
