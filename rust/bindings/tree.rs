//! `jtm_rs.Tree`: a frozen Python object over the Rust [`Tree`]. Frozen means immutable and
//! shareable between Python threads without locks; learning returns a new tree.

use super::convert::{callback_floats, float_matrix, int_array, int_vec, Count, Floats, Int, Seed};
use crate::beam_search::BeamSearch;
use crate::error::JtmError;
use crate::tree::{level_of_node, Tree};
use crate::{kmeans_tree, parallel, persistence, samples};
use numpy::{IntoPyArray, PyArray1, PyArray2, PyArrayDyn, PyArrayMethods, PyUntypedArrayMethods};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyTuple, PyType};
use rayon::prelude::*;
use std::path::PathBuf;

/// `(example_index, node, level, label)`.
type SampleArrays<'py> = (
    Bound<'py, PyArray1<i64>>,
    Bound<'py, PyArray1<i64>>,
    Bound<'py, PyArray1<i64>>,
    Bound<'py, PyArray1<f32>>,
);
/// `(items in leaf order, owner per position, leaf_level)`.
type LeafOrderArrays<'py> = (Bound<'py, PyArray1<i64>>, Bound<'py, PyArray1<u32>>, u32);
/// `(items, scores)`, each `n_users × m`.
type SearchResult<'py> = (Bound<'py, PyArray2<i64>>, Bound<'py, PyArray2<f32>>);

#[pyclass(name = "Tree", module = "jtm_rs._core", frozen, eq)]
#[derive(PartialEq)]
pub struct PyTree {
    pub inner: Tree,
}

fn level_arg(tree: &Tree, level: Int) -> PyResult<u32> {
    let level = level.0;
    if level < 0 || level > tree.leaf_level() as i64 {
        return Err(JtmError::InvalidArgument(format!(
            "level {level} is out of range: this tree has levels 0..={}",
            tree.leaf_level()
        ))
        .into());
    }
    Ok(level as u32)
}

fn arity_arg(arity: Int) -> PyResult<u64> {
    let arity = arity.0;
    if arity < 2 {
        return Err(
            JtmError::InvalidArgument(format!("arity must be at least 2, got {arity}")).into(),
        );
    }
    Ok(arity as u64)
}

fn opt_level(leaf_level: Option<Int>) -> PyResult<Option<u32>> {
    match leaf_level.map(|l| l.0) {
        Some(l) if !(1..=64).contains(&l) => {
            Err(JtmError::InvalidArgument(format!("leaf_level must be in 1..=64, got {l}")).into())
        }
        l => Ok(l.map(|l| l as u32)),
    }
}

/// Maps each id of an int64 array (any shape) through `f`, keeping the shape. Large arrays
/// (the leaves of every behaviour: 10^8 at the paper's scale) are mapped on rayon's pool with
/// the GIL released; small ones (one user's call) here.
fn map_ids<'py, T: numpy::Element + Send>(
    py: Python<'py>,
    tree: &Tree,
    ids: &Bound<'py, PyAny>,
    what: &str,
    f: impl Fn(&Tree, i64) -> Result<T, JtmError> + Sync,
) -> PyResult<Bound<'py, PyArrayDyn<T>>> {
    let a = int_array(ids, what)?;
    let slice = a.as_slice()?;
    let out: Vec<T> = if slice.len() < PARALLEL_IDS {
        slice
            .iter()
            .map(|&x| f(tree, x))
            .collect::<Result<_, _>>()?
    } else {
        py.detach(|| {
            parallel::run(None, || {
                slice
                    .par_iter()
                    .map(|&x| f(tree, x))
                    .collect::<Result<_, _>>()
            })
        })?
    };
    PyArray1::from_vec(py, out).reshape(a.shape())
}

/// Ids from which [`map_ids`] maps in parallel.
const PARALLEL_IDS: usize = 1 << 16;

/// Checks the arguments `from_embeddings` and `kmeans_leaf_order` share, then runs `f` over
/// them on the rayon pool with the GIL released.
#[allow(clippy::too_many_arguments)]
fn run_kmeans<T: Send>(
    py: Python<'_>,
    items: &Bound<'_, PyAny>,
    embeddings: &Bound<'_, PyAny>,
    arity: Int,
    leaf_level: Option<Int>,
    iterations: Count,
    seed: Seed,
    n_threads: Option<Count>,
    f: impl FnOnce(&[i64], &[f32], usize, &kmeans_tree::KMeansOptions) -> crate::error::Result<T> + Send,
) -> PyResult<T> {
    // Lloyd's iterations run without checking for Ctrl-C: bound them.
    if iterations.0 > 1000 {
        return Err(JtmError::InvalidArgument(format!(
            "iterations must be at most 1000, got {}",
            iterations.0
        ))
        .into());
    }
    let items = int_vec(items, "items")?;
    let emb = float_matrix(embeddings, "embeddings")?;
    let (rows, dim) = (emb.shape()[0], emb.shape()[1]);
    if rows != items.len() {
        return Err(JtmError::InvalidArgument(format!(
            "embeddings have {rows} rows for {} items",
            items.len()
        ))
        .into());
    }
    let opts = kmeans_tree::KMeansOptions {
        arity: arity_arg(arity)?,
        leaf_level: opt_level(leaf_level)?,
        iterations: iterations.0 as u32,
        seed: seed.0,
    };
    let data = emb.as_slice()?;
    Ok(py.detach(|| parallel::run(n_threads.map(|c| c.0), || f(&items, data, dim, &opts)))?)
}

impl PyTree {
    fn node(&self, n: i64) -> Result<u64, JtmError> {
        self.inner.check_node(n)
    }
}

#[pymethods]
impl PyTree {
    /// The paper's initial tree: items sorted by (category, seeded random tie-break), split
    /// recursively into `arity` near-equal parts.
    #[staticmethod]
    #[pyo3(signature = (items, categories, arity=Int(2), leaf_level=None, seed=Seed(0)))]
    fn from_categories(
        items: &Bound<'_, PyAny>,
        categories: &Bound<'_, PyAny>,
        arity: Int,
        leaf_level: Option<Int>,
        seed: Seed,
    ) -> PyResult<Self> {
        let seed = seed.0;
        let (items, cats) = (int_vec(items, "items")?, int_vec(categories, "categories")?);
        Ok(PyTree {
            inner: Tree::from_categories(
                &items,
                &cats,
                arity_arg(arity)?,
                opt_level(leaf_level)?,
                seed,
            )?,
        })
    }

    #[staticmethod]
    #[pyo3(signature = (items, arity=Int(2), leaf_level=None, seed=Seed(0)))]
    fn random(
        items: &Bound<'_, PyAny>,
        arity: Int,
        leaf_level: Option<Int>,
        seed: Seed,
    ) -> PyResult<Self> {
        let seed = seed.0;
        let items = int_vec(items, "items")?;
        Ok(PyTree {
            inner: Tree::random(&items, arity_arg(arity)?, opt_level(leaf_level)?, seed)?,
        })
    }

    #[staticmethod]
    #[pyo3(signature = (order, arity=Int(2), leaf_level=None))]
    fn from_order(order: &Bound<'_, PyAny>, arity: Int, leaf_level: Option<Int>) -> PyResult<Self> {
        let order = int_vec(order, "order")?;
        Ok(PyTree {
            inner: Tree::from_order(&order, arity_arg(arity)?, opt_level(leaf_level)?)?,
        })
    }

    /// TDM's initial tree: recursive balanced k-means over item embeddings
    /// (`float32[n_items, dim]`, row i for `items[i]`), deterministic per seed.
    #[staticmethod]
    #[pyo3(signature = (items, embeddings, arity=Int(2), leaf_level=None, iterations=Count(10), seed=Seed(0), n_threads=None))]
    #[allow(clippy::too_many_arguments)]
    fn from_embeddings(
        py: Python<'_>,
        items: &Bound<'_, PyAny>,
        embeddings: &Bound<'_, PyAny>,
        arity: Int,
        leaf_level: Option<Int>,
        iterations: Count,
        seed: Seed,
        n_threads: Option<Count>,
    ) -> PyResult<Self> {
        let inner = run_kmeans(
            py,
            items,
            embeddings,
            arity,
            leaf_level,
            iterations,
            seed,
            n_threads,
            |i, e, d, o| kmeans_tree::kmeans_tree(i, e, d, o),
        )?;
        Ok(PyTree { inner })
    }

    /// `from_embeddings`' leaf order, or part `part` of `parts` of it (a distributed run's
    /// share): `(items in leaf order, owner per position, leaf_level)`. Taking every position
    /// from its owner's order gives the whole order, for `from_order`.
    #[staticmethod]
    #[pyo3(signature = (items, embeddings, arity=Int(2), leaf_level=None, iterations=Count(10), seed=Seed(0), part=Count(0), parts=Count(1), n_threads=None))]
    #[allow(clippy::too_many_arguments)]
    fn kmeans_leaf_order<'py>(
        py: Python<'py>,
        items: &Bound<'py, PyAny>,
        embeddings: &Bound<'py, PyAny>,
        arity: Int,
        leaf_level: Option<Int>,
        iterations: Count,
        seed: Seed,
        part: Count,
        parts: Count,
        n_threads: Option<Count>,
    ) -> PyResult<LeafOrderArrays<'py>> {
        let share = kmeans_tree::Share {
            part: part.0,
            parts: parts.0,
        };
        let order = run_kmeans(
            py,
            items,
            embeddings,
            arity,
            leaf_level,
            iterations,
            seed,
            n_threads,
            |i, e, d, o| kmeans_tree::kmeans_leaf_order(i, e, d, o, share),
        )?;
        Ok((
            order.items.into_pyarray(py),
            order.owner.into_pyarray(py),
            order.leaf_level,
        ))
    }

    #[staticmethod]
    #[pyo3(signature = (items, leaves, arity=Int(2), leaf_level=None))]
    fn from_leaves(
        items: &Bound<'_, PyAny>,
        leaves: &Bound<'_, PyAny>,
        arity: Int,
        leaf_level: Option<Int>,
    ) -> PyResult<Self> {
        let arity = arity_arg(arity)?;
        let items = int_vec(items, "items")?;
        let leaves = int_vec(leaves, "leaves")?;
        if let Some(&bad) = leaves.iter().find(|&&l| l < 0) {
            return Err(JtmError::InvalidNode(format!("leaf {bad} is negative")).into());
        }
        // Without an explicit leaf level, the leaves' own level is the one.
        let level = match opt_level(leaf_level)? {
            Some(l) => l,
            None => level_of_node(leaves.iter().copied().max().unwrap_or(0) as u64, arity),
        };
        let leaves: Vec<u64> = leaves.iter().map(|&l| l as u64).collect();
        Ok(PyTree {
            inner: Tree::from_leaves(&items, &leaves, arity, level)?,
        })
    }

    #[getter]
    fn arity(&self) -> u64 {
        self.inner.arity()
    }
    /// L, the level of the leaves; levels are 0..=L.
    #[getter]
    fn leaf_level(&self) -> u32 {
        self.inner.leaf_level()
    }
    /// L + 1.
    #[getter]
    fn n_levels(&self) -> u32 {
        self.inner.leaf_level() + 1
    }
    #[getter]
    fn n_items(&self) -> usize {
        self.inner.n_items()
    }
    #[getter]
    fn n_nodes(&self) -> u64 {
        self.inner.n_nodes()
    }
    /// Item ids, ascending.
    #[getter]
    fn items<'py>(&self, py: Python<'py>) -> Bound<'py, PyArray1<i64>> {
        PyArray1::from_slice(py, self.inner.item_ids())
    }
    fn __len__(&self) -> usize {
        self.inner.n_items()
    }
    fn __repr__(&self) -> String {
        format!(
            "Tree(n_items={}, arity={}, leaf_level={})",
            self.inner.n_items(),
            self.inner.arity(),
            self.inner.leaf_level()
        )
    }

    fn capacity(&self, level: Int) -> PyResult<u64> {
        Ok(self.inner.capacity(level_arg(&self.inner, level)?))
    }

    /// Leaf node of each item (same shape as `items`).
    fn leaves<'py>(
        &self,
        py: Python<'py>,
        items: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyArrayDyn<i64>>> {
        map_ids(py, &self.inner, items, "items", |t, i| {
            Ok(t.leaf_of(i)? as i64)
        })
    }

    /// Item on each leaf; `default` for empty leaves.
    #[pyo3(signature = (leaves, default=Int(-1)))]
    fn items_at<'py>(
        &self,
        py: Python<'py>,
        leaves: &Bound<'py, PyAny>,
        default: Int,
    ) -> PyResult<Bound<'py, PyArrayDyn<i64>>> {
        let level = self.inner.leaf_level();
        map_ids(py, &self.inner, leaves, "leaves", |t, n| {
            let node = t.check_node(n)?;
            if t.level_of(node) != level {
                return Err(JtmError::InvalidNode(format!("node {n} is not a leaf")));
            }
            Ok(t.item_at(node).unwrap_or(default.0))
        })
    }

    /// Ancestor at `level` of each node (a node at `level` is its own ancestor).
    fn ancestors<'py>(
        &self,
        py: Python<'py>,
        nodes: &Bound<'py, PyAny>,
        level: Int,
    ) -> PyResult<Bound<'py, PyArrayDyn<i64>>> {
        let level = level_arg(&self.inner, level)?;
        map_ids(py, &self.inner, nodes, "nodes", |t, n| {
            Ok(t.ancestor(t.check_node(n)?, level)? as i64)
        })
    }

    /// Ancestor at `level` of each item's leaf.
    fn item_ancestors<'py>(
        &self,
        py: Python<'py>,
        items: &Bound<'py, PyAny>,
        level: Int,
    ) -> PyResult<Bound<'py, PyArrayDyn<i64>>> {
        let level = level_arg(&self.inner, level)?;
        map_ids(py, &self.inner, items, "items", |t, i| {
            Ok(t.ancestor(t.leaf_of(i)?, level)? as i64)
        })
    }

    /// Hierarchical user features (paper §3.3): each behaviour item id replaced by its
    /// ancestor node at `level`; entries equal to `padding` stay `padding`. Any shape.
    #[pyo3(signature = (behaviours, level, padding=Some(Int(-1))))]
    fn hierarchical_features<'py>(
        &self,
        py: Python<'py>,
        behaviours: &Bound<'py, PyAny>,
        level: Int,
        padding: Option<Int>,
    ) -> PyResult<Bound<'py, PyArrayDyn<i64>>> {
        let level = level_arg(&self.inner, level)?;
        let a = int_array(behaviours, "behaviours")?;
        let slice = a.as_slice()?;
        let tree = &self.inner;
        let out = py.detach(|| {
            parallel::run(None, || {
                tree.hierarchical_features(slice, level, padding.map(|p| p.0))
            })
        })?;
        PyArray1::from_vec(py, out).reshape(a.shape())
    }

    /// Level of each node.
    fn level_of<'py>(
        &self,
        py: Python<'py>,
        nodes: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyArrayDyn<i64>>> {
        map_ids(py, &self.inner, nodes, "nodes", |t, n| {
            Ok(t.level_of(t.check_node(n)?) as i64)
        })
    }

    /// Whether each id is an item of the tree (same shape as `items`); O(log n_items) each,
    /// so a call costs nothing in proportion to the catalogue.
    fn contains<'py>(
        &self,
        py: Python<'py>,
        items: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyArrayDyn<bool>>> {
        map_ids(py, &self.inner, items, "items", |t, i| Ok(t.contains(i)))
    }

    /// Whether each node has an item below it.
    fn is_live<'py>(
        &self,
        py: Python<'py>,
        nodes: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyArrayDyn<bool>>> {
        map_ids(py, &self.inner, nodes, "nodes", |t, n| {
            Ok(t.is_live(t.check_node(n)?))
        })
    }

    /// Live node ids of `level`, ascending.
    fn live_nodes<'py>(&self, py: Python<'py>, level: Int) -> PyResult<Bound<'py, PyArray1<i64>>> {
        let live = self.inner.live_nodes(level_arg(&self.inner, level)?)?;
        Ok(live
            .iter()
            .map(|&n| n as i64)
            .collect::<Vec<_>>()
            .into_pyarray(py))
    }

    /// Children of each node of a 1-D array: int64[n, arity] (live or not).
    fn children<'py>(
        &self,
        py: Python<'py>,
        nodes: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyArray2<i64>>> {
        let nodes = int_vec(nodes, "nodes")?;
        let total = Tree::check_output_len(nodes.len(), self.inner.arity())?;
        let mut out = Vec::new();
        out.try_reserve_exact(total).map_err(|_| {
            JtmError::InvalidArgument(format!("cannot allocate {total} node ids for children"))
        })?;
        for &n in &nodes {
            out.extend(self.inner.children(self.node(n)?)?.map(|c| c as i64));
        }
        PyArray1::from_vec(py, out).reshape([nodes.len(), self.inner.arity() as usize])
    }

    /// Descendants at `level` of each node of a 1-D array of nodes that share one level:
    /// int64[n, arity^(level − their level)], left to right.
    fn descendants<'py>(
        &self,
        py: Python<'py>,
        nodes: &Bound<'py, PyAny>,
        level: Int,
    ) -> PyResult<Bound<'py, PyArray2<i64>>> {
        let level = level_arg(&self.inner, level)?;
        let nodes = int_vec(nodes, "nodes")?;
        let mut out = Vec::new();
        let mut width = None;
        for &n in &nodes {
            let r = self.inner.descendants(self.node(n)?, level)?;
            if width.is_none() {
                let total = Tree::check_output_len(nodes.len(), r.end - r.start)?;
                out.try_reserve_exact(total).map_err(|_| {
                    JtmError::InvalidArgument(format!(
                        "cannot allocate {total} node ids for descendants"
                    ))
                })?;
            }
            if *width.get_or_insert(r.end - r.start) != r.end - r.start {
                return Err(JtmError::InvalidArgument(
                    "descendants: all nodes must sit at the same level".into(),
                )
                .into());
            }
            out.extend(r.map(|c| c as i64));
        }
        PyArray1::from_vec(py, out).reshape([nodes.len(), width.unwrap_or(0) as usize])
    }

    /// Checks every invariant; raises if one is broken.
    fn validate(&self) -> PyResult<()> {
        Ok(self.inner.validate()?)
    }

    // ------------------------------------------------------------- persistence

    fn save(&self, py: Python<'_>, path: PathBuf) -> PyResult<()> {
        let tree = &self.inner;
        Ok(py.detach(|| persistence::save(tree, &path))?)
    }

    #[classmethod]
    fn load(_cls: &Bound<'_, PyType>, py: Python<'_>, path: PathBuf) -> PyResult<Self> {
        Ok(PyTree {
            inner: py.detach(|| persistence::load(&path))?,
        })
    }

    fn to_bytes<'py>(&self, py: Python<'py>) -> Bound<'py, PyBytes> {
        PyBytes::new(py, &persistence::to_bytes(&self.inner))
    }

    #[staticmethod]
    fn from_bytes(data: &[u8]) -> PyResult<Self> {
        Ok(PyTree {
            inner: persistence::from_bytes(data)?,
        })
    }

    fn __reduce__<'py>(slf: &Bound<'py, Self>) -> PyResult<Bound<'py, PyTuple>> {
        let py = slf.py();
        let ctor = slf.get_type().getattr("from_bytes")?;
        let bytes = slf.get().to_bytes(py);
        PyTuple::new(py, [ctor, PyTuple::new(py, [bytes])?.into_any()])
    }

    // ------------------------------------------------------------- samples and search

    /// Training samples with per-level negatives (docs/design.md §4.2). Returns
    /// `(example_index, node, level, label)`. Example `e` draws from random stream
    /// `first_stream + e`: an epoch generated in chunks equals the epoch generated at once.
    #[pyo3(signature = (targets, negatives, start_level=Int(1), seed=Seed(0), n_threads=None, first_stream=Count(0)))]
    fn generate_samples<'py>(
        &self,
        py: Python<'py>,
        targets: &Bound<'py, PyAny>,
        negatives: &Bound<'py, PyAny>,
        start_level: Int,
        seed: Seed,
        n_threads: Option<Count>,
        first_stream: Count,
    ) -> PyResult<SampleArrays<'py>> {
        let seed = seed.0;
        let first_stream = first_stream.0 as u64;
        let n_threads = n_threads.map(|c| c.0);
        let start_level = level_arg(&self.inner, start_level)?;
        let targets = int_array(targets, "targets")?;
        let negatives = int_vec(negatives, "negatives")?;
        let (tree, t) = (&self.inner, targets.as_slice()?);
        let s = py.detach(|| {
            parallel::run(n_threads, || {
                samples::generate(tree, t, &negatives, start_level, seed, first_stream)
            })
        })?;
        Ok((
            s.example.into_pyarray(py),
            s.node.into_pyarray(py),
            s.level.into_pyarray(py),
            s.label.into_pyarray(py),
        ))
    }

    /// Beam search for `n_users` users (docs/design.md §4.5): `score_fn(user_rows, nodes, level)` is
    /// called once per level with every (user row, node) pair and returns one float per pair.
    /// Returns `(items int64[n_users, m], scores float32[n_users, m])`, best first.
    #[pyo3(signature = (score_fn, n_users, k, m=None, n_threads=None))]
    fn beam_search<'py>(
        &self,
        py: Python<'py>,
        score_fn: &Bound<'py, PyAny>,
        n_users: Count,
        k: Count,
        m: Option<Count>,
        n_threads: Option<Count>,
    ) -> PyResult<SearchResult<'py>> {
        let n_threads = n_threads.map(|c| c.0);
        let (n_users, k, m) = (n_users.0, k.0, m.map(|c| c.0));
        let m = m.unwrap_or(k);
        let mut search = BeamSearch::new(&self.inner, n_users, k, m)?;
        // A small search (one user) stays on this thread: see `SMALL_SEARCH_PAIRS`.
        let here = search.is_small();
        while let Some(c) =
            py.detach(|| parallel::run_sized(n_threads, here, || search.expand()))?
        {
            let n = c.nodes.len();
            let rows = c.user_rows.into_pyarray(py);
            let nodes = c.nodes.into_pyarray(py);
            // The search keeps its own copy of the pairs: what the scorer does to these is moot.
            let out = score_fn.call1((rows, nodes, c.level))?;
            match callback_floats(out, "score_fn", &[n])? {
                Floats::F32(s) => {
                    let s = s.as_slice()?;
                    py.detach(|| parallel::run_sized(n_threads, here, || search.select(s)))?
                }
                Floats::F64(s) => {
                    let s = s.as_slice()?;
                    // Beam search ranks float32: larger finite values would all become
                    // infinity and lose their order, silently.
                    if let Some(x) = s
                        .iter()
                        .find(|x| x.is_finite() && x.abs() > f32::MAX as f64)
                    {
                        return Err(JtmError::Callback(format!(
                            "score_fn returned {x:e}, beyond float32's range: beam search ranks float32 scores, so such values would tie at infinity; rescale them (e.g. logits or log-probabilities)"
                        ))
                        .into());
                    }
                    let s: Vec<f32> = s.iter().map(|&x| x as f32).collect();
                    py.detach(|| parallel::run_sized(n_threads, here, || search.select(&s)))?
                }
            }
            py.check_signals()?;
        }
        let (items, scores) = search.finish()?;
        Ok((
            PyArray1::from_vec(py, items).reshape([n_users, m])?,
            PyArray1::from_vec(py, scores).reshape([n_users, m])?,
        ))
    }
}
