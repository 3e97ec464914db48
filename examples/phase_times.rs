//! Time of each phase of each segment of tree learning on synthetic weights.
//! Run: `cargo run --release --example phase_times -- N_ITEMS N_THREADS`.

use jtm_rs::Tree;
#[path = "../benches/common/mod.rs"]
mod common;

fn main() {
    let arg = |i: usize, default: usize| {
        std::env::args()
            .nth(i)
            .map_or(default, |s| s.parse().expect("integer arguments"))
    };
    let (n, threads) = (arg(1, 1_000_000), arg(2, 1));
    let items: Vec<i64> = (0..n as i64).collect();
    let tree = Tree::random(&items, 2, None, 1).unwrap();
    let (segments, finish) = common::learn_timed(&tree, threads);
    for s in segments {
        println!(
            "segment {:?}: begin {:?} accept {:?} assign {:?}",
            s.levels, s.begin, s.accept, s.assign
        );
    }
    println!("finish {finish:?}");
}
