//! The connect ramp: opening the loop's share of the connections at `--connect-rate`, at most
//! `--max-inflight` (shared by the loops) at a time, and timing out attempts that stall.

use mio::{Interest, Token};

use super::EventLoop;
use crate::child::conn::{Conn, State};
use crate::cli::Mode;
use crate::client::dial::open_socket;
use crate::client::errkind::io_kind;
use crate::client::handshake;
use crate::client::transport::Transport;
use crate::schedule::connect_due_ns;

impl EventLoop {
    /// Starts due connection attempts within the in-flight cap.
    pub(super) fn ramp(&mut self, now: u64) {
        self.expire_inflight(now);
        if now >= self.ramp_deadline && self.next_m < self.owned {
            self.give_up_ramp();
        }
        let rate = self.ctx.cfg.connect_rate;
        // Bounded by the in-flight cap per call.
        while self.next_m < self.owned
            && self.inflight_count < self.inflight_cap
            && connect_due_ns(self.ramp_start, self.next_m, rate, self.loops) <= now
        {
            let m = self.next_m;
            self.next_m += 1;
            self.connect(m, now);
        }
    }

    /// Counts the attempts never started (ramp cut short) as errors.
    pub(super) fn give_up_ramp(&mut self) {
        let left = self.owned.saturating_sub(self.next_m);
        if left > 0 {
            *self
                .ctx
                .stats
                .errors
                .entry("not_attempted".into())
                .or_insert(0) += left;
            self.next_m = self.owned;
        }
    }

    /// Starts connecting owned connection `m`.
    fn connect(&mut self, m: u64, now: u64) {
        let g = self.id + self.loops * m;
        let cfg = self.ctx.cfg.clone();
        let t = cfg.target_of(g);
        let target = &cfg.targets[t];
        self.ctx.stats.attempted += 1;
        self.ctx.stats.first_attempt_ns = self.ctx.stats.first_attempt_ns.min(now);
        let n_targets = cfg.targets.len() as u64;
        let src_index = (g / n_targets) % self.plan.source_ips as u64;
        let sock = match open_socket(target.addr, src_index) {
            Ok(s) => s,
            Err(e) => {
                self.ctx.stats.error(&io_kind("connect", &e));
                return;
            }
        };
        let stream = match Transport::new(sock, target, self.tls.as_ref()) {
            Ok(s) => s,
            Err(kind) => {
                self.ctx.stats.error(&kind);
                return;
            }
        };
        let v1 = cfg.v1 && cfg.is_receiver(g);
        let path = match cfg.mode {
            Mode::Echo => target.echo_path(g),
            // herald.v1 takes the topic in the subscribe request, not the path.
            _ if v1 => "/".to_string(),
            _ => target.path.clone(),
        };
        let (mut req, accept) = handshake::request(target, &path, cfg.deflate);
        if v1 {
            req = crate::client::v1::offer(req);
        }
        let entry = self.conns.vacant_entry();
        let key = entry.key();
        let mut conn = Conn::new(g, &cfg, stream, req, accept);
        conn.started_ns = now;
        if let Err(e) = self.poll.registry().register(
            conn.stream.socket_mut(),
            Token(key),
            Interest::READABLE | Interest::WRITABLE,
        ) {
            self.ctx.stats.error(&io_kind("connect", &e));
            return;
        }
        entry.insert(conn);
        if let Some(s) = self.slot.get_mut(m as usize) {
            *s = key as u32 + 1;
        }
        self.inflight
            .push_back((key, g, now + cfg.connect_timeout_ns));
        self.inflight_count += 1;
    }

    /// Fails attempts whose connect timeout passed.
    pub(super) fn expire_inflight(&mut self, now: u64) {
        // Bounded by the queue length; each iteration pops one entry.
        while let Some(&(key, g, deadline)) = self.inflight.front() {
            let live = self
                .conns
                .get(key)
                .is_some_and(|c| c.g == g && c.in_flight());
            if live && deadline > now {
                break;
            }
            self.inflight.pop_front();
            if live {
                let c = &self.conns[key];
                let kind = match c.state {
                    State::Connecting => "connect_timeout",
                    State::Subscribing => "subscribe_timeout",
                    _ if c.stream.is_handshaking() => "tls_handshake_timeout",
                    _ => "upgrade_timeout",
                };
                self.fail(key, kind);
            }
        }
    }
}
