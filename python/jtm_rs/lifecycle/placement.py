"""Where new items go in a fitted tree, and what the model's node table does about it.

Node ids are heap-ordered (``children(n) = b·n+1 … b·n+b``), so a node keeps its id whatever
the depth of the tree, and the leaves under a node at level ``l`` are one contiguous range of
the leaf level. Hence:

* :func:`free_leaves`: the leaf-level nodes that hold no item;
* :func:`deepen`: one more level, each item moved to the first child of its old leaf — every
  old node keeps its id, so the model's rows for them stay valid, and each old leaf gains
  ``b - 1`` free leaves beside its item;
* :func:`cooccurring_leaves`: for each new item, the leaf of the known item it follows or
  precedes most often in users' sequences (its neighbourhood; ``-1`` where it has none);
* :func:`category_leaves`: for a new item without one (cold), the leaf of the known item of
  its category with the most behaviours, where the data has categories;
* :func:`place_near`: each new item on the free leaf nearest its neighbourhood — the first
  free leaf under the lowest ancestor of the neighbour's leaf that has one — or, without a
  neighbourhood, spread over the tree's free leaves;
* :func:`grow_node_table`: the model's node embeddings for a tree with more nodes (a node
  below the old leaf level starts as its ancestor there), each new item's leaf the mean of its
  parent's other children that hold items (else the parent's row).
"""

from __future__ import annotations

from typing import Dict, Optional

import numpy as np
import torch
from torch import nn

from .._core import Tree
from ..tree_policy import new_model
from .node_table import node_table


def level_range(tree: Tree, level: int) -> tuple:
    """``[first, end)``: the node ids of ``level``."""
    b = tree.arity
    first = (b**level - 1) // (b - 1)
    return first, first + b**level


def free_leaves(tree: Tree) -> np.ndarray:
    """Sorted leaf-level node ids that hold no item."""
    first, end = level_range(tree, tree.leaf_level)
    taken = np.zeros(end - first, bool)
    taken[tree.leaves(tree.items) - first] = True
    return np.flatnonzero(~taken) + first


def deepen(tree: Tree) -> Tree:
    """The same tree one level deeper: each item on the first child of its old leaf."""
    b = tree.arity
    return Tree.from_leaves(tree.items, b * tree.leaves(tree.items) + 1, arity=b, leaf_level=tree.leaf_level + 1)


def most_frequent_partner(keys: np.ndarray, partners: np.ndarray) -> tuple:
    """``(distinct keys, sorted; for each, the partner it appears with most often)`` over the
    pairs ``(keys[i], partners[i])``; ties go to the smallest partner."""
    pairs, counts = np.unique(np.stack([keys, partners], 1), axis=0, return_counts=True)
    pairs = pairs[np.lexsort((pairs[:, 1], -counts, pairs[:, 0]))]
    first = np.ones(len(pairs), bool)
    first[1:] = pairs[1:, 0] != pairs[:-1, 0]
    return pairs[first, 0], pairs[first, 1]


def cooccurring_leaves(tree: Tree, user: np.ndarray, item: np.ndarray, new_items: np.ndarray) -> np.ndarray:
    """Per new item, the leaf of the known item adjacent to it most often in the users'
    time-ordered rows (``user`` sorted, ``item`` internal ids); ``-1`` where none is adjacent."""
    same = user[1:] == user[:-1]
    a = np.concatenate([item[:-1][same], item[1:][same]])  # each adjacent pair, both ways
    b = np.concatenate([item[1:][same], item[:-1][same]])
    keep = np.isin(a, new_items) & tree.contains(b)
    a, b = a[keep], b[keep]
    out = np.full(len(new_items), -1, np.int64)
    if not len(a):
        return out
    keys, best = most_frequent_partner(a, b)
    out[np.searchsorted(new_items, keys)] = tree.leaves(best)
    return out


def category_leaves(tree: Tree, item: np.ndarray, category: np.ndarray, items: np.ndarray) -> np.ndarray:
    """Per item of ``items``, the leaf of the known item of its category (by the rows
    ``item``, ``category`` of one data set, whose category ids agree) with the most rows;
    ``-1`` where the item has no category row or its category no known item."""
    out = np.full(len(items), -1, np.int64)
    known = tree.contains(item)
    if not known.any():
        return out
    cats, best = most_frequent_partner(category[known], item[known])
    # Each item's category: that of its first row.
    own, at = np.unique(item, return_index=True)
    pos = np.searchsorted(own, items)
    has = (pos < len(own)) & (own[np.minimum(pos, len(own) - 1)] == items)
    cat = category[at[np.minimum(pos, len(own) - 1)]]
    k = np.searchsorted(cats, cat)
    hit = has & (k < len(cats)) & (cats[np.minimum(k, len(cats) - 1)] == cat)
    out[hit] = tree.leaves(best[k[hit]])
    return out


def place_near(tree: Tree, new_items: np.ndarray, near: np.ndarray, free: np.ndarray, seed: int = 0) -> np.ndarray:
    """A free leaf for each new item: the first still free under the lowest ancestor of its
    ``near`` leaf that has one; items with ``near == -1`` get leaves spread evenly over what is
    left. ``free`` (sorted) must hold at least ``len(new_items)`` leaves."""
    if len(free) < len(new_items):
        raise ValueError(f"{len(free)} free leaves for {len(new_items)} new items")
    b, leaf_level = tree.arity, tree.leaf_level
    available = np.ones(len(free), bool)
    chosen = np.full(len(new_items), -1, np.int64)
    for k in np.flatnonzero(near >= 0):
        node, level = int(near[k]), leaf_level
        while True:
            # The leaves under ``node`` (at ``level``) are one range of the leaf level.
            span = b ** (leaf_level - level)
            lo = node * span + (span - 1) // (b - 1)
            at = np.searchsorted(free, lo)
            end = np.searchsorted(free, lo + span)
            hit = at + np.flatnonzero(available[at:end])[:1]
            if len(hit):
                available[hit[0]] = False
                chosen[k] = free[hit[0]]
                break
            node, level = (node - 1) // b, level - 1
    cold = np.flatnonzero(near < 0)
    if len(cold):
        left = np.flatnonzero(available)
        rng = np.random.default_rng(seed)
        pick = np.sort(rng.choice(len(left), len(cold), replace=False))
        chosen[cold] = free[left[pick]]
    return chosen


def grow_node_table(model: nn.Module, factory, tree: Tree, config, device: torch.device,
                    new_leaves: np.ndarray, like: Optional[np.ndarray] = None) -> nn.Module:
    """The model for ``tree`` (which may have more nodes than the model embeds): every
    parameter copied; node-table rows of nodes the model already had kept, the rows of
    ``new_leaves`` set from their neighbourhood: the row of leaf ``like[i]`` (the known item
    a new item co-occurs with) where it is given and ``>= 0``, else the mean of its parent's
    other children that hold items. ``factory(tree, config)`` makes the model."""
    old_n = getattr(model, "n_nodes", None)
    grown = new_model(factory, tree, config, device, seed=config.seed) if old_n is not None and old_n < tree.n_nodes else model
    if grown is not model:
        state: Dict[str, torch.Tensor] = grown.state_dict()
        for key, value in model.state_dict().items():
            if value.shape == state[key].shape:
                state[key] = value
            elif value.dim() >= 1 and value.shape[0] == old_n + 1 and state[key].shape[0] == tree.n_nodes + 1:
                # Nodes below the old leaf level start as their ancestor there (a moved item's
                # new leaf as its old leaf); the padding row stays last.
                above = np.arange(old_n, tree.n_nodes)
                while (above >= old_n).any():
                    above = np.where(above >= old_n, (above - 1) // tree.arity, above)
                state[key] = torch.cat([value[:old_n], value[torch.from_numpy(above)], value[old_n:]])
        grown.load_state_dict(state)
    table = node_table(grown, tree.n_nodes)
    if table is not None and len(new_leaves):
        _neighbourhood_rows(table, tree, new_leaves)
        if like is not None and (like >= 0).any():
            with torch.no_grad():  # a new item starts as the known item next to it in users' sequences
                table[torch.from_numpy(new_leaves[like >= 0])] = table[torch.from_numpy(like[like >= 0])]
    return grown


@torch.no_grad()
def _neighbourhood_rows(table: torch.Tensor, tree: Tree, new_leaves: np.ndarray) -> None:
    b = tree.arity
    live = np.zeros(tree.n_nodes, bool)
    old = np.setdiff1d(tree.leaves(tree.items), new_leaves)
    live[old] = True
    parents = (new_leaves - 1) // b
    for leaf, parent in zip(new_leaves.tolist(), parents.tolist()):
        siblings = np.arange(b * parent + 1, b * parent + b + 1)
        siblings = siblings[live[siblings]]
        table[leaf] = table[torch.from_numpy(siblings)].mean(0) if len(siblings) else table[parent]
