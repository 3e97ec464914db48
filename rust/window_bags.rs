//! The first layer's user share from the hierarchical user representation (paper §3.3), forward
//! and backward, around [`crate::fused_mlp::bce_step`].
//!
//! A user row (one training example at one level) is the means of its behaviours' embedding
//! rows over the 10 time windows, `windows × dim` floats; its share of the first layer is
//! `bias + means · w_userᵀ`, computed once per row and shared by all the row's pairs. In torch
//! this was an `embedding_bag` (whose backward sorts), an `addmm` and two GEMMs in the
//! backward, a fifth of a training step at 10^6 items; here the same arithmetic runs on the
//! pass's threads, and the behaviours' gradient goes straight into the batch's embedding rows.

use crate::error::{JtmError, Result};
use crate::fused_mlp::{self, add_into, gemm, Gradients, Mlp, Pairs};
use rayon::prelude::*;

/// The behaviours as embedding bags: bag `k = row · windows + w` (user row `row`, window `w`)
/// holds the table rows `rows[offsets[k]..offsets[k + 1]]` (the last bag ends at
/// `rows.len()`); an empty bag's mean is zero.
#[derive(Clone, Copy, Debug)]
pub struct Bags<'a> {
    pub rows: &'a [i64],
    pub offsets: &'a [i64],
}

/// The first layer's user part: `weight` `[hidden, windows · dim]` row-major, `bias` `[hidden]`.
#[derive(Clone, Copy, Debug)]
pub struct UserLayer<'a> {
    pub weight: &'a [f32],
    pub bias: &'a [f32],
    pub windows: usize,
}

/// A batch of labelled pairs over bag-built user rows: pair `p` is user row `rows[p]` against
/// table row `nodes[p]`.
#[derive(Clone, Copy, Debug)]
pub struct BagPairs<'a> {
    pub table: &'a [f32],
    pub bags: Bags<'a>,
    pub rows: &'a [i64],
    pub nodes: &'a [i64],
    pub labels: &'a [f32],
}

/// [`Gradients`] of the pass (its `table` gradient now also holds the behaviours' part), and
/// the user layer's.
#[derive(Clone, Debug, PartialEq)]
pub struct UserGradients {
    pub pass: Gradients,
    pub weight: Vec<f32>,
    pub bias: Vec<f32>,
}

/// User rows per parallel task of the forward.
const ROWS_PER_TASK: usize = 64;

/// The mean BCE loss of the pairs and its gradients, the user rows built from `bags`.
pub fn bce_step_from_bags(
    user: &UserLayer<'_>,
    mlp: &Mlp<'_>,
    batch: &BagPairs<'_>,
    n_parts: usize,
) -> Result<UserGradients> {
    let (dim, hidden) = (mlp.dim, mlp.hidden);
    let n_users = check(user, mlp, batch)?;
    let width = user.windows * dim;
    // Forward: each row's window means, then its share of the first layer.
    let mut means = vec![0.0f32; n_users * width];
    let mut share = vec![0.0f32; n_users * hidden];
    means
        .par_chunks_mut(ROWS_PER_TASK * width)
        .zip(share.par_chunks_mut(ROWS_PER_TASK * hidden))
        .enumerate()
        .for_each(|(t, (m, s))| {
            let first = t * ROWS_PER_TASK;
            let n = m.len() / width;
            for (i, row) in m.chunks_exact_mut(width).enumerate() {
                for w in 0..user.windows {
                    let bag = bag_range(&batch.bags, (first + i) * user.windows + w);
                    let out = &mut row[w * dim..(w + 1) * dim];
                    for &r in &batch.bags.rows[bag.clone()] {
                        let r = r as usize;
                        add_into(out, &batch.table[r * dim..(r + 1) * dim]);
                    }
                    if !bag.is_empty() {
                        let inv = 1.0 / bag.len() as f32;
                        out.iter_mut().for_each(|x| *x *= inv);
                    }
                }
            }
            for row in s.chunks_exact_mut(hidden) {
                row.copy_from_slice(user.bias);
            }
            gemm(
                n,
                width,
                hidden,
                m,
                (width, 1),
                user.weight,
                (1, width),
                1.0,
                s,
            );
        });
    let pairs = Pairs {
        user_share: &share,
        table: batch.table,
        rows: batch.rows,
        nodes: batch.nodes,
        labels: batch.labels,
    };
    let mut pass = fused_mlp::bce_step(mlp, &pairs, n_parts)?;
    // Backward: the user layer's gradients and each behaviour's share of its bag's gradient,
    // users split into parts with their own accumulators, summed in order.
    let n_parts = n_parts.clamp(1, n_users.div_ceil(ROWS_PER_TASK).max(1));
    let per_part = n_users.div_ceil(n_parts).max(1);
    let g_share = &pass.user_share;
    let parts: Vec<(Vec<f32>, Vec<f32>, Vec<f32>)> = (0..n_parts)
        .into_par_iter()
        .map(|i| {
            let users = (i * per_part).min(n_users)..((i + 1) * per_part).min(n_users);
            let n = users.len();
            let g = &g_share[users.start * hidden..users.end * hidden];
            let m = &means[users.start * width..users.end * width];
            let mut g_weight = vec![0.0f32; hidden * width];
            let mut g_bias = vec![0.0f32; hidden];
            let mut g_table = vec![0.0f32; batch.table.len()];
            if n == 0 {
                return (g_weight, g_bias, g_table);
            }
            // dW += gᵀ [hidden, n] · means [n, width]
            gemm(
                hidden,
                n,
                width,
                g,
                (1, hidden),
                m,
                (width, 1),
                1.0,
                &mut g_weight,
            );
            for row in g.chunks_exact(hidden) {
                add_into(&mut g_bias, row);
            }
            // d(means) = g [n, hidden] · W [hidden, width], spread over each bag's rows.
            let mut g_means = vec![0.0f32; n * width];
            gemm(
                n,
                hidden,
                width,
                g,
                (hidden, 1),
                user.weight,
                (width, 1),
                0.0,
                &mut g_means,
            );
            for (i, row) in g_means.chunks_exact(width).enumerate() {
                for w in 0..user.windows {
                    let bag = bag_range(&batch.bags, (users.start + i) * user.windows + w);
                    if bag.is_empty() {
                        continue;
                    }
                    let inv = 1.0 / bag.len() as f32;
                    let src = &row[w * dim..(w + 1) * dim];
                    for &r in &batch.bags.rows[bag] {
                        let r = r as usize;
                        let dst = &mut g_table[r * dim..(r + 1) * dim];
                        dst.iter_mut().zip(src).for_each(|(d, s)| *d += s * inv);
                    }
                }
            }
            (g_weight, g_bias, g_table)
        })
        .collect();
    let mut weight = vec![0.0f32; hidden * width];
    let mut bias = vec![0.0f32; hidden];
    for (w, b, t) in &parts {
        add_into(&mut weight, w);
        add_into(&mut bias, b);
        add_into(&mut pass.table, t);
    }
    Ok(UserGradients { pass, weight, bias })
}

fn bag_range(bags: &Bags<'_>, k: usize) -> std::ops::Range<usize> {
    let start = bags.offsets[k] as usize;
    let end = bags
        .offsets
        .get(k + 1)
        .map_or(bags.rows.len(), |&e| e as usize);
    start..end
}

/// Checks what the forward indexes; returns the number of user rows.
fn check(user: &UserLayer<'_>, mlp: &Mlp<'_>, batch: &BagPairs<'_>) -> Result<usize> {
    let bad = |m: String| Err(JtmError::InvalidArgument(m));
    let (dim, hidden) = (mlp.dim, mlp.hidden);
    if dim == 0 || user.windows == 0 || user.weight.len() != hidden * user.windows * dim {
        return bad(format!(
            "the first layer's user part has {} values, not [{hidden}, {} windows x {dim}]",
            user.weight.len(),
            user.windows
        ));
    }
    if user.bias.len() != hidden {
        return bad(format!(
            "the first layer's bias has {} values, not {hidden}",
            user.bias.len()
        ));
    }
    if !batch.table.len().is_multiple_of(dim) {
        return bad(format!(
            "a table of {} values is not rows of {dim}",
            batch.table.len()
        ));
    }
    let offsets = batch.bags.offsets;
    if !offsets.len().is_multiple_of(user.windows) {
        return bad(format!(
            "{} bag offsets are not {} windows per user row",
            offsets.len(),
            user.windows
        ));
    }
    let n = batch.bags.rows.len() as i64;
    if offsets.first().is_some_and(|&o| o != 0)
        || offsets.windows(2).any(|w| w[0] > w[1])
        || offsets.last().is_some_and(|&o| o > n)
    {
        return bad(format!(
            "bag offsets must rise from 0 to at most the {n} behaviours"
        ));
    }
    let n_rows = (batch.table.len() / dim) as i64;
    if batch.bags.rows.iter().any(|&r| r < 0 || r >= n_rows) {
        return bad(format!("behaviours must be table rows in 0..{n_rows}"));
    }
    Ok(offsets.len() / user.windows)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fused_mlp::Layer;

    // dim 2, 3 windows, hidden 4, then 4 -> 1; 5 user rows, 7 table rows.
    struct Params {
        table: Vec<f32>,
        w_user: Vec<f32>,
        bias: Vec<f32>,
        w_node: Vec<f32>,
        w_out: Vec<f32>,
        b_out: Vec<f32>,
    }

    fn params() -> Params {
        let v = |n: usize, s: usize| -> Vec<f32> {
            (0..n)
                .map(|i| (((i * 7919 + s * 104_729) % 1000) as f32 / 1000.0 - 0.5) * 0.9)
                .collect()
        };
        Params {
            table: v(14, 1),
            w_user: v(24, 2),
            bias: v(4, 3),
            w_node: v(8, 4),
            w_out: v(4, 5),
            b_out: v(1, 6),
        }
    }

    // Bags: user row u, window w; some empty.
    fn bags() -> (Vec<i64>, Vec<i64>) {
        let mut rows = Vec::new();
        let mut offsets = Vec::new();
        for u in 0..5usize {
            for w in 0..3usize {
                offsets.push(rows.len() as i64);
                for j in 0..(u + w) % 4 {
                    rows.push(((u * 3 + w * 5 + j) % 7) as i64);
                }
            }
        }
        (rows, offsets)
    }

    fn pairs() -> (Vec<i64>, Vec<i64>, Vec<f32>) {
        let n = 2 * fused_mlp::CHUNK_PAIRS + 5;
        (
            (0..n).map(|i| (i * 3 % 5) as i64).collect(),
            (0..n).map(|i| (i * 5 % 7) as i64).collect(),
            (0..n).map(|i| (i % 3 == 0) as i32 as f32).collect(),
        )
    }

    /// The model's two parts over `p`'s parameters.
    fn model(p: &Params) -> (UserLayer<'_>, Mlp<'_>) {
        let user = UserLayer {
            weight: &p.w_user,
            bias: &p.bias,
            windows: 3,
        };
        let mlp = Mlp {
            w_node: &p.w_node,
            dim: 2,
            hidden: 4,
            layers: vec![Layer {
                weight: &p.w_out,
                bias: &p.b_out,
                inputs: 4,
                outputs: 1,
            }],
            slopes: vec![0.2],
        };
        (user, mlp)
    }

    /// The test batch: `bags()` and `pairs()` over `table`.
    struct Batch {
        bag_rows: Vec<i64>,
        offsets: Vec<i64>,
        rows: Vec<i64>,
        nodes: Vec<i64>,
        labels: Vec<f32>,
    }

    impl Batch {
        fn new() -> Self {
            let ((bag_rows, offsets), (rows, nodes, labels)) = (bags(), pairs());
            Batch {
                bag_rows,
                offsets,
                rows,
                nodes,
                labels,
            }
        }

        fn over<'a>(&'a self, table: &'a [f32]) -> BagPairs<'a> {
            BagPairs {
                table,
                bags: Bags {
                    rows: &self.bag_rows,
                    offsets: &self.offsets,
                },
                rows: &self.rows,
                nodes: &self.nodes,
                labels: &self.labels,
            }
        }
    }

    fn step(p: &Params, n_parts: usize) -> UserGradients {
        let (user, mlp) = model(p);
        bce_step_from_bags(&user, &mlp, &Batch::new().over(&p.table), n_parts).unwrap()
    }

    #[test]
    fn gradients_match_finite_differences() {
        let g = step(&params(), 3);
        let h = 1e-3f32;
        let probe = |edit: &dyn Fn(&mut Params, f32)| {
            let (mut up, mut down) = (params(), params());
            edit(&mut up, h);
            edit(&mut down, -h);
            (step(&up, 1).pass.loss - step(&down, 1).pass.loss) / (2.0 * h as f64)
        };
        let close = |got: f32, want: f64, what: &str| {
            assert!(
                (got as f64 - want).abs() < 3e-4 + 2e-2 * want.abs(),
                "{what}: {got} vs {want}"
            );
        };
        // Table rows used as behaviours (and as nodes), the user layer's weight and bias.
        for r in [0usize, 3, 6] {
            close(
                g.pass.table[r * 2 + 1],
                probe(&|q, e| q.table[r * 2 + 1] += e),
                "table",
            );
        }
        for i in [0usize, 7, 13, 23] {
            close(g.weight[i], probe(&|q, e| q.w_user[i] += e), "user weight");
        }
        close(g.bias[2], probe(&|q, e| q.bias[2] += e), "bias");
        close(g.pass.w_node[5], probe(&|q, e| q.w_node[5] += e), "w_node");
    }

    #[test]
    fn parts_change_only_the_rounding() {
        let (one, three) = (step(&params(), 1), step(&params(), 3));
        assert!((one.pass.loss - three.pass.loss).abs() < 1e-9);
        for (a, b) in one.weight.iter().zip(&three.weight) {
            assert!((a - b).abs() < 1e-6);
        }
        assert_eq!(three, step(&params(), 3));
    }

    #[test]
    fn refuses_bad_bags() {
        let p = params();
        let (user, mlp) = model(&p);
        let data = Batch::new();
        let ok = data.over(&p.table);
        let (bag_rows, offsets, rows) = (&data.bag_rows, &data.offsets, &data.rows);
        let too_far: Vec<i64> = bag_rows.iter().map(|&r| r + 7).collect();
        let falling: Vec<i64> = offsets.iter().rev().copied().collect();
        for batch in [
            BagPairs {
                bags: Bags {
                    rows: &too_far,
                    offsets,
                },
                ..ok
            },
            BagPairs {
                bags: Bags {
                    rows: bag_rows,
                    offsets: &falling,
                },
                ..ok
            },
            BagPairs {
                bags: Bags {
                    rows: bag_rows,
                    offsets: &offsets[1..],
                },
                ..ok
            },
        ] {
            assert!(matches!(
                bce_step_from_bags(&user, &mlp, &batch, 2),
                Err(JtmError::InvalidArgument(_))
            ));
        }
        let short = UserLayer {
            weight: &p.w_user[1..],
            ..user
        };
        assert!(bce_step_from_bags(&short, &mlp, &ok, 2).is_err());
        // A pair naming a user row past the bags is the pass's own check.
        let far_rows: Vec<i64> = rows.iter().map(|&r| r + 5).collect();
        let far = BagPairs {
            rows: &far_rows,
            ..ok
        };
        assert!(bce_step_from_bags(&user, &mlp, &far, 2).is_err());
    }
}
