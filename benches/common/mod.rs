//! Shared by the tree-learning bench and `examples/phase_times.rs`: synthetic weights and a
//! driver of the learner that times its own work only.
//!
//! Each item has a random favourite leaf (collisions included, so nodes overflow and the
//! rebalance has work); a candidate scores minus the number of levels on which its path
//! leaves the favourite's, plus hashed noise.

use jtm_rs::parallel::run;
use jtm_rs::tree_learning::{LearnConfig, TreeLearner, WeightRequest};
use jtm_rs::Tree;
use std::time::{Duration, Instant};

fn hash(mut x: u64) -> u64 {
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

pub fn synthetic_weights(tree: &Tree, req: &WeightRequest) -> Vec<f32> {
    let b = tree.arity();
    let depth = req.end_level - req.start_level + 1;
    let leaves = tree.level_range(tree.leaf_level());
    let mut w = Vec::with_capacity(req.items.len() * req.n_candidates);
    for (&item, &p) in req.items.iter().zip(&req.parents) {
        let fav = leaves.start + hash(item as u64) % (leaves.end - leaves.start);
        let fav_end = tree.ancestor(fav, req.end_level).unwrap();
        let under_p = tree.ancestor(fav_end, req.start_level - 1).unwrap() == p;
        let first = tree.descendants(p, req.end_level).unwrap().start;
        for c in 0..req.n_candidates as u64 {
            let noise = (hash(item as u64 ^ (c << 40)) % 1000) as f32 * 1e-4;
            let miss = if under_p {
                let (mut x, mut y, mut up) = (c, fav_end - first, 0);
                while x != y {
                    x /= b;
                    y /= b;
                    up += 1;
                }
                up
            } else {
                depth
            };
            w.push(noise - miss as f32);
        }
    }
    w
}

/// Time of the learner's steps in one segment (the weights' generation excluded).
pub struct SegmentTimes {
    #[allow(dead_code)] // printed by examples/phase_times.rs; the bench only sums times
    pub levels: (u32, u32),
    pub begin: Duration,
    pub accept: Duration,
    pub assign: Duration,
}

/// Runs tree learning on synthetic weights; returns each segment's times and `finish`'s.
pub fn learn_timed(tree: &Tree, threads: usize) -> (Vec<SegmentTimes>, Duration) {
    fn timed<R>(f: impl FnOnce() -> R) -> (R, Duration) {
        let t = Instant::now();
        let r = f();
        (r, t.elapsed())
    }
    let mut learner = TreeLearner::new(tree, LearnConfig::default()).unwrap();
    let mut segments = Vec::new();
    loop {
        let (seg, begin) = timed(|| run(Some(threads), || learner.begin_segment()).unwrap());
        let Some(seg) = seg else { break };
        let mut accept = Duration::ZERO;
        while let Some(rows) = learner.next_chunk() {
            let w = synthetic_weights(tree, &learner.request(rows.clone()).unwrap());
            accept += timed(|| run(Some(threads), || learner.accept_weights(rows, &w)).unwrap()).1;
        }
        let ((), assign) = timed(|| run(Some(threads), || learner.assign()).unwrap());
        segments.push(SegmentTimes {
            levels: (seg.start_level, seg.end_level),
            begin,
            accept,
            assign,
        });
    }
    let (learned, finish) = timed(|| learner.finish().unwrap());
    assert_eq!(learned.n_items(), tree.n_items());
    (segments, finish)
}
