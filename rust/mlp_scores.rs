//! Scores of (user, node) pairs through the MLP, forward only: beam search's and tree
//! learning's hot path (docs/performance.md, "The scoring pass").
//!
//! torch runs the MLP a layer at a time over all of a call's pairs, ~10 operations each with
//! its own dispatch, allocation and pass over memory; one user's beam-search level (~400
//! pairs) is mostly that overhead, and tree learning's blocks (~30 000 pairs) write
//! activations that leave the cache before they are read. Here a chunk of [`CHUNK_PAIRS`]
//! pairs goes through the whole MLP while its activations stay in cache, as in the training
//! pass ([`crate::fused_mlp`], whose model, GEMMs and PReLU this shares), and threads take
//! contiguous parts of the pairs. A pair's score depends only on its own inputs: the same
//! pair scores the same whatever else the call holds and however many threads run it.

use crate::dense_kernels::{
    add_prelu_bf16, prefetch_rows, Init, Out, Packed, Precision, Rows, Scratch,
};
use crate::error::{JtmError, Result};
use crate::fused_mlp::{check_layers, Mlp, CHUNK_PAIRS};
use rayon::prelude::*;
use std::sync::Mutex;

/// The node side of the pairs' first layer.
#[derive(Clone, Copy, Debug)]
pub enum NodeRows<'a> {
    /// Node embeddings `[n_rows, dim]`: each pair's share is `row · w_nodeᵀ`.
    Embeddings(&'a [f32]),
    /// Node shares `[n_rows, hidden]` already multiplied (tree learning, where a block's
    /// nodes repeat across its users).
    Shares(&'a [f32]),
}

/// Pairs to score: pair `p` is user row `rows[p]` of `user_share` `[users, hidden]` (the
/// first layer's user share, bias included) against node row `nodes[p]` of `node_rows`.
#[derive(Clone, Copy, Debug)]
pub struct ScoredPairs<'a> {
    pub user_share: &'a [f32],
    pub node_rows: NodeRows<'a>,
    pub rows: &'a [i64],
    pub nodes: &'a [i64],
}

/// Each pair's logit, the multiplies in `precision` ([`crate::dense_kernels`]). `n_parts`
/// contiguous parts of the pairs run in parallel on the caller's rayon pool (1: on the calling
/// thread).
pub fn pair_scores(
    mlp: &Mlp<'_>,
    pairs: &ScoredPairs<'_>,
    precision: Precision,
    n_parts: usize,
) -> Result<Vec<f32>> {
    check_layers(mlp)?;
    let layers = Layers::new(mlp, precision);
    packed_pair_scores(mlp, &layers, pairs, n_parts)
}

/// [`pair_scores`] with the weights already packed (`layers`, from the same `mlp`): a beam
/// search scores a dozen levels with one model, and packing them for each level cost one
/// user's level a third of its time in bfloat16 (docs/performance.md, "The scoring pass").
pub fn packed_pair_scores(
    mlp: &Mlp<'_>,
    layers: &Layers,
    pairs: &ScoredPairs<'_>,
    n_parts: usize,
) -> Result<Vec<f32>> {
    check_layers(mlp)?;
    check(mlp, pairs)?;
    if !layers.fit(mlp) {
        return Err(JtmError::InvalidArgument(
            "packed layers of another MLP's shape".to_string(),
        ));
    }
    let n = pairs.rows.len();
    let mut scores = vec![0.0f32; n];
    let n_parts = n_parts.clamp(1, n.div_ceil(CHUNK_PAIRS).max(1));
    let per_part = n.div_ceil(n_parts).max(1);
    let run_part = |(i, out): (usize, &mut [f32])| {
        let mut work = layers.forward(mlp);
        let start = i * per_part;
        let end = start + out.len();
        // The node embeddings of the chunk after next, while this one computes.
        let prefetch = |lo: usize| {
            if let NodeRows::Embeddings(table) = pairs.node_rows {
                prefetch_rows(
                    table,
                    &pairs.nodes[lo.min(end)..(lo + CHUNK_PAIRS).min(end)],
                    mlp.dim,
                );
            }
        };
        prefetch(start);
        prefetch(start + CHUNK_PAIRS);
        for (j, chunk) in out.chunks_mut(CHUNK_PAIRS).enumerate() {
            let lo = start + j * CHUNK_PAIRS;
            prefetch(lo + 2 * CHUNK_PAIRS);
            work.chunk(mlp, layers, pairs, lo..lo + chunk.len(), chunk);
        }
        layers.give_back(work);
    };
    if n_parts == 1 {
        run_part((0, &mut scores));
    } else {
        scores
            .par_chunks_mut(per_part)
            .enumerate()
            .for_each(run_part);
    }
    Ok(scores)
}

/// `x · Wᵀ + bias` for `x` `[rows, k]` and `weight` `[n, k]` (a `Linear`'s), in `precision`,
/// `n_parts` contiguous parts of the rows in parallel; a row's result does not depend on the
/// others (tree learning's node shares, whose calls hold different nodes on different ranks).
pub fn linear(
    x: &[f32],
    weight: &[f32],
    bias: &[f32],
    (n, k): (usize, usize),
    precision: Precision,
    n_parts: usize,
) -> Result<Vec<f32>> {
    if k == 0 || !x.len().is_multiple_of(k) || weight.len() != n * k || bias.len() != n {
        return Err(JtmError::InvalidArgument(format!(
            "a linear layer of [{n}, {k}] with {} weights and {} biases cannot take {} inputs",
            weight.len(),
            bias.len(),
            x.len()
        )));
    }
    let rows = x.len() / k;
    let mut y = vec![0.0f32; rows * n];
    if n == 0 || rows == 0 {
        return Ok(y);
    }
    let packed = Packed::new(weight, n, k, precision);
    let per_part = rows
        .div_ceil(n_parts.clamp(1, rows.div_ceil(CHUNK_PAIRS)))
        .max(1);
    let run_part = |(i, out): (usize, &mut [f32])| {
        let mut scratch = Scratch::default();
        for (j, y) in out.chunks_mut(CHUNK_PAIRS * n).enumerate() {
            let (r0, r) = (i * per_part + j * CHUNK_PAIRS, y.len() / n);
            let x = Rows::dense(&x[r0 * k..(r0 + r) * k]);
            packed.apply(x, r, Init::Bias(bias), None, y, &mut scratch);
        }
    };
    if per_part >= rows {
        run_part((0, &mut y));
    } else {
        y.par_chunks_mut(per_part * n)
            .enumerate()
            .for_each(run_part);
    }
    Ok(y)
}

fn check(mlp: &Mlp<'_>, pairs: &ScoredPairs<'_>) -> Result<()> {
    let bad = |m: String| Err(JtmError::InvalidArgument(m));
    let (dim, hidden) = (mlp.dim, mlp.hidden);
    let n = pairs.rows.len();
    if pairs.nodes.len() != n {
        return bad(format!(
            "{n} rows and {} nodes: one of each per pair",
            pairs.nodes.len()
        ));
    }
    let (table, width) = match pairs.node_rows {
        NodeRows::Embeddings(t) => (t, dim),
        NodeRows::Shares(t) => (t, hidden),
    };
    if !pairs.user_share.len().is_multiple_of(hidden) || table.len() % width != 0 {
        return bad(format!(
            "user shares of {} values and node rows of {} are not rows of {hidden} and {width}",
            pairs.user_share.len(),
            table.len()
        ));
    }
    let (users, n_rows) = (
        (pairs.user_share.len() / hidden) as i64,
        (table.len() / width) as i64,
    );
    if pairs.rows.iter().any(|&r| r < 0 || r >= users) {
        return bad(format!("pair rows must be in 0..{users}"));
    }
    if pairs.nodes.iter().any(|&r| r < 0 || r >= n_rows) {
        return bad(format!("pair nodes must be node rows in 0..{n_rows}"));
    }
    Ok(())
}

/// The first layer's node share and the layers after it, packed for the multiplies in one
/// precision.
pub struct Layers {
    node: Packed,
    after: Vec<Packed>,
    /// The activation buffers of earlier calls, for the next ones: allocating and zeroing them
    /// was most of a small call's cost (one user's level, ~400 pairs).
    spare: Mutex<Vec<Forward>>,
}

impl Layers {
    pub fn new(mlp: &Mlp<'_>, precision: Precision) -> Self {
        Layers {
            node: Packed::new(mlp.w_node, mlp.hidden, mlp.dim, precision),
            after: mlp
                .layers
                .iter()
                .map(|l| Packed::new(l.weight, l.outputs, l.inputs, precision))
                .collect(),
            spare: Mutex::new(Vec::new()),
        }
    }

    /// Buffers for one part of a call: a spare one, or new.
    fn forward(&self, mlp: &Mlp<'_>) -> Forward {
        let spare = self.spare.lock().ok().and_then(|mut s| s.pop());
        spare.unwrap_or_else(|| Forward::new(mlp, self))
    }

    fn give_back(&self, work: Forward) {
        if let Ok(mut s) = self.spare.lock() {
            s.push(work);
        }
    }

    /// Whether these are `mlp`'s shapes.
    fn fit(&self, mlp: &Mlp<'_>) -> bool {
        (self.node.n, self.node.k) == (mlp.hidden, mlp.dim)
            && self.after.len() == mlp.layers.len()
            && self
                .after
                .iter()
                .zip(&mlp.layers)
                .all(|(p, l)| (p.n, p.k) == (l.outputs, l.inputs))
    }
}

/// One thread's buffers: each layer's activations, in float32 and, on the native bfloat16
/// kernels, as the bfloat16 rows the next layer reads (converted as they leave the registers).
struct Forward {
    act: Vec<Vec<f32>>,
    act16: Vec<Vec<u16>>,
    scratch: Scratch,
}

impl Forward {
    fn new(mlp: &Mlp<'_>, layers: &Layers) -> Self {
        let c = CHUNK_PAIRS;
        let widths = || std::iter::once(mlp.hidden).chain(mlp.layers.iter().map(|l| l.outputs));
        let chain = layers.node.bf16_native();
        Forward {
            act: widths().map(|w| vec![0.0; c * w]).collect(),
            act16: widths()
                .filter(|_| chain)
                .map(|w| vec![0; c * layers.node.bf16_row(w)])
                .collect(),
            scratch: Scratch::default(),
        }
    }

    fn chunk(
        &mut self,
        mlp: &Mlp<'_>,
        layers: &Layers,
        pairs: &ScoredPairs<'_>,
        range: std::ops::Range<usize>,
        out: &mut [f32],
    ) {
        let c = range.len();
        let hidden = mlp.hidden;
        let (rows, nodes) = (&pairs.rows[range.clone()], &pairs.nodes[range]);
        let share = Rows {
            data: pairs.user_share,
            index: Some(rows),
        };
        let first = &mut self.act[0][..c * hidden];
        // Whether layer j's inputs are in act16[j] (bfloat16) rather than act[j].
        let mut in16 = false;
        match pairs.node_rows {
            NodeRows::Embeddings(table) => {
                // act0 = PReLU(user_share[rows] + table[nodes] · w_nodeᵀ)
                let x = Rows {
                    data: table,
                    index: Some(nodes),
                };
                in16 = !self.act16.is_empty();
                let y = match self.act16.first_mut() {
                    Some(a) => Out::BF16(&mut a[..c * layers.node.bf16_row(hidden)]),
                    None => Out::F32(first),
                };
                let slope = Some(mlp.slopes[0]);
                layers
                    .node
                    .apply_to(x, c, Init::Rows(share), slope, y, &mut self.scratch);
            }
            NodeRows::Shares(table) => {
                let slope = mlp.slopes[0];
                let node = Rows {
                    data: table,
                    index: Some(nodes),
                };
                match self.act16.first_mut() {
                    // The next layer reads bfloat16: the sum, its PReLU and the rounding in one
                    // pass (the float32 row and its conversion cost tree learning a fifth).
                    Some(a) => {
                        let w16 = layers.node.bf16_row(hidden);
                        add_prelu_bf16(share, node, hidden, slope, w16, &mut a[..c * w16]);
                        in16 = true;
                    }
                    None => {
                        for (r, row) in first.chunks_exact_mut(hidden).enumerate() {
                            let (u, v) = (rows[r] as usize * hidden, nodes[r] as usize * hidden);
                            let (user, node) =
                                (&pairs.user_share[u..u + hidden], &table[v..v + hidden]);
                            for ((x, u), n) in row.iter_mut().zip(user).zip(node) {
                                let s = u + n;
                                *x = if s > 0.0 { s } else { s * slope };
                            }
                        }
                    }
                }
            }
        }
        for (j, l) in mlp.layers.iter().enumerate() {
            let (done, rest) = self.act.split_at_mut(j + 1);
            let at = (j + 1).min(self.act16.len());
            let (done16, rest16) = self.act16.split_at_mut(at);
            // The last layer's outputs are the scores: float32.
            let y = match rest16.first_mut().filter(|_| j + 1 < mlp.layers.len()) {
                Some(a) => Out::BF16(&mut a[..c * layers.after[j].bf16_row(l.outputs)]),
                None => Out::F32(&mut rest[0][..c * l.outputs]),
            };
            let out16 = matches!(y, Out::BF16(_));
            // The PReLU after every layer but the last.
            let (init, slope) = (Init::Bias(l.bias), mlp.slopes.get(j + 1).copied());
            if in16 {
                let x = &done16[j][..c * layers.after[j].bf16_row(l.inputs)];
                layers.after[j].apply_bf16(x, c, init, slope, y);
            } else {
                let x = Rows::dense(&done[j][..c * l.inputs]);
                layers.after[j].apply_to(x, c, init, slope, y, &mut self.scratch);
            }
            in16 = out16;
        }
        out.copy_from_slice(&self.act[mlp.layers.len()][..c]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fused_mlp::tests::{mlp, params, value, Params};

    /// The MLP written out for one pair.
    fn naive(c: &Params, row: usize, node: usize) -> f32 {
        let act = |x: f32, s: f32| if x > 0.0 { x } else { s * x };
        let mut h: Vec<f32> = (0..5)
            .map(|o| {
                let n: f32 = (0..3)
                    .map(|d| c.table[node * 3 + d] * c.w_node[o * 3 + d])
                    .sum();
                act(c.user_share[row * 5 + o] + n, c.slopes[0])
            })
            .collect();
        h = (0..4)
            .map(|o| {
                act(
                    c.b[0][o] + (0..5).map(|i| h[i] * c.w[0][o * 5 + i]).sum::<f32>(),
                    c.slopes[1],
                )
            })
            .collect();
        c.b[1][0] + (0..4).map(|i| h[i] * c.w[1][i]).sum::<f32>()
    }

    /// Pairs over the 6 user shares and 9 table rows of [`params`].
    fn pairs(n: usize) -> (Vec<i64>, Vec<i64>) {
        (
            (0..n as i64).map(|p| (p * 5) % 6).collect(),
            (0..n as i64).map(|p| (p * 7 + 1) % 9).collect(),
        )
    }

    #[test]
    fn scores_match_the_naive_forward_across_chunks_and_parts() {
        let c = params();
        let n = 2 * CHUNK_PAIRS + 37;
        let (rows, nodes) = pairs(n);
        let p = ScoredPairs {
            user_share: &c.user_share,
            node_rows: NodeRows::Embeddings(&c.table),
            rows: &rows,
            nodes: &nodes,
        };
        let one = pair_scores(&mlp(&c), &p, Precision::Float32, 1).unwrap();
        for i in 0..n {
            let want = naive(&c, rows[i] as usize, nodes[i] as usize);
            assert!(
                (one[i] - want).abs() < 1e-5,
                "pair {i}: {} against {want}",
                one[i]
            );
        }
        let three = pair_scores(&mlp(&c), &p, Precision::Float32, 3).unwrap();
        assert_eq!(one, three, "a pair's score must not depend on the parts");
    }

    /// The pass a layer at a time over all pairs, each layer's float32 outputs converted by
    /// the next layer: the arithmetic before outputs left the registers as bfloat16.
    fn layer_by_layer(c: &Params, rows: &[i64], nodes: &[i64], precision: Precision) -> Vec<f32> {
        let m = mlp(c);
        let layers = Layers::new(&m, precision);
        let (n, mut s) = (rows.len(), Scratch::default());
        let mut h = vec![0.0; n * m.hidden];
        let (table, share) = (
            Rows {
                data: &c.table,
                index: Some(nodes),
            },
            Rows {
                data: &c.user_share,
                index: Some(rows),
            },
        );
        layers.node.apply(
            table,
            n,
            Init::Rows(share),
            Some(m.slopes[0]),
            &mut h,
            &mut s,
        );
        after_first(c, h, precision)
    }

    /// The layers after the first on its float32 outputs `h`, one layer at a time.
    fn after_first(c: &Params, mut h: Vec<f32>, precision: Precision) -> Vec<f32> {
        let m = mlp(c);
        let layers = Layers::new(&m, precision);
        let (n, mut s) = (h.len() / m.hidden, Scratch::default());
        for (j, l) in m.layers.iter().enumerate() {
            let mut y = vec![0.0; n * l.outputs];
            let slope = m.slopes.get(j + 1).copied();
            layers.after[j].apply(
                Rows::dense(&h),
                n,
                Init::Bias(l.bias),
                slope,
                &mut y,
                &mut s,
            );
            h = y;
        }
        h
    }

    /// The pass's scores of `p`, in both precisions and on 1 and 3 parts, are `want`'s bits.
    fn assert_scores_in_every_precision(
        c: &Params,
        p: &ScoredPairs<'_>,
        want: impl Fn(Precision) -> Vec<f32>,
    ) {
        for precision in [Precision::BFloat16, Precision::Float32] {
            let want = want(precision);
            for parts in [1, 3] {
                assert_eq!(
                    pair_scores(&mlp(c), p, precision, parts).unwrap(),
                    want,
                    "{precision:?}, {parts} parts"
                );
            }
        }
    }

    #[test]
    fn bfloat16_outputs_chained_between_layers_give_the_layer_by_layer_bits() {
        let c = params();
        let (rows, nodes) = pairs(2 * CHUNK_PAIRS + 37);
        let p = ScoredPairs {
            user_share: &c.user_share,
            node_rows: NodeRows::Embeddings(&c.table),
            rows: &rows,
            nodes: &nodes,
        };
        assert_scores_in_every_precision(&c, &p, |q| layer_by_layer(&c, &rows, &nodes, q));
    }

    #[test]
    fn packed_layers_score_as_a_fresh_pass_and_refuse_another_shape() {
        let c = params();
        let (rows, nodes) = pairs(CHUNK_PAIRS + 11);
        let p = ScoredPairs {
            user_share: &c.user_share,
            node_rows: NodeRows::Embeddings(&c.table),
            rows: &rows,
            nodes: &nodes,
        };
        let m = mlp(&c);
        for precision in [Precision::BFloat16, Precision::Float32] {
            let layers = Layers::new(&m, precision);
            let want = pair_scores(&m, &p, precision, 1).unwrap();
            for parts in [1, 2] {
                // The same packed layers, call after call.
                assert_eq!(packed_pair_scores(&m, &layers, &p, parts).unwrap(), want);
            }
            let mut narrower = m.clone();
            narrower.layers.truncate(1);
            narrower.slopes.truncate(1);
            let other = Layers::new(&narrower, precision);
            assert!(packed_pair_scores(&m, &other, &p, 1).is_err());
        }
    }

    #[test]
    fn node_shares_give_the_embeddings_scores() {
        let c = params();
        let shares: Vec<f32> = (0..9)
            .flat_map(|r| {
                let c = &c;
                (0..5).map(move |o| {
                    (0..3)
                        .map(|d| c.table[r * 3 + d] * c.w_node[o * 3 + d])
                        .sum::<f32>()
                })
            })
            .collect();
        let (rows, nodes) = pairs(50);
        let by = |node_rows| {
            let p = ScoredPairs {
                user_share: &c.user_share,
                node_rows,
                rows: &rows,
                nodes: &nodes,
            };
            pair_scores(&mlp(&c), &p, Precision::Float32, 2).unwrap()
        };
        let (a, b) = (
            by(NodeRows::Embeddings(&c.table)),
            by(NodeRows::Shares(&shares)),
        );
        for (x, y) in a.iter().zip(&b) {
            assert!((x - y).abs() < 1e-5);
        }
    }

    #[test]
    fn node_shares_in_bfloat16_give_the_layer_by_layer_bits() {
        // Node shares: the first activation written as bfloat16 in one pass must be the float32
        // one converted.
        let c = params();
        let shares: Vec<f32> = (0..9 * 5).map(|i| value(i, 13)).collect();
        let (rows, nodes) = pairs(2 * CHUNK_PAIRS + 37);
        let p = ScoredPairs {
            user_share: &c.user_share,
            node_rows: NodeRows::Shares(&shares),
            rows: &rows,
            nodes: &nodes,
        };
        let h: Vec<f32> = rows
            .iter()
            .zip(&nodes)
            .flat_map(|(&r, &v)| {
                let (r, v) = (r as usize, v as usize);
                (0..5).map(move |o| (r, v, o))
            })
            .map(|(r, v, o)| {
                let x = c.user_share[r * 5 + o] + shares[v * 5 + o];
                if x > 0.0 {
                    x
                } else {
                    x * c.slopes[0]
                }
            })
            .collect();
        assert_scores_in_every_precision(&c, &p, |q| after_first(&c, h.clone(), q));
    }

    #[test]
    fn linear_layers_match_the_naive_product_in_parallel_parts() {
        let (n, k, rows) = (5, 3, 2 * CHUNK_PAIRS + 9);
        let x: Vec<f32> = (0..rows * k).map(|i| value(i, 11)).collect();
        let w: Vec<f32> = (0..n * k).map(|i| value(i, 12)).collect();
        let b: Vec<f32> = (0..n).map(|i| value(i, 13)).collect();
        let one = linear(&x, &w, &b, (n, k), Precision::Float32, 1).unwrap();
        for (i, &y) in one.iter().enumerate() {
            let (r, o) = (i / n, i % n);
            let want = b[o] + (0..k).map(|d| x[r * k + d] * w[o * k + d]).sum::<f32>();
            assert!((y - want).abs() < 1e-5);
        }
        assert_eq!(
            one,
            linear(&x, &w, &b, (n, k), Precision::Float32, 3).unwrap()
        );
        let last = linear(&x[(rows - 1) * k..], &w, &b, (n, k), Precision::BFloat16, 1).unwrap();
        let all = linear(&x, &w, &b, (n, k), Precision::BFloat16, 2).unwrap();
        assert_eq!(
            last[..],
            all[(rows - 1) * n..],
            "a row does not depend on the others"
        );
        assert!(linear(&x[1..], &w, &b, (n, k), Precision::Float32, 1).is_err());
        assert!(linear(&x, &w, &b[1..], (n, k), Precision::Float32, 1).is_err());
    }

    #[test]
    fn no_pairs_give_no_scores_and_bad_indices_are_refused() {
        let c = params();
        let score = |rows: &[i64], nodes: &[i64]| {
            let p = ScoredPairs {
                user_share: &c.user_share,
                node_rows: NodeRows::Embeddings(&c.table),
                rows,
                nodes,
            };
            pair_scores(&mlp(&c), &p, Precision::Float32, 2)
        };
        assert_eq!(score(&[], &[]).unwrap(), Vec::<f32>::new());
        assert!(score(&[6], &[0]).is_err());
        assert!(score(&[0], &[9]).is_err());
        assert!(score(&[-1], &[0]).is_err());
        assert!(score(&[0, 1], &[0]).is_err());
    }
}
