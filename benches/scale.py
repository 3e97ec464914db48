"""How each phase of a JTM run grows with the catalogue: generated data of ``--items`` items,
one fit with a documented budget, then retrieval (beam search against brute force, and the
latency of one user's call).

    python benches/scale.py --items 100000                      # users: items / 5
    python benches/scale.py --items 1000000 --examples 20000 --iterations 1 --threads 2

Prints one Markdown table: per phase its seconds, the process's resident memory after it and
its peak so far (GiB), and a note (rates, sizes). Every phase runs once; rerun for spread.
"""

from __future__ import annotations

import argparse
import resource
import time


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
    p.add_argument("--items", type=int, required=True)
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
    a = p.parse_args()

    import numpy as np
    import torch

    from jtm_rs import JTM, synthetic
    from jtm_rs.config import JTMConfig
    from jtm_rs.tree_policy import initial_tree

    rows = []

    def phase(name: str, seconds: float, note: str = "") -> None:
        rows.append((name, seconds, rss_gib(), peak_gib(), note))
        print(f"{name}: {seconds:.1f} s, {rss_gib():.2f} GiB ({note})", flush=True)

    def timed(name, fn, note=lambda r: ""):
        t = time.perf_counter()
        r = fn()
        phase(name, time.perf_counter() - t, note(r))
        return r

    users = a.users or max(1000, a.items // 5)
    gen = timed("generate", lambda: synthetic.generate(a.items, users, seed=a.seed),
                lambda g: f"{len(g.interactions):,} behaviours of {users:,} users")
    t = time.perf_counter()
    split = gen.interactions.filter_users(10).split(0.1, 0.1, seed=a.seed)
    phase("split", time.perf_counter() - t, f"{split.train.n_users:,} train users")
    del gen  # the planted tree and the full data: only the split is needed
    timed("windows", lambda: split.train.training_windows(), lambda w: f"{len(w):,} training examples")
    cfg = JTMConfig(iterations=a.iterations, max_examples_per_epoch=a.examples, seed=a.seed,
                    validation_users=500, initial_tree=a.initial_tree)
    tree = timed(f"initial tree ({a.initial_tree})", lambda: initial_tree([split.train, split.validation, split.test], cfg, a.threads),
                 lambda t: f"{t.n_items:,} items, {t.leaf_level} levels")
    jtm = JTM(cfg, device=a.device, n_threads=a.threads)
    t0 = time.perf_counter()
    jtm.fit(split, tree=tree, show_progress=False)
    fit_s = time.perf_counter() - t0
    for r in jtm.history:
        s = r.seconds
        phase(f"round {r.iteration}: training", s["train"], f"{a.examples / s['train']:,.0f} examples/s")
        if "validate" in s:
            phase(f"round {r.iteration}: validation", s["validate"], "500 users, beam")
        if "learn_tree" in s:
            phase(f"round {r.iteration}: tree learning", s["learn_tree"],
                  f"objective {r.objective:.3f} -> {r.objective_after_tree_learning:.3f}")
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

    print(f"\n{a.items:,} items, {users:,} users generated, {a.iterations} iteration(s), {a.examples:,} examples per "
          f"training, device {a.device}, torch threads {torch.get_num_threads()}, n_threads {a.threads}\n")
    print("| phase | seconds | resident GiB after | peak GiB so far | note |")
    print("|---|---|---|---|---|")
    for name, s, rss, peak, note in rows:
        print(f"| {name} | {s:.1f} | {rss:.2f} | {peak:.2f} | {note} |")


if __name__ == "__main__":
    main()
