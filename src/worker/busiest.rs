//! The busiest topics of this worker, picked once per `--stats-interval` (off the message
//! path: one pass over the local topic table) and published to the shared `TopicBoard` for
//! the stats line and the dashboard. The message path only adds to `LocalTopic::delivered`
//! and, for the few picked topics, to their latency buckets.

use std::time::Instant;

use super::Worker;
use crate::ops::stats::LatencyBuckets;
use crate::ops::topic_stats::{BusyTopic, BUSIEST};

impl Worker {
    /// Rank this worker's topics by deliveries since the last pick, publish the top
    /// `BUSIEST`, and give those (only) latency buckets for the next interval.
    pub(super) fn pick_busiest(&mut self) {
        let now = Instant::now();
        let secs = now
            .saturating_duration_since(self.busy_picked)
            .as_secs_f64()
            .max(1e-3);
        self.busy_picked = now;
        let mut ranked: Vec<(u64, &str)> = Vec::new();
        for (name, topic) in self.topics.local.iter_mut() {
            let delta = topic.delivered - topic.delivered_at_pick;
            topic.delivered_at_pick = topic.delivered;
            if delta > 0 {
                ranked.push((delta, name));
            }
        }
        ranked.sort_unstable_by_key(|&(delta, _)| std::cmp::Reverse(delta));
        ranked.truncate(BUSIEST);
        let chosen: Vec<(u64, String)> = ranked.iter().map(|&(d, t)| (d, t.to_string())).collect();
        let mut busy = Vec::with_capacity(chosen.len());
        for (delta, name) in &chosen {
            let Some(topic) = self.topics.local.get(name.as_str()) else {
                continue;
            };
            let latency = topic
                .busy
                .and_then(|s| self.busy_latency.get(s as usize))
                .copied()
                .unwrap_or_default();
            busy.push(BusyTopic {
                topic: name.clone(),
                deliveries_per_sec: *delta as f64 / secs,
                subscribers: topic.subscribers.len() as u64,
                latency,
            });
        }
        self.topic_board.publish_busiest(self.index, busy);
        // The picked topics get (fresh) latency buckets for the next interval; no other does.
        for topic in self.topics.local.values_mut() {
            topic.busy = None;
        }
        self.busy_latency.clear();
        for (i, (_, name)) in chosen.iter().enumerate() {
            if let Some(topic) = self.topics.local.get_mut(name.as_str()) {
                topic.busy = Some(i as u32);
                self.busy_latency.push(LatencyBuckets::default());
            }
        }
    }
}
