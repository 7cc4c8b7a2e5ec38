//! Presence across nodes with a real Redis (`--broker`): three nodes' subscribers add up
//! in every node's answer (`herald.v1` `presence` and `GET /topics/<topic>`), member lists
//! span the nodes, and a node killed with SIGKILL loses its members within the documented
//! bound (`cluster::presence::TTL`, 5 s after the kill).

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use testkit::redis_server::Redis;
use testkit::v1::V1;
use testkit::*;

/// The documented bound: a killed node's hash expires at most 5 s after its last refresh.
const TTL: Duration = Duration::from_secs(5);

fn node(redis: &Redis) -> Server {
    let url = redis.url();
    let args = ["--threads", "2", "--broker", &url, "--presence", "room/*"];
    let mut server = Server::start(&args);
    assert!(
        server
            .wait_prefix("broker: up", Duration::from_secs(10))
            .is_some(),
        "node did not reach Redis; stdout {:?} stderr {}",
        server.stdout(),
        server.stderr_text()
    );
    server
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
    // Join/leave events are not carried across nodes: refused with its code.
    asker.send_subscribe(7, json!([{"topic": "room/1", "presence": true}]));
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
