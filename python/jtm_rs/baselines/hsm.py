"""Hierarchical softmax (HSM, Morin & Bengio 2005) over the same tree as JTM's initial tree.

``p(item | u) = Π_l softmax over the live children of b_{l-1}(item) of u · w_node``: the user
tower is the YouTube product-DNN's (window averages + MLP), every tree node has an output
vector, training is the cross-entropy of the target's child at every level of its path.
Retrieval is a beam search that ranks nodes by their accumulated path log-probability (the
probability of the subtree, which HSM models exactly), top-M leaves at the end. Passes stop on
validation recall as in :mod:`._torch`.
"""

from __future__ import annotations

from typing import Dict, Optional, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .._core import Tree
from ..cooccurrence import cooccurrence_embeddings
from ..data import PAD, Split
from ..geometry import TreeGeometry
from ..threads import uses_torch_threads
from ._torch import TorchRecommender
from .youtube_dnn import TwoTower


class HSM(TorchRecommender):
    name = "hsm"

    def __init__(self, arity: int = 2, beam_size: Optional[int] = None, **kwargs):
        """``arity`` of the tree built when :meth:`fit` gets none; ``beam_size`` (default M)
        of retrieval; the other options are :class:`TorchRecommender`'s."""
        super().__init__(**kwargs)
        self.arity, self.beam_size = arity, beam_size

    @uses_torch_threads
    def fit(self, split: Split, *, show_progress: bool = True, callback=None, tree: Optional[Tree] = None) -> "HSM":
        rng = np.random.default_rng(self.seed)
        windows, feats = self.training_examples(split)
        self.item_ids = split.train.item_ids
        items = np.unique(np.concatenate([p.items for p in (split.train, split.validation, split.test)]))
        if tree is None:  # JTM's default initial tree when the data has no categories
            emb = cooccurrence_embeddings(split.train, items, dim=self.embedding_dim, seed=self.seed)
            tree = Tree.from_embeddings(items, emb, arity=self.arity, seed=self.seed, n_threads=self.n_threads)
        self.n_items = int(items.max(initial=-1)) + 1
        model = self._build(tree)
        nn.init.normal_(model.nodes.weight, std=0.05)
        leaves = torch.from_numpy(tree.leaves(windows.targets)).to(self.device)
        L, b = tree.leaf_level, tree.arity
        levels = torch.arange(1, L + 1, device=self.device)

        def batch_loss(rows: torch.Tensor) -> torch.Tensor:
            u = model.user(feats[rows])  # [B, h]
            path = self.geometry.ancestors(leaves[rows, None], levels[None, :])  # [B, L] levels 1..L
            children = self.geometry.children(self.geometry.parent(path))  # [B, L, b]
            logits = torch.einsum("bh,blch->blc", u, model.nodes(children))
            logits = logits.masked_fill(~self.live[children], float("-inf"))
            target = path - children[..., 0]  # which child is on the path
            return F.cross_entropy(logits.reshape(-1, b), target.reshape(-1)) * L

        self.train_model(split, model, len(windows), batch_loss, rng, show_progress)
        return self

    def _build(self, tree: Tree) -> nn.Module:
        """The two-tower model with an output vector per node of ``tree`` (unfitted)."""
        self.tree = tree
        self.model = model = TwoTower(self.n_items, self.embedding_dim, self.hidden).to(self.device)
        model.nodes = nn.Embedding(tree.n_nodes, self.hidden[-1]).to(self.device)
        self.geometry = TreeGeometry.of(tree, self.device)
        self.live = torch.from_numpy(tree.is_live(np.arange(tree.n_nodes))).to(self.device)
        return model

    def get_params(self) -> Dict[str, object]:
        return dict(super().get_params(), arity=self.arity, beam_size=self.beam_size)

    def state(self) -> Dict[str, np.ndarray]:
        return dict(super().state(), tree=np.frombuffer(self.tree.to_bytes(), dtype=np.uint8))

    def set_state(self, state: Dict[str, np.ndarray]) -> None:
        self.n_items = len(state["model.input.weight"]) - 1
        self._build(Tree.from_bytes(state["tree"].tobytes()))
        self.load_model_state(state)

    @torch.no_grad()
    @uses_torch_threads
    def retrieve(self, features: np.ndarray, M: int, batch_size: int = 512) -> Tuple[np.ndarray, np.ndarray]:
        tree, model = self.tree, self.model
        model.eval()
        M = min(M, tree.n_items)
        k = max(M, self.beam_size or M)
        f = np.asarray(features, dtype=np.int64)
        f = np.where(f < model.n_items, f, PAD)
        ids, scores = [], []
        for s in range(0, len(f), batch_size):
            u = model.user(torch.from_numpy(f[s : s + batch_size]).to(self.device))
            n = len(u)
            beam = torch.zeros(n, 1, dtype=torch.long, device=self.device)  # the root
            logp = torch.zeros(n, 1, device=self.device)
            for _ in range(tree.leaf_level):
                children = self.geometry.children(beam)  # [n, K, b]
                live = self.live[children] & torch.isfinite(logp)[..., None]
                logits = torch.einsum("nh,nkch->nkc", u, model.nodes(children)).masked_fill(~live, float("-inf"))
                child_logp = (logp[..., None] + torch.log_softmax(logits, dim=-1)).masked_fill(~live, float("-inf"))
                flat = child_logp.reshape(n, -1)
                top, idx = torch.topk(flat, min(k, flat.shape[1]), dim=1)
                beam, logp = children.reshape(n, -1).gather(1, idx), top
            top, idx = torch.topk(logp, min(M, logp.shape[1]), dim=1)
            leaves = beam.gather(1, idx).cpu().numpy()
            got = np.where(np.isfinite(top.cpu().numpy()), tree.items_at(leaves.reshape(-1)).reshape(leaves.shape), -1)
            if got.shape[1] < M:
                got = np.pad(got, ((0, 0), (0, M - got.shape[1])), constant_values=-1)
                top = F.pad(top, (0, M - top.shape[1]), value=float("-inf"))
            ids.append(got.astype(np.int64))
            scores.append(top.float().cpu().numpy())
        if not ids:
            return np.zeros((0, M), np.int64), np.zeros((0, M), np.float32)
        return np.concatenate(ids), np.concatenate(scores)
