//! Where an idle connection's memory goes (issue 19): the herald server in this process with
//! jemalloc, printing jemalloc's own counters every half second on stderr, so bytes the
//! program holds (`allocated`) can be told from pages the allocator keeps (`active`,
//! `resident`) and from its bookkeeping (`metadata`). Run it like `herald` (same flags) and
//! open connections with benches/peers/hold-conns.js: benches/alloc_probe.sh.

#![forbid(unsafe_code)]

use std::time::Duration;

use herald::ops::config::Config;
use herald::server::Server;
use tikv_jemalloc_ctl::{epoch, stats};

#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() {
    eprintln!(
        "size_of: Conn {} B, tls::Session {} B, rustls UnbufferedServerConnection {} B",
        size_of::<herald::worker::conn::Conn>(),
        size_of::<herald::worker::tls::Session>(),
        size_of::<rustls::server::UnbufferedServerConnection>(),
    );
    let config = Config::from_args();
    herald::ops::log::init(config.log_format, config.log_level);
    let server = match Server::start(config) {
        Ok(server) => server,
        Err(e) => {
            eprintln!("alloc_probe: {e}");
            std::process::exit(2);
        }
    };
    std::thread::spawn(|| loop {
        let read = || -> Result<[usize; 4], tikv_jemalloc_ctl::Error> {
            epoch::advance()?;
            Ok([
                stats::allocated::read()?,
                stats::active::read()?,
                stats::resident::read()?,
                stats::metadata::read()?,
            ])
        };
        match read() {
                Ok([allocated, active, resident, metadata]) => eprintln!(
                    "jemalloc allocated {allocated} active {active} resident {resident} metadata {metadata}"
                ),
                Err(e) => eprintln!("jemalloc stats: {e}"),
            }
        std::thread::sleep(Duration::from_millis(500));
    });
    if let Err(e) = server.run_until_signal() {
        eprintln!("alloc_probe: {e}");
    }
}
