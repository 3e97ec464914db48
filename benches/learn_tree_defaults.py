"""Does ``jtm_rs.learn_tree(weights_fn, d)`` with its defaults lower the eq. 2 objective?

Fits the model once on the initial tree (``JTM(iterations=0)``), then learns a tree from it
with the paper's weights (no stay bonus) at several ``d`` (and the old 32-candidate cap at
d = 7 for contrast), and prints the objective (nats per example, on a fixed sample of training
examples, lower is better) before and after each, with the time tree learning took.

    python benches/learn_tree_defaults.py data/Beauty.txt [--seed 0] [--threads 1]
"""

from __future__ import annotations

import argparse
import time


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("data")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--d", type=int, nargs="+", default=[4, 7])
    a = p.parse_args()

    import numpy as np
    import torch

    import jtm_rs
    from jtm_rs import JTM, datasets
    from jtm_rs.features import BehaviourLeaves
    from jtm_rs.training import objective_by_level
    from jtm_rs.tree_weights import model_weights_fn

    split = datasets.load(a.data, show_progress=False).filter_users(10).split(0.1, 0.1, seed=a.seed)
    t0 = time.perf_counter()
    jtm = JTM(iterations=0, seed=a.seed, n_threads=a.threads, device="cpu").fit(split, show_progress=False)
    fit_s = time.perf_counter() - t0
    tree, model = jtm.check_fitted()
    windows = split.train.training_windows()
    leaves = BehaviourLeaves(windows, tree, torch.device("cpu"))
    fixed = np.sort(np.random.default_rng(a.seed).choice(len(windows), min(4000, len(windows)), replace=False))
    before = float(objective_by_level(model, tree, leaves, fixed, hierarchical=True).sum())
    weights = model_weights_fn(model, tree, leaves, seed=a.seed)
    print(f"{a.data}: {tree.n_items} items, {tree.leaf_level} levels; model trained once in {fit_s:.0f} s; "
          f"objective on the initial tree {before:.3f}")
    print("| call | objective after | change | tree learning (s) |")
    print("| --- | --- | --- | --- |")
    runs = [(d, {}) for d in a.d] + [(7, {"max_candidates": 32})]
    for d, kw in runs:
        t = time.perf_counter()
        new = jtm_rs.learn_tree(weights, d, tree=tree, n_threads=a.threads, show_progress=False, **kw)
        s = time.perf_counter() - t
        after = float(objective_by_level(model, new, leaves, fixed, hierarchical=True).sum())
        call = f"learn_tree(weights_fn, d={d}" + "".join(f", {k}={v}" for k, v in kw.items()) + ")"
        print(f"| `{call}` | {after:.3f} | {after - before:+.3f} | {s:.0f} |", flush=True)


if __name__ == "__main__":
    main()
