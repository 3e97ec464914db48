"""Training throughput of the default model: examples per second, against the arithmetic limit.

An *example* is one (user window, target item) pair with its samples on every level: the
target's ancestors (label 1) and the default negatives (label 0), i.e. one row of paper eq. 2.
The data are generated: 20 000 items (a 15-level tree), 10 000 users, ~300 000 behaviours.

The **arithmetic limit** is what the model's multiply-adds would allow at the speed this
machine multiplies matrices of the MLP's shape (a GEMM measured here, same threads): forward
and backward of every linear layer, counted per example from the model's shapes. Training
cannot beat it; the gap to it is gathers, activations, the optimiser and Python.

Each configuration runs in its own process, repeated and interleaved, so that a busy machine
slows them alike; the table gives examples/s (min and median over repeats) and the ratio to
the first configuration measured in the same round.

``auto`` is the default: torch's thread count chosen per pass by timing (``ThreadTuner``), rayon
on every core; a number fixes both.

Run:
    python benches/train_throughput.py                       # auto, 1 and 2 threads
    python benches/train_throughput.py --busy 2              # while 2 processes spin
    python benches/train_throughput.py --reference /old/python   # another checkout's package
    python benches/train_throughput.py --attention --examples 1500  # the TDM (attention) model
    python benches/train_throughput.py --threads 1 --models windows sequence --examples 2000  # JTMConfig.model
    python benches/train_throughput.py --fused-vs-torch --threads 1 2  # the fused MLP pass against torch's ops
    python benches/train_throughput.py --threads 1 --negatives 60 120 200  # the cost of more negatives

``--fused-vs-torch`` measures, inside one process per thread count, the fused Rust pass over the
MLP and loss (``jtm_rs.fused_mlp``) against torch's ops on the same model, alternating them
(ABBA, ``--repeats`` rounds): the per-round ratio is what a noisy machine can still resolve.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

from arithmetic import gemm_flops_per_s  # noqa: E402


def _flops_per_example(model, leaf_level: int, pairs: int) -> float:
    """Forward + backward (3x forward) multiply-adds of the linear layers, as FLOPs."""
    import torch

    first = model.mlp[0]
    d_user = len(model.window_sizes) * model.embedding_dim
    if model.attention is None:
        macs = leaf_level * d_user * first.out_features  # user share of layer 1, once per level
        macs += pairs * (first.in_features - d_user) * first.out_features  # node share, per pair
    else:
        # The activation unit as model._attention_pairs computes it: the behaviour term once per
        # (level, behaviour), the node and product terms per pair, then the whole first layer.
        width, dim = model.pool.width, model.embedding_dim
        lin, out = model.attention[0], model.attention[2]
        macs = leaf_level * width * dim * lin.out_features
        macs += pairs * (dim * lin.out_features + width * (dim * lin.out_features + out.in_features))
        macs += pairs * first.in_features * first.out_features
    for layer in list(model.mlp)[1:]:
        if isinstance(layer, torch.nn.Linear):
            macs += pairs * layer.in_features * layer.out_features
    return 2.0 * 3.0 * macs


def child(args: argparse.Namespace) -> None:
    """One measurement, in this process: prints a JSON line."""
    args.threads = args.threads[0]
    auto = args.threads == "auto"
    if auto:
        os.environ.pop("RAYON_NUM_THREADS", None)
        os.environ.pop("JTM_TORCH_THREADS", None)
    else:
        os.environ["RAYON_NUM_THREADS"] = args.threads
    import jtm_rs  # first, as jtm-rs does: it sets the OpenMP spin (jtm_rs.openmp) before torch loads

    import numpy as np
    import torch
    from jtm_rs import synthetic
    from jtm_rs.config import JTMConfig
    from jtm_rs.features import BehaviourLeaves
    from jtm_rs.training import default_negatives, make_optimizer, train_epoch
    from jtm_rs.tree_policy import default_model_factory, new_model

    tuner = None
    if auto:
        from jtm_rs.threads import DEFAULT_TORCH_THREADS, training_tuner

        torch.set_num_threads(DEFAULT_TORCH_THREADS)
        tuner = training_tuner(None, "cpu")
    else:
        torch.set_num_threads(int(args.threads))
    data = synthetic.generate(n_items=args.items, n_users=args.users, seed=0).interactions
    cfg = JTMConfig(attention=args.attention, model=args.models[0],
                    **({} if args.batch_size is None else {"batch_size": args.batch_size}))
    tree = jtm_rs.Tree.random(np.unique(data.items), arity=cfg.arity, seed=0)
    model = new_model(default_model_factory, tree, cfg, torch.device("cpu"), seed=0)
    optimizer = make_optimizer(model, cfg.learning_rate)
    windows = data.training_windows()
    leaves = BehaviourLeaves(windows, tree, torch.device("cpu"))
    negatives = default_negatives(tree.leaf_level, args.negatives[0] if args.negatives else cfg.negatives, tree.arity)
    rng = np.random.default_rng(args.seed)
    warm = rng.permutation(len(windows))[:1000]
    more = {} if tuner is None else {"threads": tuner}  # older code's train_epoch has no tuner
    train_epoch(model, optimizer, tree, leaves, warm, negatives, hierarchical=True,
                batch_size=cfg.batch_size, seed=0, **more)
    examples = rng.permutation(len(windows))[: args.examples]

    def timed(seed: int) -> float:
        t = time.perf_counter()
        train_epoch(model, optimizer, tree, leaves, examples, negatives, hierarchical=True,
                    batch_size=cfg.batch_size, seed=seed, **more)
        return len(examples) / (time.perf_counter() - t)

    rate = timed(1)
    abba = {}
    if args.fused_vs_torch:
        abba = {"fused": [], "torch": []}
        for r in range(args.repeats):
            for fused in ((True, False, False, True) if r % 2 == 0 else (False, True, True, False)):
                model.fused_step = fused
                abba["fused" if fused else "torch"].append(timed(2 + r))
    used = (tuner.chosen or 1) if tuner is not None else int(args.threads)
    pairs = sum(negatives[1:]) + tree.leaf_level
    # The sequence model's work is not counted (attention and grouping): no limit for it.
    flops = _flops_per_example(model, tree.leaf_level, pairs) if cfg.model == "windows" else float("nan")
    gemm = gemm_flops_per_s(used)
    print(json.dumps(dict(rate=rate, flops=flops, gemm=gemm, limit=gemm / flops, leaf_level=tree.leaf_level,
                          pairs=pairs, batch_size=cfg.batch_size, used=used, abba=abba,
                          spin=os.environ.get("GOMP_SPINCOUNT"))))


def _spin() -> None:
    while True:
        pass


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--threads", nargs="+", default=["auto", "1", "2"],
                   help="'auto' (the default: measured per pass) or torch and rayon threads (default: auto 1 2)")
    p.add_argument("--items", type=int, default=20000)
    p.add_argument("--users", type=int, default=10000)
    p.add_argument("--examples", type=int, default=10000, help="examples timed per measurement (default 10000)")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--batch-size", type=int, help="samples per optimiser step (default: JTMConfig's)")
    p.add_argument("--attention", action="store_true", help="the attention model (TDM's) instead of the default")
    p.add_argument("--models", nargs="+", default=["windows"], choices=["windows", "sequence"],
                   help="JTMConfig.model values to compare, each its own configuration (default: windows)")
    p.add_argument("--busy", type=int, default=0, help="spinning processes kept running meanwhile (default 0)")
    p.add_argument("--reference", help="a python/ source dir of another jtm_rs to compare with (same _core)")
    p.add_argument("--negatives", type=int, nargs="+",
                   help="negatives per example to compare (default: JTMConfig's), each its own configuration")
    p.add_argument("--fused-vs-torch", action="store_true",
                   help="per thread count, one process alternating the fused MLP pass and torch's ops (ABBA)")
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--seed", type=int, default=0, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        child(args)
        return
    if args.fused_vs_torch:
        fused_vs_torch(args)
        return
    counts = args.negatives or [None]
    configs = [(None, t, n, m) for m in args.models for t in args.threads for n in counts]
    if args.reference:
        configs += [(args.reference, t, n, "windows") for t in args.threads if t != "auto" for n in counts]  # older code has no tuner
    spinners = [multiprocessing.Process(target=_spin, daemon=True) for _ in range(args.busy)]
    for s in spinners:
        s.start()
    results = {c: [] for c in configs}
    try:
        for r in range(args.repeats):
            for ref, threads, count, model in configs:
                env = dict(os.environ)
                if ref:
                    env["PYTHONPATH"] = ref
                cmd = [sys.executable, __file__, "--child", "--threads", threads, "--items", str(args.items),
                       "--users", str(args.users), "--examples", str(args.examples), "--seed", str(r)]
                if args.batch_size:
                    cmd += ["--batch-size", str(args.batch_size)]
                if args.attention:
                    cmd.append("--attention")
                if count is not None:
                    cmd += ["--negatives", str(count)]
                if model != "windows":
                    cmd += ["--models", model]
                run = subprocess.run(cmd, env=env, capture_output=True, text=True)
                if run.returncode:
                    sys.exit(f"measurement failed:\n{run.stderr[-3000:]}")
                out = run.stdout
                key = (ref, threads, count, model)
                results[key].append(json.loads(out.strip().splitlines()[-1]))
                print(f"round {r + 1}: {'reference' if ref else 'this'} {model} x{threads}: "
                      f"{results[key][-1]['rate']:.0f} examples/s "
                      f"(on {results[key][-1].get('used', threads)} thread(s))", flush=True)
    finally:
        for s in spinners:
            s.terminate()
    first = results[configs[0]]
    info = first[0]
    print(f"\n{args.items} items (leaf level {info['leaf_level']}), {info['pairs']} samples per example, "
          f"{args.busy} busy process(es), {os.cpu_count()} cores")
    print(f"model: {'attention (TDM)' if args.attention else 'default'}, {info['flops'] / 1e6:.1f} MFLOP per example (forward + backward of the linear layers)")
    print("| code | model | negatives | samples per example | batch (samples) | threads (chosen) | examples/s min | median | × first row (median of per-round ratios) | GEMM GFLOP/s | arithmetic limit, examples/s | share of limit |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for ref, threads, count, model in configs:
        rs = results[(ref, threads, count, model)]
        rates = [x["rate"] for x in rs]
        ratio = sorted(x["rate"] / f["rate"] for x, f in zip(rs, first))[len(rs) // 2]
        gemm = max(x["gemm"] for x in rs)
        limit = gemm / rs[0]["flops"]
        med = sorted(rates)[len(rates) // 2]
        chosen = sorted({str(x.get("used", threads)) for x in rs})
        print(f"| {'reference' if ref else 'this'} | {model} | {count or 'default'} | {rs[0]['pairs']} | {rs[0]['batch_size']} | {threads} ({', '.join(chosen)}) | {min(rates):.0f} | {med:.0f} | {ratio:.2f} | "
              f"{gemm / 1e9:.0f} | {limit:.0f} | {med / limit:.0%} |")


def fused_vs_torch(args: argparse.Namespace) -> None:
    """One process per thread count, each alternating the fused pass and torch's ops."""
    print("| threads | fused examples/s min | median | torch min | median | fused / torch per pair of passes: min | median | max | GEMM GFLOP/s | arithmetic limit, examples/s | fused share of limit |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for threads in args.threads:
        cmd = [sys.executable, __file__, "--child", "--fused-vs-torch", "--threads", threads, "--items", str(args.items),
               "--users", str(args.users), "--examples", str(args.examples), "--repeats", str(args.repeats)]
        run = subprocess.run(cmd, capture_output=True, text=True)
        if run.returncode:
            sys.exit(f"measurement failed:\n{run.stderr[-3000:]}")
        res = json.loads(run.stdout.strip().splitlines()[-1])
        fused, ref = res["abba"]["fused"], res["abba"]["torch"]
        # Pass i of each kind ran next to pass i of the other (ABBA): their ratio.
        ratios = sorted(f / t for f, t in zip(fused, ref))
        med = lambda xs: sorted(xs)[len(xs) // 2]  # noqa: E731
        limit = res["gemm"] / res["flops"]
        print(f"| {threads} ({res['used']}) | {min(fused):.0f} | {med(fused):.0f} | {min(ref):.0f} | {med(ref):.0f} | "
              f"{ratios[0]:.2f} | {med(ratios):.2f} | {ratios[-1]:.2f} | {res['gemm'] / 1e9:.0f} | {limit:.0f} | "
              f"{med(fused) / limit:.0%} |", flush=True)
    print(f"\n{args.items} items (leaf level {res['leaf_level']}), {res['pairs']} samples per example, "
          f"{args.examples} examples per pass, {args.repeats} ABBA rounds, {os.cpu_count()} cores, "
          f"GOMP_SPINCOUNT {res['spin']}")


if __name__ == "__main__":
    main()
