//! The message payload: sequence number, scheduled send time, and a checkable filler.
//!
//! Layout (little endian): bytes 0..8 the global sequence number `k`, bytes 8..16 the time the
//! message was *scheduled* to be sent (CLOCK_MONOTONIC ns), then filler bytes derived from `k`
//! so that a corrupted or invented message is detected rather than counted.

/// Smallest payload: sequence number plus timestamp.
pub const MIN_SIZE: usize = 16;

/// Why a received payload was rejected.
#[derive(Debug, PartialEq, Eq)]
pub enum PayloadError {
    /// Shorter than [`MIN_SIZE`] or not the configured size.
    BadLength,
    /// The filler does not match the sequence number.
    Corrupt,
}

impl PayloadError {
    /// Error-kind name used in reports.
    pub fn kind(&self) -> &'static str {
        match self {
            PayloadError::BadLength => "bad_payload_size",
            PayloadError::Corrupt => "corrupt_payload",
        }
    }
}

/// One JSON ticker update of a market-data feed (`--payload json`): what a feed sends, so
/// compression is measured on realistic bytes. Longer payloads repeat it.
const JSON_TICKER: &[u8] = br#"{"type":"ticker","sequence":81234567890,"product_id":"BTC-USD","price":"64123.45","open_24h":"63012.10","volume_24h":"12345.67890123","low_24h":"62800.00","high_24h":"64500.00","volume_30d":"412345.12345678","best_bid":"64123.44","best_bid_size":"0.01500000","best_ask":"64123.46","best_ask_size":"0.25000000","side":"buy","time":"2026-11-25T12:34:56.789012Z","trade_id":712345678,"last_size":"0.00123400","bids":[["64123.44","0.015"],["64123.40","0.250"],["64123.12","1.100"],["64122.90","0.004"]],"asks":[["64123.46","0.250"],["64123.50","0.730"],["64124.01","2.000"],["64124.35","0.120"]]}"#;

/// Filler byte at offset `i`, a cheap function of the sequence number (or the JSON text).
#[inline]
fn filler(seq: u64, i: usize, json: bool) -> u8 {
    if json {
        JSON_TICKER[(i - MIN_SIZE) % JSON_TICKER.len()]
    } else {
        (seq as u8).wrapping_add(i as u8) ^ 0x5a
    }
}

/// Writes a payload for message `seq` scheduled at `sched_ns` into `out` (its length is the
/// payload size, at least [`MIN_SIZE`]); `json` picks the JSON filler.
pub fn encode(out: &mut [u8], seq: u64, sched_ns: u64, json: bool) {
    debug_assert!(out.len() >= MIN_SIZE);
    out[..8].copy_from_slice(&seq.to_le_bytes());
    out[8..16].copy_from_slice(&sched_ns.to_le_bytes());
    for (i, b) in out.iter_mut().enumerate().skip(MIN_SIZE) {
        *b = filler(seq, i, json);
    }
}

/// Reads `(seq, sched_ns)` from a received payload of `expected_len` bytes, checking the filler.
pub fn decode(payload: &[u8], expected_len: usize, json: bool) -> Result<(u64, u64), PayloadError> {
    if payload.len() < MIN_SIZE || payload.len() != expected_len {
        return Err(PayloadError::BadLength);
    }
    let mut a = [0u8; 8];
    a.copy_from_slice(&payload[..8]);
    let seq = u64::from_le_bytes(a);
    a.copy_from_slice(&payload[8..16]);
    let sched = u64::from_le_bytes(a);
    let ok = payload
        .iter()
        .enumerate()
        .skip(MIN_SIZE)
        .all(|(i, &b)| b == filler(seq, i, json));
    if ok {
        Ok((seq, sched))
    } else {
        Err(PayloadError::Corrupt)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        for json in [false, true] {
            for size in [16usize, 17, 64, 300, 2000] {
                let mut buf = vec![0u8; size];
                encode(&mut buf, 0x0102_0304_0506_0708, 987_654_321_000, json);
                assert_eq!(
                    decode(&buf, size, json),
                    Ok((0x0102_0304_0506_0708, 987_654_321_000))
                );
            }
        }
        let mut buf = vec![0u8; 64];
        encode(&mut buf, 1, 2, true);
        assert!(buf[16..].starts_with(b"{\"type\":\"ticker\""));
        assert_eq!(decode(&buf, 64, false), Err(PayloadError::Corrupt));
    }

    #[test]
    fn rejects_wrong_length_and_corruption() {
        let mut buf = vec![0u8; 64];
        encode(&mut buf, 42, 7, false);
        assert_eq!(decode(&buf[..15], 15, false), Err(PayloadError::BadLength));
        assert_eq!(decode(&buf, 65, false), Err(PayloadError::BadLength));
        buf[40] ^= 1;
        assert_eq!(decode(&buf, 64, false), Err(PayloadError::Corrupt));
        // Another sequence number with this filler is an invented message.
        let mut buf = vec![0u8; 64];
        encode(&mut buf, 42, 7, false);
        buf[0] = 43;
        assert_eq!(decode(&buf, 64, false), Err(PayloadError::Corrupt));
    }
}
