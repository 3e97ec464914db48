"""The new-item protocol of ``jtm-rs experiment --protocol new-items`` (docs/lifecycle.md).

Data sets without a global clock: the 15 % of items whose first behaviour comes latest in
users' sequences (each item's earliest position relative to its user's sequence length) are
the new items. Per seed the users are split as the runner does; then three rows:

* **stale**: ``jtm`` fitted on every part without the new items' behaviours (its tree never
  holds them), measured on the test users (new items in their features dropped);
* **updated**: the stale model after :meth:`JTM.update` with the training users' behaviours on
  the new items, replaying the stale fit's training behaviours;
* **refit**: ``jtm`` fitted from scratch on everything.

Each row: Recall@M over all the test users' truth, and over their new items alone (users with
at least one new item in their truth); seconds of the fit, the update and the refit.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Callable, Dict, List

import numpy as np

from ..data import EvaluationUsers, Interactions, Split
from ..metrics import precision_recall_f
from .methods import Budget, make

#: The share of items held out as new.
NEW_SHARE = 0.15
ROWS = ("stale", "updated", "refit")


def late_items(data: Interactions, share: float = NEW_SHARE) -> np.ndarray:
    """Sorted ids of the ``share`` of items whose earliest behaviour, as a fraction of its
    user's sequence, is latest."""
    starts = data.user_starts()
    lengths = np.diff(starts)
    relative = (np.arange(len(data)) - np.repeat(starts[:-1], lengths)) / np.repeat(lengths, lengths)
    order = np.lexsort((relative, data.item))
    items, first = np.unique(data.item[order], return_index=True)
    earliest = relative[order][first]
    k = int(round(share * len(items)))
    return np.sort(items[np.argsort(-earliest, kind="stable")[:k]])


def recall_on(ids: np.ndarray, ev: EvaluationUsers, items: np.ndarray) -> Dict[str, float]:
    """Recall of ``ids`` over the truth items among ``items``, for the users that have one."""
    owner = np.repeat(np.arange(len(ev)), np.diff(ev.truth_indptr))
    keep = np.isin(ev.truth_items, items)
    counts = np.bincount(owner[keep], minlength=len(ev))
    users = np.flatnonzero(counts)
    if not len(users):
        return {"recall": float("nan"), "n_users": 0}
    truth = ev.truth_items[keep]
    indptr = np.concatenate([[0], np.cumsum(counts[users])])
    return {"recall": precision_recall_f(ids[users], indptr, truth)["recall"], "n_users": int(len(users))}


def measure(rec, ev: EvaluationUsers, new_items: np.ndarray, M: int, seconds: float) -> dict:
    ids, _ = rec.retrieve(ev.features, M, on_unknown="ignore")
    overall = precision_recall_f(ids, ev.truth_indptr, ev.truth_items)
    return {"recall": overall["recall"], "new_items": recall_on(ids, ev, new_items), "seconds": seconds}


def three_rows(first, update, replay, everything, ev: EvaluationUsers, new_items: np.ndarray, budget: Budget,
               seed: int, M: int) -> dict:
    """The stale (``jtm`` fitted on ``first``), updated (then updated with ``update``,
    replaying ``replay``) and refit (``jtm`` fitted on ``everything``) rows, measured on ``ev``."""
    rows = {}
    model = make("jtm", budget, seed)
    t = time.perf_counter()
    model.fit(first, show_progress=False)
    rows["stale"] = measure(model, ev, new_items, M, time.perf_counter() - t)
    t = time.perf_counter()
    record = model.update(update, replay=replay, show_progress=False)
    rows["updated"] = measure(model, ev, new_items, M, time.perf_counter() - t)
    rows["updated"]["record"] = {"new_items": record.new_items, "cold_items": record.cold_items,
                                 "levels_added": record.levels_added, "seconds": record.seconds}
    refit = make("jtm", budget, seed)
    t = time.perf_counter()
    refit.fit(everything, show_progress=False)
    rows["refit"] = measure(refit, ev, new_items, M, time.perf_counter() - t)
    return {"seed": seed, "M": M, "new_items": int(len(new_items)), "test_users": len(ev), "rows": rows}


def run_seed(data: Interactions, seed: int, budget: Budget, M: int, validation: float, test: float) -> dict:
    """The three rows for one seed."""
    split = data.split(validation, test, seed=seed)
    new_items = late_items(data)
    stale = Split(*(p.select_items(new_items, invert=True) for p in (split.train, split.validation, split.test)))
    return three_rows(stale, split.train.select_items(new_items), stale.train, split, split.test.evaluation_users(),
                      new_items, budget, seed, M)


def write_table(results: List[dict], out: Path, name: str) -> None:
    """``table.md``: per row, mean ± std over seeds of Recall@M overall and on the new items,
    and the seconds; the updated row's recall as a share of the refit's."""
    if not results:
        return
    M = results[0]["M"]

    def stat(values) -> str:
        v = 100 * np.asarray(values, float)
        return f"{v.mean():.2f}" + (f" ± {v.std(ddof=1):.2f}" if len(v) > 1 else "")

    lines = [f"Lifecycle on {name}: {results[0]['new_items']} new items, test users, @M = {M}, "
             f"{len(results)} seed(s)", "",
             f"| row | Recall@{M} (%) | Recall@{M} on new items (%) | seconds | share of refit recall (all / new) |",
             "|---|---|---|---|---|"]
    for row in ROWS:
        r = [x["rows"][row] for x in results]
        all_, new = [x["recall"] for x in r], [x["new_items"]["recall"] for x in r]
        refit = [x["rows"]["refit"] for x in results]
        share = (f"{np.mean(all_) / np.mean([x['recall'] for x in refit]):.3f} / "
                 f"{np.mean(new) / np.mean([x['new_items']['recall'] for x in refit]):.3f}")
        lines.append(f"| {row} | {stat(all_)} | {stat(new)} | {np.mean([x['seconds'] for x in r]):.0f} | {share} |")
    (out / "table.md").write_text("\n".join(lines) + "\n")


def run(out: Path, seeds, one_seed: Callable[[int], dict], tag: str, name: str, log) -> List[dict]:
    """Every missing seed of a lifecycle protocol (``one_seed(seed)`` gives its rows; cached per
    seed in ``out/results/TAG-seedS.json``), then ``table.md``."""
    (out / "results").mkdir(parents=True, exist_ok=True)
    results = []
    for seed in seeds:
        path = out / "results" / f"{tag}-seed{seed}.json"
        if not path.exists():
            result = one_seed(seed)
            path.write_text(json.dumps(result, indent=1))
            rows = result["rows"]
            log(f"[seed {seed}] {tag}: " + ", ".join(
                f"{k} R@{result['M']} {100 * v['recall']:.2f} % (new {100 * v['new_items']['recall']:.2f} %) "
                f"in {v['seconds']:.0f} s" for k, v in rows.items()))
        results.append(json.loads(path.read_text()))
    write_table(results, out, name)
    return results


__all__ = ["NEW_SHARE", "late_items", "recall_on", "measure", "three_rows", "run", "run_seed", "write_table"]
