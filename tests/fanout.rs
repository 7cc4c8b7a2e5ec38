//! Fan-out semantics: who receives what, in which order, across workers.

use std::collections::BTreeSet;
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::Duration;

use testkit::*;
use tungstenite::{Bytes, Message};

/// Every message on a topic reaches every client of the topic, the sender included.
#[test]
fn message_reaches_every_subscriber_including_sender() {
    let server = Server::start(&["--threads", "1"]);
    let mut a = connect(server.addr, "chat");
    let mut b = connect(server.addr, "chat");
    let mut c = connect(server.addr, "chat");

    send_text(&mut a, "hello from a");
    for (name, ws) in [("a", &mut a), ("b", &mut b), ("c", &mut c)] {
        assert_eq!(recv_text(ws), "hello from a", "client {name}");
    }

    send(&mut b, Message::binary(vec![0u8, 1, 2, 255]));
    for (name, ws) in [("a", &mut a), ("b", &mut b), ("c", &mut c)] {
        assert_eq!(
            recv_data(ws),
            Message::Binary(Bytes::from_static(&[0, 1, 2, 255])),
            "client {name}"
        );
    }
}

/// Text stays text and binary stays binary, including empty, non-ASCII and UTF-8-looking
/// binary payloads, and the order of one sender's messages is kept.
#[test]
fn text_stays_text_binary_stays_binary() {
    let server = Server::start(&["--threads", "1"]);
    let mut publisher = connect(server.addr, "types");
    let mut subscriber = connect(server.addr, "types");

    let messages = vec![
        Message::text("plain ascii"),
        Message::text(""),
        Message::text("héllo wörld ✓ 🦀"),
        Message::binary(Vec::<u8>::new()),
        Message::binary(b"looks like text".to_vec()),
        Message::binary((0..=255u8).collect::<Vec<u8>>()),
        Message::text("x".repeat(70_000)), // 64-bit length header on the way out
        Message::binary(vec![7u8; 300]),   // 16-bit length header
    ];
    for m in &messages {
        send(&mut publisher, m.clone());
    }
    for (who, ws) in [
        ("publisher", &mut publisher),
        ("subscriber", &mut subscriber),
    ] {
        for (i, expected) in messages.iter().enumerate() {
            let got = recv_data(ws);
            assert_eq!(&got, expected, "{who}: message #{i}");
        }
    }
}

/// With `--no-echo` everyone but the sender gets the message.
#[test]
fn no_echo_skips_only_the_sender() {
    let server = Server::start(&["--threads", "1", "--no-echo"]);
    let mut a = connect(server.addr, "room");
    let mut b = connect(server.addr, "room");
    let mut c = connect(server.addr, "room");

    send_text(&mut a, "1 from a");
    assert_eq!(recv_text(&mut b), "1 from a");
    assert_eq!(recv_text(&mut c), "1 from a");

    send_text(&mut b, "2 from b");
    // One order per topic: had `a` been sent its own "1 from a", it would come first.
    assert_eq!(
        recv_text(&mut a),
        "2 from b",
        "a must not get its own message"
    );
    assert_eq!(recv_text(&mut c), "2 from b");

    send_text(&mut c, "3 from c");
    assert_eq!(recv_text(&mut a), "3 from c");
    // b's next message is c's, not its own "2 from b".
    assert_eq!(
        recv_text(&mut b),
        "3 from c",
        "b must not get its own message"
    );
}

/// Messages stay on their topic; nested paths are distinct topics.
#[test]
fn topics_are_isolated() {
    let server = Server::start(&["--threads", "1"]);
    let topics = [
        "a",
        "b",
        "prices",
        "prices/BTC-USD",
        "prices/BTC-USD/x",
        "A",
    ];
    let mut clients: Vec<_> = topics
        .iter()
        .map(|t| (*t, connect(server.addr, t)))
        .collect();

    // Each client publishes once on its own topic and waits for its echo...
    for (topic, ws) in clients.iter_mut() {
        send_text(ws, &format!("first on {topic}"));
        assert_eq!(recv_text(ws), format!("first on {topic}"));
    }
    // ...then once more. With one worker, a message wrongly routed to another topic would
    // have been queued before this second echo, so the next message must be the client's own.
    for (topic, ws) in clients.iter_mut() {
        send_text(ws, &format!("second on {topic}"));
        assert_eq!(
            recv_text(ws),
            format!("second on {topic}"),
            "client of {topic:?} received another topic's message"
        );
    }
}

/// A message as large as `--max-message` (default 1 MiB) is delivered whole.
#[test]
fn max_size_message_is_delivered_whole() {
    let server = Server::start(&[]);
    let mut publisher = connect(server.addr, "big");
    let mut subscriber = connect(server.addr, "big");
    sync(&mut publisher, "publisher");
    sync(&mut subscriber, "subscriber");

    let payload: Vec<u8> = (0..1_048_576u32).map(|i| (i % 251) as u8).collect();
    let reader = thread::spawn(move || recv_data_after_sync(&mut subscriber));
    send(&mut publisher, Message::binary(payload.clone()));
    let got = reader.join().expect("subscriber thread");
    assert!(
        got == Message::Binary(Bytes::from(payload.clone())),
        "subscriber got a different message ({} bytes)",
        got.len()
    );
    let echo = recv_data_after_sync(&mut publisher);
    assert!(
        echo == Message::Binary(Bytes::from(payload)),
        "publisher's echo differs ({} bytes)",
        echo.len()
    );
}

/// Waits for a stats line that shows exactly `total` connections; returns its per-worker
/// counts.
fn worker_counts(server: &mut Server, total: u64) -> Vec<(usize, u64)> {
    let line = server
        .wait_line(Duration::from_secs(15), |l| {
            parse_stats(l).is_some_and(|s| s.conns == total)
        })
        .unwrap_or_else(|| panic!("no `stats: conns={total} (w0=…)` line within 15 s"));
    parse_stats(&line).unwrap().per_worker
}

/// Opens connections to `topic` one at a time, watching the per-worker counts in the stats
/// lines, until there is one on worker 0 and one on worker 1. Returns all opened clients with
/// their worker and the indices of the first client found on each of workers 0 and 1.
fn clients_on_both_workers(server: &mut Server, topic: &str) -> (Vec<(Ws, usize)>, [usize; 2]) {
    let mut clients = Vec::new();
    let mut first_on: [Option<usize>; 2] = [None, None];
    let mut before = vec![0u64; 2];
    while first_on.iter().any(Option::is_none) {
        assert!(
            clients.len() < 24,
            "24 connections all landed on one worker (counts: {before:?})"
        );
        let ws = connect(server.addr, topic);
        let counts = worker_counts(server, clients.len() as u64 + 1);
        let mut now = vec![0u64; counts.len().max(2)];
        for (w, n) in counts {
            if w >= now.len() {
                now.resize(w + 1, 0);
            }
            now[w] = n;
        }
        assert_eq!(now.len(), 2, "--threads 2 must report two workers");
        let worker = (0..2)
            .find(|&w| now[w] == before[w] + 1)
            .unwrap_or_else(|| {
                panic!("cannot tell the new connection's worker: {before:?} -> {now:?}")
            });
        if first_on[worker].is_none() {
            first_on[worker] = Some(clients.len());
        }
        clients.push((ws, worker));
        before = now;
    }
    (clients, [first_on[0].unwrap(), first_on[1].unwrap()])
}

/// With two workers and clients on both, every message from every client reaches every
/// client, and all of them see the same order.
#[test]
fn delivery_across_two_workers() {
    let mut server = Server::start(&["--threads", "2", "--stats-interval", "250ms"]);
    let (mut clients, _) = clients_on_both_workers(&mut server, "cross");
    while clients.len() < 12 {
        clients.push((connect(server.addr, "cross"), usize::MAX));
    }
    for (i, (ws, _)) in clients.iter_mut().enumerate() {
        sync(ws, &i.to_string());
    }

    for (i, (ws, _)) in clients.iter_mut().enumerate() {
        send_text(ws, &format!("from {i}"));
    }
    let expected: BTreeSet<String> = (0..clients.len()).map(|i| format!("from {i}")).collect();
    let mut first_order: Option<Vec<String>> = None;
    for (i, (ws, worker)) in clients.iter_mut().enumerate() {
        let mut order = Vec::new();
        while order.len() < expected.len() {
            let text = recv_text(ws);
            if !text.starts_with("sync:") {
                order.push(text);
            }
        }
        let got: BTreeSet<String> = order.iter().cloned().collect();
        assert_eq!(
            got, expected,
            "client {i} (worker {worker}) missed or duplicated messages"
        );
        match &first_order {
            None => first_order = Some(order),
            Some(first) => assert_eq!(
                &order, first,
                "client {i} (worker {worker}) saw another order"
            ),
        }
    }
}

/// Two publishers on different workers send numbered messages concurrently; every
/// subscriber (on both workers) receives all of them, in one and the same order.
#[test]
fn publishers_on_different_workers_one_order_for_all() {
    const PER_PUBLISHER: usize = 400;
    let mut server = Server::start(&["--threads", "2", "--stats-interval", "250ms"]);
    let (clients, [p0, p1]) = clients_on_both_workers(&mut server, "ordered");
    let mut publishers = Vec::new();
    let mut subscribers = Vec::new();
    for (i, (ws, worker)) in clients.into_iter().enumerate() {
        if i == p0 || i == p1 {
            publishers.push((ws, worker));
        } else {
            subscribers.push((ws, worker));
        }
    }
    while subscribers.len() < 14 {
        subscribers.push((connect(server.addr, "ordered"), usize::MAX));
    }
    for (i, (ws, _)) in publishers
        .iter_mut()
        .chain(subscribers.iter_mut())
        .enumerate()
    {
        sync(ws, &i.to_string());
    }
    let workers: Vec<usize> = publishers.iter().map(|(_, w)| *w).collect();
    assert_ne!(
        workers[0], workers[1],
        "publishers must be on different workers"
    );

    let total = 2 * PER_PUBLISHER;
    let start = Arc::new(Barrier::new(2 + subscribers.len()));
    let read_all = move |ws: &mut Ws| -> Vec<String> {
        let mut seen = Vec::with_capacity(total);
        while seen.len() < total {
            let text = recv_text(ws);
            if !text.starts_with("sync:") {
                seen.push(text);
            }
        }
        seen
    };

    let mut handles = Vec::new();
    for (p, (mut ws, worker)) in publishers.into_iter().enumerate() {
        let start = Arc::clone(&start);
        handles.push(thread::spawn(move || {
            start.wait();
            for i in 0..PER_PUBLISHER {
                ws.write(Message::text(format!("p{p}-{i}")))
                    .expect("publish");
            }
            ws.flush().expect("flush");
            (
                format!("publisher {p} (worker {worker})"),
                read_all(&mut ws),
            )
        }));
    }
    for (s, (mut ws, worker)) in subscribers.into_iter().enumerate() {
        let start = Arc::clone(&start);
        handles.push(thread::spawn(move || {
            start.wait();
            (
                format!("subscriber {s} (worker {worker})"),
                read_all(&mut ws),
            )
        }));
    }
    let results: Vec<(String, Vec<String>)> = handles
        .into_iter()
        .map(|h| h.join().expect("client thread panicked"))
        .collect();

    for (who, seq) in &results {
        for p in 0..2 {
            let mine: Vec<&String> = seq
                .iter()
                .filter(|m| m.starts_with(&format!("p{p}-")))
                .collect();
            let expected: Vec<String> = (0..PER_PUBLISHER).map(|i| format!("p{p}-{i}")).collect();
            assert!(
                mine.iter()
                    .map(|s| s.as_str())
                    .eq(expected.iter().map(|s| s.as_str())),
                "{who}: publisher {p}'s messages missing, duplicated or out of its send order"
            );
        }
    }
    let (first_who, first) = &results[0];
    for (who, seq) in &results[1..] {
        if seq != first {
            let at = seq.iter().zip(first).position(|(a, b)| a != b).unwrap();
            panic!(
                "{who} and {first_who} saw different orders; first difference at #{at}: {:?} vs {:?}",
                seq[at], first[at]
            );
        }
    }
    // Diagnostic only: how much the two publishers' messages interleaved.
    let first_p1 = first.iter().position(|m| m.starts_with("p1-")).unwrap();
    let first_p0 = first.iter().position(|m| m.starts_with("p0-")).unwrap();
    eprintln!("first p0 at #{first_p0}, first p1 at #{first_p1} of {total}");
}

/// Subscribers leaving a topic do not disturb the others, and new subscribers (on either
/// worker) receive the topic's messages again after the last one on a worker left.
#[test]
fn subscribers_leave_and_rejoin() {
    let server = Server::start(&["--threads", "2"]);
    let mut clients: Vec<Ws> = (0..10).map(|_| connect(server.addr, "churn")).collect();
    for (i, ws) in clients.iter_mut().enumerate() {
        sync(ws, &format!("first-{i}"));
    }
    // Half of them leave: five cleanly, the rest by dropping the TCP connection.
    let leaving: Vec<Ws> = clients.drain(..5).collect();
    for (i, ws) in leaving.into_iter().enumerate() {
        if i % 2 == 0 {
            close_cleanly(ws);
        } else {
            drop(ws);
        }
    }
    send_text(&mut clients[0], "after leave");
    for (i, ws) in clients.iter_mut().enumerate() {
        let text = recv_text_after_sync(ws);
        assert_eq!(text, "after leave", "remaining client {i}");
    }

    // Everyone leaves, then a new set joins the same topic.
    for ws in clients.drain(..) {
        close_cleanly(ws);
    }
    let mut fresh: Vec<Ws> = (0..8).map(|_| connect(server.addr, "churn")).collect();
    for (i, ws) in fresh.iter_mut().enumerate() {
        sync(ws, &format!("second-{i}"));
    }
    send_text(&mut fresh[7], "after rejoin");
    for (i, ws) in fresh.iter_mut().enumerate() {
        let text = recv_text_after_sync(ws);
        assert_eq!(text, "after rejoin", "new client {i}");
    }
}
