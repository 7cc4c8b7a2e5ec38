//! Reading the HTTP upgrade response (and, for a `--v1` subscriber, sending the subscribe
//! request), then counting the connection as established.

use std::io::{self, Read};

use super::{Conn, Ctx, State, Step};
use crate::client::errkind::io_kind;
use crate::client::{frame, handshake, v1};
use crate::clock::now_ns;

impl Conn {
    /// Reads the upgrade response; on success switches to `Open`.
    pub(super) fn read_upgrade(&mut self, ctx: &mut Ctx) -> Result<Step, String> {
        let mut chunk = [0u8; 2048];
        // Bounded: the response may not exceed MAX_RESPONSE, checked by parse_response.
        loop {
            match self.stream.read(&mut chunk) {
                Ok(0) => return Err(format!("{}_eof", self.upgrade_stage())),
                Ok(n) => self.inbuf.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(Step::Idle),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(io_kind(self.upgrade_stage(), &e)),
            }
            let accept = self.accept.as_deref().unwrap_or("");
            match handshake::parse_response(&self.inbuf, accept) {
                Ok(None) => continue,
                Err(e) => return Err(e.kind()),
                Ok(Some(n)) => {
                    if self.v1 && !v1::accepted(&self.inbuf[..n]) {
                        return Err("v1_not_accepted".into());
                    }
                    self.inbuf.drain(..n);
                    self.inbuf.shrink_to_fit();
                    self.accept = None;
                    if self.backlog() == 0 {
                        // Release the request buffer: idle connections should cost little.
                        self.out = Vec::new();
                        self.out_pos = 0;
                    }
                    let now = now_ns();
                    if self.v1 {
                        // Ready (and timed) only once `subscribed` is back.
                        let path = &ctx.cfg.targets[self.target].path;
                        let request = v1::subscribe_request(v1::topic_of(path));
                        let mask = ctx.mask();
                        frame::push_frame(&mut self.out, frame::OP_TEXT, &request, mask);
                        self.state = State::Subscribing;
                        self.flush().map_err(|e| io_kind("subscribe", &e))?;
                    } else {
                        self.state = State::Open;
                        self.mark_ready(ctx, now);
                    }
                    if !self.inbuf.is_empty() {
                        // Frames that came with the response; process them before more reads.
                        let mut data = std::mem::take(&mut self.inbuf);
                        let (used, closed) = self.process(ctx, &mut data, now)?;
                        data.drain(..used);
                        self.inbuf = data;
                        if closed {
                            return Ok(Step::Closed);
                        }
                    }
                    if self.state == State::Subscribing {
                        return Ok(Step::Idle);
                    }
                    return Ok(Step::Upgraded);
                }
            }
        }
    }

    /// Counts the connection as established, `now`: after the 101, or for a `--v1`
    /// subscriber after `subscribed`.
    pub(super) fn mark_ready(&mut self, ctx: &mut Ctx, now: u64) {
        let lat = now.saturating_sub(self.started_ns).max(1);
        // Folded into stats.connect_latency at the next progress tick.
        ctx.conn_interval.saturating_record(lat);
        ctx.stats.connected += 1;
        ctx.stats.last_connected_ns = ctx.stats.last_connected_ns.max(now);
    }
}
