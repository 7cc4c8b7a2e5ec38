//! The WebSocket frame codec (RFC 6455 §5) for the client side: masked frames out, unmasked
//! server frames in.
//!
//! Written by hand because the hot path only needs a header parser over a large shared read
//! buffer and an encoder appending into a per-connection output buffer, without allocation.

/// Continuation frame.
pub const OP_CONT: u8 = 0x0;
/// Text message frame.
pub const OP_TEXT: u8 = 0x1;
/// Binary message frame.
pub const OP_BINARY: u8 = 0x2;
/// Close frame.
pub const OP_CLOSE: u8 = 0x8;
/// Ping frame.
pub const OP_PING: u8 = 0x9;
/// Pong frame.
pub const OP_PONG: u8 = 0xA;

/// Largest frame payload accepted from a server; anything bigger is a protocol error here.
pub const MAX_FRAME: u64 = 64 << 20;

/// A parsed frame header.
#[derive(Debug, PartialEq, Eq, Clone, Copy)]
pub struct Head {
    /// Final fragment of a message.
    pub fin: bool,
    /// RSV1: a permessage-deflate compressed message (allowed only if negotiated; the caller
    /// checks).
    pub rsv1: bool,
    /// Opcode (low four bits of byte 0).
    pub opcode: u8,
    /// Bytes of header, including the masking key if present.
    pub header_len: usize,
    /// Bytes of payload after the header.
    pub payload_len: usize,
    /// Masking key, which servers must not send but which is undone if they do.
    pub mask: Option<[u8; 4]>,
}

/// Why a server frame was rejected.
#[derive(Debug, PartialEq, Eq)]
pub enum FrameError {
    /// Reserved bits set, unknown opcode, or bad control frame.
    Protocol,
    /// Payload larger than [`MAX_FRAME`].
    TooLarge,
}

impl FrameError {
    /// Error-kind name used in reports.
    pub fn kind(&self) -> &'static str {
        match self {
            FrameError::Protocol => "protocol_error",
            FrameError::TooLarge => "frame_too_large",
        }
    }
}

/// Parses a frame header at the start of `buf`; `Ok(None)` when more bytes are needed.
pub fn parse_head(buf: &[u8]) -> Result<Option<Head>, FrameError> {
    if buf.len() < 2 {
        return Ok(None);
    }
    let (b0, b1) = (buf[0], buf[1]);
    if b0 & 0x30 != 0 {
        return Err(FrameError::Protocol);
    }
    let rsv1 = b0 & 0x40 != 0;
    if rsv1 && !matches!(b0 & 0x0f, OP_TEXT | OP_BINARY) {
        return Err(FrameError::Protocol); // RFC 7692 6.1: first frame of a data message only
    }
    let fin = b0 & 0x80 != 0;
    let opcode = b0 & 0x0f;
    let masked = b1 & 0x80 != 0;
    let len7 = b1 & 0x7f;
    match opcode {
        OP_CONT | OP_TEXT | OP_BINARY => {}
        OP_CLOSE | OP_PING | OP_PONG => {
            if !fin || len7 > 125 {
                return Err(FrameError::Protocol);
            }
        }
        _ => return Err(FrameError::Protocol),
    }
    let (mut pos, len) = match len7 {
        126 => {
            if buf.len() < 4 {
                return Ok(None);
            }
            (4, u16::from_be_bytes([buf[2], buf[3]]) as u64)
        }
        127 => {
            if buf.len() < 10 {
                return Ok(None);
            }
            let mut a = [0u8; 8];
            a.copy_from_slice(&buf[2..10]);
            (10, u64::from_be_bytes(a))
        }
        n => (2, n as u64),
    };
    if len > MAX_FRAME {
        return Err(FrameError::TooLarge);
    }
    let mask = if masked {
        if buf.len() < pos + 4 {
            return Ok(None);
        }
        let m = [buf[pos], buf[pos + 1], buf[pos + 2], buf[pos + 3]];
        pos += 4;
        Some(m)
    } else {
        None
    };
    Ok(Some(Head {
        fin,
        rsv1,
        opcode,
        header_len: pos,
        payload_len: len as usize,
        mask,
    }))
}

/// XORs `data` with the masking key (masking and unmasking are the same operation).
pub fn apply_mask(data: &mut [u8], mask: [u8; 4]) {
    let word = u32::from_ne_bytes(mask);
    let mut chunks = data.chunks_exact_mut(4);
    for c in &mut chunks {
        let v = u32::from_ne_bytes([c[0], c[1], c[2], c[3]]) ^ word;
        c.copy_from_slice(&v.to_ne_bytes());
    }
    for (i, b) in chunks.into_remainder().iter_mut().enumerate() {
        *b ^= mask[i];
    }
}

/// Appends the header of a final, masked client frame and returns where the payload starts.
pub fn push_header(out: &mut Vec<u8>, opcode: u8, len: usize, mask: [u8; 4]) -> usize {
    out.push(0x80 | opcode);
    if len < 126 {
        out.push(0x80 | len as u8);
    } else if len <= u16::MAX as usize {
        out.push(0x80 | 126);
        out.extend_from_slice(&(len as u16).to_be_bytes());
    } else {
        out.push(0x80 | 127);
        out.extend_from_slice(&(len as u64).to_be_bytes());
    }
    out.extend_from_slice(&mask);
    out.len()
}

/// Appends a complete masked client frame carrying `payload`.
pub fn push_frame(out: &mut Vec<u8>, opcode: u8, payload: &[u8], mask: [u8; 4]) {
    let start = push_header(out, opcode, payload.len(), mask);
    out.extend_from_slice(payload);
    apply_mask(&mut out[start..], mask);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_frames_are_masked_and_parse_back() {
        for len in [0usize, 5, 125, 126, 65535, 65536] {
            let payload: Vec<u8> = (0..len).map(|i| i as u8).collect();
            let mut out = Vec::new();
            push_frame(&mut out, OP_BINARY, &payload, [1, 2, 3, 4]);
            let h = parse_head(&out).expect("valid").expect("complete");
            assert!(h.fin);
            assert_eq!(h.opcode, OP_BINARY);
            assert_eq!(h.payload_len, len);
            assert_eq!(h.mask, Some([1, 2, 3, 4]));
            assert_eq!(out.len(), h.header_len + len);
            let mut body = out[h.header_len..].to_vec();
            if len > 0 {
                assert_ne!(body, payload, "payload must be masked on the wire");
            }
            apply_mask(&mut body, [1, 2, 3, 4]);
            assert_eq!(body, payload);
        }
    }

    #[test]
    fn agrees_with_tungstenite() {
        use tungstenite::protocol::frame::{coding::Data, coding::OpCode, Frame};
        let mut wire = Vec::new();
        Frame::message(vec![7u8; 300], OpCode::Data(Data::Binary), true)
            .format(&mut wire)
            .expect("format");
        let h = parse_head(&wire).expect("valid").expect("complete");
        assert_eq!(
            (h.opcode, h.payload_len, h.header_len, h.mask),
            (OP_BINARY, 300, 4, None)
        );
    }

    #[test]
    fn needs_more_bytes_and_rejects_garbage() {
        assert_eq!(parse_head(&[0x82]), Ok(None));
        assert_eq!(parse_head(&[0x82, 126, 1]), Ok(None));
        assert_eq!(parse_head(&[0x82, 127, 0, 0, 0, 0]), Ok(None));
        assert_eq!(parse_head(&[0x82, 0x85, 1, 2]), Ok(None));
        assert_eq!(parse_head(&[0xa2, 0]), Err(FrameError::Protocol), "RSV2");
        assert_eq!(
            parse_head(&[0xc9, 0]),
            Err(FrameError::Protocol),
            "RSV1 on a ping"
        );
        // RSV1 on a data frame is reported; the connection refuses it unless --deflate.
        assert!(parse_head(&[0xc2, 0]).unwrap().unwrap().rsv1);
        assert_eq!(
            parse_head(&[0x83, 0]),
            Err(FrameError::Protocol),
            "reserved opcode"
        );
        assert_eq!(
            parse_head(&[0x09, 0]),
            Err(FrameError::Protocol),
            "fragmented ping"
        );
        let mut big = vec![0x82, 127];
        big.extend_from_slice(&(MAX_FRAME + 1).to_be_bytes());
        assert_eq!(parse_head(&big), Err(FrameError::TooLarge));
    }
}
