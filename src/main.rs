//! The `herald` binary: parse flags, start the server, run until a signal.

use std::process::ExitCode;

use herald::ops::config::Config;
use herald::server::Server;

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
