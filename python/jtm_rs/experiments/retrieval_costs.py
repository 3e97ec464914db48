"""What a method's retrieval costs, beside what it finds: one user's latency, and for an
approximate search its agreement with the same model's exact search.

* a JTM row: the beam search (its Table 1 retrieval) and brute force with the same model;
* the ``sasrec`` row: its exact inner-product search (its Table 1 retrieval) and faiss HNSW
  over the same vectors.

Each search is measured on the same test users: Recall@M, the share of the exact search's
top-M it returns, and the p50 / p99 milliseconds of ``calls`` one-user calls after a warm-up.
"""

from __future__ import annotations

import time
from typing import Callable, Dict

import numpy as np

from ..data import EvaluationUsers
from ..jtm import JTM
from ..metrics import precision_recall_f
from ..two_tower import SASRec


def share_of_exact(found: np.ndarray, exact: np.ndarray) -> float:
    """Mean share of each row of ``exact`` (a top-M) that the same row of ``found`` returns."""
    return float(np.mean([len(set(a.tolist()) & set(b.tolist())) / max(len(b), 1) for a, b in zip(found, exact)]))


def one_user_latency_ms(retrieve: Callable[[np.ndarray], object], features: np.ndarray, calls: int) -> Dict[str, float]:
    """p50 and p99 milliseconds of ``calls`` calls of ``retrieve`` on one user each."""
    retrieve(features[:1])  # warm-up
    ms = []
    for i in range(calls):
        t = time.perf_counter()
        retrieve(features[i % len(features)][None, :])
        ms.append(1e3 * (time.perf_counter() - t))
    return {"p50_ms": float(np.percentile(ms, 50)), "p99_ms": float(np.percentile(ms, 99)), "calls": calls}


def retrieval_costs(rec, users: EvaluationUsers, M: int, calls: int = 50) -> Dict[str, dict]:
    """``{search: {recall, share_of_exact, p50_ms, p99_ms, calls}}`` for the searches of
    ``rec`` (empty for a method with one search only)."""
    if isinstance(rec, JTM):
        searches = {"brute_force": dict(method="brute_force"), "beam": {}}
        run = lambda f, kw: rec.retrieve(f, M, **kw)[0]  # noqa: E731
        restore = None
    elif isinstance(rec, SASRec):
        restore = (rec.index_kind, dict(rec.index_options))
        searches = {"exact": ("exact", {}), "hnsw": ("hnsw", {})}

        def run(f, kw):
            return rec.retrieve(f, M)[0]
    else:
        return {}
    out: Dict[str, dict] = {}
    exact = None
    for name, kw in searches.items():
        if restore is not None:
            rec.build_index(kw[0], **kw[1])
        ids = run(users.features, kw)
        exact = ids if exact is None else exact  # the first search listed is the exact one
        out[name] = {"recall": precision_recall_f(ids, users.truth_indptr, users.truth_items)["recall"],
                     "share_of_exact": share_of_exact(ids, exact),
                     **one_user_latency_ms(lambda f: run(f, kw), users.features, calls)}
    if restore is not None:
        rec.build_index(restore[0], **restore[1])
    return out


def retrieval_lines(results: Dict[str, list], M: int) -> list:
    """Markdown lines: per method and search, Recall@M, share of the exact top-M and one
    user's latency, mean over the seeds that measured them (none: no lines)."""
    lines = []
    for m, rows in results.items():
        measured = [r["retrieval"] for r in rows if r.get("retrieval")]
        for search in (measured[0] if measured else {}):
            vals = [x[search] for x in measured if search in x]
            mean = lambda k: float(np.mean([v[k] for v in vals]))  # noqa: E731
            lines.append(f"| {m} | {search} | {100 * mean('recall'):.2f} | {100 * mean('share_of_exact'):.1f} | "
                         f"{mean('p50_ms'):.2f} | {mean('p99_ms'):.2f} | {len(vals)} |")
    if not lines:
        return []
    return ["", f"Retrieval: test users, one user per call (mean over seeds)", "",
            f"| method | search | Recall@{M} (%) | share of the exact top-{M} (%) | p50 ms | p99 ms | seeds |",
            "|---|---|---|---|---|---|---|", *lines]


__all__ = ["retrieval_costs", "retrieval_lines", "one_user_latency_ms", "share_of_exact"]
