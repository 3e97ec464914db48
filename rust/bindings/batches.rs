//! `batch_bags`: a training batch's embedding rows and window bags, `example_leaves`: its
//! examples' behaviour leaves (`crate::batch_bags`);
//! `item_samples`: tree learning's training examples per item (`crate::item_samples`).

use super::convert::Count;
use crate::batch_bags::{batch_bags as bags_of, example_leaves as leaves_of, unique_ranks, Levels};
use crate::error::JtmError;
use crate::item_samples::item_samples as samples_of;
use numpy::ndarray::Array2;
use numpy::{
    IntoPyArray, PyArray1, PyArray2, PyReadonlyArray1, PyReadonlyArray2, PyUntypedArrayMethods,
};
use pyo3::prelude::*;

/// Four int64 arrays handed to Python.
type Int64Arrays<'py> = (
    Bound<'py, PyArray1<i64>>,
    Bound<'py, PyArray1<i64>>,
    Bound<'py, PyArray1<i64>>,
    Bound<'py, PyArray1<i64>>,
);

/// Two int64 arrays handed to Python.
type Int64Pair<'py> = (Bound<'py, PyArray1<i64>>, Bound<'py, PyArray1<i64>>);

/// `(unique, bag_rows, offsets, local_nodes)` of examples `leaves` (`[E, W]` behaviour leaves,
/// most recent first, `-1` padded) in `windows`, and of the sampled `nodes` (`-1`: padding,
/// given row `n_nodes`). With `arity` and `leaf_level` each example is `leaf_level` user rows,
/// its behaviours taken as their ancestors at levels `1..=leaf_level`.
#[pyfunction]
#[pyo3(signature = (leaves, windows, nodes, n_nodes, arity=None, leaf_level=None))]
pub fn batch_bags<'py>(
    py: Python<'py>,
    leaves: PyReadonlyArray2<'py, i64>,
    windows: Vec<usize>,
    nodes: PyReadonlyArray1<'py, i64>,
    n_nodes: usize,
    arity: Option<usize>,
    leaf_level: Option<usize>,
) -> PyResult<Int64Arrays<'py>> {
    let contiguous = |what: &str| JtmError::InvalidArgument(format!("{what} must be C-contiguous"));
    let width = leaves.shape()[1];
    let leaves = leaves.as_slice().map_err(|_| contiguous("leaves"))?;
    let nodes = nodes.as_slice().map_err(|_| contiguous("nodes"))?;
    let levels = match (arity, leaf_level) {
        (Some(arity), Some(leaf_level)) => Some(Levels { arity, leaf_level }),
        (None, None) => None,
        _ => {
            return Err(JtmError::InvalidArgument(
                "give both arity and leaf_level, or neither".into(),
            )
            .into())
        }
    };
    let b = py.detach(|| bags_of(leaves, width, &windows, levels, nodes, n_nodes))?;
    Ok((
        b.unique.into_pyarray(py),
        b.bag_rows.into_pyarray(py),
        b.offsets.into_pyarray(py),
        b.local_nodes.into_pyarray(py),
    ))
}

/// `(keys, indptr, rows, counts)` of tree learning's samples per item
/// (`crate::item_samples`): `targets` (int32 or int64 item ids) grouped by item, taken in the
/// order of `perm`, at most `cap` per item.
#[pyfunction]
#[pyo3(signature = (targets, perm, cap=None))]
pub fn item_samples<'py>(
    py: Python<'py>,
    targets: &Bound<'py, PyAny>,
    perm: PyReadonlyArray1<'py, i64>,
    cap: Option<Count>,
) -> PyResult<Int64Arrays<'py>> {
    let contiguous = |what: &str| JtmError::InvalidArgument(format!("{what} must be C-contiguous"));
    let perm = perm.as_slice().map_err(|_| contiguous("perm"))?;
    let cap = cap.map(|c| c.0);
    let s = if let Ok(t) = targets.extract::<PyReadonlyArray1<'py, i32>>() {
        let t = t.as_slice().map_err(|_| contiguous("targets"))?;
        py.detach(|| samples_of(t, perm, cap))?
    } else {
        let t = targets
            .extract::<PyReadonlyArray1<'py, i64>>()
            .map_err(|_| {
                JtmError::InvalidArgument("targets must be a 1-d int32 or int64 array".into())
            })?;
        let t = t.as_slice().map_err(|_| contiguous("targets"))?;
        py.detach(|| samples_of(t, perm, cap))?
    };
    Ok((
        s.keys.into_pyarray(py),
        s.indptr.into_pyarray(py),
        s.rows.into_pyarray(py),
        s.counts.into_pyarray(py),
    ))
}

/// `[len(examples), width]` behaviour leaves of `examples`, most recent first, `-1` padded:
/// example `e`'s are `leaf[pos[e] - 1]`, `leaf[pos[e] - 2]`, … down to `row_start[e]`
/// (`pos` and `row_start` int32 or int64 alike, as `jtm_rs.data.Windows` keeps them).
#[pyfunction]
pub fn example_leaves<'py>(
    py: Python<'py>,
    leaf: PyReadonlyArray1<'py, i64>,
    pos: &Bound<'py, PyAny>,
    row_start: &Bound<'py, PyAny>,
    examples: PyReadonlyArray1<'py, i64>,
    width: usize,
) -> PyResult<Bound<'py, PyArray2<i64>>> {
    let contiguous = |what: &str| JtmError::InvalidArgument(format!("{what} must be C-contiguous"));
    let leaf = leaf.as_slice().map_err(|_| contiguous("leaf"))?;
    let examples = examples.as_slice().map_err(|_| contiguous("examples"))?;
    let out = if let (Ok(p), Ok(r)) = (
        pos.extract::<PyReadonlyArray1<'py, i32>>(),
        row_start.extract::<PyReadonlyArray1<'py, i32>>(),
    ) {
        let (p, r) = (
            p.as_slice().map_err(|_| contiguous("pos"))?,
            r.as_slice().map_err(|_| contiguous("row_start"))?,
        );
        py.detach(|| leaves_of(leaf, p, r, examples, width))?
    } else {
        let wrong = |_| {
            JtmError::InvalidArgument(
                "pos and row_start must be 1-d arrays, both int32 or both int64".into(),
            )
        };
        let p = pos.extract::<PyReadonlyArray1<'py, i64>>().map_err(wrong)?;
        let r = row_start
            .extract::<PyReadonlyArray1<'py, i64>>()
            .map_err(wrong)?;
        let (p, r) = (
            p.as_slice().map_err(|_| contiguous("pos"))?,
            r.as_slice().map_err(|_| contiguous("row_start"))?,
        );
        py.detach(|| leaves_of(leaf, p, r, examples, width))?
    };
    let a = Array2::from_shape_vec((examples.len(), width), out)
        .map_err(|e| JtmError::Internal(format!("example leaves' shape: {e}")))?;
    Ok(a.into_pyarray(py))
}

/// `(unique, inverse)` of `ids` in `0..n_ids` (`crate::batch_bags::unique_ranks`): the distinct
/// ids ascending and each id's place among them, as `torch.unique(ids, return_inverse=True)`.
#[pyfunction]
#[pyo3(name = "unique_ranks")]
pub fn unique_ranks_of<'py>(
    py: Python<'py>,
    ids: PyReadonlyArray1<'py, i64>,
    n_ids: usize,
) -> PyResult<Int64Pair<'py>> {
    let ids = ids
        .as_slice()
        .map_err(|_| JtmError::InvalidArgument("ids must be C-contiguous".into()))?;
    let (unique, ranks) = py.detach(|| unique_ranks(ids, n_ids))?;
    Ok((unique.into_pyarray(py), ranks.into_pyarray(py)))
}
