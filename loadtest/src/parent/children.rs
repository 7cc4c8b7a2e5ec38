//! Starting the child processes (this same binary with `--child N`), reading their stdout
//! lines on one thread each, and reaping them at the end.

use std::io::{BufRead, BufReader};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use crate::plan::Plan;
use crate::stats::Stats;

/// One child process as the parent sees it: the process, its stdin for the go line, and
/// what its lines said so far.
pub struct ChildProcess {
    /// The process, to kill a straggler and to reap it.
    pub process: Child,
    /// Its stdin, for the go line (dropped at the end: end of input tells it to abort).
    pub stdin: Option<ChildStdin>,
    /// It said `ready` (all its connection attempts finished).
    pub ready: bool,
    /// It sent its report, closed its stdout, or was stopped.
    pub done: bool,
    /// Its final stats.
    pub report: Option<Stats>,
    /// Open connections, from its last progress line.
    pub open: u64,
    /// Errors so far, from its last progress line.
    pub errors: u64,
}

/// A line from child `index`'s stdout, or the end of it, as the reader threads pass them on.
pub enum ChildLine {
    /// Child `index` wrote a line (a [`crate::pipe::ChildMsg`] if all is well).
    Msg(usize, String),
    /// Child `index` closed its stdout: it exited or died.
    Eof(usize),
}

/// Starts the child processes (this same binary with `--child N`) and a reader thread for
/// each one's stdout.
pub fn spawn_children(
    plan: &Plan,
    tx: &mpsc::Sender<ChildLine>,
) -> Result<Vec<ChildProcess>, String> {
    let exe = std::env::current_exe().map_err(|e| format!("cannot find my own binary: {e}"))?;
    let user_args: Vec<std::ffi::OsString> = std::env::args_os().skip(1).collect();
    let mut children = Vec::new();
    for i in 0..plan.procs {
        let mut process = Command::new(&exe)
            .args(&user_args)
            .args(["--procs", &plan.procs.to_string()])
            .args(["--threads", &plan.threads.to_string()])
            .args(["--source-ips", &plan.source_ips.to_string()])
            .args(["--child", &i.to_string()])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|e| format!("cannot start child process {i}: {e}"))?;
        let stdout = process
            .stdout
            .take()
            .ok_or("child process stdout missing")?;
        let stdin = process.stdin.take();
        let tx = tx.clone();
        let idx = i as usize;
        std::thread::Builder::new()
            .name(format!("loadtest-read-{i}"))
            .spawn(move || {
                for line in BufReader::new(stdout).lines() {
                    match line {
                        Ok(l) => {
                            if tx.send(ChildLine::Msg(idx, l)).is_err() {
                                return;
                            }
                        }
                        Err(_) => break,
                    }
                }
                let _ = tx.send(ChildLine::Eof(idx));
            })
            .map_err(|e| format!("cannot start a thread: {e}"))?;
        children.push(ChildProcess {
            process,
            stdin,
            ready: false,
            done: false,
            report: None,
            open: 0,
            errors: 0,
        });
    }
    Ok(children)
}

/// Reaps every child, killing any that outlived the run by 3 s.
pub fn reap(children: &mut [ChildProcess]) {
    for c in children.iter_mut() {
        let deadline = Instant::now() + Duration::from_secs(3);
        while matches!(c.process.try_wait(), Ok(None)) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        if matches!(c.process.try_wait(), Ok(None)) {
            let _ = c.process.kill();
        }
        let _ = c.process.wait();
        c.stdin = None;
    }
}
