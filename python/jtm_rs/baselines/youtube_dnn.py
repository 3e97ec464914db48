"""YouTube product-DNN (Covington et al., RecSys 2016), the paper's two-tower baseline.

User tower: the same 10 time-window averages of behaviour embeddings as the JTM model, then an
MLP (128-64-24, PReLU) to a 24-d user vector. Item tower: a 24-d output embedding per item.
Trained with sampled softmax (the target against ``negatives`` items drawn uniformly per
batch, shared by the batch, accidental hits masked), one pass = every training example once.
Epochs stop when validation recall@M stops improving (the best epoch's weights are kept), so
the budget is chosen on validation users. Retrieval is exact: the inner product with every
item, then top-M.
"""

from __future__ import annotations

from typing import Dict, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from ..data import PAD, Split
from ..exceptions import InvalidInputError
from ..model_layers import TIME_WINDOWS, WindowPool
from ..threads import uses_torch_threads
from ._torch import TorchRecommender


class TwoTower(nn.Module):
    def __init__(self, n_items: int, dim: int = 24, hidden: Sequence[int] = (128, 64, 24), windows=TIME_WINDOWS):
        super().__init__()
        self.n_items = n_items
        self.input = nn.Embedding(n_items + 1, dim, padding_idx=n_items)
        self.output = nn.Embedding(n_items, hidden[-1])
        nn.init.normal_(self.input.weight, std=0.05)
        nn.init.normal_(self.output.weight, std=0.05)
        with torch.no_grad():
            self.input.weight[n_items].zero_()
        self.pool = WindowPool(windows)
        layers: list[nn.Module] = []
        width = len(windows) * dim
        for j, h in enumerate(hidden):
            layers.append(nn.Linear(width, h))
            if j < len(hidden) - 1:
                layers.append(nn.PReLU())
            width = h
        self.mlp = nn.Sequential(*layers)

    def user(self, behaviours: torch.Tensor) -> torch.Tensor:
        beh = behaviours[:, : self.pool.width]
        mask = (beh >= 0).to(self.input.weight.dtype)
        vec = self.input(torch.where(beh >= 0, beh, self.n_items))
        return self.mlp(self.pool(vec, mask))


class YouTubeDNN(TorchRecommender):
    name = "youtube-dnn"

    def __init__(self, negatives: int = 1000, **kwargs):
        """``negatives``: items drawn per batch for the sampled softmax; the other options are
        :class:`TorchRecommender`'s."""
        super().__init__(**kwargs)
        if negatives < 1:
            raise InvalidInputError("negatives must be at least 1")
        self.negatives = negatives

    @uses_torch_threads
    def fit(self, split: Split, *, show_progress: bool = True, callback=None) -> "YouTubeDNN":
        rng = np.random.default_rng(self.seed)
        windows, feats = self.training_examples(split)
        self.item_ids = split.train.item_ids
        self.n_items = n_items = int(max(p.item.max(initial=-1) for p in (split.train, split.validation, split.test))) + 1
        self.model = model = TwoTower(n_items, self.embedding_dim, self.hidden).to(self.device)
        targets = torch.from_numpy(windows.targets).to(self.device)

        def batch_loss(b: torch.Tensor) -> torch.Tensor:
            u = model.user(feats[b])
            neg = torch.from_numpy(rng.integers(0, n_items, self.negatives)).to(self.device)
            pos_logit = (u * model.output(targets[b])).sum(1, keepdim=True)
            neg_logit = (u @ model.output(neg).T).masked_fill(neg[None, :] == targets[b, None], float("-inf"))
            logits = torch.cat([pos_logit, neg_logit], dim=1)
            return F.cross_entropy(logits, torch.zeros(len(b), dtype=torch.long, device=self.device))

        self.train_model(split, model, len(windows), batch_loss, rng, show_progress)
        return self

    def get_params(self) -> Dict[str, object]:
        return dict(super().get_params(), negatives=self.negatives)

    def set_state(self, state: Dict[str, np.ndarray]) -> None:
        self.n_items = len(state["model.output.weight"])
        self.model = TwoTower(self.n_items, self.embedding_dim, self.hidden).to(self.device)
        self.load_model_state(state)

    @torch.no_grad()
    @uses_torch_threads
    def retrieve(self, features: np.ndarray, M: int, batch_size: int = 1024) -> Tuple[np.ndarray, np.ndarray]:
        self.model.eval()
        items = self.model.output.weight
        M = min(M, len(items))
        f = np.asarray(features, dtype=np.int64)
        f = np.where(f < self.model.n_items, f, PAD)
        ids, scores = [], []
        for s in range(0, len(f), batch_size):
            u = self.model.user(torch.from_numpy(f[s : s + batch_size]).to(self.device))
            v, i = torch.topk(u @ items.T, M, dim=1)
            ids.append(i.cpu().numpy())
            scores.append(v.float().cpu().numpy())
        if not ids:
            return np.zeros((0, M), np.int64), np.zeros((0, M), np.float32)
        return np.concatenate(ids).astype(np.int64), np.concatenate(scores)
