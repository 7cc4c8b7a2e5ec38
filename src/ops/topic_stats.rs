//! Per-topic numbers for `GET /metrics` (`--metrics-topics PATTERN`).
//!
//! Why this shape: a topic label per topic would make the label set unbounded, so only topics
//! matching a pattern get one, and only the first `--metrics-topics-max` of them; later
//! matching topics share the label `topic="other"`. A topic's label (its *slot*) is resolved
//! once, when a worker creates the topic's state (first subscriber here, or first message
//! numbered by the owner), and kept on that state; from then on a delivery adds to plain
//! integers in the worker's [`TopicTally`] — no lock, no lookup, no pattern match per message.
//! The worker copies its tally into its [`TopicBoard`] cell (a `Mutex`, taken once per
//! publish interval by the worker and once per scrape by the reader, never on the message
//! path: a per-topic table of atomics would cost the same stores for nothing, and the table
//! is small and bounded) and a scrape sums the cells over workers.

use std::fmt::Write as _;
use std::sync::{Mutex, PoisonError};

use crate::ops::metrics::LE;
use crate::ops::stats::{LatencyBuckets, LATENCY_BOUNDS_MICROS};
use crate::proto::pattern::PatternList;

/// The label of the bucket shared by matching topics past the cap.
pub const OTHER: &str = "other";

/// One topic's numbers on one worker (or summed over workers).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct TopicCounts {
    /// Messages numbered by the topic's owner (counted once, by the owner only).
    pub messages: u64,
    /// Messages written to subscribers, one per subscriber per message.
    pub deliveries: u64,
    /// Subscribers now (gauge; each worker counts its own).
    pub subscribers: u64,
    /// Fan-out latency of those deliveries, in the global histogram's buckets.
    pub latency: LatencyBuckets,
}

impl TopicCounts {
    fn add(&mut self, other: &TopicCounts) {
        self.messages += other.messages;
        self.deliveries += other.deliveries;
        self.subscribers += other.subscribers;
        for (a, b) in self.latency.counts.iter_mut().zip(other.latency.counts) {
            *a += b;
        }
        self.latency.sum_micros = self
            .latency
            .sum_micros
            .wrapping_add(other.latency.sum_micros);
    }
}

/// Which topics get a label, shared by all workers. Consulted only when a topic's state is
/// created on a worker (a lock then, never per message).
#[derive(Debug)]
pub struct TopicSelector {
    patterns: PatternList,
    max: usize,
    /// Topics given a label of their own, in slot order; never more than `max`, never
    /// forgotten (a label keeps meaning the same topic for the life of the process).
    admitted: Mutex<Vec<String>>,
}

impl TopicSelector {
    /// Topics matching `patterns` get labels, the first `max` of them their own.
    pub fn new(patterns: PatternList, max: usize) -> Self {
        TopicSelector {
            patterns,
            max,
            admitted: Mutex::new(Vec::new()),
        }
    }

    /// Whether any pattern is set (otherwise nothing is counted per topic).
    pub fn enabled(&self) -> bool {
        !self.patterns.is_empty()
    }

    /// Slots per worker tally: one per admitted topic, then `other`.
    pub fn slots(&self) -> usize {
        self.max + 1
    }

    /// The slot of `topic`: `None` if no pattern matches it, `Some(max)` (the `other`
    /// bucket) if it matches but the cap is reached.
    pub fn resolve(&self, topic: &str) -> Option<u32> {
        if !self.patterns.matches(topic) {
            return None;
        }
        let mut admitted = self.admitted.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(i) = admitted.iter().position(|t| t == topic) {
            return Some(i as u32);
        }
        if admitted.len() < self.max {
            admitted.push(topic.to_string());
            return Some((admitted.len() - 1) as u32);
        }
        Some(self.max as u32)
    }

    /// The admitted topics, in slot order.
    pub fn admitted(&self) -> Vec<String> {
        self.admitted
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

/// One worker's per-topic counts, indexed by slot. Plain integers: only its worker writes.
#[derive(Debug, Default)]
pub struct TopicTally {
    pub slots: Vec<TopicCounts>,
    /// Something changed since the last publish.
    pub dirty: bool,
}

impl TopicTally {
    /// A tally with `slots` slots (0 when per-topic metrics are off: nothing is counted).
    pub fn new(slots: usize) -> Self {
        TopicTally {
            slots: vec![TopicCounts::default(); slots],
            dirty: false,
        }
    }

    /// The counts of `slot`, to add to.
    #[inline]
    pub fn at(&mut self, slot: u32) -> Option<&mut TopicCounts> {
        self.dirty = true;
        self.slots.get_mut(slot as usize)
    }
}

/// How many busiest topics each worker picks and the stats line shows.
pub const BUSIEST: usize = 5;

/// One of the busiest topics over a stats interval (per worker, or merged over workers).
/// Workers rank their topics by deliveries once per `--stats-interval` (a pass over their
/// topic table off the message path); latency is bucketed only for the topics that were a
/// worker's busiest at its previous pick, so a topic's first busy interval has no
/// percentiles yet.
#[derive(Debug, Clone, PartialEq)]
pub struct BusyTopic {
    pub topic: String,
    /// Deliveries per second over the worker's pick interval.
    pub deliveries_per_sec: f64,
    /// Subscribers at the pick.
    pub subscribers: u64,
    /// Fan-out latency over the interval (empty when the topic was not yet a candidate).
    pub latency: LatencyBuckets,
}

/// Merge the workers' busiest topics (the same topic on several workers adds up) and keep
/// the `BUSIEST` with most deliveries per second, busiest first.
pub fn merge_busiest(workers: &[Vec<BusyTopic>]) -> Vec<BusyTopic> {
    let mut merged: Vec<BusyTopic> = Vec::new();
    for busy in workers.iter().flatten() {
        match merged.iter_mut().find(|m| m.topic == busy.topic) {
            Some(m) => {
                m.deliveries_per_sec += busy.deliveries_per_sec;
                m.subscribers += busy.subscribers;
                for (a, b) in m.latency.counts.iter_mut().zip(busy.latency.counts) {
                    *a += b;
                }
                m.latency.sum_micros = m.latency.sum_micros.wrapping_add(busy.latency.sum_micros);
            }
            None => merged.push(busy.clone()),
        }
    }
    merged.sort_by(|a, b| b.deliveries_per_sec.total_cmp(&a.deliveries_per_sec));
    merged.truncate(BUSIEST);
    merged
}

/// The `q` quantile of `buckets`, as the upper bound (µs) of the bucket it falls in: an
/// over-estimate by at most one bucket step (1-2.5-5). `None` without samples; values past
/// the last bound read as that bound.
pub fn quantile_micros(buckets: &LatencyBuckets, q: f64) -> Option<u64> {
    let total = buckets.count();
    if total == 0 {
        return None;
    }
    let rank = ((total as f64 * q).ceil() as u64).max(1);
    let mut seen = 0;
    for (i, count) in buckets.counts.iter().enumerate() {
        seen += count;
        if seen >= rank {
            let last = LATENCY_BOUNDS_MICROS.len() - 1;
            return Some(LATENCY_BOUNDS_MICROS[i.min(last)]);
        }
    }
    None
}

/// The busiest topics for the stats line: ` busiest=[TOPIC deliveries/s=N subs=N
/// p50<=Nus p99<=Nus; …]` (`-` for percentiles not measured yet), ` busiest=[]` if none.
pub fn busiest_field(busy: &[BusyTopic]) -> String {
    let mut out = String::from(" busiest=[");
    for (i, b) in busy.iter().enumerate() {
        let q = |q| quantile_micros(&b.latency, q).map_or("-".to_string(), |v| v.to_string());
        let _ = write!(
            out,
            "{}{} deliveries/s={} subs={} p50<={}us p99<={}us",
            if i > 0 { "; " } else { "" },
            b.topic,
            b.deliveries_per_sec.round() as u64,
            b.subscribers,
            q(0.5),
            q(0.99)
        );
    }
    out.push(']');
    out
}

/// Every worker's last published tally, and the selector, for `GET /metrics`; and every
/// worker's last busiest-topics pick, for the stats line and the dashboard.
#[derive(Debug)]
pub struct TopicBoard {
    pub selector: TopicSelector,
    cells: Vec<Mutex<Vec<TopicCounts>>>,
    busiest: Vec<Mutex<Vec<BusyTopic>>>,
}

impl TopicBoard {
    /// A board for `workers` workers.
    pub fn new(selector: TopicSelector, workers: usize) -> Self {
        let slots = if selector.enabled() {
            selector.slots()
        } else {
            0
        };
        let cells = (0..workers)
            .map(|_| Mutex::new(vec![TopicCounts::default(); slots]))
            .collect();
        let busiest = (0..workers).map(|_| Mutex::new(Vec::new())).collect();
        TopicBoard {
            selector,
            cells,
            busiest,
        }
    }

    /// Worker `worker` publishes its busiest topics (once per stats interval).
    pub fn publish_busiest(&self, worker: usize, busy: Vec<BusyTopic>) {
        if let Some(cell) = self.busiest.get(worker) {
            *cell.lock().unwrap_or_else(PoisonError::into_inner) = busy;
        }
    }

    /// The busiest topics over all workers (each worker's last pick), busiest first.
    pub fn busiest(&self) -> Vec<BusyTopic> {
        let all: Vec<Vec<BusyTopic>> = self
            .busiest
            .iter()
            .map(|c| c.lock().unwrap_or_else(PoisonError::into_inner).clone())
            .collect();
        merge_busiest(&all)
    }

    /// Worker `worker` publishes its tally (off the message path: once per interval).
    pub fn publish(&self, worker: usize, tally: &mut TopicTally) {
        if let Some(cell) = self.cells.get(worker) {
            let mut cell = cell.lock().unwrap_or_else(PoisonError::into_inner);
            cell.clear();
            cell.extend_from_slice(&tally.slots);
            tally.dirty = false;
        }
    }

    /// The tallies summed over workers, by slot.
    pub fn totals(&self) -> Vec<TopicCounts> {
        let mut total = vec![TopicCounts::default(); self.selector.slots()];
        for cell in &self.cells {
            let cell = cell.lock().unwrap_or_else(PoisonError::into_inner);
            for (t, c) in total.iter_mut().zip(cell.iter()) {
                t.add(c);
            }
        }
        total
    }

    /// The per-topic series (nothing when `--metrics-topics` is not set).
    pub fn prometheus(&self) -> String {
        if !self.selector.enabled() {
            return String::new();
        }
        render(&self.selector.admitted(), &self.totals())
    }
}

/// One plain per-topic series: name, type, help, and how to read it from the counts.
type Scalar = (
    &'static str,
    &'static str,
    &'static str,
    fn(&TopicCounts) -> u64,
);

/// Render the per-topic series: `labels[i]` names slot `i`; the slot after the last label
/// is `other` (printed only once a topic fell into it).
pub fn render(labels: &[String], totals: &[TopicCounts]) -> String {
    let mut rows: Vec<(String, &TopicCounts)> = labels
        .iter()
        .zip(totals)
        .map(|(l, c)| (escape(l), c))
        .collect();
    if let Some(other) = totals
        .get(labels.len())
        .filter(|&&o| o != TopicCounts::default())
    {
        rows.push((OTHER.to_string(), other));
    }
    let mut out = String::new();
    let scalars: [Scalar; 3] = [
        (
            "herald_topic_messages_total",
            "counter",
            "Messages numbered by the topic's owner, per --metrics-topics topic.",
            |c| c.messages,
        ),
        (
            "herald_topic_deliveries_total",
            "counter",
            "Messages written to the topic's subscribers, one per subscriber per message.",
            |c| c.deliveries,
        ),
        (
            "herald_topic_subscribers",
            "gauge",
            "Subscribers of the topic now, over all workers.",
            |c| c.subscribers,
        ),
    ];
    for (name, kind, help, get) in scalars {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
        for (label, c) in &rows {
            let _ = writeln!(out, "{name}{{topic=\"{label}\"}} {}", get(c));
        }
    }
    let name = "herald_topic_fanout_latency_seconds";
    let _ = writeln!(
        out,
        "# HELP {name} Time from a message's arrival to its write to a subscriber, per topic.\n# TYPE {name} histogram"
    );
    for (label, c) in &rows {
        let mut cumulative = 0u64;
        for (le, count) in LE.iter().zip(c.latency.counts) {
            cumulative += count;
            let _ = writeln!(
                out,
                "{name}_bucket{{topic=\"{label}\",le=\"{le}\"}} {cumulative}"
            );
        }
        let _ = writeln!(
            out,
            "{name}_sum{{topic=\"{label}\"}} {}",
            c.latency.sum_micros as f64 / 1e6
        );
        let _ = writeln!(out, "{name}_count{{topic=\"{label}\"}} {cumulative}");
    }
    out
}

/// A label value in the exposition format: `\`, `"` and newline escaped.
pub fn escape(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for ch in value.chars() {
        match ch {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::pattern::Pattern;

    fn selector(patterns: &[&str], max: usize) -> TopicSelector {
        let list = patterns
            .iter()
            .map(|p| Pattern::parse(p).unwrap())
            .collect();
        TopicSelector::new(PatternList::new(list), max)
    }

    #[test]
    fn matching_topics_get_slots_up_to_the_cap_then_other() {
        let s = selector(&["prices/*"], 2);
        assert_eq!(s.resolve("news/a"), None);
        assert_eq!(s.resolve("prices/a"), Some(0));
        assert_eq!(s.resolve("prices/b"), Some(1));
        assert_eq!(s.resolve("prices/a"), Some(0), "a topic keeps its slot");
        assert_eq!(s.resolve("prices/c"), Some(2), "past the cap: other");
        assert_eq!(s.admitted(), vec!["prices/a", "prices/b"]);
    }

    #[test]
    fn busiest_merge_over_workers_and_percentiles_come_from_buckets() {
        let busy = |topic: &str, rate: f64, micros: u64| {
            let mut latency = LatencyBuckets::default();
            latency.record_n(micros, 10);
            BusyTopic {
                topic: topic.into(),
                deliveries_per_sec: rate,
                subscribers: 1,
                latency,
            }
        };
        let merged = merge_busiest(&[
            vec![busy("a", 10.0, 70), busy("b", 30.0, 70)],
            vec![busy("a", 25.0, 3_000)],
        ]);
        assert_eq!(merged[0].topic, "a");
        assert_eq!(merged[0].deliveries_per_sec, 35.0);
        assert_eq!(merged[0].subscribers, 2);
        assert_eq!(quantile_micros(&merged[0].latency, 0.5), Some(100));
        assert_eq!(quantile_micros(&merged[0].latency, 0.99), Some(5_000));
        assert_eq!(quantile_micros(&LatencyBuckets::default(), 0.5), None);
        let field = busiest_field(&merged);
        assert_eq!(
            field,
            " busiest=[a deliveries/s=35 subs=2 p50<=100us p99<=5000us; b deliveries/s=30 subs=1 p50<=100us p99<=100us]"
        );
    }

    #[test]
    fn escapes_label_values() {
        assert_eq!(escape(r#"a"b\c"#), r#"a\"b\\c"#);
        assert_eq!(escape("a\nb"), "a\\nb");
    }

    #[test]
    fn renders_other_only_when_used() {
        let mut c = TopicCounts {
            messages: 2,
            deliveries: 4,
            subscribers: 2,
            ..Default::default()
        };
        c.latency.record_n(70, 4);
        let quiet = render(&["t".into()], &[c, TopicCounts::default()]);
        assert!(quiet.contains("herald_topic_messages_total{topic=\"t\"} 2"));
        assert!(!quiet.contains("other"), "{quiet}");
        let busy = render(&["t".into()], &[c, c]);
        assert!(busy.contains("herald_topic_deliveries_total{topic=\"other\"} 4"));
        assert!(busy
            .contains("herald_topic_fanout_latency_seconds_bucket{topic=\"t\",le=\"0.0001\"} 4"));
    }
}
