//! Tree-learning scaling (paper Algorithm 2): N = 10^4, 10^5, 10^6 items, binary tree, d = 7,
//! on 1 and 2 threads. Only the learner's own work is timed (ordering, top-candidate
//! reduction, greedy + rebalance, exchange improvement, building the tree); the synthetic
//! weights are generated outside the timed sections, standing in for `weights_fn`.
//!
//! Weights: see `benches/common/mod.rs`.
//!
//! Run: `cargo bench --bench tree_learning` (JTM_BENCH_SIZES=10000,100000 to pick sizes).

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use jtm_rs::Tree;
use std::time::Duration;

mod common;
use common::learn_timed;

/// Time spent inside the learner only.
fn learn_once(tree: &Tree, threads: usize) -> Duration {
    let (segments, finish) = learn_timed(tree, threads);
    finish
        + segments
            .iter()
            .map(|s| s.begin + s.accept + s.assign)
            .sum::<Duration>()
}

fn sizes() -> Vec<usize> {
    std::env::var("JTM_BENCH_SIZES")
        .ok()
        .map(|s| {
            s.split(',')
                .map(|x| x.trim().parse().expect("JTM_BENCH_SIZES: integers"))
                .collect()
        })
        .unwrap_or_else(|| vec![10_000, 100_000, 1_000_000])
}

fn bench(c: &mut Criterion) {
    let mut group = c.benchmark_group("learn_tree_d7_binary");
    group
        .sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(5));
    for n in sizes() {
        let items: Vec<i64> = (0..n as i64).collect();
        let tree = Tree::random(&items, 2, None, 1).unwrap();
        group.throughput(Throughput::Elements(n as u64));
        for threads in [1, 2] {
            group.bench_with_input(
                BenchmarkId::new(format!("{threads}_threads"), n),
                &tree,
                |b, tree| {
                    b.iter_custom(|iters| (0..iters).map(|_| learn_once(tree, threads)).sum())
                },
            );
        }
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
