//! User-space hot paths other than the frame codec: parsing an upgrade request, and queueing
//! one message on N connections' output queues (what a subscriber that the kernel refused
//! costs: a reference-count bump and a queue push, never a copy).

use std::time::Instant;

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use herald::proto::http;
use herald::worker::conn::{OutChunk, OutQueue};

const UPGRADE: &[u8] = b"GET /prices/BTC-USD HTTP/1.1\r\nHost: 127.0.0.1:9000\r\nConnection: Upgrade\r\n\
Pragma: no-cache\r\nCache-Control: no-cache\r\nUser-Agent: Mozilla/5.0 (X11; Linux x86_64) Chrome/156.0\r\n\
Upgrade: websocket\r\nOrigin: http://127.0.0.1:9000\r\nSec-WebSocket-Version: 13\r\n\
Accept-Encoding: gzip, deflate, br\r\nAccept-Language: en-US,en;q=0.9\r\n\
Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n\r\n";

fn bench(c: &mut Criterion) {
    c.bench_function("http/parse_browser_upgrade", |b| {
        b.iter(|| {
            http::parse_head(UPGRADE, 1 << 20)
                .expect("valid")
                .expect("complete")
        })
    });

    let mut group = c.benchmark_group("queue_one_message");
    let frame = Bytes::from(vec![0x82u8; 66]);
    for n in [1_000usize, 10_000] {
        let mut queues: Vec<OutQueue> = (0..n).map(|_| OutQueue::default()).collect();
        group.throughput(Throughput::Elements(n as u64));
        group.bench_with_input(BenchmarkId::from_parameter(n), &n, |b, _| {
            let received = Instant::now();
            b.iter(|| {
                for q in queues.iter_mut() {
                    q.push(OutChunk {
                        data: frame.clone(),
                        received,
                        messages: 1,
                        topic_stats: None,
                    });
                }
                for q in queues.iter_mut() {
                    q.truncate_unstarted();
                }
            })
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
