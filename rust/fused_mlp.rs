//! The training step's MLP over (user, node) pairs, forward and backward in one pass
//! (docs/design.md §4.3, docs/scale.md "Training throughput").
//!
//! torch runs each layer over all of a batch's pairs (~8 000) before the next, so every
//! activation (`[8 000, 128]` floats, 4 MB) leaves the cache between its write and its read,
//! and the elementwise work (PReLU, the gather of each pair's user share, their backward) is
//! paid in memory traffic: half a step at 10^6 items. Here a chunk of [`CHUNK_PAIRS`] pairs
//! goes through the whole MLP, the BCE loss and back while its activations stay in cache, and
//! the GEMMs are `matrixmultiply`'s (runtime AVX2/FMA detection). Threads take contiguous
//! parts of the pairs, each accumulating its own gradients, summed in a fixed order: the
//! result depends on the thread count, not on scheduling.
//!
//! The model (`jtm_rs.model.JTMModel` without attention or batch norm): a pair's first
//! pre-activation is `user_share[row] + table[node] · w_nodeᵀ` (the user's share of the first
//! layer, bias included, is computed once per user by torch), then a shared-slope PReLU after
//! the first layer and after every hidden layer, and a last layer with one output, the logit.
//! The loss is the mean binary cross-entropy with logits over the pairs.

use crate::dense_kernels::{Init, Packed, Precision, Rows, Scratch};
use crate::error::{JtmError, Result};
use rayon::prelude::*;

/// Pairs that go through the MLP together: their activations (~1 KiB each at 128-64-24)
/// stay in a core's L2 cache.
pub const CHUNK_PAIRS: usize = 256;

/// A dense layer after the first: `weight` `[outputs, inputs]` row-major, `bias` `[outputs]`.
#[derive(Clone, Copy, Debug)]
pub struct Layer<'a> {
    pub weight: &'a [f32],
    pub bias: &'a [f32],
    pub inputs: usize,
    pub outputs: usize,
}

/// The MLP's parameters: the first layer's node share `w_node` `[hidden, dim]` (its user share
/// comes per user, with the bias), the layers after it, and the PReLU slopes: `slopes[0]` after
/// the first layer, `slopes[j + 1]` after `layers[j]`; the last layer (one output) has none.
#[derive(Clone, Debug)]
pub struct Mlp<'a> {
    pub w_node: &'a [f32],
    pub dim: usize,
    pub hidden: usize,
    pub layers: Vec<Layer<'a>>,
    pub slopes: Vec<f32>,
}

/// A batch of labelled pairs: pair `p` is user row `rows[p]` of `user_share` `[users, hidden]`
/// against embedding row `nodes[p]` of `table` `[n_rows, dim]`, with label `labels[p]`.
#[derive(Clone, Copy, Debug)]
pub struct Pairs<'a> {
    pub user_share: &'a [f32],
    pub table: &'a [f32],
    pub rows: &'a [i64],
    pub nodes: &'a [i64],
    pub labels: &'a [f32],
}

/// The mean loss and its gradient with respect to every input that has one, shaped as the
/// inputs (row-major).
#[derive(Clone, Debug, PartialEq)]
pub struct Gradients {
    pub loss: f64,
    pub user_share: Vec<f32>,
    pub table: Vec<f32>,
    pub w_node: Vec<f32>,
    pub weights: Vec<Vec<f32>>,
    pub biases: Vec<Vec<f32>>,
    pub slopes: Vec<f64>,
}

impl Gradients {
    fn zeros(mlp: &Mlp<'_>, pairs: &Pairs<'_>) -> Self {
        Gradients {
            loss: 0.0,
            user_share: vec![0.0; pairs.user_share.len()],
            table: vec![0.0; pairs.table.len()],
            w_node: vec![0.0; mlp.w_node.len()],
            weights: mlp
                .layers
                .iter()
                .map(|l| vec![0.0; l.weight.len()])
                .collect(),
            biases: mlp.layers.iter().map(|l| vec![0.0; l.bias.len()]).collect(),
            slopes: vec![0.0; mlp.slopes.len()],
        }
    }

    fn add(&mut self, other: &Gradients) {
        self.loss += other.loss;
        add_into(&mut self.user_share, &other.user_share);
        add_into(&mut self.table, &other.table);
        add_into(&mut self.w_node, &other.w_node);
        for (a, b) in self.weights.iter_mut().zip(&other.weights) {
            add_into(a, b);
        }
        for (a, b) in self.biases.iter_mut().zip(&other.biases) {
            add_into(a, b);
        }
        for (a, b) in self.slopes.iter_mut().zip(&other.slopes) {
            *a += b;
        }
    }
}

/// Mean binary cross-entropy of the pairs' logits against their labels, and its gradients.
/// `n_parts` contiguous parts of the pairs are processed in parallel (on the caller's rayon
/// pool) and their gradients summed in order.
pub fn bce_step(mlp: &Mlp<'_>, pairs: &Pairs<'_>, n_parts: usize) -> Result<Gradients> {
    check(mlp, pairs)?;
    let n = pairs.rows.len();
    let n_parts = n_parts.clamp(1, n.div_ceil(CHUNK_PAIRS).max(1));
    let per_part = n.div_ceil(n_parts).max(1);
    let scale = 1.0 / n.max(1) as f32;
    let packed = PackedMlp::new(mlp);
    let parts: Vec<Gradients> = (0..n_parts)
        .into_par_iter()
        .map(|i| {
            let range = (i * per_part).min(n)..((i + 1) * per_part).min(n);
            let mut grads = Gradients::zeros(mlp, pairs);
            let mut work = Work::new(mlp);
            let mut lo = range.start;
            while lo < range.end {
                let hi = (lo + CHUNK_PAIRS).min(range.end);
                work.chunk(mlp, &packed, pairs, lo..hi, scale, &mut grads);
                lo = hi;
            }
            grads
        })
        .collect();
    let mut parts = parts.into_iter();
    let mut total = parts.next().unwrap_or_else(|| Gradients::zeros(mlp, pairs));
    for p in parts {
        total.add(&p);
    }
    total.loss /= n.max(1) as f64;
    Ok(total)
}

/// The MLP's shapes fit together and end in one logit.
pub(crate) fn check_layers(mlp: &Mlp<'_>) -> Result<()> {
    let bad = |m: String| Err(JtmError::InvalidArgument(m));
    let (dim, hidden) = (mlp.dim, mlp.hidden);
    if dim == 0 || hidden == 0 || mlp.w_node.len() != hidden * dim {
        return bad(format!(
            "the first layer's node share has {} values, not [{hidden}, {dim}]",
            mlp.w_node.len()
        ));
    }
    if mlp.layers.is_empty() || mlp.slopes.len() != mlp.layers.len() {
        return bad(format!(
            "{} layers after the first need as many PReLU slopes, got {}",
            mlp.layers.len(),
            mlp.slopes.len()
        ));
    }
    let mut width = hidden;
    for (j, l) in mlp.layers.iter().enumerate() {
        if l.inputs != width || l.weight.len() != l.inputs * l.outputs || l.bias.len() != l.outputs
        {
            return bad(format!(
                "layer {} does not fit: weight of {} values [{}, {}] after a width of {width}",
                j + 1,
                l.weight.len(),
                l.outputs,
                l.inputs
            ));
        }
        width = l.outputs;
    }
    if width != 1 {
        return bad(format!("the last layer must give one logit, not {width}"));
    }
    Ok(())
}

fn check(mlp: &Mlp<'_>, pairs: &Pairs<'_>) -> Result<()> {
    check_layers(mlp)?;
    let bad = |m: String| Err(JtmError::InvalidArgument(m));
    let (dim, hidden) = (mlp.dim, mlp.hidden);
    let n = pairs.rows.len();
    if pairs.nodes.len() != n || pairs.labels.len() != n {
        return bad(format!(
            "{n} rows, {} nodes and {} labels: one of each per pair",
            pairs.nodes.len(),
            pairs.labels.len()
        ));
    }
    if !pairs.user_share.len().is_multiple_of(hidden) || !pairs.table.len().is_multiple_of(dim) {
        return bad(format!(
            "user shares of {} values and a table of {} are not rows of {hidden} and {dim}",
            pairs.user_share.len(),
            pairs.table.len()
        ));
    }
    let (users, n_rows) = (
        (pairs.user_share.len() / hidden) as i64,
        (pairs.table.len() / dim) as i64,
    );
    if pairs.rows.iter().any(|&r| r < 0 || r >= users) {
        return bad(format!("pair rows must be in 0..{users}"));
    }
    if pairs.nodes.iter().any(|&r| r < 0 || r >= n_rows) {
        return bad(format!("pair nodes must be table rows in 0..{n_rows}"));
    }
    Ok(())
}

/// The layers' weights packed for [`crate::dense_kernels`], once per step: as they are for the
/// forward products, transposed for the backward's gradients with respect to the inputs.
struct PackedMlp {
    node: Packed,
    node_t: Packed,
    layers: Vec<Packed>,
    layers_t: Vec<Packed>,
    /// Zero biases, for the backward's products.
    zeros: Vec<f32>,
}

impl PackedMlp {
    fn new(mlp: &Mlp<'_>) -> Self {
        let f32s = Precision::Float32;
        let transposed = |w: &[f32], rows: usize, cols: usize| -> Vec<f32> {
            (0..cols * rows)
                .map(|i| w[(i % rows) * cols + i / rows])
                .collect()
        };
        let (dim, hidden) = (mlp.dim, mlp.hidden);
        let widest = mlp
            .layers
            .iter()
            .map(|l| l.inputs)
            .chain([dim, hidden])
            .max()
            .unwrap_or(1);
        PackedMlp {
            node: Packed::new(mlp.w_node, hidden, dim, f32s),
            node_t: Packed::new(&transposed(mlp.w_node, hidden, dim), dim, hidden, f32s),
            layers: mlp
                .layers
                .iter()
                .map(|l| Packed::new(l.weight, l.outputs, l.inputs, f32s))
                .collect(),
            layers_t: mlp
                .layers
                .iter()
                .map(|l| {
                    Packed::new(
                        &transposed(l.weight, l.outputs, l.inputs),
                        l.inputs,
                        l.outputs,
                        f32s,
                    )
                })
                .collect(),
            zeros: vec![0.0; widest],
        }
    }
}

/// One thread's buffers for a chunk: the gathered node rows, each layer's pre-activation and
/// activation, the gradient flowing back.
struct Work {
    node_rows: Vec<f32>,
    /// `pre[0]` the first layer's, `pre[j + 1]` layer `j`'s; `act[j]` = PReLU(`pre[j]`).
    pre: Vec<Vec<f32>>,
    act: Vec<Vec<f32>>,
    grad_out: Vec<f32>,
    grad_in: Vec<f32>,
    scratch: Scratch,
}

impl Work {
    fn new(mlp: &Mlp<'_>) -> Self {
        let c = CHUNK_PAIRS;
        let widths: Vec<usize> = std::iter::once(mlp.hidden)
            .chain(mlp.layers.iter().map(|l| l.outputs))
            .collect();
        let widest = widths.iter().copied().max().unwrap_or(1).max(mlp.dim);
        Work {
            node_rows: vec![0.0; c * mlp.dim],
            pre: widths.iter().map(|w| vec![0.0; c * w]).collect(),
            act: widths[..widths.len() - 1]
                .iter()
                .map(|w| vec![0.0; c * w])
                .collect(),
            grad_out: vec![0.0; c * widest],
            grad_in: vec![0.0; c * widest],
            scratch: Scratch::default(),
        }
    }

    fn chunk(
        &mut self,
        mlp: &Mlp<'_>,
        packed: &PackedMlp,
        pairs: &Pairs<'_>,
        range: std::ops::Range<usize>,
        scale: f32,
        grads: &mut Gradients,
    ) {
        let c = range.len();
        let (dim, hidden) = (mlp.dim, mlp.hidden);
        let (rows, nodes) = (&pairs.rows[range.clone()], &pairs.nodes[range.clone()]);
        // Forward: the first layer from its two shares,
        // pre0 = user_share[rows] + node_rows [c, dim] · w_nodeᵀ [dim, hidden].
        gather_rows(&mut self.node_rows, pairs.table, nodes, dim);
        let share = Init::Rows(Rows {
            data: pairs.user_share,
            index: Some(rows),
        });
        let node_rows = Rows::dense(&self.node_rows[..c * dim]);
        packed.node.apply(
            node_rows,
            c,
            share,
            None,
            &mut self.pre[0],
            &mut self.scratch,
        );
        for j in 0..mlp.layers.len() {
            prelu(
                &self.pre[j][..c * width(mlp, j)],
                mlp.slopes[j],
                &mut self.act[j],
            );
            let l = &mlp.layers[j];
            let x = Rows::dense(&self.act[j][..c * l.inputs]);
            let out = &mut self.pre[j + 1][..c * l.outputs];
            packed.layers[j].apply(x, c, Init::Bias(l.bias), None, out, &mut self.scratch);
        }
        // The loss and its gradient per logit.
        let logits = &self.pre[mlp.layers.len()][..c];
        let labels = &pairs.labels[range];
        for i in 0..c {
            let (z, y) = (logits[i], labels[i]);
            let e = (-z.abs()).exp(); // sigmoid and softplus from one exp
            grads.loss += (z.max(0.0) - z * y + e.ln_1p()) as f64;
            let sigmoid = if z >= 0.0 {
                1.0 / (1.0 + e)
            } else {
                e / (1.0 + e)
            };
            self.grad_out[i] = (sigmoid - y) * scale;
        }
        // Backward, last layer first: grad_out holds d(loss)/d(pre[j + 1]).
        for j in (0..mlp.layers.len()).rev() {
            let l = &mlp.layers[j];
            let g = &self.grad_out[..c * l.outputs];
            // dW += gᵀ [outputs, c] · act [c, inputs]
            gemm(
                l.outputs,
                c,
                l.inputs,
                g,
                (1, l.outputs),
                &self.act[j],
                (l.inputs, 1),
                1.0,
                &mut grads.weights[j],
            );
            for row in g.chunks_exact(l.outputs) {
                add_into(&mut grads.biases[j], row);
            }
            // d(act) = g [c, outputs] · W [outputs, inputs], then through the PReLU.
            let ga = &mut self.grad_in[..c * l.inputs];
            let zeros = Init::Bias(&packed.zeros[..l.inputs]);
            packed.layers_t[j].apply(Rows::dense(g), c, zeros, None, ga, &mut self.scratch);
            grads.slopes[j] += prelu_backward(ga, &self.pre[j][..c * l.inputs], mlp.slopes[j]);
            std::mem::swap(&mut self.grad_out, &mut self.grad_in);
        }
        // grad_out: d(loss)/d(pre[0]), [c, hidden]: to the user shares, w_node and the table.
        let g = &self.grad_out[..c * hidden];
        scatter_add_rows(&mut grads.user_share, g, rows, hidden);
        gemm(
            hidden,
            c,
            dim,
            g,
            (1, hidden),
            &self.node_rows,
            (dim, 1),
            1.0,
            &mut grads.w_node,
        );
        let gn = &mut self.grad_in[..c * dim];
        let zeros = Init::Bias(&packed.zeros[..dim]);
        packed
            .node_t
            .apply(Rows::dense(g), c, zeros, None, gn, &mut self.scratch);
        scatter_add_rows(&mut grads.table, gn, nodes, dim);
    }
}

/// `a += b`, elementwise.
pub(crate) fn add_into(a: &mut [f32], b: &[f32]) {
    a.iter_mut().zip(b).for_each(|(x, y)| *x += y);
}

/// Row `i` of `dst` (rows of `width`) becomes row `index[i]` of `src`.
fn gather_rows(dst: &mut [f32], src: &[f32], index: &[i64], width: usize) {
    for (row, &r) in dst.chunks_exact_mut(width).zip(index) {
        let r = r as usize;
        row.copy_from_slice(&src[r * width..(r + 1) * width]);
    }
}

/// Row `index[i]` of `dst` (rows of `width`) gets row `i` of `src` added.
fn scatter_add_rows(dst: &mut [f32], src: &[f32], index: &[i64], width: usize) {
    for (row, &r) in src.chunks_exact(width).zip(index) {
        let r = r as usize;
        add_into(&mut dst[r * width..(r + 1) * width], row);
    }
}

/// The width of `pre[j]`: the first layer's for `j = 0`, else layer `j - 1`'s output.
fn width(mlp: &Mlp<'_>, j: usize) -> usize {
    if j == 0 {
        mlp.hidden
    } else {
        mlp.layers[j - 1].outputs
    }
}

fn prelu(x: &[f32], slope: f32, out: &mut [f32]) {
    for (o, &v) in out.iter_mut().zip(x) {
        *o = if v > 0.0 { v } else { v * slope };
    }
}

/// The PReLU's backward in place: `grad` (with respect to its output) becomes the gradient with
/// respect to its input `x`; returns the slope's gradient `Σ grad · min(x, 0)`. Branch-free, with
/// [`LANES`] partial sums, so that it vectorises.
fn prelu_backward(grad: &mut [f32], x: &[f32], slope: f32) -> f64 {
    let mut sums = [0.0f32; LANES];
    let mut g_chunks = grad.chunks_exact_mut(LANES);
    let mut x_chunks = x.chunks_exact(LANES);
    for (g, x) in (&mut g_chunks).zip(&mut x_chunks) {
        for k in 0..LANES {
            let neg = x[k] <= 0.0;
            sums[k] += g[k] * if neg { x[k] } else { 0.0 };
            g[k] *= if neg { slope } else { 1.0 };
        }
    }
    let mut total: f64 = sums.iter().map(|&s| s as f64).sum();
    for (g, &x) in g_chunks
        .into_remainder()
        .iter_mut()
        .zip(x_chunks.remainder())
    {
        if x <= 0.0 {
            total += (*g * x) as f64;
            *g *= slope;
        }
    }
    total
}

/// Partial sums of a reduction: one vector register of f32 (AVX-512) or two (AVX2).
const LANES: usize = 16;

/// `c = a · b + beta · c` for `a` `[m, k]`, `b` `[k, n]` given by (row, column) strides, `c`
/// `[m, n]` row-major. The slices' lengths bound every index the strides reach.
#[allow(clippy::too_many_arguments)]
pub(crate) fn gemm(
    m: usize,
    k: usize,
    n: usize,
    a: &[f32],
    (rsa, csa): (usize, usize),
    b: &[f32],
    (rsb, csb): (usize, usize),
    beta: f32,
    c: &mut [f32],
) {
    if m == 0 || n == 0 {
        return;
    }
    let last = |rows: usize, cols: usize, rs: usize, cs: usize| (rows - 1) * rs + (cols - 1) * cs;
    assert!(k == 0 || (a.len() > last(m, k, rsa, csa) && b.len() > last(k, n, rsb, csb)));
    assert!(c.len() >= m * n);
    // SAFETY: the asserts above keep every element the strides address inside the slices,
    // and `c` does not alias `a` or `b` (a `&mut` borrow).
    unsafe {
        matrixmultiply::sgemm(
            m,
            k,
            n,
            1.0,
            a.as_ptr(),
            rsa as isize,
            csa as isize,
            b.as_ptr(),
            rsb as isize,
            csb as isize,
            beta,
            c.as_mut_ptr(),
            n as isize,
            1,
        );
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A small MLP: dim 3, hidden 5, then 5 -> 4 -> 1; 6 user shares, 9 table rows (the
    /// scoring pass's tests share it).
    pub(crate) struct Params {
        pub w_node: Vec<f32>,
        pub w: Vec<Vec<f32>>,
        pub b: Vec<Vec<f32>>,
        pub slopes: Vec<f32>,
        pub user_share: Vec<f32>,
        pub table: Vec<f32>,
    }

    pub(crate) fn value(i: usize, salt: usize) -> f32 {
        (((i * 7919 + salt * 104_729) % 1000) as f32 / 1000.0 - 0.5) * 0.8
    }

    pub(crate) fn params() -> Params {
        let v = |n: usize, s: usize| (0..n).map(|i| value(i, s)).collect::<Vec<_>>();
        Params {
            w_node: v(15, 1),
            w: vec![v(20, 2), v(4, 3)],
            b: vec![v(4, 4), v(1, 5)],
            slopes: vec![0.25, 0.1],
            user_share: v(6 * 5, 6),
            table: v(9 * 3, 7),
        }
    }

    pub(crate) fn mlp(p: &Params) -> Mlp<'_> {
        Mlp {
            w_node: &p.w_node,
            dim: 3,
            hidden: 5,
            layers: vec![
                Layer {
                    weight: &p.w[0],
                    bias: &p.b[0],
                    inputs: 5,
                    outputs: 4,
                },
                Layer {
                    weight: &p.w[1],
                    bias: &p.b[1],
                    inputs: 4,
                    outputs: 1,
                },
            ],
            slopes: p.slopes.clone(),
        }
    }

    /// The mean loss computed naively in f64, pair by pair.
    fn reference_loss(p: &Params, rows: &[i64], nodes: &[i64], labels: &[f32]) -> f64 {
        let f = |x: f32| x as f64;
        let act = |x: f64, s: f32| if x > 0.0 { x } else { x * s as f64 };
        let mut total = 0.0;
        for ((&r, &n), &y) in rows.iter().zip(nodes).zip(labels) {
            let (r, n) = (r as usize, n as usize);
            let h0: Vec<f64> = (0..5)
                .map(|o| {
                    f(p.user_share[r * 5 + o])
                        + (0..3)
                            .map(|d| f(p.table[n * 3 + d]) * f(p.w_node[o * 3 + d]))
                            .sum::<f64>()
                })
                .map(|x| act(x, p.slopes[0]))
                .collect();
            let h1: Vec<f64> = (0..4)
                .map(|o| f(p.b[0][o]) + (0..5).map(|i| h0[i] * f(p.w[0][o * 5 + i])).sum::<f64>())
                .map(|x| act(x, p.slopes[1]))
                .collect();
            let z = f(p.b[1][0]) + (0..4).map(|i| h1[i] * f(p.w[1][i])).sum::<f64>();
            let y = y as f64;
            total += z.max(0.0) - z * y + (-z.abs()).exp().ln_1p();
        }
        total / rows.len() as f64
    }

    fn batch() -> (Vec<i64>, Vec<i64>, Vec<f32>) {
        // More pairs than a chunk, so chunks and parts both split them.
        let n = 3 * CHUNK_PAIRS + 17;
        let rows = (0..n).map(|i| (i * 5 % 6) as i64).collect();
        let nodes = (0..n).map(|i| (i * 7 % 9) as i64).collect();
        let labels = (0..n).map(|i| if i % 4 == 0 { 1.0 } else { 0.0 }).collect();
        (rows, nodes, labels)
    }

    #[test]
    fn loss_matches_the_naive_forward() {
        let p = params();
        let (rows, nodes, labels) = batch();
        let pairs = Pairs {
            user_share: &p.user_share,
            table: &p.table,
            rows: &rows,
            nodes: &nodes,
            labels: &labels,
        };
        let g = bce_step(&mlp(&p), &pairs, 3).unwrap();
        let want = reference_loss(&p, &rows, &nodes, &labels);
        assert!((g.loss - want).abs() < 1e-5, "{} vs {want}", g.loss);
    }

    #[test]
    fn gradients_match_finite_differences() {
        let (rows, nodes, labels) = batch();
        let p = params();
        let pairs = Pairs {
            user_share: &p.user_share,
            table: &p.table,
            rows: &rows,
            nodes: &nodes,
            labels: &labels,
        };
        let g = bce_step(&mlp(&p), &pairs, 2).unwrap();
        // Central differences of the f64 reference, one coordinate of every input.
        let h = 1e-3f32;
        let probe = |edit: &dyn Fn(&mut Params, f32)| {
            let (mut up, mut down) = (params(), params());
            edit(&mut up, h);
            edit(&mut down, -h);
            (reference_loss(&up, &rows, &nodes, &labels)
                - reference_loss(&down, &rows, &nodes, &labels))
                / (2.0 * h as f64)
        };
        let close = |got: f64, want: f64, what: &str| {
            assert!(
                (got - want).abs() < 2e-4 + 1e-2 * want.abs(),
                "{what}: {got} vs {want}"
            );
        };
        type Edit = Box<dyn Fn(&mut Params, f32)>;
        let checks: Vec<(f64, Edit, &str)> = vec![
            (
                g.user_share[11] as f64,
                Box::new(|q, e| q.user_share[11] += e),
                "user share",
            ),
            (
                g.table[14] as f64,
                Box::new(|q, e| q.table[14] += e),
                "table",
            ),
            (
                g.w_node[7] as f64,
                Box::new(|q, e| q.w_node[7] += e),
                "w_node",
            ),
            (
                g.weights[0][13] as f64,
                Box::new(|q, e| q.w[0][13] += e),
                "hidden weight",
            ),
            (
                g.weights[1][2] as f64,
                Box::new(|q, e| q.w[1][2] += e),
                "last weight",
            ),
            (
                g.biases[0][1] as f64,
                Box::new(|q, e| q.b[0][1] += e),
                "hidden bias",
            ),
            (
                g.biases[1][0] as f64,
                Box::new(|q, e| q.b[1][0] += e),
                "last bias",
            ),
            (
                g.slopes[0],
                Box::new(|q, e| q.slopes[0] += e),
                "first slope",
            ),
            (
                g.slopes[1],
                Box::new(|q, e| q.slopes[1] += e),
                "second slope",
            ),
        ];
        for (got, edit, what) in checks {
            close(got, probe(&*edit), what);
        }
    }

    #[test]
    fn parts_change_only_the_rounding() {
        let p = params();
        let (rows, nodes, labels) = batch();
        let pairs = Pairs {
            user_share: &p.user_share,
            table: &p.table,
            rows: &rows,
            nodes: &nodes,
            labels: &labels,
        };
        let one = bce_step(&mlp(&p), &pairs, 1).unwrap();
        let four = bce_step(&mlp(&p), &pairs, 4).unwrap();
        assert!((one.loss - four.loss).abs() < 1e-9);
        for (a, b) in one.table.iter().zip(&four.table) {
            assert!((a - b).abs() < 1e-6);
        }
        assert_eq!(
            four,
            bce_step(&mlp(&p), &pairs, 4).unwrap(),
            "same parts, same sums"
        );
    }

    #[test]
    fn no_pairs_give_zero_loss_and_gradients() {
        let p = params();
        let pairs = Pairs {
            user_share: &p.user_share,
            table: &p.table,
            rows: &[],
            nodes: &[],
            labels: &[],
        };
        let g = bce_step(&mlp(&p), &pairs, 2).unwrap();
        assert_eq!(g.loss, 0.0);
        assert!(g.table.iter().chain(&g.w_node).all(|&x| x == 0.0));
    }

    #[test]
    fn refuses_inconsistent_inputs() {
        let p = params();
        let (rows, nodes, labels) = batch();
        let ok = Pairs {
            user_share: &p.user_share,
            table: &p.table,
            rows: &rows,
            nodes: &nodes,
            labels: &labels,
        };
        let bad_row: Vec<i64> = rows.iter().map(|&r| r + 1).collect();
        let bad_node: Vec<i64> = nodes.iter().map(|&r| r - 1).collect();
        for pairs in [
            Pairs {
                rows: &bad_row,
                ..ok
            },
            Pairs {
                nodes: &bad_node,
                ..ok
            },
            Pairs {
                labels: &labels[1..],
                ..ok
            },
            Pairs {
                table: &p.table[1..],
                ..ok
            },
        ] {
            assert!(matches!(
                bce_step(&mlp(&p), &pairs, 1),
                Err(JtmError::InvalidArgument(_))
            ));
        }
        let mut m = mlp(&p);
        m.slopes.pop();
        assert!(bce_step(&m, &ok, 1).is_err());
        let mut m = mlp(&p);
        m.layers[1].outputs = 2;
        assert!(bce_step(&m, &ok, 1).is_err());
    }
}
