"""Would a randomized SVD do for the initial tree's co-occurrence embeddings? Subspace
iteration (block products, which would split over ranks as the vectors of ARPACK do) against
``scipy.sparse.linalg.svds``: time, and the largest principal angle to svds' vectors.

    python benches/randomized_svd.py data/Beauty.txt
    python benches/randomized_svd.py --generated     # 10^6 items, 2*10^5 users (647 063 in the data)

The matrix is the one :func:`jtm_rs.cooccurrence.cooccurrence_embeddings` factorises (cosine-
normalised co-occurrence within a window of 10, float64); k = 24 as in the default config.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import time

import numpy as np


def subspace_iteration(s, k: int, p: int, q: int, seed: int = 0):
    """The top ``k`` eigenvectors (by magnitude) of the symmetric ``s``, from ``q + 1`` block
    products of ``k + p`` columns and a Rayleigh–Ritz step; with their |eigenvalues|."""
    x = np.random.default_rng(seed).standard_normal((s.shape[0], k + p))
    basis, _ = np.linalg.qr(s @ x)
    for _ in range(q):
        basis, _ = np.linalg.qr(s @ basis)
    small = basis.T @ (s @ basis)
    lam, v = np.linalg.eigh((small + small.T) / 2)
    top = np.argsort(-np.abs(lam))[:k]
    return basis @ v[:, top], np.abs(lam[top])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("data", nargs="?", help="a data file jtm_rs.datasets.load reads")
    ap.add_argument("--generated", action="store_true", help="generated data instead: 10^6 items, 2*10^5 users")
    ap.add_argument("--dim", type=int, default=24)
    a = ap.parse_args()
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "python"))
    import scipy.linalg
    from scipy.sparse.linalg import svds

    from jtm_rs import datasets, synthetic
    from jtm_rs.cooccurrence import cooccurrence, cosine_normalise, item_counts

    if a.generated:
        data = synthetic.generate(10**6, 2 * 10**5, seed=0).interactions
    elif a.data:
        data = datasets.load(a.data)
    else:
        ap.error("give a data file or --generated")
    items = np.unique(data.item)
    n = len(items)
    compact = dataclasses.replace(data, item=np.searchsorted(items, data.item), item_ids=None)
    s = cosine_normalise(cooccurrence(compact, n, 10), item_counts(compact, n)).astype(np.float64)
    t = time.perf_counter()
    u, sv, _ = svds(s, k=a.dim, v0=np.random.default_rng(0).standard_normal(n))
    svds_s = time.perf_counter() - t
    sv = np.sort(sv)[::-1]
    print(f"{n:,} items, {s.nnz:,} non-zeros; svds {svds_s:.2f} s; singular values 1, 12, 24: "
          f"{sv[0]:.2f} {sv[len(sv) // 2 - 1]:.2f} {sv[-1]:.2f}")
    print("| p | q | seconds | largest angle to svds (degrees) | largest singular value error |")
    print("|---|---|---|---|---|")
    for p, q in [(8, 4), (16, 4), (16, 8), (24, 8), (32, 12)]:
        t = time.perf_counter()
        ur, svr = subspace_iteration(s, a.dim, p, q)
        dt = time.perf_counter() - t
        angle = np.degrees(scipy.linalg.subspace_angles(u, ur).max())
        print(f"| {p} | {q} | {dt:.2f} | {angle:.1f} | {np.abs(sv - svr).max():.1e} |")


if __name__ == "__main__":
    main()
