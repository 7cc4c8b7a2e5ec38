//! The `--json` report: one object with every count, rate and percentile, for scripts.

use hdrhistogram::Histogram;
use serde_json::{json, Map, Value};

use super::{tls_mode, totals, us, Run, PERCENTILES};

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

/// `[[percentile, µs], …]`: the whole distribution at HdrHistogram's usual steps (what
/// `.hgrm` lists and the HTML report plots on a log percentile axis).
pub fn distribution_json(h: &Histogram<u64>) -> Value {
    if h.is_empty() {
        return json!([]);
    }
    let points: Vec<Value> = h
        .iter_quantiles(5)
        .map(|v| json!([v.quantile_iterated_to() * 100.0, us(v.value_iterated_to())]))
        .collect();
    Value::Array(points)
}

/// The run second by second (see [`super::Sample`]).
fn series_json(series: &super::Series) -> Value {
    let samples: Vec<Value> = series
        .samples
        .iter()
        .map(|s| {
            json!({
                "t_s": (s.t_s * 1000.0).round() / 1000.0,
                "phase": s.phase,
                "open": s.open,
                "sent": s.sent,
                "received": s.received,
                "duplicates": s.duplicates,
                "out_of_order": s.out_of_order,
                "errors": s.errors,
                "p50_us": s.p50_us,
                "p99_us": s.p99_us,
                "max_us": s.max_us,
                "server_cpu_ns": s.server_cpu_ns,
                "server_ns_per_delivery": s.server_cpu_ns.filter(|_| s.received > 0)
                    .map(|c| (c as f64 / s.received as f64 * 10.0).round() / 10.0),
            })
        })
        .collect();
    json!({
        "window_start_s": series.window_start_s.map(|w| (w * 1000.0).round() / 1000.0),
        "samples": samples,
    })
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
            "rate": (cfg.inflight == 0).then_some(cfg.rate),
            "inflight": (cfg.inflight > 0).then_some(cfg.inflight),
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
            "latency_distribution_us": distribution_json(&st.latency),
            "connect_latency_distribution_us": distribution_json(&st.connect_latency),
            "series": series_json(&self.series),
        })
    }
}
