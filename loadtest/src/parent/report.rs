//! The final report: merged counts, percentiles, and the three output formats (text, JSON,
//! `.hgrm`).

use std::fmt::Write as _;

use hdrhistogram::Histogram;
use serde_json::{json, Map, Value};

use crate::cli::{Config, Mode};
use crate::plan::Plan;
use crate::stats::Stats;

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

/// `{p50, p75, p90, p99, p999, p9999, max, mean, count}` in µs (nulls when empty).
pub fn latency_json(h: &Histogram<u64>) -> Value {
    let mut m = Map::new();
    for (_, key, q) in PERCENTILES {
        let v = if h.is_empty() {
            Value::Null
        } else {
            json!(us(h.value_at_quantile(q)))
        };
        m.insert(key.into(), v);
    }
    let (max, mean) = if h.is_empty() {
        (Value::Null, Value::Null)
    } else {
        (json!(us(h.max())), json!((h.mean() / 100.0).round() / 10.0))
    };
    m.insert("max".into(), max);
    m.insert("mean".into(), mean);
    m.insert("count".into(), json!(h.len()));
    Value::Object(m)
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
}

impl Run<'_> {
    /// The `--json` object.
    pub fn json(&self) -> Value {
        let (cfg, st) = (self.cfg, &self.stats);
        let t = totals(cfg, st);
        let errors: Map<String, Value> = st
            .errors
            .iter()
            .map(|(k, v)| (k.clone(), json!(v)))
            .collect();
        let (cpu_pct, ns_per) = match self.server {
            Some(s) if s.wall_ns > 0 => (
                json!((s.cpu_ns as f64 * 1000.0 / s.wall_ns as f64).round() / 10.0),
                if t.delivered > 0 {
                    json!((s.cpu_ns as f64 / t.delivered as f64 * 10.0).round() / 10.0)
                } else {
                    Value::Null
                },
            ),
            _ => (Value::Null, Value::Null),
        };
        json!({
            "mode": cfg.mode.name(),
            "urls": cfg.targets.iter().map(|t| t.url.clone()).collect::<Vec<_>>(),
            "tls": tls_mode(cfg),
            "connections": t.connections,
            "connections_attempted": st.attempted,
            "subscribers": st.receivers.iter().sum::<u64>(),
            "publishers": cfg.publishers,
            "rate": cfg.rate,
            "size": cfg.size,
            "warmup_s": cfg.warmup_ns as f64 / 1e9,
            "duration_s": cfg.duration_ns as f64 / 1e9,
            "sent": t.sent,
            "sent_total": st.sent_total,
            "unsent": st.unsent,
            "expected": t.expected,
            "delivered": t.delivered,
            "lost": t.lost,
            "unexpected": t.unexpected,
            "duplicates": st.duplicates,
            "out_of_order": st.out_of_order,
            "received_total": st.received,
            "delivered_per_sec": (t.delivered_per_sec * 10.0).round() / 10.0,
            "handshakes_per_sec": (t.handshakes_per_sec * 10.0).round() / 10.0,
            "errors": errors,
            "latency_us": latency_json(&st.latency),
            "connect_latency_us": latency_json(&st.connect_latency),
            "send_lag_us": latency_json(&st.send_lag),
            "procs": self.plan.procs,
            "threads_per_proc": self.plan.threads,
            "source_ips": self.plan.source_ips,
            "loadtest_cpu_s": st.cpu_ns as f64 / 1e9,
            "wall_s": (self.wall_secs * 1000.0).round() / 1000.0,
            "server_cpu_pct": cpu_pct,
            "server_ns_per_delivery": ns_per,
        })
    }

    /// The human-readable report.
    pub fn text(&self) -> String {
        let (cfg, st) = (self.cfg, &self.stats);
        let t = totals(cfg, st);
        let mut s = String::new();
        let what = match cfg.mode {
            Mode::Fanout => format!(
                "fan-out: {} subscribers + {} publisher(s), {} msg/s of {} B, {:.1} s measured \
                 after {:.1} s warmup",
                cfg.subscribers,
                cfg.publishers,
                cfg.rate,
                cfg.size,
                cfg.duration_ns as f64 / 1e9,
                cfg.warmup_ns as f64 / 1e9
            ),
            Mode::Echo => format!(
                "echo: {} connections, {} msg/s of {} B, {:.1} s measured after {:.1} s warmup",
                cfg.total,
                cfg.rate,
                cfg.size,
                cfg.duration_ns as f64 / 1e9,
                cfg.warmup_ns as f64 / 1e9
            ),
            Mode::Connect => format!("connect storm: {} connections", cfg.total),
        };
        let _ = writeln!(s, "loadtest {what}");
        let urls: Vec<&str> = cfg.targets.iter().map(|t| t.url.as_str()).collect();
        let tls = match tls_mode(cfg) {
            "verified" => " (TLS, certificate verified)",
            "insecure" => " (TLS, certificate not checked: --insecure)",
            _ => "",
        };
        let _ = writeln!(s, "  target(s) {}{tls}", urls.join(" "));
        let _ = writeln!(
            s,
            "  {} process(es) × {} thread(s), {} source address(es), {:.1} s wall, loadtest CPU {:.2} s",
            self.plan.procs,
            self.plan.threads,
            self.plan.source_ips,
            self.wall_secs,
            st.cpu_ns as f64 / 1e9
        );
        let _ = writeln!(
            s,
            "\nconnections    {} established of {} attempted, {:.0} handshakes/s",
            t.connections, st.attempted, t.handshakes_per_sec
        );
        let header: String = PERCENTILES
            .iter()
            .map(|(l, _, _)| format!("{l:>10}"))
            .chain(std::iter::once(format!("{:>10}", "max")))
            .collect();
        let _ = writeln!(s, "\nlatency (µs)   {header}");
        let row = |h: &Histogram<u64>| -> String {
            if h.is_empty() {
                return format!("{:>10}", "-");
            }
            PERCENTILES
                .iter()
                .map(|&(_, _, q)| format!("{:>10.1}", us(h.value_at_quantile(q))))
                .chain(std::iter::once(format!("{:>10.1}", us(h.max()))))
                .collect()
        };
        let _ = writeln!(s, "  connect      {}", row(&st.connect_latency));
        if cfg.mode != Mode::Connect {
            let label = if cfg.mode == Mode::Echo {
                "round trip"
            } else {
                "delivery  "
            };
            let _ = writeln!(s, "  {label}   {}", row(&st.latency));
            let _ = writeln!(s, "  send lag     {}", row(&st.send_lag));
            let _ = writeln!(
                s,
                "\nmessages       sent {} (+{} warmup), expected deliveries {}, delivered {} \
                 ({:.0}/s)",
                t.sent,
                st.sent_total.saturating_sub(t.sent),
                t.expected,
                t.delivered,
                t.delivered_per_sec
            );
            let _ = writeln!(
                s,
                "               lost {}, duplicates {}, out of order {}, unexpected {}, unsent {}",
                t.lost, st.duplicates, st.out_of_order, t.unexpected, st.unsent
            );
        }
        if let Some(sv) = self.server {
            if sv.wall_ns > 0 {
                let pct = sv.cpu_ns as f64 * 100.0 / sv.wall_ns as f64;
                let per = if t.delivered > 0 {
                    format!("{:.1} ns/delivery", sv.cpu_ns as f64 / t.delivered as f64)
                } else {
                    "-".into()
                };
                let _ = writeln!(s, "server         CPU {pct:.1}% over the window, {per}");
            }
        }
        if st.errors.is_empty() {
            let _ = writeln!(s, "errors         none");
        } else {
            let list: Vec<String> = st.errors.iter().map(|(k, v)| format!("{k} {v}")).collect();
            let _ = writeln!(s, "errors         {}", list.join(", "));
            if st.errors.contains_key("tls_cert") {
                let _ = writeln!(
                    s,
                    "               tls_cert: the server's certificate was rejected (--insecure \
                     accepts a self-signed one)"
                );
            }
        }
        s
    }
}

/// How the run used TLS: `off` (ws:// only), `verified` or `insecure` (`--insecure`).
fn tls_mode(cfg: &Config) -> &'static str {
    match (cfg.uses_tls(), cfg.insecure) {
        (false, _) => "off",
        (true, false) => "verified",
        (true, true) => "insecure",
    }
}

/// The full percentile distribution in HdrHistogram's `.hgrm` text format (values in µs).
pub fn hgrm(h: &Histogram<u64>) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "{:>12} {:>14} {:>10} {:>14}\n",
        "Value", "Percentile", "TotalCount", "1/(1-Percentile)"
    );
    let scale = 1000.0;
    let mut total = 0u64;
    if !h.is_empty() {
        for v in h.iter_quantiles(5) {
            total += v.count_since_last_iteration();
            let value = v.value_iterated_to() as f64 / scale;
            let q = v.quantile_iterated_to();
            if q < 1.0 {
                let _ = writeln!(
                    s,
                    "{value:12.3} {q:2.12} {total:10} {:14.2}",
                    1.0 / (1.0 - q)
                );
            } else {
                let _ = writeln!(s, "{value:12.3} {q:2.12} {total:10}");
            }
        }
    }
    let _ = writeln!(
        s,
        "#[Mean    = {:12.3}, StdDeviation   = {:12.3}]",
        h.mean() / scale,
        h.stdev() / scale
    );
    let _ = writeln!(
        s,
        "#[Max     = {:12.3}, Total count    = {:12}]",
        h.max() as f64 / scale,
        h.len()
    );
    let _ = writeln!(
        s,
        "#[Buckets = {:12}, SubBuckets     = {:12}]",
        h.buckets(),
        sub_buckets(h.sigfig())
    );
    s
}

/// Sub-buckets per bucket for a precision, as HdrHistogram computes it.
fn sub_buckets(sigfig: u8) -> u64 {
    let largest = 2 * 10u64.pow(sigfig as u32);
    largest.next_power_of_two()
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

    #[test]
    fn hgrm_format() {
        let mut h = crate::stats::new_histogram();
        for v in 1..=1000u64 {
            h.saturating_record(v * 1000);
        }
        let out = hgrm(&h);
        let mut lines = out.lines();
        assert!(lines
            .next()
            .is_some_and(|l| l.contains("Value") && l.contains("1/(1-Percentile)")));
        let first = out.lines().nth(2).expect("data line");
        let cols: Vec<&str> = first.split_whitespace().collect();
        assert_eq!(cols.len(), 4);
        assert_eq!(cols[0], "1.000");
        assert!(out.contains("SubBuckets     =         2048"));
        assert!(out.contains("Total count    =         1000"));
        let last_data = out
            .lines()
            .rfind(|l| !l.starts_with('#') && !l.is_empty())
            .expect("last");
        assert!(last_data.contains("1.000000000000"));
    }
}
