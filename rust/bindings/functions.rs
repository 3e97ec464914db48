//! `learn_tree`: drives [`TreeLearner`] step by step, calling `weights_fn` on this thread with
//! the GIL held and running every parallel step with it released.

use super::convert::{callback_floats, float_vec, Count, Floats};
use super::tree::PyTree;
use crate::error::JtmError;
use crate::parallel::run;
use crate::tree_learning::{LearnConfig, Rebalance, TreeLearner};
use numpy::IntoPyArray;
use pyo3::prelude::*;

/// Paper Algorithm 2 on `tree` with the model's `weights_fn`; returns a new tree (the input
/// is never changed). `progress(segment, n_segments, done, total)` is called after each chunk.
/// `d` has no default here: `jtm_rs.learn_tree` passes `JTMConfig`'s.
#[pyfunction]
#[pyo3(signature = (weights_fn, tree, d, max_candidates=None, chunk_size=None, n_threads=None, progress=None, rebalance="regret", improve_passes=Count(8), keep_better=true, stay_bonus=None))]
#[allow(clippy::too_many_arguments)]
pub fn learn_tree(
    py: Python<'_>,
    weights_fn: &Bound<'_, PyAny>,
    tree: &Bound<'_, PyTree>,
    d: Count,
    max_candidates: Option<Count>,
    chunk_size: Option<Count>,
    n_threads: Option<Count>,
    progress: Option<&Bound<'_, PyAny>>,
    rebalance: &str,
    improve_passes: Count,
    keep_better: bool,
    stay_bonus: Option<&Bound<'_, PyAny>>,
) -> PyResult<PyTree> {
    let n_threads = n_threads.map(|c| c.0);
    let (d, max_candidates, chunk_size) =
        (d.0, max_candidates.map(|c| c.0), chunk_size.map(|c| c.0));
    let improve_passes = improve_passes.0;
    let rebalance = match rebalance {
        "regret" => Rebalance::Regret,
        "weight" => Rebalance::Weight,
        other => {
            return Err(JtmError::InvalidArgument(format!(
                "rebalance must be 'regret' or 'weight', got {other:?}"
            ))
            .into())
        }
    };
    if d < 1 {
        return Err(JtmError::InvalidArgument(format!("d must be at least 1, got {d}")).into());
    }
    if chunk_size == Some(0) {
        return Err(JtmError::InvalidArgument("chunk_size must be at least 1".into()).into());
    }
    let tree = &tree.get().inner;
    let d = d.min(tree.leaf_level() as usize) as u32;
    let cfg = LearnConfig {
        d,
        max_candidates,
        chunk_items: chunk_size.unwrap_or(usize::MAX),
        rebalance,
        improve_passes,
        keep_better,
        stay_bonus: match stay_bonus {
            Some(b) => float_vec(b, "stay_bonus")?,
            None => Vec::new(),
        },
        ..LearnConfig::default()
    };
    let mut learner = TreeLearner::new(tree, cfg)?;
    let n_segments = learner.segments().len();
    while let Some(seg) = py.detach(|| run(n_threads, || learner.begin_segment()))? {
        while let Some(rows) = learner.next_chunk() {
            let req = learner.request(rows.clone())?;
            let parents: Vec<i64> = req.parents.iter().map(|&p| p as i64).collect();
            let shape = [req.items.len(), req.n_candidates];
            let out = weights_fn.call1((
                req.items.into_pyarray(py),
                parents.into_pyarray(py),
                req.start_level,
                req.end_level,
            ))?;
            match callback_floats(out, "weights_fn", &shape)? {
                Floats::F32(w) => {
                    let w = w.as_slice()?;
                    py.detach(|| run(n_threads, || learner.accept_weights(rows, w)))?
                }
                Floats::F64(w) => {
                    let w = w.as_slice()?;
                    py.detach(|| run(n_threads, || learner.accept_weights(rows, w)))?
                }
            }
            py.check_signals()?;
            if let Some(cb) = progress {
                let (done, total) = learner.progress();
                cb.call1((seg.index, n_segments, done, total))?;
            }
        }
        py.detach(|| run(n_threads, || learner.assign()))?;
    }
    Ok(PyTree {
        inner: learner.finish()?,
    })
}
