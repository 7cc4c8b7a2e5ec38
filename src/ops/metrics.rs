//! `GET /metrics`, sans-IO: the workers' published counters in, the Prometheus text
//! exposition format (0.0.4) out. Any worker answers a scrape from the snapshots every worker
//! publishes once per turn, so a scrape costs no worker anything but the one building it.

use std::fmt::Write as _;

use crate::ops::stats::{Counters, Reject, LATENCY_BOUNDS_MICROS};

/// The `Content-Type` of the exposition format this module writes.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4";

/// The answer to `GET /metrics`: `body` in the Prometheus text format.
pub fn response(body: &str) -> Vec<u8> {
    format!(
        "HTTP/1.1 200 OK\r\nContent-Type: {CONTENT_TYPE}\r\nContent-Length: {}\r\nCache-Control: no-store\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// The `le` labels of the latency buckets, in seconds (`LATENCY_BOUNDS_MICROS`, then `+Inf`).
pub(crate) const LE: [&str; LATENCY_BOUNDS_MICROS.len() + 1] = [
    "5e-05", "0.0001", "0.00025", "0.0005", "0.001", "0.0025", "0.005", "0.01", "0.025", "0.05",
    "0.1", "0.25", "0.5", "1", "2.5", "5", "+Inf",
];

/// Render every metric for `workers` (one snapshot per worker, in worker order).
pub fn render(workers: &[Counters]) -> String {
    let total = Counters::sum(workers);
    let mut out = String::with_capacity(4096);

    header(
        &mut out,
        "herald_connections",
        "gauge",
        "Connections currently open, per worker.",
    );
    for (i, c) in workers.iter().enumerate() {
        let _ = writeln!(out, "herald_connections{{worker=\"{i}\"}} {}", c.open);
    }

    let counters: [(&str, &str, u64); 15] = [
        (
            "herald_accepted_total",
            "Connections accepted.",
            total.accepted,
        ),
        (
            "herald_messages_in_total",
            "Messages received from clients (WebSocket and HTTP publishes).",
            total.msgs_in,
        ),
        (
            "herald_deliveries_total",
            "Messages written to subscribers, one per subscriber per message.",
            total.frames_out,
        ),
        (
            "herald_bytes_in_total",
            "Bytes read from clients (after TLS decryption).",
            total.bytes_in,
        ),
        (
            "herald_bytes_out_total",
            "Bytes written to clients (before TLS encryption).",
            total.bytes_out,
        ),
        (
            "herald_slow_consumer_closes_total",
            "Subscribers closed with 1008 for exceeding --max-backlog.",
            total.slow_closes,
        ),
        (
            "herald_aborted_connections_total",
            "Connections reset because their last bytes were not delivered within --close-grace, or they were slow consumers.",
            total.aborts,
        ),
        (
            "herald_full_drops_total",
            "Publications dropped because a worker's inbox and outbox were full.",
            total.full_drops,
        ),
        (
            "herald_auth_failures_total",
            "Requests refused for missing or bad credentials.",
            total.auth_failures,
        ),
        (
            "herald_rate_limited_total",
            "Connections closed for going over a rate limit.",
            total.rate_limited,
        ),
        (
            "herald_replayed_total",
            "Messages sent from history to joining herald.v1 subscribers.",
            total.replayed,
        ),
        (
            "herald_v1_refusals_total",
            "herald.v1 requests (or topics of one) answered with an error.",
            total.v1_refusals,
        ),
        (
            "herald_socket_writes_total",
            "Socket write calls to clients that took bytes; herald_deliveries_total over this is the deliveries each write carries.",
            total.socket_writes,
        ),
        (
            "herald_batch_holds_total",
            "Topic batches held for a later turn by --batch-window (the topic was under load).",
            total.batch_holds,
        ),
        (
            "herald_fd_pauses_total",
            "Times accepting paused because the process ran out of file descriptors.",
            total.fd_pauses,
        ),
    ];
    for (name, help, value) in counters {
        header(&mut out, name, "counter", help);
        let _ = writeln!(out, "{name} {value}");
    }

    header(
        &mut out,
        "herald_rejected_total",
        "counter",
        "Handshakes and HTTP requests refused, by reason.",
    );
    for &reason in Reject::ALL {
        let _ = writeln!(
            out,
            "herald_rejected_total{{reason=\"{}\"}} {}",
            reason.label(),
            total.rejected.get(reason)
        );
    }

    for (name, help, value) in [
        (
            "herald_history_messages",
            "Messages kept in topic history.",
            total.history_msgs,
        ),
        (
            "herald_history_bytes",
            "Memory charged for kept messages, bytes.",
            total.history_bytes,
        ),
    ] {
        header(&mut out, name, "gauge", help);
        let _ = writeln!(out, "{name} {value}");
    }

    let name = "herald_fanout_latency_seconds";
    header(
        &mut out,
        name,
        "histogram",
        "Time from a message's arrival to its write to a subscriber socket.",
    );
    let mut cumulative = 0u64;
    for (le, count) in LE.iter().zip(total.latency.counts) {
        cumulative += count;
        let _ = writeln!(out, "{name}_bucket{{le=\"{le}\"}} {cumulative}");
    }
    let _ = writeln!(out, "{name}_sum {}", total.latency.sum_micros as f64 / 1e6);
    let _ = writeln!(out, "{name}_count {cumulative}");
    out
}

fn header(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn value_of<'a>(text: &'a str, series: &str) -> Option<&'a str> {
        text.lines()
            .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
    }

    #[test]
    fn le_labels_match_the_bounds() {
        for (le, micros) in LE.iter().zip(LATENCY_BOUNDS_MICROS) {
            let seconds: f64 = le.parse().unwrap();
            assert!(
                (seconds * 1e6 - micros as f64).abs() < 1e-6,
                "{le} vs {micros} µs"
            );
        }
        assert_eq!(LE[LE.len() - 1], "+Inf");
    }

    #[test]
    fn renders_workers_totals_reasons_and_a_cumulative_histogram() {
        let mut w0 = Counters {
            open: 3,
            frames_out: 5,
            accepted: 7,
            ..Default::default()
        };
        w0.rejected.count(Reject::BadTopic);
        w0.latency.record_n(40, 2); // ≤ 50 µs
        w0.latency.record_n(3_000, 3); // ≤ 5 ms
        let mut w1 = Counters {
            open: 2,
            frames_out: 1,
            accepted: 1,
            history_bytes: 99,
            ..Default::default()
        };
        w1.rejected.count(Reject::BadTopic);
        w1.rejected.count(Reject::Timeout);
        w1.latency.record_n(6_000_000, 1); // over 5 s
        let text = render(&[w0, w1]);

        assert_eq!(
            value_of(&text, "herald_connections{worker=\"0\"}"),
            Some("3")
        );
        assert_eq!(
            value_of(&text, "herald_connections{worker=\"1\"}"),
            Some("2")
        );
        assert_eq!(value_of(&text, "herald_accepted_total"), Some("8"));
        assert_eq!(value_of(&text, "herald_deliveries_total"), Some("6"));
        assert_eq!(value_of(&text, "herald_history_bytes"), Some("99"));
        assert_eq!(
            value_of(&text, "herald_rejected_total{reason=\"bad_topic\"}"),
            Some("2")
        );
        assert_eq!(
            value_of(&text, "herald_rejected_total{reason=\"timeout\"}"),
            Some("1")
        );
        // Declared reasons print at 0 before anything counts them.
        assert_eq!(
            value_of(
                &text,
                "herald_rejected_total{reason=\"too_many_conns_per_ip\"}"
            ),
            Some("0")
        );
        let bucket = |le: &str| {
            value_of(
                &text,
                &format!("herald_fanout_latency_seconds_bucket{{le=\"{le}\"}}"),
            )
        };
        assert_eq!(bucket("5e-05"), Some("2"));
        assert_eq!(bucket("0.0025"), Some("2"));
        assert_eq!(bucket("0.005"), Some("5"));
        assert_eq!(bucket("5"), Some("5"));
        assert_eq!(bucket("+Inf"), Some("6"));
        assert_eq!(
            value_of(&text, "herald_fanout_latency_seconds_count"),
            Some("6")
        );
        assert_eq!(
            value_of(&text, "herald_fanout_latency_seconds_sum"),
            Some("6.00908")
        );
    }

    #[test]
    fn every_series_has_help_and_type_once_and_names_are_prefixed() {
        let text = render(&[Counters::default()]);
        let mut typed = Vec::new();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                let name = rest.split(' ').next().unwrap();
                assert!(!typed.contains(&name), "TYPE twice for {name}");
                typed.push(name);
                continue;
            }
            if line.starts_with('#') {
                continue;
            }
            let series = line.split([' ', '{']).next().unwrap();
            assert!(series.starts_with("herald_"), "{line}");
            let family = ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|s| series.strip_suffix(s).filter(|f| typed.contains(f)))
                .unwrap_or(series);
            assert!(typed.contains(&family), "no TYPE before {line}");
            assert!(
                text.contains(&format!("# HELP {family} ")),
                "no HELP for {family}"
            );
        }
        assert!(text.ends_with('\n'));
    }

    #[test]
    fn the_response_carries_the_exposition_type() {
        let metrics = String::from_utf8(response("a 1\n")).unwrap();
        assert!(metrics.contains("\r\nContent-Type: text/plain; version=0.0.4\r\n"));
        assert!(metrics.ends_with(
            "\r\nContent-Length: 4\r\nCache-Control: no-store\r\nConnection: close\r\n\r\na 1\n"
        ));
    }
}
