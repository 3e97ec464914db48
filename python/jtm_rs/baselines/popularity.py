"""Popularity: the M most frequent items of the training behaviours, for every user."""

from __future__ import annotations

from typing import Dict

import numpy as np

from ..data import Split
from ..recommender import Recommender, top_m


class Popularity(Recommender):
    name = "popularity"

    def fit(self, split: Split, *, show_progress: bool = True, callback=None) -> "Popularity":
        train = split.train
        self.item_ids = train.item_ids
        n = int(train.item.max(initial=-1)) + 1
        self.counts = np.bincount(train.item, minlength=n).astype(np.float32)
        return self

    def retrieve(self, features: np.ndarray, M: int):
        ids, scores = top_m(self.counts[None, :], M)
        n = len(features)
        return np.repeat(ids, n, axis=0), np.repeat(scores, n, axis=0)

    def known_items(self, items: np.ndarray) -> np.ndarray:
        return np.ones(np.shape(items), dtype=bool)  # behaviours do not matter

    def get_params(self) -> Dict[str, object]:
        return {}

    def state(self) -> Dict[str, np.ndarray]:
        return {"counts": self.counts}

    def set_state(self, state: Dict[str, np.ndarray]) -> None:
        self.counts = state["counts"]
