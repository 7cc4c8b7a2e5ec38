//! `loadtest`: a load generator for WebSocket fan-out servers speaking the path-topic protocol
//! (the URL path is the topic; every message goes to every connection on that path), over
//! `ws://` or `wss://` (rustls, driven inside the same event loops).
//!
//! The parent process plans the run, re-executes itself as worker processes (`--child N`) to get
//! past the per-process open-file limit, and merges their results; each worker process runs
//! thread-per-core `mio` event loops. See `--help` for the flags.

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
    let outcome = match parent::run(&cfg) {
        Ok(o) => o,
        Err(e) => {
            eprintln!("loadtest: error: {e}");
            return ExitCode::from(1);
        }
    };
    let run = parent::report::Run {
        cfg: &cfg,
        plan: &outcome.plan,
        stats: &outcome.stats,
        server: outcome.server,
        wall_secs: outcome.wall_secs,
    };
    if let Some(path) = &cfg.hgrm {
        let hist = if cfg.mode == cli::Mode::Connect {
            &outcome.stats.connect_latency
        } else {
            &outcome.stats.latency
        };
        if let Err(e) = std::fs::write(path, parent::report::hgrm(hist)) {
            eprintln!("loadtest: error: cannot write {}: {e}", path.display());
            return ExitCode::from(1);
        }
    }
    if cfg.json {
        println!("{}", run.json());
    } else {
        print!("{}", run.text());
    }
    ExitCode::SUCCESS
}
