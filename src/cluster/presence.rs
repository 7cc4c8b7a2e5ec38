//! Presence across nodes (`--broker`): every node's subscriber counts (and, for
//! `--presence` topics, member lists) kept in Redis under a key that expires, so a query on
//! any node answers with the cluster-wide figure and a killed node's members disappear.
//!
//! The `herald-presence` thread of each node:
//! - takes each worker's changed figures, reported once a second per worker
//!   (`PresenceReq::Report`: only the topics whose local subscribers changed, coalesced, so
//!   a subscribe costs the worker a set insert and Redis nothing);
//! - once a [`PERIOD`] writes the node's changed topics into its hash
//!   `herald:presence:{presence}:<node>` (field `c:<topic>` the count, `m:<topic>` the
//!   member list as JSON, both removed when the count falls to 0), refreshes the hash's
//!   expiry to [`TTL`], and lists the node in `herald:presence-nodes:{presence}` (a sorted
//!   set). A hash found missing (Redis restarted, or the key expired during an outage) is
//!   written again whole;
//! - answers a query (`PresenceReq::Query`) with the other live nodes' share: `ZRANGE` of
//!   the index (newest first), then `HMGET` of the topic's fields in every other node's
//!   hash, in one pipeline; nodes whose hash has expired are dropped from the index. The asking worker adds its own node's exact share (gathered from the workers
//!   as on one node).
//!
//! A node that dies stops refreshing its hash, which expires at most [`TTL`] after its last
//! refresh, so its members are gone from every answer within [`TTL`] of its death. A live
//! node's figures reach other nodes within about two periods (its workers' report, then its
//! write). Why one `{presence}` hash tag: with a Redis Cluster all presence keys share a
//! slot, so a query is one pipeline to one node (as for the dashboard roster).

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError};
use redis::{RedisError, Value as Reply};

use super::roster::layout_of;
use super::wire::Wire;
use crate::feed::bus::{BusMsg, PeerLink};
use crate::proto::presence::{Member, Tally};
use crate::proto::topic::TopicName;

/// How often a node writes its changed figures (and its workers report theirs).
pub const PERIOD: Duration = Duration::from_secs(1);

/// How long a node's figures live in Redis without a refresh: the bound on how long a
/// killed node's members stay in answers.
pub const TTL: Duration = Duration::from_secs(5);

/// Requests that may wait for the presence thread. Past it a worker's report waits for the
/// next period (its topics stay marked) and a query is answered `unavailable`, counted in
/// `broker_unavailable`.
pub const QUEUE: usize = 1024;

/// Most nodes one query reads.
const MAX_NODES: usize = 256;

/// How long the index outlives the last write.
const INDEX_TTL_S: u64 = 60;

const TAG: &str = "presence";

/// The hash of one node's figures.
pub fn node_key(node: &str) -> String {
    format!("herald:presence:{{{TAG}}}:{node}")
}

/// The sorted set of nodes that wrote figures lately.
pub fn index_key() -> String {
    format!("herald:presence-nodes:{{{TAG}}}")
}

/// One topic's figure as a node writes it: the count and the member list's JSON (`None`:
/// the count fell to 0, so both fields go).
type Figure = Option<(u64, Option<String>)>;

/// What workers ask of the presence thread.
#[derive(Debug)]
pub enum PresenceReq {
    /// A worker's current figures of the topics that changed there since its last report
    /// (count 0: none left there).
    Report {
        worker: u16,
        changes: Vec<(TopicName, Tally)>,
    },
    /// The other nodes' share of `topic` for query `ticket` of `worker`.
    Query {
        topic: TopicName,
        members: bool,
        worker: u16,
        ticket: u64,
        /// `--presence-max-members`.
        cap: usize,
    },
}

/// The presence thread's state.
struct PresenceThread {
    wire: Wire,
    node: String,
    workers: Vec<PeerLink>,
    /// Per topic, each worker's latest figures.
    figures: HashMap<TopicName, Vec<Tally>>,
    /// Topics to write in the next round.
    dirty: HashSet<TopicName>,
    cap: usize,
    failing: bool,
}

/// Start the `herald-presence` thread for broker `url`; `cap` is `--presence-max-members`.
pub fn start(
    url: &str,
    node: u32,
    workers: Vec<PeerLink>,
    requests: Receiver<PresenceReq>,
    cap: usize,
) -> std::io::Result<()> {
    let layout =
        layout_of(url).map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
    let thread = PresenceThread {
        wire: Wire::new(layout),
        node: format!("{node:08x}"),
        workers,
        figures: HashMap::new(),
        dirty: HashSet::new(),
        cap,
        failing: false,
    };
    std::thread::Builder::new()
        .name("herald-presence".into())
        .spawn(move || thread.run(requests))?;
    Ok(())
}

impl PresenceThread {
    fn run(mut self, requests: Receiver<PresenceReq>) {
        let mut next = Instant::now() + PERIOD;
        loop {
            let wait = next.saturating_duration_since(Instant::now());
            match requests.recv_timeout(wait) {
                Ok(PresenceReq::Report { worker, changes }) => self.report(worker, changes),
                Ok(PresenceReq::Query {
                    topic,
                    members,
                    worker,
                    ticket,
                    cap,
                }) => {
                    let tally = self.others(&topic, members, cap);
                    self.answer(worker, BusMsg::PresenceShare { ticket, tally });
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => return, // the workers are gone
            }
            if Instant::now() >= next {
                self.write();
                next = Instant::now() + PERIOD;
            }
        }
    }

    fn report(&mut self, worker: u16, changes: Vec<(TopicName, Tally)>) {
        let workers = self.workers.len();
        for (topic, tally) in changes {
            let per_worker = self.figures.entry(topic.clone()).or_default();
            per_worker.resize(workers.max(worker as usize + 1), Tally::default());
            per_worker[worker as usize] = tally;
            if per_worker.iter().all(|t| t.count == 0) {
                self.figures.remove(&topic);
            }
            self.dirty.insert(topic);
        }
    }

    fn answer(&self, worker: u16, msg: BusMsg) {
        if let Some(link) = self.workers.get(worker as usize) {
            // An error means the worker has exited (shutdown).
            if link.inbox.send(msg).is_ok() {
                let _ = link.waker.wake();
            }
        }
    }

    /// The node's figure for `topic`: its workers' shares merged.
    fn node_tally(&self, topic: &TopicName) -> Option<Tally> {
        let per_worker = self.figures.get(topic)?;
        let mut total = Tally::default();
        for share in per_worker {
            total.merge(share.clone(), self.cap);
        }
        Some(total)
    }

    /// Write the changed topics, refresh the expiry; the whole hash again if it is gone.
    fn write(&mut self) {
        let key = node_key(&self.node);
        let node = self.node.clone();
        let ttl_ms = TTL.as_millis() as u64;
        let mut writes: Vec<(String, Figure)> = Vec::new();
        let mut whole = false;
        // Is our hash still there? (One PEXPIRE: 0 means it is not.)
        let alive = self.wire.command(TAG, None, &mut |conn| {
            redis::cmd("PEXPIRE")
                .arg(&key)
                .arg(ttl_ms)
                .query::<Reply>(conn)
        });
        match alive {
            Ok(Reply::Int(0)) => whole = true,
            Ok(_) => {}
            Err(e) => return self.failed(&e),
        }
        let topics: Vec<TopicName> = if whole {
            self.dirty.clear();
            self.figures.keys().cloned().collect()
        } else {
            self.dirty.drain().collect()
        };
        for topic in topics {
            let field = |t: &Tally| {
                let members = t
                    .members
                    .as_ref()
                    .map(|m| serde_json::to_string(m).unwrap_or_default());
                (t.count, members)
            };
            writes.push((
                topic.to_string(),
                self.node_tally(&topic)
                    .filter(|t| t.count > 0)
                    .map(|t| field(&t)),
            ));
        }
        let now_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        let result = self.wire.command(TAG, None, &mut |conn| {
            let mut pipe = redis::pipe();
            for (topic, figure) in &writes {
                let (c, m) = (format!("c:{topic}"), format!("m:{topic}"));
                match figure {
                    Some((count, members)) => {
                        pipe.cmd("HSET").arg(&key).arg(&c).arg(*count).ignore();
                        match members {
                            Some(json) => pipe.cmd("HSET").arg(&key).arg(&m).arg(json).ignore(),
                            None => pipe.cmd("HDEL").arg(&key).arg(&m).ignore(),
                        };
                    }
                    None => {
                        pipe.cmd("HDEL").arg(&key).arg(&c).arg(&m).ignore();
                    }
                }
            }
            // Even an empty node is listed (its hash then holds only the marker).
            pipe.cmd("HSET").arg(&key).arg("node").arg(&node).ignore();
            pipe.cmd("PEXPIRE").arg(&key).arg(ttl_ms).ignore();
            pipe.cmd("ZADD")
                .arg(index_key())
                .arg(now_ms)
                .arg(&node)
                .ignore();
            // Nodes silent for a minute (dead, restarted under a new id) leave the index.
            let stale = now_ms.saturating_sub(INDEX_TTL_S * 1000);
            pipe.cmd("ZREMRANGEBYSCORE")
                .arg(index_key())
                .arg("-inf")
                .arg(format!("({stale}"))
                .ignore();
            pipe.cmd("EXPIRE")
                .arg(index_key())
                .arg(INDEX_TTL_S)
                .ignore();
            pipe.query::<()>(conn)?;
            Ok(Reply::Nil)
        });
        match result {
            Ok(_) => {
                if std::mem::take(&mut self.failing) {
                    log::info!("presence: Redis reachable again");
                }
            }
            Err(e) => {
                // Written again whole once Redis answers (the hash may be gone by then).
                self.failed(&e);
            }
        }
    }

    fn failed(&mut self, e: &RedisError) {
        // Everything is written again at the next round that reaches Redis.
        self.dirty.extend(self.figures.keys().cloned());
        if !std::mem::replace(&mut self.failing, true) {
            log::warn!("presence: cannot reach Redis ({e}); other nodes' figures are unavailable until it can");
        }
    }

    /// The other live nodes' share of `topic` (`None`: Redis could not be asked).
    fn others(&mut self, topic: &TopicName, members: bool, cap: usize) -> Option<Tally> {
        let own = self.node.clone();
        let (c, m) = (format!("c:{topic}"), format!("m:{topic}"));
        let mut found: Vec<(Option<u64>, Option<String>, Option<String>)> = Vec::new();
        let result = self.wire.command(TAG, None, &mut |conn| {
            // Newest first, so dead nodes' leftovers never crowd out live ones.
            let nodes: Vec<String> = redis::cmd("ZRANGE")
                .arg(index_key())
                .arg(0)
                .arg(MAX_NODES - 1)
                .arg("REV")
                .query(conn)?;
            let others: Vec<&String> = nodes.iter().filter(|n| **n != own).collect();
            if others.is_empty() {
                found.clear();
                return Ok(Reply::Nil);
            }
            let mut pipe = redis::pipe();
            for node in &others {
                pipe.cmd("HMGET")
                    .arg(node_key(node))
                    .arg(&c)
                    .arg(&m)
                    .arg("node");
            }
            found = pipe.query(conn)?;
            // A node whose hash expired is gone: drop it from the index.
            let gone: Vec<&String> = (others.iter().zip(&found))
                .filter(|(_, f)| f.2.is_none())
                .map(|(n, _)| *n)
                .collect();
            if !gone.is_empty() {
                redis::cmd("ZREM")
                    .arg(index_key())
                    .arg(gone)
                    .query::<()>(conn)?;
            }
            Ok(Reply::Nil)
        });
        if let Err(e) = result {
            self.failed(&e);
            return None;
        }
        let mut tally = Tally {
            members: members.then(Vec::new),
            ..Tally::default()
        };
        for (count, list, _) in found {
            let Some(count) = count else {
                continue; // the node has none, or its hash expired (it is gone)
            };
            let list = list.and_then(|j| serde_json::from_str::<Vec<Member>>(&j).ok());
            let truncated = list.as_ref().is_some_and(|l| (l.len() as u64) < count);
            let share = Tally {
                count,
                members: if members {
                    Some(list.unwrap_or_default())
                } else {
                    None
                },
                truncated: members && truncated,
            };
            tally.merge(share, cap);
        }
        Some(tally)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn presence_keys_share_one_slot_outside_the_topics_namespace() {
        let (a, b) = (node_key("0000abcd"), index_key());
        assert_eq!(a, "herald:presence:{presence}:0000abcd");
        assert_eq!(b, "herald:presence-nodes:{presence}");
        assert!(!a.starts_with("herald:{") && !b.starts_with("herald:{"));
    }
}
