//! Time of each phase of each segment of tree learning on synthetic weights.
//! Run: `cargo run --release --example phase_times -- N_ITEMS N_THREADS`.

use jtm_rs::parallel::run;
use jtm_rs::tree_learning::{LearnConfig, TreeLearner};
use jtm_rs::Tree;
use std::time::Instant;
#[path = "../benches/common/mod.rs"]
mod common;
use common::synthetic_weights;

fn main() {
    let n: usize = std::env::args()
        .nth(1)
        .map(|s| s.parse().unwrap())
        .unwrap_or(1_000_000);
    let threads: usize = std::env::args()
        .nth(2)
        .map(|s| s.parse().unwrap())
        .unwrap_or(1);
    let items: Vec<i64> = (0..n as i64).collect();
    let tree = Tree::random(&items, 2, None, 1).unwrap();
    let mut learner = TreeLearner::new(&tree, LearnConfig::default()).unwrap();
    loop {
        let t = Instant::now();
        let seg = run(Some(threads), || learner.begin_segment()).unwrap();
        let Some(seg) = seg else { break };
        let begin = t.elapsed();
        let mut accept = std::time::Duration::ZERO;
        while let Some(rows) = learner.next_chunk() {
            let w = synthetic_weights(&tree, &learner.request(rows.clone()).unwrap());
            let t = Instant::now();
            run(Some(threads), || learner.accept_weights(rows.clone(), &w)).unwrap();
            accept += t.elapsed();
        }
        let t = Instant::now();
        run(Some(threads), || learner.assign()).unwrap();
        println!(
            "segment {:?}: begin {:?} accept {:?} assign {:?}",
            (seg.start_level, seg.end_level),
            begin,
            accept,
            t.elapsed()
        );
    }
    let t = Instant::now();
    learner.finish().unwrap();
    println!("finish {:?}", t.elapsed());
}
