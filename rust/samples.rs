//! Training samples with per-level negatives (docs/design.md §4.2, paper eq. 2 with sampled negatives).
//!
//! For each target item and each level l ≥ `start_level`: the positive `b_l(π(c))` (label 1)
//! then `n_l` distinct negatives drawn uniformly from the live nodes of level l other than the
//! positive (label 0). When a level has fewer than `n_l + 1` live nodes, every other live node
//! is taken, so the count per level is `min(n_l, live_l − 1)` and the same for every example:
//! the output is one block of fixed size per example, filled in parallel, each example from
//! its own random stream so the result does not depend on the thread count.

use crate::error::{invalid, try_vec, Result};
use crate::rng::SplitMix64;
use crate::tree::Tree;
use rayon::prelude::*;

/// Flat, aligned arrays: row r says "example `example[r]` at `level[r]` sees `node[r]`
/// with label `label[r]`".
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Samples {
    pub example: Vec<i64>,
    pub node: Vec<i64>,
    pub level: Vec<i64>,
    pub label: Vec<f32>,
}

/// `negatives[l]` is the count for level l (length `leaf_level + 1`; entries below
/// `start_level` are ignored). Example `e` of `targets` draws from random stream
/// `first_stream + e`, so an epoch generated in chunks (`first_stream` = the chunk's offset)
/// equals the epoch generated at once, in a chunk's memory.
pub fn generate(
    tree: &Tree,
    targets: &[i64],
    negatives: &[i64],
    start_level: u32,
    seed: u64,
    first_stream: u64,
) -> Result<Samples> {
    let leaf_level = tree.leaf_level();
    if negatives.len() != leaf_level as usize + 1 {
        return invalid!(
            "negatives must give one count per level 0..={leaf_level} ({} values), got {}",
            leaf_level + 1,
            negatives.len()
        );
    }
    if let Some((l, n)) = negatives.iter().enumerate().find(|(_, &n)| n < 0) {
        return invalid!("negative count {n} for level {l}: counts must be ≥ 0");
    }
    if start_level > leaf_level {
        return invalid!("start_level {start_level} is below the leaves (level {leaf_level})");
    }
    let levels: Vec<u32> = (start_level..=leaf_level).collect();
    let per_level: Vec<usize> = levels
        .iter()
        .map(|&l| (negatives[l as usize] as usize).min(tree.live_at(l).len() - 1))
        .collect();
    let block: usize = per_level.iter().map(|n| n + 1).sum();

    let total = Tree::check_output_len(targets.len(), block as u64)?;
    let mut leaves = try_vec(targets.len(), 0u64, "the targets' leaves")?;
    for (leaf, &t) in leaves.iter_mut().zip(targets) {
        *leaf = tree.leaf_of(t)?;
    }
    let mut out = Samples {
        example: try_vec(total, 0, "the samples' example column")?,
        node: try_vec(total, 0, "the samples' node column")?,
        level: try_vec(total, 0, "the samples' level column")?,
        label: try_vec(total, 0.0, "the samples' label column")?,
    };
    if block == 0 {
        return Ok(out);
    }
    out.example
        .par_chunks_mut(block)
        .zip(out.node.par_chunks_mut(block))
        .zip(out.level.par_chunks_mut(block))
        .zip(out.label.par_chunks_mut(block))
        .enumerate()
        .for_each(|(e, (((ex, node), lev), lab))| {
            let mut rng = SplitMix64::for_stream(seed, first_stream + e as u64);
            let mut picked: Vec<usize> = Vec::new();
            let mut r = 0;
            for (&l, &n_neg) in levels.iter().zip(&per_level) {
                let live = tree.live_at(l);
                let pos = tree
                    .ancestor(leaves[e], l)
                    .expect("leaf is at the leaf level");
                let pos_rank = live
                    .binary_search(&pos)
                    .expect("ancestors of an item are live");
                node[r] = pos as i64;
                lab[r] = 1.0;
                lev[r] = l as i64;
                r += 1;
                // Floyd's algorithm: n_neg distinct ranks among the live_len − 1 others.
                sample_distinct(&mut rng, live.len() - 1, n_neg, &mut picked);
                for &k in &picked {
                    let k = if k >= pos_rank { k + 1 } else { k };
                    node[r] = live[k] as i64;
                    lev[r] = l as i64;
                    r += 1;
                }
            }
            ex.fill(e as i64);
        });
    Ok(out)
}

/// `count` distinct values uniform in `0..n` (Floyd), into `out` (order as picked).
fn sample_distinct(rng: &mut SplitMix64, n: usize, count: usize, out: &mut Vec<usize>) {
    out.clear();
    if count >= n {
        out.extend(0..n);
        return;
    }
    // Small counts: linear membership checks beat hashing.
    let mut big: Option<std::collections::HashSet<usize>> = (count > 64).then(Default::default);
    for j in n - count..n {
        let t = rng.below(j as u64 + 1) as usize;
        let taken = match &big {
            Some(s) => s.contains(&t),
            None => out.contains(&t),
        };
        let v = if taken { j } else { t };
        out.push(v);
        if let Some(s) = big.as_mut() {
            s.insert(v);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tree() -> Tree {
        Tree::random(&(0..100).collect::<Vec<_>>(), 2, None, 1).unwrap()
    }

    #[test]
    fn positives_are_ancestors_and_negatives_are_live_others() {
        let t = tree();
        let negs = vec![0, 1, 2, 3, 4, 5, 6, 200];
        let s = generate(&t, &[5, 17, 5], &negs, 1, 3, 0).unwrap();
        let block = s.node.len() / 3;
        // level 1 has 2 live nodes: one negative at most; level 7 (leaves) has 100: 99 others.
        assert_eq!(
            block,
            (1 + 1) + (1 + 2) + (1 + 3) + (1 + 4) + (1 + 5) + (1 + 6) + (1 + 99)
        );
        for e in 0..3 {
            let rows = e * block..(e + 1) * block;
            let leaf = t.leaf_of([5, 17, 5][e]).unwrap();
            for l in 1..=7u32 {
                let at: Vec<usize> = rows.clone().filter(|&r| s.level[r] == l as i64).collect();
                let pos: Vec<usize> = at.iter().copied().filter(|&r| s.label[r] == 1.0).collect();
                assert_eq!(pos.len(), 1);
                assert_eq!(s.node[pos[0]] as u64, t.ancestor(leaf, l).unwrap());
                let mut negs: Vec<i64> = at
                    .iter()
                    .filter(|&&r| s.label[r] == 0.0)
                    .map(|&r| s.node[r])
                    .collect();
                let n = negs.len();
                negs.sort();
                negs.dedup();
                assert_eq!(negs.len(), n, "negatives are distinct");
                for &g in &negs {
                    assert!(t.is_live(g as u64) && g != s.node[pos[0]]);
                }
                assert!(rows.clone().all(|r| s.example[r] == e as i64));
            }
        }
    }

    #[test]
    fn seeded_and_thread_count_independent() {
        let t = tree();
        let negs = vec![0, 1, 1, 2, 2, 3, 3, 10];
        let targets: Vec<i64> = (0..100).collect();
        let a = crate::parallel::run(Some(1), || generate(&t, &targets, &negs, 1, 42, 0)).unwrap();
        let b = crate::parallel::run(Some(2), || generate(&t, &targets, &negs, 1, 42, 0)).unwrap();
        let c = generate(&t, &targets, &negs, 1, 43, 0).unwrap();
        assert_eq!(a, b);
        assert_ne!(a.node, c.node);
    }

    #[test]
    fn chunks_with_their_first_stream_equal_the_whole() {
        let t = tree();
        let negs = [0, 1, 1, 2, 2, 3, 3, 4];
        let targets: Vec<i64> = (0..50).map(|i| (i * 7) % 40).collect();
        let whole = generate(&t, &targets, &negs, 1, 9, 0).unwrap();
        let (a, b) = targets.split_at(17);
        let (sa, sb) = (
            generate(&t, a, &negs, 1, 9, 0).unwrap(),
            generate(&t, b, &negs, 1, 9, 17).unwrap(),
        );
        assert_eq!(whole.node, [sa.node, sb.node].concat());
        assert_eq!(whole.label, [sa.label, sb.label].concat());
        assert_ne!(
            whole.node,
            generate(&t, &targets, &negs, 1, 9, 1).unwrap().node
        );
    }

    #[test]
    fn negatives_are_roughly_uniform() {
        let t = tree();
        let mut negs = vec![0; 8];
        negs[7] = 1;
        let s = generate(&t, &vec![0; 20000], &negs, 7, 5, 0).unwrap();
        let mut counts = std::collections::HashMap::new();
        for r in 0..s.node.len() {
            if s.label[r] == 0.0 {
                *counts.entry(s.node[r]).or_insert(0) += 1;
            }
        }
        assert_eq!(counts.len(), 99);
        // 20000 draws over 99 nodes: ~202 each; 5 sigma is ~71.
        assert!(
            counts.values().all(|&c| (130..275).contains(&c)),
            "{counts:?}"
        );
    }

    #[test]
    fn bad_arguments() {
        let t = tree();
        assert!(generate(&t, &[1], &[0; 3], 1, 0, 0).is_err());
        assert!(generate(&t, &[1], &[0, 0, 0, 0, 0, 0, 0, -1], 1, 0, 0).is_err());
        assert!(generate(&t, &[1000], &[0; 8], 1, 0, 0).is_err());
        assert!(generate(&t, &[1], &[0; 8], 9, 0, 0).is_err());
    }
}
