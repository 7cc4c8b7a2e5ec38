//! The per-message user-space work: decoding (unmasking, validating) client frames and
//! encoding the one server frame every subscriber shares.

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use herald::proto::frame::{self, Assembly};
use tungstenite::protocol::frame::coding::{Data, OpCode};

/// `count` masked client text frames of `len` bytes back to back (made by the tests' frame
/// encoder).
fn client_frames(count: usize, len: usize) -> Vec<u8> {
    let payload = vec![b'a'; len];
    let mask = Some([0x12, 0x34, 0x56, 0x78]);
    (0..count)
        .flat_map(|_| testkit::encode_frame(true, 0, testkit::OP_TEXT, &payload, mask))
        .collect()
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
