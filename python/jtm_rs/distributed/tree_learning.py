"""Tree learning (paper Algorithm 2) over ranks. Its cost is the model scoring in
``weights_fn``; the assignment itself is seconds for 10^6 items. So every rank runs the same
learner over the same chunks, scores only its share of each chunk's items, and the rows are
gathered before the (deterministic) assignment: every rank builds the tree one process would
have built from the same weights."""

from __future__ import annotations

import numpy as np

from .._arrays import to_numpy
from ..tree_learning import WeightsFn
from .ranks import Ranks


def sharded_weights_fn(weights_fn: WeightsFn, ranks: Ranks) -> WeightsFn:
    """``weights_fn`` computed ``ranks.world`` ways: each rank scores the rows
    :meth:`Ranks.mine` of every call and all get the whole matrix. Every rank must call it with
    the same arguments in the same order (each rank's :func:`jtm_rs.learn_tree` does)."""

    def weights(items: np.ndarray, parents: np.ndarray, start: int, end: int) -> np.ndarray:
        mine = ranks.mine(len(items))
        part = to_numpy(weights_fn(items[mine], parents[mine], start, end))
        return ranks.gather_rows(part, len(items))

    weights.stay_bonus = getattr(weights_fn, "stay_bonus", None)
    return weights


__all__ = ["sharded_weights_fn"]
