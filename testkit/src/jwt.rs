//! HS256 tokens for the tests of access control (`--jwt-secret`), so each test states only
//! the claims it cares about.

use std::time::{SystemTime, UNIX_EPOCH};

use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use serde_json::Value;

/// `exp` for a token that stays valid through any test: an hour from now.
pub fn in_an_hour() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("the clock is after 1970")
        .as_secs()
        + 3600
}

/// `claims` signed with `secret` (HS256), as `--jwt-secret` verifies them.
pub fn hs256(secret: &str, claims: &Value) -> String {
    encode(
        &Header::new(Algorithm::HS256),
        claims,
        &EncodingKey::from_secret(secret.as_bytes()),
    )
    .expect("HS256 signs any JSON object")
}
