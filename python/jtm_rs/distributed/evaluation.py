"""Evaluation over ranks: each rank retrieves for every ``world``-th user, and the sums of the
per-user metrics are all-reduced, so every rank gets the means over all users — those of one
process, up to the order of the float sums."""

from __future__ import annotations

from typing import Dict

import numpy as np

from ..data import EvaluationUsers
from .ranks import Ranks

_METRICS = ("precision", "recall", "f_measure")


def evaluate(recommender, users: EvaluationUsers, M: int, ranks: Ranks, **kwargs) -> Dict[str, float]:
    """``recommender.evaluate(users, M, **kwargs)``, its work split over ``ranks`` (every rank
    calls it with the same users)."""
    mine = users.subset(np.arange(len(users))[ranks.mine(len(users))])
    part = recommender.evaluate(mine, M, **kwargs) if len(mine) else {"n_users": 0}
    n = part["n_users"]
    sums = ranks.sum([part.get(k, 0.0) * n for k in _METRICS] + [n])
    total = sums[-1]
    out: Dict[str, float] = {k: float(s / total) if total else 0.0 for k, s in zip(_METRICS, sums)}
    out["n_users"] = int(total)
    return out


__all__ = ["evaluate"]
