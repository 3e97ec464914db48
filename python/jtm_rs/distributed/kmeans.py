"""The balanced k-means tree (the initial tree, and TDM's re-clustering) over ranks. A node's
split depends only on its items and its seed, so the subtrees below the first level with at
least ``world`` nodes are dealt out, node ``j`` to rank ``j % world``; every rank splits the
levels above, orders its subtrees' items, and the ranks' orders are put together: every rank
gets the one-process tree."""

from __future__ import annotations

from typing import Optional

import numpy as np

from .._core import Tree
from .ranks import Ranks


def kmeans_tree(items: np.ndarray, embeddings: np.ndarray, ranks: Ranks, *, arity: int = 2,
                leaf_level: Optional[int] = None, seed: int = 0, n_threads: Optional[int] = None) -> Tree:
    """:meth:`Tree.from_embeddings` with the recursion split over ``ranks`` (every rank calls
    it with the same arguments)."""
    order, owner, level = Tree.kmeans_leaf_order(items, embeddings, arity=arity, leaf_level=leaf_level, seed=seed,
                                                 part=ranks.rank, parts=ranks.world, n_threads=n_threads)
    return Tree.from_order(ranks.gather_owned(order, owner), arity=arity, leaf_level=level)


__all__ = ["kmeans_tree"]
