//! The child's main thread: merges its event loops' messages into the child's lines to the
//! parent (one progress line a second, `ready` once every loop finished connecting, and the
//! merged final stats with the process's CPU time).

use std::sync::mpsc;
use std::time::{Duration, Instant};

use nix::sys::resource::{getrusage, UsageWho};

use super::event_loop::LoopMsg;
use super::send;
use crate::pipe::{ChildMsg, Progress};
use crate::stats::{merge_hist, Stats};

/// Forwards merged progress once a second and the final stats at the end.
pub(super) fn relay(rx: &mpsc::Receiver<LoopMsg>, loops: usize) {
    // Gauges per loop (the latest value counts); deltas and latencies add up in `pending`.
    let mut open = vec![0u64; loops];
    let mut errors = vec![0u64; loops];
    let mut pending = Progress::default();
    let mut ready = 0usize;
    let mut finals = 0usize;
    let mut total = Stats::default();
    // Just after the event loops' own once-a-second ticks, so their messages are in.
    let mut next_tick = Instant::now() + Duration::from_millis(1100);
    // Ends when every loop reported (or all senders are gone).
    while finals < loops {
        let wait = next_tick.saturating_duration_since(Instant::now());
        match rx.recv_timeout(wait) {
            Ok(LoopMsg::Progress { local, progress: p }) => {
                if let Some(x) = open.get_mut(local) {
                    *x = p.open;
                }
                if let Some(x) = errors.get_mut(local) {
                    *x = p.errors;
                }
                pending.received += p.received;
                pending.sent += p.sent;
                pending.duplicates += p.duplicates;
                pending.out_of_order += p.out_of_order;
                merge_hist(&mut pending.hist, &p.hist);
            }
            Ok(LoopMsg::Ready) => {
                ready += 1;
                if ready == loops {
                    send(&ChildMsg::Ready);
                }
            }
            Ok(LoopMsg::Final(st)) => {
                total.merge(&st);
                finals += 1;
            }
            Ok(LoopMsg::Fatal(m)) => {
                send(&ChildMsg::Fatal(m));
                finals += 1;
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        }
        if Instant::now() >= next_tick {
            next_tick += Duration::from_secs(1);
            let mut line = std::mem::take(&mut pending);
            line.open = open.iter().sum();
            line.errors = errors.iter().sum();
            if !send(&ChildMsg::Progress(line)) {
                return;
            }
        }
    }
    total.cpu_ns = own_cpu_ns();
    send(&ChildMsg::Report(Box::new(total)));
}

/// CPU time (user + system) this process used so far, in ns.
fn own_cpu_ns() -> u64 {
    match getrusage(UsageWho::RUSAGE_SELF) {
        Ok(u) => {
            let t = |tv: nix::sys::time::TimeVal| {
                tv.tv_sec() as u64 * 1_000_000_000 + tv.tv_usec() as u64 * 1000
            };
            t(u.user_time()) + t(u.system_time())
        }
        Err(_) => 0,
    }
}
