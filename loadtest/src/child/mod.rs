//! A worker process: runs its event-loop threads and talks to the parent over stdio.
//!
//! The main thread only relays: it merges its threads' progress into one line a second, says
//! `ready` when every thread finished connecting, and prints the merged final report. A helper
//! thread reads stdin for the go signal; end of stdin (the parent died) aborts the workers.

mod conn;
mod event_loop;

use std::io::{BufRead, Write};
use std::sync::atomic::Ordering;
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use mio::{Poll, Waker};
use nix::sys::resource::{getrusage, UsageWho};

use crate::cli::Config;
use crate::client::tls;
use crate::pipe::{parse_go, ChildMsg};
use crate::plan::{self, Plan};
use crate::stats::{merge_hist, new_histogram, Stats};
use event_loop::{Report, Setup, Signal, WAKE};

/// Writes one protocol line to the parent; a closed pipe means the parent is gone.
fn send(msg: &ChildMsg) -> bool {
    let mut out = std::io::stdout().lock();
    writeln!(out, "{}", msg.encode())
        .and_then(|_| out.flush())
        .is_ok()
}

/// Runs worker process `index`; returns the exit code.
pub fn run(cfg: Config, index: u32) -> i32 {
    let limits = plan::machine_limits();
    let plan = match plan::make(&cfg, &limits) {
        Ok(p) => p,
        Err(e) => {
            send(&ChildMsg::Fatal(e));
            return 1;
        }
    };
    match run_workers(cfg, plan, index) {
        Ok(()) => 0,
        Err(e) => {
            send(&ChildMsg::Fatal(e));
            1
        }
    }
}

fn run_workers(cfg: Config, plan: Plan, index: u32) -> Result<(), String> {
    let cfg = Arc::new(cfg);
    let tls = if cfg.uses_tls() {
        Some(tls::client_config(cfg.insecure)?)
    } else {
        None
    };
    let signal = Arc::new(Signal::default());
    let (tx, rx) = mpsc::channel();
    let mut wakers = Vec::new();
    let mut handles = Vec::new();
    for local in 0..plan.threads as usize {
        let poll = Poll::new().map_err(|e| format!("epoll: {e}"))?;
        let waker = Waker::new(poll.registry(), WAKE).map_err(|e| format!("eventfd: {e}"))?;
        wakers.push(Arc::new(waker));
        let setup = Setup {
            w: index as u64 + plan.procs as u64 * local as u64,
            local,
            cfg: cfg.clone(),
            plan,
            poll,
            signal: signal.clone(),
            tx: tx.clone(),
            tls: tls.clone(),
        };
        let h = std::thread::Builder::new()
            .name(format!("loadtest-{index}-{local}"))
            .spawn(move || event_loop::run(setup))
            .map_err(|e| format!("cannot start a thread: {e}"))?;
        handles.push(h);
    }
    drop(tx);
    {
        let signal = signal.clone();
        let wakers = wakers.clone();
        // Detached: it ends with the process (stdin may never close).
        let _ = std::thread::Builder::new()
            .name("loadtest-stdin".into())
            .spawn(move || {
                let stdin = std::io::stdin();
                let mut line = String::new();
                loop {
                    line.clear();
                    match stdin.lock().read_line(&mut line) {
                        Ok(0) | Err(_) => {
                            signal.abort.store(true, Ordering::Release);
                        }
                        Ok(_) => {
                            if let Some(t0) = parse_go(&line) {
                                signal.go_ns.store(t0, Ordering::Release);
                            }
                        }
                    }
                    for w in &wakers {
                        let _ = w.wake();
                    }
                    if signal.abort.load(Ordering::Acquire) {
                        return;
                    }
                }
            });
    }
    relay(&rx, plan.threads as usize);
    for h in handles {
        let _ = h.join();
    }
    Ok(())
}

/// Forwards merged progress once a second and the final report at the end.
fn relay(rx: &mpsc::Receiver<Report>, threads: usize) {
    let mut open = vec![0u64; threads];
    let mut errors = vec![0u64; threads];
    let (mut received, mut sent) = (0u64, 0u64);
    let mut hist = new_histogram();
    let mut ready = 0usize;
    let mut finals = 0usize;
    let mut total = Stats::default();
    // Just after the workers' own once-a-second ticks, so their reports are in.
    let mut next_tick = Instant::now() + Duration::from_millis(1100);
    // Ends when every thread reported (or all senders are gone).
    while finals < threads {
        let wait = next_tick.saturating_duration_since(Instant::now());
        match rx.recv_timeout(wait) {
            Ok(Report::Progress {
                local,
                open: o,
                received: r,
                sent: s,
                errors: e,
                hist: h,
            }) => {
                if let Some(x) = open.get_mut(local) {
                    *x = o;
                }
                if let Some(x) = errors.get_mut(local) {
                    *x = e;
                }
                received += r;
                sent += s;
                merge_hist(&mut hist, &h);
            }
            Ok(Report::Ready) => {
                ready += 1;
                if ready == threads {
                    send(&ChildMsg::Ready);
                }
            }
            Ok(Report::Final(st)) => {
                total.merge(&st);
                finals += 1;
            }
            Ok(Report::Fatal(m)) => {
                send(&ChildMsg::Fatal(m));
                finals += 1;
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        }
        if Instant::now() >= next_tick {
            next_tick += Duration::from_secs(1);
            let msg = ChildMsg::Progress {
                open: open.iter().sum(),
                received,
                sent,
                errors: errors.iter().sum(),
                hist: std::mem::replace(&mut hist, new_histogram()),
            };
            if !send(&msg) {
                return;
            }
            received = 0;
            sent = 0;
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
