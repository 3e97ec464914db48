"""The training loop shared by the torch baselines (YouTube product-DNN, HSM): passes over all
training examples in shuffled batches, validation recall@M after every pass, stop when it has
not improved for ``patience`` passes, keep the best pass's weights. The budget is so chosen on
validation users, never on test users."""

from __future__ import annotations

import time
from typing import Callable, List, Optional

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from ..data import EvaluationUsers, Split
from ..metrics import precision_recall_f


def validation_users(split: Split, n: int, rng: np.random.Generator) -> Optional[EvaluationUsers]:
    if not len(split.validation):
        return None
    ev = split.validation.evaluation_users()
    if len(ev) > n:
        from ..jtm import _subset

        ev = _subset(ev, np.sort(rng.choice(len(ev), n, replace=False)))
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
) -> List[dict]:
    """Runs the loop; ``batch_loss(example_rows)`` returns the loss of one batch. Returns one
    record per pass (loss, seconds, validation recall); ``model`` ends with the best weights."""
    opt = torch.optim.Adam(model.parameters(), lr=learning_rate)
    best, best_state, bad = -1.0, None, 0
    history: List[dict] = []
    for epoch in range(max_epochs):
        t0 = time.perf_counter()
        model.train()
        order = torch.from_numpy(rng.permutation(n_examples)).to(device)
        total, steps = 0.0, 0
        bar = tqdm(range(0, n_examples, batch_size), desc=f"{name} epoch {epoch + 1}", disable=not show_progress or None, leave=False)
        for s in bar:
            loss = batch_loss(order[s : s + batch_size])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += loss.item()
            steps += 1
        record = {"epoch": epoch, "loss": total / max(steps, 1), "seconds": time.perf_counter() - t0}
        history.append(record)
        if ev is None:
            continue
        ids, _ = retrieve(ev.features, validation_m)
        recall = precision_recall_f(ids, ev.truth_indptr, ev.truth_items)["recall"]
        record["validation_recall"] = recall
        if show_progress:
            tqdm.write(f"{name} epoch {epoch + 1}: loss {record['loss']:.4f}, validation recall@{validation_m} {recall:.4f}")
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
