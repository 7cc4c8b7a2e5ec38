//! Issue 12 §1: a subscriber that stops reading must cost nothing once Herald has closed it:
//! not a slab slot, not Herald's memory, and not the kernel's either. Real herald, real
//! never-reading clients with a 4 KiB receive window, a canary that must get everything, and
//! `/proc` read before and after.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use socket2::{Domain, Protocol, Socket, Type};
use testkit::*;

/// Never-reading clients. Each one pins up to `tcp_wmem`'s max (4 MiB) of kernel send buffer
/// when Herald only closes it, so 40 of them make a rise no other test on the box comes near.
const SLOW: usize = 40;
/// Messages published, and their size: 6 MiB in all, more than a socket's kernel send buffer
/// plus `--max-backlog`, so every never-reading client goes over its cap.
const MESSAGES: usize = 384;
const SIZE: usize = 16 * 1024;
/// The grace the server runs with: what it allows a closing connection before the reset.
const GRACE: Duration = Duration::from_secs(1);

/// One line of `/proc/net/sockstat`: the kernel's TCP socket memory (pages) and orphans.
#[derive(Debug, Clone, Copy)]
struct TcpMem {
    mem_pages: u64,
    orphans: u64,
}

fn sockstat() -> TcpMem {
    let text = std::fs::read_to_string("/proc/net/sockstat").expect("/proc/net/sockstat");
    let line = text
        .lines()
        .find(|l| l.starts_with("TCP:"))
        .expect("a TCP: line in /proc/net/sockstat");
    let field = |name: &str| -> u64 {
        let mut words = line.split_whitespace();
        while let Some(w) = words.next() {
            if w == name {
                return words.next().and_then(|v| v.parse().ok()).unwrap_or(0);
            }
        }
        panic!("no `{name}` in {line:?}")
    };
    TcpMem {
        mem_pages: field("mem"),
        orphans: field("orphan"),
    }
}

/// Herald's resident memory, KiB (`VmRSS` of /proc/PID/status).
fn rss_kib(pid: u32) -> u64 {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("/proc/PID/status");
    text.lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .expect("VmRSS in /proc/PID/status")
}

/// A subscriber with a 4 KiB receive buffer (set before connecting, so the window it
/// advertises is small from the SYN on) that upgrades and then never reads again: a phone
/// that went into a tunnel.
fn never_reading_client(addr: SocketAddr, topic: &str) -> TcpStream {
    let socket = Socket::new(Domain::IPV4, Type::STREAM, Some(Protocol::TCP)).expect("socket");
    socket.set_recv_buffer_size(4096).expect("SO_RCVBUF");
    socket
        .connect_timeout(&addr.into(), IO_TIMEOUT)
        .expect("connect");
    let mut stream: TcpStream = socket.into();
    stream.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    let request = upgrade_request(&format!("/{topic}"), "dGhlIHNhbXBsZSBub25jZQ==", &[]);
    stream.write_all(request.as_bytes()).expect("upgrade");
    // The response head, byte by byte so nothing after it is taken.
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        assert_eq!(
            stream.read(&mut byte).expect("101 response"),
            1,
            "EOF in head"
        );
        head.push(byte[0]);
    }
    assert!(
        head.starts_with(b"HTTP/1.1 101"),
        "upgrade refused: {:?}",
        String::from_utf8_lossy(&head)
    );
    stream
}

/// Polls `check` until it says done, or gives up at the deadline with the last value.
fn poll_until<T>(deadline: Instant, mut check: impl FnMut() -> (bool, T)) -> (bool, T) {
    loop {
        let (ok, value) = check();
        if ok || Instant::now() >= deadline {
            return (ok, value);
        }
        thread::sleep(Duration::from_millis(5));
    }
}

/// The reading side of [`never_reading_client`] after all: drain what the kernel holds for it
/// and require the connection to have ended (EOF or reset), within `limit`.
fn connection_ended(stream: &mut TcpStream, limit: Duration) -> Result<usize, String> {
    stream.set_read_timeout(Some(limit)).unwrap();
    let mut total = 0;
    let mut buf = [0u8; 64 * 1024];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => return Ok(total),
            Ok(n) => total += n,
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                return Err(format!("still open after {limit:?} ({total} bytes read)"))
            }
            Err(_) => return Ok(total), // reset: what the abort sends
        }
    }
}

/// Many never-reading clients with small receive windows go over `--max-backlog` while 6 MiB
/// are published. Herald closes them as slow consumers and, once the close frame cannot get
/// out within `--close-grace`, resets them: within the grace plus a second, the kernel's TCP
/// memory and orphan count and Herald's RSS are back near where they were before publishing,
/// every client has seen its connection end, and a reading canary got every message.
#[test]
fn never_reading_clients_are_aborted_and_their_kernel_memory_freed() {
    let mut server = Server::start(&[
        "--threads",
        "2",
        "--no-echo",
        "--max-message",
        "65536",
        "--max-backlog",
        "262144",
        "--close-grace",
        "1s",
        "--stats-interval",
        "1s",
    ]);
    let topic = "tunnel";

    let mut canary = RawWs::connect(server.addr, topic);
    let mut slow: Vec<TcpStream> = (0..SLOW)
        .map(|_| never_reading_client(server.addr, topic))
        .collect();
    // `--no-echo`: the publisher, on the topic too, gets none of its own messages.
    let mut publisher = RawWs::connect(server.addr, topic);
    // Herald may count connections on either worker; wait until all are open.
    server
        .wait_line(Duration::from_secs(15), |l| {
            parse_stats(l).is_some_and(|s| s.conns == SLOW as u64 + 2)
        })
        .expect("a stats line with every client connected");

    let before = sockstat();
    let rss_before = rss_kib(server.pid());

    // The canary reads on its own thread and counts whole messages.
    let received = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&received);
    let canary_thread = thread::spawn(move || {
        for i in 0..MESSAGES {
            let (op, payload) = canary.expect_message();
            assert_eq!(op, OP_BINARY);
            assert_eq!(payload.len(), SIZE, "message {i}");
            assert_eq!(
                &payload[..8],
                &(i as u64).to_be_bytes(),
                "message {i} out of order"
            );
            counter.fetch_add(1, Ordering::Relaxed);
        }
        canary
    });

    // Publish in steps the canary keeps up with: only the never-readers fall behind.
    let mut payload = vec![0x5au8; SIZE];
    let mut peak = before;
    for i in 0..MESSAGES {
        payload[..8].copy_from_slice(&(i as u64).to_be_bytes());
        publisher.send(&frame(true, 0, OP_BINARY, &payload));
        // Eight messages (128 KiB) at most ahead of the canary: well inside its kernel
        // buffers plus `--max-backlog`, even when its thread is not scheduled for a while.
        if i % 8 == 7 {
            let (ok, got) = poll_until(Instant::now() + IO_TIMEOUT, || {
                let got = received.load(Ordering::Relaxed);
                (got > i, got)
            });
            assert!(ok, "the canary has {got} of {} messages", i + 1);
            let now = sockstat();
            if now.mem_pages > peak.mem_pages {
                peak = now;
            }
        }
    }
    let canary = canary_thread.join().expect("the canary lost messages");
    let published_at = Instant::now();
    eprintln!("before: {before:?} rss {rss_before} KiB; peak while publishing: {peak:?}");

    // The kernel's memory and orphans come back within the grace plus a second of the last
    // publish (each never-reader went over its cap before that, so its grace began earlier).
    // sockstat is for the whole machine and other tests may run beside this one: allow
    // 16 MiB of TCP memory (4096 pages) and 8 orphans above the baseline. Without the abort
    // these 40 sockets alone hold ~4 MiB each and stay orphaned for minutes, far beyond both.
    const MEM_SLACK_PAGES: u64 = 4096;
    const ORPHAN_SLACK: u64 = 8;
    let deadline = published_at + GRACE + Duration::from_secs(1);
    let (ok, after) = poll_until(deadline, || {
        let now = sockstat();
        (
            now.mem_pages <= before.mem_pages + MEM_SLACK_PAGES
                && now.orphans <= before.orphans + ORPHAN_SLACK,
            now,
        )
    });
    assert!(
        ok,
        "kernel TCP memory not freed: before {before:?}, peak {peak:?}, {:?} after publishing: {after:?}",
        published_at.elapsed()
    );
    eprintln!(
        "back to {after:?} {:?} after the last publish",
        published_at.elapsed()
    );

    // Every never-reader was counted as a slow consumer, and aborted (the stats line comes
    // once a second).
    let line = server
        .wait_line(GRACE + Duration::from_secs(10), |l| {
            stat_field(l, "slow_closes") == Some(SLOW as u64)
                && stat_field(l, "aborts") == Some(SLOW as u64)
        })
        .unwrap_or_else(|| {
            panic!(
                "no stats line with slow_closes={SLOW} aborts={SLOW}; last: {:?}",
                server
                    .stdout()
                    .iter()
                    .rev()
                    .find(|l| l.starts_with("stats:"))
            )
        });
    eprintln!("{line}");

    // Herald's own memory: the slow consumers' queued output is gone. 8 MiB of slack for the
    // allocator keeping freed pages (the queues held up to 40 × 256 KiB references to shared
    // frames, and a publish burst's buffers).
    const RSS_SLACK_KIB: u64 = 8 * 1024;
    let (ok, rss_after) = poll_until(Instant::now() + Duration::from_secs(1), || {
        let rss = rss_kib(server.pid());
        (rss <= rss_before + RSS_SLACK_KIB, rss)
    });
    assert!(
        ok,
        "herald RSS {rss_after} KiB, was {rss_before} KiB before publishing"
    );

    // Each never-reader sees its connection end (after the little its window held).
    for (i, stream) in slow.iter_mut().enumerate() {
        let bytes = connection_ended(stream, Duration::from_secs(2))
            .unwrap_or_else(|e| panic!("never-reading client {i}: {e}"));
        assert!(bytes < MESSAGES * SIZE, "client {i} got everything");
    }
    drop(canary);
}
