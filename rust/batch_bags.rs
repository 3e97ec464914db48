//! A training batch's embedding rows and window bags, from its examples' behaviour leaves
//! (docs/design.md §4.3).
//!
//! The fused training step (`window_bags.rs`) takes the batch's distinct embedding rows, each
//! real behaviour's place among them (grouped into bags: one per user row and window) and each
//! sampled node's place. With the hierarchical representation a user row is an example at a
//! level `1..=L`, its behaviours the ancestors there of the behaviour leaves. torch built these
//! indices with a dozen whole-batch operations (ancestors, masks, prefix sums, a unique over
//! the node range), ~12 % of a training step on 2 threads; here it is one pass over the
//! batch's ids and a bitmap of the node range.

use crate::error::{JtmError, Result};
use crate::user_shares::level_starts;

/// `[examples, width]` behaviour leaves, most recent first, `-1` padded: example `e`'s
/// behaviours are `leaf[pos[e] - 1]`, `leaf[pos[e] - 2]`, … down to `row_start[e]`, at most
/// `width` of them (`jtm_rs.data.Windows`). torch took five whole-batch operations over
/// `[examples, width]` for this, an eighth of tree learning's time at 10^6 items.
pub fn example_leaves<P: Copy + Into<i64>>(
    leaf: &[i64],
    pos: &[P],
    row_start: &[P],
    examples: &[i64],
    width: usize,
) -> Result<Vec<i64>> {
    let n = pos.len();
    if row_start.len() != n {
        return Err(JtmError::InvalidArgument(format!(
            "{n} positions and {} row starts: one of each per example",
            row_start.len()
        )));
    }
    let mut out = vec![-1i64; examples.len() * width];
    for (row, &e) in out.chunks_exact_mut(width.max(1)).zip(examples) {
        if e < 0 || e as usize >= n {
            return Err(JtmError::InvalidArgument(format!(
                "example {e} outside the {n} examples"
            )));
        }
        let (p, start) = (pos[e as usize].into(), row_start[e as usize].into());
        if start < 0 || p > leaf.len() as i64 {
            return Err(JtmError::InvalidArgument(format!(
                "example {e}'s behaviours {start}..{p} lie outside the {} leaves",
                leaf.len()
            )));
        }
        let take = (p - start).clamp(0, width as i64) as usize;
        for (o, j) in row[..take].iter_mut().zip(1..) {
            *o = leaf[(p - j) as usize];
        }
    }
    Ok(out)
}

/// `(the distinct ids ascending, each id's rank among them)` of `ids` in `0..n_ids`: `unique`
/// with its inverse, from a bitmap of the id range (~160 KB for 10^6 tree nodes, in cache),
/// not a sort or a rank per id of the range.
pub fn unique_ranks(ids: &[i64], n_ids: usize) -> Result<(Vec<i64>, Vec<i64>)> {
    if let Some(bad) = ids.iter().find(|&&i| i < 0 || i as usize >= n_ids) {
        return Err(JtmError::InvalidArgument(format!(
            "id {bad} outside 0..{n_ids}"
        )));
    }
    let words = n_ids.div_ceil(64);
    let mut bits = vec![0u64; words];
    for &i in ids {
        bits[i as usize / 64] |= 1 << (i % 64);
    }
    let mut before = Vec::with_capacity(words);
    let mut count = 0i64;
    for &w in &bits {
        before.push(count);
        count += w.count_ones() as i64;
    }
    let mut unique = Vec::with_capacity(count as usize);
    for (k, &w) in bits.iter().enumerate() {
        let mut w = w;
        while w != 0 {
            unique.push((k * 64) as i64 + w.trailing_zeros() as i64);
            w &= w - 1;
        }
    }
    let rank = |i: i64| {
        let (k, b) = (i as usize / 64, i % 64);
        before[k] + (bits[k] & ((1u64 << b) - 1)).count_ones() as i64
    };
    Ok((unique, ids.iter().map(|&i| rank(i)).collect()))
}

/// The indices of one batch. `unique` (ascending, distinct) are the embedding rows it uses,
/// `n_nodes` standing for padding; behaviour `i` of the bags is row `bag_rows[i]` of them, bag
/// `k` (user row `k / windows`, window `k % windows`) holds `bag_rows[offsets[k]..offsets[k + 1]]`
/// (the last bag ends at the end); sampled node `p` is row `local_nodes[p]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BatchBags {
    pub unique: Vec<i64>,
    pub bag_rows: Vec<i64>,
    pub offsets: Vec<i64>,
    pub local_nodes: Vec<i64>,
}

/// The tree the leaves sit in, for the hierarchical representation: every example becomes
/// `leaf_level` user rows, its behaviours at levels `1..=leaf_level`.
#[derive(Clone, Copy, Debug)]
pub struct Levels {
    pub arity: usize,
    pub leaf_level: usize,
}

/// [`BatchBags`] of examples `leaves` (`[examples, width]` behaviour leaves, most recent first,
/// `-1` padding) read through `windows` (consecutive window sizes; behaviours past their sum
/// are not read), and of the sampled `nodes` (`-1`: padding), ids in `0..n_nodes`.
pub fn batch_bags(
    leaves: &[i64],
    width: usize,
    windows: &[usize],
    levels: Option<Levels>,
    nodes: &[i64],
    n_nodes: usize,
) -> Result<BatchBags> {
    let bad = |m: String| Err(JtmError::InvalidArgument(m));
    if width == 0 || !leaves.len().is_multiple_of(width) {
        return bad(format!(
            "{} behaviours are not rows of {width}",
            leaves.len()
        ));
    }
    let n_ids = n_nodes as i64;
    if let Some(&b) = leaves.iter().chain(nodes).find(|&&b| b < -1 || b >= n_ids) {
        return bad(format!("node id {b} is outside 0..{n_nodes} (or -1)"));
    }
    let starts = match levels {
        Some(l) if l.arity < 2 || l.leaf_level == 0 => {
            return bad(format!(
                "a tree of arity {} with {} levels below the root has no hierarchy",
                l.arity, l.leaf_level
            ))
        }
        Some(l) => {
            let s = level_starts(l.arity, l.leaf_level);
            if let Some(&b) = leaves.iter().find(|&&b| b >= 0 && b < s[l.leaf_level]) {
                return bad(format!(
                    "behaviour {b} is not a leaf (leaves start at node {})",
                    s[l.leaf_level]
                ));
            }
            Some(s)
        }
        None => None,
    };
    let examples = leaves.len() / width;
    let depth = levels.map_or(1, |l| l.leaf_level);
    let n_windows = windows.len();
    // Window bounds within a row, clamped to the columns the rows have.
    let mut bounds = Vec::with_capacity(n_windows + 1);
    bounds.push(0usize);
    for &w in windows {
        bounds.push((bounds[bounds.len() - 1] + w).min(width));
    }
    let mut ids = Vec::with_capacity(examples * depth * bounds[n_windows]);
    let mut offsets = Vec::with_capacity(examples * depth * n_windows);
    for row in leaves.chunks_exact(width) {
        for step in 0..depth {
            for w in 0..n_windows {
                offsets.push(ids.len() as i64);
                let real = row[bounds[w]..bounds[w + 1]].iter().filter(|&&b| b >= 0);
                match (levels, &starts) {
                    (Some(l), Some(s)) => {
                        let level = step + 1;
                        let span = (l.arity as i64).pow((l.leaf_level - level) as u32);
                        let first = s[l.leaf_level];
                        ids.extend(real.map(|&b| s[level] + (b - first) / span));
                    }
                    _ => ids.extend(real.copied()),
                }
            }
        }
    }
    let n_kept = ids.len();
    ids.extend(nodes.iter().map(|&n| if n < 0 { n_ids } else { n }));
    let (unique, mut local) = unique_ranks(&ids, n_nodes + 1)?;
    let local_nodes = local.split_off(n_kept);
    Ok(BatchBags {
        unique,
        bag_rows: local,
        offsets,
        local_nodes,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    // A binary tree with 3 levels below the root: leaves 7..15.
    const TREE: Levels = Levels {
        arity: 2,
        leaf_level: 3,
    };
    const N_NODES: usize = 15;

    fn ancestor(leaf: i64, level: usize) -> i64 {
        let mut n = leaf;
        for _ in level..TREE.leaf_level {
            n = (n - 1) / 2;
        }
        n
    }

    /// What the indices mean: the bags rebuilt as node ids, and the nodes.
    fn expand(b: &BatchBags) -> (Vec<Vec<i64>>, Vec<i64>) {
        let ends: Vec<i64> = b.offsets[1..]
            .iter()
            .copied()
            .chain([b.bag_rows.len() as i64])
            .collect();
        let bags = b
            .offsets
            .iter()
            .zip(&ends)
            .map(|(&lo, &hi)| {
                b.bag_rows[lo as usize..hi as usize]
                    .iter()
                    .map(|&r| b.unique[r as usize])
                    .collect()
            })
            .collect();
        let nodes = b
            .local_nodes
            .iter()
            .map(|&r| b.unique[r as usize])
            .collect();
        (bags, nodes)
    }

    #[test]
    fn unique_ranks_are_sorts_unique_and_inverse() {
        let ids: Vec<i64> = (0..500).map(|i| (i * 7919) % 333 + (i % 3) * 64).collect();
        let (unique, ranks) = unique_ranks(&ids, 500).unwrap();
        let mut want = ids.clone();
        want.sort_unstable();
        want.dedup();
        assert_eq!(unique, want);
        for (&i, &r) in ids.iter().zip(&ranks) {
            assert_eq!(unique[r as usize], i);
        }
        assert!(unique_ranks(&[3, 500], 500).is_err());
        assert!(unique_ranks(&[-1], 500).is_err());
        assert_eq!(unique_ranks(&[], 10).unwrap(), (vec![], vec![]));
    }

    #[test]
    fn example_leaves_are_the_behaviours_most_recent_first() {
        // Two users' rows in one column: leaves 10..=14 (user 1), 20..=22 (user 2).
        let leaf = [10i64, 11, 12, 13, 14, 20, 21, 22];
        let (pos, start) = ([4i32, 1, 7, 5], [0i32, 0, 5, 5]);
        let got = example_leaves(&leaf, &pos, &start, &[0, 1, 2, 3], 3).unwrap();
        assert_eq!(
            got,
            [13, 12, 11, 10, -1, -1, 21, 20, -1, -1, -1, -1],
            "width 3 keeps the 3 most recent"
        );
        let pos64: Vec<i64> = pos.iter().map(|&p| p as i64).collect();
        let start64: Vec<i64> = start.iter().map(|&p| p as i64).collect();
        assert_eq!(
            example_leaves(&leaf, &pos64, &start64, &[2, 0], 2).unwrap(),
            [21, 20, 13, 12]
        );
        assert!(example_leaves(&leaf, &pos, &start, &[4], 3).is_err());
        assert!(example_leaves(&leaf, &[9i32], &[0i32], &[0], 3).is_err());
        assert!(example_leaves(&leaf, &pos, &start[..2], &[0], 3).is_err());
    }

    #[test]
    fn bags_hold_each_levels_ancestors_of_the_real_behaviours() {
        // Two examples of width 4 in windows of 1 and 2 (the last column is not read).
        let leaves = [9, -1, 14, 8, 12, 7, -1, -1];
        let nodes = [1, 2, -1, 13, 4, 5];
        let b = batch_bags(&leaves, 4, &[1, 2], Some(TREE), &nodes, N_NODES).unwrap();
        let (bags, got_nodes) = expand(&b);
        let mut want = Vec::new();
        for row in leaves.chunks(4) {
            for level in 1..=TREE.leaf_level {
                want.push(
                    vec![ancestor(row[0], level)]
                        .into_iter()
                        .filter(|_| row[0] >= 0)
                        .collect::<Vec<_>>(),
                );
                want.push(
                    row[1..3]
                        .iter()
                        .filter(|&&x| x >= 0)
                        .map(|&x| ancestor(x, level))
                        .collect(),
                );
            }
        }
        assert_eq!(bags, want);
        assert_eq!(got_nodes, vec![1, 2, N_NODES as i64, 13, 4, 5]);
        let mut sorted = b.unique.clone();
        sorted.dedup();
        assert!(sorted.windows(2).all(|w| w[0] < w[1]));
        assert_eq!(sorted.len(), b.unique.len());
        // Every id used and nothing else.
        let mut used: Vec<i64> = bags.concat().into_iter().chain(got_nodes).collect();
        used.sort_unstable();
        used.dedup();
        assert_eq!(used, b.unique);
    }

    #[test]
    fn without_levels_the_leaves_are_the_behaviours() {
        let leaves = [9, 10, -1, 11];
        let b = batch_bags(&leaves, 2, &[1, 5], None, &[7], N_NODES).unwrap();
        let (bags, nodes) = expand(&b);
        assert_eq!(bags, vec![vec![9], vec![10], vec![], vec![11]]);
        assert_eq!(nodes, vec![7]);
        assert_eq!(b.unique, vec![7, 9, 10, 11]);
    }

    #[test]
    fn ids_across_bitmap_words_keep_their_ranks() {
        // 200 nodes: ids on both sides of the 64-bit word boundaries.
        let nodes: Vec<i64> = vec![199, 63, 64, 0, 127, 128, 63, -1];
        let b = batch_bags(&[-1], 1, &[1], None, &nodes, 200).unwrap();
        assert_eq!(b.unique, vec![0, 63, 64, 127, 128, 199, 200]);
        assert_eq!(b.local_nodes, vec![5, 1, 2, 0, 3, 4, 1, 6]);
        assert!(b.bag_rows.is_empty());
    }

    #[test]
    fn bad_input_is_refused() {
        let too_big = batch_bags(&[15], 1, &[1], Some(TREE), &[], N_NODES);
        assert!(too_big.is_err());
        let not_a_leaf = batch_bags(&[3], 1, &[1], Some(TREE), &[], N_NODES);
        assert!(not_a_leaf.is_err());
        assert!(batch_bags(&[7, 8, 9], 2, &[1], None, &[], N_NODES).is_err());
        assert!(batch_bags(&[7], 1, &[1], None, &[-2], N_NODES).is_err());
        let flat = Levels {
            arity: 1,
            leaf_level: 3,
        };
        assert!(batch_bags(&[7], 1, &[1], Some(flat), &[], N_NODES).is_err());
    }
}
