//! Sharded cluster mode over real sockets: a real Redis Cluster (three masters, one replica
//! each, `testkit::redis_cluster`) behind `--broker redis+cluster://…`, and independent Redis
//! instances behind `--broker redis://A,redis://B`. Herald nodes agree on one order and one
//! numbering per topic with topics spread over every shard; a master killed mid-stream (its
//! replica promoted) and a whole shard restarted never leave a silent hole: subscribers
//! either see every message or are told explicitly, and recover.
//!
//! Without `redis-server`/`redis-cli` the tests say so loudly and pass locally; with
//! `CI=true` a missing binary is a failure.

use std::collections::{BTreeMap, HashMap};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use testkit::redis_cluster::{self, RedisCluster};
use testkit::redis_server::Redis;
use testkit::v1::V1;
use testkit::*;

/// `per` topics on each master of `cluster`, and the master of each.
fn topics_on_every_shard(cluster: &RedisCluster, per: usize) -> Vec<(String, u16)> {
    let masters = cluster.masters();
    assert_eq!(masters.len(), 3);
    let mut count: HashMap<u16, usize> = HashMap::new();
    let mut topics = Vec::new();
    for i in 0.. {
        let topic = format!("s{i}");
        let master = cluster.master_of_slot(cluster.keyslot(&topic));
        let n = count.entry(master).or_default();
        if *n < per {
            *n += 1;
            topics.push((topic, master));
        }
        if topics.len() == per * masters.len() {
            break;
        }
    }
    topics
}

fn shard_listeners(port: u16, topic: &str) -> (u64, u64) {
    let mut c = redis_cluster::try_client(port).expect("the master");
    let channel = format!("herald:{{{topic}}}");
    let (_, sharded): (String, u64) = redis::cmd("PUBSUB")
        .arg("SHARDNUMSUB")
        .arg(&channel)
        .query(&mut c)
        .unwrap();
    let (_, plain): (String, u64) = redis::cmd("PUBSUB")
        .arg("NUMSUB")
        .arg(&channel)
        .query(&mut c)
        .unwrap();
    (sharded, plain)
}

/// Subscribe `c` to every topic; returns each topic's `subscribed` answer.
fn subscribe_all(c: &mut V1, id: u64, topics: &[String]) -> HashMap<String, Value> {
    c.send_subscribe(id, json!(topics));
    (0..topics.len())
        .map(|_| {
            let s = c.expect("subscribed");
            (s["topic"].as_str().unwrap().to_string(), s)
        })
        .collect()
}

#[test]
fn a_redis_cluster_gives_every_node_one_order_per_topic_on_every_shard() {
    let Some(cluster) = RedisCluster::start_or_skip("the Redis Cluster tests") else {
        return;
    };
    let url = cluster.url();
    let nodes: Vec<Server> = (0..3).map(|_| Server::start_node(&url, &[])).collect();
    let spread = topics_on_every_shard(&cluster, 4);
    let topics: Vec<String> = spread.iter().map(|t| t.0.clone()).collect();
    const PER: usize = 40; // messages per topic per publisher
    let mut subscribers = Vec::new();
    for n in &nodes {
        let mut c = V1::connect(n.addr);
        let answers = subscribe_all(&mut c, 1, &topics);
        assert!(answers.values().all(|s| s["seq"] == 0), "{answers:?}");
        subscribers.push(c);
    }
    // Each topic is heard through sharded pub/sub on its own master, by all three nodes.
    for (topic, master) in &spread {
        assert_eq!(shard_listeners(*master, topic), (3, 0), "topic {topic}");
    }
    let total = 3 * PER * topics.len();
    let readers: Vec<_> = subscribers
        .into_iter()
        .map(|mut c| {
            thread::spawn(move || {
                let mut by_topic: BTreeMap<String, Vec<(u64, String)>> = BTreeMap::new();
                for _ in 0..total {
                    let m = c.recv();
                    assert_eq!(m["type"], "message", "{m}");
                    by_topic
                        .entry(m["topic"].as_str().unwrap().to_string())
                        .or_default()
                        .push((
                            m["seq"].as_u64().unwrap(),
                            m["data"].as_str().unwrap().into(),
                        ));
                }
                by_topic
            })
        })
        .collect();
    // One publisher per node, all at once, over every topic.
    let publishers: Vec<_> = nodes
        .iter()
        .enumerate()
        .map(|(i, n)| {
            let addr = n.addr;
            let topics = topics.clone();
            thread::spawn(move || {
                let mut p = V1::connect(addr);
                let mut id = 0;
                for k in 0..PER {
                    for t in &topics {
                        id += 1;
                        p.publish(id, t, &format!("{i}:{k}"));
                    }
                }
                for _ in 0..id {
                    assert!(p.expect("published")["seq"].is_u64());
                }
            })
        })
        .collect();
    for p in publishers {
        p.join().unwrap();
    }
    let results: Vec<BTreeMap<String, Vec<(u64, String)>>> =
        readers.into_iter().map(|h| h.join().unwrap()).collect();
    for other in &results[1..] {
        assert_eq!(
            other, &results[0],
            "every node delivers one order per topic"
        );
    }
    for (topic, got) in &results[0] {
        let seqs: Vec<u64> = got.iter().map(|m| m.0).collect();
        assert_eq!(seqs, (1..=(3 * PER) as u64).collect::<Vec<_>>(), "{topic}");
        for i in 0..3 {
            // Each publisher's messages keep its order.
            let mine: Vec<&String> = got
                .iter()
                .map(|m| &m.1)
                .filter(|d| d.starts_with(&format!("{i}:")))
                .collect();
            let expected: Vec<String> = (0..PER).map(|k| format!("{i}:{k}")).collect();
            assert_eq!(mine, expected.iter().collect::<Vec<_>>(), "{topic}");
        }
    }
    // A topic's keys live on its own shard.
    for (topic, master) in &spread {
        let mut c = redis_cluster::try_client(*master).unwrap();
        let len: u64 = redis::cmd("XLEN")
            .arg(format!("herald:{{{topic}}}:log"))
            .query(&mut c)
            .unwrap();
        assert_eq!(len, (3 * PER) as u64, "{topic}");
    }
    // `since` recovery and rewind work on any node, from the shared logs.
    let (topic, _) = &spread[5];
    let epoch = {
        let mut c = V1::connect(nodes[0].addr);
        c.subscribe(1, json!([topic]))["epoch"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let mut late = V1::connect(nodes[2].addr);
    let s = late.subscribe(
        2,
        json!([{"topic": topic, "since": {"epoch": epoch, "seq": 3 * PER - 2}}]),
    );
    assert_eq!(
        (s["epoch"].as_str(), s["replayed"].as_u64()),
        (Some(&*epoch), Some(2))
    );
    let replay: Vec<u64> = (0..2)
        .map(|_| late.recv()["seq"].as_u64().unwrap())
        .collect();
    assert_eq!(replay, vec![3 * PER as u64 - 1, 3 * PER as u64]);
}

/// A subscriber that follows its topics through faults: a message must come right after
/// the last one of its topic, or the topic must have been ended explicitly (then it
/// recovers with `since`, or starts over when told the epoch changed).
struct Follower {
    c: V1,
    next_id: u64,
    /// Per topic: epoch, last seq, data seen in order, gap notices.
    state: HashMap<String, (String, u64, Vec<u64>, u32)>,
}

impl Follower {
    fn new(addr: std::net::SocketAddr, topics: &[String]) -> Follower {
        let mut c = V1::connect(addr);
        // A failover on a loaded machine can pause every topic for longer than IO_TIMEOUT
        // (the publisher retries the refused shard before going on).
        c.ws.get_ref()
            .set_read_timeout(Some(Duration::from_secs(60)))
            .unwrap();
        let state = subscribe_all(&mut c, 1, topics)
            .into_iter()
            .map(|(t, s)| {
                let epoch = s["epoch"].as_str().unwrap().to_string();
                (t, (epoch, s["seq"].as_u64().unwrap(), Vec::new(), 0))
            })
            .collect();
        Follower {
            c,
            next_id: 2,
            state,
        }
    }

    fn message(&mut self, m: &Value) {
        let topic = m["topic"].as_str().unwrap().to_string();
        let seq = m["seq"].as_u64().unwrap();
        let data: u64 = m["data"].as_str().unwrap().parse().unwrap();
        let st = self.state.get_mut(&topic).unwrap();
        assert_eq!(seq, st.1 + 1, "silent hole on {topic}: {m}");
        st.1 = seq;
        st.2.push(data);
    }

    /// Handle the next frame (`recv` fails the test after the read timeout).
    fn step(&mut self) {
        let m = self.c.recv();
        self.handle(m);
    }

    /// Handle the next frame if one comes before `deadline`; false if none did.
    fn step_by(&mut self, deadline: Instant) -> bool {
        match self.c.recv_by(deadline) {
            Some(m) => {
                self.handle(m);
                true
            }
            None => false,
        }
    }

    /// Where each topic stands, for a failure message.
    fn summary(&self) -> String {
        let mut topics: Vec<_> = self.state.iter().collect();
        topics.sort_by_key(|(t, _)| t.to_string());
        topics
            .iter()
            .map(|(t, (epoch, seq, data, gaps))| {
                format!(
                    "{t}: epoch {epoch} seq {seq}, {} message(s), last data {:?}, {gaps} notice(s)",
                    data.len(),
                    data.last()
                )
            })
            .collect::<Vec<_>>()
            .join("; ")
    }

    fn handle(&mut self, m: Value) {
        match m["type"].as_str() {
            Some("message") => self.message(&m),
            Some("error") if m["id"].is_null() => {
                let topic = m["topic"].as_str().unwrap().to_string();
                let code = m["code"].as_str().unwrap();
                assert!(["epoch_changed", "history_gap"].contains(&code), "{m}");
                self.state.get_mut(&topic).unwrap().3 += 1;
                self.rejoin(&topic);
            }
            _ => panic!("unexpected {m}"),
        }
    }

    /// Resubscribe with `since`; if that is refused, start over with what the new epoch
    /// kept.
    fn rejoin(&mut self, topic: &str) {
        let (epoch, last) = {
            let st = &self.state[topic];
            (st.0.clone(), st.1)
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut since = true;
        loop {
            let id = self.next_id;
            self.next_id += 1;
            let request = if since {
                json!([{"topic": topic, "since": {"epoch": epoch, "seq": last}}])
            } else {
                // Starting over: everything the new epoch kept, then live.
                json!([{"topic": topic, "rewind": 1000}])
            };
            self.c.send_subscribe(id, request);
            // Messages of other topics may come first.
            let answer = loop {
                let m = self.c.recv();
                if m["id"] == id {
                    break m;
                }
                match m["type"].as_str() {
                    Some("message") => self.message(&m),
                    Some("error") if m["id"].is_null() => {
                        let other = m["topic"].as_str().unwrap().to_string();
                        self.state.get_mut(&other).unwrap().3 += 1;
                        // Handled after this one: remember by resubscribing later.
                        let st = self.state.get_mut(&other).unwrap();
                        st.0 = String::from("-");
                    }
                    _ => panic!("unexpected {m}"),
                }
            };
            match (answer["type"].as_str(), answer["code"].as_str()) {
                (Some("subscribed"), _) => {
                    let st = self.state.get_mut(topic).unwrap();
                    st.0 = answer["epoch"].as_str().unwrap().to_string();
                    if !since {
                        let replayed = answer["replayed"].as_u64().unwrap_or(0);
                        st.1 = answer["seq"].as_u64().unwrap() - replayed;
                    }
                    break;
                }
                (Some("error"), Some("epoch_changed" | "history_gap" | "since_ahead")) => {
                    since = false
                }
                (Some("error"), Some("unavailable")) => {
                    assert!(Instant::now() < deadline, "still unavailable: {answer}");
                    thread::sleep(Duration::from_millis(100));
                }
                _ => panic!("unexpected answer {answer}"),
            }
        }
        // Topics whose notice came while this one was rejoining.
        let pending: Vec<String> = self
            .state
            .iter()
            .filter(|(_, st)| st.0 == "-")
            .map(|(t, _)| t.clone())
            .collect();
        for t in pending {
            self.state.get_mut(&t).unwrap().0 = String::new();
            self.rejoin(&t);
        }
    }
}

/// Publish `total` messages per topic, numbered 1.. in the data, one at a time, retrying a
/// message refused as unavailable (Redis answered nothing for it). Returns how many
/// refusals there were.
fn publish_through(
    addr: std::net::SocketAddr,
    topics: Vec<String>,
    total: u64,
    pace: Duration,
) -> thread::JoinHandle<u64> {
    thread::spawn(move || {
        let mut p = V1::connect(addr);
        let mut refused = 0;
        let mut id = 0;
        for k in 1..=total {
            for t in &topics {
                let deadline = Instant::now() + Duration::from_secs(30);
                loop {
                    id += 1;
                    p.publish(id, t, &k.to_string());
                    let answer = p.recv();
                    if answer["type"] == "published" {
                        break;
                    }
                    assert_eq!(answer["code"], "unavailable", "{answer}");
                    assert!(Instant::now() < deadline, "{t} stayed unavailable");
                    refused += 1;
                    thread::sleep(Duration::from_millis(50));
                }
            }
            thread::sleep(pace);
        }
        refused
    })
}

/// Read until every topic has seen data `total`.
fn follow_to_the_end(f: &mut Follower, total: u64) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while f.state.values().any(|st| st.2.last() != Some(&total)) {
        assert!(
            f.step_by(deadline),
            "message {total} did not reach every topic within 60 s: {}",
            f.summary()
        );
    }
}

/// Messages per topic in the failover tests.
const TOTAL: u64 = 150;

/// Mid-stream on `cluster`: two nodes, two topics per shard, a follower of every topic on
/// node `a`, a paced publisher on node `b`, 200 messages delivered so far.
struct MidStream {
    a: Server,
    b: Server,
    spread: Vec<(String, u16)>,
    topics: Vec<String>,
    f: Follower,
    publisher: thread::JoinHandle<u64>,
}

fn mid_stream(cluster: &RedisCluster) -> MidStream {
    let url = cluster.url();
    let a = Server::start_node(&url, &[]);
    let b = Server::start_node(&url, &[]);
    let spread = topics_on_every_shard(cluster, 2);
    let topics: Vec<String> = spread.iter().map(|t| t.0.clone()).collect();
    let mut f = Follower::new(a.addr, &topics);
    let publisher = publish_through(b.addr, topics.clone(), TOTAL, Duration::from_millis(5));
    while f.state.values().map(|st| st.2.len()).sum::<usize>() < 200 {
        f.step();
    }
    MidStream {
        a,
        b,
        spread,
        topics,
        f,
        publisher,
    }
}

#[test]
fn a_master_killed_mid_stream_fails_over_without_a_silent_hole() {
    let Some(mut cluster) = RedisCluster::start_or_skip("the Redis Cluster tests") else {
        return;
    };
    let MidStream {
        mut a,
        b,
        spread,
        mut f,
        publisher,
        topics: _,
    } = mid_stream(&cluster);
    let victim = spread[0].1;
    let replica = cluster.replica_of(victim);
    cluster.kill(victim);
    assert!(
        cluster.wait_master(replica, Duration::from_secs(30)),
        "the replica was not promoted"
    );
    follow_to_the_end(&mut f, TOTAL);
    let refused = publisher.join().unwrap();
    for (topic, master) in &spread {
        let (_, _, data, gaps) = &f.state[topic];
        // What arrived came in publishing order (a message whose publish was refused as
        // unavailable may have been numbered anyway, and come again when retried).
        assert!(data.windows(2).all(|w| w[0] <= w[1]), "{topic}: {data:?}");
        if *master != victim {
            // Healthy shards: everything, without a notice (filled from the logs).
            assert_eq!(*gaps, 0, "{topic}");
            assert_eq!(data, &(1..=TOTAL).collect::<Vec<_>>(), "{topic}");
        }
    }
    // The failed shard's topics were told (their numbering may have lost the last
    // messages the dead master acknowledged): a new epoch, explicitly.
    for (topic, master) in &spread {
        if *master == victim {
            assert!(
                f.state[topic].3 >= 1,
                "{topic} was not told of the failover"
            );
        }
    }
    assert!(
        refused > 0,
        "publishing to the dead shard was refused meanwhile"
    );
    // The new epoch numbers from 1 again, and a fresh subscriber on the other node can
    // recover from it with `since`.
    let (topic, _) = &spread[0];
    let (epoch, last) = (f.state[topic].0.clone(), f.state[topic].1);
    let mut late = V1::connect(b.addr);
    let s = late.subscribe(
        9,
        json!([{"topic": topic, "since": {"epoch": epoch, "seq": last.saturating_sub(1)}}]),
    );
    assert_eq!(s["epoch"].as_str(), Some(&*epoch), "{s}");
    assert!(a
        .line_starting(
            "broker: a Redis Cluster shard failed over",
            Duration::from_secs(5)
        )
        .is_some());
}

#[test]
fn a_planned_failover_mid_stream_loses_nothing_and_changes_no_epoch() {
    let Some(cluster) = RedisCluster::start_or_skip("the Redis Cluster tests") else {
        return;
    };
    // The nodes are bound: they run until the end of the test.
    let MidStream {
        a: _a,
        b: _b,
        spread,
        topics,
        mut f,
        publisher,
    } = mid_stream(&cluster);
    let old = spread[0].1;
    let replica = cluster.replica_of(old);
    // The replica takes over in agreement with its master (which becomes its replica):
    // Redis answers MOVED to the publisher and ends the node's sharded subscriptions.
    let ok: String = redis::cmd("CLUSTER")
        .arg("FAILOVER")
        .query(&mut redis_cluster::try_client(replica).unwrap())
        .unwrap();
    assert_eq!(ok, "OK");
    assert!(cluster.wait_master(replica, Duration::from_secs(30)));
    follow_to_the_end(&mut f, TOTAL);
    publisher.join().unwrap();
    for topic in &topics {
        let (_, _, data, gaps) = &f.state[topic];
        assert_eq!(*gaps, 0, "{topic}");
        assert_eq!(data, &(1..=TOTAL).collect::<Vec<_>>(), "{topic}");
    }
    assert!(!cluster.masters().contains(&old));
}

#[test]
fn a_restarted_shard_starts_its_topics_over_and_the_others_go_on() {
    let Some(mut cluster) = RedisCluster::start_or_skip("the Redis Cluster tests") else {
        return;
    };
    let url = cluster.url();
    let a = Server::start_node(&url, &[]);
    let spread = topics_on_every_shard(&cluster, 1);
    let topics: Vec<String> = spread.iter().map(|t| t.0.clone()).collect();
    let victim = spread[0].1;
    let replica = cluster.replica_of(victim);
    let mut f = Follower::new(a.addr, &topics);
    for t in &topics {
        for k in 1..=5 {
            assert_eq!(
                post(a.addr, t, "text/plain", "", k.to_string().as_bytes()).0,
                202
            );
        }
    }
    while f.state.values().map(|st| st.2.len()).sum::<usize>() < 15 {
        f.step();
    }
    // The whole shard goes away and comes back empty.
    cluster.kill(victim);
    cluster.kill(replica);
    // The other shards keep numbering meanwhile.
    for t in &topics[1..] {
        for k in 6..=10 {
            assert_eq!(
                post(a.addr, t, "text/plain", "", k.to_string().as_bytes()).0,
                202
            );
        }
    }
    assert_eq!(post(a.addr, &topics[0], "text/plain", "", b"x").0, 503);
    cluster.restart(victim);
    cluster.restart(replica);
    cluster.wait_ok();
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        let (status, body) = post(a.addr, &topics[0], "text/plain", "", b"6");
        if status == 202 || Instant::now() > deadline {
            break (status, body);
        }
        thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(
        status,
        (202, "{\"seq\":1}".to_string()),
        "a new life starts at 1"
    );
    for t in &topics[1..] {
        assert_eq!(post(a.addr, t, "text/plain", "", b"11").0, 202);
    }
    // Every topic reaches its last message; only the restarted shard's topic was told.
    let deadline = Instant::now() + Duration::from_secs(30);
    while f
        .state
        .iter()
        .any(|(t, st)| st.2.last() != Some(if *t == topics[0] { &6 } else { &11 }))
    {
        assert!(Instant::now() < deadline, "{:?}", f.state);
        f.step();
    }
    assert_eq!(
        f.state[&topics[0]].3, 1,
        "the restarted shard's topic was told"
    );
    for t in &topics[1..] {
        let (_, _, data, gaps) = &f.state[t];
        assert_eq!(
            (*gaps, data.clone()),
            (0, (1..=11).collect::<Vec<u64>>()),
            "{t}"
        );
    }
}

#[test]
fn independent_instances_spread_topics_and_fail_alone() {
    let Some(r1) = Redis::start_or_skip("the sharded cluster tests") else {
        return;
    };
    let Some(mut r2) = Redis::start_or_skip("the sharded cluster tests") else {
        return;
    };
    let broker = format!("{},{}", r1.url(), r2.url());
    let mut a = Server::start_node(&broker, &["--stats-interval", "100ms"]);
    let b = Server::start_node(&broker, &[]);
    assert!(
        b.stdout()
            .iter()
            .filter(|l| l.starts_with("broker: up"))
            .count()
            >= 1
    );
    let topics: Vec<String> = (0..16).map(|i| format!("i{i}")).collect();
    let mut sub = V1::connect(b.addr);
    subscribe_all(&mut sub, 1, &topics);
    for k in 1..=3u64 {
        for t in &topics {
            assert_eq!(
                post(a.addr, t, "text/plain", "", k.to_string().as_bytes()),
                (202, format!("{{\"seq\":{k}}}"))
            );
        }
    }
    let mut got: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    for _ in 0..3 * topics.len() {
        let m = sub.expect("message");
        got.entry(m["topic"].as_str().unwrap().into())
            .or_default()
            .push(m["seq"].as_u64().unwrap());
    }
    assert!(got.values().all(|s| s == &vec![1, 2, 3]), "{got:?}");
    // Each topic lives on exactly one instance, and both instances hold some.
    let on = |r: &Redis, t: &str| -> bool {
        redis::cmd("EXISTS")
            .arg(format!("herald:{{{t}}}:seq"))
            .query::<u64>(&mut r.client())
            .unwrap()
            == 1
    };
    let on_r2: Vec<&String> = topics.iter().filter(|t| on(&r2, t)).collect();
    for t in &topics {
        assert!(on(&r1, t) != on(&r2, t), "{t} on both or neither");
    }
    assert!(!on_r2.is_empty() && on_r2.len() < topics.len(), "{on_r2:?}");
    // One instance dies: its topics are refused, the others go on.
    let lost = on_r2[0].clone();
    let kept = topics.iter().find(|t| !on_r2.contains(t)).unwrap().clone();
    r2.kill();
    assert!(a
        .wait_line(Duration::from_secs(10), |l| l
            .contains("broker_shards_up=1/2"))
        .is_some());
    assert_eq!(post(a.addr, &lost, "text/plain", "", b"x").0, 503);
    assert_eq!(
        post(a.addr, &kept, "text/plain", "", b"4"),
        (202, "{\"seq\":4}".into())
    );
    loop {
        let m = sub.recv();
        if m["type"] == "message" && m["topic"] == kept.as_str() {
            assert_eq!(m["seq"], 4);
            break;
        }
    }
    let (metrics, _) = http_request(a.addr, b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n");
    let metrics = String::from_utf8_lossy(&metrics.body).to_string();
    assert!(metrics.contains("\nherald_broker_shards 2\n"), "{metrics}");
    assert!(
        metrics.contains("\nherald_broker_shards_up 1\n"),
        "{metrics}"
    );
    assert!(metrics.contains("\nherald_broker_up 0\n"), "{metrics}");
}

#[test]
fn sharded_broker_values_are_validated() {
    for (args, expected) in [
        (
            &["--broker", "redis://127.0.0.1:1,http://127.0.0.1:2"][..],
            "only redis://HOST:PORT URLs",
        ),
        (
            &["--broker", "redis+cluster://127.0.0.1"][..],
            "redis+cluster:// takes HOST:PORT seed nodes",
        ),
        (
            &["--broker", "redis://127.0.0.1:1,redis://127.0.0.1:1/0"][..],
            "listed twice",
        ),
    ] {
        let out = std::process::Command::new(herald_bin())
            .args(args)
            .stdin(std::process::Stdio::null())
            .output()
            .expect("run herald");
        assert!(!out.status.success(), "{args:?} was accepted");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(expected), "{args:?}: {stderr}");
    }
}

#[test]
fn a_slot_resharded_mid_stream_loses_nothing_and_changes_no_epoch() {
    let Some(cluster) = RedisCluster::start_or_skip("the Redis Cluster tests") else {
        return;
    };
    let MidStream {
        mut a,
        b: _b,
        spread,
        topics,
        mut f,
        publisher,
    } = mid_stream(&cluster);
    let (topic, from) = spread[0].clone();
    let to = *cluster
        .masters()
        .iter()
        .find(|&&m| m != from)
        .expect("another master");
    let slot = cluster.keyslot(&topic);
    let epochs: HashMap<String, String> = f
        .state
        .iter()
        .map(|(t, st)| (t.clone(), st.0.clone()))
        .collect();
    // While the publisher goes on: ASK for the keys already moved, TRYAGAIN for a numbering
    // script whose keys are split across the two masters, then MOVED, and Redis ends the
    // node's sharded subscription of the topic's channel.
    cluster.migrate_slot(slot, from, to, Duration::from_millis(60));
    assert_eq!(cluster.master_of_slot(slot), to, "the slot moved");
    follow_to_the_end(&mut f, TOTAL);
    publisher.join().unwrap();
    for t in &topics {
        let (epoch, _, data, gaps) = &f.state[t];
        assert_eq!(*gaps, 0, "{t}: a planned move is no failover");
        assert_eq!(epoch, &epochs[t], "{t}");
        assert_eq!(data, &(1..=TOTAL).collect::<Vec<_>>(), "{t}");
    }
    // The path under test was taken: Redis ended the subscription and the listener
    // resubscribed where the topic lives now, filling what it missed from the log.
    let down = a
        .line_starting("broker: down", Duration::from_secs(5))
        .expect("node a's listener saw the slot move");
    assert!(down.contains("ended the subscription"), "{down}");
    // The topic's log moved with it: a late subscriber recovers from the new master.
    let last = f.state[&topic].1;
    let mut late = V1::connect(a.addr);
    let s = late.subscribe(
        9,
        json!([{"topic": topic, "since": {"epoch": epochs[&topic], "seq": last - 3}}]),
    );
    assert_eq!(s["type"], "subscribed", "{s}");
    for k in 0..3 {
        let m = late.expect("message");
        assert_eq!(m["seq"].as_u64(), Some(last - 2 + k), "{m}");
    }
}
