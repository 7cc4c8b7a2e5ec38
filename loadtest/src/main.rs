//! `loadtest`: a load generator for WebSocket fan-out servers speaking the path-topic protocol
//! (the URL path is the topic; every message goes to every connection on that path), over
//! `ws://` or `wss://` (rustls, driven inside the same event loops).
//!
//! The parent process (`parent/`) plans the run, re-executes itself as child processes
//! (`--child N`, `child/`) to get past the per-process open-file limit, and merges their
//! results; each child process runs thread-per-core `mio` event loops, whose connections speak
//! the client side of the protocol (`client/`). The modules at the top are shared leaves:
//! flags, clock, schedules, the run's layout, stats and the parent/child pipe protocol. See
//! `--help` for the flags.

mod child;
mod cli;
mod client;
mod clock;
mod cpu;
mod parent;
mod pipe;
mod plan;
mod schedule;
mod stats;
mod target;

use std::process::ExitCode;

use clap::Parser;

use cli::{Args, Config};

fn main() -> ExitCode {
    let args = Args::parse();
    let cfg = match Config::from_args(&args) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("loadtest: error: {e}");
            return ExitCode::from(2);
        }
    };
    if let Some(index) = cfg.child {
        return ExitCode::from(child::run(cfg, index) as u8);
    }
    let run = match parent::run(&cfg) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("loadtest: error: {e}");
            return ExitCode::from(1);
        }
    };
    let hist = if cfg.mode == cli::Mode::Connect {
        &run.stats.connect_latency
    } else {
        &run.stats.latency
    };
    // `--hgrm -` prints the distribution on stdout, after the report (as `-` means elsewhere).
    let hgrm_to_stdout = cfg.hgrm.as_deref() == Some(std::path::Path::new("-"));
    if let Some(path) = cfg.hgrm.as_ref().filter(|_| !hgrm_to_stdout) {
        if let Err(e) = std::fs::write(path, parent::report::hgrm(hist)) {
            eprintln!("loadtest: error: cannot write {}: {e}", path.display());
            return ExitCode::from(1);
        }
    }
    if let Some(path) = &cfg.html {
        if let Err(e) = std::fs::write(path, run.html()) {
            eprintln!("loadtest: error: cannot write {}: {e}", path.display());
            return ExitCode::from(1);
        }
    }
    if cfg.json {
        println!("{}", run.json());
    } else {
        print!("{}", run.text());
    }
    if hgrm_to_stdout {
        print!("{}", parent::report::hgrm(hist));
    }
    ExitCode::SUCCESS
}
