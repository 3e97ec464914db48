"""One user's retrieval latency against the catalogue size: the beam search with the default
model scoring on one core, one user per call, as a server answering one request would.

    python benches/retrieve_latency.py                          # 10^4, 10^5, 10^6 items
    python benches/retrieve_latency.py --items 1000000 --calls 500

Per size: a random tree over ``N`` items (ids spread over ``20 N``, as generated data), an
untrained default model (the cost does not depend on the weights), and ``--calls`` searches of
one user with 69 behaviours each, M = k = 200, torch and rayon on one thread. Prints p50 / p90
/ p99 in milliseconds and the levels searched: the work per call grows with the tree's depth
(log N), nothing with N itself.
"""

from __future__ import annotations

import argparse
import time


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--items", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    p.add_argument("--calls", type=int, default=300)
    p.add_argument("--m", type=int, default=200)
    a = p.parse_args()

    import numpy as np
    import torch

    import jtm_rs
    from jtm_rs.model import JTMModel
    from jtm_rs.retrieval import beam_search, model_score_fn

    torch.set_num_threads(1)
    print("| items | levels | p50 ms | p90 ms | p99 ms |")
    print("|---|---|---|---|---|")
    for n in a.items:
        rng = np.random.default_rng(0)
        items = rng.choice(20 * n, size=n, replace=False)
        tree = jtm_rs.Tree.random(items, arity=2, seed=0)
        model = JTMModel(tree.n_nodes).eval()
        users = torch.from_numpy(tree.leaves(rng.choice(items, size=(a.calls, 69)).ravel()).reshape(a.calls, 69))
        lat = []
        for i in range(a.calls):
            t = time.perf_counter()
            score = model_score_fn(model, tree, users[i : i + 1], hierarchical=True)
            beam_search(tree, score, 1, a.m, a.m, n_threads=1)
            lat.append(time.perf_counter() - t)
        ms = 1e3 * np.array(lat[10:])  # the first calls warm caches and allocators
        print(f"| {n:,} | {tree.leaf_level} | {np.percentile(ms, 50):.1f} | {np.percentile(ms, 90):.1f} | "
              f"{np.percentile(ms, 99):.1f} |", flush=True)


if __name__ == "__main__":
    main()
