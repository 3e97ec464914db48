"""An update against a fit from scratch at scale: generated data of ``--items`` items, the
``--new-share`` of items whose first behaviour comes latest (and every behaviour on them) held
out of the first fit, then ``JTM.update`` with the training users' behaviours on them (replaying
the first fit's training behaviours), then a fit from scratch on everything with the same budget.

    python benches/update_scale.py --items 20000 --threads 2
    python benches/update_scale.py --items 1000000 --new-share 0.0155 --new-behaviours 100000 \
        --examples 1500000 --iterations 3 --threads 1 --first-fit runs/first-1m --replay 1 3 10 --no-refit

Prints one Markdown table: per model the seconds of its fit or update, Recall@200 of the test
users over all their items and over the new items alone, and one user's retrieval latency
(p50 / p99 over ``--latency-calls`` calls); and each update's seconds as a share of the fit
from scratch: the refit's, or with ``--no-refit`` the first fit's (a fit from scratch on all
but the new items' behaviours, with the same budget). ``--first-fit DIR`` saves the first fit
there, or loads it when DIR holds one (its seconds are kept beside it), so that update
variants can be rerun; each ``--replay`` value is one update from the same first fit (the
configuration's other update settings as they are).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path


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
    p.add_argument("--new-behaviours", type=int, default=0,
                   help="behaviours the update brings in all: beyond the new items' own, the latest training "
                   "behaviours on known items (by place in their users' sequences) are held out of the first fit too")
    p.add_argument("--first-fit", default=None, help="directory the first fit is saved to / loaded from")
    p.add_argument("--replay", type=float, nargs="+", default=[None], help="update_replay of each update (default: the configuration's)")
    p.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                   help="a JTMConfig update field for every update (repeatable), e.g. update_learning_rate=0.002")
    p.add_argument("--no-refit", action="store_true", help="skip the fit from scratch on everything")
    p.add_argument("--refit-only", action="store_true",
                   help="only the fit from scratch on everything (to run beside the rest on another core)")
    a = p.parse_args()
    if len(a.replay) > 1 and not a.first_fit:
        p.error("several --replay values need --first-fit (each update starts from the first fit)")

    import numpy as np

    from jtm_rs import JTM, synthetic
    from jtm_rs.data import Interactions, Split
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
    if a.new_behaviours > len(fresh):  # a day's traffic: the new items' behaviours and the latest others
        tr = split.train
        starts = tr.user_starts()
        lengths = np.diff(starts)
        relative = (np.arange(len(tr)) - np.repeat(starts[:-1], lengths)) / np.repeat(lengths, lengths)
        on_new = np.isin(tr.item, new_items)
        relative[on_new] = -1.0
        late = on_new.copy()
        late[np.argsort(-relative, kind="stable")[: a.new_behaviours - len(fresh)]] = True
        rows = lambda m: Interactions(tr.user[m], tr.item[m], tr.timestamp[m],  # noqa: E731
                                      None if tr.category is None else tr.category[m])
        fresh = rows(late)
        stale_split = Split(rows(~late), stale_split.validation, stale_split.test)
    budget = dict(iterations=a.iterations, max_examples_per_epoch=a.examples, seed=a.seed, n_threads=a.threads,
                  validation_users=500)
    rows = []

    def measure(name: str, model: JTM, seconds: float) -> None:
        ids, _ = model.retrieve(ev.features, 200, on_unknown="ignore")
        lat = one_user_latency_ms(lambda f: model.retrieve(f, 200, on_unknown="ignore"), ev.features, a.latency_calls)
        rows.append((name, seconds, precision_recall_f(ids, ev.truth_indptr, ev.truth_items)["recall"],
                     recall_on(ids, ev, new_items)["recall"], lat))
        print(f"{name}: {seconds:.0f} s, Recall@200 {100 * rows[-1][2]:.2f} %, on new items {100 * rows[-1][3]:.2f} % "
              f"({recall_on(ids, ev, new_items)['n_users']} users with one); new items in the top 200: "
              f"{np.isin(ids, new_items).sum(1).mean():.1f}", flush=True)

    if a.refit_only:
        t = time.perf_counter()
        refit = JTM(**budget).fit(split, show_progress=False)
        measure("refit", refit, time.perf_counter() - t)
        name, s, r, rn, lat = rows[0]
        print(f"| {name} | {s:.0f} | {100 * r:.2f} % | {100 * rn:.2f} % | {lat['p50_ms']:.2f} | {lat['p99_ms']:.2f} |")
        return
    first = Path(a.first_fit) if a.first_fit else None
    if first is not None and (first / "first_fit.json").exists():
        model, fit_s = JTM.load(first, n_threads=a.threads), json.loads((first / "first_fit.json").read_text())["seconds"]
    else:
        t = time.perf_counter()
        model = JTM(**budget).fit(stale_split, show_progress=False)
        fit_s = time.perf_counter() - t
        if first is not None:
            model.save(first)
            (first / "first_fit.json").write_text(json.dumps({"seconds": fit_s}))
    measure("first fit (stale)", model, fit_s)
    updates = []
    for k, replay in enumerate(a.replay):
        if k:  # each update from the first fit
            model = JTM.load(first, n_threads=a.threads)
        over = {}
        for k, v in (x.split("=", 1) for x in a.set):
            kind = type(getattr(model.config, k))
            over[k] = None if v.lower() == "none" else v.lower() == "true" if kind is bool else kind(v)
        if replay is not None:
            over["update_replay"] = replay
        model.config = dataclasses.replace(model.config, **over)
        t = time.perf_counter()
        record = model.update(fresh, replay=stale_split.train, show_progress=False)
        update_s = time.perf_counter() - t
        measure(f"updated: {record.training}, {record.epochs} pass(es) at {record.learning_rate:g}, replay "
                f"{record.replay:g}", model, update_s)
        updates.append((record.replay, update_s, record))
    reference, what = fit_s, "first fit (from scratch, without the new items)"
    if not a.no_refit:
        t = time.perf_counter()
        refit = JTM(**budget).fit(split, show_progress=False)
        reference, what = time.perf_counter() - t, "refit"
        measure("refit", refit, reference)

    print(f"\n{data.n_items:,} items, {len(data):,} behaviours; {len(new_items):,} new items with "
          f"{int(np.isin(fresh.item, new_items).sum()):,} training behaviours; the update brings {len(fresh):,} "
          f"behaviours in all; {len(ev)} test users")
    for replay, _, record in updates:
        print(f"update, replay {replay:g}: phases (s) " + ", ".join(f"{k} {v:.1f}" for k, v in record.seconds.items())
              + f"; {record.replayed_examples:,} replayed examples; {record.levels_added} level(s) added, "
              f"{record.cold_items} cold item(s)")
    print("\n| model | seconds | Recall@200 | Recall@200 on new items | p50 ms | p99 ms |")
    print("|---|---|---|---|---|---|")
    for name, s, r, rn, lat in rows:
        print(f"| {name} | {s:.0f} | {100 * r:.2f} % | {100 * rn:.2f} % | {lat['p50_ms']:.2f} | {lat['p99_ms']:.2f} |")
    for replay, update_s, _ in updates:
        print(f"\nupdate (replay {replay:g}) / {what} seconds: {update_s / reference:.3f}")

if __name__ == "__main__":
    main()
