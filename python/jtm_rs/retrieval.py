"""Retrieval by layer-wise beam search (the driver is in ``rust/beam_search.rs``)."""

from __future__ import annotations

from typing import Callable, Optional, Tuple

import numpy as np

from ._arrays import to_numpy
from ._core import Tree

ScoreFn = Callable[[np.ndarray, np.ndarray, int], "np.ndarray"]


def beam_search(
    tree: Tree,
    score_fn: ScoreFn,
    n_users: int,
    k: int,
    m: Optional[int] = None,
    *,
    batch_size: Optional[int] = None,
    n_threads: Optional[int] = None,
) -> Tuple[np.ndarray, np.ndarray]:
    """Top-``m`` items for each of ``n_users`` users, faiss style: ``(items, scores)``.

    Parameters
    ----------
    tree
        The index.
    score_fn
        ``score_fn(user_rows: int64[p], nodes: int64[p], level: int) -> float[p]``: one score
        per (user row, node) pair, higher is better. Called once per level per batch with
        every pair of that level; ``user_rows`` index ``0..n_users``. May return a torch tensor
        (CPU or CUDA); numpy float32 is used without a copy.
    n_users
        Number of users; rows ``0..n_users`` of whatever the scorer closes over.
    k
        Beam width per level.
    m
        Items returned per user (``m <= k``; default ``k``).
    batch_size
        Users per search (bounds the pairs per call to about ``batch_size * k * arity``);
        default: all at once.
    n_threads
        Threads for the top-k selection (default: rayon's global pool).

    Returns
    -------
    items : int64[n_users, m]
        Item ids, best first.
    scores : float32[n_users, m]
        Their leaf scores.
    """
    m = k if m is None else m
    if batch_size is None or batch_size >= n_users:
        return tree.beam_search(_numpy_scores(score_fn, 0), n_users, k, m, n_threads)
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    items, scores = [], []
    for lo in range(0, n_users, batch_size):
        n = min(batch_size, n_users - lo)
        i, s = tree.beam_search(_numpy_scores(score_fn, lo), n, k, m, n_threads)
        items.append(i)
        scores.append(s)
    return np.concatenate(items), np.concatenate(scores)


def _numpy_scores(score_fn: ScoreFn, offset: int) -> ScoreFn:
    def score(user_rows: np.ndarray, nodes: np.ndarray, level: int):
        rows = user_rows + offset if offset else user_rows
        return to_numpy(score_fn(rows, nodes, level))

    return score
