//! The publishing bridge thread: numbers every message a worker hands it in Redis.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::Receiver;
use redis::Value;

use super::{EpochNames, Outbound};
use crate::cluster::script::{self, Keys};
use crate::cluster::wire::{Layout, Wire};
use crate::cluster::{BrokerConfig, BrokerStats, PublishReq, ShardHealth};
use crate::feed::bus::{BusMsg, PeerLink};

/// Publishes sent to Redis in one pipeline at most.
const PUBLISH_BATCH: usize = 512;

/// The publishing bridge thread.
pub struct Publisher {
    layout: Layout,
    node: u32,
    history: usize,
    out: Outbound,
    stats: Arc<BrokerStats>,
    /// Which shard's health this bridge reports (an index into `stats.shards`).
    shard: usize,
    epochs: EpochNames,
    /// The publish script for this layout (`PUBLISH`, or `SPUBLISH` on a Redis Cluster).
    script: &'static str,
    sha: String,
}

impl Publisher {
    pub(in crate::cluster) fn new(
        layout: Layout,
        config: &BrokerConfig,
        links: Vec<PeerLink>,
        stats: Arc<BrokerStats>,
        shard: usize,
    ) -> Self {
        let script = match layout {
            Layout::One(_) => script::PUBLISH,
            Layout::Cluster(_) => script::SPUBLISH,
        };
        Publisher {
            layout,
            node: config.node,
            history: config.history,
            out: Outbound::new(links),
            stats,
            shard,
            epochs: EpochNames::new(config.node, 'p'),
            script,
            sha: redis::Script::new(script).get_hash().to_owned(),
        }
    }

    fn health(&self) -> &ShardHealth {
        &self.stats.shards[self.shard]
    }

    /// Serve publishes until every worker has gone (shutdown).
    pub fn run(mut self, queue: Receiver<PublishReq>) {
        let mut wire = Wire::new(self.layout.clone());
        let mut seen_generation = 0;
        let mut warned: Option<Instant> = None;
        let mut batch = Vec::with_capacity(PUBLISH_BATCH);
        while let Ok(first) = queue.recv() {
            batch.push(first);
            while batch.len() < PUBLISH_BATCH {
                match queue.try_recv() {
                    Ok(req) => batch.push(req),
                    Err(_) => break,
                }
            }
            let generation = self.health().generation.load(Relaxed);
            if generation != seen_generation {
                // The listener (re)connected: Redis is reachable now, so stop backing off,
                // and do not trust a socket from before.
                seen_generation = generation;
                wire = Wire::new(self.layout.clone());
            }
            let results = self.publish_all(&mut wire, &batch);
            let mut failed = 0;
            let mut first_error = None;
            for (req, result) in batch.drain(..).zip(results) {
                let msg = match result {
                    Ok(seq) => {
                        BrokerStats::count(&self.stats.published, 1);
                        req.ack.map(|to| BusMsg::Ack {
                            to,
                            conn: req.origin.conn,
                            seq: Some(seq),
                        })
                    }
                    Err(e) => {
                        failed += 1;
                        first_error.get_or_insert(e);
                        req.ack.map(|to| BusMsg::PublishFailed {
                            to,
                            conn: req.origin.conn,
                        })
                    }
                };
                if let Some(msg) = msg {
                    self.out.send(req.origin.worker as usize, msg);
                }
            }
            if let Some(e) = first_error {
                // At most one line a second while Redis is away.
                if warned.is_none_or(|at| at.elapsed() >= Duration::from_secs(1)) {
                    log::warn!("broker: publish of {failed} message(s) failed: {e}");
                    warned = Some(Instant::now());
                }
                BrokerStats::count(&self.stats.unavailable, failed);
            }
            self.out.wake();
        }
    }

    /// One pipelined script call per message (each shard's share sent before any answer is
    /// read). A failed call is never retried when its outcome is unknown: a publisher told
    /// "unavailable" may see its message once it retries; it is never told "published" for
    /// a message that was not.
    fn publish_all(&mut self, wire: &mut Wire, batch: &[PublishReq]) -> Vec<Result<u64, String>> {
        let epoch = self.epochs.fresh();
        let calls: Vec<(&str, redis::Cmd)> = batch
            .iter()
            .map(|req| {
                let keys = Keys::of(&req.topic);
                let mut cmd = redis::cmd("EVALSHA");
                cmd.arg(&self.sha)
                    .arg(4)
                    .arg(&keys.seq)
                    .arg(&keys.log)
                    .arg(&keys.epoch)
                    .arg(&keys.home)
                    .arg(&epoch)
                    .arg(self.history)
                    .arg(script::origin_arg(self.node, req.origin))
                    .arg(script::body_of(&req.frame))
                    .arg(&keys.channel);
                (&*req.topic, cmd)
            })
            .collect();
        wire.pipeline(&calls, self.script)
            .into_iter()
            .map(|r| match r {
                Ok(Value::Int(seq)) if seq > 0 => Ok(seq as u64),
                Ok(other) => Err(format!("unexpected answer {other:?}")),
                Err(e) => Err(e.to_string()),
            })
            .collect()
    }
}
