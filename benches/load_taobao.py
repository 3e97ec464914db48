"""Load speed of the Taobao UserBehavior loader on a generated file of the same format.

    python benches/load_taobao.py --rows 10000000      # writes /tmp/ub_bench.csv once, then loads it

Prints rows/s and MB/s of the loader against the time ``pyarrow.csv.read_csv`` (multi-threaded,
no validation, no id mapping) needs for the same file: the ratio is what our validation, line
numbers and id mapping cost. The full file (100 M rows, 3.5 GB) takes about rows / (rows/s).
"""

from __future__ import annotations

import argparse
import os
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


def _load_in_child(path: str) -> dict:
    """Loads in a fresh process so its peak RSS is the loader's (plus the imports')."""
    import json
    import subprocess
    import sys

    code = (
        "import json, resource, time\n"
        "from jtm_rs.datasets import load_user_behavior\n"
        "base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
        "t = time.perf_counter()\n"
        f"d = load_user_behavior({path!r}, show_progress=False)\n"
        "s = time.perf_counter() - t\n"
        "print(json.dumps({'seconds': s, 'rows': len(d), 'users': d.n_users, 'items': d.n_items,"
        " 'base_gb': base / 1e6, 'peak_gb': resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6}))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=10_000_000)
    ap.add_argument("--path", default="/tmp/ub_bench.csv")
    ap.add_argument("--repeat", type=int, default=3)
    a = ap.parse_args()
    if not os.path.exists(a.path) or sum(1 for _ in open(a.path)) != a.rows:
        print(f"writing {a.rows} rows to {a.path} ...", flush=True)
        write(a.path, a.rows)
    mb = os.path.getsize(a.path) / 1e6
    runs, ref = [], []
    for _ in range(a.repeat):
        runs.append(_load_in_child(a.path))
        t = time.perf_counter()
        pacsv.read_csv(a.path, read_options=pacsv.ReadOptions(autogenerate_column_names=True))
        ref.append(time.perf_counter() - t)
    ours = [r["seconds"] for r in runs]
    ratio = np.array(ours) / np.array(ref)
    r = runs[0]
    print(f"{a.rows} rows, {mb:.0f} MB: loader min {min(ours):.1f} s / median {np.median(ours):.1f} s "
          f"({a.rows / min(ours) / 1e6:.2f} M rows/s, {mb / min(ours):.0f} MB/s); "
          f"pyarrow read_csv min {min(ref):.1f} s; ratio loader/read_csv min {ratio.min():.2f} median {np.median(ratio):.2f}")
    per_row = (r["peak_gb"] - r["base_gb"]) * 1e9 / a.rows
    print(f"kept {r['rows']} rows, {r['users']} users, {r['items']} items; peak RSS {r['peak_gb']:.2f} GB "
          f"(after imports {r['base_gb']:.2f} GB): {per_row:.0f} bytes/row, so 100 M rows need about "
          f"{r['base_gb'] + per_row * 1e8 / 1e9:.1f} GB")


if __name__ == "__main__":
    main()
