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
    if n_items < 2 or n_users < 1:
        raise InvalidInputError(f"need at least 2 items and 1 user, got {n_items} items, {n_users} users")
    if not (1 <= min_length <= max_length) or mean_length < min_length:
        raise InvalidInputError("lengths must satisfy 1 <= min_length <= mean_length, min_length <= max_length")
    rng = np.random.default_rng(seed)
    # Non-contiguous user-facing ids, so nothing can rely on ids being positions.
    order = rng.choice(20 * n_items, size=n_items, replace=False).astype(np.int64)
    planted = Tree.from_order(order, arity=2)
    L = planted.leaf_level
    interest_level = int(np.clip(L - int(np.log2(max(cluster_size, 1))), 1, L))
    category_level = int(np.clip(L - int(np.log2(max(category_size, 1))), 1, L))

    # Interest clusters: contiguous ranges of the planted order.
    cluster_of = planted.item_ancestors(order, interest_level)  # per planted position
    clusters, lo = np.unique(cluster_of, return_index=True)
    hi = np.append(lo[1:], n_items)
    n_clusters = len(clusters)

    # Popularity: Zipf over a random rank; cumulative over planted positions for in-cluster draws.
    pop = 1.0 / np.power(rng.permutation(n_items) + 1.0, zipf)
    cum = np.concatenate(([0.0], np.cumsum(pop)))
    cluster_pop = cum[hi] - cum[lo]

    def near(c: np.ndarray) -> np.ndarray:
        # A random cluster under the same planted ancestor `kinship` levels above.
        span = 2 ** min(kinship, interest_level)
        base = (c // span) * span
        return np.minimum(base + rng.integers(0, span, size=len(c)), n_clusters - 1)

    def draw_clusters(k: int) -> np.ndarray:
        return rng.choice(n_clusters, size=k, p=cluster_pop / cluster_pop.sum())

    lengths = np.minimum(
        min_length + rng.geometric(1.0 / (mean_length - min_length + 1), size=n_users) - 1, max_length
    )
    interests = np.empty((n_users, max_interests), dtype=np.int64)
    interests[:, 0] = draw_clusters(n_users)
    for j in range(1, max_interests):
        interests[:, j] = np.where(rng.random(n_users) < p_near, near(interests[:, 0]), draw_clusters(n_users))
    n_interests = rng.integers(1, max_interests + 1, size=n_users)
    current = interests[np.arange(n_users), rng.integers(0, n_interests)]

    t_max = int(lengths.max())
    items = np.full((n_users, t_max), -1, dtype=np.int64)
    global_cum = cum / cum[-1]
    for t in range(t_max):
        moves = rng.random(n_users) < drift
        if moves.any():
            u = np.flatnonzero(moves)
            to_own = rng.random(len(u)) < 0.5
            own = interests[u, rng.integers(0, n_interests[u])]
            current[u] = np.where(to_own, own, near(current[u]))
        c = current
        x = cum[lo[c]] + rng.random(n_users) * cluster_pop[c]
        pos = np.clip(np.searchsorted(cum, x, side="right") - 1, lo[c], hi[c] - 1)
        noisy = rng.random(n_users) < noise
        if noisy.any():
            pos[noisy] = np.minimum(np.searchsorted(global_cum, rng.random(noisy.sum()), side="right") - 1, n_items - 1)
        items[:, t] = order[pos]
    active = np.arange(t_max)[None, :] < lengths[:, None]

    # Categories: planted ancestor at category_level, some relabelled, ids shuffled.
    cat_node = planted.item_ancestors(order, category_level)
    cat_nodes, cat_index = np.unique(cat_node, return_inverse=True)
    relabel = rng.random(n_items) < category_noise
    cat_index[relabel] = rng.integers(0, len(cat_nodes), size=int(relabel.sum()))
    cat_ids = rng.permutation(len(cat_nodes))[cat_index]
    sorter = np.argsort(order)
    item_cat = lambda it: cat_ids[sorter[np.searchsorted(order, it, sorter=sorter)]]  # noqa: E731

    user_ids = np.repeat(np.arange(n_users, dtype=np.int64), lengths)
    row_items = items[active]
    start = rng.integers(1_500_000_000, 1_510_000_000, size=n_users)
    steps = rng.integers(1, 3600, size=(n_users, t_max)).cumsum(axis=1)
    timestamps = (start[:, None] + steps)[active]
    return SyntheticData(
        Interactions(user_ids, row_items, timestamps, item_cat(row_items)),
        order,
        interest_level,
        category_level,
    )


__all__ = ["SyntheticData", "generate"]
