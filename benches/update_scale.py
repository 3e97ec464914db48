"""An update against a fit from scratch at scale: generated data of ``--items`` items, the
``--new-share`` of items whose first behaviour comes latest (and every behaviour on them) held
out of the first fit, then ``JTM.update`` with the training users' behaviours on them (replaying
the first fit's training behaviours), then a fit from scratch on everything with the same budget.

    python benches/update_scale.py --items 20000 --threads 2
    python benches/update_scale.py --items 1000000 --new-share 0.015 --examples 1500000 --iterations 3 --threads 2

Prints one Markdown table: per model the seconds of its fit or update, Recall@200 of the test
users over all their items and over the new items alone, and one user's retrieval latency
(p50 / p99 over ``--latency-calls`` calls); and the update's seconds as a share of the refit's.
"""

from __future__ import annotations

import argparse
import time


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--items", type=int, default=20000)
    p.add_argument("--users", type=int, default=None, help="default: items / 5")
    p.add_argument("--new-share", type=float, default=0.15, help="share of items held out as new")
    p.add_argument("--examples", type=int, default=20000, help="training examples per training")
    p.add_argument("--iterations", type=int, default=1, help="tree learnings per fit")
    p.add_argument("--eval-users", type=int, default=500)
    p.add_argument("--latency-calls", type=int, default=50)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args()

    import numpy as np

    from jtm_rs import JTM, synthetic
    from jtm_rs.data import Split
    from jtm_rs.experiments.new_items import late_items, recall_on
    from jtm_rs.experiments.retrieval_costs import one_user_latency_ms
    from jtm_rs.metrics import precision_recall_f

    data = synthetic.generate(a.items, a.users or max(1000, a.items // 5), seed=a.seed).interactions.filter_users(10)
    split = data.split(0.1, 0.1, seed=a.seed)
    new_items = late_items(data, a.new_share)
    stale_split = Split(*(x.select_items(new_items, invert=True) for x in (split.train, split.validation, split.test)))
    ev = split.test.evaluation_users()
    ev = ev.subset(np.arange(min(a.eval_users, len(ev))))
    fresh = split.train.select_items(new_items)
    budget = dict(iterations=a.iterations, max_examples_per_epoch=a.examples, seed=a.seed, n_threads=a.threads,
                  validation_users=500)
    rows = []

    def measure(name: str, model: JTM, seconds: float) -> None:
        ids, _ = model.retrieve(ev.features, 200, on_unknown="ignore")
        lat = one_user_latency_ms(lambda f: model.retrieve(f, 200, on_unknown="ignore"), ev.features, a.latency_calls)
        rows.append((name, seconds, precision_recall_f(ids, ev.truth_indptr, ev.truth_items)["recall"],
                     recall_on(ids, ev, new_items)["recall"], lat))

    t = time.perf_counter()
    model = JTM(**budget).fit(stale_split, show_progress=False)
    measure("first fit (stale)", model, time.perf_counter() - t)
    t = time.perf_counter()
    record = model.update(fresh, replay=stale_split.train, show_progress=False)
    update_s = time.perf_counter() - t
    measure("updated", model, update_s)
    t = time.perf_counter()
    refit = JTM(**budget).fit(split, show_progress=False)
    refit_s = time.perf_counter() - t
    measure("refit", refit, refit_s)

    print(f"\n{data.n_items:,} items, {len(data):,} behaviours; {len(new_items):,} new items with "
          f"{len(fresh):,} training behaviours; {len(ev)} test users; update phases (s): "
          + ", ".join(f"{k} {v:.1f}" for k, v in record.seconds.items())
          + f"; {record.levels_added} level(s) added, {record.cold_items} cold item(s)\n")
    print("| model | seconds | Recall@200 | Recall@200 on new items | p50 ms | p99 ms |")
    print("|---|---|---|---|---|---|")
    for name, s, r, rn, lat in rows:
        print(f"| {name} | {s:.0f} | {100 * r:.2f} % | {100 * rn:.2f} % | {lat['p50_ms']:.2f} | {lat['p99_ms']:.2f} |")
    print(f"\nupdate / refit seconds: {update_s / refit_s:.3f}")


if __name__ == "__main__":
    main()
