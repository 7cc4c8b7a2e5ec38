//! The parent process: checks the targets, re-executes itself as worker processes, starts
//! traffic when all are connected, prints progress, and merges the workers' reports.

pub mod report;

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

use crate::cli::{Config, Mode};
use crate::client::dial::ramp_deadline;
use crate::client::handshake::preflight;
use crate::clock::{now_ns, NS_PER_SEC};
use crate::cpu::process_cpu_ns;
use crate::pipe::ChildMsg;
use crate::plan::{self, Plan};
use crate::stats::{merge_hist, new_histogram, Stats};
use report::ServerCpu;

/// Delay between the go decision and the first scheduled message, so every worker has heard it.
const GO_LEAD_NS: u64 = 200_000_000;
/// Extra time granted past the expected end before stragglers are killed.
const GRACE_NS: u64 = 10 * NS_PER_SEC;

/// What the parent hands to the report.
pub struct Outcome {
    /// The layout used.
    pub plan: Plan,
    /// Merged stats of all workers.
    pub stats: Stats,
    /// Server CPU over the measured window, if asked for.
    pub server: Option<ServerCpu>,
    /// Whole run, seconds.
    pub wall_secs: f64,
}

/// One worker process as the parent sees it.
struct Worker {
    child: Child,
    stdin: Option<ChildStdin>,
    ready: bool,
    done: bool,
    report: Option<Stats>,
    open: u64,
    errors: u64,
}

enum Line {
    Msg(usize, String),
    Eof(usize),
}

/// Runs the whole load test; `Err` is a message for the user.
pub fn run(cfg: &Config) -> Result<Outcome, String> {
    let started = Instant::now();
    let limits = plan::machine_limits();
    let plan = plan::make(cfg, &limits)?;
    if let Some(pid) = cfg.server_pid {
        if process_cpu_ns(pid).is_none() {
            return Err(format!("--server-pid {pid}: cannot read /proc/{pid}/stat"));
        }
    }
    let probe = Duration::from_nanos(cfg.connect_timeout_ns.min(5 * NS_PER_SEC));
    let tls = if cfg.uses_tls() {
        Some(crate::client::tls::client_config(cfg.insecure)?)
    } else {
        None
    };
    let mut probed = std::collections::HashSet::new();
    for t in &cfg.targets {
        if probed.insert(t.url.clone()) {
            preflight(t, probe, tls.as_ref())?;
        }
    }
    let (tx, rx) = mpsc::channel();
    let mut workers = spawn(&plan, &tx)?;
    drop(tx);
    let result = supervise(cfg, &mut workers, &rx);
    // Reap every child, killing any that outlived the run.
    for w in workers.iter_mut() {
        let deadline = Instant::now() + Duration::from_secs(3);
        while matches!(w.child.try_wait(), Ok(None)) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        if matches!(w.child.try_wait(), Ok(None)) {
            let _ = w.child.kill();
        }
        let _ = w.child.wait();
        w.stdin = None;
    }
    let server = result?;
    let mut stats = Stats::default();
    for w in &workers {
        match &w.report {
            Some(r) => stats.merge(r),
            None => stats.error("worker_lost"),
        }
    }
    if workers.iter().all(|w| w.report.is_none()) {
        return Err("no worker process produced a report (see the messages above)".into());
    }
    Ok(Outcome {
        plan,
        stats,
        server,
        wall_secs: started.elapsed().as_secs_f64(),
    })
}

/// Starts the worker processes (this same binary with `--child N`).
fn spawn(plan: &Plan, tx: &mpsc::Sender<Line>) -> Result<Vec<Worker>, String> {
    let exe = std::env::current_exe().map_err(|e| format!("cannot find my own binary: {e}"))?;
    let user_args: Vec<std::ffi::OsString> = std::env::args_os().skip(1).collect();
    let mut workers = Vec::new();
    for i in 0..plan.procs {
        let mut child = Command::new(&exe)
            .args(&user_args)
            .args(["--procs", &plan.procs.to_string()])
            .args(["--threads", &plan.threads.to_string()])
            .args(["--source-ips", &plan.source_ips.to_string()])
            .args(["--child", &i.to_string()])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|e| format!("cannot start worker process {i}: {e}"))?;
        let stdout = child.stdout.take().ok_or("worker stdout missing")?;
        let stdin = child.stdin.take();
        let tx = tx.clone();
        let idx = i as usize;
        std::thread::Builder::new()
            .name(format!("loadtest-read-{i}"))
            .spawn(move || {
                for line in BufReader::new(stdout).lines() {
                    match line {
                        Ok(l) => {
                            if tx.send(Line::Msg(idx, l)).is_err() {
                                return;
                            }
                        }
                        Err(_) => break,
                    }
                }
                let _ = tx.send(Line::Eof(idx));
            })
            .map_err(|e| format!("cannot start a thread: {e}"))?;
        workers.push(Worker {
            child,
            stdin,
            ready: false,
            done: false,
            report: None,
            open: 0,
            errors: 0,
        });
    }
    Ok(workers)
}

/// Drives the run: go signal, progress lines, server CPU samples, collection of reports.
fn supervise(
    cfg: &Config,
    workers: &mut [Worker],
    rx: &mpsc::Receiver<Line>,
) -> Result<Option<ServerCpu>, String> {
    let begin = now_ns();
    let ramp_ns = if cfg.connect_rate == 0 {
        0
    } else {
        (cfg.total as u128 * NS_PER_SEC as u128 / cfg.connect_rate as u128) as u64
    };
    let go_deadline = ramp_deadline(begin, ramp_ns, cfg.connect_timeout_ns) + GRACE_NS;
    let mut t0: Option<u64> = None;
    let mut end_deadline = u64::MAX;
    let mut cpu_start: Option<Option<u64>> = None;
    let mut cpu_done = false;
    let mut server: Option<ServerCpu> = None;
    // Just after the worker processes' once-a-second lines, so each line reflects them.
    let mut next_tick = begin + NS_PER_SEC + NS_PER_SEC / 4;
    let mut so_far = new_histogram();
    let (mut received, mut sent) = (0u64, 0u64);
    let mut fatal: Option<String> = None;
    // Bounded by the deadlines: go_deadline before traffic, end_deadline after.
    loop {
        if workers.iter().all(|w| w.done) {
            break;
        }
        let now = now_ns();
        if t0.is_none() && (workers.iter().all(|w| w.ready || w.done) || now >= go_deadline) {
            let start = now + GO_LEAD_NS;
            for w in workers.iter_mut() {
                if let Some(s) = w.stdin.as_mut() {
                    let _ = writeln!(s, "go {start}").and_then(|_| s.flush());
                }
            }
            t0 = Some(start);
            end_deadline =
                start + cfg.warmup_ns + cfg.duration_ns + cfg.drain_ns + 2 * NS_PER_SEC + GRACE_NS;
        }
        if let (Some(t0), Some(pid)) = (t0, cfg.server_pid) {
            let (w0, w1) = (t0 + cfg.warmup_ns, t0 + cfg.warmup_ns + cfg.duration_ns);
            if cpu_start.is_none() && now >= w0 {
                cpu_start = Some(process_cpu_ns(pid));
            }
            if !cpu_done && now >= w1 {
                cpu_done = true;
                if let (Some(Some(c0)), Some(c1)) = (cpu_start, process_cpu_ns(pid)) {
                    server = Some(ServerCpu {
                        cpu_ns: c1.saturating_sub(c0),
                        wall_ns: w1 - w0,
                    });
                }
            }
        }
        if now >= end_deadline {
            for (i, w) in workers.iter_mut().enumerate() {
                if !w.done {
                    eprintln!("loadtest: worker process {i} did not finish in time; stopping it");
                    let _ = w.child.kill();
                    w.done = true;
                }
            }
            break;
        }
        if now >= next_tick {
            next_tick += NS_PER_SEC;
            if !cfg.quiet {
                eprintln!(
                    "{}",
                    progress_line(cfg, workers, now - begin, t0, now, received, sent, &so_far)
                );
            }
            received = 0;
            sent = 0;
        }
        let mut wake = next_tick.min(end_deadline);
        if t0.is_none() {
            wake = wake.min(go_deadline);
        }
        if let (Some(t0), Some(_)) = (t0, cfg.server_pid) {
            for at in [t0 + cfg.warmup_ns, t0 + cfg.warmup_ns + cfg.duration_ns] {
                if at > now {
                    wake = wake.min(at);
                }
            }
        }
        let wait = Duration::from_nanos(wake.saturating_sub(now).max(1_000));
        match rx.recv_timeout(wait) {
            Ok(Line::Msg(i, line)) => match ChildMsg::decode(&line) {
                Ok(ChildMsg::Progress {
                    open,
                    received: r,
                    sent: s,
                    errors,
                    hist,
                }) => {
                    workers[i].open = open;
                    workers[i].errors = errors;
                    received += r;
                    sent += s;
                    merge_hist(&mut so_far, &hist);
                }
                Ok(ChildMsg::Ready) => workers[i].ready = true,
                Ok(ChildMsg::Report(st)) => {
                    workers[i].report = Some(*st);
                    workers[i].done = true;
                }
                Ok(ChildMsg::Fatal(m)) => {
                    eprintln!("loadtest: worker process {i}: {m}");
                    fatal.get_or_insert(m);
                }
                Err(e) => eprintln!("loadtest: worker process {i}: {e}"),
            },
            Ok(Line::Eof(i)) => {
                workers[i].done = true;
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        }
    }
    if let Some(m) = fatal {
        if workers.iter().all(|w| w.report.is_none()) {
            return Err(m);
        }
    }
    Ok(server)
}

/// The once-a-second line on stderr.
#[allow(clippy::too_many_arguments)]
fn progress_line(
    cfg: &Config,
    workers: &[Worker],
    elapsed: u64,
    t0: Option<u64>,
    now: u64,
    received: u64,
    sent: u64,
    so_far: &Histogram<u64>,
) -> String {
    let phase = match t0 {
        None => "connecting",
        Some(_) if cfg.mode == Mode::Connect => "closing",
        Some(t) if now < t + cfg.warmup_ns => "warmup",
        Some(t) if now < t + cfg.warmup_ns + cfg.duration_ns => "measuring",
        Some(_) => "draining",
    };
    let open: u64 = workers.iter().map(|w| w.open).sum();
    let errors: u64 = workers.iter().map(|w| w.errors).sum();
    let p99 = if so_far.is_empty() {
        "-".to_string()
    } else {
        human_ns(so_far.value_at_quantile(0.99))
    };
    let what = if cfg.mode == Mode::Connect {
        "connect p99"
    } else {
        "p99"
    };
    format!(
        "[{:>5.1}s] {phase:<10} connected {open}/{}  sent {}/s  recv {}/s  {what} {p99}  errors {errors}",
        elapsed as f64 / 1e9,
        cfg.total,
        human_count(sent),
        human_count(received),
    )
}

/// `1.2k`, `3.4M` style counts.
fn human_count(n: u64) -> String {
    match n {
        0..=9_999 => n.to_string(),
        10_000..=9_999_999 => format!("{:.1}k", n as f64 / 1e3),
        _ => format!("{:.2}M", n as f64 / 1e6),
    }
}

/// `850µs`, `12.3ms` style durations.
fn human_ns(ns: u64) -> String {
    if ns < 1_000_000 {
        format!("{:.1}µs", ns as f64 / 1e3)
    } else if ns < 1_000_000_000 {
        format!("{:.2}ms", ns as f64 / 1e6)
    } else {
        format!("{:.2}s", ns as f64 / 1e9)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn human_formats() {
        assert_eq!(human_count(999), "999");
        assert_eq!(human_count(12_345), "12.3k");
        assert_eq!(human_count(12_345_678), "12.35M");
        assert_eq!(human_ns(85_200), "85.2µs");
        assert_eq!(human_ns(12_300_000), "12.30ms");
    }
}
