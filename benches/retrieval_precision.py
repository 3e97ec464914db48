"""Retrieval's scoring in bfloat16 against float32: speed, and recall on fitted models.

    python benches/retrieval_precision.py speed --items 1000000 --rounds 5
    python benches/retrieval_precision.py speed --variants float32-torch float32 bfloat16
    python benches/retrieval_precision.py recall data/Beauty.txt --seed 0 --model runs/first-Beauty-0

``speed``: a random tree over ``--items`` items (ids spread over 20 N, as generated data), the
default model untrained (the cost does not depend on the weights), torch and rayon on
``--threads``; per round, in A B C C B A order, each variant's time for ``--calls`` searches
of users (69 behaviours, M = k = 200) in batches of each of ``--batches`` users (1: one
request; a server's batches; the runner's evaluation). Variants (``--variants``, the first is
the base): ``float32`` (the Rust scoring pass), ``float32-torch`` (torch's ops),
``bfloat16`` (torch's ops under autocast). Prints each variant's median per-user milliseconds
and the per-round speed ratio over the base (min, median, max), measured in one process so
that a shared machine's noise hits all alike. Also says whether this CPU has native bfloat16
(``auto`` picks bfloat16 only there), and the arithmetic limit: the pairs a search scores,
the multiply-adds of a pair counted from the model's shapes (the node's share of the first
layer and the layers after it; the user's share, once per user and level, is left out), and
the share of this machine's ``[8192, 128] @ [128, 64]`` GEMM rate in each precision that the
search reaches.

``recall``: a saved model and the data it was fitted on (split by ``--seed`` as the runner
does): Recall@200 of the test users by beam search and by brute force in each precision, and
how much of float32's top 200 bfloat16 keeps.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from arithmetic import gemm_flops_per_s  # noqa: E402


#: A variant: (retrieval precision, the model's ``fused_scoring``). Under autocast the scoring
#: is torch's whatever the flag says.
VARIANTS = {"float32": ("float32", True), "float32-torch": ("float32", False), "bfloat16": ("bfloat16", True)}


def speed(a) -> None:
    import numpy as np
    import torch

    import jtm_rs
    from jtm_rs.model import JTMModel
    from jtm_rs.retrieval import beam_search, model_score_fn
    from jtm_rs.tree_policy import resolve_precision

    torch.set_num_threads(a.threads)
    rng = np.random.default_rng(0)
    items = rng.choice(20 * a.items, size=a.items, replace=False)
    tree = jtm_rs.Tree.random(items, arity=2, seed=0)
    model = JTMModel(tree.n_nodes).eval()
    users = torch.from_numpy(tree.leaves(rng.choice(items, size=(a.calls, 69)).ravel()).reshape(a.calls, 69))
    print(f"{a.items:,} items, {tree.leaf_level} levels, {a.threads} thread(s); native bfloat16 on this CPU: "
          f"{resolve_precision('auto', torch.device('cpu')) == 'bfloat16'}\n")

    pairs = [0]

    def run(variant: str, batch: int) -> float:
        precision, model.fused_scoring = VARIANTS[variant]
        pairs[0] = 0
        t = time.perf_counter()
        for lo in range(0, a.calls, batch):
            part = users[lo : lo + batch]
            score = model_score_fn(model, tree, part, hierarchical=True, precision=precision)

            def counted(rows, nodes, level, score=score):
                pairs[0] += len(nodes)
                return score(rows, nodes, level)

            beam_search(tree, counted, len(part), 200, 200, n_threads=a.threads)
        return 1e3 * (time.perf_counter() - t) / a.calls

    linears = [m for m in model.mlp if isinstance(m, torch.nn.Linear)]
    d_node = model.embedding_dim
    flop_per_pair = 2 * (d_node * linears[0].out_features + sum(m.in_features * m.out_features for m in linears[1:]))
    run(a.variants[0], 1)
    per_user = pairs[0] / a.calls
    gemm = {p: gemm_flops_per_s(a.threads, p) for p in ("float32", "bfloat16")}
    print(f"{per_user:,.0f} scored pairs per user, {flop_per_pair:,} FLOP per pair ({per_user * flop_per_pair / 1e6:.1f} "
          f"MFLOP per user); GEMM of the MLP's shape: {gemm['float32'] / 1e9:.0f} GFLOP/s float32, "
          f"{gemm['bfloat16'] / 1e9:.0f} GFLOP/s bfloat16\n")

    base, rest = a.variants[0], a.variants[1:]
    print(f"| users per search | {' | '.join(f'{v} ms per user (median)' for v in a.variants)} | "
          + " | ".join(f"speed {v} / {base}: min | median | max" for v in rest)
          + f" | share of its GEMM rate: {' / '.join(a.variants)} |")
    print("|---|" + "---|" * (len(a.variants) + 3 * len(rest) + 1))
    for batch in a.batches:
        for v in a.variants:  # warm caches, allocators, oneDNN kernels
            run(v, batch)
        times = {v: [] for v in a.variants}
        for _ in range(a.rounds):  # A B C C B A: a drift hits each alike
            for v in [*a.variants, *reversed(a.variants)]:
                times[v].append(run(v, batch))
        per = {v: np.array(t).reshape(-1, 2).mean(1) for v, t in times.items()}
        cells = [f"{np.median(per[v]):.2f}" for v in a.variants]
        for v in rest:
            ratio = per[base] / per[v]
            cells += [f"{ratio.min():.2f}", f"{np.median(ratio):.2f}", f"{ratio.max():.2f}"]
        shares = [per_user * flop_per_pair / (1e-3 * np.median(per[v])) / gemm[VARIANTS[v][0]] for v in a.variants]
        print(f"| {batch} | {' | '.join(cells)} | {' / '.join(f'{100 * x:.0f} %' for x in shares)} |", flush=True)


def recall(a) -> None:
    import numpy as np

    from jtm_rs import JTM, datasets
    from jtm_rs.metrics import precision_recall_f

    data = datasets.load(a.data, show_progress=False).filter_users(10)
    ev = data.split(0.1, 0.1, seed=a.seed).test.evaluation_users()
    model = JTM.load(a.model, n_threads=a.threads)
    found = {}
    print("| method | precision | test Recall@200 (%) | of float32's top 200 kept |")
    print("|---|---|---|---|")
    for method in ("beam", "brute_force"):
        for precision in ("float32", "bfloat16"):
            model.config = dataclasses.replace(model.config, retrieval_precision=precision)
            ids, _ = model.retrieve(ev.features, 200, on_unknown="ignore", method=method)
            found[method, precision] = ids
            r = 100 * precision_recall_f(ids, ev.truth_indptr, ev.truth_items)["recall"]
            base = found[method, "float32"]
            kept = np.mean([len(np.intersect1d(x, y)) / 200 for x, y in zip(ids, base)])
            print(f"| {method} | {precision} | {r:.2f} | {kept:.4f} |", flush=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="what", required=True)
    s = sub.add_parser("speed")
    s.add_argument("--items", type=int, default=1_000_000)
    s.add_argument("--calls", type=int, default=256)
    s.add_argument("--batches", type=int, nargs="+", default=[1, 8, 64, 256])
    s.add_argument("--rounds", type=int, default=5)
    s.add_argument("--threads", type=int, default=1)
    s.add_argument("--variants", nargs="+", choices=sorted(VARIANTS), default=["float32", "bfloat16"],
                   help="compared, the first as the base: float32 (Rust scoring pass), float32-torch (torch's ops), "
                        "bfloat16 (torch's ops under autocast)")
    r = sub.add_parser("recall")
    r.add_argument("data")
    r.add_argument("--model", required=True)
    r.add_argument("--seed", type=int, default=0)
    r.add_argument("--threads", type=int, default=1)
    a = p.parse_args()
    speed(a) if a.what == "speed" else recall(a)


if __name__ == "__main__":
    main()
