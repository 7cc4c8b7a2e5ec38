//! The parent process: plans the run, checks the targets, spawns and supervises the child
//! processes, prints the progress lines, and merges the children's stats into the report.
//!
//! Separate from `child` because it runs in its own process and sees the children only
//! through the stdio lines of `crate::pipe`: it never touches an event loop or a connection.

mod children;
mod progress;
pub mod report;
mod supervise;

use std::collections::HashSet;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use crate::cli::Config;
use crate::client::handshake::preflight;
use crate::clock::NS_PER_SEC;
use crate::cpu::process_cpu_ns;
use crate::plan;
use crate::stats::Stats;
use children::{reap, spawn_children, ChildProcess};
use report::Run;

/// Runs the whole load test and returns the merged report; `Err` is a message for the user.
pub fn run(cfg: &Config) -> Result<Run<'_>, String> {
    let started = Instant::now();
    let limits = plan::machine_limits();
    let plan = plan::make(cfg, &limits)?;
    if let Some(pid) = cfg.server_pid {
        if process_cpu_ns(pid).is_none() {
            return Err(format!("--server-pid {pid}: cannot read /proc/{pid}/stat"));
        }
    }
    probe_targets(cfg)?;
    let (tx, rx) = mpsc::channel();
    let mut children = spawn_children(&plan, &tx)?;
    drop(tx);
    let result = supervise::supervise(cfg, &mut children, &rx);
    reap(&mut children);
    let (server, series) = result?;
    Ok(Run {
        cfg,
        plan,
        stats: merge_reports(&children)?,
        server,
        wall_secs: started.elapsed().as_secs_f64(),
        series,
    })
}

/// Checks once per distinct URL that the server upgrades a connection, so a wrong URL fails
/// fast with a clear message instead of as thousands of counted errors.
fn probe_targets(cfg: &Config) -> Result<(), String> {
    let probe = Duration::from_nanos(cfg.connect_timeout_ns.min(5 * NS_PER_SEC));
    let tls = if cfg.uses_tls() {
        Some(crate::client::tls::client_config(cfg.insecure)?)
    } else {
        None
    };
    let mut probed = HashSet::new();
    for t in &cfg.targets {
        if probed.insert(t.url.clone()) {
            preflight(t, probe, tls.as_ref())?;
        }
    }
    Ok(())
}

/// Merges every child's final stats (exactly: counts add up, histograms merge); a child that
/// sent none counts as a `worker_lost` error (the report's name for a lost child process).
fn merge_reports(children: &[ChildProcess]) -> Result<Stats, String> {
    if children.iter().all(|c| c.report.is_none()) {
        return Err("no child process produced a report (see the messages above)".into());
    }
    let mut stats = Stats::default();
    for c in children {
        match &c.report {
            Some(r) => stats.merge(r),
            None => stats.error(LOST_CHILD),
        }
    }
    Ok(stats)
}

/// Error kind of a child process that ended without a report. The name predates the "child
/// process" wording and is kept, as it appears in the JSON report that scripts read.
const LOST_CHILD: &str = "worker_lost";
