"""A short demo of the Rust core on generated data: build trees, learn a tree, beam-search it.

Items get vectors from a planted hierarchy (items close in the planted tree are similar);
categories follow the planted tree only approximately. A stand-in "model" scores a (user,
node) pair by the dot product of the user's vector with the mean vector of the items under
the node in the current tree, so retrieval is only as good as the tree's grouping. Starting
from the category tree, the demo alternates (as in paper Algorithm 1) between refitting that
model to the tree and re-learning the tree from the model with :func:`jtm_rs.learn_tree`,
and reports Recall@M of beam search against the exact top-M of each user.

The deep model, training loop and the paper's metrics arrive with the JTM learner.

Run: ``python -m jtm_rs.demo`` (``--help`` for the sizes).
"""

from __future__ import annotations

import argparse
import time

import numpy as np

import jtm_rs
from jtm_rs import Tree


def planted_item_vectors(planted: Tree, dim: int, rng: np.random.Generator) -> np.ndarray:
    """Sum along each item's planted path of per-node random offsets shrinking with depth."""
    offsets = rng.normal(size=(planted.n_nodes, dim))
    vec = np.zeros((planted.n_items, dim))
    for level in range(1, planted.n_levels):
        vec += 0.8**level * offsets[planted.item_ancestors(planted.items, level)]
    return vec


def node_centroids(tree: Tree, item_vec: np.ndarray) -> np.ndarray:
    """Mean item vector under every node of `tree` (zeros for empty nodes): the 'model'."""
    sums = np.zeros((tree.n_nodes, item_vec.shape[1]))
    counts = np.zeros(tree.n_nodes)
    for level in range(tree.n_levels):
        anc = tree.item_ancestors(tree.items, level)
        np.add.at(sums, anc, item_vec)
        np.add.at(counts, anc, 1)
    return sums / np.maximum(counts, 1)[:, None]


def make_weights_fn(tree: Tree, item_vec: np.ndarray, centroids: np.ndarray):
    """JTM weights under the stand-in model: sum over the segment's levels of a Gaussian
    log-likelihood of the item's vector at the candidate's ancestor."""

    def weights(items, parents, start, end):
        cands = tree.descendants(parents, end)
        x = item_vec[items][:, None, :]
        w = np.zeros(cands.shape)
        for level in range(start, end + 1):
            w -= ((x - centroids[tree.ancestors(cands, level)]) ** 2).sum(-1)
        return w

    return weights


def recall_at_m(tree: Tree, users: np.ndarray, item_vec: np.ndarray, k: int, m: int) -> tuple[float, float]:
    centroids = node_centroids(tree, item_vec)
    truth = np.argsort(-(users @ item_vec.T), axis=1)[:, :m]  # item ids are 0..n-1
    t = time.perf_counter()
    found, _ = jtm_rs.beam_search(
        tree, lambda u, n, level: np.einsum("ij,ij->i", users[u], centroids[n]).astype(np.float32), len(users), k, m
    )
    elapsed = time.perf_counter() - t
    hits = [len(np.intersect1d(f, g)) for f, g in zip(found, truth)]
    return float(np.mean(hits)) / m, elapsed


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m jtm_rs.demo", description=__doc__.split("\n\n")[0])
    p.add_argument("--items", type=int, default=2**15)
    p.add_argument("--users", type=int, default=500)
    p.add_argument("--dim", type=int, default=16)
    p.add_argument("--iterations", type=int, default=3, help="alternations of model refit and tree learning")
    p.add_argument("--d", type=int, default=7, help="levels per tree-learning segment")
    p.add_argument("--k", type=int, default=100, help="beam width")
    p.add_argument("--m", type=int, default=50, help="items retrieved per user")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=None)
    a = p.parse_args(argv)

    rng = np.random.default_rng(a.seed)
    items = np.arange(a.items)
    planted = Tree.random(items, seed=a.seed + 1)
    item_vec = planted_item_vectors(planted, a.dim, rng)
    # Categories: the planted level-5 subtree, with 20% of items relabelled at random.
    level = min(5, planted.leaf_level)
    categories = planted.item_ancestors(items, level)
    noisy = rng.random(a.items) < 0.2
    categories[noisy] = rng.choice(np.unique(categories), size=noisy.sum())
    users = item_vec[rng.choice(a.items, a.users)] + 0.3 * rng.normal(size=(a.users, a.dim))

    print(f"{a.items} items, {a.users} users, binary tree of {planted.n_levels} levels; k={a.k}, M={a.m}")
    rows = []
    for name, tree in [("random tree", Tree.random(items, seed=a.seed + 2)), ("planted tree", planted)]:
        r, t = recall_at_m(tree, users, item_vec, a.k, a.m)
        rows.append((name, r, t, None))
    tree = Tree.from_categories(items, categories, seed=a.seed)
    r, t = recall_at_m(tree, users, item_vec, a.k, a.m)
    rows.append(("category tree (start)", r, t, None))
    for it in range(1, a.iterations + 1):
        weights_fn = make_weights_fn(tree, item_vec, node_centroids(tree, item_vec))
        t0 = time.perf_counter()
        tree = jtm_rs.learn_tree(weights_fn, d=a.d, tree=tree, chunk_size=2048, n_threads=a.threads, show_progress=True)
        learn = time.perf_counter() - t0
        r, t = recall_at_m(tree, users, item_vec, a.k, a.m)
        rows.append((f"learned, iteration {it}", r, t, learn))

    print(f"\n{'tree':<24}{'Recall@M':>10}{'search s':>10}{'learn s':>9}")
    for name, r, t, learn in rows:
        print(f"{name:<24}{r:>10.3f}{t:>10.3f}{'' if learn is None else f'{learn:.2f}':>9}")


if __name__ == "__main__":
    main()
