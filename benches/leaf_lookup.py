"""Item id -> leaf lookups (``Tree.leaves``), which every round repeats for every behaviour:
the dense id index against the binary search, in one process.

    python benches/leaf_lookup.py                      # 10^6 items, 10^7 lookups, 3 ABBA rounds
    python benches/leaf_lookup.py --items 100000 --lookups 1000000

Two trees over the same number of items in the same leaf order: one whose ids are internal
ids with the holes user filtering leaves (4 % missing, as Beauty's 11 654 items of 12 095 ids),
which the tree indexes densely, and one whose ids are the same spread 10^4 apart, which it
binary-searches. Both look up the same behaviours, in ABBA order; prints each one's median
seconds and the ratio (min, median). One rayon thread unless RAYON_NUM_THREADS says otherwise.
"""

from __future__ import annotations

import argparse
import statistics
import time


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--items", type=int, default=1_000_000)
    p.add_argument("--lookups", type=int, default=10_000_000)
    p.add_argument("--rounds", type=int, default=3)
    a = p.parse_args()

    import os

    os.environ.setdefault("RAYON_NUM_THREADS", "1")
    import numpy as np

    import jtm_rs

    rng = np.random.default_rng(0)
    dense = np.flatnonzero(rng.random(int(a.items * 1.05)) < 1 / 1.04)[: a.items].astype(np.int64)
    order = rng.permutation(len(dense))
    picks = rng.integers(0, len(dense), a.lookups)
    ids = {"dense index": dense, "binary search": dense * 10_000}
    trees = {k: jtm_rs.Tree.from_order(v[order], 2) for k, v in ids.items()}
    queries = {k: v[picks] for k, v in ids.items()}
    assert np.array_equal(trees["dense index"].leaves(queries["dense index"]),
                          trees["binary search"].leaves(queries["binary search"]))
    seconds = {k: [] for k in trees}
    for _ in range(a.rounds):
        for k in ["dense index", "binary search", "binary search", "dense index"]:
            t = time.perf_counter()
            trees[k].leaves(queries[k])
            seconds[k].append(time.perf_counter() - t)
    ratios = [b / d for b, d in zip(seconds["binary search"], seconds["dense index"])]
    print(f"{len(dense)} items, {a.lookups} lookups per call")
    for k, s in seconds.items():
        print(f"  {k}: median {statistics.median(s):.3f} s ({a.lookups / statistics.median(s) / 1e6:.1f} M lookups/s)")
    print(f"  binary search / dense index: min {min(ratios):.1f}x, median {statistics.median(ratios):.1f}x")


if __name__ == "__main__":
    main()
