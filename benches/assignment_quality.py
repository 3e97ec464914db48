"""How close tree learning gets to the optimal assignment, per rebalance rule.

With one segment covering the whole tree (d = leaf level), learn_tree solves one assignment
of items to leaves, which scipy's linear_sum_assignment solves exactly. Reported: the mean and
worst of (learned - random) / (optimal - random) over seeds, where "random" is the expected
weight of a random assignment.

Weights: JTM-shaped path sums of log sigmoid(user . node) for a random model ("path sums"),
or i.i.d. normal ("iid"). A packed instance (items = leaves) is the hardest case.

Run: python benches/assignment_quality.py [--seeds 10]
"""

from __future__ import annotations

import argparse
import os

os.environ.setdefault("RAYON_NUM_THREADS", "2")

import numpy as np
from scipy.optimize import linear_sum_assignment

import jtm_rs

LEVEL = 6


def weights(tree: jtm_rs.Tree, n: int, rng, kind: str) -> np.ndarray:
    leaves = np.arange(2**LEVEL - 1, 2 ** (LEVEL + 1) - 1)
    if kind == "iid":
        return rng.normal(size=(n, len(leaves)))
    users = rng.normal(size=(n, 8))
    W = np.zeros((n, len(leaves)))
    for level in range(1, LEVEL + 1):
        emb = rng.normal(size=(tree.n_nodes, 8))[tree.ancestors(leaves, level)]
        W += -np.log1p(np.exp(-(users @ emb.T)))
    return W


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--seeds", type=int, default=10)
    a = p.parse_args()
    variants = [("weight", 0), ("regret", 0), ("weight", 8), ("regret", 8)]
    print(f"{'weights':<10}{'items':>6}  " + "".join(f"{r}+{i} passes".rjust(18) for r, i in variants))
    for kind in ("path sums", "iid"):
        for n in (64, 50):
            ratios = {v: [] for v in variants}
            for seed in range(a.seeds):
                rng = np.random.default_rng(seed)
                items = np.arange(n)
                tree = jtm_rs.Tree.random(items, seed=seed, leaf_level=LEVEL)
                W = weights(tree, n, rng, kind)
                r, c = linear_sum_assignment(W, maximize=True)
                optimal, random = W[r, c].sum(), W.mean() * n
                for rebalance, passes in variants:
                    learned = jtm_rs.learn_tree(
                        lambda it, p, s, e: W[it],
                        d=LEVEL,
                        tree=tree,
                        rebalance=rebalance,
                        improve_passes=passes,
                        show_progress=False,
                    )
                    got = W[items, learned.leaves(items) - (2**LEVEL - 1)].sum()
                    ratios[(rebalance, passes)].append((got - random) / (optimal - random))
            cells = "".join(f"{np.mean(v):.3f} (min {np.min(v):.3f})".rjust(18) for v in ratios.values())
            print(f"{kind:<10}{n:>6}  {cells}")


if __name__ == "__main__":
    main()
