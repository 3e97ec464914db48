"""Item-item co-occurrence within a window of each user's sequence, as a sparse matrix.

Shared by Item-CF (:mod:`jtm_rs.baselines.itemcf`) and by the initial k-means tree, whose item
embeddings are a truncated SVD of the cosine-normalised matrix when no model exists yet.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Optional

import numpy as np
import scipy.sparse as sp
from scipy.sparse.linalg import LinearOperator, svds

from .data import Interactions
from .exceptions import InvalidInputError

if TYPE_CHECKING:
    from .distributed.ranks import Ranks


def cooccurrence(data: Interactions, n_items: int, window: int = 10, ranks: Optional["Ranks"] = None) -> sp.csr_matrix:
    """``C[i, j]`` = how often items i and j (i != j) occur within ``window`` positions of each
    other in one user's time-ordered sequence (symmetric, float32, zero diagonal, sorted
    indices). With ``ranks``, each rank counts its share of the users (whole sequences) and
    every rank gets the sum: counts are whole numbers, so it is the one-process matrix."""
    if window < 1:
        raise InvalidInputError(f"window must be at least 1, got {window}")
    user, item = data.user, data.item
    if ranks is not None:
        mine = user % ranks.world == ranks.rank
        user, item = user[mine], item[mine]
    rows, cols = [], []
    for k in range(1, window + 1):
        same = user[k:] == user[:-k]
        a, b = item[:-k][same], item[k:][same]
        diff = a != b
        rows += [a[diff], b[diff]]
        cols += [b[diff], a[diff]]
    r = np.concatenate(rows) if rows else np.zeros(0, np.int64)
    c = np.concatenate(cols) if cols else np.zeros(0, np.int64)
    m = sp.coo_matrix((np.ones(len(r), np.float32), (r, c)), shape=(n_items, n_items)).tocsr()
    if ranks is not None:
        return ranks.sum_sparse(m)
    m.sum_duplicates()
    m.sort_indices()
    return m


def cosine_normalise(c: sp.csr_matrix, counts: np.ndarray) -> sp.csr_matrix:
    """``S[i, j] = C[i, j] / sqrt(n_i · n_j)`` with ``n_i`` the item's behaviour count."""
    inv = np.where(counts > 0, 1.0 / np.sqrt(np.maximum(counts, 1)), 0.0).astype(np.float32)
    d = sp.diags(inv)
    return (d @ c @ d).tocsr()


def item_counts(data: Interactions, n_items: int) -> np.ndarray:
    return np.bincount(data.item, minlength=n_items).astype(np.float64)


def cooccurrence_embeddings(data: Interactions, items: np.ndarray, dim: int = 24, window: int = 10, seed: int = 0,
                            ranks: Optional["Ranks"] = None) -> np.ndarray:
    """``float32[len(items), dim]``: item embeddings from a truncated SVD of the cosine
    co-occurrence matrix (rows scaled by sqrt of the singular values). Items the data never
    shows get zero rows. With ``ranks`` the counting and the SVD's matrix products are split
    over them (:func:`cooccurrence`, :func:`split_products`): every rank gets the one-process
    embeddings.

    The matrix has one row per distinct item of ``items`` and ``data``, not one per id up to
    the largest: ids spread over a wide range would otherwise size the SVD by that range
    (docs/scale.md)."""
    universe = np.union1d(np.asarray(items), data.item)
    compact = dataclasses.replace(data, item=np.searchsorted(universe, data.item), item_ids=None)
    n = len(universe)
    s = cosine_normalise(cooccurrence(compact, n, window, ranks), item_counts(compact, n))
    k = min(dim, n - 2) if n > 2 else 0
    if k < 1 or s.nnz == 0:
        return np.zeros((len(items), dim), np.float32)
    rng = np.random.default_rng(seed)
    s = s.astype(np.float64)
    op = s if ranks is None or ranks.world == 1 else split_products(s, ranks)
    u, sv, _ = svds(op, k=k, v0=rng.standard_normal(n))
    emb = (u * np.sqrt(np.maximum(sv, 0))).astype(np.float32)
    if k < dim:
        emb = np.pad(emb, ((0, 0), (0, dim - k)))
    return emb[np.searchsorted(universe, items)]


def split_products(s: sp.csr_matrix, ranks: "Ranks") -> LinearOperator:
    """``s`` as an operator whose products (``s @ x``, ``s.T @ x``) are split by rows over the
    ranks: each rank multiplies its rows (:meth:`Ranks.mine`) and all gather. A row's product
    is the same arithmetic in the slice as in the whole matrix, so every rank gets the
    one-process vector bit for bit and runs the one-process ARPACK iteration."""
    n = s.shape[0]
    mine = ranks.mine(n)
    part, part_t = s[mine], s.T.tocsr()[mine]
    return LinearOperator(s.shape, dtype=s.dtype, matvec=lambda x: ranks.gather_rows(part @ x, n),
                          rmatvec=lambda x: ranks.gather_rows(part_t @ x, n))
