//! Layer-wise beam search (docs/design.md §4.5, paper §2 / TDM retrieval).
//!
//! For a batch of users: start at the first level with more than k live nodes (every level
//! above it fits in the beam whole), and at each level score the live children of each user's
//! beam, keep the k best, descend. At the leaf level return the M best items with their
//! scores. Scores are per node, not accumulated along the path, so when node scores satisfy
//! the max-heap property the search is exact.
//!
//! A step machine like the tree learner: `expand` gives all (user row, node) pairs of the next
//! level, the caller scores them (one `score_fn` call per level), `select` keeps the top k per
//! user in parallel. [`beam_search`] drives it from Rust.

use crate::error::{invalid, try_reserve, try_vec, JtmError, Result};
use crate::tree::{Tree, MAX_OUTPUT_ELEMENTS};
use rayon::prelude::*;
use std::cmp::Ordering;

/// The (user row, node) pairs of one level, grouped by user.
#[derive(Debug, Clone)]
pub struct Candidates {
    pub user_rows: Vec<i64>,
    pub nodes: Vec<i64>,
    pub level: u32,
}

pub struct BeamSearch<'t> {
    tree: &'t Tree,
    n_users: usize,
    k: usize,
    m: usize,
    start_level: u32,
    /// The most pairs one user can have at a level (bounds the per-level work).
    widest: usize,
    /// Level of the candidates to expand next; `None` once the leaves are selected.
    level: Option<u32>,
    /// Each user's beam (node ids) at the level above `level`.
    beams: Vec<Vec<i64>>,
    /// The last expansion: nodes and per-user offsets into them.
    nodes: Vec<i64>,
    offsets: Vec<usize>,
    items: Vec<i64>,
    scores: Vec<f32>,
}

/// Searches scoring fewer (user, node) pairs per level than this run on the calling thread
/// (`BeamSearch::is_small`): for one user (400 pairs at k = 200) the pool's hand-offs cost
/// more than the work.
pub const SMALL_SEARCH_PAIRS: usize = 1 << 14;

/// `f(0..n)` collected in order, on rayon's current pool or, for a small search, sequentially
/// (a parallel iterator would still go through a pool).
fn per_user<T: Send>(n: usize, parallel: bool, f: impl Fn(usize) -> T + Sync + Send) -> Vec<T> {
    if parallel {
        (0..n).into_par_iter().map(f).collect()
    } else {
        (0..n).map(f).collect()
    }
}

/// First level with more than k live nodes, or the leaf level if none has.
pub fn start_level(tree: &Tree, k: usize) -> u32 {
    (0..=tree.leaf_level())
        .find(|&l| tree.live_at(l).len() > k)
        .unwrap_or(tree.leaf_level())
}

/// Best first: higher score, then lower node id.
fn by_score(a: &(f32, i64), b: &(f32, i64)) -> Ordering {
    b.0.total_cmp(&a.0).then(a.1.cmp(&b.1))
}

impl<'t> BeamSearch<'t> {
    /// `k`: beam width; `m`: items returned per user (`m ≤ k`, `m ≤` the number of items).
    pub fn new(tree: &'t Tree, n_users: usize, k: usize, m: usize) -> Result<Self> {
        if k == 0 || m == 0 {
            return invalid!(
                "beam width k and result size M must be at least 1 (got k = {k}, M = {m})"
            );
        }
        if m > k {
            return invalid!(
                "M = {m} exceeds the beam width k = {k}: the beam must hold the result"
            );
        }
        if m > tree.n_items() {
            return invalid!("M = {m} exceeds the {} items of the tree", tree.n_items());
        }
        let start = start_level(tree, k);
        // The widest level bounds every buffer: refuse a search that could never fit before
        // allocating anything (the Python driver batches users, so only direct calls get here).
        let widest = (start..=tree.leaf_level())
            .map(|l| {
                let live = tree.live_at(l).len() as u128;
                if l == start {
                    live
                } else {
                    live.min(k as u128 * tree.arity() as u128)
                }
            })
            .max()
            .unwrap_or(0);
        let pairs = n_users as u128 * widest.max(m as u128);
        if pairs > MAX_OUTPUT_ELEMENTS {
            return invalid!(
                "beam search of {n_users} users with k = {k} would score up to {pairs} (user, node) pairs at one level ({} GiB); at most {MAX_OUTPUT_ELEMENTS} per call: search fewer users at a time",
                (pairs * 16) >> 30
            );
        }
        Ok(BeamSearch {
            tree,
            n_users,
            k,
            m,
            start_level: start,
            widest: widest.max(m as u128) as usize,
            level: Some(start),
            beams: Vec::new(),
            nodes: Vec::new(),
            offsets: Vec::new(),
            items: Vec::new(),
            scores: Vec::new(),
        })
    }

    pub fn start_level(&self) -> u32 {
        self.start_level
    }

    /// Whether a level's pairs are few enough to expand and select on the calling thread
    /// ([`SMALL_SEARCH_PAIRS`]).
    pub fn is_small(&self) -> bool {
        (self.n_users as u128) * (self.widest as u128) < SMALL_SEARCH_PAIRS as u128
    }

    /// The pairs to score at the next level (None when the search is done); `OutOfMemory`
    /// when they do not fit.
    pub fn expand(&mut self) -> Result<Option<Candidates>> {
        let Some(level) = self.level else {
            return Ok(None);
        };
        let tree = self.tree;
        let counts: Vec<usize> = if level == self.start_level {
            try_vec(
                self.n_users,
                tree.live_at(level).len(),
                "the beam's candidate counts",
            )?
        } else {
            let beams = &self.beams;
            per_user(self.n_users, !self.is_small(), |u| {
                beams[u]
                    .iter()
                    .map(|&n| live_children(tree, n, level).len())
                    .sum()
            })
        };
        self.offsets.clear();
        self.offsets.push(0);
        for c in &counts {
            self.offsets.push(self.offsets.last().unwrap() + c);
        }
        let total = *self.offsets.last().unwrap();
        let mut nodes = try_vec(total, 0i64, "the beam's candidate nodes")?;
        let mut rows = try_vec(total, 0i64, "the beam's candidate user rows")?;
        // The search's own copy of the nodes (the caller may keep `Candidates`): reserved now,
        // filled once the parallel pass has written them.
        self.nodes.clear();
        try_reserve(&mut self.nodes, total, "the beam's candidate nodes")?;
        let mut slices = Vec::new();
        try_reserve(&mut slices, self.n_users, "the beams of every user")?;
        let (mut rest_n, mut rest_r) = (nodes.as_mut_slice(), rows.as_mut_slice());
        for &c in &counts {
            let (hn, tn) = rest_n.split_at_mut(c);
            let (hr, tr) = rest_r.split_at_mut(c);
            slices.push((hn, hr));
            rest_n = tn;
            rest_r = tr;
        }
        let beams = &self.beams;
        let first = level == self.start_level;
        let fill = |(u, (out_n, out_r)): (usize, (&mut [i64], &mut [i64]))| {
            out_r.fill(u as i64);
            if first {
                for (o, &n) in out_n.iter_mut().zip(tree.live_at(level)) {
                    *o = n as i64;
                }
            } else {
                let mut at = 0;
                for &b in &beams[u] {
                    for &n in live_children(tree, b, level) {
                        out_n[at] = n as i64;
                        at += 1;
                    }
                }
            }
        };
        if self.is_small() {
            slices.into_iter().enumerate().for_each(fill);
        } else {
            slices.into_par_iter().enumerate().for_each(fill);
        }
        self.nodes.extend_from_slice(&nodes);
        Ok(Some(Candidates {
            user_rows: rows,
            nodes,
            level,
        }))
    }

    /// Takes the scores of the last expansion (aligned with its pairs) and keeps the top k per
    /// user, or the top M items at the leaf level.
    pub fn select(&mut self, scores: &[f32]) -> Result<()> {
        let Some(level) = self.level else {
            return Err(JtmError::Internal(
                "select after the search finished".into(),
            ));
        };
        if scores.len() != self.nodes.len() {
            return Err(JtmError::Callback(format!(
                "score_fn returned {} scores for {} (user, node) pairs at level {level}",
                scores.len(),
                self.nodes.len()
            )));
        }
        if let Some(i) = scores.iter().position(|s| s.is_nan()) {
            return Err(JtmError::Callback(format!(
                "score_fn returned NaN for user row {} and node {} at level {level}",
                self.offsets.partition_point(|&o| o <= i) - 1,
                self.nodes[i]
            )));
        }
        let leaves = level == self.tree.leaf_level();
        let keep = if leaves { self.m } else { self.k };
        let (nodes, offsets) = (&self.nodes, &self.offsets);
        let best: Vec<Vec<(f32, i64)>> = per_user(self.n_users, !self.is_small(), |u| {
            let r = offsets[u]..offsets[u + 1];
            let mut pairs: Vec<(f32, i64)> = scores[r.clone()]
                .iter()
                .copied()
                .zip(nodes[r].iter().copied())
                .collect();
            if pairs.len() > keep {
                pairs.select_nth_unstable_by(keep - 1, by_score);
                pairs.truncate(keep);
            }
            // A beam's order is whatever the (deterministic) selection left; only the
            // leaves are returned best first.
            if leaves {
                pairs.sort_unstable_by(by_score);
            }
            pairs
        });
        if leaves {
            self.items = Vec::with_capacity(self.n_users * self.m);
            self.scores = Vec::with_capacity(self.n_users * self.m);
            for pairs in best {
                for (s, n) in pairs {
                    let item = self
                        .tree
                        .item_at(n as u64)
                        .ok_or_else(|| JtmError::Internal(format!("leaf {n} holds no item")))?;
                    self.items.push(item);
                    self.scores.push(s);
                }
            }
            self.level = None;
        } else {
            self.beams = best
                .into_iter()
                .map(|p| p.into_iter().map(|(_, n)| n).collect())
                .collect();
            self.level = Some(level + 1);
        }
        Ok(())
    }

    /// Row-major `n_users × M` items and scores, best first.
    pub fn finish(self) -> Result<(Vec<i64>, Vec<f32>)> {
        if self.level.is_some() {
            return Err(JtmError::Internal(
                "finish before the leaf level was selected".into(),
            ));
        }
        if self.items.len() != self.n_users * self.m {
            return Err(JtmError::Internal(
                "a user ended with fewer than M items".into(),
            ));
        }
        Ok((self.items, self.scores))
    }
}

fn live_children(tree: &Tree, node: i64, level: u32) -> &[u64] {
    tree.live_in(level, tree.descendant_range(node as u64, 1))
}

/// Runs a whole search with a Rust scorer `score(user_rows, nodes, level) -> scores`.
pub fn beam_search<F>(
    tree: &Tree,
    n_users: usize,
    k: usize,
    m: usize,
    n_threads: Option<usize>,
    mut score: F,
) -> Result<(Vec<i64>, Vec<f32>)>
where
    F: FnMut(&[i64], &[i64], u32) -> Result<Vec<f32>>,
{
    use crate::parallel::run_sized;
    let mut search = BeamSearch::new(tree, n_users, k, m)?;
    let here = search.is_small();
    while let Some(c) = run_sized(n_threads, here, || search.expand())? {
        let s = score(&c.user_rows, &c.nodes, c.level)?;
        run_sized(n_threads, here, || search.select(&s))?;
    }
    search.finish()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::SplitMix64;

    /// Leaf scores random per (user, leaf); inner nodes get the max of their subtree, so the
    /// max-heap property holds exactly.
    fn heap_scores(tree: &Tree, n_users: usize, seed: u64) -> Vec<Vec<f32>> {
        let mut rng = SplitMix64::new(seed);
        (0..n_users)
            .map(|_| {
                let mut s = vec![f32::NEG_INFINITY; tree.n_nodes() as usize];
                for &leaf in tree.item_leaves() {
                    s[leaf as usize] = (rng.below(1_000_000) as f32) / 1e3;
                }
                for n in (1..tree.n_nodes()).rev() {
                    let p = tree.parent(n).unwrap() as usize;
                    s[p] = s[p].max(s[n as usize]);
                }
                s
            })
            .collect()
    }

    #[test]
    fn refuses_a_search_too_large_to_allocate() {
        let items: Vec<i64> = (0..50).collect();
        let tree = Tree::random(&items, 2, None, 1).unwrap();
        let err = BeamSearch::new(&tree, 1 << 31, 1 << 40, 4).err().unwrap();
        assert!(matches!(&err, JtmError::InvalidArgument(m) if m.contains("fewer users")));
        assert!(BeamSearch::new(&tree, 1 << 20, 64, 4).is_ok());
    }

    #[test]
    fn exact_under_max_heap_scores() {
        for (n, arity, k, m) in [
            (1000, 2, 20, 10),
            (500, 3, 7, 7),
            (50, 2, 64, 40),
            (300, 4, 1, 1),
        ] {
            let items: Vec<i64> = (0..n).map(|i| i * 3 + 1).collect();
            let tree = Tree::random(&items, arity, None, n as u64).unwrap();
            let table = heap_scores(&tree, 6, 11);
            let (got, got_s) = beam_search(&tree, 6, k, m, Some(2), |u, nodes, _| {
                Ok(u.iter()
                    .zip(nodes)
                    .map(|(&u, &n)| table[u as usize][n as usize])
                    .collect())
            })
            .unwrap();
            for u in 0..6 {
                let mut brute: Vec<(f32, i64)> = tree
                    .item_leaves()
                    .iter()
                    .map(|&l| (table[u][l as usize], l as i64))
                    .collect();
                brute.sort_by(by_score);
                let want: Vec<i64> = brute[..m]
                    .iter()
                    .map(|&(_, l)| tree.item_at(l as u64).unwrap())
                    .collect();
                assert_eq!(
                    &got[u * m..(u + 1) * m],
                    &want[..],
                    "n={n} b={arity} k={k} user {u}"
                );
                assert!(got_s[u * m..(u + 1) * m].windows(2).all(|w| w[0] >= w[1]));
            }
        }
    }

    #[test]
    fn a_small_search_on_the_calling_thread_equals_the_parallel_one() {
        let items: Vec<i64> = (0..3000).collect();
        let tree = Tree::random(&items, 2, None, 5).unwrap();
        // Scores that break the max-heap property, hashed from (user row, node).
        let score = |rows: &[i64], nodes: &[i64], offset: i64| {
            rows.iter()
                .zip(nodes)
                .map(|(&u, &n)| {
                    let mut r = SplitMix64::new(((u + offset) as u64) << 32 | n as u64);
                    (r.next_u64() >> 40) as f32
                })
                .collect::<Vec<f32>>()
        };
        let (n_users, k, m) = (1200, 8, 5);
        assert!(!BeamSearch::new(&tree, n_users, k, m).unwrap().is_small());
        assert!(BeamSearch::new(&tree, 1, k, m).unwrap().is_small());
        let (all, all_s) =
            beam_search(&tree, n_users, k, m, Some(2), |u, n, _| Ok(score(u, n, 0))).unwrap();
        for u in [0, 1, 599, 1199] {
            let (one, one_s) =
                beam_search(&tree, 1, k, m, Some(2), |r, n, _| Ok(score(r, n, u as i64))).unwrap();
            assert_eq!(&all[u * m..(u + 1) * m], &one[..], "user {u}");
            assert_eq!(&all_s[u * m..(u + 1) * m], &one_s[..]);
        }
    }

    #[test]
    fn only_live_nodes_are_scored_once_per_level() {
        let tree = Tree::from_order(&(0..37).collect::<Vec<_>>(), 2, Some(7)).unwrap();
        let mut levels = Vec::new();
        beam_search(&tree, 3, 4, 2, None, |u, nodes, level| {
            assert!(nodes
                .iter()
                .all(|&n| tree.is_live(n as u64) && tree.level_of(n as u64) == level));
            levels.push(level);
            Ok(vec![0.0; u.len()])
        })
        .unwrap();
        let first = start_level(&tree, 4);
        assert!(tree.live_at(first).len() > 4 && tree.live_at(first - 1).len() <= 4);
        assert_eq!(levels, (first..=7).collect::<Vec<_>>());
    }

    #[test]
    fn bad_scores_and_arguments() {
        let tree = Tree::random(&(0..40).collect::<Vec<_>>(), 2, None, 0).unwrap();
        let nan = beam_search(&tree, 2, 4, 4, None, |u, _, _| Ok(vec![f32::NAN; u.len()]));
        assert!(matches!(nan, Err(JtmError::Callback(m)) if m.contains("NaN")));
        let short = beam_search(&tree, 2, 4, 4, None, |_, _, _| Ok(vec![0.0]));
        assert!(matches!(short, Err(JtmError::Callback(_))));
        assert!(BeamSearch::new(&tree, 1, 4, 5).is_err());
        assert!(BeamSearch::new(&tree, 1, 0, 0).is_err());
        assert!(BeamSearch::new(&tree, 1, 100, 41).is_err());
        let (items, _) =
            beam_search(&tree, 0, 4, 4, None, |u, _, _| Ok(vec![0.0; u.len()])).unwrap();
        assert!(items.is_empty());
    }
}
