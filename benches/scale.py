"""How each phase of a JTM run grows with the catalogue: generated data of ``--items`` items,
one fit with a documented budget, then retrieval (beam search against brute force, and the
latency of one user's call).

    python benches/scale.py --items 100000                      # users: items / 5
    python benches/scale.py --items 1000000 --examples 20000 --iterations 1 --threads 2

    python benches/scale.py --user-behavior ub.csv --examples 20000 --iterations 1 --threads 2

Prints one Markdown table: per phase its seconds, the process's resident memory after it and
its peak so far (GiB), that peak's growth over the process before the data (after the imports)
per item and per behaviour of the data, and a note (rates, sizes). Every phase runs once; rerun
for spread. ``--user-behavior`` reads a UserBehavior-layout CSV (``benches/write_user_behavior.py``
writes generated data in it) with the project's loader instead of generating.

Tree learning's *scored pairs* are the (sample, node) pairs its ``weights_fn`` scores: per kept
sample (at most ``max_samples_per_item`` per item) and per segment ``s..e``, the
``b + b² + … + b^(e−s+1)`` nodes of the parent's subtree.
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import time

from jtm_rs.config import JTMConfig

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from arithmetic import gemm_flops_per_s  # noqa: E402
from peak_trace import PeakTrace  # noqa: E402

JTM_DEFAULTS = JTMConfig()


def rss_gib() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 2**20
    return float("nan")


def peak_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--items", type=int, default=None, help="items to generate (or --user-behavior)")
    p.add_argument("--users", type=int, default=None, help="default: items / 5")
    p.add_argument("--iterations", type=int, default=1)
    p.add_argument("--examples", type=int, default=20000, help="training examples per training (the budget)")
    p.add_argument("--eval-users", type=int, default=200, help="test users of the beam/brute-force comparison")
    p.add_argument("--latency-calls", type=int, default=30)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--device", default="cpu")
    p.add_argument("--initial-tree", default="kmeans", choices=["kmeans", "random", "category"],
                   help="the initial tree (generated data has categories)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--save", default=None, metavar="DIR", help="save the fitted model here (jtm-rs serve reads it)")
    p.add_argument("--user-behavior", default=None, metavar="CSV",
                   help="load this UserBehavior-layout file instead of generating (--items is then ignored)")
    p.add_argument("--max-samples-per-item", type=int, default=JTM_DEFAULTS.max_samples_per_item,
                   help="tree learning's samples per item (JTMConfig)")
    p.add_argument("--trace-peak", action="store_true",
                   help="note the Python stack at each new resident-memory high and print the highest (peak_trace.py)")
    a = p.parse_args()
    if (a.items is None) == (a.user_behavior is None):
        p.error("give --items N (generate) or --user-behavior CSV (load), not both")

    import numpy as np
    import torch

    from jtm_rs import JTM, synthetic
    from jtm_rs.tree_policy import initial_tree

    rows = []
    tracer = PeakTrace().start() if a.trace_peak else None
    base = rss_gib()  # the process before any data: interpreter, torch, the extension
    size = {"items": 0, "behaviours": 0}

    def phase(name: str, seconds: float, note: str = "") -> None:
        grown = max(peak_gib() - base, 0.0) * 2**30
        rows.append((name, seconds, rss_gib(), peak_gib(), grown / max(size["items"], 1),
                     grown / max(size["behaviours"], 1), note))
        print(f"{name}: {seconds:.1f} s, {rss_gib():.2f} GiB ({note})", flush=True)

    def timed(name, fn, note=lambda r: ""):
        t = time.perf_counter()
        r = fn()
        phase(name, time.perf_counter() - t, note(r))
        return r

    t = time.perf_counter()
    if a.user_behavior:
        from jtm_rs.datasets import load_user_behavior

        data = load_user_behavior(a.user_behavior, show_progress=False)
        source = "load (UserBehavior CSV)"
    else:
        users = a.users or max(1000, a.items // 5)
        data = synthetic.generate(a.items, users, seed=a.seed).interactions  # the planted tree is dropped
        source = "generate"
    size.update(items=data.n_items, behaviours=len(data))
    phase(source, time.perf_counter() - t, f"{len(data):,} behaviours of {data.n_users:,} users, {data.n_items:,} items")
    t = time.perf_counter()
    split = data.filter_users(10).split(0.1, 0.1, seed=a.seed)
    phase("split", time.perf_counter() - t, f"{split.train.n_users:,} train users")
    del data  # only the split is needed
    windows = timed("windows", lambda: split.train.training_windows(), lambda w: f"{len(w):,} training examples")
    cfg = JTMConfig(iterations=a.iterations, max_examples_per_epoch=a.examples, seed=a.seed,
                    validation_users=500, initial_tree=a.initial_tree,
                    max_samples_per_item=a.max_samples_per_item)
    per_training = min(a.examples, len(windows)) * cfg.epochs
    work = tree_learning_work(windows.targets, cfg)
    del windows
    tree = timed(f"initial tree ({a.initial_tree})", lambda: initial_tree([split.train, split.validation, split.test], cfg, a.threads),
                 lambda t: f"{t.n_items:,} items, {t.leaf_level} levels")
    jtm = JTM(cfg, device=a.device, n_threads=a.threads)
    t0 = time.perf_counter()
    jtm.fit(split, tree=tree, show_progress=False)
    fit_s = time.perf_counter() - t0
    if a.save:
        jtm.save(a.save)  # e.g. for benches/serve_load.py
    for r in jtm.history:
        s = r.seconds
        fixed = s.get("behaviour_leaves", 0.0)  # the round's features, whatever its examples
        phase(f"round {r.iteration}: training", s["train"], f"{per_training / s['train']:,.0f} examples/s; "
              f"{fixed:.1f} s of it the behaviour leaves, {per_training / max(s['train'] - fixed, 1e-9):,.0f} "
              "examples/s without them")
        if "validate" in s:
            phase(f"round {r.iteration}: validation", s["validate"], "500 users, beam")
        if "learn_tree" in s:
            pairs, flops = work(tree.arity, tree.leaf_level)
            phase(f"round {r.iteration}: tree learning", s["learn_tree"],
                  f"objective {r.objective:.3f} -> {r.objective_after_tree_learning:.3f}; "
                  f"{pairs / s['learn_tree']:,.0f} scored pairs/s, {flops / s['learn_tree'] / 1e9:.1f} GFLOP/s")
    learn = sum(r.seconds.get("learn_tree", 0.0) for r in jtm.history)
    phase("fit (all rounds)", fit_s, f"tree learning {learn / fit_s:.0%} of it")

    ev = split.test.evaluation_users()
    ev = ev.subset(np.arange(min(a.eval_users, len(ev))))
    t = time.perf_counter()
    beam = jtm.evaluate(ev, 200)
    beam_s = time.perf_counter() - t
    t = time.perf_counter()
    brute = jtm.evaluate(ev, 200, method="brute_force")
    brute_s = time.perf_counter() - t
    phase("evaluate: beam search", beam_s, f"{len(ev) / beam_s:,.1f} users/s, Recall@200 {beam['recall']:.4f}")
    phase("evaluate: brute force", brute_s, f"{len(ev) / brute_s:,.1f} users/s, Recall@200 {brute['recall']:.4f}; "
          f"beam {brute_s / beam_s:.1f}x faster at {beam['recall'] / max(brute['recall'], 1e-12):.2f}x its recall")

    lat = []
    for i in range(a.latency_calls):
        t = time.perf_counter()
        jtm.retrieve(ev.features[i % len(ev)][None, :], 200)
        lat.append(time.perf_counter() - t)
    lat_ms = 1e3 * np.array(lat)
    phase("one user's retrieve (M=200)", float(np.sum(lat)),
          f"p50 {np.percentile(lat_ms, 50):.1f} ms, p99 {np.percentile(lat_ms, 99):.1f} ms over {a.latency_calls} calls")

    print(f"\n{size['items']:,} items, {size['behaviours']:,} behaviours, {a.iterations} iteration(s), {per_training:,} "
          f"examples per training, device {a.device}, torch threads {torch.get_num_threads()}, n_threads {a.threads}, "
          f"{base:.2f} GiB before the data\n")
    threads = a.threads or os.cpu_count()  # every core the run may use: the limit of the machine
    pairs, flops = work(tree.arity, tree.leaf_level)
    gemm = gemm_flops_per_s(threads)
    print(f"tree learning scores {pairs:,} pairs ({flops / 1e9:,.0f} GFLOP) per round; this machine's GEMM of the "
          f"MLP's shape runs {gemm / 1e9:.0f} GFLOP/s on {threads} thread(s): an arithmetic limit of "
          f"{flops / gemm:.1f} s ({gemm / flops * pairs:,.0f} pairs/s)\n")
    print("| phase | seconds | resident GiB after | peak GiB so far | peak growth bytes/item | bytes/behaviour | note |")
    print("|---|---|---|---|---|---|---|")
    for name, s, rss, peak, per_item, per_beh, note in rows:
        print(f"| {name} | {s:.1f} | {rss:.2f} | {peak:.2f} | {per_item:,.0f} | {per_beh:,.0f} | {note} |")
    if tracer is not None:
        print("\nthe highest resident marks and where the main thread was:\n" + tracer.report())


def tree_learning_work(targets, cfg):
    """``(arity, leaf_level) -> (scored pairs, FLOPs)`` of one tree learning for these training
    targets and the default model's shapes. Per kept sample and segment of ``n`` levels: the
    user's share of the first layer once per level (``n · d_user · h1`` multiply-adds) and the
    rest of the MLP per scored pair (``h1·h2 + h2·h3 + h3``); the node's share, once per distinct
    node of a block, is left out. A multiply-add is 2 FLOPs."""
    import numpy as np

    from jtm_rs.model import TIME_WINDOWS

    _, counts = np.unique(targets, return_counts=True)
    cap = cfg.max_samples_per_item
    samples = int(np.minimum(counts, cap).sum()) if cap is not None else int(counts.sum())
    widths = [(len(TIME_WINDOWS) + 1) * cfg.embedding_dim, *cfg.hidden, 1]  # input: the windows + the node
    d_user = widths[0] - cfg.embedding_dim
    rest = sum(a * b for a, b in zip(widths[1:], widths[2:]))

    def work(arity: int, leaf_level: int):
        pairs = macs = 0
        for s in range(1, leaf_level + 1, cfg.d):
            n = min(cfg.d, leaf_level - s + 1)
            p = sum(arity**k for k in range(1, n + 1))
            pairs += p
            macs += n * d_user * widths[1] + p * rest
        return samples * pairs, 2.0 * samples * macs

    return work


if __name__ == "__main__":
    main()
