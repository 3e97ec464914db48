"""JTM's beam search beside a two-tower model's nearest-neighbour search, on generated data of
``--items`` items: per method the test users' Recall@200, its agreement with the method's own
exact search (the share of the exact top-200 it returns), and one user's latency (p50 / p99).

* JTM: beam search through the tree (``retrieve``) against brute force with the same model;
* SASRec (two-tower, sampled softmax with log-Q correction at this scale): faiss HNSW at several
  ``ef_search`` against the exact blocked inner-product search over every item.

    python benches/two_tower_retrieval.py --items 20000
    python benches/two_tower_retrieval.py --items 1000000 --examples 20000 --sasrec-users 40000 --threads 2

One fit of each with the budget given, then every search on the same ``--eval-users`` test
users; latency is one user per call, ``--latency-calls`` calls, after one warm-up call.
"""

from __future__ import annotations

import argparse
import time

import numpy as np


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--items", type=int, default=20000)
    p.add_argument("--users", type=int, default=None, help="default: items / 5")
    p.add_argument("--examples", type=int, default=20000, help="JTM's training examples per training")
    p.add_argument("--iterations", type=int, default=1, help="JTM's tree learnings")
    p.add_argument("--sasrec-users", type=int, default=None, help="training users SASRec sees (default: all)")
    p.add_argument("--sasrec-epochs", type=int, default=3)
    p.add_argument("--ef-search", type=int, nargs="+", default=[200, 400, 800])
    p.add_argument("--eval-users", type=int, default=200)
    p.add_argument("--latency-calls", type=int, default=50)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args()

    import dataclasses

    import faiss
    import torch

    from jtm_rs import JTM, synthetic
    from jtm_rs.experiments.retrieval_costs import one_user_latency_ms, share_of_exact
    from jtm_rs.metrics import precision_recall_f
    from jtm_rs.two_tower import SASRec

    if a.threads:
        torch.set_num_threads(a.threads)
        faiss.omp_set_num_threads(a.threads)
    data = synthetic.generate(a.items, a.users or max(1000, a.items // 5), seed=a.seed).interactions
    split = data.filter_users(10).split(0.1, 0.1, seed=a.seed)
    ev = split.test.evaluation_users()
    ev = ev.subset(np.arange(min(a.eval_users, len(ev))))
    M = 200
    recall = lambda ids: precision_recall_f(ids, ev.truth_indptr, ev.truth_items)["recall"]  # noqa: E731
    rows = []

    t = time.perf_counter()
    jtm = JTM(iterations=a.iterations, max_examples_per_epoch=a.examples, validation_users=500, seed=a.seed,
              n_threads=a.threads).fit(split, show_progress=False)
    jtm_fit = time.perf_counter() - t
    exact, _ = jtm.retrieve(ev.features, M, method="brute_force")
    beam, _ = jtm.retrieve(ev.features, M)
    lat = one_user_latency_ms(lambda f: jtm.retrieve(f, M), ev.features, a.latency_calls)
    rows.append(("JTM", "brute force (every item)", recall(exact), 1.0, one_user_latency_ms(
        lambda f: jtm.retrieve(f, M, method="brute_force"), ev.features, max(a.latency_calls // 5, 3)), jtm_fit))
    rows.append(("JTM", f"beam search (k = {M})", recall(beam), share_of_exact(beam, exact), lat, jtm_fit))

    train = split.train
    if a.sasrec_users and a.sasrec_users < train.n_users:
        keep = np.random.default_rng(a.seed).choice(train.users, a.sasrec_users, replace=False)
        split = dataclasses.replace(split, train=train.select_users(np.sort(keep)))
    t = time.perf_counter()
    sas = SASRec(max_epochs=a.sasrec_epochs, seed=a.seed, n_threads=a.threads, validation_users=500)
    sas.fit(split, show_progress=False)
    sas_fit = time.perf_counter() - t
    exact, _ = sas.retrieve(ev.features, M)
    rows.append(("SASRec", "exact (blocked inner product)", recall(exact), 1.0,
                 one_user_latency_ms(lambda f: sas.retrieve(f, M), ev.features, a.latency_calls), sas_fit))
    t = time.perf_counter()
    sas.build_index("hnsw", m=32, ef_construction=200)
    build = time.perf_counter() - t
    for ef in a.ef_search:
        sas.index.ef_search = ef
        got, _ = sas.retrieve(ev.features, M)
        rows.append(("SASRec", f"HNSW (m 32, ef_search {ef}; built in {build:.0f} s)", recall(got), share_of_exact(got, exact),
                     one_user_latency_ms(lambda f: sas.retrieve(f, M), ev.features, a.latency_calls), sas_fit))

    print(f"\n{data.n_items:,} items, {len(data):,} behaviours, {len(ev)} test users, M = {M}, "
          f"torch threads {torch.get_num_threads()}, {a.latency_calls} one-user calls\n")
    print("| model | search | Recall@200 | share of its exact top-200 | p50 ms | p99 ms | fit s |")
    print("|---|---|---|---|---|---|---|")
    for model, search, r, o, lat, fit in rows:
        print(f"| {model} | {search} | {100 * r:.2f} % | {100 * o:.1f} % | {lat['p50_ms']:.2f} | "
              f"{lat['p99_ms']:.2f} | {fit:.0f} |")


if __name__ == "__main__":
    main()
