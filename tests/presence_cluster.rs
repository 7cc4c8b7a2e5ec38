//! Presence across nodes with a real Redis (`--broker`): three nodes' subscribers add up
//! in every node's answer (`herald.v1` `presence` and `GET /topics/<topic>`), member lists
//! span the nodes, and a node killed with SIGKILL loses its members within the documented
//! bound (`cluster::presence::TTL`, 5 s after the kill). Join/leave events made on one node
//! reach presence subscribers on every node at the same place among the topic's messages,
//! with one Redis, independent instances and a Redis Cluster.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use testkit::presence::{read_in_order, seen_item, Expected, Member, Seen};
use testkit::redis_cluster::RedisCluster;
use testkit::redis_server::Redis;
use testkit::v1::V1;
use testkit::*;

/// The documented bound: a killed node's hash expires at most 5 s after its last refresh.
const TTL: Duration = Duration::from_secs(5);

fn node(redis: &Redis) -> Server {
    node_on(&redis.url())
}

fn node_on(broker: &str) -> Server {
    Server::start_node(broker, &["--presence", "room/*"])
}

fn presence(client: &mut V1, id: u64, topic: &str) -> Value {
    client.send(json!({"op": "presence", "id": id, "topic": topic}));
    let reply = client.expect("presence");
    assert_eq!(reply["id"], id);
    reply
}

/// Asks until the count is `n`; returns the reply and when it first said so.
fn wait_for(client: &mut V1, topic: &str, n: u64, within: Duration) -> (Value, Instant) {
    let deadline = Instant::now() + within;
    let mut id = 1000;
    loop {
        id += 1;
        let reply = presence(client, id, topic);
        if reply["count"] == n {
            return (reply, Instant::now());
        }
        assert!(
            Instant::now() < deadline,
            "count stayed {} (wanted {n}): {reply}",
            reply["count"]
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn http_count(addr: std::net::SocketAddr, topic: &str) -> Value {
    let request = format!("GET /topics/{topic} HTTP/1.1\r\nHost: x\r\n\r\n");
    let (response, _) = http_request(addr, request.as_bytes());
    assert_eq!(response.status, 200);
    serde_json::from_slice(&response.body).unwrap()
}

/// The node part of each anonymous member id (`"<node>.<worker>.<conn>"`).
fn nodes_of(reply: &Value) -> BTreeSet<String> {
    reply["members"]
        .as_array()
        .expect("members")
        .iter()
        .map(|m| {
            m["conn"]
                .as_str()
                .unwrap()
                .split('.')
                .next()
                .unwrap()
                .to_string()
        })
        .collect()
}

#[test]
fn three_nodes_count_together_and_a_killed_nodes_members_expire() {
    let Some(redis) = Redis::start_or_skip("the presence cluster test") else {
        return;
    };
    let nodes: Vec<Server> = (0..3).map(|_| node(&redis)).collect();
    let mut clients: Vec<Vec<V1>> = Vec::new();
    for (i, n) in nodes.iter().enumerate() {
        let mut here = Vec::new();
        for _ in 0..2 + i {
            let mut c = V1::connect(n.addr);
            c.subscribe(1, json!(["room/1", "lobby"]));
            here.push(c);
        }
        clients.push(here);
    }
    // 2 + 3 + 4 subscribers; a node's figures reach Redis within about two seconds.
    let mut asker = V1::connect(nodes[0].addr);
    let (reply, _) = wait_for(&mut asker, "room/1", 9, Duration::from_secs(20));
    let members = reply["members"].as_array().unwrap();
    assert_eq!(members.len(), 9, "{reply}");
    assert_eq!(
        nodes_of(&reply).len(),
        3,
        "members of all three nodes: {reply}"
    );
    let ids: BTreeSet<&str> = members
        .iter()
        .map(|m| m["conn"].as_str().unwrap())
        .collect();
    assert_eq!(ids.len(), 9, "ids are unique across nodes");
    // A topic outside --presence: counted cluster-wide, no list; the HTTP count on
    // another node agrees.
    let mut other = V1::connect(nodes[1].addr);
    let (lobby, _) = wait_for(&mut other, "lobby", 9, Duration::from_secs(20));
    assert!(lobby.get("members").is_none(), "{lobby}");
    let deadline = Instant::now() + Duration::from_secs(20);
    while http_count(nodes[2].addr, "room/1")["subscribers"] != 9 {
        assert!(Instant::now() < deadline, "HTTP count never reached 9");
        std::thread::sleep(Duration::from_millis(100));
    }
    // Events only where --presence lists the topic, as on one node.
    asker.send_subscribe(7, json!([{"topic": "lobby", "presence": true}]));
    let e = asker.expect("error");
    assert_eq!(e["code"], "presence_off", "{e}");

    // Leaving on one node shows on the others.
    clients[1].truncate(1);
    wait_for(&mut asker, "room/1", 7, Duration::from_secs(20));

    // Kill the node with 4 members: gone from every answer within the TTL.
    nodes[2].signal(nix::sys::signal::Signal::SIGKILL);
    let killed = Instant::now();
    let (reply, gone) = wait_for(&mut asker, "room/1", 3, TTL + Duration::from_secs(10));
    let after = gone.duration_since(killed);
    assert!(
        after <= TTL + Duration::from_secs(3),
        "the killed node's members lasted {after:?} (bound {TTL:?}, plus slack for a loaded box)"
    );
    assert_eq!(nodes_of(&reply).len(), 2, "{reply}");
    // And it stays there (the survivors keep refreshing theirs).
    std::thread::sleep(TTL + Duration::from_secs(1));
    assert_eq!(presence(&mut asker, 1, "room/1")["count"], 3);
    assert_eq!(http_count(nodes[1].addr, "room/1")["subscribers"], 3);
    drop(clients);
}

/// The node part of an anonymous member id.
fn node_of(conn: &str) -> &str {
    conn.split('.').next().unwrap()
}

/// The next `n` items `c` receives (every member here is anonymous: it has a `conn`).
fn items(c: &mut V1, n: usize) -> Vec<Seen> {
    (0..n).map(|_| seen_item(&c.recv(), Member::Conn)).collect()
}

fn published(c: &mut V1, id: u64, topic: &str, data: &str) -> u64 {
    c.publish(id, topic, data);
    let p = c.expect("published");
    assert_eq!(p["id"], id, "{p}");
    p["seq"].as_u64().unwrap()
}

/// Three nodes: presence subscribers on nodes 0 and 2, everything else on node 1. A join
/// made on node 1 between two messages reaches both at that place; so does a leave; a
/// plain subscriber sees contiguous numbers and no event; nobody gets its own join. Then
/// `messages` published from two nodes while `churn` clients per node come and go.
fn events_cross_nodes_in_order(broker: &str, topic: &str, messages: u64, churn: usize) {
    let nodes: Vec<Server> = (0..3).map(|_| node_on(broker)).collect();
    let mut a = V1::connect(nodes[0].addr);
    let s = a.subscribe(1, json!([{"topic": topic, "presence": true}]));
    assert_eq!(s["seq"], 0, "{s}");
    let mut c = V1::connect(nodes[2].addr);
    let s = c.subscribe(1, json!([{"topic": topic, "presence": true}]));
    assert_eq!(s["seq"], 0, "{s}");
    // A hears C's join (made on node 2); C does not hear its own.
    let c_join = seen_item(&a.expect("join"), Member::Conn);
    assert_eq!(c_join.1, 0, "{c_join:?}");
    let plain = V1::connect(nodes[1].addr);
    let mut plain = plain;
    plain.subscribe(1, json!([topic]));
    let mut publisher = V1::connect(nodes[1].addr);
    let m1 = published(&mut publisher, 1, topic, "m1");
    // Subscribed on node 1 after m1 and before m2: its join is placed by the time its
    // `subscribed` comes back.
    let mut joiner = V1::connect(nodes[1].addr);
    let s = joiner.subscribe(1, json!([topic]));
    assert_eq!(s["seq"], m1, "{s}");
    let m2 = published(&mut publisher, 2, topic, "m2");
    assert_eq!(m2, m1 + 1);
    let first_a = items(&mut a, 4);
    let plain_join = &first_a[0];
    assert_eq!(first_a[0].0, "join", "{first_a:?}");
    assert_eq!(
        first_a[1],
        ("message".into(), m1, "m1".into()),
        "{first_a:?}"
    );
    assert_eq!(first_a[2].0, "join", "{first_a:?}");
    assert_eq!(first_a[2].1, m1, "the join is placed after m1: {first_a:?}");
    assert_eq!(
        first_a[3],
        ("message".into(), m2, "m2".into()),
        "{first_a:?}"
    );
    let joined = first_a[2].2.clone();
    assert_ne!(joined, plain_join.2, "two members");
    assert_eq!(node_of(&joined), node_of(&plain_join.2), "both on node 1");
    assert_ne!(node_of(&joined), node_of(&c_join.2), "node 1 is not node 2");
    // C on node 2 saw the same, from its start.
    assert_eq!(items(&mut c, 4), first_a, "one order on every node");

    // The joiner leaves; once A has the leave, m3 follows it everywhere.
    joiner.send(json!({"op": "unsubscribe", "id": 2, "topics": [topic]}));
    while joiner.recv()["type"] != "unsubscribed" {}
    let leave = seen_item(&a.expect("leave"), Member::Conn);
    assert_eq!(leave, ("leave".into(), m2, joined.clone()), "{leave:?}");
    let m3 = published(&mut publisher, 3, topic, "m3");
    assert_eq!(
        items(&mut a, 1),
        vec![("message".into(), m3, "m3".into())],
        "nothing else: no event of A's own"
    );
    assert_eq!(
        items(&mut c, 2),
        vec![leave, ("message".into(), m3, "m3".into())]
    );
    // The plain subscriber: the three messages with contiguous numbers, no event.
    let plain_items = items(&mut plain, 3);
    let seqs: Vec<u64> = plain_items.iter().map(|i| i.1).collect();
    assert_eq!(seqs, vec![m1, m2, m3], "{plain_items:?}");
    assert!(
        plain_items.iter().all(|i| i.0 == "message"),
        "{plain_items:?}"
    );

    // Busy: two nodes publish while clients come and go on all three; A and C see one
    // list, every message once in order, every event right after the message it names.
    let churners = 3 * churn as u64;
    let churn: Vec<_> = (0..3)
        .map(|n| {
            let addr = nodes[n].addr;
            let topic = topic.to_string();
            std::thread::spawn(move || {
                for i in 0..churn {
                    let mut c = V1::connect(addr);
                    c.subscribe(1, json!([topic]));
                    if i % 2 == 0 {
                        c.send(json!({"op": "unsubscribe", "id": 2, "topics": [topic]}));
                        while c.recv()["type"] != "unsubscribed" {}
                    } else {
                        drop(c);
                    }
                }
            })
        })
        .collect();
    let mut other = V1::connect(nodes[0].addr);
    for i in 0..messages / 2 {
        publisher.publish(10 + i, topic, &format!("p{i}"));
        other.publish(10 + i, topic, &format!("o{i}"));
    }
    for _ in 0..messages / 2 {
        publisher.expect("published");
        other.expect("published");
    }
    for t in churn {
        t.join().unwrap();
    }
    let expected = Expected {
        messages,
        joins: churners,
        leaves: churners,
    };
    let lists: Vec<Vec<Seen>> = [&mut a, &mut c]
        .into_iter()
        .map(|w| read_in_order(w, m3, expected, Member::Conn))
        .collect();
    assert_eq!(lists[0], lists[1], "nodes 0 and 2 saw one order");
    let plain_items = items(&mut plain, messages as usize);
    let seqs: Vec<u64> = plain_items.iter().map(|i| i.1).collect();
    assert_eq!(seqs, (m3 + 1..=m3 + messages).collect::<Vec<_>>());
    // Every event was placed once and none was lost on the way, as the nodes count them.
    let placed: u64 = nodes
        .iter()
        .map(|n| metric(n.addr, "herald_broker_presence_events_total"))
        .sum();
    // A, C, plain, joiner (join + leave), the churners (join + leave).
    assert_eq!(
        placed,
        1 + 1 + 1 + 2 + 2 * churners,
        "events placed in Redis"
    );
    for n in &nodes {
        assert_eq!(
            metric(n.addr, "herald_broker_presence_events_dropped_total"),
            0
        );
    }
}

/// A counter of `GET /metrics`.
fn metric(addr: std::net::SocketAddr, name: &str) -> u64 {
    let (response, _) = http_request(addr, b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(response.status, 200);
    let text = String::from_utf8_lossy(&response.body).into_owned();
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{name} ")))
        .unwrap_or_else(|| panic!("{name} missing"))
        .trim()
        .parse()
        .unwrap()
}

#[test]
fn join_and_leave_events_cross_nodes_in_the_topics_order() {
    let Some(redis) = Redis::start_or_skip("the presence cluster test") else {
        return;
    };
    events_cross_nodes_in_order(&redis.url(), "room/1", 200, 4);
}

#[test]
fn join_and_leave_events_cross_nodes_on_independent_instances() {
    let Some(r1) = Redis::start_or_skip("the presence cluster test") else {
        return;
    };
    let Some(r2) = Redis::start_or_skip("the presence cluster test") else {
        return;
    };
    let broker = format!("{},{}", r1.url(), r2.url());
    // A topic on each instance (as the nodes route them: rendezvous hashing).
    use herald::cluster::shard::{instance_name, shard_of};
    let names = [instance_name(&r1.url()), instance_name(&r2.url())];
    let on = |shard: usize| {
        (0..)
            .map(|i| format!("room/{i}"))
            .find(|t| shard_of(t, &names) == shard)
            .unwrap()
    };
    let (first, second) = (on(0), on(1));
    events_cross_nodes_in_order(&broker, &first, 200, 4);
    events_cross_nodes_in_order(&broker, &second, 200, 4);
    let has = |r: &Redis, topic: &str| -> bool {
        redis::cmd("EXISTS")
            .arg(format!("herald:{{{topic}}}:events"))
            .query(&mut r.client())
            .unwrap()
    };
    assert!(
        has(&r1, &first) && !has(&r2, &first),
        "{first} on the first instance"
    );
    assert!(
        has(&r2, &second) && !has(&r1, &second),
        "{second} on the second"
    );
}

#[test]
fn join_and_leave_events_cross_nodes_on_a_redis_cluster() {
    let Some(cluster) = RedisCluster::start_or_skip("the presence Redis Cluster test") else {
        return;
    };
    events_cross_nodes_in_order(&cluster.url(), "room/1", 200, 4);
}

/// Joins met while the node's channel lags far behind Redis (thousands of messages in
/// flight): the join's catch-up takes what Redis already numbered from the channel, not from
/// the log, so the events between those messages (which the log does not keep) still reach
/// every presence subscriber in their place. (Catching up from the log here ended the
/// topic's subscriptions with `history_gap` once the lag passed `--broker-history`.)
#[test]
fn events_keep_their_place_when_joins_meet_a_lagging_channel() {
    let Some(redis) = Redis::start_or_skip("the presence cluster test") else {
        return;
    };
    events_cross_nodes_in_order(&redis.url(), "room/1", 4000, 20);
}
