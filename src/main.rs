//! The `herald` binary: parse flags, start the server, run until a signal.

use std::process::ExitCode;

use herald::ops::config::Config;
use herald::server::Server;

/// jemalloc instead of glibc's malloc: after a storm of connections closes, glibc keeps the
/// freed TLS sessions in the worker's fragmented arena (RSS stays at its peak, which looks like
/// a leak); jemalloc's background threads purge free pages back to the OS within seconds.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> ExitCode {
    let config = Config::from_args();
    herald::ops::log::init(config.log_format, config.log_level);
    let server = match Server::start(config) {
        Ok(server) => server,
        Err(e) => {
            eprintln!("herald: {e}");
            return ExitCode::from(2);
        }
    };
    match server.run_until_signal() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("herald: {e}");
            ExitCode::FAILURE
        }
    }
}
