//! Counters and histograms of one event loop, mergeable across event loops and processes.
//!
//! This one type carries the results all the way to the report: each event loop fills one, its
//! child process merges its loops' into one, and the parent merges the children's.
//!
//! Child processes send their [`Stats`] to the parent as one text line ([`Stats::encode`]);
//! histograms travel as their recorded `(value, count)` buckets, which is lossless for HDR
//! histograms of the same precision.

use std::collections::BTreeMap;

use hdrhistogram::Histogram;

/// Highest latency recorded (one hour in ns); longer ones are clamped.
const MAX_LATENCY_NS: u64 = 3_600_000_000_000;

/// A fresh latency histogram (nanoseconds, 3 significant digits).
pub fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, MAX_LATENCY_NS, 3).expect("static histogram bounds are valid")
}

/// Everything one event loop measured (or, merged, a child process or the whole run).
#[derive(Debug, Clone)]
pub struct Stats {
    /// Connection attempts started.
    pub attempted: u64,
    /// Upgrades completed.
    pub connected: u64,
    /// Receiving connections open when traffic started, per URL index.
    pub receivers: Vec<u64>,
    /// Measured-window messages actually sent, per URL index of the publisher.
    pub sent: Vec<u64>,
    /// All messages sent, warmup included.
    pub sent_total: u64,
    /// Scheduled messages not sent because the publisher's connection was down or backlogged.
    pub unsent: u64,
    /// Data messages received by any connection.
    pub received: u64,
    /// Distinct measured messages received by receivers.
    pub delivered: u64,
    /// Measured messages received again.
    pub duplicates: u64,
    /// Measured messages received after a later one from the same publisher.
    pub out_of_order: u64,
    /// Errors by kind.
    pub errors: BTreeMap<String, u64>,
    /// Delivery (or round-trip) latency from the scheduled send time, ns.
    pub latency: Histogram<u64>,
    /// Connect plus upgrade latency, ns.
    pub connect_latency: Histogram<u64>,
    /// How late each message was written after its scheduled time, ns: the load generator's
    /// own lag, which is included in `latency`.
    pub send_lag: Histogram<u64>,
    /// Earliest connection attempt (CLOCK_MONOTONIC ns; `u64::MAX` if none).
    pub first_attempt_ns: u64,
    /// Latest completed upgrade (CLOCK_MONOTONIC ns; 0 if none).
    pub last_connected_ns: u64,
    /// CPU time used by the child process (user + system), ns.
    pub cpu_ns: u64,
}

impl Default for Stats {
    fn default() -> Self {
        Stats {
            attempted: 0,
            connected: 0,
            receivers: Vec::new(),
            sent: Vec::new(),
            sent_total: 0,
            unsent: 0,
            received: 0,
            delivered: 0,
            duplicates: 0,
            out_of_order: 0,
            errors: BTreeMap::new(),
            latency: new_histogram(),
            connect_latency: new_histogram(),
            send_lag: new_histogram(),
            first_attempt_ns: u64::MAX,
            last_connected_ns: 0,
            cpu_ns: 0,
        }
    }
}

/// Adds `b` into `a` element-wise, growing `a` as needed.
fn add_vec(a: &mut Vec<u64>, b: &[u64]) {
    if a.len() < b.len() {
        a.resize(b.len(), 0);
    }
    for (x, y) in a.iter_mut().zip(b) {
        *x += y;
    }
}

/// Adds to the per-URL counter at `index`, growing the vector as needed.
pub fn bump(v: &mut Vec<u64>, index: usize) {
    if v.len() <= index {
        v.resize(index + 1, 0);
    }
    v[index] += 1;
}

impl Stats {
    /// Counts one error of `kind`.
    pub fn error(&mut self, kind: &str) {
        match self.errors.get_mut(kind) {
            Some(n) => *n += 1,
            None => {
                self.errors.insert(kind.to_string(), 1);
            }
        }
    }

    /// Total errors of all kinds.
    pub fn error_total(&self) -> u64 {
        self.errors.values().sum()
    }

    /// Folds another event loop's or child's results into this one, exactly: counts add up
    /// and histograms merge bucket by bucket.
    pub fn merge(&mut self, o: &Stats) {
        self.attempted += o.attempted;
        self.connected += o.connected;
        add_vec(&mut self.receivers, &o.receivers);
        add_vec(&mut self.sent, &o.sent);
        self.sent_total += o.sent_total;
        self.unsent += o.unsent;
        self.received += o.received;
        self.delivered += o.delivered;
        self.duplicates += o.duplicates;
        self.out_of_order += o.out_of_order;
        for (k, v) in &o.errors {
            *self.errors.entry(k.clone()).or_insert(0) += v;
        }
        // Same bounds on both sides, so adding cannot fail; clamp defensively anyway.
        merge_hist(&mut self.latency, &o.latency);
        merge_hist(&mut self.connect_latency, &o.connect_latency);
        merge_hist(&mut self.send_lag, &o.send_lag);
        self.first_attempt_ns = self.first_attempt_ns.min(o.first_attempt_ns);
        self.last_connected_ns = self.last_connected_ns.max(o.last_connected_ns);
        self.cpu_ns += o.cpu_ns;
    }

    /// One-line text form for the child-to-parent pipe.
    pub fn encode(&self) -> String {
        let list = |v: &[u64]| {
            if v.is_empty() {
                "-".to_string()
            } else {
                v.iter().map(u64::to_string).collect::<Vec<_>>().join(",")
            }
        };
        let mut s = format!(
            "attempted={} connected={} receivers={} sent={} sent_total={} unsent={} received={} \
             delivered={} duplicates={} out_of_order={} first_attempt={} last_connected={} cpu={} \
             latency={} connect_latency={} send_lag={}",
            self.attempted,
            self.connected,
            list(&self.receivers),
            list(&self.sent),
            self.sent_total,
            self.unsent,
            self.received,
            self.delivered,
            self.duplicates,
            self.out_of_order,
            self.first_attempt_ns,
            self.last_connected_ns,
            self.cpu_ns,
            encode_hist(&self.latency),
            encode_hist(&self.connect_latency),
            encode_hist(&self.send_lag),
        );
        for (k, v) in &self.errors {
            s.push_str(&format!(" error.{}={v}", sanitize_kind(k)));
        }
        s
    }

    /// Parses [`encode`](Self::encode)'s output.
    pub fn decode(line: &str) -> Result<Stats, String> {
        let mut st = Stats::default();
        for tok in line.split_ascii_whitespace() {
            let (key, val) = tok
                .split_once('=')
                .ok_or_else(|| format!("bad token {tok:?}"))?;
            let num = || {
                val.parse::<u64>()
                    .map_err(|_| format!("bad number in {tok:?}"))
            };
            match key {
                "attempted" => st.attempted = num()?,
                "connected" => st.connected = num()?,
                "receivers" => st.receivers = decode_list(val)?,
                "sent" => st.sent = decode_list(val)?,
                "sent_total" => st.sent_total = num()?,
                "unsent" => st.unsent = num()?,
                "received" => st.received = num()?,
                "delivered" => st.delivered = num()?,
                "duplicates" => st.duplicates = num()?,
                "out_of_order" => st.out_of_order = num()?,
                "first_attempt" => st.first_attempt_ns = num()?,
                "last_connected" => st.last_connected_ns = num()?,
                "cpu" => st.cpu_ns = num()?,
                "latency" => st.latency = decode_hist(val)?,
                "connect_latency" => st.connect_latency = decode_hist(val)?,
                "send_lag" => st.send_lag = decode_hist(val)?,
                _ => match key.strip_prefix("error.") {
                    Some(kind) => {
                        st.errors.insert(kind.to_string(), num()?);
                    }
                    None => return Err(format!("unknown field {key:?}")),
                },
            }
        }
        Ok(st)
    }
}

/// Adds `src` into `dst`; both come from [`new_histogram`], so bounds always match.
pub fn merge_hist(dst: &mut Histogram<u64>, src: &Histogram<u64>) {
    if dst.add(src).is_err() {
        for v in src.iter_recorded() {
            dst.saturating_record_n(v.value_iterated_to(), v.count_at_value());
        }
    }
}

/// Error kinds travel as `error.KIND=N` tokens, so they must not contain separators.
fn sanitize_kind(k: &str) -> String {
    k.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

fn decode_list(val: &str) -> Result<Vec<u64>, String> {
    if val == "-" {
        return Ok(Vec::new());
    }
    val.split(',')
        .map(|x| x.parse::<u64>().map_err(|_| format!("bad list {val:?}")))
        .collect()
}

/// Text form of a histogram: `value:count,…` over recorded buckets, or `-` when empty.
pub fn encode_hist(h: &Histogram<u64>) -> String {
    if h.is_empty() {
        return "-".into();
    }
    h.iter_recorded()
        .map(|v| format!("{}:{}", v.value_iterated_to(), v.count_at_value()))
        .collect::<Vec<_>>()
        .join(",")
}

/// Parses [`encode_hist`]'s output.
pub fn decode_hist(val: &str) -> Result<Histogram<u64>, String> {
    let mut h = new_histogram();
    if val == "-" {
        return Ok(h);
    }
    for pair in val.split(',') {
        let (v, c) = pair
            .split_once(':')
            .ok_or_else(|| format!("bad histogram bucket {pair:?}"))?;
        let v: u64 = v
            .parse()
            .map_err(|_| format!("bad histogram value {v:?}"))?;
        let c: u64 = c
            .parse()
            .map_err(|_| format!("bad histogram count {c:?}"))?;
        h.saturating_record_n(v, c);
    }
    Ok(h)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(seed: u64) -> Stats {
        let mut s = Stats {
            attempted: 10 + seed,
            connected: 9 + seed,
            receivers: vec![4, 5],
            sent: vec![100 + seed],
            sent_total: 120,
            unsent: seed,
            received: 999,
            delivered: 900,
            duplicates: 1,
            out_of_order: 2,
            first_attempt_ns: 1000 + seed,
            last_connected_ns: 2000 + seed,
            cpu_ns: 5,
            ..Stats::default()
        };
        for v in [1u64, 50, 1000, 123_456, 9_999_999, MAX_LATENCY_NS * 2] {
            s.latency.saturating_record(v + seed);
        }
        s.connect_latency.saturating_record(40_000);
        s.send_lag.saturating_record(3_000);
        s.error("connect_refused");
        s.error("http_404");
        s.error("http_404");
        s
    }

    #[test]
    fn encode_decode_round_trip() {
        let s = sample(3);
        let d = Stats::decode(&s.encode()).expect("decodes");
        assert_eq!(d.encode(), s.encode());
        assert_eq!(d.latency.len(), 6);
        assert_eq!(d.latency.max(), s.latency.max());
        assert_eq!(
            d.latency.value_at_quantile(0.5),
            s.latency.value_at_quantile(0.5)
        );
        assert_eq!(d.errors.get("http_404"), Some(&2));
        let empty = Stats::default();
        let d = Stats::decode(&empty.encode()).expect("decodes");
        assert!(d.latency.is_empty() && d.receivers.is_empty());
        assert_eq!(d.first_attempt_ns, u64::MAX);
    }

    #[test]
    fn decode_rejects_garbage() {
        assert!(Stats::decode("attempted=x").is_err());
        assert!(Stats::decode("bogus=1").is_err());
        assert!(Stats::decode("latency=1:2,3").is_err());
        assert!(Stats::decode("noequals").is_err());
    }

    #[test]
    fn merge_adds_everything() {
        let mut a = sample(0);
        let b = sample(1);
        a.merge(&b);
        assert_eq!(a.attempted, 21);
        assert_eq!(a.receivers, vec![8, 10]);
        assert_eq!(a.sent, vec![201]);
        assert_eq!(a.delivered, 1800);
        assert_eq!(a.latency.len(), 12);
        assert_eq!(a.connect_latency.len(), 2);
        assert_eq!(a.send_lag.len(), 2);
        assert_eq!(a.errors.get("http_404"), Some(&4));
        assert_eq!(a.first_attempt_ns, 1000);
        assert_eq!(a.last_connected_ns, 2001);
        let mut c = Stats::default();
        c.merge(&a);
        assert_eq!(c.encode(), a.encode());
        let mut v = vec![1];
        bump(&mut v, 3);
        assert_eq!(v, vec![1, 0, 0, 1]);
    }
}
