"""Nearest-neighbour search over item vectors by inner product, for two-tower models: what a
user of vector retrieval runs instead of a tree. Both indexes answer faiss's way,
``search(queries, k) -> (D, I)``: scores ``float32[n, k]`` and item ids ``int64[n, k]``, best
first.

* :class:`ExactIndex` scores every item: a blocked matrix product (queries × a block of items,
  top-k of the block merged into the running top-k), so memory stays ``O(batch · block)`` at
  any catalogue size;
* :class:`HNSWIndex` is faiss's ``IndexHNSWFlat`` under the inner-product metric (the optional
  dependency ``faiss-cpu``): approximate, sublinear per query.
"""

from __future__ import annotations

from typing import Dict, Optional, Tuple

import numpy as np
import torch

from ..exceptions import InvalidInputError

#: Names :func:`make_index` takes.
INDEXES = ("exact", "hnsw")


def _as_matrix(x, name: str) -> np.ndarray:
    x = np.ascontiguousarray(np.asarray(x, dtype=np.float32))
    if x.ndim != 2:
        raise InvalidInputError(f"{name} must be a 2-d array [n, dim], got shape {x.shape}")
    if not np.all(np.isfinite(x)):
        raise InvalidInputError(f"{name} holds NaN or infinity")
    return x


def _check_queries(queries, dim: int, k: int) -> np.ndarray:
    q = _as_matrix(queries, "queries")
    if q.shape[1] != dim:
        raise InvalidInputError(f"queries have {q.shape[1]} dimensions, the index {dim}")
    if k < 1:
        raise InvalidInputError("k must be at least 1")
    return q


class ExactIndex:
    """Every item scored: ``queries @ items.T`` in blocks, the exact top-k."""

    kind = "exact"

    def __init__(self, items, *, query_batch: int = 256, item_block: int = 65536):
        self.items = torch.from_numpy(_as_matrix(items, "items"))
        self.query_batch, self.item_block = query_batch, item_block

    @property
    def ntotal(self) -> int:
        return len(self.items)

    @property
    def dim(self) -> int:
        return self.items.shape[1]

    @torch.no_grad()
    def search(self, queries, k: int) -> Tuple[np.ndarray, np.ndarray]:
        q = torch.from_numpy(_check_queries(queries, self.dim, k))
        k = min(k, self.ntotal)
        D = np.empty((len(q), k), np.float32)
        I = np.empty((len(q), k), np.int64)
        for s in range(0, len(q), self.query_batch):
            qb = q[s : s + self.query_batch]
            best_v = best_i = None
            for b in range(0, self.ntotal, self.item_block):
                block = qb @ self.items[b : b + self.item_block].T
                v, i = torch.topk(block, min(k, block.shape[1]), dim=1)
                i += b
                if best_v is not None:  # merge with the running top-k
                    v = torch.cat([best_v, v], 1)
                    v, j = torch.topk(v, min(k, v.shape[1]), dim=1)
                    i = torch.gather(torch.cat([best_i, i], 1), 1, j)
                best_v, best_i = v, i
            D[s : s + len(qb)] = best_v.numpy()
            I[s : s + len(qb)] = best_i.numpy()
        return D, I

    def state(self) -> Dict[str, np.ndarray]:
        return {}


def _faiss():
    try:
        import faiss
    except ImportError:
        raise InvalidInputError(
            "the hnsw index needs faiss: pip install faiss-cpu (scripts/setup.sh installs it)"
        ) from None
    return faiss


class HNSWIndex:
    """faiss ``IndexHNSWFlat`` by inner product. ``m``: links per node; ``ef_construction`` and
    ``ef_search``: the candidate lists of building and of searching (larger: higher recall,
    slower); the search list is at least ``k``."""

    kind = "hnsw"

    def __init__(self, items=None, *, m: int = 32, ef_construction: int = 200, ef_search: int = 256,
                 serialized: Optional[np.ndarray] = None):
        faiss = _faiss()
        if m < 2 or ef_construction < 1 or ef_search < 1:
            raise InvalidInputError("m must be at least 2, ef_construction and ef_search at least 1")
        self.m, self.ef_construction, self.ef_search = m, ef_construction, ef_search
        if serialized is not None:
            self.index = faiss.deserialize_index(np.asarray(serialized, dtype=np.uint8))
        else:
            x = _as_matrix(items, "items")
            self.index = faiss.IndexHNSWFlat(x.shape[1], m, faiss.METRIC_INNER_PRODUCT)
            self.index.hnsw.efConstruction = ef_construction
            self.index.add(x)

    @property
    def ntotal(self) -> int:
        return self.index.ntotal

    @property
    def dim(self) -> int:
        return self.index.d

    def search(self, queries, k: int) -> Tuple[np.ndarray, np.ndarray]:
        q = _check_queries(queries, self.dim, k)
        k = min(k, self.ntotal)
        self.index.hnsw.efSearch = max(self.ef_search, k)
        D, I = self.index.search(q, k)
        return D, I.astype(np.int64)

    def state(self) -> Dict[str, np.ndarray]:
        """The built graph, so that a load does not rebuild it."""
        return {"hnsw": _faiss().serialize_index(self.index)}


def make_index(kind: str, items, **options):
    """An index of ``kind`` (:data:`INDEXES`) over the item vectors ``items [n, dim]``."""
    if kind == "exact":
        return ExactIndex(items, **options)
    if kind == "hnsw":
        return HNSWIndex(items, **options)
    raise InvalidInputError(f"unknown index {kind!r}; known: {', '.join(INDEXES)}")


__all__ = ["INDEXES", "ExactIndex", "HNSWIndex", "make_index"]
