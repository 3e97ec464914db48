"""Popularity: the M most frequent items of the training behaviours, for every user."""

from __future__ import annotations

import numpy as np

from ..data import Split
from .base import Recommender, top_m


class Popularity(Recommender):
    name = "popularity"

    def fit(self, split: Split, *, show_progress: bool = True) -> "Popularity":
        train = split.train
        n = int(train.item.max(initial=-1)) + 1
        self.counts = np.bincount(train.item, minlength=n).astype(np.float32)
        return self

    def retrieve(self, features: np.ndarray, M: int):
        ids, scores = top_m(self.counts[None, :], M)
        n = len(features)
        return np.repeat(ids, n, axis=0), np.repeat(scores, n, axis=0)
