//! Accounting one received data message: unwrapping a `--v1` envelope, inflating a
//! compressed one, checking its payload and topic, and counting it as delivered, duplicate or
//! out of order with its latency from the scheduled send time.

use super::tracker::Seen;
use super::{Conn, Ctx, State};
use crate::cli::{Filler, Mode};
use crate::client::{frame, payload, v1};
use crate::schedule::due_ns;

impl Conn {
    /// Accounts one received data message (for a `--v1` subscriber: takes the payload out of
    /// the envelope in place first). `Err` (an error kind) drops the connection.
    pub(super) fn on_message(
        &mut self,
        ctx: &mut Ctx,
        body: &mut [u8],
        now: u64,
    ) -> Result<(), String> {
        let body: &[u8] = if self.v1 {
            let topic = v1::topic_of(&ctx.cfg.targets[self.target].path);
            match v1::parse(body, topic) {
                Ok(v1::Reply::Message(range)) => &body[range],
                Ok(v1::Reply::Subscribed) if self.state == State::Subscribing => {
                    self.state = State::Open;
                    self.mark_ready(ctx, now);
                    return Ok(());
                }
                Ok(v1::Reply::Error(code)) => return Err(format!("v1_{code}")),
                Ok(_) => {
                    ctx.stats.error("v1_unexpected_reply");
                    return Ok(());
                }
                Err(kind) => {
                    ctx.stats.error(kind);
                    return Ok(());
                }
            }
        } else {
            body
        };
        self.count_message(ctx, body, now);
        Ok(())
    }

    /// Inflates a permessage-deflate message (RFC 7692 7.2.2: the stripped sync tail is put
    /// back) and accounts it.
    pub(super) fn on_compressed(
        &mut self,
        ctx: &mut Ctx,
        body: &[u8],
        now: u64,
    ) -> Result<(), String> {
        use flate2::{Decompress, FlushDecompress};
        let inflater = ctx
            .inflater
            .get_or_insert_with(|| Box::new(Decompress::new(false)));
        inflater.reset(false);
        let mut out = std::mem::take(&mut ctx.inflated);
        out.clear();
        for chunk in [body, &[0, 0, 0xff, 0xff][..]] {
            let start = inflater.total_in();
            while ((inflater.total_in() - start) as usize) < chunk.len()
                || out.len() == out.capacity()
            {
                if out.len() == out.capacity() {
                    if out.len() as u64 > frame::MAX_FRAME {
                        return Err("frame_too_large".into());
                    }
                    out.reserve(out.capacity().max(4096));
                }
                let used = (inflater.total_in() - start) as usize;
                let produced = out.len();
                inflater
                    .decompress_vec(&chunk[used..], &mut out, FlushDecompress::Sync)
                    .map_err(|_| "bad_deflate".to_string())?;
                let stuck = (inflater.total_in() - start) as usize == used && out.len() == produced;
                if stuck && out.len() < out.capacity() {
                    return Err("bad_deflate".into());
                }
            }
        }
        let result = self.on_message(ctx, &mut out, now);
        ctx.inflated = out;
        result
    }

    /// Accounts one received data message.
    fn count_message(&mut self, ctx: &mut Ctx, body: &[u8], now: u64) {
        ctx.stats.received += 1;
        if !self.receiver {
            // A publisher is on its topic too; with --inflight its own message coming back
            // is the acknowledgement that frees a slot.
            if ctx.cfg.inflight > 0 {
                let cfg = &ctx.cfg;
                if let Ok((k, _)) = payload::decode(body, cfg.size, cfg.payload == Filler::Json) {
                    if k % cfg.publishers == self.g {
                        ctx.acks += 1;
                    }
                }
            }
            return;
        }
        let cfg = &ctx.cfg;
        let (k, sched) = match payload::decode(body, cfg.size, cfg.payload == Filler::Json) {
            Ok(x) => x,
            Err(e) => {
                ctx.stats.error(e.kind());
                return;
            }
        };
        let publishers = cfg.publishers;
        let p = k % publishers;
        let local = k / publishers;
        let own_topic = match cfg.mode {
            Mode::Echo => p == self.g,
            _ => cfg.cluster || cfg.target_of(p) == self.target,
        };
        if !own_topic {
            ctx.stats.error("wrong_topic");
            return;
        }
        let valid = if cfg.inflight > 0 {
            // Closed loop: stamped with the actual send time.
            ctx.t0 != 0 && sched >= ctx.t0 && sched <= now
        } else {
            ctx.t0 != 0 && sched == due_ns(ctx.t0, k, cfg.rate)
        };
        if !valid {
            ctx.stats.error("corrupt_payload");
            return;
        }
        let idx = if self.trackers.len() == 1 {
            0
        } else {
            p as usize
        };
        let Some(tracker) = self.trackers.get_mut(idx) else {
            return;
        };
        let seen = tracker.observe(local);
        if !self.at_go || !ctx.measured(k, sched) {
            return;
        }
        match seen {
            Seen::Duplicate => {
                ctx.stats.duplicates += 1;
                return;
            }
            Seen::Late => ctx.stats.out_of_order += 1,
            Seen::InOrder => {}
        }
        ctx.stats.delivered += 1;
        ctx.last_delivery_ns = now;
        ctx.interval
            .saturating_record(now.saturating_sub(sched).max(1));
    }
}
