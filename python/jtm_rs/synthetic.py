"""Generated behaviour data with a planted item hierarchy: the built-in default dataset.

The generative story, all seeded and vectorised over users (a million items and users take
seconds):

* **Planted hierarchy.** Items sit in a random order; the balanced tree built from that order
  (:meth:`Tree.from_order`) is the planted tree. Its subtrees at ``interest_level`` (about
  ``cluster_size`` items each) are the *interest clusters*.
* **Users.** Each user starts with ``1..max_interests`` clusters, the later ones near the first
  in the planted tree (same ancestor ``kinship`` levels up, with probability ``p_near``).
  Behaviour sequences have ``min_length + Geometric`` steps (capped at ``max_length``).
* **Drift.** At each step, with probability ``drift``, the user's current interest moves: to
  another of its clusters, or to a cluster near the current one (which joins its interests).
* **Popularity.** Inside a cluster, items are drawn with Zipf weights (exponent ``zipf``) over a
  random popularity rank; a ``noise`` fraction of behaviours are popular items from anywhere.
* **Categories** follow the planted tree only approximately: the category of an item is its
  planted ancestor at ``category_level``, a ``category_noise`` fraction of items get a random
  category, and category ids are shuffled, so a category tree groups items roughly right but
  knows nothing of the hierarchy above or below a category.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator, Tuple

import numpy as np

from ._core import Tree
from .data import Interactions
from .exceptions import InvalidInputError


@dataclass(frozen=True)
class SyntheticData:
    interactions: Interactions
    #: Item ids in planted leaf order; ``Tree.from_order(planted_order)`` is the planted tree.
    planted_order: np.ndarray
    interest_level: int
    category_level: int

    def planted_tree(self, arity: int = 2) -> Tree:
        return Tree.from_order(self.planted_order, arity=arity)


@dataclass(frozen=True)
class Behaviour:
    """The knobs of users' behaviour (see the module docstring)."""

    max_interests: int = 3
    p_near: float = 0.7
    kinship: int = 3
    min_length: int = 10
    mean_length: float = 30.0
    max_length: int = 120
    drift: float = 0.08
    noise: float = 0.03


class _World:
    """The planted tree, its interest clusters and the items' popularity: what every user of one
    data set shares. Draws from ``rng`` in a fixed order, so one seed gives one world."""

    def __init__(self, n_items: int, cluster_size: int, category_size: int, zipf: float, rng: np.random.Generator):
        self.n_items = n_items
        # Non-contiguous user-facing ids, so nothing can rely on ids being positions.
        self.order = rng.choice(20 * n_items, size=n_items, replace=False).astype(np.int64)
        self.planted = Tree.from_order(self.order, arity=2)
        L = self.planted.leaf_level
        self.interest_level = int(np.clip(L - int(np.log2(max(cluster_size, 1))), 1, L))
        self.category_level = int(np.clip(L - int(np.log2(max(category_size, 1))), 1, L))
        # Interest clusters: contiguous ranges of the planted order.
        cluster_of = self.planted.item_ancestors(self.order, self.interest_level)  # per planted position
        _, self.lo = np.unique(cluster_of, return_index=True)
        self.hi = np.append(self.lo[1:], n_items)
        self.n_clusters = len(self.lo)
        # Popularity: Zipf over a random rank; cumulative over planted positions for in-cluster draws.
        pop = 1.0 / np.power(rng.permutation(n_items) + 1.0, zipf)
        self.cum = np.concatenate(([0.0], np.cumsum(pop)))
        self.cluster_pop = self.cum[self.hi] - self.cum[self.lo]

    def near(self, c: np.ndarray, kinship: int, rng: np.random.Generator) -> np.ndarray:
        """A random cluster under the same planted ancestor ``kinship`` levels above."""
        span = 2 ** min(kinship, self.interest_level)
        base = (c // span) * span
        return np.minimum(base + rng.integers(0, span, size=len(c)), self.n_clusters - 1)

    def draw_clusters(self, k: int, rng: np.random.Generator) -> np.ndarray:
        return rng.choice(self.n_clusters, size=k, p=self.cluster_pop / self.cluster_pop.sum())

    def behaviours(self, n_users: int, b: Behaviour, rng: np.random.Generator):
        """``n_users`` users' sequences: ``(lengths [U], items [U, T], active [U, T])``."""
        lengths = np.minimum(b.min_length + rng.geometric(1.0 / (b.mean_length - b.min_length + 1), size=n_users) - 1,
                             b.max_length)
        interests = np.empty((n_users, b.max_interests), dtype=np.int64)
        interests[:, 0] = self.draw_clusters(n_users, rng)
        for j in range(1, b.max_interests):
            interests[:, j] = np.where(rng.random(n_users) < b.p_near, self.near(interests[:, 0], b.kinship, rng),
                                       self.draw_clusters(n_users, rng))
        n_interests = rng.integers(1, b.max_interests + 1, size=n_users)
        current = interests[np.arange(n_users), rng.integers(0, n_interests)]
        cum, lo, hi = self.cum, self.lo, self.hi
        t_max = int(lengths.max())
        items = np.full((n_users, t_max), -1, dtype=np.int64)
        global_cum = cum / cum[-1]
        for t in range(t_max):
            moves = rng.random(n_users) < b.drift
            if moves.any():
                u = np.flatnonzero(moves)
                to_own = rng.random(len(u)) < 0.5
                own = interests[u, rng.integers(0, n_interests[u])]
                current[u] = np.where(to_own, own, self.near(current[u], b.kinship, rng))
            c = current
            x = cum[lo[c]] + rng.random(n_users) * self.cluster_pop[c]
            pos = np.clip(np.searchsorted(cum, x, side="right") - 1, lo[c], hi[c] - 1)
            noisy = rng.random(n_users) < b.noise
            if noisy.any():
                pos[noisy] = np.minimum(np.searchsorted(global_cum, rng.random(noisy.sum()), side="right") - 1,
                                        self.n_items - 1)
            items[:, t] = self.order[pos]
        return lengths, items, np.arange(t_max)[None, :] < lengths[:, None]

    def categories(self, category_noise: float, rng: np.random.Generator):
        """``item ids -> category ids``: planted ancestor at ``category_level``, some relabelled,
        ids shuffled."""
        cat_node = self.planted.item_ancestors(self.order, self.category_level)
        cat_nodes, cat_index = np.unique(cat_node, return_inverse=True)
        relabel = rng.random(self.n_items) < category_noise
        cat_index[relabel] = rng.integers(0, len(cat_nodes), size=int(relabel.sum()))
        cat_ids = rng.permutation(len(cat_nodes))[cat_index]
        sorter = np.argsort(self.order)
        return lambda it: cat_ids[sorter[np.searchsorted(self.order, it, sorter=sorter)]]


def _rows(lengths: np.ndarray, items: np.ndarray, active: np.ndarray, first_user: int, rng: np.random.Generator):
    """The columns ``(users, items, timestamps)`` of users ``first_user, first_user + 1, …``."""
    n_users, t_max = items.shape
    user_ids = np.repeat(np.arange(first_user, first_user + n_users, dtype=np.int64), lengths)
    start = rng.integers(1_500_000_000, 1_510_000_000, size=n_users)
    steps = rng.integers(1, 3600, size=(n_users, t_max)).cumsum(axis=1)
    return user_ids, items[active], (start[:, None] + steps)[active]


def generate(
    n_items: int = 8192,
    n_users: int = 8000,
    *,
    cluster_size: int = 32,
    max_interests: int = 3,
    p_near: float = 0.7,
    kinship: int = 3,
    min_length: int = 10,
    mean_length: float = 30.0,
    max_length: int = 120,
    drift: float = 0.08,
    zipf: float = 1.0,
    noise: float = 0.03,
    category_size: int = 128,
    category_noise: float = 0.2,
    seed: int = 0,
) -> SyntheticData:
    """Generate a :class:`SyntheticData` (see the module docstring for the story)."""
    behaviour = _checked(n_items, n_users, Behaviour(max_interests, p_near, kinship, min_length, mean_length,
                                                     max_length, drift, noise))
    rng = np.random.default_rng(seed)
    world = _World(n_items, cluster_size, category_size, zipf, rng)
    lengths, items, active = world.behaviours(n_users, behaviour, rng)
    item_cat = world.categories(category_noise, rng)
    users, row_items, timestamps = _rows(lengths, items, active, 0, rng)
    return SyntheticData(
        Interactions(users, row_items, timestamps, item_cat(row_items)),
        world.order,
        world.interest_level,
        world.category_level,
    )


def generate_columns(
    n_items: int,
    n_users: int,
    *,
    chunk_users: int = 100_000,
    behaviour: Behaviour = Behaviour(),
    cluster_size: int = 32,
    zipf: float = 1.0,
    category_size: int = 128,
    category_noise: float = 0.2,
    seed: int = 0,
) -> Iterator[Tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]]:
    """The data of :func:`generate`'s story in chunks of ``chunk_users`` users, for data sets too
    large to hold twice (10^8 behaviours): yields ``(users, items, categories, timestamps)``
    columns, users numbered ``0..n_users-1`` in order. With ``chunk_users >= n_users`` the rows
    are :func:`generate`'s for the same arguments."""
    behaviour = _checked(n_items, n_users, behaviour)
    if chunk_users < 1:
        raise InvalidInputError(f"chunk_users must be at least 1, got {chunk_users}")
    rng = np.random.default_rng(seed)
    world = _World(n_items, cluster_size, category_size, zipf, rng)
    item_cat = None
    for first in range(0, n_users, chunk_users):
        lengths, items, active = world.behaviours(min(chunk_users, n_users - first), behaviour, rng)
        if item_cat is None:  # after the first users, where generate() draws it
            item_cat = world.categories(category_noise, rng)
        users, row_items, timestamps = _rows(lengths, items, active, first, rng)
        yield users, row_items, item_cat(row_items), timestamps


def _checked(n_items: int, n_users: int, b: Behaviour) -> Behaviour:
    if n_items < 2 or n_users < 1:
        raise InvalidInputError(f"need at least 2 items and 1 user, got {n_items} items, {n_users} users")
    if not (1 <= b.min_length <= b.max_length) or b.mean_length < b.min_length:
        raise InvalidInputError("lengths must satisfy 1 <= min_length <= mean_length, min_length <= max_length")
    return b


__all__ = ["SyntheticData", "Behaviour", "generate", "generate_columns"]
