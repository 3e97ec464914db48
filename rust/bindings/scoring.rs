//! The scoring pass's pairs (`crate::mlp_scores`) as a Python object that holds an MLP's
//! weights packed once: a beam search scores a dozen levels with the same model, and packing
//! the weights again at every level was a third of a one-user level's time in bfloat16.

use super::convert::Count;
use super::kernels::{in_parts, invalid, mlp_of, precision_of, readonly, PARALLEL_MIN_PAIRS};
use crate::fused_mlp::{Layer, Mlp};
use crate::mlp_scores::{packed_pair_scores, Layers, NodeRows, ScoredPairs};
use numpy::{IntoPyArray, PyArray1, PyReadonlyArray1, PyReadonlyArray2, PyUntypedArrayMethods};
use pyo3::prelude::*;

/// One layer after the first: `weight` `[outputs, inputs]`, `bias` `[outputs]`.
struct OwnedLayer {
    weight: Vec<f32>,
    bias: Vec<f32>,
    inputs: usize,
    outputs: usize,
}

/// An MLP (the first layer's node share `w_node` `[hidden, dim]`, `weights[j]` `[out, in]`,
/// `biases[j]` and `slopes` the layers after it) copied and packed for the multiplies in
/// `precision` ("float32" or "bfloat16"); later changes to the arrays it came from do not
/// reach it.
#[pyclass(name = "ScoringLayers", module = "jtm_rs._core", frozen)]
pub struct PyScoringLayers {
    w_node: Vec<f32>,
    dim: usize,
    hidden: usize,
    layers: Vec<OwnedLayer>,
    slopes: Vec<f32>,
    packed: Layers,
}

impl PyScoringLayers {
    fn mlp(&self) -> Mlp<'_> {
        Mlp {
            w_node: &self.w_node,
            dim: self.dim,
            hidden: self.hidden,
            layers: self
                .layers
                .iter()
                .map(|l| Layer {
                    weight: &l.weight,
                    bias: &l.bias,
                    inputs: l.inputs,
                    outputs: l.outputs,
                })
                .collect(),
            slopes: self.slopes.clone(),
        }
    }
}

#[pymethods]
impl PyScoringLayers {
    #[new]
    #[pyo3(signature = (w_node, weights, biases, slopes, precision="float32"))]
    fn new(
        w_node: PyReadonlyArray2<'_, f32>,
        weights: Vec<PyReadonlyArray2<'_, f32>>,
        biases: Vec<PyReadonlyArray1<'_, f32>>,
        slopes: Vec<f32>,
        precision: &str,
    ) -> PyResult<Self> {
        let precision = precision_of(precision)?;
        let mlp = mlp_of(&w_node, &weights, &biases, slopes)?;
        crate::fused_mlp::check_layers(&mlp)?;
        let packed = Layers::new(&mlp, precision);
        Ok(PyScoringLayers {
            w_node: mlp.w_node.to_vec(),
            dim: mlp.dim,
            hidden: mlp.hidden,
            layers: mlp
                .layers
                .iter()
                .map(|l| OwnedLayer {
                    weight: l.weight.to_vec(),
                    bias: l.bias.to_vec(),
                    inputs: l.inputs,
                    outputs: l.outputs,
                })
                .collect(),
            slopes: mlp.slopes.clone(),
            packed,
        })
    }

    /// Each pair's logit: pair `p` is row `rows[p]` of `user_share` (the first layer's user
    /// share, bias included) against row `nodes[p]` of `node_rows` — node embeddings,
    /// multiplied by `w_node`, or with `node_shares=True` node shares already multiplied.
    #[pyo3(signature = (user_share, node_rows, rows, nodes, node_shares=false, n_threads=None))]
    #[allow(clippy::too_many_arguments)]
    fn scores<'py>(
        &self,
        py: Python<'py>,
        user_share: PyReadonlyArray2<'py, f32>,
        node_rows: PyReadonlyArray2<'py, f32>,
        rows: PyReadonlyArray1<'py, i64>,
        nodes: PyReadonlyArray1<'py, i64>,
        node_shares: bool,
        n_threads: Option<Count>,
    ) -> PyResult<Bound<'py, PyArray1<f32>>> {
        let width = if node_shares { self.hidden } else { self.dim };
        if user_share.shape()[1] != self.hidden || node_rows.shape()[1] != width {
            return Err(invalid(format!(
                "user shares of width {} and node rows of width {} for a first layer of [{}, {}] (node shares: {node_shares})",
                user_share.shape()[1],
                node_rows.shape()[1],
                self.hidden,
                self.dim
            )));
        }
        let table = readonly(node_rows.as_slice(), "node_rows")?;
        let pairs = ScoredPairs {
            user_share: readonly(user_share.as_slice(), "user_share")?,
            node_rows: if node_shares {
                NodeRows::Shares(table)
            } else {
                NodeRows::Embeddings(table)
            },
            rows: readonly(rows.as_slice(), "rows")?,
            nodes: readonly(nodes.as_slice(), "nodes")?,
        };
        let mlp = self.mlp();
        let n = pairs.rows.len();
        let scores = in_parts(py, n_threads, n, PARALLEL_MIN_PAIRS, |parts| {
            packed_pair_scores(&mlp, &self.packed, &pairs, parts)
        })?;
        Ok(scores.into_pyarray(py))
    }
}
