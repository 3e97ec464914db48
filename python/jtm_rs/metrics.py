"""Precision / Recall / F-measure @ M (paper §4, docs/design.md §4.6)."""

from __future__ import annotations

from typing import Dict

import numpy as np

from .exceptions import InvalidInputError


def precision_recall_f(retrieved: np.ndarray, truth_indptr: np.ndarray, truth_items: np.ndarray) -> Dict[str, float]:
    """Averages over users of

    * ``Precision@M(u) = |P_u ∩ G_u| / |P_u|``,
    * ``Recall@M(u) = |P_u ∩ G_u| / |G_u|``,
    * ``F@M(u) = 2·P·R / (P + R)`` (0 when both are 0),

    with ``P_u`` the distinct ids of row ``u`` of ``retrieved`` (``int64[n_users, M]``; ``-1``
    entries are empty slots that still count in ``|P_u| = M``, the paper's fixed-size set) and
    ``G_u = truth_items[truth_indptr[u]:truth_indptr[u+1]]`` (distinct). Users with an empty
    ground truth are skipped.
    """
    retrieved = np.asarray(retrieved)
    if retrieved.ndim != 2:
        raise InvalidInputError(f"retrieved must be [n_users, M], got shape {retrieved.shape}")
    n_users, m = retrieved.shape
    if len(truth_indptr) != n_users + 1:
        raise InvalidInputError(f"truth_indptr has {len(truth_indptr)} entries for {n_users} users")
    g_size = np.diff(truth_indptr)
    # Hits: (user, item) keys present in both sets, by one sort instead of a per-user loop.
    flat = retrieved.reshape(-1)
    ok = flat >= 0
    users_p = np.repeat(np.arange(n_users), m)[ok]
    users_g = np.repeat(np.arange(n_users), g_size)
    vocab, idx = np.unique(np.concatenate([flat[ok], truth_items]), return_inverse=True)
    key = np.concatenate([users_p, users_g]) * len(vocab) + idx
    kp, kg = np.unique(key[: len(users_p)]), np.unique(key[len(users_p) :])
    common = np.intersect1d(kp, kg, assume_unique=True)
    hits = np.bincount(common // max(len(vocab), 1), minlength=n_users).astype(float)
    valid = g_size > 0
    if not valid.any():
        return {"precision": 0.0, "recall": 0.0, "f_measure": 0.0, "n_users": 0}
    p = hits[valid] / m
    r = hits[valid] / g_size[valid]
    f = np.where(p + r > 0, 2 * p * r / np.where(p + r > 0, p + r, 1), 0.0)
    return {"precision": float(p.mean()), "recall": float(r.mean()), "f_measure": float(f.mean()), "n_users": int(valid.sum())}
