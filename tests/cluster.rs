//! Cluster mode (`--broker redis://…`) over real sockets with a real `redis-server`: several
//! Herald processes share topics through Redis with one order and one numbering, a node
//! subscribes in Redis only to topics it has subscribers for, a client of a killed node
//! recovers on another without a gap, and Redis faults are handled as documented in
//! docs/protocol.md ("Cluster mode").
//!
//! Each test starts its own `redis-server` on a free loopback port (no persistence). Without
//! the binary the tests say so loudly and pass locally; with `CI=true` a missing binary is a
//! failure (`.ci/run` installs it).

use std::process::{Command, Stdio};
use std::thread;
use std::time::Duration;

use serde_json::{json, Value};
use testkit::redis_server::Redis;
use testkit::v1::V1;
use testkit::*;

/// How many nodes listen to `topic`'s channel.
fn listeners_of(redis: &Redis, topic: &str) -> u64 {
    let (_, n): (String, u64) = redis::cmd("PUBSUB")
        .arg("NUMSUB")
        .arg(format!("herald:{{{topic}}}"))
        .query(&mut redis.client())
        .expect("PUBSUB NUMSUB");
    n
}

/// A Herald node of the cluster, started and connected to Redis.
fn node(redis: &Redis, extra: &[&str]) -> Server {
    Server::start_node(&redis.url(), extra)
}

fn message(v: &Value) -> (u64, String) {
    assert_eq!(v["type"], "message", "{v}");
    (
        v["seq"].as_u64().expect("seq"),
        v["data"].as_str().expect("data").to_string(),
    )
}

#[test]
fn three_nodes_deliver_one_order_with_one_numbering() {
    let Some(redis) = Redis::start_or_skip("the cluster tests") else {
        return;
    };
    let nodes: Vec<Server> = (0..3).map(|_| node(&redis, &[])).collect();
    const PER: usize = 300;
    // Two subscribers on every node.
    let mut subscribers = Vec::new();
    for n in &nodes {
        for _ in 0..2 {
            let mut c = V1::connect(n.addr);
            let s = c.subscribe(1, json!(["room"]));
            assert_eq!(s["seq"], 0, "{s}");
            subscribers.push(c);
        }
    }
    // Every node listens to the topic's channel, and to nothing else.
    assert_eq!(listeners_of(&redis, "room"), 3);
    let readers: Vec<_> = subscribers
        .into_iter()
        .map(|mut c| {
            thread::spawn(move || {
                let got: Vec<(u64, String)> = (0..3 * PER).map(|_| message(&c.recv())).collect();
                (got, c)
            })
        })
        .collect();
    // One publisher per node, all at once.
    let publishers: Vec<_> = nodes
        .iter()
        .enumerate()
        .map(|(i, n)| {
            let addr = n.addr;
            thread::spawn(move || {
                let mut p = V1::connect(addr);
                for k in 0..PER {
                    p.publish(k as u64, "room", &format!("{i}:{k}"));
                }
                (0..PER)
                    .map(|k| {
                        let v = p.expect("published");
                        assert_eq!(v["id"], k as u64, "acks come in request order");
                        v["seq"].as_u64().expect("a number")
                    })
                    .collect::<Vec<u64>>()
            })
        })
        .collect();
    let acks: Vec<Vec<u64>> = publishers.into_iter().map(|h| h.join().unwrap()).collect();
    let mut results: Vec<(Vec<(u64, String)>, V1)> =
        readers.into_iter().map(|h| h.join().unwrap()).collect();
    let first = results[0].0.clone();
    for (other, _) in &results[1..] {
        assert_eq!(
            other, &first,
            "every subscriber on every node sees one order"
        );
    }
    let seqs: Vec<u64> = first.iter().map(|m| m.0).collect();
    assert_eq!(seqs, (1..=(3 * PER) as u64).collect::<Vec<_>>());
    for (i, acked) in acks.iter().enumerate() {
        // Each publisher's messages keep its order, under the number it was told.
        let mine: Vec<&(u64, String)> = first
            .iter()
            .filter(|m| m.1.starts_with(&format!("{i}:")))
            .collect();
        assert_eq!(mine.len(), PER);
        for (k, (m, ack)) in mine.iter().zip(acked).enumerate() {
            assert_eq!(m.1, format!("{i}:{k}"));
            assert_eq!(m.0, *ack, "the acked number is the delivered one");
        }
    }
    // No subscriber anywhere: no node listens, yet the message is numbered and kept.
    assert_eq!(
        post(nodes[0].addr, "nobody", "text/plain", "", b"x"),
        (202, "{\"seq\":1}".into())
    );
    assert_eq!(listeners_of(&redis, "nobody"), 0);
    // The last subscribers of a node leave: that node stops listening.
    for (_, c) in results.drain(4..) {
        drop(c);
    }
    assert!(
        wait_until(Duration::from_secs(5), || listeners_of(&redis, "room") == 2),
        "node 3 still listens: {}",
        listeners_of(&redis, "room")
    );
    // And a rewind on any node comes from the shared log.
    let mut late = V1::connect(nodes[2].addr);
    let s = late.subscribe(2, json!([{"topic": "room", "rewind": 3}]));
    assert_eq!(s["replayed"], 3);
    let replay: Vec<(u64, String)> = (0..3).map(|_| message(&late.recv())).collect();
    assert_eq!(replay, first[3 * PER - 3..].to_vec());
}

#[test]
fn a_subscriber_of_a_killed_node_recovers_on_another_node_without_a_gap() {
    let Some(redis) = Redis::start_or_skip("the cluster tests") else {
        return;
    };
    let mut a = node(&redis, &[]);
    let b = node(&redis, &[]);
    const TOTAL: u64 = 3000;
    let mut sub = V1::connect(a.addr);
    let s = sub.subscribe(1, json!(["feed"]));
    let epoch = s["epoch"].as_str().expect("epoch").to_string();
    let b_addr = b.addr;
    let publisher = thread::spawn(move || {
        let mut p = V1::connect(b_addr);
        for k in 1..=TOTAL {
            p.publish(k, "feed", &k.to_string());
            // Deliberate pacing, so that the publishing goes on while the subscriber
            // rejoins; nothing is waited for.
            if k % 10 == 0 {
                thread::sleep(Duration::from_millis(4));
            }
        }
        for _ in 1..=TOTAL {
            p.expect("published");
        }
    });
    let mut seen = Vec::new();
    while seen.len() < 500 {
        seen.push(message(&sub.recv()).0);
    }
    a.signal(nix::sys::signal::Signal::SIGKILL);
    a.wait_exit(Duration::from_secs(5)).expect("node a died");
    // Whatever was already on the wire still counts; then the socket is gone.
    while let Some(v) = sub.try_recv() {
        seen.push(message(&v).0);
    }
    let last = *seen.last().expect("some messages");
    assert!(last < TOTAL, "the kill came too late to test anything");
    let mut again = V1::connect(b.addr);
    let s = again.subscribe(
        2,
        json!([{"topic": "feed", "since": {"epoch": epoch, "seq": last}}]),
    );
    assert_eq!(
        s["epoch"],
        epoch.as_str(),
        "one epoch for the whole cluster"
    );
    while *seen.last().unwrap() < TOTAL {
        seen.push(message(&again.recv()).0);
    }
    assert_eq!(
        seen,
        (1..=TOTAL).collect::<Vec<_>>(),
        "no gap, no duplicate"
    );
    publisher.join().unwrap();
}

#[test]
fn a_dropped_broker_connection_is_filled_from_the_log() {
    let Some(redis) = Redis::start_or_skip("the cluster tests") else {
        return;
    };
    let mut a = node(&redis, &[]);
    let b = node(&redis, &[]);
    const TOTAL: u64 = 2000;
    let mut sub = V1::connect(a.addr);
    sub.subscribe(1, json!(["ticks"]));
    let mut sub_b = V1::connect(b.addr);
    sub_b.subscribe(1, json!(["ticks"]));
    let b_addr = b.addr;
    let publisher = thread::spawn(move || {
        let mut p = V1::connect(b_addr);
        for k in 1..=TOTAL {
            p.publish(k, "ticks", &k.to_string());
            // Deliberate pacing, so that the publishing goes on while the listening
            // connections are cut; nothing is waited for.
            if k % 10 == 0 {
                thread::sleep(Duration::from_millis(4));
            }
        }
        (1..=TOTAL)
            .filter(|_| p.expect("published")["seq"].is_u64())
            .count()
    });
    let mut seen = Vec::new();
    let mut killed = 0;
    while seen.len() < TOTAL as usize {
        seen.push(message(&sub.recv()).0);
        if seen.len() == 300 {
            // Every node's listening connection is cut; messages go on being numbered.
            killed = redis::cmd("CLIENT")
                .arg("KILL")
                .arg("TYPE")
                .arg("pubsub")
                .query::<u64>(&mut redis.client())
                .expect("CLIENT KILL");
        }
    }
    assert_eq!(killed, 2, "both nodes' listeners were cut");
    assert_eq!(seen, (1..=TOTAL).collect::<Vec<_>>(), "the hole was filled");
    let seen_b: Vec<u64> = (0..TOTAL).map(|_| message(&sub_b.recv()).0).collect();
    assert_eq!(seen_b, seen, "on the publishing node too");
    assert_eq!(publisher.join().unwrap(), TOTAL as usize);
    let line = a
        .line_starting("broker: up again", Duration::from_secs(5))
        .expect("the reconnect is logged");
    assert!(line.contains("0 topic(s) with a gap"), "{line}");
}

#[test]
fn a_redis_restart_is_reported_and_ends_streams_explicitly() {
    let Some(mut redis) = Redis::start_or_skip("the cluster tests") else {
        return;
    };
    let mut a = node(&redis, &["--stats-interval", "100ms"]);
    let mut b = node(&redis, &[]);
    let mut raw = RawWs::connect(a.addr, "news");
    raw.set_read_timeout(IO_TIMEOUT);
    // The raw subscriber's interest has reached node a's bridge once Redis counts a listener
    // of the topic: from then on a publish anywhere reaches it.
    assert!(
        wait_until(Duration::from_secs(10), || listeners_of(&redis, "news")
            == 1),
        "node a did not subscribe to news in Redis"
    );
    let mut sub = V1::connect(a.addr);
    let s = sub.subscribe(1, json!(["news"]));
    let old_epoch = s["epoch"].as_str().unwrap().to_string();
    for k in 1..=5 {
        assert_eq!(
            post(b.addr, "news", "text/plain", "", b"n"),
            (202, format!("{{\"seq\":{k}}}"))
        );
        assert_eq!(message(&sub.recv()).0, k);
        assert_eq!(raw.expect_message().1, b"n");
    }

    redis.kill();
    assert!(a
        .wait_prefix("broker: down", Duration::from_secs(5))
        .is_some());
    assert!(b
        .wait_prefix("broker: down", Duration::from_secs(5))
        .is_some());
    // Publishing while Redis is away is refused, never pretended.
    assert_eq!(post(b.addr, "news", "text/plain", "", b"lost").0, 503);
    let mut p = V1::connect(a.addr);
    p.publish(7, "news", "lost");
    let refused = p.expect("error");
    assert_eq!(refused["code"], "unavailable", "{refused}");
    // So is a new subscription (the existing ones stay).
    p.send(json!({"op": "subscribe", "id": 8, "topics": ["other"]}));
    let refused = p.expect("error");
    assert_eq!(
        (&refused["code"], &refused["topic"]),
        (&json!("unavailable"), &json!("other")),
        "{refused}"
    );
    // And a new raw path connection: a 503, not a 101 after which nothing would come.
    let upgrade = testkit::http::upgrade_request("/other", "dGhlIHNhbXBsZSBub25jZQ==", &[]);
    let (response, _) = testkit::http::http_request(a.addr, upgrade.as_bytes());
    assert_eq!(response.status, 503, "{response:?}");
    // And a new SSE stream (whose head waits for its joins in cluster mode): it ends at
    // once, saying why, after `retry:` (so an EventSource reconnects; a 503 would make it
    // give up for good).
    let mut ended = testkit::sse::SseClient::connect(a.addr, "/other", &[]);
    assert_eq!(ended.status, 200, "{}", ended.head);
    let mut items = Vec::new();
    while let Some(item) = ended.next_item() {
        items.push(item);
    }
    assert!(
        matches!(items.as_slice(), [testkit::sse::SseItem::Retry(_), testkit::sse::SseItem::Comment(c)] if c.contains("broker is unavailable")),
        "{items:?}"
    );
    let down = a
        .wait_line(Duration::from_secs(5), |l| l.contains("broker=down"))
        .expect("the stats line shows the outage");
    assert!(down.contains("broker_outages=1"), "{down}");
    // ... and so does /metrics.
    let (metrics, _) = http_request(a.addr, b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n");
    let metrics = String::from_utf8_lossy(&metrics.body).to_string();
    assert!(metrics.contains("\nherald_broker_up 0\n"), "{metrics}");
    assert!(
        metrics.contains("\nherald_broker_outages_total 1\n"),
        "{metrics}"
    );
    // The nodes keep serving their connections meanwhile.
    assert_eq!(post(a.addr, "x", "text/plain", "", b"").0, 503);
    let (health, _) = http_request(a.addr, b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(health.status, 200);

    // Redis comes back empty: the topic's numbering lost, so its subscribers are told.
    let _redis = Redis::start_on(redis.port);
    assert!(a
        .wait_prefix("broker: up again", Duration::from_secs(15))
        .is_some());
    let notice = sub.recv();
    assert_eq!(notice["type"], "error", "{notice}");
    assert_eq!(notice["topic"], "news", "{notice}");
    assert_eq!(notice["code"], "epoch_changed", "{notice}");
    assert_eq!(raw.expect_close(), Ok(Some(1012)));
    // Starting over works, under a new epoch; the old one is refused explicitly.
    let s = sub.subscribe(2, json!(["news"]));
    let new_epoch = s["epoch"]
        .as_str()
        .unwrap_or_else(|| panic!("no epoch in {s}"));
    assert_ne!(new_epoch, old_epoch);
    assert!(b
        .wait_prefix("broker: up", Duration::from_secs(15))
        .is_some());
    // Publishing works again as soon as the node is back (no leftover backoff).
    let (status, body) = post(b.addr, "news", "text/plain", "", b"fresh");
    assert_eq!((status, body.as_str()), (202, "{\"seq\":1}"));
    assert_eq!(message(&sub.recv()), (1, "fresh".to_string()));
    let mut late = V1::connect(b.addr);
    late.send(json!({"op": "subscribe", "id": 3, "topics": [{"topic": "news", "since": {"epoch": old_epoch, "seq": 5}}]}));
    assert_eq!(late.expect("error")["code"], "epoch_changed");
}

#[test]
fn broker_flags_are_validated() {
    for (args, expected) in [
        (
            &["--broker", "http://127.0.0.1:6379"][..],
            "only redis://HOST:PORT URLs",
        ),
        (
            &["--broker", "redis://127.0.0.1:6379", "--history", "10"][..],
            "use --broker-history",
        ),
        (
            &[
                "--broker",
                "redis://127.0.0.1:6379",
                "--broker-history",
                "0",
            ][..],
            "--broker-history must be at least 1",
        ),
    ] {
        let out = Command::new(herald_bin())
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("run herald");
        assert!(!out.status.success(), "{args:?} was accepted");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(expected), "{args:?}: {stderr}");
    }
}

#[test]
fn a_hole_the_log_cannot_fill_is_reported_to_every_subscriber() {
    let Some(redis) = Redis::start_or_skip("the cluster tests") else {
        return;
    };
    let mut a = node(&redis, &["--stats-interval", "100ms"]);
    let mut raw = RawWs::connect(a.addr, "g");
    raw.set_read_timeout(IO_TIMEOUT);
    // The raw subscriber's interest has reached node a's bridge once Redis counts a listener
    // of the topic: from then on a publish anywhere reaches it.
    assert!(
        wait_until(Duration::from_secs(10), || listeners_of(&redis, "g") == 1),
        "node a did not subscribe to g in Redis"
    );
    let mut sub = V1::connect(a.addr);
    let epoch = sub.subscribe(1, json!(["g"]))["epoch"]
        .as_str()
        .unwrap()
        .to_string();
    for k in 1..=3 {
        assert_eq!(
            post(a.addr, "g", "text/plain", "", b"m"),
            (202, format!("{{\"seq\":{k}}}"))
        );
        assert_eq!(message(&sub.recv()).0, k);
        assert_eq!(raw.expect_message().1, b"m");
    }
    let mut r = redis.client();
    // Garbage on the channel is skipped and counted, never delivered.
    let _: u64 = redis::cmd("PUBLISH")
        .arg("herald:{g}")
        .arg("not a herald message")
        .query(&mut r)
        .unwrap();
    // A message numbered 10 while the node has delivered 3, and the log has no 4..9: the
    // node must not deliver 10 as if nothing were missing.
    let forged = format!("{epoch} 10 00000000 0 0\ntten");
    let _: u64 = redis::cmd("PUBLISH")
        .arg("herald:{g}")
        .arg(forged)
        .query(&mut r)
        .unwrap();
    let notice = sub.recv();
    assert_eq!(
        (
            &notice["type"],
            &notice["topic"],
            &notice["code"],
            &notice["id"]
        ),
        (
            &json!("error"),
            &json!("g"),
            &json!("history_gap"),
            &Value::Null
        ),
        "{notice}"
    );
    assert_eq!(raw.expect_close(), Ok(Some(1012)));
    // The subscription has ended: an unsubscribe says so.
    sub.send(json!({"op": "unsubscribe", "id": 2, "topics": ["g"]}));
    assert_eq!(sub.expect("error")["code"], "not_subscribed");
    assert!(a
        .line_starting("broker: gap on topic g", Duration::from_secs(5))
        .is_some());
    let stats = a
        .wait_line(Duration::from_secs(5), |l| l.contains("broker_gaps=1"))
        .expect("the gap is counted");
    assert!(stats.contains("broker_malformed=1"), "{stats}");
}

/// The numbering script against a real Redis: a topic numbered by one process is not
/// numbered by another until the caller decides (failover), and the decision keeps or ends
/// the epoch before any number is given, once.
#[test]
fn a_topics_home_is_settled_before_another_process_numbers_it() {
    use herald::cluster::script::{Keys, PUBLISH};
    let Some(redis) = Redis::start_or_skip("the cluster tests") else {
        return;
    };
    let mut c = redis.client();
    let keys = Keys::of("homed");
    let publish = |c: &mut redis::Connection, home: &str, decision: &str, epoch: &str| {
        redis::cmd("EVAL")
            .arg(PUBLISH)
            .arg(4)
            .arg(&keys.seq)
            .arg(&keys.log)
            .arg(&keys.epoch)
            .arg(&keys.home)
            .arg(epoch)
            .arg(100)
            .arg("0 0 0")
            .arg("tbody")
            .arg(&keys.channel)
            .arg(home)
            .arg(decision)
            .query::<i64>(c)
    };
    let epoch = |c: &mut redis::Connection| -> String {
        redis::cmd("GET").arg(&keys.epoch).query(c).unwrap()
    };
    assert_eq!(publish(&mut c, "r1 a:1", "", "e1").unwrap(), 1);
    assert_eq!(publish(&mut c, "r1 a:1", "", "e9").unwrap(), 2);
    assert_eq!(epoch(&mut c), "e1");
    // Another process: nothing numbered, the old home named.
    let refused = publish(&mut c, "r2 b:1", "", "e2").unwrap_err();
    assert_eq!(refused.code(), Some("HOMELESS"), "{refused}");
    assert_eq!(refused.detail(), Some("r1 a:1"));
    let seq: u64 = redis::cmd("GET").arg(&keys.seq).query(&mut c).unwrap();
    assert_eq!(seq, 2);
    // Handed over: same epoch, numbering goes on.
    assert_eq!(publish(&mut c, "r2 b:1", "adopt r1 a:1", "e2").unwrap(), 3);
    assert_eq!(epoch(&mut c), "e1");
    // A decision about an old home that is not the topic's any more is no decision.
    let refused = publish(&mut c, "r3 c:1", "retire r1 a:1", "e3").unwrap_err();
    assert_eq!(refused.detail(), Some("r2 b:1"));
    // Not handed over: a new life before the first number, the log emptied of the old one.
    assert_eq!(publish(&mut c, "r3 c:1", "retire r2 b:1", "e3").unwrap(), 1);
    assert_eq!(epoch(&mut c), "e3");
    let logged: u64 = redis::cmd("XLEN").arg(&keys.log).query(&mut c).unwrap();
    assert_eq!(logged, 1);
}

/// Reads the next data message, or `None` after `wait` without one.
fn data_within(ws: &mut Ws, wait: Duration) -> Option<tungstenite::Message> {
    ws.get_ref().set_read_timeout(Some(wait)).expect("timeout");
    loop {
        match ws.read() {
            Ok(m) if m.is_text() || m.is_binary() => return Some(m),
            Ok(_) => continue,
            Err(e) if is_timeout(&e) => return None,
            Err(e) => panic!("subscriber failed: {e}"),
        }
    }
}

#[test]
fn a_post_on_another_node_right_after_the_101_reaches_the_new_path_subscriber() {
    let Some(redis) = Redis::start_or_skip("the cluster tests") else {
        return;
    };
    const ROUNDS: usize = 200;
    let a = node(&redis, &["--threads", "2"]);
    let b = node(&redis, &[]);
    let busy = BusyCores::start(2);
    let mut missed = Vec::new();
    for round in 0..ROUNDS {
        let topic = format!("fresh-{round}");
        let mut sub = connect(a.addr, &topic);
        let (status, body) = testkit::http::post(b.addr, &topic, "text/plain", "", b"first");
        assert_eq!(status, 202, "round {round}: {body}");
        match data_within(&mut sub, Duration::from_secs(2)) {
            Some(m) => assert_eq!(m, tungstenite::Message::text("first"), "round {round}"),
            None => missed.push((round, body)),
        }
    }
    drop(busy);
    assert!(
        missed.is_empty(),
        "{} of {ROUNDS} posts on node b never reached the path subscriber that node a had \
         answered 101 (round, answer): {missed:?}",
        missed.len()
    );
}

#[test]
fn a_post_on_another_node_right_after_the_head_reaches_the_new_sse_stream() {
    let Some(redis) = Redis::start_or_skip("the cluster tests") else {
        return;
    };
    const ROUNDS: usize = 200;
    let a = node(&redis, &["--threads", "2"]);
    let b = node(&redis, &[]);
    let busy = BusyCores::start(2);
    let mut missed = Vec::new();
    for round in 0..ROUNDS {
        // Every other round a stream of two topics: both must be heard when the head comes.
        let (one, two) = (format!("fresh-{round}"), format!("other-{round}"));
        let target = if round % 2 == 0 {
            format!("/{one}")
        } else {
            format!("/sse?topic={one}&topic={two}")
        };
        let mut sse = testkit::sse::SseClient::connect(a.addr, &target, &[]);
        assert_eq!(sse.status, 200, "{}", sse.head);
        let mut wanted = vec![one.clone()];
        if round % 2 == 1 {
            wanted.push(two.clone());
        }
        for topic in &wanted {
            let (status, body) = testkit::http::post(b.addr, topic, "text/plain", "", b"first");
            assert_eq!(status, 202, "round {round}: {body}");
        }
        // One order per topic; across topics none is promised.
        sse.set_read_timeout(Duration::from_secs(2));
        let mut got = Vec::new();
        while got.len() < wanted.len() {
            match sse.poll_event() {
                Ok(Some((_, event, data))) => {
                    assert_eq!(data, "first", "round {round}: {event}");
                    got.push(event);
                }
                _ => break,
            }
        }
        for topic in wanted.iter().filter(|t| !got.contains(t)) {
            missed.push((round, topic.clone()));
        }
    }
    drop(busy);
    assert!(
        missed.is_empty(),
        "{} posts on node b never reached the SSE stream that node a had answered 200 \
         (round, topic): {missed:?}",
        missed.len()
    );
}

#[test]
fn frames_sent_before_the_101_wait_for_the_join_and_are_published_after_it() {
    let Some(redis) = Redis::start_or_skip("the cluster tests") else {
        return;
    };
    let a = node(&redis, &[]);
    let stream = std::net::TcpStream::connect(a.addr).expect("connect");
    stream.set_read_timeout(Some(IO_TIMEOUT)).expect("timeout");
    let mut raw = RawWs { stream };
    // The upgrade and a first message in one write: the message must not be published
    // before the connection is subscribed (its own echo proves both).
    let mut bytes =
        testkit::http::upgrade_request("/early", "dGhlIHNhbXBsZSBub25jZQ==", &[]).into_bytes();
    bytes.extend_from_slice(&testkit::raw::frame(true, 0, 1, b"early"));
    raw.send(&bytes);
    let head = raw.read_response_head();
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    assert_eq!(raw.expect_message(), (1, b"early".to_vec()));
}
