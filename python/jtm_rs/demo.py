"""The whole JTM pipeline on generated data (``jtm-rs demo``, also ``python -m jtm_rs.demo``).

Generates behaviours with a planted item hierarchy (:mod:`jtm_rs.synthetic`), splits users
into train / validation / test (paper protocol), then on the test users reports
Precision/Recall/F@M of:

* JTM-H on the initial category tree (the model trained once, before any tree learning);
* JTM: ``--iterations`` rounds of joint learning (Algorithm 1), beam search;
* the same final model scoring every item (the paper's brute-force "DNN" row);
* JTM-J: the same loop without the hierarchical user representation;
* the planted tree with a model trained on it (what tree learning could at best find);

with the wall time of each phase, and the objective (eq. 2) across rounds.
"""

from __future__ import annotations

import argparse
import time
from typing import TYPE_CHECKING, Dict, List, Optional

from .config import TREE_CHANGES

if TYPE_CHECKING:  # the CLI reads add_arguments before torch is imported
    from .config import IterationRecord
    from .jtm import JTM


#: The default demo and ``--full`` (the larger demo of the README's results).
SIZES = {
    "default": dict(items=4096, users=4000, iterations=2, examples_per_epoch=30000),
    "full": dict(items=8192, users=8000, iterations=3, examples_per_epoch=60000),
}
#: Minutes on 2 cores (measured: the README's "How long things take"), said at the start.
MINUTES = {"default": "about 3", "full": "about 5"}


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--full", action="store_true",
                   help="the larger demo: 8192 items, 8000 users, 3 iterations, 60000 examples per training")
    p.add_argument("--items", type=int, default=None, help="corpus size (default 4096; --full: 8192)")
    p.add_argument("--users", type=int, default=None, help="users generated (default 4000; --full: 8000)")
    p.add_argument("--iterations", type=int, default=None, help="tree learnings in the joint loop (default 2; --full: 3)")
    p.add_argument("--examples-per-epoch", type=int, default=None,
                   help="training examples per model training, the main bound on time (default 30000; --full: 60000)")
    p.add_argument("--m", type=int, default=50, help="M of Precision/Recall/F@M (paper: 200)")
    p.add_argument("--on-tree-change", choices=TREE_CHANGES, default="auto",
                   help="what the model keeps when the tree changes (JTMConfig.on_tree_change)")
    p.add_argument("--no-ablation", action="store_true", help="skip the JTM-J and planted-tree runs")
    p.add_argument("--device", default=None, help="torch device (default: cuda if available)")
    p.add_argument("--threads", type=int, default=None, help="threads of the Rust core and of torch together")
    p.add_argument("--seed", type=int, default=0, help="seed of the generator, the split and the models")
    p.add_argument("--save", default=None, help="save the learned JTM model to this directory")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress, only the results")


def run(a: argparse.Namespace) -> List[Dict]:
    from . import synthetic
    from .jtm import JTM

    size = "full" if getattr(a, "full", False) else "default"
    for k, v in SIZES[size].items():
        if getattr(a, k, None) is None:
            setattr(a, k, v)
    planned = SIZES[size] == {k: getattr(a, k) for k in SIZES[size]}
    print(f"demo: {a.items} items, {a.users} users, {a.iterations} iterations, {a.examples_per_epoch} examples per "
          f"training" + (f"; {MINUTES[size]} minutes on 2 cores" if planned and not a.no_ablation else ""), flush=True)
    t0 = time.perf_counter()
    gen = synthetic.generate(a.items, a.users, seed=a.seed)
    split = gen.interactions.filter_users(10).split(0.1, 0.1, seed=a.seed)
    print(
        f"generated {len(gen.interactions)} behaviours of {gen.interactions.n_users} users on "
        f"{gen.interactions.n_items} items in {time.perf_counter() - t0:.1f} s; "
        f"users train/valid/test {split.train.n_users}/{split.validation.n_users}/{split.test.n_users}",
        flush=True,
    )
    common = dict(
        iterations=a.iterations,
        max_examples_per_epoch=a.examples_per_epoch,
        validation_m=a.m,
        validation_users=1000,
        on_tree_change=a.on_tree_change,
        seed=a.seed,
    )
    progress = not a.quiet
    rows: List[Dict] = []

    def row(name: str, tree: str, model: JTM, method: str = "beam", **seconds) -> None:
        t = time.perf_counter()
        r = model.evaluate(split.test, a.m, method=method)
        rows.append(dict(method=name, tree=tree, **r, eval_s=time.perf_counter() - t, **seconds))

    def seconds(history: List[IterationRecord]) -> Dict[str, float]:
        return {
            "train_s": sum(h.seconds.get("train", 0.0) for h in history),
            "learn_tree_s": sum(h.seconds.get("learn_tree", 0.0) for h in history),
        }

    jtm = JTM(device=a.device, n_threads=a.threads, **common)

    def on_round(record: IterationRecord) -> None:
        if record.iteration == 0:  # the model trained on the category tree, before tree learning
            row("JTM-H", "initial (category)", jtm, train_s=record.seconds["train"])

    jtm.fit(split, show_progress=progress, callback=on_round)
    row("JTM", f"learned ({a.iterations} iterations)", jtm, **seconds(jtm.history))
    row("DNN (brute force)", "none: scores every item", jtm, method="brute_force")
    history = jtm.history
    if a.save:
        jtm.save(a.save)
    if not a.no_ablation:
        flat = JTM(device=a.device, n_threads=a.threads, hierarchical=False, **common).fit(split, show_progress=progress)
        row("JTM-J (no hierarchy)", f"learned ({a.iterations} iterations)", flat, **seconds(flat.history))
        planted = JTM(device=a.device, n_threads=a.threads, **{**common, "iterations": 0})
        planted.fit(split, tree=gen.planted_tree(), show_progress=progress)
        row("JTM-H", "planted (generator's)", planted, **seconds(planted.history))

    print(f"\nTest users: {rows[0]['n_users']}, M = {a.m}, {gen.interactions.n_items} items")
    print(_table(rows, a.m))
    print("\nObjective (eq. 2, nats per example on a fixed sample of training examples):")
    print("| round | after training | after tree learning | valid Recall@M |")
    print("| --- | --- | --- | --- |")
    for h in history:
        after = "" if h.objective_after_tree_learning is None else f"{h.objective_after_tree_learning:.3f}"
        print(f"| {h.iteration} | {h.objective:.3f} | {after} | {h.validation.get('recall', float('nan')):.4f} |")
    print(f"\ntotal {time.perf_counter() - t0:.0f} s")
    return rows


def _table(rows: List[Dict], m: int) -> str:
    out = [
        f"| method | tree | Precision@{m} | Recall@{m} | F@{m} | train s | learn-tree s | eval s |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in rows:
        tr = f"{r['train_s']:.1f}" if "train_s" in r else ""
        lt = f"{r['learn_tree_s']:.1f}" if "learn_tree_s" in r else ""
        out.append(
            f"| {r['method']} | {r['tree']} | {r['precision']:.4f} | {r['recall']:.4f} | "
            f"{r['f_measure']:.4f} | {tr} | {lt} | {r['eval_s']:.2f} |"
        )
    return "\n".join(out)


def main(argv: Optional[List[str]] = None) -> None:
    p = argparse.ArgumentParser(prog="jtm-rs demo", description=__doc__.split("\n\n")[0])
    add_arguments(p)
    run(p.parse_args(argv))


if __name__ == "__main__":
    main()
