//! The per-message user-space work: decoding (unmasking, validating) client frames and
//! encoding the one server frame every subscriber shares.

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use herald::proto::frame::{self, Assembly};
use tungstenite::protocol::frame::coding::{Data, OpCode};

/// `count` masked client text frames of `len` bytes back to back.
fn client_frames(count: usize, len: usize) -> Vec<u8> {
    let mask = [0x12, 0x34, 0x56, 0x78];
    let mut out = Vec::new();
    for _ in 0..count {
        out.push(0x81);
        if len < 126 {
            out.push(0x80 | len as u8);
        } else {
            out.push(0x80 | 126);
            out.extend_from_slice(&(len as u16).to_be_bytes());
        }
        out.extend_from_slice(&mask);
        out.extend((0..len).map(|i| b'a' ^ mask[i % 4]));
    }
    out
}

fn bench(c: &mut Criterion) {
    let mut group = c.benchmark_group("frame_codec");
    for len in [64usize, 4096] {
        let input = client_frames(64, len);
        group.throughput(Throughput::Elements(64));
        group.bench_function(format!("decode_64x{len}B"), |b| {
            let mut events = Vec::with_capacity(64);
            b.iter(|| {
                let mut buf = input.clone();
                events.clear();
                frame::decode(&mut buf, &mut Assembly::default(), 1 << 20, &mut events)
                    .expect("valid frames");
                events.len()
            })
        });
        let payload = vec![b'a'; len];
        group.bench_function(format!("encode_{len}B"), |b| {
            b.iter(|| frame::encode(OpCode::Data(Data::Text), &payload))
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
