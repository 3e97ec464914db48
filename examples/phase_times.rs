use jtm_rs::parallel::run;
use jtm_rs::tree_learning::{LearnConfig, TreeLearner, WeightRequest};
use jtm_rs::Tree;
use std::time::Instant;
fn hash(mut x: u64) -> u64 {
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}
fn synthetic_weights(tree: &Tree, req: &WeightRequest) -> Vec<f32> {
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
