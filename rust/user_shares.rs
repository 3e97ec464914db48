//! The first layer's user share of many users, forward only: the time windows' means of the
//! behaviours' embeddings (paper §3.3's hierarchical representation: at a level, each
//! behaviour leaf stands as its ancestor there), times the first layer's user weights, plus
//! its bias (docs/performance.md, "The scoring pass").
//!
//! Tree learning needs it for every sample on every level of a segment and beam search for
//! every user on every level searched; in torch that is ~15 operations over `[users, 69]` ids
//! (the ancestors, a mask, prefix sums, a unique, `embedding_bag`), which cost tree learning
//! more than its multiplies. Here each row's ancestors, window sums and mean are one pass over
//! its behaviours, and the product goes through [`crate::dense_kernels`].

use crate::dense_kernels::{prefetch_rows, Init, Packed, Precision, Rows, Scratch};
use crate::error::{JtmError, Result};
use crate::fused_mlp::CHUNK_PAIRS;
use rayon::prelude::*;

/// The user side of the first layer: `table` the node embeddings `[n_rows, dim]` (every node
/// id a row), `windows` the sizes of the time windows over the most recent behaviours,
/// `weight` `[hidden, windows · dim]` and `bias` `[hidden]`.
#[derive(Clone, Copy, Debug)]
pub struct UserSide<'a> {
    pub table: &'a [f32],
    pub dim: usize,
    pub windows: &'a [usize],
    pub weight: &'a [f32],
    pub bias: &'a [f32],
}

/// The tree's numbering (heap order, `arity` children per node, leaves on `leaf_level`) and
/// each row's level: its behaviours are leaves, each taken as its ancestor at the row's level.
#[derive(Clone, Copy, Debug)]
pub struct Hierarchy<'a> {
    pub arity: usize,
    pub leaf_level: usize,
    pub levels: &'a [i64],
}

/// `[rows, hidden]`: each row of `behaviours` (`[rows, width]` node ids, most recent first,
/// `-1` padding) through the user side, the product in `precision`.
pub fn user_shares(
    side: &UserSide<'_>,
    behaviours: &[i64],
    width: usize,
    hierarchy: Option<Hierarchy<'_>>,
    precision: Precision,
    n_parts: usize,
) -> Result<Vec<f32>> {
    let (dim, n_windows) = (side.dim, side.windows.len());
    let k = n_windows * dim;
    let hidden = side.bias.len();
    let bad = |m: String| Err(JtmError::InvalidArgument(m));
    if dim == 0 || !side.table.len().is_multiple_of(dim) || side.weight.len() != hidden * k {
        return bad(format!(
            "a user side of {} weights for {hidden} outputs and {n_windows} windows of {dim} does not fit a table of {} values",
            side.weight.len(),
            side.table.len()
        ));
    }
    let rows = behaviours.len().checked_div(width).unwrap_or(0);
    if width == 0 || !behaviours.len().is_multiple_of(width) {
        return bad(format!(
            "{} behaviours are not rows of {width}",
            behaviours.len()
        ));
    }
    if let Some(h) = hierarchy {
        if h.arity < 2
            || h.levels.len() != rows
            || h.levels.iter().any(|&l| l < 0 || l as usize > h.leaf_level)
        {
            return bad(format!(
                "{} levels for {rows} rows, each in 0..={} of a tree of arity {} (at least 2)",
                h.levels.len(),
                h.leaf_level,
                h.arity
            ));
        }
    }
    let n_rows = (side.table.len() / dim) as i64;
    if behaviours.iter().any(|&b| b >= n_rows || b < -1) {
        return bad(format!("behaviours must be node ids in 0..{n_rows} or -1"));
    }
    let mut out = vec![0.0f32; rows * hidden];
    if rows == 0 || hidden == 0 {
        return Ok(out);
    }
    let packed = Packed::new(side.weight, hidden, k, precision);
    let read: usize = side.windows.iter().sum(); // behaviours past the windows are not read
    let starts = hierarchy.map(|h| level_starts(h.arity, h.leaf_level));
    let per_part = rows
        .div_ceil(n_parts.clamp(1, rows.div_ceil(CHUNK_PAIRS)))
        .max(1);
    let run_part = |(i, part): (usize, &mut [f32])| {
        let mut means = vec![0.0f32; CHUNK_PAIRS * k];
        let mut ids = vec![0i64; CHUNK_PAIRS * width];
        let mut scratch = Scratch::default();
        for (j, y) in part.chunks_mut(CHUNK_PAIRS * hidden).enumerate() {
            let r0 = i * per_part + j * CHUNK_PAIRS;
            let c = y.len() / hidden;
            let ids = &mut ids[..c * width];
            let rows = &behaviours[r0 * width..(r0 + c) * width];
            match (hierarchy, &starts) {
                (Some(h), Some(s)) => {
                    for (r, (a, b)) in ids
                        .chunks_exact_mut(width)
                        .zip(rows.chunks_exact(width))
                        .enumerate()
                    {
                        let level = h.levels[r0 + r] as usize;
                        let span = (h.arity as i64).pow((h.leaf_level - level) as u32);
                        for (a, &b) in a.iter_mut().zip(b) {
                            *a = if b < 0 {
                                b
                            } else {
                                s[level] + (b - s[h.leaf_level]) / span
                            };
                        }
                    }
                }
                _ => ids.copy_from_slice(rows),
            }
            for r in 0..c {
                // The embedding rows of a row a few ahead, while this one sums: random rows of
                // a table far larger than the cache.
                if r + PREFETCH_AHEAD < c {
                    let ahead =
                        &ids[(r + PREFETCH_AHEAD) * width..(r + PREFETCH_AHEAD + 1) * width];
                    prefetch_rows(side.table, &ahead[..read.min(width)], dim);
                }
                window_means(
                    side,
                    &ids[r * width..(r + 1) * width],
                    &mut means[r * k..(r + 1) * k],
                );
            }
            packed.apply(
                Rows::dense(&means[..c * k]),
                c,
                Init::Bias(side.bias),
                None,
                y,
                &mut scratch,
            );
        }
    };
    if per_part >= rows {
        run_part((0, &mut out));
    } else {
        out.par_chunks_mut(per_part * hidden)
            .enumerate()
            .for_each(run_part);
    }
    Ok(out)
}

/// Rows ahead whose embedding rows are prefetched.
const PREFETCH_AHEAD: usize = 4;

/// First node id of every level `0..=leaf_level` in heap order.
pub(crate) fn level_starts(arity: usize, leaf_level: usize) -> Vec<i64> {
    let mut starts = Vec::with_capacity(leaf_level + 1);
    let (mut first, mut width) = (0i64, 1i64);
    for _ in 0..=leaf_level {
        starts.push(first);
        first += width;
        width = width.saturating_mul(arity as i64);
    }
    starts
}

/// `out` `[windows · dim]`: per window, the mean of its real behaviours' embedding rows
/// (zeros where it holds none). Behaviours past the windows are not read; ids the windows hold
/// beyond the row's width count as padding.
fn window_means(side: &UserSide<'_>, ids: &[i64], out: &mut [f32]) {
    let dim = side.dim;
    out.fill(0.0);
    let mut lo = 0;
    for (w, &size) in side.windows.iter().enumerate() {
        let hi = (lo + size).min(ids.len());
        let acc = &mut out[w * dim..(w + 1) * dim];
        let mut count = 0usize;
        for &b in &ids[lo.min(hi)..hi] {
            if b >= 0 {
                let row = &side.table[b as usize * dim..(b as usize + 1) * dim];
                acc.iter_mut().zip(row).for_each(|(a, v)| *a += v);
                count += 1;
            }
        }
        if count > 1 {
            let inv = count as f32;
            acc.iter_mut().for_each(|a| *a /= inv);
        }
        lo += size;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn value(i: usize, salt: usize) -> f32 {
        (((i * 7919 + salt * 104_729) % 1000) as f32 / 1000.0 - 0.5) * 0.8
    }

    #[test]
    fn shares_are_window_means_times_the_weights() {
        // A binary tree of 4 levels (15 nodes), dim 2, windows 1 and 2, 3 outputs.
        let (dim, hidden, windows) = (2, 3, [1usize, 2]);
        let table: Vec<f32> = (0..15 * dim).map(|i| value(i, 1)).collect();
        let weight: Vec<f32> = (0..hidden * 2 * dim).map(|i| value(i, 2)).collect();
        let bias = vec![0.1, -0.2, 0.3];
        let side = UserSide {
            table: &table,
            dim,
            windows: &windows,
            weight: &weight,
            bias: &bias,
        };
        // Leaves are 7..=14; rows at levels 3 (leaves), 1 and 2.
        let behaviours = [7i64, 9, 14, 8, -1, 12, -1, -1, -1];
        let levels = [3i64, 1, 2];
        let h = Hierarchy {
            arity: 2,
            leaf_level: 3,
            levels: &levels,
        };
        let got = user_shares(&side, &behaviours, 3, Some(h), Precision::Float32, 1).unwrap();
        let anc = |leaf: i64, level: i64| (1i64 << level) - 1 + (leaf - 7) / (1i64 << (3 - level));
        let rows: [[Vec<i64>; 2]; 3] = [
            [vec![7], vec![9, 14]],
            [vec![anc(8, 1)], vec![anc(12, 1)]],
            [vec![], vec![]],
        ];
        for (r, windows) in rows.iter().enumerate() {
            let mut means = Vec::new();
            for ids in windows {
                for d in 0..dim {
                    let s: f32 = ids.iter().map(|&i| table[i as usize * dim + d]).sum();
                    means.push(if ids.is_empty() {
                        0.0
                    } else {
                        s / ids.len() as f32
                    });
                }
            }
            for o in 0..hidden {
                let want = bias[o]
                    + (0..2 * dim)
                        .map(|i| means[i] * weight[o * 2 * dim + i])
                        .sum::<f32>();
                assert!(
                    (got[r * hidden + o] - want).abs() < 1e-6,
                    "row {r} output {o}"
                );
            }
        }
        let flat = user_shares(&side, &behaviours, 3, None, Precision::Float32, 2).unwrap();
        assert_eq!(
            flat[..hidden],
            got[..hidden],
            "leaves at the leaf level are themselves"
        );
    }

    #[test]
    fn ancestors_at_a_level_are_the_heap_numbering_for_every_arity() {
        // Shares at a level equal the shares of the ancestors written out, for several arities.
        for arity in [2usize, 3, 4] {
            let leaf_level = 3;
            let starts = level_starts(arity, leaf_level);
            let n_nodes = (starts[leaf_level] + (arity as i64).pow(leaf_level as u32)) as usize;
            let (dim, hidden, windows) = (2, 3, [2usize, 3]);
            let table: Vec<f32> = (0..n_nodes * dim).map(|i| value(i, 3)).collect();
            let weight: Vec<f32> = (0..hidden * 2 * dim).map(|i| value(i, 4)).collect();
            let bias = vec![0.0; hidden];
            let side = UserSide {
                table: &table,
                dim,
                windows: &windows,
                weight: &weight,
                bias: &bias,
            };
            let n_leaves = (arity as i64).pow(leaf_level as u32);
            let leaf = |i: i64| starts[leaf_level] + (i * 7 + 3) % n_leaves;
            let width = 5;
            let row: Vec<i64> = (0..width as i64)
                .map(|i| if i == 3 { -1 } else { leaf(i) })
                .collect();
            for level in 0..=leaf_level {
                let h = Hierarchy {
                    arity,
                    leaf_level,
                    levels: &[level as i64],
                };
                let got = user_shares(&side, &row, width, Some(h), Precision::Float32, 1).unwrap();
                let span = (arity as i64).pow((leaf_level - level) as u32);
                let written: Vec<i64> = row
                    .iter()
                    .map(|&b| {
                        if b < 0 {
                            b
                        } else {
                            starts[level] + (b - starts[leaf_level]) / span
                        }
                    })
                    .collect();
                let want =
                    user_shares(&side, &written, width, None, Precision::Float32, 1).unwrap();
                assert_eq!(got, want, "arity {arity}, level {level}");
            }
        }
    }

    #[test]
    fn bad_input_is_refused() {
        let table = vec![0.0f32; 30];
        let (weight, bias) = (vec![0.0f32; 12], vec![0.0f32; 3]);
        let side = UserSide {
            table: &table,
            dim: 2,
            windows: &[1, 1],
            weight: &weight,
            bias: &bias,
        };
        let levels = [1i64];
        let h = Hierarchy {
            arity: 2,
            leaf_level: 3,
            levels: &levels,
        };
        assert!(user_shares(&side, &[15, 7], 2, None, Precision::Float32, 1).is_err());
        assert!(user_shares(&side, &[7, -2], 2, None, Precision::Float32, 1).is_err());
        assert!(user_shares(&side, &[7, 8, 9], 2, None, Precision::Float32, 1).is_err());
        assert!(user_shares(&side, &[7, 8, 9, 10], 2, Some(h), Precision::Float32, 1).is_err());
        assert!(user_shares(&side, &[7, 8], 2, Some(h), Precision::Float32, 1).is_ok());
    }
}
