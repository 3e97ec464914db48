//! The training step's CPU kernel (`crate::training_kernels`) on numpy views of torch tensors:
//! the tables are updated in place, with the GIL released.

use crate::error::JtmError;
use crate::parallel::run;
use crate::training_kernels::{self, AdamStep};
use numpy::{PyReadonlyArray1, PyReadonlyArray2, PyReadwriteArray2, PyUntypedArrayMethods};
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
