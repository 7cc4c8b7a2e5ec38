//! Corked `write` vs `writev`: the two ways to send a turn's small frames to each subscriber,
//! measured side by side over real loopback TCP sockets (the kernel's cost is the point).
//!
//! - `corked`: Herald's way (`fanout::cork`): the turn's frames are copied once into one
//!   buffer, then one `write` of it per subscriber.
//! - `writev`: one `writev` per subscriber over the separate shared frames.
//!
//! Each iteration sends a batch to every subscriber socket and reads it all back on the
//! client side, so both variants pay the same receive cost.

use std::io::{IoSlice, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::Instant;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use herald::feed::fanout::{cork, Staged};
use herald::proto::frame;

const SUBSCRIBERS: usize = 64;

fn pairs(n: usize) -> Vec<(TcpStream, TcpStream)> {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind loopback");
    let addr = listener.local_addr().expect("local addr");
    (0..n)
        .map(|_| {
            let client = TcpStream::connect(addr).expect("connect");
            let (server, _) = listener.accept().expect("accept");
            server.set_nodelay(true).expect("nodelay");
            (server, client)
        })
        .collect()
}

fn batch(frames: usize, payload: usize) -> Vec<Staged> {
    let origin = herald::feed::bus::Origin { worker: 0, conn: 0 };
    (0..frames)
        .map(|i| Staged {
            seq: i as u64,
            frame: frame::encode(
                tungstenite::protocol::frame::coding::OpCode::Data(
                    tungstenite::protocol::frame::coding::Data::Binary,
                ),
                &vec![7u8; payload],
            ),
            received: Instant::now(),
            origin,
        })
        .collect()
}

fn drain(client: &mut TcpStream, mut want: usize, buf: &mut [u8]) {
    while want > 0 {
        let take = want.min(buf.len());
        want -= client.read(&mut buf[..take]).expect("read");
    }
}

fn bench(c: &mut Criterion) {
    let mut socks = pairs(SUBSCRIBERS);
    let mut buf = vec![0u8; 1 << 16];
    let mut group = c.benchmark_group("fanout_write");
    for &(frames, payload) in &[(1usize, 64usize), (8, 64), (32, 64), (8, 4096)] {
        let staged = batch(frames, payload);
        let bytes: usize = staged.iter().map(|s| s.frame.len()).sum();
        group.throughput(Throughput::Elements((frames * SUBSCRIBERS) as u64));
        let id = format!("{frames}x{payload}B");
        group.bench_with_input(BenchmarkId::new("corked", &id), &staged, |b, staged| {
            b.iter(|| {
                let corked = cork(staged.iter().map(|s| &s.frame));
                for (server, _) in socks.iter_mut() {
                    server.write_all(&corked).expect("write");
                }
                for (_, client) in socks.iter_mut() {
                    drain(client, bytes, &mut buf);
                }
            })
        });
        group.bench_with_input(BenchmarkId::new("writev", &id), &staged, |b, staged| {
            b.iter(|| {
                let slices: Vec<IoSlice> = staged.iter().map(|s| IoSlice::new(&s.frame)).collect();
                for (server, _) in socks.iter_mut() {
                    let n = server.write_vectored(&slices).expect("writev");
                    assert_eq!(n, bytes, "loopback buffer took the whole batch");
                }
                for (_, client) in socks.iter_mut() {
                    drain(client, bytes, &mut buf);
                }
            })
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
