"""The time protocol of ``jtm-rs experiment --protocol time`` (docs/lifecycle.md), for data
with a global clock (Taobao UserBehavior, MovieLens):

* the first 80 % of behaviours by time are the first fit's data; the next 10 % are the
  update's; the users with behaviours in the last 10 % and before it are evaluated, their
  behaviours before the last 10 % the features and their distinct items in it the truth;
* **stale**: ``jtm`` fitted on the first 80 %; **updated**: the stale model after
  :meth:`JTM.update` with the next 10 %, replaying the first 80 %; **refit**: ``jtm`` fitted
  on the first 90 %.

Rows as the new-item protocol's (:mod:`.new_items`): Recall@M over all truth items and over
the items the first 80 % never had, and seconds. The seed changes the models, not the data.
"""

from __future__ import annotations

import numpy as np

from ..data import MAX_BEHAVIOURS, EvaluationUsers, Interactions, Windows
from ..exceptions import InvalidInputError
from .methods import Budget
from .new_items import three_rows

FIT_SHARE, UPDATE_SHARE = 0.8, 0.1


def time_cuts(data: Interactions) -> tuple:
    """The timestamps where the update's behaviours and the evaluated ones begin."""
    t1, t2 = np.quantile(data.timestamp, [FIT_SHARE, FIT_SHARE + UPDATE_SHARE])
    if not data.timestamp.min() < t1 < t2 <= data.timestamp.max():
        raise InvalidInputError("the time protocol needs timestamps that spread over time (a global clock)")
    return t1, t2


def evaluated_users(data: Interactions, t2: float, max_behaviours: int = MAX_BEHAVIOURS) -> EvaluationUsers:
    """Users with behaviours before ``t2`` and from ``t2`` on: the ones before are the features
    (most recent first), the distinct items from ``t2`` on the truth."""
    starts = data.user_starts()
    first_late = np.array([lo + np.searchsorted(data.timestamp[lo:hi], t2) for lo, hi in zip(starts[:-1], starts[1:])],
                          dtype=np.int64)
    keep = (first_late > starts[:-1]) & (first_late < starts[1:])
    lo, cut, hi = starts[:-1][keep], first_late[keep], starts[1:][keep]
    features = Windows(data.item, cut, lo, max_behaviours).behaviours(np.arange(len(cut)))
    truth = [np.unique(data.item[c:h]) for c, h in zip(cut, hi)]
    indptr = np.concatenate([[0], np.cumsum([len(t) for t in truth])]).astype(np.int64)
    items = np.concatenate(truth).astype(np.int64) if truth else np.zeros(0, np.int64)
    return EvaluationUsers(np.flatnonzero(keep), features, indptr, items)


def run_seed(data: Interactions, seed: int, budget: Budget, M: int) -> dict:
    """The three rows for one seed."""
    t1, t2 = time_cuts(data)
    first, upto = data.timestamp < t1, data.timestamp < t2
    rows_of = lambda mask: Interactions(data.user[mask], data.item[mask], data.timestamp[mask],  # noqa: E731
                                        None if data.category is None else data.category[mask],
                                        user_ids=data.user_ids, item_ids=data.item_ids)
    old, update, both = rows_of(first), rows_of(upto & ~first), rows_of(upto)
    ev = evaluated_users(data, t2, budget.jtm.get("max_behaviours", MAX_BEHAVIOURS))
    new_items = np.setdiff1d(data.items, old.items)
    return three_rows(old, update, old, both, ev, new_items, budget, seed, M)


__all__ = ["FIT_SHARE", "UPDATE_SHARE", "time_cuts", "evaluated_users", "run_seed"]
