//! The once-a-second progress line on stderr: phase, open connections, send and receive rates,
//! the p99 so far and the error count, summed over the child processes' progress lines.

use hdrhistogram::Histogram;

use super::children::ChildProcess;
use super::report::Sample;
use crate::cli::{Config, Mode};
use crate::clock::NS_PER_SEC;
use crate::cpu::process_cpu_ns;
use crate::pipe::Progress;
use crate::stats::{merge_hist, new_histogram};

/// What the children reported since the last progress line (rates), and the latencies so far.
pub struct ProgressLine {
    /// When the run began (CLOCK_MONOTONIC ns): the line's elapsed time counts from here.
    begin: u64,
    /// When the next line is due.
    pub next_tick: u64,
    /// Latencies of the whole run so far (delivery, or connect in connect mode).
    so_far: Histogram<u64>,
    received: u64,
    sent: u64,
    duplicates: u64,
    out_of_order: u64,
    /// This second's latencies.
    interval: Histogram<u64>,
    /// Errors at the last line (children report totals).
    errors_before: u64,
    /// Server CPU at the last line (`--server-pid`).
    server_cpu_before: Option<u64>,
    /// One sample per line, printed or not.
    pub series: Vec<Sample>,
}

impl ProgressLine {
    /// Starts counting at `begin`; the first line comes a little over a second later.
    pub fn new(begin: u64) -> ProgressLine {
        ProgressLine {
            begin,
            // Just after the child processes' once-a-second lines, so each line reflects them.
            next_tick: begin + NS_PER_SEC + NS_PER_SEC / 4,
            so_far: new_histogram(),
            received: 0,
            sent: 0,
            duplicates: 0,
            out_of_order: 0,
            interval: new_histogram(),
            errors_before: 0,
            server_cpu_before: None,
            series: Vec::new(),
        }
    }

    /// Adds one child's progress (its gauges are kept on the child, see [`ChildProcess`]).
    pub fn add(&mut self, p: &Progress) {
        self.received += p.received;
        self.sent += p.sent;
        self.duplicates += p.duplicates;
        self.out_of_order += p.out_of_order;
        merge_hist(&mut self.so_far, &p.hist);
        merge_hist(&mut self.interval, &p.hist);
    }

    /// Prints the line when it is due (unless `--quiet`) and starts the next second's counts.
    pub fn tick(&mut self, cfg: &Config, children: &[ChildProcess], t0: Option<u64>, now: u64) {
        if now < self.next_tick {
            return;
        }
        self.next_tick += NS_PER_SEC;
        if !cfg.quiet {
            eprintln!("{}", self.line(cfg, children, t0, now));
        }
        self.sample(cfg, children, t0, now);
        self.received = 0;
        self.sent = 0;
        self.duplicates = 0;
        self.out_of_order = 0;
        self.interval.reset();
    }

    /// Records this second in [`ProgressLine::series`].
    fn sample(&mut self, cfg: &Config, children: &[ChildProcess], t0: Option<u64>, now: u64) {
        let errors: u64 = children.iter().map(|c| c.errors).sum();
        let cpu = cfg.server_pid.and_then(process_cpu_ns);
        let server_cpu_ns = match (self.server_cpu_before, cpu) {
            (Some(a), Some(b)) => Some(b.saturating_sub(a)),
            _ => None,
        };
        self.server_cpu_before = cpu;
        let h = &self.interval;
        let q = |v: u64| (!h.is_empty()).then(|| (v as f64 / 100.0).round() / 10.0);
        self.series.push(Sample {
            t_s: (now - self.begin) as f64 / 1e9,
            phase: phase(cfg, t0, now),
            open: children.iter().map(|c| c.open).sum(),
            sent: self.sent,
            received: self.received,
            duplicates: self.duplicates,
            out_of_order: self.out_of_order,
            errors: errors.saturating_sub(self.errors_before),
            p50_us: q(h.value_at_quantile(0.5)),
            p99_us: q(h.value_at_quantile(0.99)),
            max_us: q(h.max()),
            server_cpu_ns,
        });
        self.errors_before = errors;
    }

    /// When the loadtest began (CLOCK_MONOTONIC ns).
    pub fn begin(&self) -> u64 {
        self.begin
    }

    /// The line itself.
    fn line(&self, cfg: &Config, children: &[ChildProcess], t0: Option<u64>, now: u64) -> String {
        let phase = phase(cfg, t0, now);
        let open: u64 = children.iter().map(|c| c.open).sum();
        let errors: u64 = children.iter().map(|c| c.errors).sum();
        let p99 = if self.so_far.is_empty() {
            "-".to_string()
        } else {
            human_ns(self.so_far.value_at_quantile(0.99))
        };
        let what = if cfg.mode == Mode::Connect {
            "connect p99"
        } else {
            "p99"
        };
        format!(
            "[{:>5.1}s] {phase:<10} connected {open}/{}  sent {}/s  recv {}/s  {what} {p99}  errors {errors}",
            (now - self.begin) as f64 / 1e9,
            cfg.total,
            human_count(self.sent),
            human_count(self.received),
        )
    }
}

/// Where the run is at `now` (traffic began at `t0`).
fn phase(cfg: &Config, t0: Option<u64>, now: u64) -> &'static str {
    match t0 {
        None => "connecting",
        Some(_) if cfg.mode == Mode::Connect => "closing",
        Some(t) if now < t + cfg.warmup_ns => "warmup",
        Some(t) if now < t + cfg.warmup_ns + cfg.duration_ns => "measuring",
        Some(_) => "draining",
    }
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
