"""Update settings side by side on one data set (the new-item protocol of docs/lifecycle.md):
one first fit without the newest 15 % of items, then each variant's ``JTM.update`` from a copy
of it, measured on the validation users (to choose) and the test users (to report), overall
and on the new items alone.

    python benches/update_variants.py data/Beauty.txt --seed 0 --threads 1

Variants are ``name=field:value,field:value`` of ``JTMConfig``'s update fields; without
``--variant`` the table of docs/lifecycle.md is run. ``--refit`` adds the fit from scratch on
everything; ``--first-fit DIR`` keeps the first fit there and reuses it on the next run. The
last column, recall on the new items when the model scores every item (brute force), says
whether new items are lost to their scores or to the beam.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import time
from pathlib import Path

import numpy as np

DEFAULT_VARIANTS = [
    "default=",
    "3 passes=update_epochs:3",
    "2 passes=update_epochs:2",
    "replay 5, 2 passes=update_replay:5,update_epochs:2",
    "replay 3, 2 passes=update_replay:3,update_epochs:2",
    "replay 3, 3 passes=update_replay:3,update_epochs:3",
    "replay 1, 3 passes=update_replay:1,update_epochs:3",
    "tree learning after, 3 passes=update_tree_learning_first:false,update_epochs:3",
    "1 pass at 2e-3, whole tree=update_learning_rate:0.002,update_tree_learning:whole",
    "only the new leaves train, 3 passes at 8e-3=update_training:new-leaves,update_learning_rate:0.008,update_epochs:3",
]


def parse(variant: str):
    name, _, fields = variant.partition("=")
    over = {}
    for pair in filter(None, fields.split(",")):
        key, _, value = pair.partition(":")
        over[key] = (value if key in ("update_tree_learning", "update_training")
                     else value.lower() == "true" if key == "update_tree_learning_first"
                     else int(value) if key == "update_epochs" else float(value))
    return name, over


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("data")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--variant", action="append", default=None, help="name=field:value,... (repeatable)")
    p.add_argument("--refit", action="store_true", help="also fit from scratch on everything")
    p.add_argument("--first-fit", default=None, metavar="DIR", help="save the first fit there, or load it")
    a = p.parse_args()

    from jtm_rs import JTM, datasets
    from jtm_rs.data import Split
    from jtm_rs.experiments.new_items import late_items, recall_on
    from jtm_rs.metrics import precision_recall_f

    data = datasets.load(a.data, show_progress=False).filter_users(10)
    split = data.split(0.1, 0.1, seed=a.seed)
    new = late_items(data)
    stale = Split(*(x.select_items(new, invert=True) for x in (split.train, split.validation, split.test)))
    users = [split.validation.evaluation_users(), split.test.evaluation_users()]

    old = np.setdiff1d(np.arange(data.n_items), new)

    def measure(model) -> str:
        out, brute, found = [], [], []
        for ev in users:
            ids, _ = model.retrieve(ev.features, 200, on_unknown="ignore")
            found.append(ids)
            out += [100 * precision_recall_f(ids, ev.truth_indptr, ev.truth_items)["recall"],
                    100 * recall_on(ids, ev, new)["recall"]]
            every, _ = model.retrieve(ev.features, 200, on_unknown="ignore", method="brute_force")
            brute.append(100 * recall_on(every, ev, new)["recall"])
        # Validation users: the old items' recall, again with the new items left out of the
        # search (what the model lost on them itself, not to new items taking their places),
        # and how many of the 200 places new items take.
        ev, ids = users[0], found[0]
        known = new[model.tree.contains(new)]
        left_out, _ = model.retrieve(ev.features, 200, on_unknown="ignore",
                                     exclude=np.tile(known, (len(ev), 1)) if len(known) else None)
        kept = [100 * recall_on(ids, ev, old)["recall"], 100 * recall_on(left_out, ev, old)["recall"]]
        return (" | ".join(f"{v:.2f}" for v in out) + " | " + " / ".join(f"{v:.2f}" for v in brute) + " | "
                + " / ".join(f"{v:.2f}" for v in kept) + f" | {np.isin(ids, new).sum(1).mean():.1f}")

    t = time.perf_counter()
    if a.first_fit and Path(a.first_fit).exists():
        first = JTM.load(a.first_fit, n_threads=a.threads)
    else:
        first = JTM(seed=a.seed, n_threads=a.threads).fit(stale, show_progress=False)
        if a.first_fit:
            first.save(a.first_fit)
    print("| update | seconds | validation (%) | on new items | test (%) | on new items | new items, brute force "
          "(validation / test) | old items (validation; new items left out) | new items in the top 200 |\n"
          "|---|---|---|---|---|---|---|---|---|")
    print(f"| first fit (stale) | {time.perf_counter() - t:.0f} | {measure(first)} |", flush=True)
    if a.refit:
        t = time.perf_counter()
        refit = JTM(seed=a.seed, n_threads=a.threads).fit(split, show_progress=False)
        print(f"| refit | {time.perf_counter() - t:.0f} | {measure(refit)} |", flush=True)
    for name, over in map(parse, a.variant or DEFAULT_VARIANTS):
        model = copy.deepcopy(first)
        model.config = dataclasses.replace(model.config, **over)
        t = time.perf_counter()
        model.update(split.train.select_items(new), replay=stale.train, show_progress=False)
        print(f"| {name} | {time.perf_counter() - t:.0f} | {measure(model)} |", flush=True)


if __name__ == "__main__":
    main()
