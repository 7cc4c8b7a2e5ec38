//! CPU time of another process (the server under test), read from `/proc/PID/stat`.
//!
//! On a small machine the load generator can saturate before a fast server does, so CPU time
//! per delivery at a fixed load is the fair efficiency figure; this is how it is measured.

use nix::unistd::{sysconf, SysconfVar};

/// Total user + system CPU time of process `pid` and all its threads, in ns.
pub fn process_cpu_ns(pid: u32) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_stat(&text, clock_ticks())
}

/// Clock ticks per second used by `/proc` times.
fn clock_ticks() -> u64 {
    match sysconf(SysconfVar::CLK_TCK) {
        Ok(Some(t)) if t > 0 => t as u64,
        _ => 100,
    }
}

/// Extracts utime + stime (fields 14 and 15) from a `/proc/PID/stat` line, in ns.
fn parse_stat(text: &str, ticks: u64) -> Option<u64> {
    // The command name (field 2) may contain spaces and parentheses; fields resume after the
    // last ')'. Field 3 is then index 0, so utime (14) is index 11 and stime (15) index 12.
    let rest = &text[text.rfind(')')? + 1..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let utime: u64 = f.get(11)?.parse().ok()?;
    let stime: u64 = f.get(12)?.parse().ok()?;
    Some((utime + stime) * (1_000_000_000 / ticks.max(1)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_stat_lines() {
        let line = "1234 (my (odd) srv) S 1 1234 1234 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 3 0";
        assert_eq!(parse_stat(line, 100), Some(3_000_000_000));
        assert_eq!(parse_stat("garbage", 100), None);
        assert!(process_cpu_ns(std::process::id()).is_some());
    }
}
