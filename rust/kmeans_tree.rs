//! The initial tree from item embeddings (docs/design.md §4.1): recursive balanced k-means, as TDM
//! builds its initial tree and re-clusters it from learned leaf embeddings (the "clustering"
//! tree learning of the paper's Figure 2).
//!
//! At every node the node's items are split into `arity` clusters of exactly the sizes that
//! [`Tree::from_order`] gives the node's children (near-equal, larger ones first), so the items'
//! order after the recursion *is* the leaf order and the tree is as balanced as any built from
//! an order. Each split runs Lloyd iterations whose assignment step is capacity-constrained:
//! cluster `c` (in turn) takes the items that prefer it most over the best remaining cluster —
//! for `arity = 2` this is TDM's split by distance difference, which is the optimal balanced
//! 2-way assignment for fixed centroids. Children are split in parallel (rayon), and the result
//! depends only on the seed, never on the thread count.

use crate::error::{invalid, Result};
use crate::rng::SplitMix64;
use crate::tree::{default_leaf_level, Tree};

/// Parameters of [`kmeans_tree`].
#[derive(Clone, Debug)]
pub struct KMeansOptions {
    pub arity: u64,
    pub leaf_level: Option<u32>,
    /// Lloyd iterations per split.
    pub iterations: u32,
    pub seed: u64,
}

impl Default for KMeansOptions {
    fn default() -> Self {
        KMeansOptions {
            arity: 2,
            leaf_level: None,
            iterations: 10,
            seed: 0,
        }
    }
}

/// Row-major `n × dim` embeddings, one row per item.
pub struct Embeddings<'a> {
    pub data: &'a [f32],
    pub dim: usize,
}

impl Embeddings<'_> {
    fn row(&self, i: usize) -> &[f32] {
        &self.data[i * self.dim..(i + 1) * self.dim]
    }
}

/// Builds a tree over `item_ids` whose leaves follow a recursive balanced k-means of
/// `embeddings` (row `i` belongs to `item_ids[i]`). Deterministic for a seed.
pub fn kmeans_tree(
    item_ids: &[i64],
    embeddings: &[f32],
    dim: usize,
    opts: &KMeansOptions,
) -> Result<Tree> {
    let order = kmeans_leaf_order(item_ids, embeddings, dim, opts, Share::WHOLE)?;
    Tree::from_order(&order.items, opts.arity, Some(order.leaf_level))
}

/// One of `parts` processes' share of the k-means recursion (a distributed run's rank among
/// its world). The subtrees of the first level with at least `parts` nodes are dealt out
/// round-robin, node `j` of that level to part `j % parts`; every part computes the levels
/// above. A subtree's split depends only on its items and its seed, never on the others, so
/// the parts' orders put together are the one-process order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Share {
    pub part: usize,
    pub parts: usize,
}

impl Share {
    /// The whole recursion, in one process.
    pub const WHOLE: Share = Share { part: 0, parts: 1 };
}

/// The items in leaf order as [`kmeans_tree`] builds it, or one [`Share`] of it.
pub struct LeafOrder {
    /// Item ids in leaf order; with a share, only the positions this part owns are final.
    pub items: Vec<i64>,
    /// The part that computes each position (0 where every part computes it).
    pub owner: Vec<u32>,
    pub leaf_level: u32,
}

/// The leaf order of [`kmeans_tree`] (all of it, or `share`'s part) and which part owns each
/// position: taking every position from its owner's order gives the one-process order.
pub fn kmeans_leaf_order(
    item_ids: &[i64],
    embeddings: &[f32],
    dim: usize,
    opts: &KMeansOptions,
    share: Share,
) -> Result<LeafOrder> {
    let n = item_ids.len();
    if opts.arity < 2 {
        return invalid!("arity must be at least 2, got {}", opts.arity);
    }
    if dim == 0 {
        return invalid!("embeddings need at least one dimension");
    }
    if share.parts == 0 || share.part >= share.parts {
        return invalid!(
            "part {} of {} parts: parts must be at least 1 and part below it",
            share.part,
            share.parts
        );
    }
    if embeddings.len() != n * dim {
        return invalid!(
            "embeddings hold {} values, expected {} items × {} dimensions",
            embeddings.len(),
            n,
            dim
        );
    }
    if let Some(i) = embeddings.iter().position(|v| !v.is_finite()) {
        return invalid!(
            "embedding of item {} holds NaN or infinity",
            item_ids[i / dim]
        );
    }
    let leaf_level = opts
        .leaf_level
        .unwrap_or_else(|| default_leaf_level(n, opts.arity));
    let emb = Embeddings {
        data: embeddings,
        dim,
    };
    let dealt = Dealt::new(share, opts.arity);
    let mut order: Vec<u32> = (0..n as u32).collect();
    split(&emb, &mut order, 0, 0, leaf_level, opts, opts.seed, &dealt);
    let mut owner = vec![0u32; n];
    owners(&mut owner, 0, 0, leaf_level, opts.arity as usize, &dealt);
    Ok(LeafOrder {
        items: order.iter().map(|&i| item_ids[i as usize]).collect(),
        owner,
        leaf_level,
    })
}

/// A [`Share`] made concrete: the level whose subtrees are dealt out.
struct Dealt {
    share: Share,
    level: u32,
}

impl Dealt {
    fn new(share: Share, arity: u64) -> Dealt {
        let (mut level, mut nodes) = (0u32, 1u64);
        while nodes < share.parts as u64 {
            nodes = nodes.saturating_mul(arity);
            level += 1;
        }
        Dealt { share, level }
    }

    /// The part that splits node `index` of `level` (None above the dealt level: every part).
    fn part_of(&self, level: u32, index: u64) -> Option<usize> {
        (level == self.level).then(|| (index % self.share.parts as u64) as usize)
    }
}

/// Writes into `owner` (the positions of one node's items) the part that orders them.
fn owners(owner: &mut [u32], level: u32, index: u64, leaf_level: u32, arity: usize, dealt: &Dealt) {
    if let Some(part) = dealt.part_of(level, index) {
        owner.fill(part as u32);
        return;
    }
    if owner.len() <= 1 || level >= leaf_level {
        return; // every part ordered these alike: owner 0 stands
    }
    let mut rest = owner;
    for (c, s) in part_sizes(rest.len(), arity).into_iter().enumerate() {
        let (head, tail) = rest.split_at_mut(s);
        owners(
            head,
            level + 1,
            index * arity as u64 + c as u64,
            leaf_level,
            arity,
            dealt,
        );
        rest = tail;
    }
}

/// Child sizes of a node holding `n` items, as [`Tree::from_order`] splits them.
fn part_sizes(n: usize, arity: usize) -> Vec<usize> {
    let (base, extra) = (n / arity, n % arity);
    (0..arity).map(|c| base + usize::from(c < extra)).collect()
}

/// Orders `items` (indices into `emb`) so that consecutive runs of the part sizes are the
/// clusters, recursively down to the leaves.
/// `index` is the node's position in its level, for [`Dealt`]: another part's subtree is left
/// as it is.
#[allow(clippy::too_many_arguments)]
fn split(
    emb: &Embeddings,
    items: &mut [u32],
    level: u32,
    index: u64,
    leaf_level: u32,
    opts: &KMeansOptions,
    seed: u64,
    dealt: &Dealt,
) {
    let arity = opts.arity as usize;
    if dealt
        .part_of(level, index)
        .is_some_and(|p| p != dealt.share.part)
    {
        return;
    }
    if items.len() <= 1 || level >= leaf_level {
        return;
    }
    let sizes = part_sizes(items.len(), arity);
    let assignment = balanced_kmeans(emb, items, &sizes, opts.iterations, seed);
    // Stable reorder by cluster.
    let mut keyed: Vec<(u32, u32)> = assignment
        .iter()
        .copied()
        .zip(items.iter().copied())
        .collect();
    keyed.sort_by_key(|k| k.0);
    for (slot, k) in items.iter_mut().zip(keyed) {
        *slot = k.1;
    }
    let mut parts: Vec<&mut [u32]> = Vec::with_capacity(arity);
    let mut rest = items;
    for &s in &sizes {
        let (head, tail) = rest.split_at_mut(s);
        parts.push(head);
        rest = tail;
    }
    let child_seed = |c: usize| {
        SplitMix64::new(seed ^ (0x9E37_79B9_7F4A_7C15u64.wrapping_mul(c as u64 + 1))).next_u64()
    };
    if parts.iter().map(|p| p.len()).sum::<usize>() > 4096 {
        rayon::scope(|s| {
            for (c, part) in parts.into_iter().enumerate() {
                let cs = child_seed(c);
                let ci = index * arity as u64 + c as u64;
                s.spawn(move |_| split(emb, part, level + 1, ci, leaf_level, opts, cs, dealt));
            }
        });
    } else {
        for (c, part) in parts.into_iter().enumerate() {
            let ci = index * arity as u64 + c as u64;
            split(
                emb,
                part,
                level + 1,
                ci,
                leaf_level,
                opts,
                child_seed(c),
                dealt,
            );
        }
    }
}

fn sq_dist(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| (x - y) * (x - y)).sum()
}

/// Cluster (0..sizes.len()) of every item, cluster `c` holding exactly `sizes[c]` items.
fn balanced_kmeans(
    emb: &Embeddings,
    items: &[u32],
    sizes: &[usize],
    iterations: u32,
    seed: u64,
) -> Vec<u32> {
    use rayon::prelude::*;
    let k = sizes.len();
    let dim = emb.dim;
    let n = items.len();
    // Initial centroids: k distinct items drawn with the seed.
    let mut rng = SplitMix64::new(seed);
    let mut picks: Vec<usize> = Vec::with_capacity(k);
    while picks.len() < k.min(n) {
        let p = (rng.next_u64() % n as u64) as usize;
        if !picks.contains(&p) {
            picks.push(p);
        }
    }
    let mut centroids: Vec<f32> = picks
        .iter()
        .flat_map(|&p| emb.row(items[p] as usize).iter().copied())
        .collect();
    centroids.resize(k * dim, 0.0);
    let mut assignment = vec![0u32; n];
    let parallel = n >= 8192;
    for _ in 0..iterations.max(1) {
        let dist_of = |&i: &u32| -> Vec<f32> {
            let x = emb.row(i as usize);
            (0..k)
                .map(|c| sq_dist(x, &centroids[c * dim..(c + 1) * dim]))
                .collect()
        };
        let dist: Vec<Vec<f32>> = if parallel {
            items.par_iter().map(dist_of).collect()
        } else {
            items.iter().map(dist_of).collect()
        };
        let new_assignment = capacitated_assign(&dist, sizes);
        let changed = new_assignment != assignment;
        assignment = new_assignment;
        // Update step: centroid = mean of the cluster's items.
        let mut sums = vec![0f64; k * dim];
        let mut counts = vec![0usize; k];
        for (&i, &c) in items.iter().zip(&assignment) {
            let c = c as usize;
            counts[c] += 1;
            for (s, v) in sums[c * dim..(c + 1) * dim]
                .iter_mut()
                .zip(emb.row(i as usize))
            {
                *s += *v as f64;
            }
        }
        for c in 0..k {
            if counts[c] > 0 {
                for d in 0..dim {
                    centroids[c * dim + d] = (sums[c * dim + d] / counts[c] as f64) as f32;
                }
            }
        }
        if !changed {
            break;
        }
    }
    assignment
}

/// Fills clusters in turn: cluster `c` takes the `sizes[c]` unassigned items with the
/// smallest `dist[c] − min over later clusters`, i.e. those that lose most by going elsewhere.
/// Ties break by item position, so the result is deterministic.
fn capacitated_assign(dist: &[Vec<f32>], sizes: &[usize]) -> Vec<u32> {
    let k = sizes.len();
    let n = dist.len();
    let mut assignment = vec![u32::MAX; n];
    let mut free: Vec<usize> = (0..n).collect();
    for c in 0..k {
        if c == k - 1 {
            for &i in &free {
                assignment[i] = c as u32;
            }
            break;
        }
        let key = |i: usize| {
            let best_later = dist[i][c + 1..]
                .iter()
                .copied()
                .fold(f32::INFINITY, f32::min);
            dist[i][c] - best_later
        };
        let mut keyed: Vec<(f32, usize)> = free.iter().map(|&i| (key(i), i)).collect();
        let take = sizes[c].min(keyed.len());
        if take < keyed.len() {
            keyed.select_nth_unstable_by(take, |a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
        }
        for &(_, i) in &keyed[..take] {
            assignment[i] = c as u32;
        }
        free = keyed[take..].iter().map(|k| k.1).collect();
        free.sort_unstable();
    }
    assignment
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Items in `groups` well-separated clusters of `per` points on a line in 2-D.
    fn clustered(groups: usize, per: usize) -> (Vec<i64>, Vec<f32>) {
        let mut ids = Vec::new();
        let mut emb = Vec::new();
        let mut rng = SplitMix64::new(7);
        for g in 0..groups {
            for j in 0..per {
                ids.push((g * per + j) as i64 * 13 - 50);
                let jitter = (rng.next_u64() % 1000) as f32 / 1000.0;
                emb.extend_from_slice(&[g as f32 * 100.0 + jitter, (g % 3) as f32 * 50.0 - jitter]);
            }
        }
        // Shuffle rows so the input order carries no cluster information.
        let n = ids.len();
        let mut perm: Vec<usize> = (0..n).collect();
        rng.shuffle(&mut perm);
        let ids2 = perm.iter().map(|&p| ids[p]).collect();
        let emb2 = perm
            .iter()
            .flat_map(|&p| emb[p * 2..p * 2 + 2].to_vec())
            .collect();
        (ids2, emb2)
    }

    #[test]
    fn recovers_separated_clusters_and_is_balanced() {
        let (ids, emb) = clustered(8, 16);
        let tree = kmeans_tree(&ids, &emb, 2, &KMeansOptions::default()).unwrap();
        tree.validate().unwrap();
        assert_eq!(tree.leaf_level(), 7);
        // Every planted group of 16 items lands under one level-3 node (capacity 16).
        for g in 0..8 {
            let mut anc: Vec<u64> = (0..16)
                .map(|j| {
                    let id = (g * 16 + j) as i64 * 13 - 50;
                    tree.ancestor(tree.leaf_of(id).unwrap(), 3).unwrap()
                })
                .collect();
            anc.dedup();
            assert_eq!(anc.len(), 1, "group {g} split across {anc:?}");
        }
    }

    #[test]
    fn deterministic_for_a_seed_and_independent_of_threads() {
        let (ids, emb) = clustered(5, 2000);
        let opts = KMeansOptions {
            arity: 3,
            ..Default::default()
        };
        let a = kmeans_tree(&ids, &emb, 2, &opts).unwrap();
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(1)
            .build()
            .unwrap();
        let b = pool.install(|| kmeans_tree(&ids, &emb, 2, &opts).unwrap());
        assert_eq!(a.item_leaves(), b.item_leaves());
        let c = kmeans_tree(&ids, &emb, 2, &KMeansOptions { seed: 9, ..opts }).unwrap();
        c.validate().unwrap();
    }

    #[test]
    fn shares_put_together_are_the_whole_order() {
        let (ids, emb) = clustered(6, 700);
        for arity in [2u64, 3] {
            let opts = KMeansOptions {
                arity,
                seed: 3,
                ..Default::default()
            };
            let whole = kmeans_leaf_order(&ids, &emb, 2, &opts, Share::WHOLE).unwrap();
            assert!(whole.owner.iter().all(|&o| o == 0));
            for parts in [2usize, 3, 4, 5] {
                let shares: Vec<LeafOrder> = (0..parts)
                    .map(|part| {
                        kmeans_leaf_order(&ids, &emb, 2, &opts, Share { part, parts }).unwrap()
                    })
                    .collect();
                let owner = &shares[0].owner;
                // Every part owns some positions and agrees on who owns what.
                for (p, s) in shares.iter().enumerate() {
                    assert_eq!(&s.owner, owner);
                    assert!(
                        owner.contains(&(p as u32)),
                        "part {p} of {parts} owns nothing"
                    );
                }
                let put_together: Vec<i64> = (0..ids.len())
                    .map(|i| shares[owner[i] as usize].items[i])
                    .collect();
                assert_eq!(put_together, whole.items, "arity {arity}, {parts} parts");
                // A part leaves the others' subtrees unordered.
                assert_ne!(shares[1].items, whole.items);
            }
        }
        assert!(kmeans_leaf_order(
            &ids,
            &emb,
            2,
            &KMeansOptions::default(),
            Share { part: 2, parts: 2 }
        )
        .is_err());
    }

    #[test]
    fn children_sizes_match_from_order() {
        // 11 items, arity 3: every internal node's live children differ in size by at most one.
        let ids: Vec<i64> = (0..11).collect();
        let emb: Vec<f32> = (0..11).map(|i| (i * i) as f32).collect();
        let tree = kmeans_tree(
            &ids,
            &emb,
            1,
            &KMeansOptions {
                arity: 3,
                ..Default::default()
            },
        )
        .unwrap();
        tree.validate().unwrap();
        for l in 0..tree.leaf_level() {
            for &node in tree.live_nodes(l).unwrap() {
                let counts: Vec<usize> = tree
                    .children(node)
                    .unwrap()
                    .map(|ch| {
                        let r = tree.descendants(ch, tree.leaf_level()).unwrap();
                        tree.item_leaves()
                            .iter()
                            .filter(|&&lf| r.contains(&lf))
                            .count()
                    })
                    .collect();
                let (mn, mx) = (counts.iter().min().unwrap(), counts.iter().max().unwrap());
                assert!(mx - mn <= 1, "node {node}: {counts:?}");
            }
        }
    }

    #[test]
    fn rejects_bad_input() {
        assert!(kmeans_tree(&[1, 2], &[0.0; 3], 2, &KMeansOptions::default()).is_err());
        assert!(kmeans_tree(&[1, 2], &[0.0, f32::NAN], 1, &KMeansOptions::default()).is_err());
        assert!(kmeans_tree(&[1, 1], &[0.0, 1.0], 1, &KMeansOptions::default()).is_err());
        assert!(kmeans_tree(
            &[1],
            &[0.0],
            1,
            &KMeansOptions {
                arity: 1,
                ..Default::default()
            }
        )
        .is_err());
    }
}
