//! A child process: the parent re-executes itself as `--child N` processes to get past the
//! per-process open-file limit, and each one runs its event-loop threads and talks to the
//! parent over stdio (`crate::pipe`).
//!
//! Separate from `parent` because it runs in another process: everything here (event loops,
//! connections, delivery tracking) stays inside the child, and only the merged lines of
//! `relay.rs` leave it. The main thread only relays; a helper thread reads stdin for the go
//! signal, and end of stdin (the parent died) aborts the event loops.

mod conn;
mod event_loop;
mod relay;

use std::io::{BufRead, Write};
use std::sync::atomic::Ordering;
use std::sync::{mpsc, Arc};

use mio::{Poll, Waker};

use crate::cli::Config;
use crate::client::tls;
use crate::pipe::{parse_go, ChildMsg};
use crate::plan::{self, Plan};
use event_loop::{Setup, Signal, WAKE};

/// Writes one protocol line to the parent; a closed pipe means the parent is gone.
fn send(msg: &ChildMsg) -> bool {
    let mut out = std::io::stdout().lock();
    writeln!(out, "{}", msg.encode())
        .and_then(|_| out.flush())
        .is_ok()
}

/// Runs child process `index` (from `--child N`) to the end; returns the exit code.
pub fn run(cfg: Config, index: u32) -> i32 {
    let limits = plan::machine_limits();
    let plan = match plan::make(&cfg, &limits) {
        Ok(p) => p,
        Err(e) => {
            send(&ChildMsg::Fatal(e));
            return 1;
        }
    };
    match run_event_loops(cfg, plan, index) {
        Ok(()) => 0,
        Err(e) => {
            send(&ChildMsg::Fatal(e));
            1
        }
    }
}

/// Starts this child's event-loop threads and its stdin listener, relays until every loop
/// finished, and joins them.
fn run_event_loops(cfg: Config, plan: Plan, index: u32) -> Result<(), String> {
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
            id: index as u64 + plan.procs as u64 * local as u64,
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
    listen_for_go(signal, wakers);
    relay::relay(&rx, plan.threads as usize);
    for h in handles {
        let _ = h.join();
    }
    Ok(())
}

/// Starts the detached thread that reads the parent's `go` line (and notices end of stdin,
/// which means the parent died: abort), waking every event loop on each line.
fn listen_for_go(signal: Arc<Signal>, wakers: Vec<Arc<Waker>>) {
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
