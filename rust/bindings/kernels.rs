//! The training step's CPU kernels (`crate::training_kernels`, `crate::fused_mlp`) on numpy
//! views of torch tensors, with the GIL released: lazy Adam updates the tables in place; the
//! fused MLP step returns the loss and new gradient arrays.

use super::convert::Count;
use crate::error::JtmError;
use crate::fused_mlp::{self, Layer, Mlp, Pairs};
use crate::parallel::run;
use crate::training_kernels::{self, AdamStep};
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

/// The gradients of [`mlp_bce_step`]: `(user_share, table, w_node, weights, biases, slopes)`.
type MlpGrads<'py> = (
    Bound<'py, PyArray2<f32>>,
    Bound<'py, PyArray2<f32>>,
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

/// The mean BCE loss of labelled (user, node) pairs through the MLP, and its gradients
/// (`crate::fused_mlp::bce_step`). `weights[j]` `[out, in]` and `biases[j]` are the layers after
/// the first; `slopes` the PReLU slopes (one after the first layer and after each hidden one).
#[pyfunction]
#[pyo3(signature = (user_share, table, rows, nodes, labels, w_node, weights, biases, slopes, n_threads=None))]
#[allow(clippy::too_many_arguments)]
pub fn mlp_bce_step<'py>(
    py: Python<'py>,
    user_share: PyReadonlyArray2<'py, f32>,
    table: PyReadonlyArray2<'py, f32>,
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
        return Err(JtmError::InvalidArgument(format!(
            "{} weights and {} biases",
            weights.len(),
            biases.len()
        ))
        .into());
    }
    let (hidden, dim) = (w_node.shape()[0], w_node.shape()[1]);
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
    if user_share.shape()[1] != hidden || table.shape()[1] != dim {
        return Err(JtmError::InvalidArgument(format!(
            "user shares of width {} and table rows of {} for a first layer of [{hidden}, {dim}]",
            user_share.shape()[1],
            table.shape()[1]
        ))
        .into());
    }
    let pairs = Pairs {
        user_share: readonly(user_share.as_slice(), "user_share")?,
        table: readonly(table.as_slice(), "table")?,
        rows: readonly(rows.as_slice(), "rows")?,
        nodes: readonly(nodes.as_slice(), "nodes")?,
        labels: readonly(labels.as_slice(), "labels")?,
    };
    let n_threads = n_threads.map(|c| c.0);
    let g = py.detach(|| {
        run(n_threads, || {
            fused_mlp::bce_step(&mlp, &pairs, rayon::current_num_threads())
        })
    })?;
    let shapes: Vec<usize> = mlp.layers.iter().map(|l| l.inputs).collect();
    let weights = g
        .weights
        .into_iter()
        .zip(shapes)
        .map(|(w, cols)| matrix(py, w, cols))
        .collect::<PyResult<Vec<_>>>()?;
    let biases = g.biases.into_iter().map(|b| b.into_pyarray(py)).collect();
    Ok((
        g.loss,
        (
            matrix(py, g.user_share, hidden)?,
            matrix(py, g.table, dim)?,
            matrix(py, g.w_node, dim)?,
            weights,
            biases,
            g.slopes,
        ),
    ))
}
