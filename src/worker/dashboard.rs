//! `--dashboard`: the page at `GET /dashboard` and its Server-Sent Events stream at
//! `GET /dashboard/feed`.
//!
//! Why SSE from the worker that accepted the request: the stream is one-way, a browser's
//! `EventSource` reconnects by itself, and the worker already has everything an event needs
//! (every worker's published counters, the ones `/metrics` reads). Once a second the worker
//! builds one event, if it holds any stream, and queues the same bytes to each of them: no
//! work is added to the fan-out path, and none at all while nobody watches.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;

use super::Worker;
use crate::ops::dashboard::{self, Broker, Snapshot, TopicRow};
use crate::ops::stats::Counters;
use crate::proto::http::HttpError;
use crate::worker::conn::{Ending, Phase};

/// What a dashboard path asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum DashboardPath {
    /// `/dashboard`: the page.
    Page,
    /// `/dashboard/feed`: the event stream.
    Feed,
}

/// This worker's open dashboard streams (at most `MAX_STREAMS_PER_WORKER`) and when the next
/// event is due.
#[derive(Debug)]
pub(super) struct Streams {
    /// (slab key, connection id): the id guards against a key reused by a later connection.
    open: Vec<(usize, u64)>,
    next: Instant,
}

impl Streams {
    pub(super) fn new(now: Instant) -> Self {
        Streams {
            open: Vec::new(),
            next: now,
        }
    }
}

impl Worker {
    /// The dashboard path `target` names, when `--dashboard` is on (off: the paths are
    /// ordinary topic paths, as before).
    pub(super) fn dashboard_route(&self, target: &str) -> Option<DashboardPath> {
        if !self.config.dashboard {
            return None;
        }
        match target.split_once('?').map_or(target, |(p, _)| p) {
            "/dashboard" | "/dashboard/" => Some(DashboardPath::Page),
            "/dashboard/feed" => Some(DashboardPath::Feed),
            _ => None,
        }
    }

    /// Answer a dashboard request: the page, or (key checked, within the stream cap) the
    /// stream's head and a first event at once, so the page draws without waiting a second.
    pub(super) fn serve_dashboard(
        &mut self,
        key: usize,
        path: DashboardPath,
        target: &str,
    ) -> bool {
        if path == DashboardPath::Page {
            self.reply_and_close(key, self.site.dashboard());
            return true;
        }
        if let Err(denied) = self.auth.check_dashboard(dashboard::key_param(target)) {
            self.counters.auth_failures += 1;
            return self.refuse(key, HttpError::Denied(denied));
        }
        self.streams.open.retain(|&(k, id)| {
            self.conns
                .get(k)
                .is_some_and(|c| c.id == id && matches!(c.phase, Phase::Streaming))
        });
        if self.streams.open.len() >= dashboard::MAX_STREAMS_PER_WORKER {
            return self.refuse(key, HttpError::Unavailable);
        }
        let conn = &mut self.conns[key];
        conn.enter(Phase::Streaming);
        self.streams.open.push((key, conn.id));
        self.queue_output(key, dashboard::stream_head().into(), 0);
        let event = self.dashboard_event();
        self.queue_output(key, event, 0);
        true
    }

    /// Once a second, while anyone watches: one event, queued to every stream. A stream
    /// whose page stopped reading (over `MAX_STREAM_BACKLOG` unsent) is reset.
    pub(super) fn dashboard_timer(&mut self) {
        if self.streams.open.is_empty() || self.now < self.streams.next {
            return;
        }
        self.streams.next = self.now + Duration::from_millis(dashboard::PERIOD_MS);
        let event = self.dashboard_event();
        let open = std::mem::take(&mut self.streams.open);
        for (key, id) in open {
            let Some(conn) = self.conns.get(key) else {
                continue;
            };
            if conn.id != id || !matches!(conn.phase, Phase::Streaming) {
                continue;
            }
            if conn.out.bytes() > dashboard::MAX_STREAM_BACKLOG {
                self.abort(key, Ending::SlowConsumer);
                continue;
            }
            self.queue_output(key, event.clone(), 0);
            self.streams.open.push((key, id));
        }
    }

    /// One event from every worker's last published counters (ours published just now).
    fn dashboard_event(&mut self) -> Bytes {
        self.publish_counters();
        let workers: Vec<Counters> = self.everyone.iter().map(|s| s.read()).collect();
        let broker = self.cluster.as_ref().map(|c| {
            use std::sync::atomic::Ordering::Relaxed;
            let s = &c.stats;
            Broker {
                up: s.up(),
                figures: vec![
                    ("topics", s.topics()),
                    ("heard", s.heard.load(Relaxed)),
                    ("published", s.published.load(Relaxed)),
                    ("outages", s.outages.load(Relaxed)),
                    ("recovered", s.recovered.load(Relaxed)),
                    ("gaps", s.gaps.load(Relaxed)),
                    ("unavailable", s.unavailable.load(Relaxed)),
                    ("malformed", s.malformed.load(Relaxed)),
                ],
                // Once a second, off the fan-out path: one uncontended lock, one Arc clone.
                nodes: c.roster.get().as_ref().clone(),
            }
        });
        // The workers' last busiest-topics picks (a lock per worker, once a second).
        let topics: Vec<TopicRow> = self
            .topic_board
            .busiest()
            .into_iter()
            .map(|b| TopicRow {
                topic: b.topic,
                subscribers: b.subscribers,
                deliveries_per_s: b.deliveries_per_sec.round() as u64,
            })
            .collect();
        let unix_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        Snapshot {
            unix_ms,
            uptime_s: self.now.duration_since(self.started).as_secs(),
            workers: &workers,
            broker: broker.as_ref(),
            topics: &topics,
        }
        .event()
        .into()
    }
}
