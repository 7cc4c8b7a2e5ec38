//! The human-readable report printed at the end of a run (the default output).

use std::fmt::Write as _;

use hdrhistogram::Histogram;

use super::{tls_mode, totals, us, Run, PERCENTILES};
use crate::cli::Mode;

impl Run<'_> {
    /// The human-readable report.
    pub fn text(&self) -> String {
        let (cfg, st) = (self.cfg, &self.stats);
        let t = totals(cfg, st);
        let mut s = String::new();
        let what = match cfg.mode {
            Mode::Fanout => format!(
                "fan-out: {} subscribers + {} publisher(s), {} of {} B, {:.1} s measured \
                 after {:.1} s warmup",
                cfg.subscribers,
                cfg.publishers,
                if cfg.inflight > 0 {
                    format!("closed loop, {} in flight per publisher", cfg.inflight)
                } else {
                    format!("{} msg/s", cfg.rate)
                },
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
