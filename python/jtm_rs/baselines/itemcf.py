"""Item-CF: item-to-item similarity from co-occurrence within a window of each training user's
sequence, cosine-normalised; a user's score for item j is the sum of ``sim(b, j)`` over the
user's behaviours b. Sparse matrices throughout; users are scored in batches.

The window is chosen on validation users (recall@M over a small grid) unless given: what
counts as "together" differs between a review log and a check-in log."""

from __future__ import annotations

from typing import Dict, Optional

import numpy as np
import scipy.sparse as sp

from ..cooccurrence import cooccurrence, cosine_normalise, item_counts
from ..data import PAD, Split
from ..exceptions import InvalidInputError
from ..recommender import Recommender, top_m


class ItemCF(Recommender):
    name = "itemcf"

    #: Windows tried on validation users when none is given.
    WINDOWS = (1, 5, 20, 50, 200)

    def __init__(self, window: Optional[int] = None, batch_size: int = 1024, validation_m: int = 200):
        if (window is not None and window < 1) or batch_size < 1:
            raise InvalidInputError("window and batch_size must be at least 1")
        self.window, self.batch_size, self.validation_m = window, batch_size, validation_m
        self.params: dict = {}

    def fit(self, split: Split, *, show_progress: bool = True, callback=None) -> "ItemCF":
        train = split.train
        self.item_ids = train.item_ids
        self.n_items = int(max(p.item.max(initial=-1) for p in (split.train, split.validation, split.test))) + 1
        # Popularity breaks ties (and fills lists of users whose items co-occur with little).
        self.tiebreak = (item_counts(train, self.n_items) / max(len(train), 1) * 1e-6).astype(np.float32)
        windows = [self.window] if self.window is not None else list(self.WINDOWS)
        ev = split.validation.evaluation_users() if len(windows) > 1 and len(split.validation) else None
        best = (-1.0, windows[0])
        for w in windows if ev is not None else windows[:1]:
            self._fit_window(train, w)
            if ev is not None:
                recall = self.evaluate(ev, self.validation_m)["recall"]
                self.params.setdefault("validation_recall", {})[w] = recall
                best = max(best, (recall, w))
        if best[1] != windows[-1] or ev is None:
            self._fit_window(train, best[1])
        self.params["window"] = best[1]
        return self

    def _fit_window(self, train, window: int) -> None:
        c = cooccurrence(train, self.n_items, window)
        self.similarity = cosine_normalise(c, item_counts(train, self.n_items)).astype(np.float32)

    def retrieve(self, features: np.ndarray, M: int):
        f = np.asarray(features)
        ids, scores = [], []
        for s in range(0, len(f), self.batch_size):
            block = f[s : s + self.batch_size]
            rows, cols = np.nonzero(block != PAD)
            items = block[rows, cols]
            ok = items < self.n_items
            u = sp.csr_matrix((np.ones(ok.sum(), np.float32), (rows[ok], items[ok])), shape=(len(block), self.n_items))
            dense = np.asarray((u @ self.similarity).todense()) + self.tiebreak
            i, v = top_m(dense, M)
            ids.append(i)
            scores.append(v)
        if not ids:
            return np.zeros((0, M), np.int64), np.zeros((0, M), np.float32)
        return np.concatenate(ids), np.concatenate(scores)

    def known_items(self, items: np.ndarray) -> np.ndarray:
        return (items >= 0) & (items < self.n_items)

    def get_params(self) -> Dict[str, object]:
        return dict(window=self.params.get("window", self.window), batch_size=self.batch_size,
                    validation_m=self.validation_m)

    def state(self) -> Dict[str, np.ndarray]:
        sim = self.similarity.tocsr()
        return {"tiebreak": self.tiebreak, "data": sim.data, "indices": sim.indices, "indptr": sim.indptr}

    def set_state(self, state: Dict[str, np.ndarray]) -> None:
        self.tiebreak = state["tiebreak"]
        self.n_items = len(self.tiebreak)
        self.similarity = sp.csr_matrix((state["data"], state["indices"], state["indptr"]), shape=(self.n_items,) * 2)
        self.params["window"] = self.window
