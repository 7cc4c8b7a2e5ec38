//! Reading frames through the event loop's shared buffer and dispatching them: data messages
//! (whole, fragmented or compressed) to `deliver.rs`, pings answered, closes echoed.

use std::io::{self, Read};

use super::{Conn, Ctx, State, Step};
use crate::client::errkind::io_kind;
use crate::client::frame::{self, Head};
use crate::clock::now_ns;

/// Full-buffer reads per readiness event before yielding to other connections.
const READ_BUDGET: usize = 32;
/// Flag in `Conn::frag_op` (above the 4 opcode bits): the message being reassembled is compressed.
const COMPRESSED: u8 = 0x40;

impl Conn {
    /// Reads and handles frames through the thread's shared buffer.
    pub(super) fn read_frames(&mut self, ctx: &mut Ctx) -> Result<Step, String> {
        let mut buf = std::mem::take(&mut ctx.rbuf);
        let result = self.read_frames_into(ctx, &mut buf);
        ctx.rbuf = buf;
        result
    }

    fn read_frames_into(&mut self, ctx: &mut Ctx, buf: &mut Vec<u8>) -> Result<Step, String> {
        let mut filled = self.inbuf.len();
        if buf.len() < filled * 2 {
            buf.resize(filled * 2, 0);
        }
        buf[..filled].copy_from_slice(&self.inbuf);
        self.inbuf.clear();
        let mut step = Step::MoreToRead;
        for _ in 0..READ_BUDGET {
            if filled == buf.len() {
                // One frame larger than the buffer (bounded by frame::MAX_FRAME).
                let len = buf.len();
                buf.resize(len * 2, 0);
            }
            let space = buf.len() - filled;
            let n = match self.stream.read(&mut buf[filled..]) {
                Ok(0) => {
                    return if self.state == State::Closing {
                        Ok(Step::Closed)
                    } else {
                        Err("closed_without_close_frame".into())
                    };
                }
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    step = Step::Idle;
                    break;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(io_kind("io", &e)),
            };
            filled += n;
            let now = now_ns();
            let (used, closed) = self.process(ctx, &mut buf[..filled], now)?;
            if closed {
                self.stream.close_notify();
                return Ok(Step::Closed);
            }
            buf.copy_within(used..filled, 0);
            filled -= used;
            if n < space {
                // The socket is drained; epoll reports the next arrival (edge-triggered).
                step = Step::Idle;
                break;
            }
        }
        self.inbuf.extend_from_slice(&buf[..filled]);
        if self.has_output() {
            self.flush().map_err(|e| io_kind("io", &e))?;
        }
        Ok(step)
    }

    /// Handles complete frames at the start of `data`; returns bytes used and whether the
    /// close handshake completed.
    pub(super) fn process(
        &mut self,
        ctx: &mut Ctx,
        data: &mut [u8],
        now: u64,
    ) -> Result<(usize, bool), String> {
        let mut pos = 0;
        // Bounded: every iteration consumes at least one frame header.
        while let Some(h) = frame::parse_head(&data[pos..]).map_err(|e| e.kind().to_string())? {
            let Head {
                header_len,
                payload_len,
                ..
            } = h;
            let end = pos + header_len + payload_len;
            if end > data.len() {
                break;
            }
            let body = &mut data[pos + header_len..end];
            if let Some(m) = h.mask {
                frame::apply_mask(body, m);
            }
            pos = end;
            if h.rsv1 && !ctx.cfg.deflate {
                return Err("protocol_error".into());
            }
            match h.opcode {
                frame::OP_TEXT | frame::OP_BINARY if self.frag_op == 0 => {
                    if h.fin && h.rsv1 {
                        self.on_compressed(ctx, body, now)?;
                    } else if h.fin {
                        self.on_message(ctx, body, now)?;
                    } else {
                        // COMPRESSED marks a compressed message in the opcode's spare bits.
                        self.frag_op = h.opcode | if h.rsv1 { COMPRESSED } else { 0 };
                        self.frag.clear();
                        self.frag.extend_from_slice(body);
                    }
                }
                frame::OP_CONT if self.frag_op != 0 => {
                    if (self.frag.len() + body.len()) as u64 > frame::MAX_FRAME {
                        return Err("frame_too_large".into());
                    }
                    self.frag.extend_from_slice(body);
                    if h.fin {
                        let mut msg = std::mem::take(&mut self.frag);
                        if self.frag_op & COMPRESSED != 0 {
                            self.on_compressed(ctx, &msg, now)?;
                        } else {
                            self.on_message(ctx, &mut msg, now)?;
                        }
                        self.frag = msg;
                        self.frag.clear();
                        self.frag_op = 0;
                    }
                }
                frame::OP_PING => {
                    let mask = ctx.mask();
                    frame::push_frame(&mut self.out, frame::OP_PONG, body, mask);
                }
                frame::OP_PONG => {}
                frame::OP_CLOSE => {
                    if self.state == State::Closing {
                        return Ok((pos, true));
                    }
                    // Echo the status code, as RFC 6455 §5.5.1 asks, then report the close.
                    let code = if body.len() >= 2 {
                        [body[0], body[1]]
                    } else {
                        [3, 232]
                    };
                    let mask = ctx.mask();
                    frame::push_frame(&mut self.out, frame::OP_CLOSE, &code, mask);
                    let _ = self.flush();
                    return Err("closed_by_server".into());
                }
                _ => return Err("protocol_error".into()),
            }
        }
        Ok((pos, false))
    }
}
