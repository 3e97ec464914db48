"""Id columns to internal ids: the distinct ids, sorted, and each row's place among them.

At 10^8 rows every copy of a column is 800 MB: integer ids whose range is not much wider than
the rows (user and item ids of real logs) go through a table over the range, a chunk at a
time, and come out as int32 where they fit; ``np.unique`` of the whole column held five such
copies at once and set a load's memory peak (docs/scale.md).
"""

from __future__ import annotations

from typing import List, Tuple

import numpy as np
import pyarrow as pa

#: Integer ids spanning at most this many values per row (plus 2^20) are mapped through a
#: table over their range (a byte per value); wider ranges (hashed ids) are sorted.
DENSE_SPAN_PER_ROW = 4


def finish_ids(chunks: List[object]) -> Tuple[np.ndarray, np.ndarray]:
    """``(distinct sorted ids, internal id per row)`` of one "id" column read in chunks: int64
    ids when every chunk held canonical integers, else strings (integers then keep their text).
    Internal ids are int32 where they fit. Empties ``chunks``."""
    if all(isinstance(c, np.ndarray) for c in chunks):
        return _integer_ids(chunks)
    arrs = [pa.array(c.astype(str)) if isinstance(c, np.ndarray) else c for c in chunks]
    chunks.clear()
    enc = pa.chunked_array(arrs, pa.string()).combine_chunks().dictionary_encode()
    dictionary = np.asarray(enc.dictionary.to_pylist(), dtype=str)
    order = np.argsort(dictionary, kind="stable")
    rank = np.empty(len(order), dtype=_index_type(len(order)))
    rank[order] = np.arange(len(order))
    return dictionary[order], rank[enc.indices.to_numpy(zero_copy_only=False)]


def _index_type(n_ids: int):
    return np.int32 if n_ids <= np.iinfo(np.int32).max else np.int64


def _integer_ids(chunks: List[np.ndarray]) -> Tuple[np.ndarray, np.ndarray]:
    n = sum(len(c) for c in chunks)
    full = [c for c in chunks if len(c)]
    if not full:
        chunks.clear()
        return np.zeros(0, np.int64), np.zeros(0, np.int32)
    lo, hi = min(int(c.min()) for c in full), max(int(c.max()) for c in full)
    if hi - lo + 1 > DENSE_SPAN_PER_ROW * n + (1 << 20):
        vals = np.concatenate(chunks)
        chunks.clear()
        ids, inverse = np.unique(vals, return_inverse=True)
        del vals
        return ids, inverse.reshape(-1).astype(_index_type(len(ids)))
    present = np.zeros(hi - lo + 1, dtype=bool)
    for c in full:
        present[c - lo] = True
    ids = np.flatnonzero(present) + lo
    rank = np.cumsum(present, dtype=_index_type(len(ids))) - 1  # an id's place among the distinct
    del present
    out, at = np.empty(n, dtype=rank.dtype), 0
    chunks.reverse()
    while chunks:  # each chunk freed once mapped
        c = chunks.pop()
        out[at : at + len(c)] = rank[c - lo]
        at += len(c)
    return ids.astype(np.int64, copy=False), out
