//! Presence over real sockets: the `herald.v1` `presence` request (counts across workers,
//! member lists with JWT `sub` and anonymous ids, the cap), `join` / `leave` events in the
//! topic's order on every worker, and `GET /topics/<topic>` with its access rules.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::{json, Value};
use testkit::presence::{read_in_order, Expected, Member};
use testkit::v1::V1;
use testkit::*;

const SECRET: &str = "presence-secret-presence-secret!!";

/// Asks for `topic`'s presence on `client` and returns the reply.
fn presence(client: &mut V1, id: u64, topic: &str) -> Value {
    client.send(json!({"op": "presence", "id": id, "topic": topic}));
    let reply = client.expect("presence");
    assert_eq!(reply["id"], id);
    assert_eq!(reply["topic"], topic);
    reply
}

/// The worker of each anonymous member (`"<node>.<worker>.<conn>"`).
fn workers_of(reply: &Value) -> BTreeSet<String> {
    reply["members"]
        .as_array()
        .expect("members")
        .iter()
        .map(|m| {
            let conn = m["conn"].as_str().expect("anonymous member has a conn id");
            conn.split('.').nth(1).unwrap().to_string()
        })
        .collect()
}

/// `GET /topics/<topic>` with extra header lines: status and body.
fn count(addr: SocketAddr, topic: &str, headers: &str) -> (u16, String) {
    let request = format!("GET /topics/{topic} HTTP/1.1\r\nHost: x\r\n{headers}\r\n");
    let (response, _) = http_request(addr, request.as_bytes());
    (
        response.status,
        String::from_utf8_lossy(&response.body).trim().to_string(),
    )
}

/// Polls `GET /topics/<topic>` until it says `n` (other workers' shares may trail a turn).
fn wait_count(addr: SocketAddr, topic: &str, n: u64) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (status, body) = count(addr, topic, "");
        assert_eq!(status, 200, "{body}");
        let v: Value = serde_json::from_str(&body).unwrap();
        if v["subscribers"] == n {
            return;
        }
        assert!(Instant::now() < deadline, "count stayed {body}, wanted {n}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn token(sub: &str, subscribe: &[&str], publish: &[&str]) -> String {
    let exp = jwt::in_an_hour();
    let claims = json!({"sub": sub, "exp": exp, "subscribe": subscribe, "publish": publish});
    jwt::hs256(SECRET, &claims)
}

#[test]
fn counts_and_members_add_up_across_two_workers() {
    let server = Server::start(&["--threads", "2", "--presence", "room/*"]);
    let mut asker = V1::connect(server.addr);
    // Subscribe anonymous clients until both workers have some (the kernel spreads
    // connections by their ports; the member ids say which worker holds each).
    let mut clients = Vec::new();
    let mut reply = Value::Null;
    while clients.len() < 64 {
        for _ in 0..8 {
            let mut c = V1::connect(server.addr);
            c.subscribe(1, json!(["room/a"]));
            clients.push(c);
        }
        reply = presence(&mut asker, clients.len() as u64, "room/a");
        if workers_of(&reply).len() == 2 {
            break;
        }
    }
    let n = clients.len() as u64;
    assert_eq!(
        workers_of(&reply).len(),
        2,
        "clients on both workers: {reply}"
    );
    assert_eq!(reply["count"], n, "{reply}");
    let members = reply["members"].as_array().unwrap();
    assert_eq!(members.len() as u64, n);
    let ids: BTreeSet<&str> = members
        .iter()
        .map(|m| m["conn"].as_str().unwrap())
        .collect();
    assert_eq!(ids.len() as u64, n, "every member once");
    let now_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    for m in members {
        let since = m["since_ms"].as_u64().unwrap();
        assert!(
            since <= now_ms && since + 120_000 > now_ms,
            "connect time {m}"
        );
        assert!(m.get("sub").is_none());
    }
    assert!(reply.get("truncated").is_none());

    // Raw path subscribers count too; the HTTP count agrees.
    let _raw = connect(server.addr, "room/a");
    wait_count(server.addr, "room/a", n + 1);

    // Leaving lowers the count at once on every worker's share.
    for mut c in clients.drain(..4) {
        c.send(json!({"op": "unsubscribe", "id": 9, "topics": ["room/a"]}));
        c.expect("unsubscribed");
    }
    let reply = presence(&mut asker, 500, "room/a");
    assert_eq!(reply["count"], n + 1 - 4, "{reply}");
    // Closed connections leave too.
    drop(clients.drain(..4));
    wait_count(server.addr, "room/a", n + 1 - 8);

    // A topic outside --presence is counted but lists nobody; an unknown topic is 0.
    let mut other = V1::connect(server.addr);
    other.subscribe(1, json!(["lobby"]));
    let reply = presence(&mut asker, 501, "lobby");
    assert_eq!(reply["count"], 1);
    assert!(reply.get("members").is_none(), "{reply}");
    assert_eq!(presence(&mut asker, 502, "nobody")["count"], 0);

    // Bad topics and presence events where the topic has none are refused with their codes.
    asker.send(json!({"op": "presence", "id": 503, "topic": "a b"}));
    let e = asker.expect("error");
    assert_eq!(
        (e["id"].clone(), e["code"].clone()),
        (json!(503), json!("bad_topic"))
    );
    asker.send_subscribe(504, json!([{"topic": "lobby", "presence": true}]));
    let e = asker.expect("error");
    assert_eq!(e["code"], "presence_off", "{e}");
    assert_eq!(e["topic"], "lobby");
    // The connection still works after the refusals.
    assert_eq!(presence(&mut asker, 505, "lobby")["count"], 1);
}

#[test]
fn member_lists_show_the_token_sub_and_are_capped() {
    let server = Server::start(&[
        "--threads",
        "2",
        "--jwt-secret",
        SECRET,
        "--presence",
        "room/**",
        "--presence-max-members",
        "3",
    ]);
    let mut clients = Vec::new();
    for name in ["ann", "bob"] {
        let mut c = V1::connect_with_token(server.addr, &token(name, &["room/x/y"], &[]));
        c.subscribe(1, json!(["room/x/y"]));
        clients.push(c);
    }
    let mut asker = V1::connect_with_token(server.addr, &token("asker", &["room/x/y"], &[]));
    let reply = presence(&mut asker, 1, "room/x/y");
    assert_eq!(reply["count"], 2);
    let subs: BTreeSet<&str> = reply["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            assert!(m.get("conn").is_none(), "{m}");
            m["sub"].as_str().unwrap()
        })
        .collect();
    assert_eq!(subs, BTreeSet::from(["ann", "bob"]));
    assert!(reply.get("truncated").is_none());

    // Over the cap: the count stays exact, the list is cut and says so.
    for i in 0..5 {
        let mut c =
            V1::connect_with_token(server.addr, &token(&format!("u{i}"), &["room/x/y"], &[]));
        c.subscribe(1, json!(["room/x/y"]));
        clients.push(c);
    }
    let reply = presence(&mut asker, 2, "room/x/y");
    assert_eq!(reply["count"], 7, "{reply}");
    assert_eq!(reply["members"].as_array().unwrap().len(), 3, "{reply}");
    assert_eq!(reply["truncated"], true);

    // Presence needs the subscribe grant of the topic.
    asker.send(json!({"op": "presence", "id": 3, "topic": "elsewhere"}));
    assert_eq!(asker.expect("error")["code"], "forbidden");
}

#[test]
fn get_topics_counts_under_the_publish_rules() {
    // The publish key, or a token granting publish on the topic.
    let server = Server::start(&[
        "--threads",
        "2",
        "--publish-key",
        "k3y",
        "--jwt-secret",
        SECRET,
    ]);
    let reader = token("r", &["news"], &[]);
    let mut subs = Vec::new();
    for _ in 0..6 {
        let mut c = V1::connect_with_token(server.addr, &reader);
        c.subscribe(1, json!(["news"]));
        subs.push(c);
    }
    let key = "Authorization: Bearer k3y\r\n";
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (status, body) = count(server.addr, "news", key);
        assert_eq!(status, 200, "{body}");
        if body == r#"{"subscribers":6}"# {
            break;
        }
        assert!(Instant::now() < deadline, "{body}");
    }
    let publisher = format!("Authorization: Bearer {}\r\n", token("p", &[], &["news"]));
    assert_eq!(
        count(server.addr, "news", &publisher),
        (200, r#"{"subscribers":6}"#.into())
    );
    assert_eq!(
        count(server.addr, "empty", key),
        (200, r#"{"subscribers":0}"#.into())
    );
    // Without the credential, with a wrong one, with a token that only subscribes.
    assert_eq!(count(server.addr, "news", "").0, 401);
    assert_eq!(
        count(server.addr, "news", "Authorization: Bearer nope\r\n").0,
        401
    );
    let only_reads = format!("Authorization: Bearer {reader}\r\n");
    assert_eq!(count(server.addr, "news", &only_reads).0, 403);
    // A bad topic.
    assert_eq!(count(server.addr, "a%20b", key).0, 400);
    assert_eq!(count(server.addr, "", key).0, 400);
    // The refusals cost nobody their subscription.
    assert_eq!(
        count(server.addr, "news", key),
        (200, r#"{"subscribers":6}"#.into())
    );
    drop(subs);
}

#[test]
fn joins_and_leaves_come_in_the_topics_order_on_every_worker() {
    let server = Server::start(&["--threads", "2", "--presence", "room/*"]);
    // Presence subscribers until both workers have one (checked with the member ids; the
    // watchers are the topic's only subscribers at that point).
    let mut watchers: Vec<(V1, u64)> = Vec::new();
    let mut asker = V1::connect(server.addr);
    loop {
        let mut w = V1::connect(server.addr);
        let s = w.subscribe(1, json!([{"topic": "room/1", "presence": true}]));
        watchers.push((w, s["seq"].as_u64().unwrap()));
        if watchers.len() >= 2 {
            let reply = presence(&mut asker, watchers.len() as u64, "room/1");
            if workers_of(&reply).len() == 2 {
                break;
            }
        }
        assert!(watchers.len() < 40, "never reached both workers");
    }
    let watched_from = Instant::now();
    // Each watcher hears the later watchers join: drain those first (they are part of the
    // order too, but they are not what this test is about).
    let n = watchers.len();
    for (i, (w, _)) in watchers.iter_mut().enumerate() {
        for _ in i + 1..n {
            assert_eq!(w.expect("join")["type"], "join");
        }
    }

    // Messages and joins/leaves interleaved without waiting for each other.
    let mut publisher = V1::connect(server.addr);
    let churn = std::thread::spawn({
        let addr = server.addr;
        move || {
            for i in 0..10 {
                let mut c = V1::connect(addr);
                c.subscribe(1, json!(["room/1"]));
                if i % 2 == 0 {
                    c.send(json!({"op": "unsubscribe", "id": 2, "topics": ["room/1"]}));
                    // Messages of the topic may come before the answer.
                    while c.recv()["type"] != "unsubscribed" {}
                } else {
                    drop(c); // hangs up: leaving by going away is a leave too
                }
            }
        }
    });
    const MESSAGES: usize = 200;
    for i in 0..MESSAGES {
        publisher.publish(i as u64, "room/1", &format!("m{i}"));
    }
    for _ in 0..MESSAGES {
        publisher.expect("published");
    }
    churn.join().unwrap();

    // Every watcher sees the same list: every message, 10 joins, 10 leaves; each event
    // right where its `after` says (after the message it names).
    let expected = Expected {
        messages: MESSAGES as u64,
        joins: 10,
        leaves: 10,
    };
    let mut lists = Vec::new();
    for (w, start) in &mut watchers {
        lists.push(read_in_order(w, *start, expected, Member::AnyId));
    }
    for list in &lists[1..] {
        assert_eq!(list, &lists[0], "two workers' watchers saw one order");
    }
    // Each churning client's join comes before its leave.
    for (i, item) in lists[0].iter().enumerate() {
        if item.0 == "leave" {
            let joined_before = lists[0][..i]
                .iter()
                .any(|earlier| earlier.0 == "join" && earlier.2 == item.2);
            assert!(joined_before, "leave of {} after its join", item.2);
        }
    }
    assert!(watched_from.elapsed() < Duration::from_secs(120));
}
