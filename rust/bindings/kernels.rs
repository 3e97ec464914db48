//! The model's CPU kernels (`crate::training_kernels`, `crate::fused_mlp`,
//! `crate::mlp_scores`) on numpy views of torch tensors, with the GIL released: lazy Adam
//! updates the tables in place; the fused MLP step returns the loss and new gradient arrays;
//! the user shares and linear layers of the scoring pass (its pairs: `super::scoring`).

use super::convert::Count;
use crate::dense_kernels::{bf16_faster, native, Precision};
use crate::error::JtmError;
use crate::fused_mlp::{Layer, Mlp, CHUNK_PAIRS};
use crate::mlp_scores::linear;
use crate::parallel::{run, run_sized};
use crate::training_kernels::{self, AdamStep};
use crate::user_shares::{user_shares, Hierarchy, UserSide};
use crate::window_bags::{bce_step_from_bags, BagPairs, Bags, UserLayer};
use numpy::ndarray::Array2;
use numpy::{
    IntoPyArray, PyArray1, PyArray2, PyReadonlyArray1, PyReadonlyArray2, PyReadwriteArray2,
    PyUntypedArrayMethods,
};
use pyo3::prelude::*;

fn contiguous<'a, T>(
    r: Result<&'a mut [T], numpy::AsSliceError>,
    what: &str,
) -> PyResult<&'a mut [T]> {
    r.map_err(|_| JtmError::InvalidArgument(format!("{what} must be C-contiguous")).into())
}

/// Lazy Adam on the rows `rows` (strictly increasing) of `param` and its moments, in place,
/// on `n_threads` (the training step's pool: another pool's threads would wake for it).
#[pyfunction]
#[pyo3(signature = (param, exp_avg, exp_avg_sq, rows, grad, beta1, beta2, eps, step_size, n_threads=None))]
#[allow(clippy::too_many_arguments)]
pub fn lazy_adam_rows(
    py: Python<'_>,
    mut param: PyReadwriteArray2<'_, f32>,
    mut exp_avg: PyReadwriteArray2<'_, f32>,
    mut exp_avg_sq: PyReadwriteArray2<'_, f32>,
    rows: PyReadonlyArray1<'_, i64>,
    grad: PyReadonlyArray2<'_, f32>,
    beta1: f64,
    beta2: f64,
    eps: f64,
    step_size: f64,
    n_threads: Option<Count>,
) -> PyResult<()> {
    let dim = param.shape()[1];
    if grad.shape()[1] != dim && grad.shape()[0] > 0 {
        return Err(JtmError::InvalidArgument(format!(
            "gradient rows of {} for a table of rows of {dim}",
            grad.shape()[1]
        ))
        .into());
    }
    let (rows, grad) = (rows.as_slice()?, grad.as_slice()?);
    let p = contiguous(param.as_slice_mut(), "the table")?;
    let m = contiguous(exp_avg.as_slice_mut(), "exp_avg")?;
    let v = contiguous(exp_avg_sq.as_slice_mut(), "exp_avg_sq")?;
    let step = AdamStep {
        beta1,
        beta2,
        eps,
        step_size,
    };
    Ok(py.detach(|| {
        run(n_threads.map(|c| c.0), || {
            training_kernels::lazy_adam_rows(p, m, v, dim, rows, grad, step)
        })
    })?)
}

pub(super) fn readonly<'a, T>(
    r: Result<&'a [T], numpy::AsSliceError>,
    what: &str,
) -> PyResult<&'a [T]> {
    r.map_err(|_| JtmError::InvalidArgument(format!("{what} must be C-contiguous")).into())
}

/// The gradients of [`mlp_bce_step`]: `(table, w_user, bias, w_node, weights, biases, slopes)`.
type MlpGrads<'py> = (
    Bound<'py, PyArray2<f32>>,
    Bound<'py, PyArray2<f32>>,
    Bound<'py, PyArray1<f32>>,
    Bound<'py, PyArray2<f32>>,
    Vec<Bound<'py, PyArray2<f32>>>,
    Vec<Bound<'py, PyArray1<f32>>>,
    Vec<f64>,
);

fn matrix<'py>(
    py: Python<'py>,
    values: Vec<f32>,
    cols: usize,
) -> PyResult<Bound<'py, PyArray2<f32>>> {
    let rows = values.len().checked_div(cols).unwrap_or(0);
    let a = Array2::from_shape_vec((rows, cols), values)
        .map_err(|e| JtmError::Internal(format!("gradient shape: {e}")))?;
    Ok(a.into_pyarray(py))
}

pub(super) fn invalid(msg: String) -> PyErr {
    JtmError::InvalidArgument(msg).into()
}

/// The mean BCE loss of labelled (user row, node) pairs through the model, and its gradients
/// (`crate::window_bags::bce_step_from_bags`): the user rows are the window means of the
/// behaviours' `table` rows (`bag_rows`, `bag_offsets`, as torch's `embedding_bag`), the
/// first layer is `w_user`, `bias` and `w_node`; `weights[j]` `[out, in]` and `biases[j]` are
/// the layers after it, `slopes` the PReLU slopes.
#[pyfunction]
#[pyo3(signature = (table, bag_rows, bag_offsets, w_user, bias, rows, nodes, labels, w_node, weights, biases, slopes, n_threads=None))]
#[allow(clippy::too_many_arguments)]
pub fn mlp_bce_step<'py>(
    py: Python<'py>,
    table: PyReadonlyArray2<'py, f32>,
    bag_rows: PyReadonlyArray1<'py, i64>,
    bag_offsets: PyReadonlyArray1<'py, i64>,
    w_user: PyReadonlyArray2<'py, f32>,
    bias: PyReadonlyArray1<'py, f32>,
    rows: PyReadonlyArray1<'py, i64>,
    nodes: PyReadonlyArray1<'py, i64>,
    labels: PyReadonlyArray1<'py, f32>,
    w_node: PyReadonlyArray2<'py, f32>,
    weights: Vec<PyReadonlyArray2<'py, f32>>,
    biases: Vec<PyReadonlyArray1<'py, f32>>,
    slopes: Vec<f32>,
    n_threads: Option<Count>,
) -> PyResult<(f64, MlpGrads<'py>)> {
    let mlp = mlp_of(&w_node, &weights, &biases, slopes)?;
    let (hidden, dim) = (mlp.hidden, mlp.dim);
    if table.shape()[1] != dim
        || w_user.shape()[0] != hidden
        || dim == 0
        || w_user.shape()[1] % dim != 0
    {
        return Err(invalid(format!(
            "table rows of {}, a user part of [{}, {}] and a node part of [{hidden}, {dim}] do not fit one first layer",
            table.shape()[1],
            w_user.shape()[0],
            w_user.shape()[1]
        )));
    }
    let user = UserLayer {
        weight: readonly(w_user.as_slice(), "w_user")?,
        bias: readonly(bias.as_slice(), "bias")?,
        windows: w_user.shape()[1] / dim,
    };
    let batch = BagPairs {
        table: readonly(table.as_slice(), "table")?,
        bags: Bags {
            rows: readonly(bag_rows.as_slice(), "bag_rows")?,
            offsets: readonly(bag_offsets.as_slice(), "bag_offsets")?,
        },
        rows: readonly(rows.as_slice(), "rows")?,
        nodes: readonly(nodes.as_slice(), "nodes")?,
        labels: readonly(labels.as_slice(), "labels")?,
    };
    let n_threads = n_threads.map(|c| c.0);
    let g = py.detach(|| {
        run(n_threads, || {
            bce_step_from_bags(&user, &mlp, &batch, rayon::current_num_threads())
        })
    })?;
    let widths: Vec<usize> = mlp.layers.iter().map(|l| l.inputs).collect();
    let weights = g
        .pass
        .weights
        .into_iter()
        .zip(widths)
        .map(|(w, cols)| matrix(py, w, cols))
        .collect::<PyResult<Vec<_>>>()?;
    let biases = g
        .pass
        .biases
        .into_iter()
        .map(|b| b.into_pyarray(py))
        .collect();
    Ok((
        g.pass.loss,
        (
            matrix(py, g.pass.table, dim)?,
            matrix(py, g.weight, user.windows * dim)?,
            g.bias.into_pyarray(py),
            matrix(py, g.pass.w_node, dim)?,
            weights,
            biases,
            g.pass.slopes,
        ),
    ))
}

/// The MLP from its parts, as both kernels take them.
pub(super) fn mlp_of<'a>(
    w_node: &'a PyReadonlyArray2<'_, f32>,
    weights: &'a [PyReadonlyArray2<'_, f32>],
    biases: &'a [PyReadonlyArray1<'_, f32>],
    slopes: Vec<f32>,
) -> PyResult<Mlp<'a>> {
    if weights.len() != biases.len() {
        return Err(invalid(format!(
            "{} weights and {} biases",
            weights.len(),
            biases.len()
        )));
    }
    let mut layers = Vec::with_capacity(weights.len());
    for (w, b) in weights.iter().zip(biases) {
        layers.push(Layer {
            weight: readonly(w.as_slice(), "a layer's weight")?,
            bias: readonly(b.as_slice(), "a layer's bias")?,
            inputs: w.shape()[1],
            outputs: w.shape()[0],
        });
    }
    Ok(Mlp {
        w_node: readonly(w_node.as_slice(), "w_node")?,
        dim: w_node.shape()[1],
        hidden: w_node.shape()[0],
        layers,
        slopes,
    })
}

/// Whether this CPU multiplies bfloat16 natively in the scoring pass (AVX-512 BF16): where
/// not, bfloat16 is rounded float32 arithmetic, slower than float32.
#[pyfunction]
pub fn bfloat16_native() -> bool {
    native(Precision::BFloat16)
}

/// Whether bfloat16 scoring is faster than float32 on this CPU (`crate::dense_kernels::bf16_faster`):
/// what `"auto"` precisions choose.
#[pyfunction]
pub fn bfloat16_faster() -> bool {
    bf16_faster()
}

/// `x · weightᵀ + bias` (`crate::mlp_scores::linear`): `x` `[rows, k]`, `weight` `[n, k]`; the
/// multiplies in `precision` ("float32" or "bfloat16").
#[pyfunction]
#[pyo3(signature = (x, weight, bias, precision="float32", n_threads=None))]
pub fn linear_layer<'py>(
    py: Python<'py>,
    x: PyReadonlyArray2<'py, f32>,
    weight: PyReadonlyArray2<'py, f32>,
    bias: PyReadonlyArray1<'py, f32>,
    precision: &str,
    n_threads: Option<Count>,
) -> PyResult<Bound<'py, PyArray2<f32>>> {
    let precision = precision_of(precision)?;
    let (n, k) = (weight.shape()[0], weight.shape()[1]);
    if x.shape()[1] != k {
        return Err(invalid(format!(
            "inputs of width {} for a weight of [{n}, {k}]",
            x.shape()[1]
        )));
    }
    let (x, w, b) = (
        readonly(x.as_slice(), "x")?,
        readonly(weight.as_slice(), "weight")?,
        readonly(bias.as_slice(), "bias")?,
    );
    let rows = x.len() / k.max(1);
    let y = in_parts(py, n_threads, rows, CHUNK_PAIRS + 1, |parts| {
        linear(x, w, b, (n, k), precision, parts)
    })?;
    matrix(py, y, n)
}

/// Below this many pairs a scoring call runs on the calling thread whatever the pool: waking
/// a second worker cost more than it saved on one user's beam-search level (~400 pairs, 2
/// chunks; docs/serving.md), while a batch's levels (thousands of pairs) split.
pub(super) const PARALLEL_MIN_PAIRS: usize = 4 * CHUNK_PAIRS;

/// Runs `f(parts)` with the GIL released on `n_threads` (the pool's size as `parts`), or on the
/// calling thread with one part where there is one thread or fewer than `min_parallel` rows: a
/// pool hand-off costs more than a small call's work.
pub(super) fn in_parts<R: Send>(
    py: Python<'_>,
    n_threads: Option<Count>,
    rows: usize,
    min_parallel: usize,
    f: impl FnOnce(usize) -> crate::error::Result<R> + Send,
) -> PyResult<R> {
    let n_threads = n_threads.map(|c| c.0);
    let here = n_threads == Some(1) || rows < min_parallel;
    Ok(py.detach(|| {
        run_sized(n_threads, here, || {
            f(if here {
                1
            } else {
                rayon::current_num_threads()
            })
        })
    })?)
}

pub(super) fn precision_of(name: &str) -> PyResult<Precision> {
    match name {
        "float32" => Ok(Precision::Float32),
        "bfloat16" => Ok(Precision::BFloat16),
        other => Err(invalid(format!(
            "precision must be 'float32' or 'bfloat16', got {other:?}"
        ))),
    }
}

/// The first layer's user share of each row of `behaviours` (`crate::user_shares`): the time
/// windows' (`windows`) means of the rows of `table` the behaviours name (`-1`: padding),
/// times `weight` plus `bias`. With `levels` (one per row), the behaviours are leaves of a
/// heap-ordered tree of `arity` with leaves on `leaf_level`, each taken as its ancestor at the
/// row's level.
#[pyfunction]
#[pyo3(signature = (table, behaviours, windows, weight, bias, levels=None, arity=2, leaf_level=0, precision="float32", n_threads=None))]
#[allow(clippy::too_many_arguments)]
pub fn user_share_rows<'py>(
    py: Python<'py>,
    table: PyReadonlyArray2<'py, f32>,
    behaviours: PyReadonlyArray2<'py, i64>,
    windows: Vec<usize>,
    weight: PyReadonlyArray2<'py, f32>,
    bias: PyReadonlyArray1<'py, f32>,
    levels: Option<PyReadonlyArray1<'py, i64>>,
    arity: usize,
    leaf_level: usize,
    precision: &str,
    n_threads: Option<Count>,
) -> PyResult<Bound<'py, PyArray2<f32>>> {
    let precision = precision_of(precision)?;
    let side = UserSide {
        table: readonly(table.as_slice(), "table")?,
        dim: table.shape()[1],
        windows: &windows,
        weight: readonly(weight.as_slice(), "weight")?,
        bias: readonly(bias.as_slice(), "bias")?,
    };
    let width = behaviours.shape()[1];
    let beh = readonly(behaviours.as_slice(), "behaviours")?;
    let levels = match &levels {
        Some(l) => Some(readonly(l.as_slice(), "levels")?),
        None => None,
    };
    let hierarchy = levels.map(|levels| Hierarchy {
        arity,
        leaf_level,
        levels,
    });
    let rows = beh.len() / width.max(1);
    let y = in_parts(py, n_threads, rows, CHUNK_PAIRS + 1, |parts| {
        user_shares(&side, beh, width, hierarchy, precision, parts)
    })?;
    matrix(py, y, side.bias.len())
}
