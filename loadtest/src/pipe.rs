//! The line protocol on the stdio pipes between the parent and its child processes.
//!
//! Child → parent (its stdout): `progress OPEN RECEIVED SENT ERRORS DUPLICATES OUT_OF_ORDER HIST`
//! once a second,
//! `ready` when all its connection attempts finished, `report STATS` at the end, or
//! `fatal MESSAGE`. Parent → child (its stdin): `go T0` (CLOCK_MONOTONIC ns) to start traffic;
//! end of input means abort.
//!
//! This is the only thing the two sides share at run time: the parent never sees a child's
//! event loops, only these lines.

use hdrhistogram::Histogram;

use crate::stats::{decode_hist, encode_hist, new_histogram, Stats};

/// Once-a-second gauges and deltas, so the parent can print a live progress line. An event
/// loop sends one to its child's main thread, which merges them into one per child.
#[derive(Debug)]
pub struct Progress {
    /// Open connections.
    pub open: u64,
    /// Messages received since the last one.
    pub received: u64,
    /// Messages sent since the last one.
    pub sent: u64,
    /// Errors so far.
    pub errors: u64,
    /// Measured messages received again, since the last one.
    pub duplicates: u64,
    /// Measured messages received after a later one, since the last one.
    pub out_of_order: u64,
    /// Latencies recorded since the last one (delivery, or connect in connect mode).
    pub hist: Histogram<u64>,
}

impl Default for Progress {
    fn default() -> Self {
        Progress {
            open: 0,
            received: 0,
            sent: 0,
            errors: 0,
            duplicates: 0,
            out_of_order: 0,
            hist: new_histogram(),
        }
    }
}

/// A message from a child process to the parent: one line on the child's stdout.
#[derive(Debug)]
pub enum ChildMsg {
    /// Once a second.
    Progress(Progress),
    /// Connection attempts finished.
    Ready,
    /// Final results.
    Report(Box<Stats>),
    /// The child process could not run.
    Fatal(String),
}

impl ChildMsg {
    /// The line to write (without newline).
    pub fn encode(&self) -> String {
        match self {
            ChildMsg::Progress(Progress {
                open,
                received,
                sent,
                errors,
                duplicates,
                out_of_order,
                hist,
            }) => format!(
                "progress {open} {received} {sent} {errors} {duplicates} {out_of_order} {}",
                encode_hist(hist)
            ),
            ChildMsg::Ready => "ready".into(),
            ChildMsg::Report(s) => format!("report {}", s.encode()),
            ChildMsg::Fatal(m) => format!("fatal {}", m.replace('\n', " ")),
        }
    }

    /// Parses a line written by [`encode`](Self::encode).
    pub fn decode(line: &str) -> Result<ChildMsg, String> {
        let (verb, rest) = line.split_once(' ').unwrap_or((line, ""));
        match verb {
            "ready" => Ok(ChildMsg::Ready),
            "fatal" => Ok(ChildMsg::Fatal(rest.to_string())),
            "report" => Stats::decode(rest).map(|s| ChildMsg::Report(Box::new(s))),
            "progress" => {
                let f: Vec<&str> = rest.split(' ').collect();
                if f.len() != 7 {
                    return Err(format!("bad progress line {line:?}"));
                }
                let n = |i: usize| {
                    f[i].parse::<u64>()
                        .map_err(|_| format!("bad progress line {line:?}"))
                };
                Ok(ChildMsg::Progress(Progress {
                    open: n(0)?,
                    received: n(1)?,
                    sent: n(2)?,
                    errors: n(3)?,
                    duplicates: n(4)?,
                    out_of_order: n(5)?,
                    hist: decode_hist(f[6])?,
                }))
            }
            _ => Err(format!("unexpected line from a child process: {line:?}")),
        }
    }
}

/// The parent's `go T0` line (without newline): traffic starts at `t0` (CLOCK_MONOTONIC ns).
pub fn go_line(t0: u64) -> String {
    format!("go {t0}")
}

/// Parses the parent's [`go_line`].
pub fn parse_go(line: &str) -> Option<u64> {
    line.trim()
        .strip_prefix("go ")?
        .trim()
        .parse()
        .ok()
        .filter(|&t| t > 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips() {
        let mut h = new_histogram();
        h.saturating_record(12_345);
        let msg = ChildMsg::Progress(Progress {
            open: 5,
            received: 6,
            sent: 7,
            errors: 8,
            duplicates: 9,
            out_of_order: 10,
            hist: h,
        });
        match ChildMsg::decode(&msg.encode()).expect("decodes") {
            ChildMsg::Progress(Progress {
                open,
                received,
                sent,
                errors,
                duplicates,
                out_of_order,
                hist,
            }) => {
                assert_eq!((open, received, sent, errors), (5, 6, 7, 8));
                assert_eq!((duplicates, out_of_order), (9, 10));
                assert_eq!(hist.len(), 1);
            }
            other => panic!("{other:?}"),
        }
        let st = Stats {
            delivered: 42,
            ..Stats::default()
        };
        match ChildMsg::decode(&ChildMsg::Report(Box::new(st)).encode()).expect("decodes") {
            ChildMsg::Report(s) => assert_eq!(s.delivered, 42),
            other => panic!("{other:?}"),
        }
        assert!(matches!(ChildMsg::decode("ready"), Ok(ChildMsg::Ready)));
        assert!(matches!(ChildMsg::decode("fatal a b"), Ok(ChildMsg::Fatal(m)) if m == "a b"));
        assert!(ChildMsg::decode("progress 1 2").is_err());
        assert!(ChildMsg::decode("hello").is_err());
        assert_eq!(parse_go("go 123\n"), Some(123));
        assert_eq!(parse_go(&go_line(77)), Some(77));
        assert_eq!(parse_go("go x"), None);
        assert_eq!(parse_go("stop"), None);
    }
}
