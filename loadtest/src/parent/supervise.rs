//! Supervising the child processes from spawn to report: deciding the go moment, sampling the
//! server's CPU over the measured window, the progress lines, and the deadline after which
//! stragglers are stopped.

use std::io::Write;
use std::sync::mpsc;
use std::time::Duration;

use super::children::{ChildLine, ChildProcess};
use super::progress::ProgressLine;
use super::report::{Series, ServerCpu};
use crate::cli::Config;
use crate::clock::{now_ns, NS_PER_SEC};
use crate::cpu::process_cpu_ns;
use crate::pipe::{go_line, ChildMsg};
use crate::schedule::{ramp_deadline, ramp_ns};

/// Delay between the go decision and the first scheduled message, so every child has heard it.
const GO_LEAD_NS: u64 = 200_000_000;
/// Extra time granted past the expected end before stragglers are killed.
const GRACE_NS: u64 = 10 * NS_PER_SEC;

/// Drives the run until every child is done (or the deadline passed); returns the server's CPU
/// over the measured window when `--server-pid` was given, or the first fatal message when no
/// child produced a report.
pub fn supervise(
    cfg: &Config,
    children: &mut [ChildProcess],
    rx: &mpsc::Receiver<ChildLine>,
) -> Result<(Option<ServerCpu>, Series), String> {
    let mut run = Supervisor::new(cfg, children);
    // Bounded by the deadlines: go_deadline before traffic, end_deadline after.
    loop {
        if run.children.iter().all(|c| c.done) {
            break;
        }
        let now = now_ns();
        if run.t0.is_none() && run.time_to_go(now) {
            run.say_go(now);
        }
        run.sample_server_cpu(now);
        if now >= run.end_deadline {
            run.stop_stragglers();
            break;
        }
        run.progress.tick(cfg, run.children, run.t0, now);
        match rx.recv_timeout(run.wait(now)) {
            Ok(line) => run.on_line(line),
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        }
    }
    run.outcome()
}

/// The parent's view of the run while it is in progress.
struct Supervisor<'a> {
    cfg: &'a Config,
    children: &'a mut [ChildProcess],
    /// Say go by then even if not every child is ready (CLOCK_MONOTONIC ns).
    go_deadline: u64,
    /// Start of traffic, once go was said.
    t0: Option<u64>,
    /// Stop the children still running by then (`u64::MAX` before go).
    end_deadline: u64,
    /// Server CPU time at the start of the measured window (outer `None`: not sampled yet).
    cpu_start: Option<Option<u64>>,
    /// The end of the window was sampled.
    cpu_done: bool,
    server: Option<ServerCpu>,
    progress: ProgressLine,
    /// The first fatal message from a child.
    fatal: Option<String>,
}

impl<'a> Supervisor<'a> {
    fn new(cfg: &'a Config, children: &'a mut [ChildProcess]) -> Supervisor<'a> {
        let begin = now_ns();
        Supervisor {
            cfg,
            children,
            go_deadline: ramp_deadline(begin, ramp_ns(cfg), cfg.connect_timeout_ns) + GRACE_NS,
            t0: None,
            end_deadline: u64::MAX,
            cpu_start: None,
            cpu_done: false,
            server: None,
            progress: ProgressLine::new(begin),
            fatal: None,
        }
    }

    /// Go when every child finished connecting (or gave up), or when the ramp took too long.
    fn time_to_go(&self, now: u64) -> bool {
        self.children.iter().all(|c| c.ready || c.done) || now >= self.go_deadline
    }

    /// Tells every child to start traffic a little after `now`, and sets the end deadline.
    fn say_go(&mut self, now: u64) {
        let start = now + GO_LEAD_NS;
        for c in self.children.iter_mut() {
            if let Some(s) = c.stdin.as_mut() {
                let _ = writeln!(s, "{}", go_line(start)).and_then(|_| s.flush());
            }
        }
        self.t0 = Some(start);
        let cfg = self.cfg;
        self.end_deadline =
            start + cfg.warmup_ns + cfg.duration_ns + cfg.drain_ns + 2 * NS_PER_SEC + GRACE_NS;
    }

    /// The measured window `[t0 + warmup, t0 + warmup + duration)`, once go was said.
    fn window(&self) -> Option<(u64, u64)> {
        let cfg = self.cfg;
        self.t0
            .map(|t0| (t0 + cfg.warmup_ns, t0 + cfg.warmup_ns + cfg.duration_ns))
    }

    /// With `--server-pid`: reads the server's CPU time as the measured window opens and
    /// closes.
    fn sample_server_cpu(&mut self, now: u64) {
        let (Some((w0, w1)), Some(pid)) = (self.window(), self.cfg.server_pid) else {
            return;
        };
        if self.cpu_start.is_none() && now >= w0 {
            self.cpu_start = Some(process_cpu_ns(pid));
        }
        if !self.cpu_done && now >= w1 {
            self.cpu_done = true;
            if let (Some(Some(c0)), Some(c1)) = (self.cpu_start, process_cpu_ns(pid)) {
                self.server = Some(ServerCpu {
                    cpu_ns: c1.saturating_sub(c0),
                    wall_ns: w1 - w0,
                });
            }
        }
    }

    /// Past the end deadline: kills the children that are still running.
    fn stop_stragglers(&mut self) {
        for (i, c) in self.children.iter_mut().enumerate() {
            if !c.done {
                eprintln!("loadtest: child process {i} did not finish in time; stopping it");
                let _ = c.process.kill();
                c.done = true;
            }
        }
    }

    /// How long to wait for the next line: until the next progress line, deadline or CPU
    /// sample, whichever comes first.
    fn wait(&self, now: u64) -> Duration {
        let mut wake = self.progress.next_tick.min(self.end_deadline);
        if self.t0.is_none() {
            wake = wake.min(self.go_deadline);
        }
        if let (Some((w0, w1)), Some(_)) = (self.window(), self.cfg.server_pid) {
            for at in [w0, w1] {
                if at > now {
                    wake = wake.min(at);
                }
            }
        }
        Duration::from_nanos(wake.saturating_sub(now).max(1_000))
    }

    /// Handles one line (or the end of output) from a child.
    fn on_line(&mut self, line: ChildLine) {
        let (i, line) = match line {
            ChildLine::Msg(i, line) => (i, line),
            ChildLine::Eof(i) => {
                if let Some(c) = self.children.get_mut(i) {
                    c.done = true;
                }
                return;
            }
        };
        let Some(c) = self.children.get_mut(i) else {
            return;
        };
        match ChildMsg::decode(&line) {
            Ok(ChildMsg::Progress(p)) => {
                c.open = p.open;
                c.errors = p.errors;
                self.progress.add(&p);
            }
            Ok(ChildMsg::Ready) => c.ready = true,
            Ok(ChildMsg::Report(st)) => {
                c.report = Some(*st);
                c.done = true;
            }
            Ok(ChildMsg::Fatal(m)) => {
                eprintln!("loadtest: child process {i}: {m}");
                self.fatal.get_or_insert(m);
            }
            Err(e) => eprintln!("loadtest: child process {i}: {e}"),
        }
    }

    /// The server's CPU and the run's seconds, or the first fatal message if no child
    /// produced a report.
    fn outcome(self) -> Result<(Option<ServerCpu>, Series), String> {
        if let Some(m) = &self.fatal {
            if self.children.iter().all(|c| c.report.is_none()) {
                return Err(m.clone());
            }
        }
        let begin = self.progress.begin();
        let series = Series {
            window_start_s: self
                .window()
                .map(|(w0, _)| w0.saturating_sub(begin) as f64 / 1e9),
            samples: self.progress.series,
        };
        Ok((self.server, series))
    }
}
