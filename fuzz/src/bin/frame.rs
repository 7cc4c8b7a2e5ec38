//! Frame decoding without permessage-deflate (`herald::fuzz::frames`).
fn main() {
    afl::fuzz!(|data: &[u8]| herald::fuzz::frames(data, false));
}
