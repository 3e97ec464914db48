//! jtm_rs: the Rust core of JTM ("Joint Optimization of Tree-based Index and Deep Model for
//! Recommender Systems", Zhu et al., NeurIPS 2019).
//!
//! Plain Rust, usable and testable without Python:
//! - [`tree`]: the tree index and its initial constructions (docs/design.md §2, §4.1);
//! - [`samples`]: training samples with per-level negatives (§4.2);
//! - [`kmeans_tree`]: the initial tree by recursive balanced k-means over embeddings (§4.1);
//! - [`tree_learning`]: paper Algorithm 2, segmented greedy assignment with rebalance (§4.4);
//! - [`item_samples`]: its training examples per item, a capped random subset of each;
//! - [`beam_search`]: layer-wise retrieval (§4.5);
//! - [`persistence`]: the tree file format;
//! - [`training_kernels`]: the training step's memory-bound CPU kernel (lazy Adam's row update);
//! - [`fused_mlp`]: the training step's MLP and BCE loss, forward and backward in one pass;
//! - [`window_bags`]: that pass's user rows from the behaviours' time-window means;
//! - [`batch_bags`]: a training batch's embedding rows and window bags from its behaviour leaves;
//! - [`mlp_scores`]: the same MLP forward only, scoring pairs for beam search and tree learning;
//! - [`dense_kernels`]: its layers' multiplies, AVX-512 float32 and bfloat16 where the CPU has them;
//! - [`user_shares`]: the first layer's user share from the behaviours (and their ancestors).
//!
//! The PyO3 layer (`bindings`, feature `python`) only converts arguments, releases the GIL
//! around parallel steps and maps [`error::JtmError`] to Python exceptions.

pub mod batch_bags;
pub mod beam_search;
pub mod dense_kernels;
pub mod error;
pub mod fused_mlp;
pub mod item_samples;
pub mod kmeans_tree;
pub mod mlp_scores;
pub mod parallel;
pub mod persistence;
pub mod rng;
pub mod samples;
pub mod thread_affinity;
pub mod training_kernels;
pub mod tree;
pub mod tree_learning;
pub mod user_shares;
pub mod window_bags;

#[cfg(feature = "python")]
mod bindings;

pub use error::{JtmError, Result};
pub use tree::Tree;
