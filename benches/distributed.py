"""One rank against two on this machine (torch.distributed, gloo, CPU): the time of each phase
of a fit, and the bytes each rank puts into the collectives.

    python benches/distributed.py                                  # 20 000 items, 1 and 2 ranks
    python benches/distributed.py --items 100000 --users 30000 --examples 100000
    python benches/distributed.py --items 1000000 --users 200000 --initial-only   # the initial tree alone
    python benches/distributed.py --dense-embeddings   # the table's gradient dense, as on NCCL

Each configuration spawns ``world`` fresh processes that join one gloo group and run
``JTM.fit(split, distributed=True)`` on generated data (one process runs the plain fit), with
the machine's cores split between them (torch and rayon threads per rank = cores / world).
Rank 0 reports:

* the fit's phases per round (``IterationRecord.seconds``: training, validation, tree learning)
  and the whole fit;
* per training step, the gradient bytes this rank all-reduces: the dense MLP gradients and the
  node-embedding table's sparse gradient (its touched rows: int64 index + float32 values),
  counted on the optimiser's gradients over the first round's steps;
* per tree learning, the bytes of weight rows this rank contributes to ``gather_rows``;
* the initial k-means tree (co-occurrence counting, the SVD, k-means): its time (the
  embeddings and the k-means apart), and the bytes this rank contributes to the SVD's products
  (``gather_rows``), to the summed counts and to the k-means' leaf order (``gather_owned``).

On 2 cores two ranks cannot be faster than one: the point is that the run is correct and what
it sends. The projection to more machines is in docs/distributed.md.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import tempfile
import time


def _rank(rank: int, world: int, init: str, args: dict, out: str) -> None:
    threads = max(1, (os.cpu_count() or 1) // world)
    os.environ["RAYON_NUM_THREADS"] = str(threads)
    import torch

    torch.set_num_threads(threads)
    import torch.distributed as dist

    from jtm_rs import JTM, JTMConfig, synthetic
    from jtm_rs.distributed import Ranks, gradient_bytes
    from jtm_rs.training import LazyAdam

    if world > 1:
        dist.init_process_group("gloo", init_method=init, rank=rank, world_size=world)
    t = time.perf_counter()
    split = synthetic.generate(args["items"], args["users"], seed=0).interactions.filter_users(10).split(
        0.1, 0.1, seed=0)
    load_s = time.perf_counter() - t

    steps = []  # gradient bytes of each step, counted where the optimiser of the table reads them
    table_optimiser = torch.optim.Adam if args["dense_embeddings"] else LazyAdam
    plain_step = table_optimiser.step

    def counting_step(self, closure=None):
        params = [p for g in self.param_groups for p in g["params"]]
        model = jtm.model
        if model is not None and any(p is model.embedding.weight for p in params):
            steps.append(gradient_bytes(model))
        return plain_step(self, closure)

    table_optimiser.step = counting_step
    gathered = {"initial": 0, "fit": 0}
    phase = ["fit"]
    if world > 1:
        plain_gather, plain_sum_sparse, plain_owned = Ranks.gather_rows, Ranks.sum_sparse, Ranks.gather_owned

        def counting_gather(self, part, n):
            gathered[phase[0]] += part.nbytes
            return plain_gather(self, part, n)

        def counting_sum_sparse(self, matrix):
            coo = matrix.tocoo()
            gathered[phase[0]] += coo.row.nbytes + coo.col.nbytes + coo.data.nbytes
            return plain_sum_sparse(self, matrix)

        def counting_owned(self, values, owner):
            gathered[phase[0]] += int((owner == self.rank).sum()) * values.itemsize
            return plain_owned(self, values, owner)

        Ranks.gather_rows, Ranks.sum_sparse, Ranks.gather_owned = counting_gather, counting_sum_sparse, counting_owned
    import jtm_rs.joint_loop as joint_loop
    import jtm_rs.tree_policy as tree_policy
    from jtm_rs.tree_policy import initial_tree

    initial_s = [0.0]
    embeddings_s = [0.0]
    plain_embeddings = tree_policy.cooccurrence_embeddings

    def timed_embeddings(*a, **k):
        t0 = time.perf_counter()
        try:
            return plain_embeddings(*a, **k)
        finally:
            embeddings_s[0] += time.perf_counter() - t0

    tree_policy.cooccurrence_embeddings = timed_embeddings

    def timed_initial_tree(*a, **k):
        phase[0] = "initial"
        t0 = time.perf_counter()
        try:
            return initial_tree(*a, **k)
        finally:
            initial_s[0] += time.perf_counter() - t0
            phase[0] = "fit"

    joint_loop.initial_tree = timed_initial_tree
    if args["initial_only"]:
        tree = timed_initial_tree([split.train], JTMConfig(initial_tree="kmeans"), threads, False,
                                  ranks=Ranks() if world > 1 else None)
        if world > 1:
            dist.destroy_process_group()
        if rank == 0:
            with open(out, "w") as f:
                json.dump(dict(world=world, threads=threads, load_s=load_s, initial_s=initial_s[0],
                               embeddings_s=embeddings_s[0], initial_bytes=gathered["initial"], items=tree.n_items, levels=tree.leaf_level,
                               leaves_digest=hashlib.sha256(tree.leaves(tree.items).tobytes()).hexdigest()), f)
        return
    cfg = JTMConfig(iterations=args["iterations"], max_examples_per_epoch=args["examples"], validation_users=500)
    factory = None
    if args["dense_embeddings"]:
        from jtm_rs.model import JTMModel

        def factory(tree, config):  # NCCL's model: the table's gradient dense, all-reduced whole
            return JTMModel(tree.n_nodes, config.embedding_dim, config.hidden, sparse=False)
    jtm = JTM(cfg, device="cpu", n_threads=threads, model_factory=factory)
    t = time.perf_counter()
    jtm.fit(split, show_progress=False, distributed=world > 1)
    fit_s = time.perf_counter() - t
    recall = jtm.evaluate(split.test, 200)["recall"]
    dense = sum(p.numel() * 4 for n, p in jtm.model.named_parameters() if not n.startswith("embedding"))
    if world > 1:
        dist.destroy_process_group()
    if rank == 0:
        with open(out, "w") as f:
            json.dump(dict(world=world, threads=threads, load_s=load_s, fit_s=fit_s, recall=recall,
                           rounds=[r.seconds for r in jtm.history], steps=len(steps),
                           step_bytes=sum(steps) / max(len(steps), 1), dense_bytes=dense,
                           gathered_bytes=gathered["fit"] / max(args["iterations"], 1),
                           initial_s=initial_s[0], initial_bytes=gathered["initial"],
                           items=jtm.tree.n_items, levels=jtm.tree.leaf_level), f)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--items", type=int, default=20000)
    p.add_argument("--users", type=int, default=10000)
    p.add_argument("--examples", type=int, default=50000, help="training examples per epoch (default 50000)")
    p.add_argument("--iterations", type=int, default=1)
    p.add_argument("--worlds", type=int, nargs="+", default=[1, 2])
    p.add_argument("--initial-only", action="store_true", help="time the initial k-means tree alone, no fit")
    p.add_argument("--dense-embeddings", action="store_true",
                   help="the node-embedding table with dense gradients (what the NCCL path all-reduces)")
    a = p.parse_args()
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "python"))
    import torch.multiprocessing as mp

    args = dict(items=a.items, users=a.users, examples=a.examples, iterations=a.iterations,
                initial_only=a.initial_only, dense_embeddings=a.dense_embeddings)
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for world in a.worlds:
            out = os.path.join(tmp, f"world{world}.json")
            init = f"file://{os.path.join(tmp, f'rendezvous{world}')}"
            t = time.perf_counter()
            mp.start_processes(_rank, args=(world, init, args, out), nprocs=world, start_method="spawn")
            r = json.loads(open(out).read())
            r["wall_s"] = time.perf_counter() - t
            results.append(r)
            if a.initial_only:
                print(f"{world} rank(s): initial tree {r['initial_s']:.1f} s", flush=True)
            else:
                print(f"{world} rank(s): fit {r['fit_s']:.1f} s, test Recall@200 {100 * r['recall']:.2f} %", flush=True)
    first = results[0]
    if a.initial_only:
        print(f"\n{first['items']:,} items ({first['levels']} levels), {os.cpu_count()} cores")
        print("| ranks | threads per rank | data | initial tree (s) | of which embeddings (s) | of which k-means (s) "
              "| bytes per rank into the collectives | same tree as 1 rank |")
        print("|---|---|---|---|---|---|---|---|")
        for r in results:
            emb_s = r["embeddings_s"]
            print(f"| {r['world']} | {r['threads']} | {r['load_s']:.1f} | {r['initial_s']:.1f} | {emb_s:.1f} | "
                  f"{r['initial_s'] - emb_s:.1f} | "
                  f"{r['initial_bytes'] / 1e6:.1f} MB | {'yes' if r['leaves_digest'] == first['leaves_digest'] else 'no'} |")
        return
    print(f"\n{first['items']:,} items ({first['levels']} levels), {a.examples:,} examples per training, "
          f"{a.iterations} iteration(s), {os.cpu_count()} cores")
    print("| ranks | threads per rank | data | initial tree (s) | training (s) | validation (s) | tree learning (s) | "
          "fit (s) | test Recall@200 % | steps per rank | gradient bytes per step and rank | of which dense | "
          "tree learning bytes per round and rank | initial tree bytes per rank |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in results:
        phase = lambda k: sum(s.get(k, 0.0) for s in r["rounds"])  # noqa: E731
        print(f"| {r['world']} | {r['threads']} | {r['load_s']:.1f} | {r['initial_s']:.1f} | {phase('train'):.1f} | "
              f"{phase('validate'):.1f} | "
              f"{phase('learn_tree'):.1f} | {r['fit_s']:.1f} | {100 * r['recall']:.2f} | {r['steps']} | "
              f"{r['step_bytes'] / 1e6:.2f} MB | {r['dense_bytes'] / 1e3:.0f} kB | "
              f"{r['gathered_bytes'] / 1e6:.1f} MB | {r['initial_bytes'] / 1e6:.1f} MB |")


if __name__ == "__main__":
    main()
