//! Beam-search driver overhead: N = 10^6 items (binary tree), k = 200, batches of users,
//! 1 and 2 threads. The scorer is excluded from the timing (it stands in for the model):
//! only expansion of the beams into (user, node) pairs and the per-user top-k selection are
//! timed.
//!
//! Run: `cargo bench --bench beam_search`.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use jtm_rs::beam_search::BeamSearch;
use jtm_rs::parallel::run;
use jtm_rs::Tree;
use std::time::{Duration, Instant};

fn search_once(tree: &Tree, n_users: usize, k: usize, threads: usize) -> Duration {
    let mut timed = Duration::ZERO;
    let mut search = BeamSearch::new(tree, n_users, k, k).unwrap();
    loop {
        let t = Instant::now();
        let c = run(Some(threads), || search.expand()).unwrap();
        timed += t.elapsed();
        let Some(c) = c else { break };
        // Trivial scorer (untimed): a hash of (user, node).
        let scores: Vec<f32> = c
            .user_rows
            .iter()
            .zip(&c.nodes)
            .map(|(&u, &n)| {
                (((u as u64 * 0x9E37_79B9) ^ n as u64).wrapping_mul(0x2545_F491_4F6C_DD1D) >> 40)
                    as f32
            })
            .collect();
        let t = Instant::now();
        run(Some(threads), || search.select(&scores)).unwrap();
        timed += t.elapsed();
    }
    let t = Instant::now();
    let (items, _) = search.finish().unwrap();
    timed += t.elapsed();
    assert_eq!(items.len(), n_users * k);
    timed
}

fn bench(c: &mut Criterion) {
    let n = 1_000_000;
    let items: Vec<i64> = (0..n).collect();
    let tree = Tree::random(&items, 2, None, 1).unwrap();
    let mut group = c.benchmark_group("beam_search_1e6_items_k200");
    group
        .sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(5));
    let users = 256;
    group.throughput(Throughput::Elements(users as u64));
    for threads in [1, 2] {
        group.bench_with_input(
            BenchmarkId::new(format!("{threads}_threads"), users),
            &tree,
            |b, tree| {
                b.iter_custom(|iters| {
                    (0..iters)
                        .map(|_| search_once(tree, users, 200, threads))
                        .sum()
                })
            },
        );
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
