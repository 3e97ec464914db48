"""``jtm-rs experiment``: the paper's comparison (Table 1 and Figure 2) on one data set.

For every seed the users are split (train / validation / test, disjoint) and every method is
fitted on the training users and measured on the test users with the one P/R/F@M code. Each
finished (method, seed) is written to ``DIR/results/`` at once, so a rerun after a crash or an
interrupt only runs what is missing; ``table.md``, ``table.csv`` and ``figure2.png`` are
rewritten from all cached results at the end.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
import time
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import numpy as np

from ..baselines import TorchRecommender
from ..beam_diagnostics import beam_recall_by_level
from ..data import Interactions
from ..exceptions import InvalidInputError
from ..jtm import JTM
from . import new_items, time_split
from .methods import METHODS, SHARES_FIT, Budget, make
from .retrieval_costs import retrieval_costs, retrieval_lines


PROTOCOLS = ("users", "new-items", "time")


def _validation_m(rec) -> int:
    """The M of a recommender's per-round validation metrics."""
    config = getattr(rec, "config", None)
    return getattr(config, "validation_m", 200)


def _log(msg: str) -> None:
    print(msg, flush=True)


@dataclasses.dataclass
class Experiment:
    data: Interactions
    out: Path
    methods: Sequence[str] = ("popularity", "itemcf", "dnn", "jtm")
    seeds: Sequence[int] = (0,)
    M: int = 200
    validation: float = 0.1
    test: float = 0.1
    min_interactions: int = 10
    budget: Budget = dataclasses.field(default_factory=Budget)
    show_progress: Optional[bool] = None
    data_name: str = "data"
    #: "users" (Table 1: every method on a user split), "new-items" (:mod:`.new_items`) or
    #: "time" (:mod:`.time_split`).
    protocol: str = "users"

    def __post_init__(self) -> None:
        unknown = [m for m in self.methods if m not in METHODS]
        if unknown:
            raise InvalidInputError(f"unknown method(s) {unknown}; known: {', '.join(METHODS)}")
        if self.protocol not in PROTOCOLS:
            raise InvalidInputError(f"protocol must be one of {PROTOCOLS}, got {self.protocol!r}")
        self.out = Path(self.out)
        if self.show_progress is None:
            self.show_progress = sys.stderr.isatty()

    def result_path(self, method: str, seed: int) -> Path:
        return self.out / "results" / f"{method}-seed{seed}.json"

    def run(self) -> Dict[str, List[dict]]:
        """Runs every missing (method, seed); returns all results by method."""
        (self.out / "results").mkdir(parents=True, exist_ok=True)
        (self.out / "experiment.json").write_text(json.dumps(self._describe(), indent=1))
        t0 = time.perf_counter()
        data = self.data.filter_users(self.min_interactions)
        _log(f"{self.data_name}: {len(data)} behaviours, {data.n_users} users with >= {self.min_interactions}, "
             f"{data.n_items} items ({time.perf_counter() - t0:.1f} s)")
        if self.protocol != "users":  # stale / updated / refit rows (docs/lifecycle.md)
            one_seed = {
                "new-items": lambda seed: new_items.run_seed(data, seed, self.budget, self.M, self.validation, self.test),
                "time": lambda seed: time_split.run_seed(data, seed, self.budget, self.M),
            }[self.protocol]
            new_items.run(self.out, self.seeds, one_seed, self.protocol, self.data_name, _log)
            return {}
        for seed in self.seeds:
            todo = [m for m in self.methods if not self.result_path(m, seed).exists()]
            for m in self.methods:
                if m not in todo:
                    _log(f"[seed {seed}] {m}: cached in {self.result_path(m, seed)}")
            if not todo:
                continue
            split = data.split(self.validation, self.test, seed=seed)
            test_users = split.test.evaluation_users()
            _log(f"[seed {seed}] split: {split.train.n_users} train / {split.validation.n_users} validation / "
                 f"{split.test.n_users} test users")
            # A method of SHARES_FIT retrieves with another's fitted model: fit that one first.
            todo.sort(key=lambda m: m in SHARES_FIT)
            fitted: Dict[str, tuple] = {}
            for m in todo:
                base = SHARES_FIT.get(m)
                if base in fitted:
                    shared, fit_s, _ = fitted[base]
                    rec, curve = make(m, self.budget, seed, shared=shared), []
                else:
                    rec, fit_s, curve = self._fit(m, split, seed, test_users)
                    fitted[m] = (rec, fit_s, curve)
                t = time.perf_counter()
                metrics = rec.evaluate(test_users, self.M)
                eval_s = time.perf_counter() - t
                result = {
                    "method": m, "seed": seed, "M": self.M, "test": metrics,
                    "fit_seconds": fit_s, "evaluate_seconds": eval_s,
                    "curve": curve, "params": getattr(rec, "params", {}),
                }
                if isinstance(rec, JTM):  # where its beam loses the test users' items
                    result["beam_by_level"] = beam_recall_by_level(rec, test_users, self.M).tolist()
                if isinstance(rec, TorchRecommender):  # its passes, stopped on validation users
                    result["passes"] = [dataclasses.asdict(h) for h in rec.history]
                costs = retrieval_costs(rec, test_users, self.M)  # each search's latency (and recall)
                if costs:
                    result["retrieval"] = costs
                _write_json(self.result_path(m, seed), result)
                _log(f"[seed {seed}] {m}: fit {fit_s:.1f} s, evaluate {eval_s:.1f} s: "
                     f"P/R/F@{self.M} {100 * metrics['precision']:.2f}/{100 * metrics['recall']:.2f}/"
                     f"{100 * metrics['f_measure']:.2f} % on {metrics['n_users']} test users")
        results = self.report()
        _log(f"({time.perf_counter() - t0:.0f} s in all)")
        return results

    def report(self) -> Dict[str, List[dict]]:
        """Writes ``table.md``, ``table.csv``, ``figure2.png`` and ``beam_levels.png`` from the
        cached results only (nothing is fitted); returns them by method."""
        results = self.collect()
        self.out.mkdir(parents=True, exist_ok=True)
        write_table(results, self.out, self.M, self.data_name)
        write_figure(results, self.out, self.M, self.data_name)
        write_beam_figure(results, self.out, self.M, self.data_name)
        missing = [f"{m}-seed{s}" for m in self.methods for s in self.seeds if not self.result_path(m, s).exists()]
        _log(f"wrote {self.out / 'table.md'}, {self.out / 'table.csv'}, {self.out / 'figure2.png'}, "
             f"{self.out / 'beam_levels.png'}"
             + (f"; not run yet: {', '.join(missing)}" if missing else ""))
        return results

    def _fit(self, m: str, split, seed: int, test_users):
        """Fits method ``m``; returns it, the fit's seconds and its curve: the test metrics
        after every round of a method that learns in rounds (Figure 2), the time those
        measurements took not counted."""
        rec = make(m, self.budget, seed)
        curve: List[dict] = []
        eval_time = [0.0]

        def on_round(record) -> None:
            t1 = time.perf_counter()
            r = rec.evaluate(test_users, self.M)
            eval_time[0] += time.perf_counter() - t1
            # The validation users' metrics (what settings are chosen on) next to the test's.
            curve.append({"iteration": record.iteration, **r, "objective": record.objective,
                          "validation": dict(record.validation), "seconds": dict(record.seconds)})
            valid = record.validation.get("recall")
            shown = "" if valid is None else f", validation R@{_validation_m(rec)} {100 * valid:.2f} %"
            _log(f"[seed {seed}] {m}: round {record.iteration} trained in {record.seconds.get('train', 0):.1f} s, "
                 f"test R@{self.M} {100 * r['recall']:.2f} %{shown}")

        t = time.perf_counter()
        rec.fit(split, show_progress=self.show_progress, callback=on_round)
        fit_s = time.perf_counter() - t - eval_time[0]
        for c, h in zip(curve, rec.history):  # fill in what tree learning measured later
            c["objective_after_tree_learning"] = h.objective_after_tree_learning
            c["objective_by_level"] = h.objective_by_level
            c["objective_by_level_after_tree_learning"] = h.objective_by_level_after_tree_learning
            c["seconds"] = dict(h.seconds)
        return rec, fit_s, curve

    def _describe(self) -> dict:
        return {
            "data": self.data_name, "methods": list(self.methods), "seeds": list(self.seeds), "M": self.M,
            "validation": self.validation, "test": self.test, "min_interactions": self.min_interactions,
            "budget": dataclasses.asdict(self.budget),
        }

    def collect(self) -> Dict[str, List[dict]]:
        out: Dict[str, List[dict]] = {}
        for m in self.methods:
            for s in self.seeds:
                p = self.result_path(m, s)
                if p.exists():
                    out.setdefault(m, []).append(json.loads(p.read_text()))
        return out


def _write_json(path: Path, obj) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(obj, indent=1))
    os.replace(tmp, path)  # atomic: a crash never leaves a half-written result


def _summary(rows: List[dict], key: str):
    v = np.array([100 * r["test"][key] for r in rows])
    return v.mean(), (v.std(ddof=1) if len(v) > 1 else 0.0)


def write_table(results: Dict[str, List[dict]], out: Path, M: int, name: str) -> None:
    """Table 1: P/R/F@M in % (mean ± std over seeds), test users, wall time per method."""
    lines = [
        f"Table 1 on {name}: test users, @M = {M}, mean ± std over seeds (no ± where one seed ran)",
        "",
        f"| method | Precision@{M} (%) | Recall@{M} (%) | F-measure@{M} (%) | seeds | test users | fit (s) | evaluate (s) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    csv = ["method,precision_mean,precision_std,recall_mean,recall_std,f_mean,f_std,seeds,test_users,fit_seconds,evaluate_seconds"]
    for m, rows in results.items():
        p, r, f = (_summary(rows, k) for k in ("precision", "recall", "f_measure"))
        fit = np.mean([x["fit_seconds"] for x in rows])
        ev = np.mean([x["evaluate_seconds"] for x in rows])
        users = int(np.mean([x["test"]["n_users"] for x in rows]))
        fit_note = f" (the {SHARES_FIT[m]} fit)" if m in SHARES_FIT else ""
        pm = (lambda v: f"{v[0]:.2f} ± {v[1]:.2f}") if len(rows) > 1 else (lambda v: f"{v[0]:.2f}")  # no std of one seed
        lines.append(
            f"| {m} | {pm(p)} | {pm(r)} | {pm(f)} | "
            f"{len(rows)} | {users} | {fit:.0f}{fit_note} | {ev:.1f} |"
        )
        csv.append(f"{m},{p[0]:.4f},{p[1]:.4f},{r[0]:.4f},{r[1]:.4f},{f[0]:.4f},{f[1]:.4f},{len(rows)},{users},{fit:.1f},{ev:.2f}")
    lines += retrieval_lines(results, M)
    (out / "table.md").write_text("\n".join(lines) + "\n")
    (out / "table.csv").write_text("\n".join(csv) + "\n")


def write_figure(results: Dict[str, List[dict]], out: Path, M: int, name: str) -> None:
    """Figure 2: test P/R/F@M after each training of the joint loop, for every JTM variant
    with a curve (JTM's tree learning against TDM's clustering, and the ablations)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8))
    drawn = False
    for m, rows in results.items():
        curves = [r["curve"] for r in rows if r.get("curve")]
        if not curves:
            continue
        n = min(len(c) for c in curves)
        for ax, key, label in zip(axes, ("precision", "recall", "f_measure"), ("Precision", "Recall", "F-measure")):
            v = np.array([[100 * c[i][key] for i in range(n)] for c in curves])
            ax.errorbar(np.arange(n), v.mean(0), yerr=v.std(0) if len(v) > 1 else None, marker="o", capsize=3, label=m)
            ax.set_xlabel("joint iteration (tree learnings before this training)")
            ax.set_ylabel(f"{label}@{M} (%)")
            ax.set_xticks(np.arange(n))
        drawn = True
    if drawn:
        axes[0].legend()
    fig.suptitle(f"{name}: test users after each training")
    fig.tight_layout()
    fig.savefig(out / "figure2.png", dpi=110)
    plt.close(fig)


def write_beam_figure(results: Dict[str, List[dict]], out: Path, M: int, name: str) -> None:
    """Per level, the share of the test users' true items whose ancestor is still in the beam
    (:func:`jtm_rs.beam_diagnostics.beam_recall_by_level`; mean over seeds), one line per tree
    method: where each loses recall. The last level is Recall@M."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 4))
    drawn = False
    for m, rows in results.items():
        levels = [r["beam_by_level"] for r in rows if r.get("beam_by_level")]
        if not levels:
            continue
        n = min(len(v) for v in levels)  # seeds' trees may differ in depth by one
        v = 100 * np.array([x[len(x) - n :] for x in levels])
        ax.plot(np.arange(len(levels[0]) - n, len(levels[0])), v.mean(0), marker="o", label=m)
        drawn = True
    if not drawn:
        plt.close(fig)
        return
    ax.set_xlabel("tree level (the last: the leaves)")
    ax.set_ylabel("true items with their ancestor in the beam (%)")
    ax.legend()
    ax.set_title(f"{name}: where the beam (k = M = {M}) loses the test users' items")
    fig.tight_layout()
    fig.savefig(out / "beam_levels.png", dpi=110)
    plt.close(fig)
