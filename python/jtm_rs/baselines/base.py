"""The small interface every method of the comparison shares with :class:`jtm_rs.JTM`.

``fit(split)`` learns from the training users (validation users may be used for choices);
``retrieve(features, M)`` returns the top-M *internal* item ids per user from a feature matrix
(internal ids, most recent first, ``PAD`` padded); ``evaluate`` applies the paper's protocol
with the one shared P/R/F@M code, so every row of Table 1 is measured alike.

No method filters out items the user already has: the ground truth (second half of the user's
behaviours) may repeat them, and the paper's protocol counts such hits. It applies to all
methods alike.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Dict, Tuple, Union

import numpy as np

from ..data import EvaluationUsers, Interactions, Split
from ..exceptions import InvalidInputError
from ..metrics import precision_recall_f


class Recommender(ABC):
    #: The method's name in Table 1.
    name: str = "?"

    @abstractmethod
    def fit(self, split: Split, *, show_progress: bool = True) -> "Recommender": ...

    @abstractmethod
    def retrieve(self, features: np.ndarray, M: int) -> Tuple[np.ndarray, np.ndarray]:
        """``(internal item ids int64[n, M], scores float32[n, M])``, best first."""

    def evaluate(self, users: Union[Interactions, EvaluationUsers], M: int = 200, **kwargs) -> Dict[str, float]:
        """Averages of ``precision``, ``recall``, ``f_measure`` @M over ``users`` (paper protocol)."""
        ev = users if isinstance(users, EvaluationUsers) else users.evaluation_users()
        if len(ev) == 0:
            raise InvalidInputError("no evaluation users (each needs at least 2 behaviours)")
        ids, _ = self.retrieve(ev.features, M, **kwargs)
        return precision_recall_f(ids, ev.truth_indptr, ev.truth_items)


def top_m(scores: np.ndarray, M: int) -> Tuple[np.ndarray, np.ndarray]:
    """Column indices and values of the ``M`` largest entries per row, best first."""
    M = min(M, scores.shape[1])
    part = np.argpartition(-scores, M - 1, axis=1)[:, :M]
    vals = np.take_along_axis(scores, part, axis=1)
    order = np.argsort(-vals, axis=1, kind="stable")
    return np.take_along_axis(part, order, axis=1).astype(np.int64), np.take_along_axis(vals, order, axis=1).astype(np.float32)
