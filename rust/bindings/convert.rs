//! numpy in and out. Inputs that are already C-contiguous arrays of the right dtype are
//! borrowed without a copy; other integer array-likes are converted once; floats passed as ids
//! are refused rather than truncated.

use super::error::callback_error;
use crate::error::JtmError;
use numpy::{
    PyArrayDescrMethods, PyArrayDyn, PyArrayMethods, PyReadonlyArrayDyn, PyUntypedArrayMethods,
};
use pyo3::prelude::*;
use pyo3::types::PyDict;

/// A C-contiguous int64 view of `obj` (any integer array-like).
pub fn int_array<'py>(
    obj: &Bound<'py, PyAny>,
    what: &str,
) -> PyResult<PyReadonlyArrayDyn<'py, i64>> {
    if let Ok(a) = obj.cast::<PyArrayDyn<i64>>() {
        if a.is_c_contiguous() {
            return Ok(a.readonly());
        }
    }
    let py = obj.py();
    let np = py.import("numpy")?;
    let arr = np.call_method1("asarray", (obj,))?;
    let kind: String = arr.getattr("dtype")?.getattr("kind")?.extract()?;
    let size: usize = arr.getattr("size")?.extract()?;
    if !(kind == "i" || kind == "u" || size == 0) {
        return Err(JtmError::InvalidArgument(format!(
            "{what} must be integers, got an array of dtype {}",
            arr.getattr("dtype")?.str()?
        ))
        .into());
    }
    // uint64 ids past int64's range would wrap to negative (padding-like) ids: refuse them.
    if kind == "u" && size > 0 {
        let max = arr.call_method0("max")?;
        if max.gt(i64::MAX)? {
            return Err(JtmError::InvalidArgument(format!(
                "{what} must fit in int64, got {}",
                max.str()?
            ))
            .into());
        }
    }
    let kw = PyDict::new(py);
    kw.set_item("dtype", "int64")?;
    let arr = np.call_method("ascontiguousarray", (arr,), Some(&kw))?;
    Ok(arr.cast_into::<PyArrayDyn<i64>>()?.readonly())
}

/// `numpy.asarray(obj)`, refused unless it has `ndim` dimensions of numbers.
fn numeric_array<'py>(
    obj: &Bound<'py, PyAny>,
    what: &str,
    ndim: usize,
) -> PyResult<Bound<'py, PyAny>> {
    let arr = obj.py().import("numpy")?.call_method1("asarray", (obj,))?;
    let got: usize = arr.getattr("ndim")?.extract()?;
    let kind: String = arr.getattr("dtype")?.getattr("kind")?.extract()?;
    if got != ndim || !(kind == "f" || kind == "i" || kind == "u") {
        return Err(JtmError::InvalidArgument(format!(
            "{what} must be a {ndim}-D float array, got {got} dimension(s) of dtype {}",
            arr.getattr("dtype")?.str()?
        ))
        .into());
    }
    Ok(arr)
}

/// A C-contiguous `float32[n, dim]` view of `obj` (converted once if needed).
pub fn float_matrix<'py>(
    obj: &Bound<'py, PyAny>,
    what: &str,
) -> PyResult<numpy::PyReadonlyArray2<'py, f32>> {
    if let Ok(a) = obj.cast::<numpy::PyArray2<f32>>() {
        if a.is_c_contiguous() {
            return Ok(a.readonly());
        }
    }
    let py = obj.py();
    let np = py.import("numpy")?;
    let arr = numeric_array(obj, what, 2)?;
    let kw = PyDict::new(py);
    kw.set_item("dtype", "float32")?;
    let arr = np.call_method("ascontiguousarray", (arr,), Some(&kw))?;
    Ok(arr.cast_into::<numpy::PyArray2<f32>>()?.readonly())
}

/// A 1-D (or scalar) id list; a 2-D array is refused rather than silently flattened.
pub fn int_vec(obj: &Bound<'_, PyAny>, what: &str) -> PyResult<Vec<i64>> {
    let arr = int_array(obj, what)?;
    if arr.ndim() > 1 {
        return Err(JtmError::InvalidArgument(format!(
            "{what} must be a 1-D array, got shape {:?}",
            arr.shape()
        ))
        .into());
    }
    Ok(arr.as_slice()?.to_vec())
}

/// A 1-D float64 list (numbers of any float or int dtype).
pub fn float_vec(obj: &Bound<'_, PyAny>, what: &str) -> PyResult<Vec<f64>> {
    let arr = numeric_array(obj, what, 1)?.call_method1("astype", ("float64",))?;
    Ok(arr
        .cast_into::<numpy::PyArray1<f64>>()?
        .readonly()
        .as_slice()?
        .to_vec())
}

/// A float32 or float64 array returned by a callback, checked against `shape`.
pub enum Floats<'py> {
    F32(PyReadonlyArrayDyn<'py, f32>),
    F64(PyReadonlyArrayDyn<'py, f64>),
}

pub fn callback_floats<'py>(
    obj: Bound<'py, PyAny>,
    callback: &str,
    shape: &[usize],
) -> PyResult<Floats<'py>> {
    let py = obj.py();
    let Ok(arr) = obj.cast::<numpy::PyUntypedArray>() else {
        return Err(callback_error(format!(
            "{callback} must return a numpy array of shape {shape:?}, got {}",
            obj.get_type().name()?
        )));
    };
    if arr.shape() != shape {
        return Err(callback_error(format!(
            "{callback} returned an array of shape {:?}, expected {shape:?}",
            arr.shape()
        )));
    }
    let dtype = arr.dtype();
    let contiguous = |a: &Bound<'py, PyAny>| -> PyResult<Bound<'py, PyAny>> {
        py.import("numpy")?.call_method1("ascontiguousarray", (a,))
    };
    if dtype.is_equiv_to(&numpy::dtype::<f32>(py)) {
        Ok(Floats::F32(
            contiguous(&obj)?.cast_into::<PyArrayDyn<f32>>()?.readonly(),
        ))
    } else if dtype.is_equiv_to(&numpy::dtype::<f64>(py)) {
        Ok(Floats::F64(
            contiguous(&obj)?.cast_into::<PyArrayDyn<f64>>()?.readonly(),
        ))
    } else {
        Err(callback_error(format!(
            "{callback} returned dtype {}, expected float32 or float64",
            dtype.str()?
        )))
    }
}

/// A non-negative count argument (`n_users`, `k`, `n_threads`, …). Python ints out of range
/// raise `InvalidInputError` naming the value, not PyO3's `OverflowError`.
#[derive(Clone, Copy, Debug)]
pub struct Count(pub usize);

/// A signed argument (a level, an arity, a padding value): any int that fits in int64, else
/// `InvalidInputError` naming it (PyO3 alone raises `OverflowError`).
#[derive(Clone, Copy, Debug)]
pub struct Int(pub i64);

/// A seed: any int in `0..2^64`.
#[derive(Clone, Copy, Debug)]
pub struct Seed(pub u64);

fn bounded_int(obj: Borrowed<'_, '_, PyAny>, max: u64, what: &str) -> PyResult<u64> {
    if obj.lt(0)? || obj.gt(max)? {
        return Err(JtmError::InvalidArgument(format!(
            "{what} must be an integer from 0 to {max}, got {}",
            obj.str()?
        ))
        .into());
    }
    obj.extract::<u64>()
}

impl FromPyObject<'_, '_> for Count {
    type Error = PyErr;

    fn extract(obj: Borrowed<'_, '_, PyAny>) -> Result<Self, Self::Error> {
        Ok(Count(
            bounded_int(obj, isize::MAX as u64, "a count")? as usize
        ))
    }
}

impl FromPyObject<'_, '_> for Seed {
    type Error = PyErr;

    fn extract(obj: Borrowed<'_, '_, PyAny>) -> Result<Self, Self::Error> {
        Ok(Seed(bounded_int(obj, u64::MAX, "a seed")?))
    }
}

impl FromPyObject<'_, '_> for Int {
    type Error = PyErr;

    fn extract(obj: Borrowed<'_, '_, PyAny>) -> Result<Self, Self::Error> {
        if obj.lt(i64::MIN)? || obj.gt(i64::MAX)? {
            return Err(JtmError::InvalidArgument(format!(
                "an integer argument must fit in int64, got {}",
                obj.str()?
            ))
            .into());
        }
        Ok(Int(obj.extract::<i64>()?))
    }
}
