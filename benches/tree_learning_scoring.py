"""Tree learning's scoring (``weights_fn``, paper eq. 2) against its arithmetic limit: torch's
ops against the Rust scoring pass, in float32 and bfloat16, on generated data.

    python benches/tree_learning_scoring.py --items 1000000 --scored-items 20000 --rounds 3

A random tree over the generated items (the work does not depend on the assignment), the
default model untrained, the default samples per item; per round, in A B C … C B A order,
each variant scores ``--scored-items`` random items against every segment of ``d`` levels
that tree learning visits (each item under its own ancestor at the segment's top), as
:func:`jtm_rs.learn_tree` calls it. Prints the pairs scored, their FLOPs counted from the
model's shapes (the node's share of the first layer and the layers after it per pair; the
user's share once per sample and level), this machine's GEMM rate of ``[8192, 128] @ [128,
64]`` in each precision, and per variant its median seconds, scored pairs/s, share of the
rate, and speed over the first variant (per round: min, median, max). Variants:
``float32-torch`` (torch's ops), ``float32`` (the Rust pass), ``bfloat16`` (the Rust pass,
bfloat16 operands), ``bfloat16-torch`` (torch's ops under autocast).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from arithmetic import gemm_flops_per_s  # noqa: E402

#: A variant: (precision, the model's ``fused_scoring``).
VARIANTS = {"float32-torch": ("float32", False), "float32": ("float32", True), "bfloat16": ("bfloat16", True),
            "bfloat16-torch": ("bfloat16", False)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--items", type=int, default=1_000_000)
    p.add_argument("--scored-items", type=int, default=20_000)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--variants", nargs="+", choices=sorted(VARIANTS), default=["float32-torch", "float32", "bfloat16"])
    a = p.parse_args()

    import numpy as np
    import torch

    from jtm_rs import JTMConfig, Tree, synthetic
    from jtm_rs.features import BehaviourLeaves
    from jtm_rs.model import JTMModel
    from jtm_rs.tree_weights import item_samples, model_weights_fn

    torch.set_num_threads(a.threads)
    cfg = JTMConfig()
    data = synthetic.generate(a.items, max(1000, a.items // 5), seed=0).interactions
    windows = data.filter_users(10).split(0.1, 0.1, seed=0).train.training_windows()
    del data
    ids = np.unique(np.concatenate([np.ravel(windows.items), windows.targets]))
    tree = Tree.random(ids[ids >= 0], arity=cfg.arity, seed=0)
    model = JTMModel(tree.n_nodes).eval()
    leaves = BehaviourLeaves(windows, tree, torch.device("cpu"))
    rng = np.random.default_rng(0)
    targets = np.unique(windows.targets)
    items = np.sort(rng.choice(targets, size=min(a.scored_items, len(targets)), replace=False))
    segments = [(s, min(s + cfg.d - 1, tree.leaf_level)) for s in range(1, tree.leaf_level + 1, cfg.d)]
    parents = {s: tree.item_ancestors(items, s - 1) for s, _ in segments}

    # The work of one pass: each kept sample of a scored item against its parent's subtree on
    # every level of every segment.
    keys, indptr, _, _ = item_samples(windows.targets, cfg.max_samples_per_item, 0)
    k = np.searchsorted(keys, items)
    known = (k < len(keys)) & (keys[np.minimum(k, len(keys) - 1)] == items)
    n_samples = int(np.diff(indptr)[k[known]].sum())
    linears = [m for m in model.mlp if isinstance(m, torch.nn.Linear)]
    per_pair = 2 * (model.embedding_dim * linears[0].out_features + sum(m.in_features * m.out_features for m in linears[1:]))
    per_user_level = 2 * (linears[0].in_features - model.embedding_dim) * linears[0].out_features
    pairs = flop = 0
    for s, e in segments:
        nodes = sum(tree.arity ** (j - s + 1) for j in range(s, e + 1))
        pairs += n_samples * nodes
        flop += n_samples * (nodes * per_pair + (e - s + 1) * per_user_level)

    def run(variant: str) -> float:
        precision, model.fused_scoring = VARIANTS[variant]
        weights = model_weights_fn(model, tree, leaves, max_samples_per_item=cfg.max_samples_per_item,
                                   precision=precision)
        t = time.perf_counter()
        for s, e in segments:
            weights(items, parents[s], s, e)
        return time.perf_counter() - t

    gemm = {q: gemm_flops_per_s(a.threads, q) for q in ("float32", "bfloat16")}
    print(f"{tree.n_items:,} items, {tree.leaf_level} levels, {len(segments)} segments of d = {cfg.d}; "
          f"{len(items):,} items scored, {pairs:,} pairs and {flop / 1e9:.1f} GFLOP a pass; "
          f"{a.threads} thread(s); GEMM {gemm['float32'] / 1e9:.0f} GFLOP/s float32, "
          f"{gemm['bfloat16'] / 1e9:.0f} GFLOP/s bfloat16\n")
    for v in a.variants:
        run(v)  # warm
    times = {v: [] for v in a.variants}
    for _ in range(a.rounds):
        for v in [*a.variants, *reversed(a.variants)]:
            times[v].append(run(v))
    base = np.array(times[a.variants[0]]).reshape(-1, 2).mean(1)
    print("| variant | seconds (median) | M pairs/s | GFLOP/s | share of its GEMM rate | speed over "
          f"{a.variants[0]}: min | median | max |")
    print("|---|---|---|---|---|---|---|---|")
    for v in a.variants:
        t = np.array(times[v]).reshape(-1, 2).mean(1)
        med, ratio = float(np.median(t)), base / t
        rate = flop / med
        print(f"| {v} | {med:.2f} | {pairs / med / 1e6:.2f} | {rate / 1e9:.1f} | "
              f"{100 * rate / gemm[VARIANTS[v][0]]:.0f} % | {ratio.min():.2f} | {np.median(ratio):.2f} | "
              f"{ratio.max():.2f} |", flush=True)


if __name__ == "__main__":
    main()
