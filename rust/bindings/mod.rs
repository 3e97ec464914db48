//! The PyO3 layer: argument conversion, GIL release around parallel steps, error mapping.
//! No algorithm lives here.

mod batches;
mod convert;
mod error;
mod functions;
mod kernels;
mod scoring;
mod tree;

use pyo3::prelude::*;

#[pymodule]
fn _core(m: &Bound<'_, PyModule>) -> PyResult<()> {
    // rayon's global pool with its workers pinned (before any section could build it unpinned).
    crate::parallel::build_global_pool();
    m.add_class::<tree::PyTree>()?;
    m.add_function(wrap_pyfunction!(functions::learn_tree, m)?)?;
    m.add_function(wrap_pyfunction!(batches::batch_bags, m)?)?;
    m.add_function(wrap_pyfunction!(batches::item_samples, m)?)?;
    m.add_function(wrap_pyfunction!(batches::example_leaves, m)?)?;
    m.add_function(wrap_pyfunction!(batches::unique_ranks_of, m)?)?;
    m.add_function(wrap_pyfunction!(kernels::lazy_adam_rows, m)?)?;
    m.add_function(wrap_pyfunction!(kernels::mlp_bce_step, m)?)?;
    m.add_class::<scoring::PyScoringLayers>()?;
    m.add_function(wrap_pyfunction!(kernels::bfloat16_native, m)?)?;
    m.add_function(wrap_pyfunction!(kernels::bfloat16_faster, m)?)?;
    m.add_function(wrap_pyfunction!(kernels::user_share_rows, m)?)?;
    m.add_function(wrap_pyfunction!(kernels::linear_layer, m)?)?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    Ok(())
}
