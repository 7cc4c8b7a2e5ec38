//! `GET /metrics`, fetched and parsed with `prometheus-parse` (the exposition format a
//! Prometheus server reads), and the lookups the metrics tests make on a scrape.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use prometheus_parse::{Scrape, Value};

use crate::http::{assert_closed_by_server, http_request};

/// One parsed scrape, with its text for failure messages.
pub struct Metrics {
    pub scrape: Scrape,
    pub text: String,
}

/// `GET /metrics` on a fresh connection: 200, the exposition content type, the connection
/// closed by the server, parsed.
pub fn scrape(addr: SocketAddr) -> Metrics {
    let (mut response, mut stream) =
        http_request(addr, b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(response.status, 200, "/metrics: {}", response.head_text);
    assert_eq!(
        response.header("content-type"),
        Some("text/plain; version=0.0.4"),
        "{}",
        response.head_text
    );
    assert_closed_by_server(&mut response, &mut stream, "/metrics");
    let text = String::from_utf8(response.body).expect("UTF-8 metrics");
    let scrape = Scrape::parse(text.lines().map(|l| Ok(l.to_string()))).expect("parse metrics");
    Metrics { scrape, text }
}

/// Scrapes every 20 ms until `done` holds (workers publish their counters once per turn, so
/// another worker's share can trail the client's view); returns that scrape, or the last one
/// after 10 s.
pub fn scrape_until(addr: SocketAddr, done: impl FnMut(&Metrics) -> bool) -> Metrics {
    scrape_every_until(addr, Duration::from_millis(20), done)
}

/// [`scrape_until`], scraping every `every`: longer than the per-topic board's 100 ms when a
/// test waits for two scrapes in a row to agree.
pub fn scrape_every_until(
    addr: SocketAddr,
    every: Duration,
    mut done: impl FnMut(&Metrics) -> bool,
) -> Metrics {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let m = scrape(addr);
        if done(&m) || Instant::now() >= deadline {
            return m;
        }
        std::thread::sleep(every);
    }
}

impl Metrics {
    /// The single sample of `name` whose labels include `labels` (none: the unlabelled one).
    pub fn value(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        let found: Vec<f64> = self
            .scrape
            .samples
            .iter()
            .filter(|s| s.metric == name)
            .filter(|s| labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
            .filter_map(|s| match s.value {
                Value::Counter(v) | Value::Gauge(v) | Value::Untyped(v) => Some(v),
                _ => None,
            })
            .collect();
        assert_eq!(
            found.len(),
            1,
            "{name}{labels:?}: {} samples in\n{}",
            found.len(),
            self.text
        );
        found[0]
    }

    /// `(value of label `label`, sample value)` for every counter or gauge sample of `name`.
    pub fn by_label(&self, name: &str, label: &str) -> BTreeMap<String, f64> {
        self.scrape
            .samples
            .iter()
            .filter(|s| s.metric == name)
            .filter_map(|s| {
                let v = match s.value {
                    Value::Counter(v) | Value::Gauge(v) => v,
                    _ => return None,
                };
                Some((s.labels.get(label)?.to_string(), v))
            })
            .collect()
    }

    /// The one histogram `name`'s buckets as `(le, cumulative count)`, in the order printed.
    pub fn histogram(&self, name: &str) -> Vec<(f64, f64)> {
        let histograms: Vec<_> = self
            .scrape
            .samples
            .iter()
            .filter(|s| s.metric == name)
            .collect();
        assert_eq!(
            histograms.len(),
            1,
            "one histogram {name} in\n{}",
            self.text
        );
        match &histograms[0].value {
            Value::Histogram(buckets) => buckets.iter().map(|b| (b.less_than, b.count)).collect(),
            other => panic!("{name} is not a histogram: {other:?}"),
        }
    }

    /// The value of `name{topic=TOPIC}` (0 when there is no such sample; a histogram's
    /// count).
    pub fn topic(&self, name: &str, topic: &str) -> f64 {
        self.scrape
            .samples
            .iter()
            .filter(|s| s.metric == name && s.labels.get("topic") == Some(topic))
            .map(|s| match &s.value {
                Value::Counter(v) | Value::Gauge(v) | Value::Untyped(v) => *v,
                Value::Histogram(buckets) => buckets.last().map_or(0.0, |b| b.count),
                other => panic!("{name}: unexpected {other:?}"),
            })
            .next()
            .unwrap_or(0.0)
    }

    /// Every `topic` label value printed for `name`, sorted.
    pub fn topics(&self, name: &str) -> Vec<String> {
        let mut topics: Vec<String> = self
            .scrape
            .samples
            .iter()
            .filter(|s| s.metric == name)
            .filter_map(|s| s.labels.get("topic").map(str::to_string))
            .collect();
        topics.sort();
        topics.dedup();
        topics
    }
}
