//! The training step's CPU kernels (`crate::training_kernels`, `crate::fused_mlp`) on numpy
//! views of torch tensors, with the GIL released: lazy Adam updates the tables in place; the
//! fused MLP step returns the loss and new gradient arrays.

use super::convert::Count;
use crate::error::JtmError;
use crate::fused_mlp::{Layer, Mlp};
use crate::parallel::run;
use crate::training_kernels::{self, AdamStep};
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

/// Lazy Adam on the rows `rows` (strictly increasing) of `param` and its moments, in place.
#[pyfunction]
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
        run(None, || {
            training_kernels::lazy_adam_rows(p, m, v, dim, rows, grad, step)
        })
    })?)
}

fn readonly<'a, T>(r: Result<&'a [T], numpy::AsSliceError>, what: &str) -> PyResult<&'a [T]> {
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

fn invalid(msg: String) -> PyErr {
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
    if weights.len() != biases.len() {
        return Err(invalid(format!(
            "{} weights and {} biases",
            weights.len(),
            biases.len()
        )));
    }
    let (hidden, dim) = (w_node.shape()[0], w_node.shape()[1]);
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
    let mut layers = Vec::with_capacity(weights.len());
    for (w, b) in weights.iter().zip(&biases) {
        layers.push(Layer {
            weight: readonly(w.as_slice(), "a layer's weight")?,
            bias: readonly(b.as_slice(), "a layer's bias")?,
            inputs: w.shape()[1],
            outputs: w.shape()[0],
        });
    }
    let mlp = Mlp {
        w_node: readonly(w_node.as_slice(), "w_node")?,
        dim,
        hidden,
        layers,
        slopes,
    };
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
