"""The training loop shared by the torch baselines (YouTube product-DNN, HSM): passes over all
training examples in shuffled batches, validation recall@M after every pass, stop when it has
not improved for ``patience`` passes, keep the best pass's weights. The budget is so chosen on
validation users, never on test users."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Sequence

import numpy as np
import torch
from torch import nn
from ..progress import bar as progress_bar, say

from ..data import EvaluationUsers, Split, Windows
from ..exceptions import InvalidInputError
from ..metrics import precision_recall_f
from ..model import default_device
from ..recommender import Recommender


@dataclass
class EpochRecord:
    """One pass of a torch baseline's training (``history``)."""

    epoch: int
    loss: float
    seconds: float
    #: None where there were no validation users.
    validation_recall: Optional[float] = None


class TorchRecommender(Recommender):
    """What the torch baselines share: the user tower's sizes, the validated training loop's
    options, the device and torch's thread count."""

    def __init__(
        self,
        embedding_dim: int = 24,
        hidden: Sequence[int] = (128, 64, 24),
        max_epochs: int = 20,
        patience: int = 2,
        batch_size: int = 512,
        learning_rate: float = 2e-3,
        validation_m: int = 200,
        validation_users: int = 2000,
        seed: int = 0,
        device=None,
        n_threads: Optional[int] = None,
    ):
        if max_epochs < 1 or batch_size < 1:
            raise InvalidInputError("max_epochs and batch_size must be at least 1")
        self.embedding_dim, self.hidden = embedding_dim, tuple(hidden)
        self.max_epochs, self.patience, self.batch_size = max_epochs, patience, batch_size
        self.learning_rate, self.validation_m, self.validation_users = learning_rate, validation_m, validation_users
        self.seed, self.n_threads = seed, n_threads
        self.device = torch.device(device) if device is not None else default_device()
        self.history: List[EpochRecord] = []
        self.n_items = 0

    def get_params(self) -> Dict[str, object]:
        return dict(embedding_dim=self.embedding_dim, hidden=list(self.hidden), max_epochs=self.max_epochs,
                    patience=self.patience, batch_size=self.batch_size, learning_rate=self.learning_rate,
                    validation_m=self.validation_m, validation_users=self.validation_users, seed=self.seed)

    def known_items(self, items: np.ndarray) -> np.ndarray:
        return (items >= 0) & (items < self.n_items)

    def state(self) -> Dict[str, np.ndarray]:
        return {f"model.{k}": v.detach().cpu().numpy() for k, v in self.model.state_dict().items()}

    def load_model_state(self, state: Dict[str, np.ndarray]) -> None:
        """Loads the ``model.*`` arrays of :meth:`state` into ``self.model``."""
        self.model.load_state_dict({k[6:]: torch.from_numpy(v) for k, v in state.items() if k.startswith("model.")})
        self.model.eval()

    def training_examples(self, split: Split) -> "tuple[Windows, torch.Tensor]":
        """The training examples and their behaviour matrix on the device."""
        torch.manual_seed(self.seed)
        windows = split.train.training_windows()
        if len(windows) == 0:
            raise InvalidInputError("no training examples: the training users have no behaviour with one before it")
        return windows, torch.from_numpy(windows.behaviours(np.arange(len(windows)))).to(self.device)

    def train_model(self, split: Split, model: nn.Module, n_examples: int, batch_loss, rng, show_progress: bool) -> None:
        self.history = train_with_validation(
            self.name, model, n_examples, batch_loss, self.retrieve,
            validation_users(split, self.validation_users, rng), rng=rng, device=self.device,
            learning_rate=self.learning_rate, batch_size=self.batch_size, max_epochs=self.max_epochs,
            patience=self.patience, validation_m=self.validation_m, show_progress=show_progress,
        )


def validation_users(split: Split, n: int, rng: np.random.Generator) -> Optional[EvaluationUsers]:
    if not len(split.validation):
        return None
    ev = split.validation.evaluation_users()
    if len(ev) > n:
        ev = ev.subset(np.sort(rng.choice(len(ev), n, replace=False)))
    return ev if len(ev) else None


def train_with_validation(
    name: str,
    model: nn.Module,
    n_examples: int,
    batch_loss: Callable[[torch.Tensor], torch.Tensor],
    retrieve: Callable[[np.ndarray, int], tuple],
    ev: Optional[EvaluationUsers],
    *,
    rng: np.random.Generator,
    device: torch.device,
    learning_rate: float,
    batch_size: int,
    max_epochs: int,
    patience: int,
    validation_m: int,
    show_progress: bool,
) -> List[EpochRecord]:
    """Runs the loop; ``batch_loss(example_rows)`` returns the loss of one batch. Returns one
    record per pass (loss, seconds, validation recall); ``model`` ends with the best weights."""
    opt = torch.optim.Adam(model.parameters(), lr=learning_rate)
    best, best_state, bad = -1.0, None, 0
    history: List[EpochRecord] = []
    for epoch in range(max_epochs):
        t0 = time.perf_counter()
        model.train()
        order = torch.from_numpy(rng.permutation(n_examples)).to(device)
        total, steps = 0.0, 0
        bar = progress_bar(-(-n_examples // batch_size), f"{name} epoch {epoch + 1}", "batch", show=show_progress, leave=False)
        for s in range(0, n_examples, batch_size):
            loss = batch_loss(order[s : s + batch_size])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += loss.item()
            steps += 1
            bar.update(1)
        bar.close()
        record = EpochRecord(epoch, total / max(steps, 1), time.perf_counter() - t0)
        history.append(record)
        if ev is None:
            continue
        ids, _ = retrieve(ev.features, validation_m)
        recall = precision_recall_f(ids, ev.truth_indptr, ev.truth_items)["recall"]
        record.validation_recall = recall
        if show_progress:
            say(f"{name} epoch {epoch + 1}: loss {record.loss:.4f}, validation recall@{validation_m} {recall:.4f}")
        if recall > best:
            best, bad = recall, 0
            best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        else:
            bad += 1
            if bad > patience:
                break
    if best_state is not None:
        model.load_state_dict(best_state)
    return history
