//! Frame decoding with permessage-deflate negotiated (`herald::fuzz::frames`).
fn main() {
    afl::fuzz!(|data: &[u8]| herald::fuzz::frames(data, true));
}
