//! A bridge thread's connections to Redis, routed per topic: one Redis, or every master of
//! a Redis Cluster.
//!
//! Everything about a topic goes to the node that owns it: its keys and its channel share
//! one slot (`herald:{topic}…`), so on a Redis Cluster that is the master of
//! `shard::slot_of(topic)`. The slot layout is learnt from `CLUSTER SLOTS` (asked of the
//! seed nodes and of every master known so far), and relearnt when Redis says it changed:
//!
//! - `MOVED` (the slot has a new owner: resharding, or a replica promoted after its master
//!   failed): the layout is refreshed and the command sent to the new owner. A `MOVED`
//!   command was not run, so sending it again numbers nothing twice.
//! - `ASK` (the slot is being migrated): `ASKING` then the command, on the named node, once.
//! - `TRYAGAIN` (keys split across a migration): a short pause, then again.
//! - `NOSCRIPT` (a promoted replica without the scripts): `SCRIPT LOAD`, then again. A
//!   pipeline never meets it: the script is loaded on each command connection before the
//!   connection's first pipeline. Otherwise a `SCRIPT LOAD` by another client between two
//!   calls of one topic in one pipeline would fail the first (`NOSCRIPT`, run again later)
//!   and number the second: the topic's messages out of their send order.
//! - A broken connection: the command's outcome is unknown, so it is never retried here;
//!   the caller reports "unavailable" (publishes) or starts over (the listener, which then
//!   fills any hole from the topic's log).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::{Duration, Instant};

use redis::{Connection, RedisError, Value};

use super::alarm::Alarm;
use super::feed::{Feed, Heard, Kind};
use super::shard::{self, ClusterSeeds, SlotMap};
use crate::proto::topic::TopicName;

/// Connecting, and any single command, may take this long before the connection counts as
/// lost (a hung Redis must not hang the bridge).
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(2);

/// Redirections followed for one command before giving up (a layout still settling).
const REDIRECTS: usize = 5;

/// Keys a `SCAN` call looks at per round trip.
const SCAN_COUNT: usize = 1000;

/// Pause before retrying a `TRYAGAIN` answer.
const TRYAGAIN_PAUSE: Duration = Duration::from_millis(20);

/// A node that refused a connection is not tried again before this (doubling per failure,
/// capped), so a dead shard costs its own topics, not every publish's latency.
const NODE_BACKOFF_MIN: Duration = Duration::from_millis(100);
const NODE_BACKOFF_MAX: Duration = Duration::from_secs(2);

/// What a bridge talks to.
#[derive(Debug, Clone)]
pub enum Layout {
    /// One Redis (a `redis://` URL).
    One(String),
    /// A Redis Cluster.
    Cluster(ClusterSeeds),
}

impl Layout {
    /// Plain pub/sub on one Redis, sharded pub/sub on a cluster.
    pub fn kind(&self) -> Kind {
        match self {
            Layout::One(_) => Kind::Plain,
            Layout::Cluster(_) => Kind::Sharded,
        }
    }
}

/// One numbering-script call on a connection, given the arguments it takes last (this
/// process's home, the home decision).
pub type ScriptCall<'a> = dyn FnMut(&mut Connection, &[&str]) -> Result<Value, RedisError> + 'a;

/// How a command's error says to go on.
enum Redirect {
    Moved(String),
    Ask(String),
    Again,
    LoadScript,
}

fn redirect_of(e: &RedisError) -> Option<Redirect> {
    match e.code()? {
        "MOVED" => Some(Redirect::Moved(e.redirect_node()?.0.to_owned())),
        "ASK" => Some(Redirect::Ask(e.redirect_node()?.0.to_owned())),
        "TRYAGAIN" => Some(Redirect::Again),
        "NOSCRIPT" => Some(Redirect::LoadScript),
        _ => None,
    }
}

fn error(what: String) -> RedisError {
    RedisError::from(std::io::Error::other(what))
}

/// Which Redis process served which slots when a listening session began: compared with
/// the next session's, it tells a reconnect from a failover.
#[derive(Debug, Clone, Default)]
pub struct Served {
    slots: SlotMap,
    /// `run_id` (changes when a process restarts) of each master.
    run_ids: HashMap<String, String>,
}

fn run_id_of(conn: &mut Connection) -> Result<String, RedisError> {
    let info: String = redis::cmd("INFO").arg("server").query(conn)?;
    info.lines()
        .find_map(|l| l.strip_prefix("run_id:"))
        .map(|id| id.trim().to_owned())
        .ok_or_else(|| error("INFO server has no run_id".into()))
}

/// The connections of one bridge thread.
pub struct Wire {
    layout: Layout,
    slots: SlotMap,
    /// Command connections, by node (`HOST:PORT`; the URL itself for [`Layout::One`]).
    commands: HashMap<String, Connection>,
    /// Nodes whose current command connection has loaded the pipeline's script (forgotten
    /// with the connection: a new one may reach another process).
    scripted: HashSet<String>,
    /// The process behind each command connection, as the scripts' topic `home` names it
    /// (`run_id HOST:PORT`; learnt on connecting, forgotten with the connection).
    homes: HashMap<String, String>,
    /// Old homes already reported replaced (one line each, not one per topic).
    reported: HashSet<String>,
    /// Pub/sub connections, by node, and the nodes in the order they are polled.
    feeds: HashMap<String, Feed>,
    polled: Vec<String>,
    /// Where each topic's channel is subscribed.
    subscribed: HashMap<TopicName, String>,
    /// The node whose feed hears the topic notices, if they are heard.
    notices: Option<String>,
    /// Nodes that refused a connection: not before, and the next pause.
    down: HashMap<String, (Instant, Duration)>,
    /// The slot layout must be relearnt before the next use (a node failed).
    stale: bool,
    /// Which feed is polled first next time.
    turn: usize,
}

impl Wire {
    /// No connection yet: nodes are connected on first use.
    pub fn new(layout: Layout) -> Wire {
        Wire {
            stale: matches!(layout, Layout::Cluster(_)),
            layout,
            slots: SlotMap::default(),
            commands: HashMap::new(),
            scripted: HashSet::new(),
            homes: HashMap::new(),
            reported: HashSet::new(),
            feeds: HashMap::new(),
            polled: Vec::new(),
            subscribed: HashMap::new(),
            notices: None,
            down: HashMap::new(),
            turn: 0,
        }
    }

    /// Connected (commands and pub/sub) to every node and, on a cluster, with the slot
    /// layout known. The pub/sub connections are opened even before any subscription, so
    /// a node going away is noticed at once, not at the next subscription.
    pub fn open(layout: Layout) -> Result<Wire, RedisError> {
        let mut wire = Wire::new(layout);
        wire.refresh()?;
        for node in wire.nodes() {
            wire.conn(&node)?;
            wire.feed(&node)?;
        }
        Ok(wire)
    }

    fn feed(&mut self, node: &str) -> Result<&mut Feed, RedisError> {
        if !self.feeds.contains_key(node) {
            let feed = Feed::connect(&self.url_of(node), self.layout.kind(), COMMAND_TIMEOUT)?;
            self.feeds.insert(node.to_owned(), feed);
            self.polled.push(node.to_owned());
        }
        self.feeds
            .get_mut(node)
            .ok_or_else(|| error(format!("no pub/sub connection to {node}")))
    }

    /// Which process serves which slots now (empty for one Redis: a restarted Redis loses
    /// the topics, and that is noticed without this).
    pub fn served(&mut self) -> Result<Served, RedisError> {
        let mut served = Served::default();
        if let Layout::Cluster(_) = self.layout {
            served.slots = self.slots.clone();
            for node in self.slots.masters() {
                let id = run_id_of(self.conn(&node)?)?;
                served.run_ids.insert(node, id);
            }
        }
        Ok(served)
    }

    /// Whether `topic` may have lost messages between `before` and `now`: its slot is
    /// served by another process, and the one before did not hand it over (it is gone, or
    /// restarted). A graceful `CLUSTER FAILOVER` leaves the old master running as a replica
    /// (same `run_id`): nothing was lost. `checked` caches the answer per old master.
    pub fn failed_over(
        &mut self,
        before: &Served,
        now: &Served,
        topic: &str,
        checked: &mut HashMap<String, bool>,
    ) -> bool {
        let slot = shard::slot_of(topic);
        let Some(old) = before.slots.master_of(slot) else {
            return false;
        };
        let old_run = before.run_ids.get(old);
        let new = now.slots.master_of(slot);
        let new_run = new.and_then(|n| now.run_ids.get(n));
        if Some(old) == new && old_run == new_run {
            return false;
        }
        if let Some(&lost) = checked.get(old) {
            return lost;
        }
        let handed_over = Some(old) != new
            && redis::Client::open(self.url_of(old))
                .and_then(|c| c.get_connection_with_timeout(COMMAND_TIMEOUT))
                .and_then(|mut c| {
                    c.set_read_timeout(Some(COMMAND_TIMEOUT))?;
                    run_id_of(&mut c)
                })
                .is_ok_and(|id| Some(&id) == old_run);
        checked.insert(old.to_owned(), !handed_over);
        !handed_over
    }

    /// The nodes topics can live on now.
    pub fn nodes(&self) -> Vec<String> {
        match &self.layout {
            Layout::One(url) => vec![url.clone()],
            Layout::Cluster(_) => self.slots.masters(),
        }
    }

    /// Learn the slot layout now if a failure made it doubtful (no-op for one Redis).
    pub fn refresh_if_stale(&mut self) -> Result<(), RedisError> {
        if self.stale {
            self.refresh()?;
        }
        Ok(())
    }

    /// Relearn the slot layout: from the seeds, then from every master known so far.
    fn refresh(&mut self) -> Result<(), RedisError> {
        let Layout::Cluster(seeds) = &self.layout else {
            return Ok(());
        };
        let mut candidates = seeds.seeds.clone();
        candidates.extend(self.slots.masters());
        candidates.dedup();
        let mut why = Vec::new();
        for addr in candidates {
            let host = addr.rsplit_once(':').map_or(addr.as_str(), |(h, _)| h);
            let asked = redis::Client::open(seeds.url_of(&addr))
                .and_then(|c| c.get_connection_with_timeout(COMMAND_TIMEOUT))
                .and_then(|mut c| {
                    c.set_read_timeout(Some(COMMAND_TIMEOUT))?;
                    redis::cmd("CLUSTER").arg("SLOTS").query::<Value>(&mut c)
                });
            match asked.map(|v| SlotMap::parse(&v, host)) {
                Ok(Some(map)) if !map.masters().is_empty() => {
                    self.slots = map;
                    self.stale = false;
                    // Connections to nodes that are no longer masters go.
                    let masters = self.slots.masters();
                    self.commands.retain(|a, _| masters.contains(a));
                    self.scripted.retain(|a| masters.contains(a));
                    return Ok(());
                }
                Ok(_) => why.push(format!("{addr}: not a cluster slot table")),
                Err(e) => why.push(format!("{addr}: {e}")),
            }
        }
        Err(error(format!(
            "no Redis Cluster node answered CLUSTER SLOTS ({})",
            why.join("; ")
        )))
    }

    /// The node `topic` lives on.
    pub fn node_of(&self, topic: &str) -> Result<String, RedisError> {
        match &self.layout {
            Layout::One(url) => Ok(url.clone()),
            Layout::Cluster(_) => {
                let slot = shard::slot_of(topic);
                self.slots
                    .master_of(slot)
                    .map(str::to_owned)
                    .ok_or_else(|| {
                        error(format!(
                            "slot {slot} (topic {topic}) has no master in the cluster"
                        ))
                    })
            }
        }
    }

    fn url_of(&self, node: &str) -> String {
        match &self.layout {
            Layout::One(url) => url.clone(),
            Layout::Cluster(seeds) => seeds.url_of(node),
        }
    }

    /// The command connection to `node`, connecting if needed.
    fn conn(&mut self, node: &str) -> Result<&mut Connection, RedisError> {
        if !self.commands.contains_key(node) {
            if let Some((until, _)) = self.down.get(node) {
                if Instant::now() < *until {
                    return Err(error(format!("{node} refused a connection moments ago")));
                }
            }
            let cluster = matches!(self.layout, Layout::Cluster(_));
            let connected = redis::Client::open(self.url_of(node)).and_then(|client| {
                let mut conn = client.get_connection_with_timeout(COMMAND_TIMEOUT)?;
                conn.set_read_timeout(Some(COMMAND_TIMEOUT))?;
                conn.set_write_timeout(Some(COMMAND_TIMEOUT))?;
                // A Redis Cluster's topics live with a process (a failover changes it); one
                // Redis's with the instance, whatever process serves it (a restart with
                // persistence keeps the numbering: docs/operations.md, "Redis").
                let home = match &self.layout {
                    Layout::Cluster(_) => format!("{} {node}", run_id_of(&mut conn)?),
                    Layout::One(url) => format!("instance {}", shard::instance_name(url)),
                };
                Ok((conn, home))
            });
            match connected {
                Ok((conn, home)) => {
                    self.down.remove(node);
                    self.commands.insert(node.to_owned(), conn);
                    self.homes.insert(node.to_owned(), home);
                }
                Err(e) => {
                    let pause = self.down.get(node).map_or(NODE_BACKOFF_MIN, |d| d.1);
                    self.down.insert(
                        node.to_owned(),
                        (Instant::now() + pause, (pause * 2).min(NODE_BACKOFF_MAX)),
                    );
                    self.stale |= cluster;
                    return Err(e);
                }
            }
        }
        self.commands
            .get_mut(node)
            .ok_or_else(|| error(format!("no connection to {node}")))
    }

    /// A connection failed: drop it, and relearn the layout before the next use.
    fn lost(&mut self, node: &str) {
        self.commands.remove(node);
        self.scripted.remove(node);
        self.homes.remove(node);
        self.stale |= matches!(self.layout, Layout::Cluster(_));
    }

    /// The command connection to `node`, with `script` loaded on it (once per connection),
    /// so that no call of a pipeline can meet `NOSCRIPT` (see the module's doc).
    fn load_script(&mut self, node: &str, script: &str) -> Result<&mut Connection, RedisError> {
        if !self.scripted.contains(node) {
            let conn = self.conn(node)?;
            redis::cmd("SCRIPT")
                .arg("LOAD")
                .arg(script)
                .query::<String>(conn)?;
            self.scripted.insert(node.to_owned());
        }
        self.conn(node)
    }

    /// Whether the process `old_home` (`run_id HOST:PORT`) is still alive, so it handed its
    /// topics over (a planned failover leaves the old master running as a replica, a slot
    /// migration leaves it a master), or not (it died or restarted: what it acknowledged
    /// last may be lost). The answer a script wants: `adopt …` or `retire …`.
    fn home_decision(&mut self, old_home: &str) -> String {
        // One Redis: another instance's name (the topic moved between instances) is never
        // alive here; `url_of` ignores the node part.
        let (old_run, old_node) = old_home.split_once(' ').unwrap_or((old_home, ""));
        let alive = !old_node.is_empty()
            && matches!(self.layout, Layout::Cluster(_))
            && redis::Client::open(self.url_of(old_node))
                .and_then(|c| c.get_connection_with_timeout(COMMAND_TIMEOUT))
                .and_then(|mut c| {
                    c.set_read_timeout(Some(COMMAND_TIMEOUT))?;
                    run_id_of(&mut c)
                })
                .is_ok_and(|id| id == old_run);
        if !alive && self.reported.insert(old_home.to_owned()) {
            println!(
                "broker: Redis process {old_run} at {old_node} was replaced without handing its topics over (failover or restart); each of its topics starts a new epoch"
            );
        }
        let verb = if alive { "adopt" } else { "retire" };
        format!("{verb} {old_home}")
    }

    /// Run `op` on the node that owns `topic`, following redirections. `script` is loaded
    /// first if the node does not have it (`NOSCRIPT`).
    pub fn command(
        &mut self,
        topic: &str,
        script: Option<&str>,
        op: &mut dyn FnMut(&mut Connection) -> Result<Value, RedisError>,
    ) -> Result<Value, RedisError> {
        self.script_command(topic, script, &mut |c, _| op(c))
    }

    /// [`Wire::command`] for a numbering script: `op` gets the two arguments such a script
    /// takes last (this process's home and the home decision, see `script::settle_home`),
    /// and a script answering `HOMELESS` is run again with the decision.
    pub fn script_command(
        &mut self,
        topic: &str,
        script: Option<&str>,
        op: &mut ScriptCall,
    ) -> Result<Value, RedisError> {
        self.refresh_if_stale()?;
        let mut redirect: Option<(String, bool)> = None;
        let mut decision = String::new();
        let mut last = None;
        for _ in 0..REDIRECTS {
            let (node, asking) = match redirect.take() {
                Some(r) => r,
                None => (self.node_of(topic)?, false),
            };
            self.conn(&node)?;
            let home = self.homes.get(&node).cloned().unwrap_or_default();
            let conn = self.conn(&node)?;
            let tail = [home.as_str(), decision.as_str()];
            let result = if asking {
                redis::cmd("ASKING")
                    .query::<()>(conn)
                    .and_then(|()| op(conn, &tail))
            } else {
                op(conn, &tail)
            };
            let e = match result {
                Ok(v) => return Ok(v),
                Err(e) => e,
            };
            if e.code() == Some("HOMELESS") {
                decision = self.home_decision(e.detail().unwrap_or_default());
                redirect = Some((node, asking));
                last = Some(e);
                continue;
            }
            match redirect_of(&e) {
                Some(Redirect::Moved(to)) => {
                    // Best effort: the redirection alone says where to go now.
                    let _ = self.refresh();
                    redirect = Some((to, false));
                }
                Some(Redirect::Ask(to)) => redirect = Some((to, true)),
                Some(Redirect::Again) => std::thread::sleep(TRYAGAIN_PAUSE),
                Some(Redirect::LoadScript) => match script {
                    Some(source) => {
                        let loaded = self.conn(&node).and_then(|c| {
                            redis::cmd("SCRIPT")
                                .arg("LOAD")
                                .arg(source)
                                .query::<String>(c)
                        });
                        if let Err(e) = loaded {
                            self.lost(&node);
                            return Err(e);
                        }
                        redirect = Some((node, asking));
                    }
                    None => return Err(e),
                },
                None => {
                    if e.is_io_error() || e.is_timeout() || e.is_connection_dropped() {
                        self.lost(&node);
                    }
                    return Err(e);
                }
            }
            last = Some(e);
        }
        Err(last.unwrap_or_else(|| error(format!("topic {topic}: too many redirections"))))
    }

    /// Run one command per topic, pipelined: every node's share is sent before any answer
    /// is read, so the shards work in parallel. Answers come back in `calls` order; calls
    /// Redis redirected are run again one by one, in order (each topic keeps its order).
    /// A call on a node whose connection failed gets that error (its outcome is unknown).
    pub fn pipeline(
        &mut self,
        calls: &[(&str, redis::Cmd)],
        script: &str,
    ) -> Vec<Result<Value, RedisError>> {
        let mut results: Vec<Option<Result<Value, RedisError>>> = Vec::new();
        results.resize_with(calls.len(), || None);
        if let Err(e) = self.refresh_if_stale() {
            return calls.iter().map(|_| Err(error(e.to_string()))).collect();
        }
        // Calls by node, in order.
        let mut by_node: BTreeMap<String, Vec<usize>> = BTreeMap::new();
        for (i, (topic, _)) in calls.iter().enumerate() {
            match self.node_of(topic) {
                Ok(node) => by_node.entry(node).or_default().push(i),
                Err(e) => results[i] = Some(Err(e)),
            }
        }
        // Send everything (each call with this process's home and no home decision).
        let mut sent = Vec::with_capacity(by_node.len());
        for (node, indexes) in by_node {
            if let Err(e) = self.load_script(&node, script) {
                self.lost(&node);
                for i in indexes {
                    results[i] = Some(Err(error(format!("{node}: {e}"))));
                }
                continue;
            }
            let home = self.homes.get(&node).cloned().unwrap_or_default();
            let mut pipe = redis::pipe();
            for &i in &indexes {
                let mut cmd = calls[i].1.clone();
                cmd.arg(&home).arg("");
                pipe.add_command(cmd);
            }
            let packed = pipe.get_packed_pipeline();
            match self
                .load_script(&node, script)
                .and_then(|c| c.send_packed_command(&packed))
            {
                Ok(()) => sent.push((node, indexes)),
                Err(e) => {
                    self.lost(&node);
                    for i in indexes {
                        results[i] = Some(Err(error(format!("{node}: {e}"))));
                    }
                }
            }
        }
        // Read every answer.
        let mut again = Vec::new();
        for (node, indexes) in sent {
            let mut failed: Option<String> = None;
            for i in indexes {
                if let Some(why) = &failed {
                    results[i] = Some(Err(error(why.clone())));
                    continue;
                }
                let answer = match self.commands.get_mut(&node) {
                    Some(c) => c.recv_response(),
                    None => Err(error(format!("{node}: connection gone"))),
                };
                match answer.and_then(Value::extract_error) {
                    Ok(v) => results[i] = Some(Ok(v)),
                    // Run again alone, in order: redirected, or the topic's home must be
                    // settled first (nothing was numbered).
                    Err(e) if redirect_of(&e).is_some() || e.code() == Some("HOMELESS") => {
                        again.push(i)
                    }
                    Err(e) if e.is_io_error() || e.is_timeout() || e.is_connection_dropped() => {
                        let why = format!("{node}: {e}");
                        results[i] = Some(Err(error(why.clone())));
                        failed = Some(why);
                    }
                    Err(e) => results[i] = Some(Err(e)),
                }
            }
            if failed.is_some() {
                self.lost(&node);
            }
        }
        for i in again {
            let (topic, cmd) = &calls[i];
            results[i] = Some(self.script_command(topic, Some(script), &mut |c, tail| {
                let mut cmd = cmd.clone();
                for arg in tail {
                    cmd.arg(*arg);
                }
                cmd.query(c)
            }));
        }
        results
            .into_iter()
            .map(|r| r.unwrap_or_else(|| Err(error("not run".into()))))
            .collect()
    }

    /// Subscribe to `topic`'s channel on its node; returns once confirmed.
    pub fn subscribe(&mut self, topic: &TopicName) -> Result<(), RedisError> {
        let channel = super::script::channel_of(topic);
        let mut last = None;
        for _ in 0..REDIRECTS {
            let node = self.node_of(topic)?;
            match self.feed(&node)?.subscribe(&channel, COMMAND_TIMEOUT) {
                Ok(()) => {
                    self.subscribed.insert(topic.clone(), node);
                    return Ok(());
                }
                Err(e)
                    if matches!(redirect_of(&e), Some(Redirect::Moved(_) | Redirect::Ask(_))) =>
                {
                    self.refresh()?;
                    last = Some(e);
                }
                Err(e) => return Err(e),
            }
        }
        Err(last.unwrap_or_else(|| error(format!("topic {topic}: too many redirections"))))
    }

    /// [`Wire::subscribe`] for many topics, each node's share requested in one round trip
    /// (a topic whose slot turns out to live elsewhere is then subscribed alone, following
    /// the redirection); returns once every subscription is confirmed.
    pub fn subscribe_many(&mut self, topics: &[TopicName]) -> Result<(), RedisError> {
        self.refresh_if_stale()?;
        let mut by_node: BTreeMap<String, Vec<&TopicName>> = BTreeMap::new();
        for topic in topics {
            by_node.entry(self.node_of(topic)?).or_default().push(topic);
        }
        let mut alone = Vec::new();
        for (node, topics) in by_node {
            let channels: Vec<String> = (topics.iter())
                .map(|t| super::script::channel_of(t))
                .collect();
            let refused = self
                .feed(&node)?
                .subscribe_many(&channels, COMMAND_TIMEOUT)?;
            let mut refused = refused.into_iter().peekable();
            for (i, topic) in topics.into_iter().enumerate() {
                match refused.next_if(|(at, _)| *at == i) {
                    Some((_, e)) if redirect_of(&e).is_some() => alone.push(topic),
                    Some((_, e)) => return Err(e),
                    None => {
                        self.subscribed.insert(topic.clone(), node.clone());
                    }
                }
            }
        }
        for topic in alone {
            self.subscribe(topic)?;
        }
        Ok(())
    }

    /// [`Wire::unsubscribe`] for many topics, each node's share in one round trip; returns
    /// once Redis answered each.
    pub fn unsubscribe_many(&mut self, topics: &[TopicName]) -> Result<(), RedisError> {
        let mut by_node: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for topic in topics {
            if let Some(node) = self.subscribed.remove(topic) {
                let channel = super::script::channel_of(topic);
                by_node.entry(node).or_default().push(channel);
            }
        }
        for (node, channels) in by_node {
            if let Some(feed) = self.feeds.get_mut(&node) {
                if let Some((_, e)) = feed.unsubscribe_many(&channels, COMMAND_TIMEOUT)?.pop() {
                    return Err(e);
                }
            }
        }
        Ok(())
    }

    /// Hear the topic notices (`script::NOTICES`), on one node (a Redis Cluster hears plain
    /// channels on every node); returns once confirmed. No-op if already heard.
    pub fn listen_notices(&mut self) -> Result<(), RedisError> {
        if self.notices.is_some() {
            return Ok(());
        }
        let node = (self.nodes().into_iter().next())
            .ok_or_else(|| error("no Redis node to hear topic notices on".into()))?;
        (self.feed(&node)?).subscribe_plain(super::script::NOTICES, COMMAND_TIMEOUT)?;
        self.notices = Some(node);
        Ok(())
    }

    /// Undo [`Wire::listen_notices`]; returns once confirmed.
    pub fn unlisten_notices(&mut self) -> Result<(), RedisError> {
        let Some(node) = self.notices.take() else {
            return Ok(());
        };
        match self.feeds.get_mut(&node) {
            Some(feed) => feed.unsubscribe_plain(super::script::NOTICES, COMMAND_TIMEOUT),
            None => Ok(()),
        }
    }

    /// Every topic whose `seq` key matches `glob` (`script::seq_key_glob`), on every node
    /// (`SCAN`, which walks the whole keyspace: O(keys), once per distinct pattern a node
    /// starts to hold). Stops early past `max` topics.
    pub fn topics_matching(
        &mut self,
        glob: &str,
        max: usize,
    ) -> Result<HashSet<TopicName>, RedisError> {
        let mut found = HashSet::new();
        for node in self.nodes() {
            let conn = self.conn(&node)?;
            let mut cursor = 0u64;
            loop {
                let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
                    .arg(cursor)
                    .arg("MATCH")
                    .arg(glob)
                    .arg("COUNT")
                    .arg(SCAN_COUNT)
                    .query(conn)?;
                found.extend(
                    keys.iter()
                        .filter_map(|k| super::script::topic_of_seq_key(k)),
                );
                if found.len() > max {
                    return Ok(found);
                }
                cursor = next;
                if cursor == 0 {
                    break;
                }
            }
        }
        Ok(found)
    }

    /// Unsubscribe from `topic`'s channel; returns once confirmed.
    pub fn unsubscribe(&mut self, topic: &TopicName) -> Result<(), RedisError> {
        let Some(node) = self.subscribed.remove(topic) else {
            return Ok(());
        };
        match self.feeds.get_mut(&node) {
            Some(feed) => feed.unsubscribe(&super::script::channel_of(topic), COMMAND_TIMEOUT),
            None => Ok(()),
        }
    }

    /// The next message heard on any node, waiting at most about `wait` when none has
    /// arrived. With an `alarm`, the wait also ends as soon as its bell rings (a request
    /// was queued for the listener) or any node's socket has input.
    pub fn next(
        &mut self,
        wait: Duration,
        alarm: Option<&mut Alarm>,
    ) -> Result<Option<Heard>, RedisError> {
        let Some(alarm) = alarm else {
            return self.next_blocking(wait);
        };
        if let Some(heard) = self.next_arrived()? {
            return Ok(Some(heard));
        }
        for feed in self.feeds.values_mut() {
            if !feed.watched {
                alarm.watch(feed.fd())?;
                feed.watched = true;
            }
        }
        alarm.wait(wait)?;
        self.next_arrived()
    }

    /// What has already arrived on any node, without waiting (each node in turn first).
    fn next_arrived(&mut self) -> Result<Option<Heard>, RedisError> {
        if !self.polled.is_empty() {
            self.turn = (self.turn + 1) % self.polled.len();
        }
        self.next_from_each(None)
    }

    /// The next message heard on any node, waiting on each socket in turn (no alarm).
    fn next_blocking(&mut self, wait: Duration) -> Result<Option<Heard>, RedisError> {
        let n = self.polled.len();
        if n == 0 {
            std::thread::sleep(wait);
            return Ok(None);
        }
        let each = (wait / n as u32).max(Duration::from_millis(1));
        // First what has already arrived anywhere (no waiting on an idle node while another
        // is busy), then wait on each in turn.
        if let Some(heard) = self.next_arrived()? {
            return Ok(Some(heard));
        }
        self.next_from_each(Some(each))
    }

    /// One read from each node's feed, from this turn's node on, waiting up to `wait` on
    /// each (`None`: only what has arrived); the first message heard.
    fn next_from_each(&mut self, wait: Option<Duration>) -> Result<Option<Heard>, RedisError> {
        let n = self.polled.len();
        for node in self.polled.iter().cycle().skip(self.turn).take(n) {
            let Some(feed) = self.feeds.get_mut(node) else {
                continue;
            };
            match feed.next(wait) {
                Ok(Some(heard)) => return Ok(Some(heard)),
                Ok(None) => {}
                Err(e) => return Err(error(format!("{node}: {e}"))),
            }
        }
        Ok(None)
    }
}
