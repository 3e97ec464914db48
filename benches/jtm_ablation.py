"""One JTM configuration on a real data set, measured on **validation** users (for choosing
defaults; report on test users with ``jtm-rs experiment``).

Prints per round: validation Recall@M, the eq. 2 objective on the fixed sample before and
after tree learning split by Algorithm 2's segments, and how many items changed their
ancestor at a few levels; then the final beam-search and brute-force recall and the fit time.
The split is the runner's (users with >= 10 behaviours, 80/10/10 by user, seeded).

Run:
    python benches/jtm_ablation.py data/Beauty.txt                        # the defaults
    python benches/jtm_ablation.py data/Beauty.txt on_tree_change='"warm"' stay_bonus=0
    SEED=1 THREADS=1 python benches/jtm_ablation.py data/Toys_and_Games.txt batch_size=8192

Each ``key=value`` overrides a :class:`jtm_rs.JTMConfig` field (the value is JSON).
"""

from __future__ import annotations

import json
import os
import sys
import time

import numpy as np


def main() -> None:
    if len(sys.argv) < 2 or sys.argv[1] in ("-h", "--help"):
        sys.exit(__doc__)
    threads = int(os.environ.get("THREADS", "1"))
    seed = int(os.environ.get("SEED", "0"))
    os.environ["RAYON_NUM_THREADS"] = str(threads)
    from jtm_rs.datasets import load
    from jtm_rs.jtm import JTM

    overrides = {}
    for kv in sys.argv[2:]:
        key, value = kv.split("=", 1)
        overrides[key] = json.loads(value)
    data = load(sys.argv[1]).filter_users(10)
    split = data.split(0.1, 0.1, seed=seed)
    validation = split.validation.evaluation_users()
    trees = []
    t0 = time.perf_counter()
    model = JTM(device="cpu", n_threads=threads, seed=seed, validation_users=None, **overrides)
    model.fit(split, show_progress=False, callback=lambda r: trees.append(model.tree))
    fit = time.perf_counter() - t0
    d = model.config.d

    def segments(v):
        return [round(sum(v[i : i + d]), 3) for i in range(0, len(v), d)] if v else None

    items = trees[0].items
    for i, h in enumerate(model.history):
        moved = ""
        if i + 1 < len(trees):
            a, b = trees[i], trees[i + 1]
            moved = ", ".join(
                f"level {lv}: {100 * np.mean(a.item_ancestors(items, lv) != b.item_ancestors(items, lv)):.0f} %"
                for lv in sorted({1, min(d, a.leaf_level), a.leaf_level})
            )
        print(f"round {h.iteration}: validation R@{model.config.validation_m} {100 * h.validation['recall']:.2f} %, "
              f"objective {h.objective:.3f} -> {h.objective_after_tree_learning}, by segment "
              f"{segments(h.objective_by_level)} -> {segments(h.objective_by_level_after_tree_learning)}"
              + (f"; items moved: {moved}" if moved else "")
              + f"; seconds {json.dumps({k: round(v) for k, v in h.seconds.items()})}")
    brute = model.evaluate(validation, model.config.validation_m, method="brute_force")["recall"]
    print(f"{sys.argv[1]} {overrides}: fit {fit:.0f} s, validation R@{model.config.validation_m} "
          f"beam {100 * model.history[-1].validation['recall']:.2f} %, brute force {100 * brute:.2f} %")


if __name__ == "__main__":
    main()
