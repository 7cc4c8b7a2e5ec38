//! permessage-deflate (RFC 7692), shaped for fan-out: negotiation of the
//! `Sec-WebSocket-Extensions` offers, and the per-worker compressor and inflater.
//!
//! Herald always answers with `server_no_context_takeover` and `client_no_context_takeover`
//! (RFC 7692 7.1.1.1 and 7.1.1.2 let a server add both). Every message is therefore a complete
//! deflate stream of its own:
//! - a message is compressed once per worker and the SAME frame goes to every subscriber there
//!   that negotiated the extension (a sliding window shared with one peer would make the
//!   bytes different for each one);
//! - client messages are inflated by one inflater per worker, reset per message, so a
//!   connection keeps no zlib state at all (the agreement is two bytes on `Conn`).
//!
//! `server_max_window_bits=N` (8..=15) is honoured without a compressor per window size: the
//! shared frame is compressed with a 32 KiB window, and a back-reference can never reach
//! farther than the start of the message, so the frame is valid for a peer's 2^N-byte window
//! whenever the payload is at most 2^N bytes. Longer messages go to that peer uncompressed
//! (RSV1 clear is always allowed). This also covers N = 8, which zlib itself cannot produce
//! (it silently uses 9), so no offer has to be declined for its window size.
//! `client_max_window_bits` is accepted and never answered: a 32 KiB inflater reads any
//! client window, and RFC 7692 7.1.2.2 lets the server omit it.
//!
//! Invalid offers (unknown, duplicate or malformed parameters, a bad window value) are
//! declined, as RFC 7692 section 5 says ("MUST decline"), and the next offer is tried; with
//! none acceptable the 101 simply carries no extension. Herald never fails a handshake over
//! `Sec-WebSocket-Extensions`.

use std::io::Cursor;

use bytes::Bytes;
use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};
use tungstenite::protocol::frame::coding::OpCode;
use tungstenite::protocol::frame::FrameHeader;

/// The extension's registered name.
pub const EXTENSION: &str = "permessage-deflate";

/// The tail a sync flush ends with; RFC 7692 7.2.1 removes it from the wire and 7.2.2 puts it
/// back before inflating.
const SYNC_TAIL: [u8; 4] = [0x00, 0x00, 0xff, 0xff];

/// zlib's default level: on JSON it is within a few percent of level 9 at a fraction of the
/// cost, and the cost is paid once per message per worker, not per subscriber.
const LEVEL: u32 = 6;

/// Inflater output grows in steps of at most this much, so a bomb is stopped within one step
/// past `--max-message`.
const INFLATE_STEP: usize = 64 * 1024;

/// What one connection agreed to. Two bytes, `Copy`: it lives on `Conn` and is all the
/// per-connection state compression needs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Agreement {
    on: bool,
    /// The `server_max_window_bits` the client asked for (8..=15), or 0 when it did not.
    server_window_bits: u8,
}

impl Agreement {
    /// No extension: frames with RSV1 are a protocol error and nothing is compressed.
    pub const OFF: Agreement = Agreement {
        on: false,
        server_window_bits: 0,
    };

    /// Whether permessage-deflate was negotiated.
    pub fn is_on(self) -> bool {
        self.on
    }

    /// The `Sec-WebSocket-Extensions` value for the 101 response, `None` when declined.
    pub fn response_header(self) -> Option<String> {
        if !self.on {
            return None;
        }
        let mut value =
            format!("{EXTENSION}; server_no_context_takeover; client_no_context_takeover");
        if self.server_window_bits != 0 {
            value.push_str(&format!(
                "; server_max_window_bits={}",
                self.server_window_bits
            ));
        }
        Some(value)
    }

    /// Whether a message of `payload_len` bytes, compressed on its own, may go to this peer
    /// compressed: no back-reference in it can be longer than the message (see module docs).
    pub fn fits_window(self, payload_len: usize) -> bool {
        self.on && (self.server_window_bits == 0 || payload_len <= 1 << self.server_window_bits)
    }

    /// Index of this peer's window class (0 = unlimited, else the window bits 8..=15).
    fn class(self) -> usize {
        match self.server_window_bits {
            0 => 0,
            bits => usize::from(bits) - 7,
        }
    }
}

/// Pick the first acceptable permessage-deflate offer among the request's
/// `Sec-WebSocket-Extensions` header values (several headers are one comma-separated list,
/// RFC 7230 3.2.2). Other extensions are ignored; unacceptable offers are declined.
pub fn negotiate<'a>(header_values: impl IntoIterator<Item = &'a str>) -> Agreement {
    for value in header_values {
        for offer in split_outside_quotes(value, b',') {
            if let Some(agreement) = accept_offer(offer) {
                return agreement;
            }
        }
    }
    Agreement::OFF
}

/// One `name; param; param=value` element: `Some` if it is a permessage-deflate offer Herald
/// can honour.
fn accept_offer(offer: &str) -> Option<Agreement> {
    let mut parts = split_outside_quotes(offer, b';');
    let name = parts.next()?.trim();
    if !name.eq_ignore_ascii_case(EXTENSION) {
        return None;
    }
    // RFC 7692 section 5: unknown, duplicate or invalid parameters decline the offer.
    let mut seen = [false; 4];
    let mut agreement = Agreement {
        on: true,
        server_window_bits: 0,
    };
    for param in parts {
        let (name, value) = match param.split_once('=') {
            Some((n, v)) => (n.trim(), Some(unquote(v.trim())?)),
            None => (param.trim(), None),
        };
        let index = [
            "server_no_context_takeover",
            "client_no_context_takeover",
            "server_max_window_bits",
            "client_max_window_bits",
        ]
        .iter()
        .position(|known| name.eq_ignore_ascii_case(known))?;
        if std::mem::replace(&mut seen[index], true) {
            return None;
        }
        match (index, value) {
            (0 | 1, None) => {}
            (0 | 1, Some(_)) => return None,
            (2, Some(v)) => agreement.server_window_bits = window_bits(&v)?,
            (2, None) => return None,
            (3, Some(v)) => {
                window_bits(&v)?;
            }
            _ => {} // client_max_window_bits without a value: a hint we need not answer
        }
    }
    Some(agreement)
}

/// `8`..`15`, written as RFC 7692 7.1.2 says: decimal, no leading zero, no sign.
fn window_bits(value: &str) -> Option<u8> {
    if value.starts_with('0') || !value.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    value.parse().ok().filter(|b| (8..=15).contains(b))
}

/// A token, or a quoted-string whose content (after `\` escapes) is used as the value
/// (RFC 6455 9.1 allows both; RFC 7692 requires the unquoted form to be a token).
fn unquote(value: &str) -> Option<String> {
    let Some(inner) = value.strip_prefix('"') else {
        return is_token(value).then(|| value.to_owned());
    };
    let inner = inner.strip_suffix('"')?;
    let mut out = String::with_capacity(inner.len());
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => out.push(chars.next()?),
            '"' => return None,
            c => out.push(c),
        }
    }
    is_token(&out).then_some(out)
}

/// RFC 7230 `token`: one or more visible characters other than separators.
fn is_token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_graphic() && !b"\"(),/:;<=>?@[\\]{}".contains(&b))
}

/// Split at `sep` where it is not inside a quoted-string.
fn split_outside_quotes(s: &str, sep: u8) -> impl Iterator<Item = &str> {
    let mut rest = Some(s);
    std::iter::from_fn(move || {
        let s = rest?;
        let (mut quoted, mut escaped) = (false, false);
        for (i, b) in s.bytes().enumerate() {
            match b {
                _ if escaped => escaped = false,
                b'\\' if quoted => escaped = true,
                b'"' => quoted = !quoted,
                _ if b == sep && !quoted => {
                    rest = Some(&s[i + 1..]);
                    return Some(&s[..i]);
                }
                _ => {}
            }
        }
        rest = None;
        Some(s)
    })
}

/// A client message that failed to inflate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InflateError {
    /// Not a valid deflate stream.
    Corrupt,
    /// It inflates past `--max-message` (a compression bomb, or just too big).
    TooLarge,
}

/// Compression and inflation state of one worker: created on first use, so a server with
/// `--compression off`, or no client that negotiated it, allocates no zlib state.
#[derive(Default)]
pub struct Codec {
    compress: Option<Box<Compress>>,
    decompress: Option<Box<Decompress>>,
    /// Reused output buffer (compressed or inflated bytes).
    buf: Vec<u8>,
}

impl std::fmt::Debug for Codec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Codec")
            .field("compress", &self.compress.is_some())
            .field("decompress", &self.decompress.is_some())
            .finish()
    }
}

impl Codec {
    /// Compress `payload` as one message and frame it (final, RSV1 set, sync tail removed).
    /// `None` when compression would not make it smaller: the plain frame is then as good
    /// and costs the peer no inflating.
    pub fn compress_frame(&mut self, opcode: OpCode, payload: &[u8]) -> Option<Bytes> {
        let compress = self
            .compress
            .get_or_insert_with(|| Box::new(Compress::new(Compression::new(LEVEL), false)));
        compress.reset(); // server_no_context_takeover: every message starts afresh
        let out = &mut self.buf;
        out.clear();
        out.reserve(payload.len() + payload.len() / 1000 + 64);
        let start = compress.total_in();
        loop {
            let consumed = (compress.total_in() - start) as usize;
            let before = out.len();
            let status = compress
                .compress_vec(&payload[consumed..], out, FlushCompress::Sync)
                .ok()?;
            let done = (compress.total_in() - start) as usize == payload.len()
                && out.len() < out.capacity(); // room left: the flush is complete
            if done || status == Status::StreamEnd {
                break;
            }
            if out.len() == before && out.len() < out.capacity() {
                return None; // no progress with room to spare: give up, send it plain
            }
            out.reserve(out.capacity().max(64));
        }
        let body = out.strip_suffix(&SYNC_TAIL)?;
        if body.len() >= payload.len() {
            return None;
        }
        let header = FrameHeader {
            is_final: true,
            rsv1: true,
            rsv2: false,
            rsv3: false,
            opcode,
            mask: None,
        };
        let mut frame = Vec::with_capacity(header.len(body.len() as u64) + body.len());
        // Writing into a Vec cannot fail.
        let _ = header.format(body.len() as u64, &mut frame);
        frame.extend_from_slice(body);
        self.shrink();
        Some(Bytes::from(frame))
    }

    /// Inflate one whole client message (its frames' payloads concatenated) and return the
    /// plain payload, never holding more than about `max` bytes of output: past `max` it
    /// stops with [`InflateError::TooLarge`] whatever the input claims.
    pub fn inflate(&mut self, input: &[u8], max: usize) -> Result<&[u8], InflateError> {
        let decompress = self
            .decompress
            .get_or_insert_with(|| Box::new(Decompress::new(false)));
        decompress.reset(false); // client_no_context_takeover: every message starts afresh
        let out = &mut self.buf;
        out.clear();
        'inputs: for chunk in [input, &SYNC_TAIL[..]] {
            let start = decompress.total_in();
            loop {
                let consumed = (decompress.total_in() - start) as usize;
                if out.len() == out.capacity() {
                    if out.len() > max {
                        return Err(InflateError::TooLarge);
                    }
                    out.reserve_exact(INFLATE_STEP.min(max + 1 - out.len()));
                }
                let before = out.len();
                let status = decompress
                    .decompress_vec(&chunk[consumed..], out, FlushDecompress::Sync)
                    .map_err(|_| InflateError::Corrupt)?;
                if out.len() > max {
                    return Err(InflateError::TooLarge);
                }
                let consumed_now = (decompress.total_in() - start) as usize;
                if status == Status::StreamEnd {
                    break 'inputs; // a final block (BFINAL): the message ends here
                }
                if consumed_now == chunk.len() && out.len() < out.capacity() {
                    break; // all input in, and room left: nothing more is pending
                }
                if consumed_now == consumed && out.len() == before && out.len() < out.capacity() {
                    return Err(InflateError::Corrupt); // stuck
                }
            }
        }
        Ok(&self.buf)
    }

    /// A huge message should not pin its buffer for the worker's life.
    fn shrink(&mut self) {
        if self.buf.capacity() > 256 * 1024 {
            self.buf = Vec::new();
        }
    }

    /// Release the inflate buffer after its bytes were copied out (see [`Codec::inflate`]).
    pub fn done_inflating(&mut self) {
        self.shrink();
    }
}

/// The compressed side of one topic batch on one worker, built lazily when the first
/// subscriber that negotiated deflate is written to: each message is compressed at most once,
/// and the corked buffer for each window class at most once.
#[derive(Debug, Default)]
pub struct BatchFrames {
    /// Per message: its compressed frame and payload length, `None` where it goes plain
    /// (under `--compress-min`, or not smaller compressed). Empty until first needed.
    frames: Vec<(Option<Bytes>, usize)>,
    /// The batch corked for each window class (see [`Agreement::class`]).
    corks: [Option<Bytes>; 9],
}

/// One message of a turn's batch as the compressor reads it: its server frame. Implemented
/// for the `herald.v1` envelopes (`Bytes`) and, by the feed, for its staged messages.
pub trait Frame {
    fn frame(&self) -> &Bytes;
}

impl Frame for Bytes {
    fn frame(&self) -> &Bytes {
        self
    }
}

impl BatchFrames {
    /// The bytes for a peer with `agreement`: the whole batch corked (as `fanout::cork` does),
    /// with the compressed frame of each message that has one and fits the peer's window.
    /// `None` for a peer without the extension: it gets the plain corked buffer.
    pub fn cork(
        &mut self,
        codec: &mut Codec,
        batch: &[impl Frame],
        agreement: Agreement,
        min: usize,
    ) -> Option<&Bytes> {
        if !agreement.is_on() {
            return None;
        }
        let class = agreement.class();
        if self.corks[class].is_none() {
            self.build(codec, batch, min);
            let corked = if batch.len() == 1 {
                self.frame(batch, 0, agreement)
            } else {
                let parts: Vec<Bytes> = (0..batch.len())
                    .map(|i| self.frame(batch, i, agreement))
                    .collect();
                Bytes::from(parts.concat())
            };
            self.corks[class] = Some(corked);
        }
        self.corks[class].as_ref()
    }

    /// Message `i` of the batch as this peer gets it (for a subscriber whose own messages
    /// are skipped, `--no-echo`).
    pub fn message(
        &mut self,
        codec: &mut Codec,
        batch: &[impl Frame],
        i: usize,
        agreement: Agreement,
        min: usize,
    ) -> Bytes {
        if !agreement.is_on() {
            return batch[i].frame().clone();
        }
        self.build(codec, batch, min);
        self.frame(batch, i, agreement)
    }

    fn frame(&self, batch: &[impl Frame], i: usize, agreement: Agreement) -> Bytes {
        match &self.frames[i] {
            (Some(compressed), len) if agreement.fits_window(*len) => compressed.clone(),
            _ => batch[i].frame().clone(),
        }
    }

    fn build(&mut self, codec: &mut Codec, batch: &[impl Frame], min: usize) {
        if !self.frames.is_empty() {
            return;
        }
        self.frames = (0..batch.len())
            .map(|i| match split_frame(batch[i].frame()) {
                Some((opcode, payload)) if payload.len() >= min => {
                    (codec.compress_frame(opcode, payload), payload.len())
                }
                Some((_, payload)) => (None, payload.len()),
                None => (None, 0),
            })
            .collect();
    }
}

/// A server frame's opcode and payload (Herald's own frames: unmasked, final).
fn split_frame(frame: &[u8]) -> Option<(OpCode, &[u8])> {
    let mut cursor = Cursor::new(frame);
    let (header, len) = FrameHeader::parse(&mut cursor).ok()??;
    let start = cursor.position() as usize;
    let payload = frame.get(start..start.checked_add(usize::try_from(len).ok()?)?)?;
    Some((header.opcode, payload))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tungstenite::protocol::frame::coding::Data;

    fn offer(value: &str) -> Option<String> {
        negotiate([value]).response_header()
    }

    const BASE: &str = "permessage-deflate; server_no_context_takeover; client_no_context_takeover";

    #[test]
    fn browsers_offer_is_accepted_with_both_no_context_takeovers() {
        assert_eq!(
            offer("permessage-deflate; client_max_window_bits").as_deref(),
            Some(BASE)
        );
        assert_eq!(offer("permessage-deflate").as_deref(), Some(BASE));
        assert_eq!(offer("x-webkit-deflate-frame").as_deref(), None);
        assert_eq!(offer("").as_deref(), None);
    }

    #[test]
    fn server_window_is_echoed() {
        for bits in 8..=15 {
            let got = offer(&format!(
                "permessage-deflate; server_max_window_bits={bits}"
            ));
            assert_eq!(got, Some(format!("{BASE}; server_max_window_bits={bits}")));
        }
        assert_eq!(
            offer("permessage-deflate; server_max_window_bits=\"10\"; client_max_window_bits=9"),
            Some(format!("{BASE}; server_max_window_bits=10"))
        );
    }

    #[test]
    fn invalid_offers_are_declined_and_the_next_one_is_tried() {
        for bad in [
            "permessage-deflate; server_max_window_bits",
            "permessage-deflate; server_max_window_bits=7",
            "permessage-deflate; server_max_window_bits=16",
            "permessage-deflate; server_max_window_bits=010",
            "permessage-deflate; server_max_window_bits=+9",
            "permessage-deflate; client_max_window_bits=99",
            "permessage-deflate; server_no_context_takeover=1",
            "permessage-deflate; server_no_context_takeover; server_no_context_takeover",
            "permessage-deflate; client_max_window_bits; client_max_window_bits=10",
            "permessage-deflate; mystery",
            "permessage-deflate; server_max_window_bits=\"1 0\"",
            "permessage-deflate; server_max_window_bits=\"10",
        ] {
            assert_eq!(offer(bad), None, "{bad}");
            if bad.matches('"').count() % 2 == 1 {
                continue; // an open quote swallows the rest of the header
            }
            let with_fallback = format!("{bad}, permessage-deflate; client_max_window_bits");
            assert_eq!(offer(&with_fallback).as_deref(), Some(BASE), "{bad}");
        }
    }

    #[test]
    fn offers_across_headers_and_other_extensions() {
        let agreement = negotiate([
            "foo; bar=\"a,b;c\"",
            "permessage-deflate; server_max_window_bits=12, permessage-deflate",
        ]);
        assert_eq!(
            agreement.response_header(),
            Some(format!("{BASE}; server_max_window_bits=12"))
        );
        assert!(agreement.fits_window(4096));
        assert!(!agreement.fits_window(4097));
        assert!(!Agreement::OFF.fits_window(1));
        assert_eq!(
            negotiate(["PerMessage-Deflate ; Client_Max_Window_Bits = 10"]).response_header(),
            Some(BASE.to_owned())
        );
    }

    #[test]
    fn compressed_frames_round_trip_and_stay_bounded() {
        let mut codec = Codec::default();
        let text = "{\"price\":101.25,\"symbol\":\"BTC-USD\"}".repeat(20);
        let frame = codec
            .compress_frame(OpCode::Data(Data::Text), text.as_bytes())
            .expect("repetitive JSON compresses");
        assert_eq!(frame[0], 0xC1, "FIN + RSV1 + text");
        let (_, body) = split_frame(&frame).unwrap();
        assert!(!body.ends_with(&SYNC_TAIL));
        let body = body.to_vec();
        assert_eq!(codec.inflate(&body, 1 << 20), Ok(text.as_bytes()));
        // The same inflater serves the next message afresh.
        assert_eq!(codec.inflate(&body, 1 << 20), Ok(text.as_bytes()));
        assert_eq!(
            codec.inflate(&body, text.len() - 1),
            Err(InflateError::TooLarge)
        );
        assert_eq!(
            codec.inflate(&[0xff; 16], 1 << 20),
            Err(InflateError::Corrupt)
        );
        // Random-looking bytes do not shrink: sent plain.
        let noise: Vec<u8> = (0..200u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
            .collect();
        assert_eq!(
            codec.compress_frame(OpCode::Data(Data::Binary), &noise),
            None
        );
    }

    #[test]
    fn a_bomb_stops_near_the_limit() {
        let mut codec = Codec::default();
        let zeros = vec![0u8; 8 << 20];
        let frame = codec
            .compress_frame(OpCode::Data(Data::Binary), &zeros)
            .unwrap();
        let body = split_frame(&frame).unwrap().1.to_vec();
        assert!(body.len() < 16 * 1024, "8 MiB of zeros is tiny compressed");
        assert_eq!(codec.inflate(&body, 1 << 20), Err(InflateError::TooLarge));
        assert!(codec.buf.capacity() <= (1 << 20) + INFLATE_STEP);
    }
}
