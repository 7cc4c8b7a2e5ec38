//! WebSocket frames, sans-IO: client bytes in, complete messages and control replies out; and
//! the server-side encoder. Header parsing and formatting come from `tungstenite`; this module
//! adds the RFC 6455 rules a server must enforce and the reassembly of fragments.

use std::io::Cursor;

use bytes::Bytes;
use tungstenite::protocol::frame::coding::{CloseCode, Control, Data, OpCode};
use tungstenite::protocol::frame::FrameHeader;

use crate::deflate::{Codec, InflateError};

/// Largest control-frame payload the RFC allows.
const MAX_CONTROL_PAYLOAD: u64 = 125;

/// What a run of client bytes amounted to, in order.
#[derive(Debug, PartialEq, Eq)]
pub enum Event {
    /// A complete message, already framed for subscribers (encode once, share everywhere).
    Message(Bytes),
    /// A ping: send this pong frame back.
    Ping(Bytes),
    /// The client's close frame: send this close frame back, then end the connection.
    Close(Bytes),
}

/// A peer's protocol mistake. Each maps to exactly one close code (see [`FrameError::close_code`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("protocol error: {0}")]
    Protocol(&'static str),
    #[error("invalid UTF-8 in text")]
    InvalidUtf8,
    #[error("message too big")]
    TooLarge,
}

impl FrameError {
    /// The close code the RFC assigns to this mistake.
    pub fn close_code(&self) -> u16 {
        match self {
            FrameError::Protocol(_) => 1002,
            FrameError::InvalidUtf8 => 1007,
            FrameError::TooLarge => 1009,
        }
    }

    /// Short reason for the close frame (well under the 123-byte limit).
    pub fn reason(&self) -> &'static str {
        match self {
            FrameError::Protocol(why) => why,
            FrameError::InvalidUtf8 => "invalid utf-8",
            FrameError::TooLarge => "message too big",
        }
    }
}

/// A fragmented message being put back together. Exists only between its first and last
/// fragment, so idle connections carry none of it.
#[derive(Debug, Default)]
pub struct Assembly {
    /// `Some` while a fragmented message is open.
    kind: Option<Data>,
    payload: Vec<u8>,
    /// Prefix of `payload` known to be valid UTF-8 (text only), so validation is incremental.
    utf8_valid: usize,
    /// The message is permessage-deflate compressed (RSV1 on its first frame): `payload`
    /// holds compressed bytes, inflated and validated when the last fragment arrives.
    compressed: bool,
}

impl Assembly {
    /// True while a message is only partly received.
    pub fn is_open(&self) -> bool {
        self.kind.is_some()
    }
}

/// Decode as many whole frames from `buf` as it holds, unmasking in place. Returns how many
/// bytes were consumed; the rest is an incomplete frame to retry with more bytes. Stops after
/// a close frame (nothing after it is read).
pub fn decode(
    buf: &mut [u8],
    asm: &mut Assembly,
    max_message: usize,
    out: &mut Vec<Event>,
) -> Result<usize, FrameError> {
    decode_with(buf, asm, max_message, None, out)
}

/// [`decode`] for a connection that negotiated permessage-deflate when `inflater` is `Some`:
/// a message whose first frame has RSV1 set is inflated (at most `max_message` bytes of
/// output) and re-framed plain, so subscribers get it like any other.
pub fn decode_with(
    buf: &mut [u8],
    asm: &mut Assembly,
    max_message: usize,
    mut inflater: Option<&mut Codec>,
    out: &mut Vec<Event>,
) -> Result<usize, FrameError> {
    let mut pos = 0;
    while pos < buf.len() {
        let mut cursor = Cursor::new(&buf[pos..]);
        let (header, len) = match FrameHeader::parse(&mut cursor) {
            Ok(Some(parsed)) => parsed,
            Ok(None) => break,
            Err(_) => return Err(FrameError::Protocol("reserved opcode")),
        };
        let header_len = cursor.position() as usize;
        check_header(&header, len, asm, max_message, inflater.is_some())?;
        if ((buf.len() - pos - header_len) as u64) < len {
            break; // payload not here yet (its size was already checked against the limits)
        }
        let start = pos + header_len;
        let end = start + len as usize;
        pos = end;
        let payload = &mut buf[start..end];
        if let Some(mask) = header.mask {
            unmask(payload, mask);
        }
        match header.opcode {
            OpCode::Data(Data::Continue) => {
                asm.payload.extend_from_slice(payload);
                if asm.kind == Some(Data::Text) && !asm.compressed {
                    check_utf8_prefix(asm, header.is_final)?;
                }
                if header.is_final {
                    let kind = asm.kind.take().unwrap_or(Data::Binary);
                    let message = match (asm.compressed, inflater.as_deref_mut()) {
                        (true, Some(codec)) => inflated(codec, kind, &asm.payload, max_message)?,
                        _ => encode(OpCode::Data(kind), &asm.payload),
                    };
                    out.push(Event::Message(message));
                    asm.payload = Vec::new(); // give the memory back: idle connections hold none
                    asm.utf8_valid = 0;
                    asm.compressed = false;
                }
            }
            OpCode::Data(kind) if header.rsv1 => match inflater.as_deref_mut() {
                Some(codec) if header.is_final => {
                    out.push(Event::Message(inflated(codec, kind, payload, max_message)?))
                }
                _ => {
                    asm.kind = Some(kind);
                    asm.compressed = true;
                    asm.payload.extend_from_slice(payload);
                }
            },
            OpCode::Data(kind) if header.is_final => {
                if kind == Data::Text && std::str::from_utf8(payload).is_err() {
                    return Err(FrameError::InvalidUtf8);
                }
                out.push(Event::Message(encode(OpCode::Data(kind), payload)));
            }
            OpCode::Data(kind) => {
                asm.kind = Some(kind);
                asm.payload.extend_from_slice(payload);
                if kind == Data::Text {
                    check_utf8_prefix(asm, false)?;
                }
            }
            OpCode::Control(Control::Ping) => {
                out.push(Event::Ping(encode(OpCode::Control(Control::Pong), payload)))
            }
            OpCode::Control(Control::Pong) => {}
            OpCode::Control(Control::Close) => {
                out.push(Event::Close(close_reply(payload)?));
                return Ok(pos);
            }
            OpCode::Control(Control::Reserved(_)) => {
                return Err(FrameError::Protocol("reserved opcode"))
            }
        }
    }
    Ok(pos)
}

/// The rules a header must pass before its payload is even waited for, so an oversized
/// message is refused as soon as its length is known.
fn check_header(
    header: &FrameHeader,
    len: u64,
    asm: &Assembly,
    max_message: usize,
    deflate: bool,
) -> Result<(), FrameError> {
    // RFC 7692 6.1: RSV1 marks a compressed message, on its first frame only.
    let rsv1_allowed = deflate
        && matches!(header.opcode, OpCode::Data(kind) if kind != Data::Continue)
        && !asm.is_open();
    if (header.rsv1 && !rsv1_allowed) || header.rsv2 || header.rsv3 {
        return Err(FrameError::Protocol("reserved bits set"));
    }
    if header.mask.is_none() {
        return Err(FrameError::Protocol("client frames must be masked"));
    }
    match header.opcode {
        OpCode::Control(_) if !header.is_final => {
            Err(FrameError::Protocol("fragmented control frame"))
        }
        OpCode::Control(_) if len > MAX_CONTROL_PAYLOAD => {
            Err(FrameError::Protocol("control frame too long"))
        }
        OpCode::Control(_) => Ok(()),
        OpCode::Data(Data::Continue) if !asm.is_open() => {
            Err(FrameError::Protocol("continuation without a message"))
        }
        // Saturating: a 64-bit length near u64::MAX must not wrap past the check (found by
        // fuzzing; tests/fuzz_regressions.rs), or the decoder would buffer its "payload".
        OpCode::Data(Data::Continue)
            if (asm.payload.len() as u64).saturating_add(len) > max_message as u64 =>
        {
            Err(FrameError::TooLarge)
        }
        OpCode::Data(Data::Continue) => Ok(()),
        OpCode::Data(_) if asm.is_open() => {
            Err(FrameError::Protocol("new message inside a fragmented one"))
        }
        OpCode::Data(_) if len > max_message as u64 => Err(FrameError::TooLarge),
        OpCode::Data(_) => Ok(()),
    }
}

/// A compressed message's payload, inflated (bounded by `max_message`), validated and framed.
fn inflated(
    codec: &mut Codec,
    kind: Data,
    compressed: &[u8],
    max_message: usize,
) -> Result<Bytes, FrameError> {
    let payload = codec
        .inflate(compressed, max_message)
        .map_err(|e| match e {
            InflateError::TooLarge => FrameError::TooLarge,
            InflateError::Corrupt => FrameError::Protocol("invalid deflate data"),
        })?;
    if kind == Data::Text && std::str::from_utf8(payload).is_err() {
        return Err(FrameError::InvalidUtf8);
    }
    let frame = encode(OpCode::Data(kind), payload);
    codec.done_inflating();
    Ok(frame)
}

/// Validate the UTF-8 received so far; an incomplete character at the end is fine until the
/// final fragment, an invalid one fails at once.
fn check_utf8_prefix(asm: &mut Assembly, is_final: bool) -> Result<(), FrameError> {
    match std::str::from_utf8(&asm.payload[asm.utf8_valid..]) {
        Ok(_) => asm.utf8_valid = asm.payload.len(),
        Err(e) if e.error_len().is_none() && !is_final => asm.utf8_valid += e.valid_up_to(),
        Err(_) => return Err(FrameError::InvalidUtf8),
    }
    Ok(())
}

/// Validate a client's close payload and build the echoing reply.
fn close_reply(payload: &[u8]) -> Result<Bytes, FrameError> {
    match payload {
        [] => Ok(encode(OpCode::Control(Control::Close), &[])),
        [_] => Err(FrameError::Protocol("close payload of one byte")),
        [hi, lo, reason @ ..] => {
            let code = u16::from_be_bytes([*hi, *lo]);
            if !is_valid_close_code(code) {
                return Err(FrameError::Protocol("invalid close code"));
            }
            if std::str::from_utf8(reason).is_err() {
                return Err(FrameError::InvalidUtf8);
            }
            Ok(close_frame(code, ""))
        }
    }
}

/// Codes a peer may send (RFC 6455 section 7.4): the defined ones and 3000–4999.
fn is_valid_close_code(code: u16) -> bool {
    let known = CloseCode::from(code);
    match code {
        1000..=1003 | 1007..=1011 => known.is_allowed(),
        3000..=4999 => true,
        _ => false,
    }
}

/// Frame a payload as the server sends it: final, unmasked. Unmasked server frames are the
/// same bytes for every subscriber, which is what lets one encoding serve them all.
pub fn encode(opcode: OpCode, payload: &[u8]) -> Bytes {
    let header = FrameHeader {
        is_final: true,
        rsv1: false,
        rsv2: false,
        rsv3: false,
        opcode,
        mask: None,
    };
    let mut out = Vec::with_capacity(header.len(payload.len() as u64) + payload.len());
    // Writing into a Vec cannot fail.
    let _ = header.format(payload.len() as u64, &mut out);
    out.extend_from_slice(payload);
    Bytes::from(out)
}

/// The data type and payload of a frame this server encoded (final, unmasked): what history
/// replays and `herald.v1` envelopes are built from.
pub fn payload_of(frame: &[u8]) -> (Data, &[u8]) {
    let data = match frame.first().map(|b| b & 0x0f) {
        Some(0x1) => Data::Text,
        _ => Data::Binary,
    };
    let start = match frame.get(1).map(|b| b & 0x7f) {
        Some(126) => 4,
        Some(127) => 10,
        _ => 2,
    };
    (data, frame.get(start..).unwrap_or_default())
}

/// A close frame with a code and a short reason.
pub fn close_frame(code: u16, reason: &str) -> Bytes {
    let mut payload = Vec::with_capacity(2 + reason.len());
    payload.extend_from_slice(&code.to_be_bytes());
    payload.extend_from_slice(reason.as_bytes());
    encode(OpCode::Control(Control::Close), &payload)
}

/// A ping frame for keep-alive.
pub fn ping_frame() -> Bytes {
    encode(OpCode::Control(Control::Ping), b"herald")
}

/// XOR the client's mask over a payload, four bytes at a time.
fn unmask(payload: &mut [u8], mask: [u8; 4]) {
    let word = u32::from_ne_bytes(mask);
    let mut chunks = payload.chunks_exact_mut(4);
    for chunk in &mut chunks {
        let v = u32::from_ne_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]) ^ word;
        chunk.copy_from_slice(&v.to_ne_bytes());
    }
    for (i, b) in chunks.into_remainder().iter_mut().enumerate() {
        *b ^= mask[i];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A masked client frame.
    fn client_frame(first: u8, payload: &[u8]) -> Vec<u8> {
        let mask = [1, 2, 3, 4];
        let mut out = vec![first];
        match payload.len() {
            n if n < 126 => out.push(0x80 | n as u8),
            n if n < 65536 => {
                out.push(0x80 | 126);
                out.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                out.push(0x80 | 127);
                out.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        out.extend_from_slice(&mask);
        out.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
        out
    }

    fn run(bytes: &[u8]) -> (Result<usize, FrameError>, Vec<Event>) {
        let mut buf = bytes.to_vec();
        let mut out = Vec::new();
        let r = decode(&mut buf, &mut Assembly::default(), 1 << 20, &mut out);
        (r, out)
    }

    #[test]
    fn text_message_is_reframed_unmasked() {
        let (r, out) = run(&client_frame(0x81, b"hello"));
        assert_eq!(r, Ok(11));
        assert_eq!(
            out,
            vec![Event::Message(Bytes::from_static(b"\x81\x05hello"))]
        );
    }

    #[test]
    fn fragments_reassemble_around_a_ping() {
        let mut bytes = client_frame(0x01, b"hel");
        bytes.extend(client_frame(0x89, b"p"));
        bytes.extend(client_frame(0x80, b"lo"));
        let (r, out) = run(&bytes);
        assert_eq!(r, Ok(bytes.len()));
        assert_eq!(
            out,
            vec![
                Event::Ping(Bytes::from_static(b"\x8a\x01p")),
                Event::Message(Bytes::from_static(b"\x81\x05hello"))
            ]
        );
    }

    #[test]
    fn partial_frames_wait() {
        let bytes = client_frame(0x82, &[7; 300]);
        let (r, out) = run(&bytes[..100]);
        assert_eq!(r, Ok(0));
        assert!(out.is_empty());
    }

    #[test]
    fn violations_map_to_close_codes() {
        let code = |bytes: &[u8]| run(bytes).0.unwrap_err().close_code();
        assert_eq!(code(&client_frame(0x81, &[0xff, 0xfe])), 1007);
        assert_eq!(code(&client_frame(0xC1, b"x")), 1002, "rsv1");
        assert_eq!(code(&client_frame(0x83, b"x")), 1002, "reserved opcode");
        assert_eq!(code(&client_frame(0x80, b"x")), 1002, "continuation first");
        assert_eq!(code(&client_frame(0x09, b"x")), 1002, "fragmented ping");
        assert_eq!(code(&client_frame(0x89, &[0; 126])), 1002, "long ping");
        assert_eq!(code(&client_frame(0x88, &[3])), 1002, "one-byte close");
        assert_eq!(
            code(&client_frame(0x88, &1005u16.to_be_bytes())),
            1002,
            "close code 1005"
        );
        assert_eq!(code(b"\x81\x01x"), 1002, "unmasked");
        let mut big = Vec::new();
        let r = decode(
            &mut client_frame(0x82, &[0; 100]),
            &mut Assembly::default(),
            99,
            &mut big,
        );
        assert_eq!(r.unwrap_err().close_code(), 1009);
    }

    #[test]
    fn utf8_split_across_fragments_is_fine() {
        let euro = "€".as_bytes();
        let mut bytes = client_frame(0x01, &euro[..1]);
        bytes.extend(client_frame(0x80, &euro[1..]));
        let (r, out) = run(&bytes);
        assert_eq!(r, Ok(bytes.len()));
        assert_eq!(out.len(), 1);
    }

    /// Raw deflate of `data`, sync-flushed, tail removed (RFC 7692 7.2.1).
    fn deflated(data: &[u8]) -> Vec<u8> {
        let mut c = flate2::Compress::new(flate2::Compression::default(), false);
        let mut out = Vec::with_capacity(data.len() + 64);
        c.compress_vec(data, &mut out, flate2::FlushCompress::Sync)
            .unwrap();
        out.truncate(out.len() - 4);
        out
    }

    fn run_deflate(bytes: &[u8], max: usize) -> (Result<usize, FrameError>, Vec<Event>) {
        let mut buf = bytes.to_vec();
        let mut out = Vec::new();
        let mut codec = Codec::default();
        let mut asm = Assembly::default();
        let r = decode_with(&mut buf, &mut asm, max, Some(&mut codec), &mut out);
        (r, out)
    }

    #[test]
    fn compressed_messages_are_inflated_and_reframed_plain() {
        let packed = deflated(b"hello hello hello");
        let mut bytes = client_frame(0xC1, &packed); // FIN + RSV1 + text
        let (a, b) = packed.split_at(3);
        bytes.extend(client_frame(0x41, a)); // RSV1 + text, not final
        bytes.extend(client_frame(0x89, b"p")); // a ping between the fragments
        bytes.extend(client_frame(0x80, b));
        let (r, out) = run_deflate(&bytes, 1 << 20);
        assert_eq!(r, Ok(bytes.len()));
        let plain = Event::Message(Bytes::from_static(b"\x81\x11hello hello hello"));
        assert_eq!(
            out,
            vec![
                plain,
                Event::Ping(Bytes::from_static(b"\x8a\x01p")),
                Event::Message(Bytes::from_static(b"\x81\x11hello hello hello"))
            ]
        );
    }

    #[test]
    fn deflate_violations_map_to_close_codes() {
        let code = |bytes: &[u8], max| run_deflate(bytes, max).0.unwrap_err().close_code();
        let hello = deflated(b"hello");
        assert_eq!(code(&client_frame(0xC9, b"p"), 1 << 20), 1002, "rsv1 ping");
        let mut cont = client_frame(0x01, b"he");
        cont.extend(client_frame(0xC0, &hello));
        assert_eq!(code(&cont, 1 << 20), 1002, "rsv1 continuation");
        assert_eq!(code(&client_frame(0xA1, b"x"), 1 << 20), 1002, "rsv2");
        let bad_text = deflated(&[0xff, 0xfe]);
        assert_eq!(code(&client_frame(0xC1, &bad_text), 1 << 20), 1007);
        let bomb = deflated(&[0; 100_000]);
        assert_eq!(code(&client_frame(0xC2, &bomb), 99_999), 1009, "bomb");
        assert_eq!(
            code(&client_frame(0xC2, &[0xff; 4]), 1 << 20),
            1002,
            "corrupt"
        );
        // Without the extension, RSV1 stays a protocol error.
        assert_eq!(
            run(&client_frame(0xC1, &hello)).0.unwrap_err().close_code(),
            1002
        );
    }

    #[test]
    fn close_is_echoed_and_ends_decoding() {
        let mut bytes = client_frame(0x88, &1000u16.to_be_bytes());
        let consumed = bytes.len();
        bytes.extend(client_frame(0x81, b"after"));
        let (r, out) = run(&bytes);
        assert_eq!(r, Ok(consumed));
        assert_eq!(out, vec![Event::Close(close_frame(1000, ""))]);
    }
}
