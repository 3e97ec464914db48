//! The tree index (docs/design.md §2): a complete b-ary tree with heap-ordered node ids, items on a
//! subset of its leaves.
//!
//! Node arithmetic: root 0, children of n are `b·n+1 … b·n+b`, parent `(n−1)/b`, level l holds
//! `[(b^l−1)/(b−1), (b^(l+1)−1)/(b−1))`. The descendants of n at a deeper level form one
//! contiguous id range, so nothing is stored per node except the sorted lists of live nodes.

use crate::error::{invalid, JtmError, Result};
use crate::rng::SplitMix64;

/// Largest node id we hand out must fit an int64 on the Python side.
const MAX_NODE_ID: u128 = i64::MAX as u128;
/// Largest array of node ids one call returns (2^32 ids, 32 GiB): beyond it the request is
/// refused with its size rather than left to abort the process in the allocator.
pub const MAX_OUTPUT_ELEMENTS: u128 = 1 << 32;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Tree {
    arity: u64,
    leaf_level: u32,
    /// `level_start[l]` is the first node id of level l, for l in `0..=leaf_level + 1`.
    level_start: Vec<u64>,
    /// Item ids in ascending order (unique); the item index used everywhere is a position here.
    item_ids: Vec<i64>,
    /// `(first id, index by id - first, u32::MAX for a hole)` when the ids span at most about
    /// twice their number, as the loaders' internal ids do (holes are items filtering dropped):
    /// one load instead of a binary search per lookup, and every behaviour's leaf is looked up
    /// each round (10^8 lookups; 7x faster at 10^6 items, docs/scale.md).
    dense_index: Option<(i64, Vec<u32>)>,
    /// Leaf node of `item_ids[i]`.
    item_leaf: Vec<u64>,
    /// Live node ids per level, ascending. `live[leaf_level]` lists occupied leaves.
    live: Vec<Vec<u64>>,
    /// Item index of the item on `live[leaf_level][j]`.
    live_leaf_item: Vec<u32>,
    /// Per level, where some nodes are not live and the level is at most [`RANK_SPREAD`] times
    /// wider than its live list: `rank[i]` = live nodes of the level with an id below
    /// `level_start + i` (`width + 1` entries). A beam search looks up the live children of
    /// every beam node at every level; two binary searches over 10^6 leaves were ~15 % of a
    /// batched search at 10^6 items.
    live_rank: Vec<Option<Vec<u32>>>,
}

/// Levels wider than this many times their live nodes (plus a few thousand) keep binary
/// searches instead of a rank table, so a deep, sparse tree costs no memory.
const RANK_SPREAD: u64 = 8;

/// The rank table of one level's ascending `live` ids within `first..first + width` (see
/// `Tree::live_rank`), or None where the level is full or too sparse.
fn live_rank(live: &[u64], first: u64, width: u64) -> Option<Vec<u32>> {
    let n = live.len() as u64;
    if n == width || width > RANK_SPREAD * n + 4096 || n >= u32::MAX as u64 {
        return None;
    }
    let mut rank = Vec::with_capacity(width as usize + 1);
    let mut j = 0usize;
    for id in first..=first + width {
        while j < live.len() && live[j] < id {
            j += 1;
        }
        rank.push(j as u32);
    }
    Some(rank)
}

/// The dense id → index table of ascending unique `ids` (see `Tree::dense_index`), or None
/// where they spread over more than about twice their number.
fn dense_index(ids: &[i64]) -> Option<(i64, Vec<u32>)> {
    let (&first, &last) = (ids.first()?, ids.last()?);
    let span = usize::try_from(last.checked_sub(first)?)
        .ok()?
        .checked_add(1)?;
    if span > 2 * ids.len() + 1024 || ids.len() >= u32::MAX as usize {
        return None;
    }
    let mut index = vec![u32::MAX; span];
    for (i, &id) in ids.iter().enumerate() {
        index[(id - first) as usize] = i as u32;
    }
    Some((first, index))
}

/// Smallest leaf level L ≥ 1 with `arity^L ≥ n_items`.
pub fn default_leaf_level(n_items: usize, arity: u64) -> u32 {
    let mut level = 1;
    let mut cap = arity as u128;
    while cap < n_items as u128 {
        cap *= arity as u128;
        level += 1;
    }
    level
}

/// The level that node id `node` sits at in any tree of `arity` (levels ≥ 1: node 0 counts
/// as level 1's, so a leaf set is never the root alone).
pub fn level_of_node(node: u64, arity: u64) -> u32 {
    let (mut start, mut width, mut level) = (1u128, arity as u128, 1u32);
    while start + width <= node as u128 {
        start += width;
        width *= arity as u128;
        level += 1;
    }
    level
}

fn check_shape(n_items: usize, arity: u64, leaf_level: u32) -> Result<Vec<u64>> {
    if arity < 2 {
        return invalid!("arity must be at least 2, got {arity}");
    }
    if n_items == 0 {
        return invalid!("the corpus is empty: a tree needs at least one item");
    }
    if n_items > u32::MAX as usize - 1 {
        return invalid!(
            "at most {} items are supported, got {n_items}",
            u32::MAX - 1
        );
    }
    if leaf_level == 0 {
        return invalid!("leaf_level must be at least 1");
    }
    // A level past 63 cannot be numbered in int64 whatever the arity: the loop below refuses
    // it within 65 steps, so reserve no more than that (a file may claim leaf_level = 2^32-1).
    let mut starts = Vec::with_capacity((leaf_level as usize).min(64) + 2);
    let (mut start, mut width) = (0u128, 1u128);
    for _ in 0..leaf_level as u64 + 2 {
        // The last start pushed is the node count, so every id stays below it.
        if start > MAX_NODE_ID + 1 {
            return invalid!("a tree of arity {arity} with leaf level {leaf_level} has more nodes than int64 can number");
        }
        starts.push(start as u64);
        start = start.saturating_add(width);
        width = width.saturating_mul(arity as u128);
    }
    let leaves = (starts[leaf_level as usize + 1] - starts[leaf_level as usize]) as u128;
    if (n_items as u128) > leaves {
        return invalid!(
            "{n_items} items do not fit on the {leaves} leaves of a tree of arity {arity} with leaf level {leaf_level}"
        );
    }
    Ok(starts)
}

impl Tree {
    // ----------------------------------------------------------------- construction

    /// The tree with `item_ids[i]` on leaf `leaves[i]` (node ids at `leaf_level`).
    pub fn from_leaves(
        item_ids: &[i64],
        leaves: &[u64],
        arity: u64,
        leaf_level: u32,
    ) -> Result<Tree> {
        if item_ids.len() != leaves.len() {
            return invalid!("{} item ids but {} leaves", item_ids.len(), leaves.len());
        }
        let level_start = check_shape(item_ids.len(), arity, leaf_level)?;
        let (lo, hi) = (
            level_start[leaf_level as usize],
            level_start[leaf_level as usize + 1],
        );
        if let Some(&bad) = leaves.iter().find(|&&n| n < lo || n >= hi) {
            return Err(JtmError::InvalidNode(format!(
                "node {bad} is not a leaf: leaves of this tree are nodes {lo}..{hi}"
            )));
        }
        let mut pairs: Vec<(i64, u64)> = item_ids
            .iter()
            .copied()
            .zip(leaves.iter().copied())
            .collect();
        pairs.sort_unstable();
        if let Some(w) = pairs.windows(2).find(|w| w[0].0 == w[1].0) {
            return invalid!("item id {} appears more than once", w[0].0);
        }
        let item_ids: Vec<i64> = pairs.iter().map(|p| p.0).collect();
        let item_leaf: Vec<u64> = pairs.iter().map(|p| p.1).collect();

        let mut by_leaf: Vec<(u64, u32)> = item_leaf
            .iter()
            .enumerate()
            .map(|(i, &l)| (l, i as u32))
            .collect();
        by_leaf.sort_unstable();
        if let Some(w) = by_leaf.windows(2).find(|w| w[0].0 == w[1].0) {
            return invalid!(
                "leaf {} holds two items ({} and {})",
                w[0].0,
                item_ids[w[0].1 as usize],
                item_ids[w[1].1 as usize]
            );
        }
        let mut live = vec![Vec::new(); leaf_level as usize + 1];
        live[leaf_level as usize] = by_leaf.iter().map(|p| p.0).collect();
        for l in (0..leaf_level as usize).rev() {
            let mut up: Vec<u64> = live[l + 1].iter().map(|&n| (n - 1) / arity).collect();
            up.dedup(); // parents of an ascending list are ascending
            live[l] = up;
        }
        let dense_index = dense_index(&item_ids);
        let live_rank = (0..=leaf_level as usize)
            .map(|l| {
                live_rank(
                    &live[l],
                    level_start[l],
                    level_start[l + 1] - level_start[l],
                )
            })
            .collect();
        Ok(Tree {
            arity,
            leaf_level,
            level_start,
            item_ids,
            dense_index,
            item_leaf,
            live,
            live_leaf_item: by_leaf.iter().map(|p| p.1).collect(),
            live_rank,
        })
    }

    /// Places `order` left to right by splitting it recursively into `arity` near-equal parts
    /// (TDM's construction), so empty leaves are spread evenly when N < b^L.
    pub fn from_order(order: &[i64], arity: u64, leaf_level: Option<u32>) -> Result<Tree> {
        let leaf_level =
            leaf_level.unwrap_or_else(|| default_leaf_level(order.len(), arity.max(2)));
        check_shape(order.len(), arity, leaf_level)?;
        let mut leaves = vec![0u64; order.len()];
        // Explicit stack of (node, level, range of `order`).
        let mut stack = vec![(0u64, 0u32, 0usize, order.len())];
        while let Some((node, level, lo, hi)) = stack.pop() {
            if level == leaf_level {
                debug_assert_eq!(hi - lo, 1);
                leaves[lo] = node;
                continue;
            }
            let n = hi - lo;
            let (base, extra) = (n / arity as usize, n % arity as usize);
            let mut start = lo;
            // With fewer items than children only the first `n` parts are non-empty: do not
            // walk the other (up to 2^63) children.
            let parts = if base == 0 { extra } else { arity as usize };
            for c in 0..parts {
                let len = base + usize::from(c < extra);
                if len > 0 {
                    stack.push((node * arity + 1 + c as u64, level + 1, start, start + len));
                }
                start += len;
            }
        }
        Tree::from_leaves(order, &leaves, arity, leaf_level)
    }

    /// A uniformly shuffled order, placed as in [`Tree::from_order`].
    pub fn random(
        item_ids: &[i64],
        arity: u64,
        leaf_level: Option<u32>,
        seed: u64,
    ) -> Result<Tree> {
        let mut order = item_ids.to_vec();
        SplitMix64::new(seed).shuffle(&mut order);
        Tree::from_order(&order, arity, leaf_level)
    }

    /// The paper's initial tree: items ordered by (category, random tie-break), then split.
    pub fn from_categories(
        item_ids: &[i64],
        categories: &[i64],
        arity: u64,
        leaf_level: Option<u32>,
        seed: u64,
    ) -> Result<Tree> {
        if item_ids.len() != categories.len() {
            return invalid!(
                "{} item ids but {} categories",
                item_ids.len(),
                categories.len()
            );
        }
        let mut rng = SplitMix64::new(seed);
        let mut keyed: Vec<(i64, u64, i64)> = item_ids
            .iter()
            .zip(categories)
            .map(|(&i, &c)| (c, rng.next_u64(), i))
            .collect();
        keyed.sort_unstable();
        let order: Vec<i64> = keyed.into_iter().map(|k| k.2).collect();
        Tree::from_order(&order, arity, leaf_level)
    }

    // ----------------------------------------------------------------- shape

    pub fn arity(&self) -> u64 {
        self.arity
    }
    /// L: the level of the leaves (levels are `0..=L`).
    pub fn leaf_level(&self) -> u32 {
        self.leaf_level
    }
    pub fn n_items(&self) -> usize {
        self.item_ids.len()
    }
    /// Item ids, ascending.
    pub fn item_ids(&self) -> &[i64] {
        &self.item_ids
    }
    /// Leaf of each item, aligned with [`Tree::item_ids`].
    pub fn item_leaves(&self) -> &[u64] {
        &self.item_leaf
    }
    /// Number of node ids (live or not) in the complete tree.
    pub fn n_nodes(&self) -> u64 {
        self.level_start[self.leaf_level as usize + 1]
    }
    /// First node id of `level`, and one past the last.
    pub fn level_range(&self, level: u32) -> std::ops::Range<u64> {
        self.level_start[level as usize]..self.level_start[level as usize + 1]
    }
    /// Items a node at `level` may hold: b^(L−level).
    pub fn capacity(&self, level: u32) -> u64 {
        self.arity.pow(self.leaf_level - level)
    }

    fn check_level(&self, level: u32) -> Result<()> {
        if level > self.leaf_level {
            return invalid!(
                "level {level} is out of range: this tree has levels 0..={}",
                self.leaf_level
            );
        }
        Ok(())
    }

    pub fn check_node(&self, node: i64) -> Result<u64> {
        if node < 0 || node as u64 >= self.n_nodes() {
            return Err(JtmError::InvalidNode(format!(
                "node {node} is out of range: this tree has nodes 0..{}",
                self.n_nodes()
            )));
        }
        Ok(node as u64)
    }

    // ----------------------------------------------------------------- node arithmetic

    pub fn level_of(&self, node: u64) -> u32 {
        // level_start is ascending; the level is the last start ≤ node.
        (self.level_start.partition_point(|&s| s <= node) - 1) as u32
    }

    pub fn parent(&self, node: u64) -> Option<u64> {
        (node > 0).then(|| (node - 1) / self.arity)
    }

    /// Ancestor of `node` at `level` (the node itself at its own level).
    pub fn ancestor(&self, node: u64, level: u32) -> Result<u64> {
        let own = self.level_of(node);
        if level > own {
            return invalid!("level {level} is below node {node}, which sits at level {own}");
        }
        Ok(self.ancestor_up(node, own - level))
    }

    /// The ancestor `steps` levels above `node` (which must lie that deep).
    pub fn ancestor_up(&self, mut node: u64, steps: u32) -> u64 {
        for _ in 0..steps {
            node = (node - 1) / self.arity;
        }
        node
    }

    /// Descendants of `node` at `level` as a contiguous id range.
    pub fn descendants(&self, node: u64, level: u32) -> Result<std::ops::Range<u64>> {
        self.check_level(level)?;
        let own = self.level_of(node);
        if level < own {
            return invalid!("level {level} is above node {node}, which sits at level {own}");
        }
        Ok(self.descendant_range(node, level - own))
    }

    /// `rows` ranges of `width` nodes each, as one array: refused (with the size) when it could
    /// not be allocated, instead of aborting the process.
    pub fn check_output_len(rows: usize, width: u64) -> Result<usize> {
        let total = rows as u128 * width as u128;
        if total > MAX_OUTPUT_ELEMENTS {
            return invalid!(
                "the result would hold {total} node ids ({rows} x {width}, {} GiB); at most {MAX_OUTPUT_ELEMENTS} are allowed",
                (total * 8) >> 30
            );
        }
        Ok(total as usize)
    }

    /// Descendants `depth` levels below `node` (no checks: callers know the levels).
    pub(crate) fn descendant_range(&self, node: u64, depth: u32) -> std::ops::Range<u64> {
        let width = self.arity.pow(depth);
        let first = node * width + (width - 1) / (self.arity - 1);
        first..first + width
    }

    pub fn children(&self, node: u64) -> Result<std::ops::Range<u64>> {
        if self.level_of(node) >= self.leaf_level {
            return invalid!("node {node} is a leaf and has no children");
        }
        Ok(self.descendant_range(node, 1))
    }

    // ----------------------------------------------------------------- live nodes

    /// Live node ids of `level`, ascending.
    pub fn live_nodes(&self, level: u32) -> Result<&[u64]> {
        self.check_level(level)?;
        Ok(&self.live[level as usize])
    }

    pub(crate) fn live_at(&self, level: u32) -> &[u64] {
        &self.live[level as usize]
    }

    pub fn is_live(&self, node: u64) -> bool {
        if node >= self.n_nodes() {
            return false;
        }
        self.live[self.level_of(node) as usize]
            .binary_search(&node)
            .is_ok()
    }

    /// Live nodes inside the id range `r` of one level (a slice of that level's live list).
    pub(crate) fn live_in(&self, level: u32, r: std::ops::Range<u64>) -> &[u64] {
        let live = &self.live[level as usize];
        let first = self.level_start[level as usize];
        if live.len() as u64 == self.level_start[level as usize + 1] - first {
            // Every node of the level is live: the list is the id range itself.
            return &live[(r.start - first) as usize..(r.end - first) as usize];
        }
        if let Some(rank) = &self.live_rank[level as usize] {
            return &live[rank[(r.start - first) as usize] as usize
                ..rank[(r.end - first) as usize] as usize];
        }
        let lo = live.partition_point(|&n| n < r.start);
        let hi = live.partition_point(|&n| n < r.end);
        &live[lo..hi]
    }

    // ----------------------------------------------------------------- items

    /// Index of `item` in [`Tree::item_ids`].
    /// Whether `item` is in the tree: a binary search, O(log n_items).
    pub fn contains(&self, item: i64) -> bool {
        self.item_ids.binary_search(&item).is_ok()
    }

    pub fn item_index(&self, item: i64) -> Result<usize> {
        if let Some((first, index)) = &self.dense_index {
            return match item
                .checked_sub(*first)
                .and_then(|i| usize::try_from(i).ok())
            {
                Some(i) if i < index.len() && index[i] != u32::MAX => Ok(index[i] as usize),
                _ => Err(JtmError::UnknownItem(item)),
            };
        }
        self.item_ids
            .binary_search(&item)
            .map_err(|_| JtmError::UnknownItem(item))
    }

    pub fn leaf_of(&self, item: i64) -> Result<u64> {
        Ok(self.item_leaf[self.item_index(item)?])
    }

    /// The item on `leaf`, if any (None for an empty leaf or a non-leaf node).
    pub fn item_at(&self, leaf: u64) -> Option<i64> {
        let level = self.leaf_level as usize;
        let live = &self.live[level];
        let (first, end) = (self.level_start[level], self.level_start[level + 1]);
        let j = if !(first..end).contains(&leaf) {
            return None;
        } else if live.len() as u64 == end - first {
            (leaf - first) as usize
        } else if let Some(rank) = &self.live_rank[level] {
            rank[(leaf - first) as usize] as usize
        } else {
            live.partition_point(|&n| n < leaf)
        };
        (live.get(j) == Some(&leaf)).then(|| self.item_ids[self.live_leaf_item[j] as usize])
    }

    /// Ancestor at `level` of each item; `padding` stays `padding` (hierarchical features,
    /// paper §3.3: behaviours at level l become their ancestors at level l).
    pub fn hierarchical_features(
        &self,
        behaviours: &[i64],
        level: u32,
        padding: Option<i64>,
    ) -> Result<Vec<i64>> {
        self.check_level(level)?;
        let shift = self.leaf_level - level;
        let up = |leaf: u64| {
            let mut n = leaf;
            for _ in 0..shift {
                n = (n - 1) / self.arity;
            }
            n as i64
        };
        behaviours
            .iter()
            .map(|&item| match padding {
                Some(p) if item == p => Ok(p),
                _ => Ok(up(self.leaf_of(item)?)),
            })
            .collect()
    }

    /// Checks every invariant of docs/design.md §2; used by tests and after tree learning.
    pub fn validate(&self) -> Result<()> {
        let rebuilt =
            Tree::from_leaves(&self.item_ids, &self.item_leaf, self.arity, self.leaf_level)?;
        if &rebuilt != self {
            return Err(JtmError::Internal(
                "tree bookkeeping does not match its item→leaf map".into(),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn rank_tables_answer_as_binary_searches_do() {
        // 300 items on a 10-level binary tree (1024 leaves): the deep levels are partly live
        // and get rank tables; a 3-item tree 14 levels deep is too sparse for one.
        for (n, levels, ranked) in [(300i64, 10u32, true), (3, 14, false)] {
            let items: Vec<i64> = (0..n).map(|i| i * 7 + 1).collect();
            let t = Tree::random(&items, 2, Some(levels), 5).unwrap();
            assert_eq!(t.live_rank[levels as usize].is_some(), ranked);
            for level in 1..=t.leaf_level() {
                let live = t.live_at(level);
                for parent in t.level_start[level as usize - 1]..t.level_start[level as usize] {
                    let r = t.descendant_range(parent, 1);
                    let lo = live.partition_point(|&x| x < r.start);
                    let hi = live.partition_point(|&x| x < r.end);
                    assert_eq!(t.live_in(level, r), &live[lo..hi]);
                }
            }
            let leaves = t.level_start[levels as usize]..t.level_start[levels as usize + 1];
            for leaf in leaves.start.saturating_sub(3)..leaves.end + 3 {
                let want = t
                    .live_at(levels)
                    .binary_search(&leaf)
                    .ok()
                    .filter(|_| leaves.contains(&leaf));
                assert_eq!(
                    t.item_at(leaf),
                    want.map(|j| t.item_ids[t.live_leaf_item[j] as usize])
                );
            }
        }
    }

    #[test]
    fn huge_arity_builds_at_once_and_huge_outputs_are_refused() {
        // Two items under a root with 2^40 children: only the two non-empty parts are walked.
        let t = Tree::from_order(&[0, 1], 1 << 40, None).unwrap();
        assert_eq!(t.leaf_level(), 1);
        t.validate().unwrap();
        assert_eq!(Tree::check_output_len(3, 1 << 20).unwrap(), 3 << 20);
        let err = Tree::check_output_len(4, 1 << 62).unwrap_err().to_string();
        assert!(err.contains("18446744073709551616 node ids"), "{err}");
    }

    #[test]
    fn absurd_leaf_levels_are_refused_before_allocating() {
        for level in [63, 64, 1000, u32::MAX] {
            assert!(Tree::from_leaves(&[0], &[1], 2, level).is_err());
        }
    }

    fn count_under(t: &Tree, node: u64) -> usize {
        let depth = t.leaf_level() - t.level_of(node);
        let r = t.descendant_range(node, depth);
        t.item_leaves().iter().filter(|l| r.contains(l)).count()
    }

    #[test]
    fn node_arithmetic_matches_design() {
        let t = Tree::from_order(&(0..9).collect::<Vec<_>>(), 3, None).unwrap();
        assert_eq!(t.leaf_level(), 2);
        assert_eq!(t.level_range(1), 1..4);
        assert_eq!(t.level_range(2), 4..13);
        assert_eq!(t.children(2).unwrap(), 7..10);
        assert_eq!(t.parent(9), Some(2));
        assert_eq!(t.ancestor(12, 1).unwrap(), 3);
        assert_eq!(t.descendants(0, 2).unwrap(), 4..13);
        assert_eq!(t.level_of(0), 0);
        assert_eq!(t.level_of(3), 1);
        assert_eq!(t.level_of(4), 2);
    }

    #[test]
    fn from_order_spreads_items_in_order() {
        // 5 items on 8 leaves: split 3|2, then 2|1 and 1|1, ...
        let t = Tree::from_order(&[10, 11, 12, 13, 14], 2, None).unwrap();
        assert_eq!(t.leaf_level(), 3);
        let leaves: Vec<u64> = [10, 11, 12, 13, 14]
            .iter()
            .map(|&i| t.leaf_of(i).unwrap())
            .collect();
        assert_eq!(leaves, vec![7, 8, 9, 11, 13]);
        assert_eq!(t.live_nodes(1).unwrap(), &[1, 2]);
        assert_eq!(t.item_at(9), Some(12));
        assert_eq!(t.item_at(10), None);
    }

    #[test]
    fn the_dense_index_finds_what_the_binary_search_finds() {
        // Consecutive ids, ids with holes (both through the dense table) and ids spread far
        // apart (the binary search) must find the same items and refuse the same others,
        // extreme ids included.
        for first in [0i64, -3, 1 << 40, i64::MAX - 2000, i64::MIN] {
            let step = |k: i64| first.checked_add(k).unwrap_or(first - k);
            let consecutive: Vec<i64> = (0..1500).map(step).collect();
            let holes: Vec<i64> = (0..1500).filter(|k| k % 3 != 1).map(step).collect();
            let mut spread = consecutive.clone();
            spread[0] = if first > 0 { i64::MIN } else { i64::MAX };
            for (ids, dense) in [(&consecutive, true), (&holes, true), (&spread, false)] {
                let t = Tree::from_order(ids, 2, None).unwrap();
                assert_eq!(t.dense_index.is_some(), dense);
                let probes = (-3..1503).map(step).chain([i64::MIN, i64::MAX, 0]);
                for id in probes.chain(ids.iter().copied()) {
                    match (t.item_ids.binary_search(&id), t.item_index(id)) {
                        (Ok(i), Ok(j)) => assert_eq!(i, j),
                        (Err(_), Err(JtmError::UnknownItem(b))) => assert_eq!(b, id),
                        (want, got) => panic!("id {id}: binary search {want:?}, index {got:?}"),
                    }
                }
            }
        }
    }

    #[test]
    fn bad_shapes_are_rejected() {
        assert!(Tree::from_order(&[], 2, None).is_err());
        assert!(Tree::from_order(&[1, 2], 1, None).is_err());
        assert!(Tree::from_order(&[1, 2, 3], 2, Some(1)).is_err());
        assert!(Tree::from_leaves(&[1, 1], &[1, 2], 2, 1).is_err());
        assert!(Tree::from_leaves(&[1, 2], &[1, 1], 2, 1).is_err());
        assert!(Tree::from_leaves(&[1, 2], &[0, 1], 2, 1).is_err());
        assert!(Tree::from_order(&[1, 2], 2, Some(70)).is_err());
        assert!(matches!(
            Tree::from_order(&[5], 2, None).unwrap().leaf_of(6),
            Err(JtmError::UnknownItem(6))
        ));
    }

    #[test]
    fn hierarchical_features_keep_padding() {
        let t = Tree::from_order(&[0, 1, 2, 3], 2, None).unwrap();
        let f = t.hierarchical_features(&[0, -1, 3], 1, Some(-1)).unwrap();
        assert_eq!(f, vec![1, -1, 2]);
        assert_eq!(t.hierarchical_features(&[2], 2, None).unwrap(), vec![5]);
        assert!(t.hierarchical_features(&[9], 1, Some(-1)).is_err());
    }

    proptest! {
        #[test]
        fn constructed_trees_hold_every_invariant(n in 1usize..300, arity in 2u64..5, extra in 0u32..2, seed: u64) {
            let items: Vec<i64> = (0..n as i64).map(|i| i * 7 - 50).collect();
            let level = default_leaf_level(n, arity) + extra;
            let cats: Vec<i64> = items.iter().map(|i| i.rem_euclid(4)).collect();
            for t in [
                Tree::random(&items, arity, Some(level), seed).unwrap(),
                Tree::from_categories(&items, &cats, arity, Some(level), seed).unwrap(),
            ] {
                t.validate().unwrap();
                prop_assert_eq!(t.n_items(), n);
                // bijection: distinct leaves, each maps back to its item
                for &item in &items {
                    let leaf = t.leaf_of(item).unwrap();
                    prop_assert_eq!(t.item_at(leaf), Some(item));
                    prop_assert_eq!(t.level_of(leaf), level);
                }
                // capacities and liveness at every level
                for l in 0..=level {
                    let mut total = 0;
                    for node in t.level_range(l) {
                        let c = count_under(&t, node);
                        prop_assert!(c as u64 <= t.capacity(l));
                        prop_assert_eq!(c > 0, t.is_live(node));
                        total += c;
                    }
                    prop_assert_eq!(total, n);
                }
                // ancestors agree with the range arithmetic
                for &leaf in t.item_leaves() {
                    for l in 0..=level {
                        let a = t.ancestor(leaf, l).unwrap();
                        prop_assert!(t.descendants(a, level).unwrap().contains(&leaf));
                    }
                }
            }
        }
    }
}
