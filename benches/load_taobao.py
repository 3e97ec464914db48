"""Load speed of the Taobao UserBehavior loader on a generated file of the same format.

    python benches/load_taobao.py --rows 10000000      # writes /tmp/ub_bench.csv once, then loads it

Prints rows/s and MB/s of the loader against the time ``pyarrow.csv.read_csv`` (multi-threaded,
no validation, no id mapping) needs for the same file: the ratio is what our validation, line
numbers and id mapping cost. The full file (100 M rows, 3.5 GB) takes about rows / (rows/s).
"""

from __future__ import annotations

import argparse
import os
import resource
import time

import numpy as np
import pyarrow.csv as pacsv


def write(path: str, rows: int, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    kinds = np.array(["pv", "pv", "pv", "pv", "pv", "pv", "pv", "pv", "cart", "fav", "buy"])
    with open(path, "w") as f:
        for s in range(0, rows, 1_000_000):
            n = min(1_000_000, rows - s)
            u = np.sort(rng.integers(1, 1_000_000, n))
            i = rng.integers(1, 5_200_000, n)
            c = i % 9439 + 1
            b = kinds[rng.integers(0, len(kinds), n)]
            t = rng.integers(1511539200, 1512316799, n)
            f.write("\n".join(f"{a},{b_},{c_},{k},{t_}" for a, b_, c_, k, t_ in zip(u, i, c, b, t)))
            f.write("\n")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=10_000_000)
    ap.add_argument("--path", default="/tmp/ub_bench.csv")
    ap.add_argument("--repeat", type=int, default=3)
    a = ap.parse_args()
    if not os.path.exists(a.path) or sum(1 for _ in open(a.path)) != a.rows:
        print(f"writing {a.rows} rows to {a.path} ...", flush=True)
        write(a.path, a.rows)
    from jtm_rs.datasets import load_user_behavior

    mb = os.path.getsize(a.path) / 1e6
    ours, ref = [], []
    for _ in range(a.repeat):
        t = time.perf_counter()
        d = load_user_behavior(a.path, show_progress=False)
        ours.append(time.perf_counter() - t)
        t = time.perf_counter()
        pacsv.read_csv(a.path, read_options=pacsv.ReadOptions(autogenerate_column_names=True))
        ref.append(time.perf_counter() - t)
    ratio = np.array(ours) / np.array(ref)
    print(f"{a.rows} rows, {mb:.0f} MB: loader min {min(ours):.1f} s / median {np.median(ours):.1f} s "
          f"({a.rows / min(ours) / 1e6:.2f} M rows/s, {mb / min(ours):.0f} MB/s); "
          f"pyarrow read_csv min {min(ref):.1f} s; ratio loader/read_csv min {ratio.min():.2f} median {np.median(ratio):.2f}")
    print(f"kept {len(d)} rows, {d.n_users} users, {d.n_items} items; peak RSS "
          f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6:.1f} GB")


if __name__ == "__main__":
    main()
