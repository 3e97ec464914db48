"""Beam search with a torch scorer, end to end: time per user, and how much of it is the
Rust driver versus the model.

The scorer is the docs/design.md §4.3 shape without the behaviour windows: a user embedding and a
node embedding through an MLP 128-64-24 with PReLU to one logit, on CUDA when available.

Run: python benches/beam_search_torch.py [--items 1000000] [--users 2048] [--k 200] [--batch 512]
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("RAYON_NUM_THREADS", "2")

import numpy as np
import torch

import jtm_rs


class Scorer(torch.nn.Module):
    def __init__(self, n_users: int, n_nodes: int, dim: int = 24):
        super().__init__()
        self.user = torch.nn.Embedding(n_users, dim)
        self.node = torch.nn.Embedding(n_nodes, dim)
        self.mlp = torch.nn.Sequential(
            torch.nn.Linear(2 * dim, 128), torch.nn.PReLU(),
            torch.nn.Linear(128, 64), torch.nn.PReLU(),
            torch.nn.Linear(64, 24), torch.nn.PReLU(),
            torch.nn.Linear(24, 1),
        )

    def forward(self, users: torch.Tensor, nodes: torch.Tensor) -> torch.Tensor:
        return self.mlp(torch.cat([self.user(users), self.node(nodes)], -1)).squeeze(-1)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--items", type=int, default=1_000_000)
    p.add_argument("--users", type=int, default=2048)
    p.add_argument("--k", type=int, default=200)
    p.add_argument("--batch", type=int, default=512)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    a = p.parse_args()
    dev = torch.device(a.device)
    if dev.type == "cpu":
        torch.set_num_threads(1)
    tree = jtm_rs.Tree.random(np.arange(a.items), seed=0)
    model = Scorer(a.users, tree.n_nodes).to(dev).eval()
    in_model = [0.0]
    pairs = [0]

    @torch.inference_mode()
    def score(rows, nodes, level):
        t = time.perf_counter()
        out = model(torch.from_numpy(rows).to(dev), torch.from_numpy(nodes).to(dev)).float().cpu().numpy()
        in_model[0] += time.perf_counter() - t
        pairs[0] += len(nodes)
        return out

    jtm_rs.beam_search(tree, score, min(a.batch, a.users), a.k, batch_size=a.batch)  # warm-up
    in_model[0], pairs[0] = 0.0, 0
    t = time.perf_counter()
    items, _ = jtm_rs.beam_search(tree, score, a.users, a.k, batch_size=a.batch)
    total = time.perf_counter() - t
    print(f"device={dev} items={a.items} users={a.users} k={a.k} batch={a.batch} pairs/user={pairs[0] / a.users:.0f}")
    print(f"total {1e3 * total / a.users:.3f} ms/user; scorer (incl. transfers) {1e3 * in_model[0] / a.users:.3f} ms/user; "
          f"driver and rest {1e3 * (total - in_model[0]) / a.users:.3f} ms/user")
    assert items.shape == (a.users, a.k)


if __name__ == "__main__":
    main()
