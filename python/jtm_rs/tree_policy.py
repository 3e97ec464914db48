"""Where trees come from and what the model does when the tree changes.

* the **initial tree**: by item category (the paper), balanced k-means over item
  co-occurrence embeddings (TDM's) or random (:func:`initial_tree`);
* **tree learning** between trainings: paper Algorithm 2 with weights from the model
  (:func:`learn_tree_from_model`) or TDM's re-clustering of the learned leaf embeddings
  (:func:`cluster_tree`);
* **the model on a tree change** (:func:`on_tree_change`): node ids keep their positions but
  not their items, so what the node embeddings learned no longer applies where it is.
  ``"keep"`` (the default after Algorithm 2) is the paper's alternation: the model goes on
  unchanged, as tree learning assumed when it placed items under the nodes whose (old)
  embeddings suit their users. ``"carry"`` (the default after clustering) keeps the MLP and
  moves the node embeddings with their items (:func:`carry_node_embeddings`);
  ``"warm"`` keeps the MLP and re-initialises the node embeddings; ``"fresh"`` starts a new
  model. docs/ablations.md reports them, measured.
"""

from __future__ import annotations

import time
import warnings
from typing import Callable, Optional, Sequence, Tuple

import numpy as np
import torch
from torch import nn

from ._core import Tree, bfloat16_faster
from .config import JTMConfig
from .cooccurrence import cooccurrence_embeddings
from .data import Interactions
from .distributed import Ranks, kmeans_tree, sharded_weights_fn
from .exceptions import InvalidInputError
from .features import BehaviourLeaves
from .geometry import TreeGeometry
from .model import JTMModel
from .sequence_model import SequenceNodeModel
from .progress import say
from .threads import training_tuner
from .training import make_optimizer
from .tree_learning import learn_tree
from .tree_weights import model_weights_fn, pinned_weights_fn

ModelFactory = Callable[[Tree, JTMConfig], nn.Module]


def default_model_factory(tree: Tree, config: JTMConfig) -> nn.Module:
    if config.model == "sequence":
        return SequenceNodeModel(tree.n_nodes, config.sequence_dim, config.sequence_blocks,
                                 max_length=min(50, config.max_behaviours), dropout=config.sequence_dropout)
    return JTMModel(tree.n_nodes, config.embedding_dim, config.hidden, attention=config.attention)


def new_model(factory: ModelFactory, tree: Tree, config: JTMConfig, device: torch.device, seed: int) -> nn.Module:
    """A model for ``tree`` from ``factory``, seeded, on ``device``."""
    torch.manual_seed(seed)
    model = factory(tree, config).to(device)
    check_model_fits(model, tree)
    return model


def check_model_fits(model: nn.Module, tree: Tree) -> None:
    n = getattr(model, "n_nodes", None)
    if n is not None and n < tree.n_nodes:
        raise InvalidInputError(f"the model embeds {n} nodes but the tree has {tree.n_nodes}")


def initial_tree(parts: Sequence[Interactions], config: JTMConfig, n_threads: Optional[int] = None,
                 show_progress: bool = False, ranks: Optional[Ranks] = None) -> Tree:
    """The tree the joint loop starts from, over every item of ``parts`` (``parts[0]`` are
    the training behaviours: the co-occurrence embeddings come from them alone). With
    ``ranks`` the co-occurrence counting, the SVD's products and the k-means' subtrees are
    split over them; every rank builds the one-process tree."""
    items = np.unique(np.concatenate([p.items for p in parts]))
    if len(items) == 0:
        raise InvalidInputError("empty dataset: no items to build a tree over")
    has_categories = all(p.category is not None for p in parts)
    kind = config.initial_tree
    if kind == "auto":
        kind = "category" if has_categories else "kmeans"
    if kind in ("kmeans", "sasrec"):
        t0 = time.perf_counter()
        if kind == "sasrec":
            if ranks is not None and ranks.world > 1:
                raise InvalidInputError("initial_tree='sasrec' runs in one process; use 'kmeans' over ranks")
            from .two_tower import sasrec_item_vectors

            emb = sasrec_item_vectors(parts, items, seed=config.seed, n_threads=n_threads, show_progress=show_progress)
        else:
            emb = cooccurrence_embeddings(parts[0], items, dim=config.embedding_dim, seed=config.seed, ranks=ranks)
        tree = balanced_kmeans_tree(items, emb, arity=config.arity, leaf_level=None, seed=config.seed,
                                    n_threads=n_threads, ranks=ranks)
        if show_progress:
            source = "SASRec's item" if kind == "sasrec" else "co-occurrence"
            say(f"initial tree: balanced k-means over {source} embeddings of {len(items)} items "
                f"in {time.perf_counter() - t0:.1f} s")
        return tree
    if kind == "category":
        if has_categories:
            cats = [p.item_categories() for p in parts if len(p)]
            it = np.concatenate([c["items"] for c in cats])
            ct = np.concatenate([c["categories"] for c in cats])
            it, first = np.unique(it, return_index=True)
            return Tree.from_categories(it, ct[first], arity=config.arity, seed=config.seed)
        warnings.warn("the data has no category column: starting from a random tree", stacklevel=4)
    return Tree.random(items, arity=config.arity, seed=config.seed)


def resolve_precision(setting: str, device: torch.device) -> str:
    """``"auto"`` made concrete: bfloat16 only where the device computes it natively (emulated
    bfloat16 is slower than float32)."""
    if setting != "auto":
        return setting
    if device.type == "cuda":
        return "bfloat16" if torch.cuda.is_bf16_supported() else "float32"
    if device.type == "cpu":
        # The Rust scoring pass's kernels (AMX, AVX-512 BF16), which score the default model:
        # bfloat16 where it beats float32 (not on Intel's CPUs without AMX).
        return "bfloat16" if bfloat16_faster() else "float32"
    return "float32"


#: Nats of stay bonus that hold a pinned item in its subtree (``hold="subtree"``): far above
#: any eq. 2 weight, finite.
PINNED_BONUS = 1e12


def learn_tree_from_model(model: nn.Module, tree: Tree, leaves: BehaviourLeaves, config: JTMConfig, *, d: int,
                          seed: int, n_threads: Optional[int], show_progress: bool,
                          ranks: Optional[Ranks] = None, pinned: Optional[np.ndarray] = None,
                          hold: str = "leaf") -> Tree:
    """Paper Algorithm 2 with ``model`` fixed, from the training examples behind ``leaves``.
    With ``ranks`` (every rank calling it alike), the model scoring is split over the ranks and
    every rank returns the same tree (:func:`jtm_rs.distributed.sharded_weights_fn`).
    ``pinned`` (one flag per item of ``tree.items``): items held so that only the others (an
    update's new items) move out of place. ``hold="leaf"``: at their leaves, by a weight far
    above any other (:func:`~jtm_rs.tree_weights.pinned_weights_fn`), and only the others are
    scored; ``hold="subtree"``: in their subtrees at the top of the last segment (a stay bonus
    far above any weight in every segment but the last), every item scored, so that pinned
    items are re-sorted within those subtrees beside the new ones."""
    tuner = training_tuner(n_threads, leaves.device.type)  # the scoring's threads, as training's
    weights = model_weights_fn(
        model,
        tree,
        leaves,
        hierarchical=config.hierarchical,
        max_samples_per_item=config.max_samples_per_item,
        seed=seed,
        stay_bonus=config.stay_bonus,
        precision=resolve_precision(config.weights_precision, leaves.device),
        threads=tuner,
        # Items held at their leaves cannot move: scoring them would only cost time.
        only=None if pinned is None or hold != "leaf" else tree.items[~pinned],
    )
    if ranks is not None:
        weights = sharded_weights_fn(weights, ranks)
        show_progress = show_progress and ranks.is_leader
    bonus = weights.stay_bonus
    if pinned is not None and hold == "leaf":
        weights = pinned_weights_fn(weights, tree, pinned)
    elif pinned is not None:
        bonus = np.where(pinned, PINNED_BONUS, 0.0 if bonus is None else bonus)
    try:
        return learn_tree(weights, d, tree=tree, stay_bonus=bonus, n_threads=n_threads, show_progress=show_progress)
    finally:
        if tuner is not None:
            tuner.finish()


def balanced_kmeans_tree(items: np.ndarray, emb: np.ndarray, *, arity: int, leaf_level: Optional[int], seed: int,
                         n_threads: Optional[int], ranks: Optional[Ranks]) -> Tree:
    """The balanced k-means tree over ``emb`` (row i for ``items[i]``), in one process or with
    its subtrees split over ``ranks`` (the same tree)."""
    if ranks is None or ranks.world == 1:
        return Tree.from_embeddings(items, emb, arity=arity, leaf_level=leaf_level, seed=seed, n_threads=n_threads)
    return kmeans_tree(items, emb, ranks, arity=arity, leaf_level=leaf_level, seed=seed, n_threads=n_threads)


def cluster_tree(model: nn.Module, tree: Tree, seed: int, n_threads: Optional[int],
                 ranks: Optional[Ranks] = None) -> Tree:
    """TDM's tree learning: balanced k-means over the model's current leaf embeddings."""
    emb = getattr(model, "embedding", None)
    if emb is None:
        raise InvalidInputError("tree_learning='clustering' needs a model with an `embedding` table")
    items = tree.items
    vecs = emb.weight.detach()[torch.from_numpy(tree.leaves(items)).to(emb.weight.device)].float().cpu().numpy()
    return balanced_kmeans_tree(items, vecs, arity=tree.arity, leaf_level=tree.leaf_level, seed=seed,
                                n_threads=n_threads, ranks=ranks)


def on_tree_change(model: nn.Module, optimizer, old_tree: Tree, new_tree: Tree, config: JTMConfig,
                   factory: ModelFactory, device: torch.device, iteration: int) -> Tuple[nn.Module, object]:
    """The model and optimiser to go on with after the tree changed (``config.on_tree_change``)."""
    mode = config.on_tree_change
    if mode == "auto":
        mode = "carry" if config.tree_learning == "clustering" else "keep"
    if mode == "keep":
        return model, optimizer  # θ goes on as it is (and so do Adam's moments): the paper's alternation
    table = getattr(getattr(model, "embedding", None), "weight", None)
    if mode == "carry" and isinstance(table, torch.Tensor):
        carry_node_embeddings(table.data, old_tree, new_tree)
    elif mode == "fresh" or not hasattr(model, "reset_embeddings"):
        model = new_model(factory, new_tree, config, device, seed=config.seed + iteration)
    else:
        torch.manual_seed(config.seed + iteration)
        model.reset_embeddings()
    # The optimiser's moments belong to the old placement.
    return model, make_optimizer(model, config.learning_rate)


@torch.no_grad()
def carry_node_embeddings(table: torch.Tensor, old: Tree, new: Tree) -> None:
    """Moves what a node-embedding table learned under ``old`` to the numbering of ``new``, in
    place: each leaf row follows its item, and each internal node of ``new`` at level ``l``
    becomes the mean of the level-``l`` rows (under ``old``) of the items now below it — the
    rows those items' behaviours and paths used at that level. Nodes with no item and the root
    keep their rows. Rows past ``new``'s nodes (e.g. padding) are untouched."""
    if (old.arity, old.leaf_level) != (new.arity, new.leaf_level):
        raise ValueError("the trees differ in arity or depth: node embeddings cannot be carried over")
    device = table.device
    geometry = TreeGeometry.of(new, device)
    items = new.items
    old_leaf = torch.from_numpy(old.leaves(items)).to(device)
    new_leaf = torch.from_numpy(new.leaves(items)).to(device)
    before = table[: new.n_nodes].clone()
    for level in range(1, new.leaf_level + 1):
        src = geometry.ancestors(old_leaf, level)
        dst = geometry.ancestors(new_leaf, level)
        sums = torch.zeros_like(before).index_add_(0, dst, before[src])
        counts = torch.zeros(len(before), device=device, dtype=before.dtype).index_add_(
            0, dst, torch.ones(len(dst), device=device, dtype=before.dtype)
        )
        hit = torch.unique(dst)
        table[hit] = sums[hit] / counts[hit, None]
