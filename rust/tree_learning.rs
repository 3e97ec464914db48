//! JTM tree learning — paper Algorithm 2 (docs/design.md §4.4).
//!
//! Items are re-placed top-down, `d` levels at a time. In the segment `s..=e`, every item keeps
//! the ancestor `p` at level `s−1` chosen by earlier segments and is re-assigned among the
//! `b^(e−s+1)` descendants of `p` at level `e` ("candidates"), maximising the weight
//! `W[c, cand] = Σ_{samples of c} Σ_{j=s..e} log p̂(b_j(cand) | u)` supplied by the caller,
//! subject to each candidate holding at most `b^(L−e)` items.
//!
//! Per parent this is a capacitated assignment, solved greedily with rebalancing:
//! 1. every item goes to its best candidate;
//! 2. repeatedly take the unprocessed candidate with the most items; if it is within capacity,
//!    stop; otherwise mark it processed, keep `capacity` items — those that were already under
//!    it in the old tree first (the paper's lazy rule, which limits churn), then by weight —
//!    and send each overflowing item to its next-best unprocessed candidate.
//!
//! Memory stays bounded: weights arrive in chunks of items and each row is reduced at once to
//! the item's `max_candidates` best candidates. An item that overflows past all of those goes
//! to the unprocessed candidate nearest (in the tree) to its favourite, where its weight is
//! likely closest. With `max_candidates ≥ b^d` (the default keeps all `b^d`) the greedy is
//! exactly the paper's; a cap below `b^d` makes it approximate where capacities are tight.
//!
//! Ties (an item with no samples has an all-equal row) prefer the item's "home": the candidate
//! at the same relative position under `p` as its old ancestor had under its old ancestor at
//! level `s−1`, so such items keep their old relative place. In every segment but the last,
//! `stay_bonus[item]` is added to the home candidate's weight where the item's parent is its
//! old ancestor: an item that leaves its subtree loses the deeper levels' fit, which this
//! segment's weights do not see.
//!
//! With `keep_better` (default) a parent whose items all sat under it in the old tree keeps
//! its old placement when that has the larger total weight: the greedy is not optimal where
//! capacities are tight, and a segment should never lose weight it had. (The old placement is
//! feasible exactly then; for other parents there is nothing to compare with.)
//!
//! The learner is a step machine — `begin_segment`, then `next_chunk`/`request`/
//! `accept_weights` until the segment's weights are in, then `assign` — so the Python binding
//! can call `weights_fn` with the GIL held and run every parallel step with it released.
//! [`learn_tree`] drives the same steps from Rust (tests, benches).

use crate::error::{invalid, try_reserve, try_vec, JtmError, Result};
use crate::tree::Tree;
use rayon::prelude::*;
use std::ops::Range;

#[derive(Clone, Debug)]
pub struct LearnConfig {
    /// Levels re-assigned per segment (the paper's d).
    pub d: u32,
    /// Best candidates kept per item (None: all `b^d`, the exact greedy).
    pub max_candidates: Option<usize>,
    /// Upper bound on `rows × columns` of one weights request.
    pub chunk_weights: usize,
    /// Upper bound on the rows (items) of one weights request.
    pub chunk_items: usize,
    /// Which items an overflowing candidate keeps (after the lazy rule).
    pub rebalance: Rebalance,
    /// Passes of pairwise-exchange improvement after the greedy, in groups small enough for a
    /// dense weight table (0: the greedy alone).
    pub improve_passes: usize,
    /// Keep a parent's old placement when it weighs more than the new one (see module doc).
    pub keep_better: bool,
    /// Per item (in the tree's item order): weight added to its home candidate in every
    /// segment but the last, where its parent is its old ancestor (empty: none).
    pub stay_bonus: Vec<f64>,
}

impl Default for LearnConfig {
    fn default() -> Self {
        LearnConfig {
            // JTMConfig.d's default, chosen on validation users (docs/ablations.md).
            d: 4,
            max_candidates: None,
            chunk_weights: 1 << 22,
            chunk_items: usize::MAX,
            rebalance: Rebalance::Regret,
            improve_passes: 8,
            keep_better: true,
            stay_bonus: Vec::new(),
        }
    }
}

/// Keep-order of an overflowing candidate, after the lazy rule.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rebalance {
    /// Heaviest weight first (docs/design.md §4.4, as public implementations do).
    Weight,
    /// Largest regret first: the items that lose most by moving to their next free choice stay.
    /// Closer to the optimal assignment on packed levels (see benches/assignment_quality.py).
    Regret,
}

/// Groups with at most this many (row, candidate) cells get the exchange improvement.
const DENSE_LIMIT: usize = 1 << 16;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Segment {
    pub index: usize,
    pub start_level: u32,
    pub end_level: u32,
}

/// Segments `[1, d], [d+1, 2d], …` ending at the leaf level.
pub fn segments(leaf_level: u32, d: u32) -> Vec<Segment> {
    let mut out = Vec::new();
    let mut s = 1;
    while s <= leaf_level {
        let e = (s + d - 1).min(leaf_level);
        out.push(Segment {
            index: out.len(),
            start_level: s,
            end_level: e,
        });
        s = e + 1;
    }
    out
}

/// One call's worth of `weights_fn` arguments.
#[derive(Debug, Clone)]
pub struct WeightRequest {
    pub items: Vec<i64>,
    pub parents: Vec<u64>,
    pub start_level: u32,
    pub end_level: u32,
    pub n_candidates: usize,
}

/// Float types a weights matrix may arrive in.
pub trait WeightValue: Copy + Send + Sync {
    fn to_f32(self) -> f32;
    /// `self + bonus` rounded to f32 (the sum taken in f64).
    fn plus(self, bonus: f64) -> f32 {
        (self.to_f64() + bonus) as f32
    }
    fn to_f64(self) -> f64;
    fn is_nan_or_inf(self) -> bool;
}
impl WeightValue for f32 {
    fn to_f32(self) -> f32 {
        self
    }
    fn to_f64(self) -> f64 {
        self as f64
    }
    fn is_nan_or_inf(self) -> bool {
        !self.is_finite()
    }
}
impl WeightValue for f64 {
    fn to_f32(self) -> f32 {
        self as f32
    }
    fn to_f64(self) -> f64 {
        self
    }
    fn is_nan_or_inf(self) -> bool {
        !self.is_finite()
    }
}

#[derive(Clone, Copy, Debug, Default)]
struct Pref {
    cand: u32,
    weight: f32,
}

struct SegmentState {
    seg: Segment,
    n_cand: usize,
    /// Preferences kept per item: min(max_candidates, n_cand).
    k: usize,
    /// Item indices grouped by parent, then by old leaf.
    order: Vec<u32>,
    /// Ranges of `order` that share a parent.
    groups: Vec<Range<usize>>,
    /// Home candidate (relative index) per position of `order`.
    home: Vec<u32>,
    /// Whether the item's parent is its old ancestor, so home is where it already was.
    stays: Vec<bool>,
    /// `k` preferences per position of `order`, best first.
    prefs: Vec<Pref>,
    /// The weight of each position's home candidate (kept even when not among its best).
    home_weight: Vec<f32>,
    filled: usize,
}

pub struct TreeLearner<'t> {
    tree: &'t Tree,
    cfg: LearnConfig,
    segments: Vec<Segment>,
    next_segment: usize,
    /// Per item index: its ancestor at level `s−1` of the current segment in the new tree;
    /// after the last segment, its new leaf.
    node: Vec<u64>,
    state: Option<SegmentState>,
    spare_prefs: Vec<Pref>,
}

impl<'t> TreeLearner<'t> {
    pub fn new(tree: &'t Tree, cfg: LearnConfig) -> Result<Self> {
        if cfg.d < 1 {
            return invalid!("d must be at least 1, got {}", cfg.d);
        }
        if cfg.max_candidates == Some(0) {
            return invalid!("max_candidates must be at least 1");
        }
        if cfg.chunk_weights == 0 || cfg.chunk_items == 0 {
            return invalid!("chunk size must be at least 1");
        }
        if !cfg.stay_bonus.is_empty() && cfg.stay_bonus.len() != tree.n_items() {
            return invalid!(
                "stay_bonus has {} values, the tree {} items",
                cfg.stay_bonus.len(),
                tree.n_items()
            );
        }
        if let Some(bad) = cfg.stay_bonus.iter().find(|b| !b.is_finite()) {
            return invalid!("stay_bonus must be finite, got {bad}");
        }
        let d = cfg.d.min(tree.leaf_level());
        if tree
            .arity()
            .checked_pow(d)
            .is_none_or(|w| w > u32::MAX as u64)
        {
            return invalid!("b^d = {}^{d} candidates per item is too many", tree.arity());
        }
        Ok(TreeLearner {
            tree,
            segments: segments(tree.leaf_level(), cfg.d),
            cfg,
            next_segment: 0,
            node: vec![0; tree.n_items()],
            state: None,
            spare_prefs: Vec::new(),
        })
    }

    pub fn segments(&self) -> &[Segment] {
        &self.segments
    }

    /// Starts the next segment (None when all are done). Parallel: run it off the GIL.
    pub fn begin_segment(&mut self) -> Result<Option<Segment>> {
        if self.state.is_some() {
            return Err(JtmError::Internal(
                "begin_segment before the previous segment was assigned".into(),
            ));
        }
        let Some(&seg) = self.segments.get(self.next_segment) else {
            return Ok(None);
        };
        let tree = self.tree;
        let (s, e) = (seg.start_level, seg.end_level);
        let depth = e - s + 1;
        let n_cand = tree.arity().pow(depth) as usize;
        let k = self.cfg.max_candidates.map_or(n_cand, |m| m.min(n_cand));
        let leaves = tree.item_leaves();
        let node = &self.node;

        // Sort contiguous (parent, old leaf, item) keys: no scattered lookups while sorting.
        let mut keyed: Vec<(u64, u64, u32)> = (0..tree.n_items())
            .into_par_iter()
            .map(|i| (node[i], leaves[i], i as u32))
            .collect();
        keyed.par_sort_unstable();
        let mut groups = Vec::new();
        let mut start = 0;
        for p in 1..=keyed.len() {
            if p == keyed.len() || keyed[p].0 != keyed[start].0 {
                groups.push(start..p);
                start = p;
            }
        }
        let (home, stays): (Vec<u32>, Vec<bool>) = keyed
            .par_iter()
            .map(|&(parent, old_leaf, _)| {
                let old_end = tree.ancestor_up(old_leaf, tree.leaf_level() - e);
                let old_parent = tree.ancestor_up(old_end, depth);
                let first = tree.descendant_range(old_parent, depth).start;
                ((old_end - first) as u32, old_parent == parent)
            })
            .unzip();
        let order: Vec<u32> = keyed.into_par_iter().map(|k| k.2).collect();
        // Reuse the previous segment's buffer: it is as large as the tree times k (refused,
        // not aborted, when that cannot be allocated, e.g. d = 31 with max_candidates=None).
        let need = Tree::check_output_len(order.len(), k as u64)?;
        let mut prefs = std::mem::take(&mut self.spare_prefs);
        let more = need.saturating_sub(prefs.len());
        try_reserve(
            &mut prefs,
            more,
            "the candidate preferences (lower max_candidates or d)",
        )?;
        prefs.resize(need, Pref::default());
        self.state = Some(SegmentState {
            seg,
            n_cand,
            k,
            prefs,
            home_weight: try_vec(order.len(), 0.0, "the items' home weights")?,
            order,
            groups,
            home,
            stays,
            filled: 0,
        });
        self.next_segment += 1;
        Ok(Some(seg))
    }

    fn state(&self) -> Result<&SegmentState> {
        self.state
            .as_ref()
            .ok_or_else(|| JtmError::Internal("no segment in progress".into()))
    }

    /// The next block of rows (positions in the segment's item order) still lacking weights.
    pub fn next_chunk(&self) -> Option<Range<usize>> {
        let st = self.state.as_ref()?;
        let rows = (self.cfg.chunk_weights / st.n_cand).clamp(1, self.cfg.chunk_items);
        (st.filled < st.order.len()).then(|| st.filled..(st.filled + rows).min(st.order.len()))
    }

    /// Rows of weights filled so far in this segment, and the segment's total.
    pub fn progress(&self) -> (usize, usize) {
        self.state
            .as_ref()
            .map_or((0, 0), |st| (st.filled, st.order.len()))
    }

    pub fn request(&self, rows: Range<usize>) -> Result<WeightRequest> {
        let st = self.state()?;
        let ids = self.tree.item_ids();
        let order = &st.order[rows];
        Ok(WeightRequest {
            items: order.iter().map(|&i| ids[i as usize]).collect(),
            parents: order.iter().map(|&i| self.node[i as usize]).collect(),
            start_level: st.seg.start_level,
            end_level: st.seg.end_level,
            n_candidates: st.n_cand,
        })
    }

    /// Takes the row-major `rows.len() × n_candidates` weights of `request(rows)` and keeps
    /// each row's best candidates. Parallel: run it off the GIL.
    pub fn accept_weights<T: WeightValue>(
        &mut self,
        rows: Range<usize>,
        weights: &[T],
    ) -> Result<()> {
        let ids = self.tree.item_ids();
        let st = self
            .state
            .as_mut()
            .ok_or_else(|| JtmError::Internal("no segment in progress".into()))?;
        if rows.start != st.filled || rows.end > st.order.len() {
            return Err(JtmError::Internal(format!(
                "weights for rows {rows:?} arrived out of order"
            )));
        }
        let (n_cand, k) = (st.n_cand, st.k);
        if weights.len() != rows.len() * n_cand {
            return Err(JtmError::Callback(format!(
                "weights_fn returned {} values, expected {} × {n_cand}",
                weights.len(),
                rows.len()
            )));
        }
        let order = &st.order[rows.clone()];
        let home = &st.home[rows.clone()];
        let stays = &st.stays[rows.clone()];
        // The bonus applies where the item stays under its old ancestor, in every segment but
        // the last (which has no deeper levels to lose).
        let last = st.seg.end_level == self.tree.leaf_level();
        let bonus = &self.cfg.stay_bonus;
        let bonus_of = |r: usize| -> f64 {
            if last || bonus.is_empty() || !stays[r] {
                0.0
            } else {
                bonus[order[r] as usize]
            }
        };
        for (r, (hw, row)) in st.home_weight[rows.clone()]
            .iter_mut()
            .zip(weights.chunks(n_cand))
            .enumerate()
        {
            let h = home[r] as usize;
            let b = bonus_of(r);
            *hw = if b == 0.0 {
                row[h].to_f32()
            } else {
                row[h].plus(b)
            };
        }
        st.prefs[rows.start * k..rows.end * k]
            .par_chunks_mut(k)
            .zip(weights.par_chunks(n_cand))
            .enumerate()
            .try_for_each_init(Vec::new, |buf, (r, (out, row))| {
                if let Some(c) = row.iter().position(|w| w.is_nan_or_inf()) {
                    return Err(JtmError::Callback(format!(
                        "weights_fn returned a non-finite weight (NaN or infinity) for item {} at column {c}",
                        ids[order[r] as usize]
                    )));
                }
                best_candidates(row, home[r], bonus_of(r), buf, out);
                Ok(())
            })?;
        st.filled = rows.end;
        Ok(())
    }

    /// Assigns every item of the segment to a candidate (greedy + rebalance, parallel over
    /// parents). Parallel: run it off the GIL.
    pub fn assign(&mut self) -> Result<()> {
        let st = self
            .state
            .take()
            .ok_or_else(|| JtmError::Internal("no segment in progress".into()))?;
        if st.filled != st.order.len() {
            self.state = Some(st);
            return Err(JtmError::Internal(
                "assign before every weight arrived".into(),
            ));
        }
        let tree = self.tree;
        let depth = st.seg.end_level - st.seg.start_level + 1;
        let capacity = tree.capacity(st.seg.end_level) as usize;
        let mut chosen = vec![0u32; st.order.len()];
        let mut slices = Vec::with_capacity(st.groups.len());
        let mut rest = chosen.as_mut_slice();
        for g in &st.groups {
            let (head, tail) = rest.split_at_mut(g.len());
            slices.push(head);
            rest = tail;
        }
        st.groups.par_iter().zip(slices).for_each(|(g, out)| {
            let input = GroupInput {
                prefs: &st.prefs[g.start * st.k..g.end * st.k],
                k: st.k,
                home: &st.home[g.clone()],
                stays: &st.stays[g.clone()],
                n_cand: st.n_cand,
                arity: tree.arity() as u32,
                capacity,
                rebalance: self.cfg.rebalance,
            };
            assign_group(&input, out);
            improve_group(&input, out, self.cfg.improve_passes);
            if self.cfg.keep_better {
                keep_better(&input, &st.home_weight[g.clone()], out);
            }
        });
        for (&i, &c) in st.order.iter().zip(&chosen) {
            let parent = self.node[i as usize];
            self.node[i as usize] = tree.descendant_range(parent, depth).start + c as u64;
        }
        self.spare_prefs = st.prefs;
        Ok(())
    }

    /// The learned tree, once every segment is assigned.
    pub fn finish(self) -> Result<Tree> {
        if self.state.is_some() || self.next_segment < self.segments.len() {
            return Err(JtmError::Internal(
                "finish before every segment was assigned".into(),
            ));
        }
        Tree::from_leaves(
            self.tree.item_ids(),
            &self.node,
            self.tree.arity(),
            self.tree.leaf_level(),
        )
        .map_err(|e| JtmError::Internal(format!("tree learning produced an invalid tree: {e}")))
    }
}

/// Candidate order: weight descending, then home first, then lower index (deterministic).
/// `best_candidates` implements it with packed integer keys; this is its test oracle.
#[cfg(test)]
fn better(a: &Pref, b: &Pref, home: u32) -> std::cmp::Ordering {
    b.weight
        .total_cmp(&a.weight)
        .then_with(|| (a.cand != home).cmp(&(b.cand != home)))
        .then(a.cand.cmp(&b.cand))
}

/// Order-preserving map of an f32 onto u32 (agrees with `f32::total_cmp`).
fn ordered_bits(w: f32) -> u32 {
    let b = w.to_bits();
    if b >> 31 == 1 {
        !b
    } else {
        b | 0x8000_0000
    }
}

fn from_ordered_bits(b: u32) -> f32 {
    f32::from_bits(if b >> 31 == 1 { b & 0x7FFF_FFFF } else { !b })
}

/// Writes the `out.len()` best candidates of `row` into `out`, best first, in the order of
/// [`better`]. Each candidate is packed into one u64 (weight bits, then home-first and
/// lower-index tie-breaks) so selection and sorting are plain integer compares.
/// `bonus` is added to the home candidate's weight (0: none).
fn best_candidates<T: WeightValue>(
    row: &[T],
    home: u32,
    bonus: f64,
    buf: &mut Vec<u64>,
    out: &mut [Pref],
) {
    buf.clear();
    buf.extend(row.iter().enumerate().map(|(c, &w)| {
        let (tie, w) = if c as u32 == home {
            (
                u32::MAX,
                if bonus == 0.0 {
                    w.to_f32()
                } else {
                    w.plus(bonus)
                },
            )
        } else {
            (u32::MAX - 1 - c as u32, w.to_f32())
        };
        ((ordered_bits(w) as u64) << 32) | tie as u64
    }));
    let k = out.len();
    if k < buf.len() {
        buf.select_nth_unstable_by(k - 1, |a, b| b.cmp(a));
        buf.truncate(k);
    }
    buf.sort_unstable_by(|a, b| b.cmp(a));
    for (o, &key) in out.iter_mut().zip(buf.iter()) {
        let tie = key as u32;
        let cand = if tie == u32::MAX {
            home
        } else {
            u32::MAX - 1 - tie
        };
        *o = Pref {
            cand,
            weight: from_ordered_bits((key >> 32) as u32),
        };
    }
}

struct GroupInput<'a> {
    prefs: &'a [Pref],
    k: usize,
    home: &'a [u32],
    stays: &'a [bool],
    n_cand: usize,
    arity: u32,
    capacity: usize,
    rebalance: Rebalance,
}

/// Greedy assignment with rebalance for the items of one parent; `out[row]` gets the chosen
/// candidate of each row.
fn assign_group(g: &GroupInput, out: &mut [u32]) {
    let n = out.len();
    let prefs = |row: usize| &g.prefs[row * g.k..(row + 1) * g.k];
    let mut pos = vec![0usize; n];
    let mut weight: Vec<f32> = (0..n).map(|r| prefs(r)[0].weight).collect();
    let mut members: Vec<Vec<u32>> = vec![Vec::new(); g.n_cand];
    for row in 0..n {
        members[prefs(row)[0].cand as usize].push(row as u32);
    }
    let mut processed = vec![false; g.n_cand];
    // Take the unprocessed candidate holding the most items (lowest index on ties).
    while let Some((c, count)) = (0..g.n_cand)
        .filter(|&c| !processed[c])
        .map(|c| (c, members[c].len()))
        .max_by(|a, b| a.1.cmp(&b.1).then(b.0.cmp(&a.0)))
    {
        if count <= g.capacity {
            break;
        }
        processed[c] = true;
        let here = std::mem::take(&mut members[c]);
        // Keep first the items that were already here (lazy rule), then by the rebalance key.
        let rank = |r: usize| match g.rebalance {
            Rebalance::Weight => weight[r],
            // An item placed by the fallback has no known weight here: it leaves first.
            Rebalance::Regret if weight[r] == f32::NEG_INFINITY => f32::NEG_INFINITY,
            Rebalance::Regret => {
                let p = prefs(r);
                let next = p[pos[r]..].iter().find(|q| !processed[q.cand as usize]);
                next.map_or(f32::INFINITY, |q| weight[r] - q.weight)
            }
        };
        let mut keyed: Vec<(bool, f32, f32, u32)> = here
            .iter()
            .map(|&r| {
                let r = r as usize;
                (
                    !(g.stays[r] && g.home[r] == c as u32),
                    rank(r),
                    weight[r],
                    r as u32,
                )
            })
            .collect();
        keyed.sort_unstable_by(|a, b| {
            a.0.cmp(&b.0)
                .then(b.1.total_cmp(&a.1))
                .then(b.2.total_cmp(&a.2))
                .then(a.3.cmp(&b.3))
        });
        let mut here: Vec<u32> = keyed.into_iter().map(|k| k.3).collect();
        for &row in &here[g.capacity..] {
            let row = row as usize;
            let p = prefs(row);
            while pos[row] < g.k && processed[p[pos[row]].cand as usize] {
                pos[row] += 1;
            }
            let next = if pos[row] < g.k {
                weight[row] = p[pos[row]].weight;
                p[pos[row]].cand as usize
            } else {
                weight[row] = f32::NEG_INFINITY;
                nearest_unprocessed(p[0].cand, &processed, g.arity)
            };
            members[next].push(row as u32);
        }
        here.truncate(g.capacity);
        members[c] = here;
    }
    for (c, rows) in members.iter().enumerate() {
        for &row in rows {
            out[row as usize] = c as u32;
        }
    }
}

/// Pairwise-exchange local search on one group's assignment `choice`: move an item to a better
/// candidate with room, or swap it with an item there when the swap raises the total weight.
/// Only for groups whose dense (row × candidate) table is small, i.e. near the leaves, where
/// capacities are tight and the greedy loses most. Every move strictly raises the total.
fn improve_group(g: &GroupInput, choice: &mut [u32], passes: usize) {
    let n = choice.len();
    if passes == 0 || n * g.n_cand > DENSE_LIMIT {
        return;
    }
    // Every item on its first choice: the total is the sum of row maxima, already optimal.
    if (0..n).all(|r| g.prefs[r * g.k].cand == choice[r]) {
        return;
    }
    let prefs = |row: usize| &g.prefs[row * g.k..(row + 1) * g.k];
    let mut dense = vec![f32::NEG_INFINITY; n * g.n_cand];
    for r in 0..n {
        for p in prefs(r) {
            dense[r * g.n_cand + p.cand as usize] = p.weight;
        }
    }
    let w = |r: usize, c: u32| dense[r * g.n_cand + c as usize] as f64;
    let mut members: Vec<Vec<u32>> = vec![Vec::new(); g.n_cand];
    for (r, &c) in choice.iter().enumerate() {
        members[c as usize].push(r as u32);
    }
    for _ in 0..passes {
        let mut improved = false;
        for r in 0..n {
            let a = choice[r];
            let here = w(r, a);
            for p in prefs(r) {
                let (b, there) = (p.cand, p.weight as f64);
                if there <= here {
                    break; // prefs are sorted: no better candidate left
                }
                let partner = if members[b as usize].len() < g.capacity {
                    None
                } else {
                    let best = members[b as usize]
                        .iter()
                        .map(|&s| {
                            // Unknown weights on both sides (fallback placements) give NaN:
                            // no known gain.
                            let gain = there + w(s as usize, a) - here - w(s as usize, b);
                            (
                                if gain.is_nan() {
                                    f64::NEG_INFINITY
                                } else {
                                    gain
                                },
                                s,
                            )
                        })
                        .max_by(|x, y| x.0.total_cmp(&y.0).then(y.1.cmp(&x.1)));
                    match best {
                        Some((gain, s)) if gain > 0.0 => Some(s),
                        _ => continue,
                    }
                };
                members[a as usize].retain(|&x| x != r as u32);
                members[b as usize].push(r as u32);
                choice[r] = b;
                if let Some(s) = partner {
                    members[b as usize].retain(|&x| x != s);
                    members[a as usize].push(s);
                    choice[s as usize] = a;
                }
                improved = true;
                break;
            }
        }
        if !improved {
            break;
        }
    }
}

/// Puts every item of the group back home when all of them were under this parent before
/// (so the old placement is feasible) and the old placement's total weight is larger. A
/// choice outside an item's kept preferences (a fallback placement) counts at its `k`-th best
/// weight, an upper bound, so the old placement wins only when it surely weighs more.
fn keep_better(g: &GroupInput, home_weight: &[f32], choice: &mut [u32]) {
    if !g.stays.iter().all(|&s| s) {
        return;
    }
    let new: f64 = choice
        .iter()
        .enumerate()
        .map(|(r, &c)| {
            let prefs = &g.prefs[r * g.k..(r + 1) * g.k];
            let w = prefs
                .iter()
                .find(|p| p.cand == c)
                .unwrap_or(&prefs[g.k - 1]);
            w.weight as f64
        })
        .sum();
    let old: f64 = home_weight.iter().map(|&w| w as f64).sum();
    if old > new {
        choice.copy_from_slice(g.home);
    }
}

/// The unprocessed candidate sharing the deepest ancestor with `favourite`, then the closest
/// by index. One always exists: a processed candidate is full, and the group fits.
fn nearest_unprocessed(favourite: u32, processed: &[bool], arity: u32) -> usize {
    let split_depth = |mut a: u32, mut b: u32| {
        let mut up = 0;
        while a != b {
            a /= arity;
            b /= arity;
            up += 1;
        }
        up
    };
    (0..processed.len() as u32)
        .filter(|&c| !processed[c as usize])
        .min_by_key(|&c| (split_depth(c, favourite), c.abs_diff(favourite), c))
        .expect("an unprocessed candidate remains while items overflow") as usize
}

/// Drives the learner from Rust with a weights closure (used by tests and benches; the Python
/// binding drives the same steps itself).
pub fn learn_tree<T, F>(
    tree: &Tree,
    cfg: LearnConfig,
    n_threads: Option<usize>,
    mut weights_fn: F,
) -> Result<Tree>
where
    T: WeightValue,
    F: FnMut(&WeightRequest) -> Result<Vec<T>>,
{
    use crate::parallel::run;
    let mut learner = TreeLearner::new(tree, cfg)?;
    while run(n_threads, || learner.begin_segment())?.is_some() {
        while let Some(rows) = learner.next_chunk() {
            let w = weights_fn(&learner.request(rows.clone())?)?;
            run(n_threads, || learner.accept_weights(rows, &w))?;
        }
        run(n_threads, || learner.assign())?;
    }
    learner.finish()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Weights that point every item at the leaf it has in `target`: a candidate scores the
    /// number of levels of the segment on which its path agrees with the target leaf's path.
    fn planted_weights<'a>(
        tree: &'a Tree,
        target: &Tree,
    ) -> impl FnMut(&WeightRequest) -> Result<Vec<f32>> + 'a {
        let target = target.clone();
        move |req| {
            let mut w = Vec::with_capacity(req.items.len() * req.n_candidates);
            for (&item, &p) in req.items.iter().zip(&req.parents) {
                let goal = target.leaf_of(item)?;
                let cands = tree.descendant_range(p, req.end_level - req.start_level + 1);
                for cand in cands {
                    let agree = (req.start_level..=req.end_level)
                        .filter(|&j| {
                            tree.ancestor(cand, j).unwrap() == target.ancestor(goal, j).unwrap()
                        })
                        .count();
                    w.push(agree as f32);
                }
            }
            Ok(w)
        }
    }

    #[test]
    fn packed_selection_matches_the_candidate_order() {
        let mut rng = crate::rng::SplitMix64::new(5);
        let specials = [
            0.0f32,
            -0.0,
            1.5,
            -1.5,
            f32::INFINITY,
            f32::NEG_INFINITY,
            f32::MIN_POSITIVE,
        ];
        for trial in 0..200 {
            let n = 1 + rng.below(70) as usize;
            // Few distinct values, so ties (and the home / index tie-breaks) are common.
            let row: Vec<f32> = (0..n)
                .map(|_| specials[rng.below(specials.len() as u64) as usize])
                .collect();
            let home = rng.below(n as u64 + 3) as u32; // sometimes outside the row
            let k = 1 + rng.below(n as u64) as usize;
            let mut want: Vec<Pref> = row
                .iter()
                .enumerate()
                .map(|(c, &w)| Pref {
                    cand: c as u32,
                    weight: w,
                })
                .collect();
            want.sort_by(|a, b| better(a, b, home));
            let mut got = vec![Pref::default(); k];
            best_candidates(&row, home, 0.0, &mut Vec::new(), &mut got);
            for (g, w) in got.iter().zip(&want) {
                assert_eq!(
                    (g.cand, g.weight.to_bits()),
                    (w.cand, w.weight.to_bits()),
                    "trial {trial}"
                );
            }
        }
    }

    #[test]
    fn segments_cover_levels_once() {
        assert_eq!(
            segments(20, 7)
                .iter()
                .map(|s| (s.start_level, s.end_level))
                .collect::<Vec<_>>(),
            vec![(1, 7), (8, 14), (15, 20)]
        );
        assert_eq!(segments(3, 7).len(), 1);
        assert_eq!(segments(3, 1).len(), 3);
    }

    #[test]
    fn recovers_a_planted_tree() {
        let items: Vec<i64> = (0..200).collect();
        let start = Tree::random(&items, 2, None, 1).unwrap();
        let planted = Tree::random(&items, 2, None, 2).unwrap();
        for d in [1, 3, 8] {
            for threads in [1, 2] {
                let cfg = LearnConfig {
                    d,
                    max_candidates: Some(4),
                    chunk_weights: 300,
                    ..Default::default()
                };
                let learned = learn_tree(
                    &start,
                    cfg,
                    Some(threads),
                    planted_weights(&start, &planted),
                )
                .unwrap();
                assert_eq!(learned, planted, "d = {d}");
            }
        }
    }

    #[test]
    fn keep_better_restores_the_old_placement_only_when_it_weighs_more_and_is_feasible() {
        let p = |cand, weight| Pref { cand, weight };
        let prefs = [p(0, 1.0), p(1, 0.5), p(1, 1.0), p(0, 0.2)];
        let (home, stays) = ([1u32, 0], [true, true]);
        let g = GroupInput {
            prefs: &prefs,
            k: 2,
            home: &home,
            stays: &stays,
            n_cand: 2,
            arity: 2,
            capacity: 1,
            rebalance: Rebalance::Regret,
        };
        let mut choice = [0u32, 1];
        keep_better(&g, &[0.5, 0.2], &mut choice); // old 0.7 < new 2.0
        assert_eq!(choice, [0, 1]);
        keep_better(&g, &[1.5, 0.6], &mut choice); // old 2.1 > new 2.0
        assert_eq!(choice, [1, 0]);
        let moved_in = [true, false]; // item 1 came from another parent: no old placement here
        let g = GroupInput {
            stays: &moved_in,
            ..g
        };
        let mut choice = [0u32, 1];
        keep_better(&g, &[1.5, 0.6], &mut choice);
        assert_eq!(choice, [0, 1]);
    }

    #[test]
    fn constant_weights_keep_the_tree() {
        let items: Vec<i64> = (0..77).collect();
        let start = Tree::random(&items, 3, None, 4).unwrap();
        let learned = learn_tree(&start, LearnConfig::default(), None, |r: &WeightRequest| {
            Ok(vec![0.0f64; r.items.len() * r.n_candidates])
        })
        .unwrap();
        assert_eq!(learned, start);
    }

    #[test]
    fn rebalance_respects_capacity_and_prefers_residents() {
        // 4 items all wanting candidate 0 (capacity 1 at the leaves of a depth-2 binary tree).
        let weights = [
            [9.0, 1.0, 2.0, 3.0],
            [8.0, 3.0, 2.0, 1.0],
            [7.0, 1.0, 3.0, 2.0],
            [6.0, 2.0, 1.0, 3.0],
        ];
        let prefs: Vec<Pref> = weights
            .iter()
            .flat_map(|row| {
                let mut out = [Pref::default(); 4];
                best_candidates(row, 99, 0.0, &mut Vec::new(), &mut out);
                out
            })
            .collect();
        let mut out = [0u32; 4];
        // Row 3 lived on candidate 0 before: the lazy rule keeps it there over heavier rows.
        let g = GroupInput {
            prefs: &prefs,
            k: 4,
            home: &[1, 2, 3, 0],
            stays: &[true; 4],
            n_cand: 4,
            arity: 2,
            capacity: 1,
            rebalance: Rebalance::Weight,
        };
        assign_group(&g, &mut out);
        assert_eq!(out[3], 0);
        let mut sorted = out;
        sorted.sort();
        assert_eq!(sorted, [0, 1, 2, 3]);
        // Without residents, the heaviest keeps candidate 0 and the others follow their order.
        let g = GroupInput {
            stays: &[false; 4],
            ..g
        };
        assign_group(&g, &mut out);
        assert_eq!(out, [0, 1, 2, 3]);
    }

    #[test]
    fn bad_weights_are_refused() {
        let t = Tree::random(&(0..10).collect::<Vec<_>>(), 2, None, 0).unwrap();
        let nan = learn_tree(&t, LearnConfig::default(), None, |r: &WeightRequest| {
            let mut w = vec![0.0f32; r.items.len() * r.n_candidates];
            w[3] = f32::NAN;
            Ok(w)
        });
        assert!(matches!(nan, Err(JtmError::Callback(m)) if m.contains("non-finite")));
        let short = learn_tree(&t, LearnConfig::default(), None, |_: &WeightRequest| {
            Ok(vec![0.0f32; 3])
        });
        assert!(matches!(short, Err(JtmError::Callback(_))));
        let d0 = learn_tree(
            &t,
            LearnConfig {
                d: 0,
                ..Default::default()
            },
            None,
            |_: &WeightRequest| Ok(vec![0f32]),
        );
        assert!(matches!(d0, Err(JtmError::InvalidArgument(_))));
    }

    /// Weights pulling every item to the sibling of its old ancestor at the segment's end:
    /// the stay bonus outweighs the pull in the first segment only, and only for the items
    /// that have one.
    #[test]
    fn stay_bonus_keeps_items_home_except_in_the_last_segment() {
        let items: Vec<i64> = (0..64).collect();
        let t = Tree::random(&items, 2, None, 3).unwrap();
        let (l, d) = (t.leaf_level(), t.leaf_level() - 1);
        let pull = |r: &WeightRequest| -> Result<Vec<f64>> {
            let mut w = vec![0.0; r.items.len() * r.n_candidates];
            for (i, (&item, &p)) in r.items.iter().zip(&r.parents).enumerate() {
                let own = t.leaf_of(item).unwrap();
                let old = t.ancestor(own, r.end_level).unwrap();
                let sibling = if old % 2 == 1 { old + 1 } else { old - 1 };
                let cands = t.descendants(p, r.end_level).unwrap();
                if cands.contains(&sibling) {
                    w[i * r.n_candidates + (sibling - cands.start) as usize] = 1.0;
                }
            }
            Ok(w)
        };
        let at_l_1 = |tree: &Tree| -> Vec<u64> {
            items
                .iter()
                .map(|&i| tree.ancestor(tree.leaf_of(i).unwrap(), l - 1).unwrap())
                .collect()
        };
        let before = at_l_1(&t);
        let run = |bonus: Vec<f64>| {
            let cfg = LearnConfig {
                d,
                stay_bonus: bonus,
                ..Default::default()
            };
            learn_tree(&t, cfg, Some(1), pull).unwrap()
        };
        let moved = at_l_1(&run(Vec::new()));
        assert!(moved.iter().zip(&before).all(|(a, b)| a != b));
        let half: Vec<f64> = items
            .iter()
            .map(|&i| if i % 2 == 0 { 10.0 } else { 0.0 })
            .collect();
        let learned = run(half);
        let kept = at_l_1(&learned);
        let stayed = |even: bool| {
            (0..items.len())
                .filter(|&k| (k % 2 == 0) == even && kept[k] == before[k])
                .count()
        };
        assert_eq!(stayed(true), items.len() / 2);
        assert!(stayed(false) < items.len() / 2); // where capacity lets them, the others move
                                                  // The last segment gets no bonus: kept items still follow the pull to the other leaf.
        let leaf = |tree: &Tree, i: i64| tree.leaf_of(i).unwrap();
        assert!(items
            .iter()
            .any(|&i| i % 2 == 0 && leaf(&learned, i) != leaf(&t, i)));
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(40))]
        #[test]
        fn any_weights_give_a_valid_tree(n in 1usize..120, arity in 2u64..4, d in 1u32..5, k in 1usize..9, seed: u64) {
            let items: Vec<i64> = (0..n as i64).collect();
            let t = Tree::random(&items, arity, None, seed).unwrap();
            let mut rng = crate::rng::SplitMix64::new(seed);
            let cfg = LearnConfig { d, max_candidates: Some(k), chunk_weights: 50, ..Default::default() };
            let learned = learn_tree(&t, cfg, Some(2), |r: &WeightRequest| {
                Ok((0..r.items.len() * r.n_candidates).map(|_| (rng.below(5) as f32).ln_1p()).collect::<Vec<f32>>())
            }).unwrap();
            learned.validate().unwrap();
            prop_assert_eq!(learned.item_ids(), t.item_ids());
            prop_assert_eq!(learned.leaf_level(), t.leaf_level());
        }
    }
}
