//! The final report: the merged run ([`Run`]), the numbers derived from it ([`Totals`]), and
//! its three output formats, each in its own file: `text.rs` (the default), `json.rs`
//! (`--json`) and `hgrm.rs` (`--hgrm`).

mod hgrm;
mod html;
mod json;
mod series;
mod text;

use crate::cli::{Config, Mode};
use crate::plan::Plan;
use crate::stats::Stats;
pub use hgrm::hgrm;
pub use series::{Sample, Series};

/// Server CPU use over the measured window (from `--server-pid`).
#[derive(Debug, Clone, Copy)]
pub struct ServerCpu {
    /// CPU time the server used during the window, ns.
    pub cpu_ns: u64,
    /// Length of the window, ns.
    pub wall_ns: u64,
}

/// Numbers derived from the merged stats, shared by the text and JSON forms.
#[derive(Debug, Clone, PartialEq)]
pub struct Totals {
    /// Established connections.
    pub connections: u64,
    /// Measured messages sent.
    pub sent: u64,
    /// Deliveries that should have happened.
    pub expected: u64,
    /// Distinct measured deliveries.
    pub delivered: u64,
    /// `expected - delivered` (never negative).
    pub lost: u64,
    /// `delivered - expected` when positive: deliveries nobody sent.
    pub unexpected: u64,
    /// Deliveries per second of measured window.
    pub delivered_per_sec: f64,
    /// Upgrades per second from the first attempt to the last upgrade.
    pub handshakes_per_sec: f64,
}

/// Computes expected deliveries and the derived rates.
///
/// Fanout: each message sent on URL `u` should reach every receiver on `u` (or every receiver
/// at all with `--cluster`). Echo: each message should come back once.
pub fn totals(cfg: &Config, st: &Stats) -> Totals {
    let sent: u64 = st.sent.iter().sum();
    let expected = match cfg.mode {
        Mode::Connect => 0,
        Mode::Echo => sent,
        Mode::Fanout if cfg.cluster => sent * st.receivers.iter().sum::<u64>(),
        Mode::Fanout => st
            .sent
            .iter()
            .enumerate()
            .map(|(u, s)| s * st.receivers.get(u).copied().unwrap_or(0))
            .sum(),
    };
    let secs = cfg.duration_ns as f64 / 1e9;
    let ramp_ns = st.last_connected_ns.saturating_sub(st.first_attempt_ns);
    Totals {
        connections: st.connected,
        sent,
        expected,
        delivered: st.delivered,
        lost: expected.saturating_sub(st.delivered),
        unexpected: st.delivered.saturating_sub(expected),
        delivered_per_sec: if secs > 0.0 {
            st.delivered as f64 / secs
        } else {
            0.0
        },
        handshakes_per_sec: if ramp_ns > 0 && st.first_attempt_ns != u64::MAX {
            st.connected as f64 * 1e9 / ramp_ns as f64
        } else {
            0.0
        },
    }
}

/// Percentiles shown in reports, as (label, JSON key, quantile).
const PERCENTILES: [(&str, &str, f64); 6] = [
    ("p50", "p50", 0.50),
    ("p75", "p75", 0.75),
    ("p90", "p90", 0.90),
    ("p99", "p99", 0.99),
    ("p99.9", "p999", 0.999),
    ("p99.99", "p9999", 0.9999),
];

/// Microseconds with 0.1 µs resolution.
fn us(ns: u64) -> f64 {
    (ns as f64 / 100.0).round() / 10.0
}

/// Everything the parent knows at the end of a run: what [`crate::parent::run`] returns and
/// what the text, JSON and `.hgrm` outputs are made from.
pub struct Run<'a> {
    /// Parameters.
    pub cfg: &'a Config,
    /// Layout.
    pub plan: Plan,
    /// Merged stats of all child processes.
    pub stats: Stats,
    /// Server CPU, when `--server-pid` was given and readable.
    pub server: Option<ServerCpu>,
    /// Wall time of the whole run, seconds.
    pub wall_secs: f64,
    /// The run second by second.
    pub series: Series,
}

/// How the run used TLS: `off` (ws:// only), `verified` or `insecure` (`--insecure`).
fn tls_mode(cfg: &Config) -> &'static str {
    match (cfg.uses_tls(), cfg.insecure) {
        (false, _) => "off",
        (true, false) => "verified",
        (true, true) => "insecure",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::Args;
    use clap::Parser;

    fn cfg(extra: &[&str]) -> Config {
        let mut v = vec!["loadtest", "--url", "ws://127.0.0.1:9/a", "--duration", "2"];
        v.extend_from_slice(extra);
        Config::from_args(&Args::try_parse_from(v).expect("flags")).expect("valid")
    }

    #[test]
    fn expected_deliveries_per_mode() {
        let mut st = Stats {
            sent: vec![10, 20],
            receivers: vec![3, 4],
            delivered: 105,
            ..Stats::default()
        };
        let t = totals(&cfg(&[]), &st);
        assert_eq!((t.sent, t.expected, t.lost, t.unexpected), (30, 110, 5, 0));
        assert_eq!(t.delivered_per_sec, 52.5);
        let t = totals(&cfg(&["--cluster"]), &st);
        assert_eq!(t.expected, 210);
        st.delivered = 31;
        let t = totals(&cfg(&["--mode", "echo"]), &st);
        assert_eq!((t.expected, t.lost, t.unexpected), (30, 0, 1));
    }

    #[test]
    fn merged_child_reports_give_whole_run_totals() {
        // Publisher process and two subscriber processes, merged as the parent does.
        let publisher = Stats {
            sent: vec![100],
            ..Stats::default()
        };
        let mut sub_a = Stats {
            receivers: vec![5],
            delivered: 500,
            ..Stats::default()
        };
        sub_a.latency.saturating_record(20_000);
        let mut sub_b = Stats {
            receivers: vec![5],
            delivered: 499,
            duplicates: 1,
            ..Stats::default()
        };
        sub_b.latency.saturating_record(40_000);
        sub_b.error("closed_by_server");
        let mut all = Stats::default();
        for s in [&publisher, &sub_a, &sub_b] {
            all.merge(&Stats::decode(&s.encode()).expect("wire"));
        }
        let t = totals(&cfg(&[]), &all);
        assert_eq!((t.expected, t.delivered, t.lost), (1000, 999, 1));
        let plan = Plan {
            procs: 3,
            threads: 1,
            source_ips: 1,
        };
        let c = cfg(&[]);
        let run = Run {
            cfg: &c,
            plan,
            stats: all,
            server: None,
            wall_secs: 3.0,
            series: Series::default(),
        };
        let j = run.json();
        for key in [
            "connections",
            "sent",
            "expected",
            "delivered",
            "lost",
            "duplicates",
            "out_of_order",
            "delivered_per_sec",
            "errors",
            "latency_us",
            "connect_latency_us",
        ] {
            assert!(j.get(key).is_some(), "missing {key}");
        }
        assert_eq!(j["lost"], 1);
        assert_eq!(j["duplicates"], 1);
        assert_eq!(j["errors"]["closed_by_server"], 1);
        assert_eq!(
            j["latency_us"]["max"].as_f64().map(|v| v.round()),
            Some(40.0)
        );
        assert!(j["connect_latency_us"]["p99"].is_null());
        assert!(run.text().contains("lost 1"));
        assert_eq!(j["tls"], "off");
    }
}
