//! The cluster's nodes on every node's dashboard (`--broker` with `--dashboard`).
//!
//! Each node shares a small snapshot of its figures through Redis, and reads everyone's:
//! once a second the `herald-roster` thread
//! - writes `SET herald:node:{roster}:<node id> <json> EX 5` (the JSON is [`own_snapshot`]),
//!   and adds the id to the index `herald:nodes:{roster}` (a sorted set, score = the
//!   writer's clock, the whole set expiring a minute after the last write);
//! - reads the index, then `GET` and `PTTL` of every listed node's key: a node whose key has
//!   expired is gone (and is removed from the index). The snapshot's age is `5 s - PTTL`,
//!   Redis's own clock, so nodes' clocks need not agree.
//!
//! A node that dies stops writing, so it disappears from every dashboard within
//! [`TTL`] plus one period of the reader and one dashboard event (under 7 s).
//!
//! Why a thread of its own and not the bridges: the bridges' latency matters to every
//! publish; a 1 Hz dashboard must never queue in front of them, nor they in front of it.
//! Why one `{roster}` hash tag: with a Redis Cluster every roster key lives in one slot, so
//! one node of the cluster answers for the whole list (no SCAN over every master); with
//! several independent instances the roster lives on the first one (`--broker` order). The
//! keys are outside the topics' namespace (`herald:{topic}…`), so no topic name can meet them.
//!
//! How the workers get the list: a `Mutex<Arc<Value>>` ([`Roster`]), replaced by the thread
//! once a second and read (one lock, one `Arc` clone) by a worker only when it builds a
//! dashboard event, i.e. once a second while someone watches. Never on the fan-out path, so
//! the lock is never contended in a way that matters; a channel per worker would hand a
//! worker that has no dashboard open a stale list to show when one opens.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use redis::{RedisError, Value as Reply};
use serde_json::{json, Value};

use super::shard;
use super::wire::{Layout, Wire};
use super::BrokerStats;
use crate::ops::stats::{Counters, SharedCounters};

/// How long a node's snapshot lives in Redis without being rewritten.
pub const TTL: Duration = Duration::from_secs(5);

/// How often a node writes its snapshot and reads everyone's.
pub const PERIOD: Duration = Duration::from_secs(1);

/// Most nodes listed: the dashboard is a table, and the list must stay bounded.
pub const MAX_NODES: usize = 256;

/// How long the index outlives the last write (a cluster all gone leaves nothing behind).
const INDEX_TTL_S: u64 = 60;

/// The routing name of the roster's slot (its keys' hash tag).
const TAG: &str = "roster";

/// The key of one node's snapshot.
pub fn node_key(node: &str) -> String {
    format!("herald:node:{{{TAG}}}:{node}")
}

/// The sorted set of node ids that wrote a snapshot lately.
pub fn index_key() -> String {
    format!("herald:nodes:{{{TAG}}}")
}

/// The latest list of the cluster's nodes, as the dashboard event's `broker.nodes` shows it:
/// `{"ttl_s", "nodes": [snapshot + "age_ms"], "error"}`.
#[derive(Debug)]
pub struct Roster(Mutex<Arc<Value>>);

impl Default for Roster {
    fn default() -> Self {
        Roster(Mutex::new(Arc::new(Value::Null)))
    }
}

impl Roster {
    /// The latest list (`null` until the thread's first round, or without `--dashboard`).
    pub fn get(&self) -> Arc<Value> {
        match self.0.lock() {
            Ok(v) => v.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    fn set(&self, value: Value) {
        let value = Arc::new(value);
        match self.0.lock() {
            Ok(mut v) => *v = value,
            Err(poisoned) => *poisoned.into_inner() = value,
        }
    }
}

/// This node's snapshot: the figures of its dashboard event (cumulative counters, so any
/// reader can take rates from two of them) and its broker link.
pub fn own_snapshot(node: &str, unix_ms: u64, workers: &[Counters], broker: &BrokerStats) -> Value {
    let t = Counters::sum(workers);
    json!({
        "node": node,
        "unix_ms": unix_ms,
        "connections": t.open,
        "messages_in": t.msgs_in,
        "deliveries": t.frames_out,
        "bytes_out": t.bytes_out,
        "latency": {"counts": t.latency.counts, "sum_us": t.latency.sum_micros},
        "trouble": {
            "slow_consumer_closes": t.slow_closes,
            "aborted": t.aborts,
            "full_drops": t.full_drops,
            "rejected": t.rejected.total(),
            "rate_limited": t.rate_limited,
            "auth_failures": t.auth_failures,
        },
        "broker": {
            "up": broker.up(),
            "shards_up": broker.shards_up(),
            "shards": broker.shards.len(),
            "unavailable": broker.unavailable.load(Relaxed),
            "gaps": broker.gaps.load(Relaxed),
        },
    })
}

/// The Redis the roster lives on: the first instance, or the Redis Cluster.
pub(super) fn layout_of(url: &str) -> Result<Layout, String> {
    match shard::Broker::parse(url)? {
        shard::Broker::Instances(urls) => urls
            .into_iter()
            .next()
            .map(Layout::One)
            .ok_or_else(|| "--broker names no Redis".to_owned()),
        shard::Broker::Cluster(seeds) => Ok(Layout::Cluster(seeds)),
    }
}

/// What the roster thread works with.
pub struct RosterThread {
    wire: Wire,
    node: String,
    everyone: Arc<[Arc<SharedCounters>]>,
    stats: Arc<BrokerStats>,
    roster: Arc<Roster>,
    /// The last round failed (logged once per outage).
    failing: bool,
}

/// Start the `herald-roster` thread for broker `url` (as given to `--broker`).
pub fn start(
    url: &str,
    node: u32,
    everyone: Arc<[Arc<SharedCounters>]>,
    stats: Arc<BrokerStats>,
    roster: Arc<Roster>,
) -> std::io::Result<()> {
    let layout =
        layout_of(url).map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
    let thread = RosterThread {
        wire: Wire::new(layout),
        node: format!("{node:08x}"),
        everyone,
        stats,
        roster,
        failing: false,
    };
    std::thread::Builder::new()
        .name("herald-roster".into())
        .spawn(move || thread.run())?;
    Ok(())
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

impl RosterThread {
    fn run(mut self) {
        let mut next = Instant::now();
        loop {
            self.round();
            next += PERIOD;
            let now = Instant::now();
            if next < now {
                next = now; // a slow Redis: do not catch up with a burst
            }
            std::thread::sleep(next - now);
        }
    }

    /// Write ours, read everyone's, hand the list to the workers.
    fn round(&mut self) {
        let workers: Vec<Counters> = self.everyone.iter().map(|s| s.read()).collect();
        let now = unix_ms();
        let own = own_snapshot(&self.node, now, &workers, &self.stats).to_string();
        let (node, ttl) = (self.node.clone(), TTL.as_secs());
        let mut listed: Vec<Value> = Vec::new();
        let result = self.wire.command(TAG, None, &mut |conn| {
            listed = exchange(conn, &node, &own, now, ttl)?;
            Ok(Reply::Nil)
        });
        let value = match result {
            Ok(_) => {
                if std::mem::take(&mut self.failing) {
                    log::info!("dashboard roster: Redis reachable again");
                }
                json!({"ttl_s": ttl, "nodes": listed, "error": null})
            }
            Err(e) => {
                if !std::mem::replace(&mut self.failing, true) {
                    log::warn!("dashboard roster: cannot reach Redis ({e}); the node list is empty until it can");
                }
                json!({"ttl_s": ttl, "nodes": [], "error": e.to_string()})
            }
        };
        self.roster.set(value);
    }
}

/// One round on the roster's Redis connection: ours written, everyone's read (ours too,
/// so every row went through Redis alike), expired ones dropped from the index.
fn exchange(
    conn: &mut redis::Connection,
    node: &str,
    own: &str,
    now: u64,
    ttl: u64,
) -> Result<Vec<Value>, RedisError> {
    let index = index_key();
    let ids: Vec<String> = redis::pipe()
        .cmd("SET")
        .arg(node_key(node))
        .arg(own)
        .arg("EX")
        .arg(ttl)
        .ignore()
        .cmd("ZADD")
        .arg(&index)
        .arg(now)
        .arg(node)
        .ignore()
        .cmd("EXPIRE")
        .arg(&index)
        .arg(INDEX_TTL_S)
        .ignore()
        .cmd("ZRANGE")
        .arg(&index)
        .arg(0)
        .arg(MAX_NODES - 1)
        .query::<(Vec<String>,)>(conn)?
        .0;
    let mut reads = redis::pipe();
    for id in &ids {
        let key = node_key(id);
        reads.cmd("GET").arg(&key).cmd("PTTL").arg(&key);
    }
    let answers: Vec<(Option<String>, i64)> = if ids.is_empty() {
        Vec::new()
    } else {
        reads.query(conn)?
    };
    let mut nodes = Vec::with_capacity(ids.len());
    let mut gone = Vec::new();
    for (id, (json, pttl)) in ids.iter().zip(answers) {
        // A snapshot that does not parse (another version, a stray write) is skipped, not
        // shown half.
        match json.and_then(|j| serde_json::from_str::<Value>(&j).ok()) {
            Some(Value::Object(mut snapshot)) if pttl >= 0 => {
                let age = (ttl * 1000).saturating_sub(pttl as u64);
                snapshot.insert("age_ms".into(), age.into());
                nodes.push(Value::Object(snapshot));
            }
            Some(_) => {}
            None => gone.push(id.clone()),
        }
    }
    if !gone.is_empty() {
        redis::cmd("ZREM")
            .arg(&index)
            .arg(&gone)
            .query::<()>(conn)?;
    }
    nodes.sort_by(|a, b| a["node"].as_str().cmp(&b["node"].as_str()));
    Ok(nodes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roster_keys_share_one_slot_outside_the_topics_namespace() {
        let (a, b) = (node_key("0000abcd"), index_key());
        assert_eq!(a, "herald:node:{roster}:0000abcd");
        assert_eq!(b, "herald:nodes:{roster}");
        // Topic keys are `herald:{topic}…`: a roster key never starts that way.
        assert!(!a.starts_with("herald:{") && !b.starts_with("herald:{"));
    }

    #[test]
    fn a_snapshot_carries_the_totals_and_the_broker_link() {
        let w = [
            Counters {
                open: 3,
                msgs_in: 7,
                frames_out: 20,
                ..Default::default()
            },
            Counters {
                open: 1,
                frames_out: 2,
                slow_closes: 1,
                ..Default::default()
            },
        ];
        let stats = BrokerStats::new(2);
        stats.shards[0].up.store(true, Relaxed);
        let s = own_snapshot("00000001", 42, &w, &stats);
        assert_eq!(s["node"], "00000001");
        assert_eq!(s["connections"], 4);
        assert_eq!(s["messages_in"], 7);
        assert_eq!(s["deliveries"], 22);
        assert_eq!(s["trouble"]["slow_consumer_closes"], 1);
        assert_eq!(s["broker"]["up"], false);
        assert_eq!(s["broker"]["shards_up"], 1);
    }

    #[test]
    fn the_roster_lives_on_the_first_instance() {
        match layout_of("redis://a:1,redis://b:2") {
            Ok(Layout::One(url)) => assert!(url.contains("a:1"), "{url}"),
            other => panic!("{other:?}"),
        }
    }
}
