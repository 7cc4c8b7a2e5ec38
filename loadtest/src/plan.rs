//! How a run is laid out: child processes, event-loop threads, and loopback source addresses.
//!
//! Two kernel limits shape a 100k-connection run on one machine: the per-process open-file
//! limit (each connection is a descriptor) and the ephemeral port range (each connection from
//! one source address to one server address needs its own port). The plan picks enough
//! processes and source addresses, or explains which flag is too small.

use std::collections::HashMap;
use std::net::SocketAddr;

use nix::sys::resource::{getrlimit, setrlimit, Resource};

use crate::cli::Config;

/// Descriptors a child process needs besides its connections (stdio, epoll, timers, wakers).
pub const FD_RESERVE: u64 = 64;
/// Extra descriptors per thread (epoll, waker, timer).
pub const FD_PER_THREAD: u64 = 4;

/// Facts about this machine the plan depends on.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Open-file limit a process can reach (the hard limit, after raising the soft one).
    pub nofile: u64,
    /// Ephemeral ports per (source address, destination) pair.
    pub ports: u64,
    /// Cores available for event loops.
    pub cores: u64,
}

/// The chosen layout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Plan {
    /// Child processes.
    pub procs: u32,
    /// Event-loop threads per process.
    pub threads: u32,
    /// Source addresses 127.0.0.1..=127.0.0.N.
    pub source_ips: u32,
}

impl Plan {
    /// Event loops in the whole run: connection `g` belongs to loop `g % event_loops()`.
    pub fn event_loops(&self) -> u64 {
        self.procs as u64 * self.threads as u64
    }
}

/// Raises the soft open-file limit to the hard one and returns the resulting limit.
pub fn raise_nofile() -> u64 {
    match getrlimit(Resource::RLIMIT_NOFILE) {
        Ok((soft, hard)) => {
            if soft < hard && setrlimit(Resource::RLIMIT_NOFILE, hard, hard).is_ok() {
                hard
            } else {
                soft
            }
        }
        Err(_) => 1024,
    }
}

/// Ephemeral ports from `/proc/sys/net/ipv4/ip_local_port_range` (Linux default if unreadable).
pub fn port_range() -> (u64, u64) {
    let text =
        std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range").unwrap_or_default();
    let mut it = text
        .split_whitespace()
        .filter_map(|x| x.parse::<u64>().ok());
    match (it.next(), it.next()) {
        (Some(lo), Some(hi)) if hi >= lo => (lo, hi),
        _ => (32768, 60999),
    }
}

/// Reads this machine's limits (raising the open-file soft limit on the way).
pub fn machine_limits() -> Limits {
    let (lo, hi) = port_range();
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get() as u64);
    Limits {
        nofile: raise_nofile(),
        ports: hi - lo + 1,
        cores,
    }
}

/// Ports per (source, destination) pair that the plan may use. Linux's `connect()` picks
/// ports of one parity first (the other half is left to `bind()`), and once that half is used
/// up each new connect scans the whole range: measured here, 100k connections from one
/// address to six server ports stalled at ~13.3k per port. So count half the range, less a
/// 5% margin for other programs' sockets and TIME_WAIT leftovers of earlier runs.
fn usable_ports(ports: u64) -> u64 {
    let half = ports / 2;
    (half - half / 20).max(1)
}

/// Chooses processes, threads and source addresses for `cfg` on a machine with `lim`.
pub fn make(cfg: &Config, lim: &Limits) -> Result<Plan, String> {
    let total = cfg.total;
    // Processes: connections per process must fit under the open-file limit.
    let per_proc_cap = |threads: u64| {
        lim.nofile
            .saturating_sub(FD_RESERVE + FD_PER_THREAD * threads)
    };
    let min_procs = |threads: u64| -> Result<u64, String> {
        let cap = per_proc_cap(threads);
        if cap == 0 {
            return Err(format!(
                "the open-file limit is {} and cannot hold any connections; raise `ulimit -Hn`",
                lim.nofile
            ));
        }
        Ok(total.div_ceil(cap))
    };
    let cores = if cfg.cores.is_empty() {
        lim.cores
    } else {
        cfg.cores.len() as u64
    }
    .max(1);
    let procs = match cfg.procs {
        Some(p) => p as u64,
        None => min_procs(cfg.threads.map_or(1, u64::from))?.max(1),
    };
    let threads = match cfg.threads {
        Some(t) => t as u64,
        None => (cores / procs).max(1),
    };
    let per_proc = total.div_ceil(procs);
    let cap = per_proc_cap(threads);
    if per_proc > cap {
        return Err(format!(
            "the open-file limit is {} per process, so {procs} process(es) can hold at most {} \
             connections but {total} are needed; use --procs {} or more (or omit --procs)",
            lim.nofile,
            cap * procs,
            min_procs(threads)?
        ));
    }
    if procs > total {
        return Err(format!(
            "--procs {procs} is more than the {total} connections"
        ));
    }
    // Source addresses: count connections per destination address.
    let mut per_dest: HashMap<SocketAddr, u64> = HashMap::new();
    let n_targets = cfg.targets.len() as u64;
    for (i, t) in cfg.targets.iter().enumerate() {
        let i = i as u64;
        let n = if total > i {
            (total - i).div_ceil(n_targets)
        } else {
            0
        };
        *per_dest.entry(t.addr).or_insert(0) += n;
    }
    let busiest = per_dest.values().copied().max().unwrap_or(0);
    let usable = usable_ports(lim.ports);
    let needed_ips = busiest.div_ceil(usable).max(1);
    let source_ips = match cfg.source_ips {
        Some(s) if (s as u64) < needed_ips => {
            return Err(format!(
                "{busiest} connections to one server address need {needed_ips} source addresses \
                 ({} usable ephemeral ports each); use --source-ips {needed_ips} or more",
                usable
            ))
        }
        Some(s) => s as u64,
        None => needed_ips,
    };
    if source_ips > 254 {
        return Err(format!(
            "{busiest} connections to one server address need {source_ips} source addresses, \
             more than 127.0.0.1..254 offers; spread them over more server ports (--url)"
        ));
    }
    if source_ips > 1 && cfg.targets.iter().any(|t| t.addr.is_ipv6()) {
        return Err(format!(
            "{busiest} connections need {source_ips} source addresses, which needs IPv4 \
             (127.x) targets"
        ));
    }
    Ok(Plan {
        procs: procs as u32,
        threads: threads as u32,
        source_ips: source_ips as u32,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::Args;
    use clap::Parser;

    fn cfg(extra: &[&str]) -> Config {
        let mut v = vec!["loadtest", "--url", "ws://127.0.0.1:9000/b"];
        v.extend_from_slice(extra);
        Config::from_args(&Args::try_parse_from(v).expect("flags")).expect("valid")
    }

    const HERE: Limits = Limits {
        nofile: 20_000,
        ports: 28_232,
        cores: 2,
    };

    #[test]
    fn hundred_thousand_on_this_machine_class() {
        let p = make(&cfg(&["--connections", "100000"]), &HERE).expect("plan");
        assert_eq!(p.procs, 6);
        assert_eq!(p.threads, 1);
        assert_eq!(p.source_ips, 8);
        // Spread over six server ports, two addresses suffice.
        let mut v = vec!["--connections", "100000", "--mode", "echo"];
        for port in 9001..=9006 {
            v.push("--url");
            v.push(Box::leak(
                format!("ws://127.0.0.1:{port}/").into_boxed_str(),
            ));
        }
        let mut c = cfg(&v);
        c.targets.remove(0); // drop the default URL from the helper
        let p = make(&c, &HERE).expect("plan");
        assert_eq!((p.procs, p.source_ips), (6, 2));
    }

    #[test]
    fn small_runs_use_one_process_and_all_cores() {
        let p = make(&cfg(&["--connections", "100"]), &HERE).expect("plan");
        assert_eq!(
            p,
            Plan {
                procs: 1,
                threads: 2,
                source_ips: 1
            }
        );
        let p = make(&cfg(&["--connections", "100", "--cores", "1"]), &HERE).expect("plan");
        assert_eq!(p.threads, 1);
    }

    #[test]
    fn explains_limits() {
        let e = make(&cfg(&["--connections", "100000", "--procs", "2"]), &HERE).unwrap_err();
        assert!(e.contains("--procs 6"), "{e}");
        let e = make(
            &cfg(&["--connections", "100000", "--source-ips", "2"]),
            &HERE,
        )
        .unwrap_err();
        assert!(e.contains("--source-ips 8"), "{e}");
        let tiny = Limits { nofile: 50, ..HERE };
        assert!(make(&cfg(&["--connections", "10"]), &tiny)
            .unwrap_err()
            .contains("ulimit"));
    }
}
