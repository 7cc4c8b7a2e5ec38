//! What a topic pays to learn which pattern subscriptions want it: one walk of the segment
//! trie (`feed::patterns::PatternIndex::matching`) with 0, 1k and 100k patterns registered,
//! beside a naive scan of every pattern (`Pattern::matches` in a loop) for scale. The index
//! runs once per topic state (creation, or a change of the pattern set), not per publish.
//!
//! Run: `flock /work/bench.lock taskset -c 1 cargo bench --bench pattern_index`.

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use herald::feed::patterns::PatternIndex;
use herald::proto::pattern::Pattern;

/// `n` patterns of four shapes, spread over many prefixes, as many subscribers would write.
fn patterns(n: usize) -> Vec<Pattern> {
    (0..n)
        .map(|i| {
            let text = match i % 4 {
                0 => format!("feed{i}/*"),
                1 => format!("feed{i}/**"),
                2 => format!("prices/{i}/*"),
                _ => format!("user/{i}/*/events"),
            };
            Pattern::parse(&text).expect("valid pattern")
        })
        .collect()
}

fn bench(c: &mut Criterion) {
    let topics = ["prices/42/eu", "news/world/today", "user/7/orders/events"];
    let mut group = c.benchmark_group("pattern_match_per_topic");
    group.sample_size(20);
    group.measurement_time(Duration::from_secs(3));
    group.warm_up_time(Duration::from_secs(1));
    for n in [0usize, 1_000, 100_000] {
        let list = patterns(n);
        let mut index = PatternIndex::new(n.max(1));
        for (k, p) in list.iter().enumerate() {
            index.insert(p, k as u32).expect("within the bound");
        }
        let mut out = Vec::new();
        group.bench_with_input(BenchmarkId::new("trie", n), &n, |b, _| {
            b.iter(|| {
                let mut found = 0;
                for t in topics {
                    index.matching(black_box(t), &mut out);
                    found += out.len();
                }
                found
            })
        });
        group.bench_with_input(BenchmarkId::new("scan", n), &n, |b, _| {
            b.iter(|| {
                let mut found = 0;
                for t in topics {
                    found += list.iter().filter(|p| p.matches(black_box(t))).count();
                }
                found
            })
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
