//! The one clock every process of a run agrees on: `CLOCK_MONOTONIC` in nanoseconds.
//!
//! `std::time::Instant` cannot cross a process boundary, but publishers and subscribers live in
//! different child processes, so scheduled send times are carried in payloads as raw
//! `CLOCK_MONOTONIC` readings, which are shared by all processes on one machine.

use nix::time::{clock_gettime, ClockId};

/// Nanoseconds per second, for the conversions scattered over the crate.
pub const NS_PER_SEC: u64 = 1_000_000_000;

/// Current `CLOCK_MONOTONIC` time in nanoseconds, comparable across processes.
pub fn now_ns() -> u64 {
    // CLOCK_MONOTONIC cannot fail on Linux; a failure would mean a broken libc, not a peer.
    let ts = clock_gettime(ClockId::CLOCK_MONOTONIC).expect("CLOCK_MONOTONIC is always readable");
    // Both fields are non-negative for CLOCK_MONOTONIC.
    (ts.tv_sec() as u64) * NS_PER_SEC + ts.tv_nsec() as u64
}

/// Converts seconds given on the command line into nanoseconds, so schedules stay integral.
pub fn secs_to_ns(secs: f64) -> u64 {
    (secs * NS_PER_SEC as f64).round() as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn monotonic_and_converts() {
        let a = now_ns();
        let b = now_ns();
        assert!(b >= a);
        assert_eq!(secs_to_ns(1.5), 1_500_000_000);
        assert_eq!(secs_to_ns(0.0), 0);
    }
}
