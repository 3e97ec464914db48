//! `JtmError` → the Python exception hierarchy of `jtm_rs.exceptions` (polars style: one enum,
//! a few Python classes, every message naming its cause).

use crate::error::JtmError;
use pyo3::exceptions::{PyMemoryError, PyRuntimeError};
use pyo3::prelude::*;

fn raise(py: Python<'_>, class: &str, msg: String) -> PyErr {
    let made = py
        .import("jtm_rs.exceptions")
        .and_then(|m| m.getattr(class))
        .and_then(|cls| cls.call1((msg.clone(),)));
    match made {
        Ok(exc) => PyErr::from_value(exc),
        // Only if the Python package is broken; still an exception, never a crash.
        Err(_) => PyRuntimeError::new_err(msg),
    }
}

impl From<JtmError> for PyErr {
    fn from(e: JtmError) -> PyErr {
        let class = match &e {
            JtmError::InvalidArgument(_) | JtmError::InvalidNode(_) => "InvalidInputError",
            JtmError::UnknownItem(_) => "UnknownItemError",
            JtmError::Callback(_) => "CallbackError",
            JtmError::CorruptTree(_) => "CorruptTreeError",
            JtmError::Internal(_) => "JtmInternalError",
            JtmError::OutOfMemory(m) => return PyMemoryError::new_err(m.clone()),
            JtmError::Io(_) => {
                let JtmError::Io(io) = e else { unreachable!() };
                return io.into();
            }
        };
        Python::attach(|py| raise(py, class, e.to_string()))
    }
}

/// A `CallbackError` for a callback result we cannot use (wrong type, dtype or shape).
pub fn callback_error(msg: String) -> PyErr {
    JtmError::Callback(msg).into()
}
