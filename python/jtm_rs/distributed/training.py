"""Training over ranks with ``DistributedDataParallel``: each rank trains on its part of every
batch and DDP averages the gradients, so every rank takes the same optimiser steps.

* Every rank shuffles the epoch alike (the loop's random state is the same everywhere) and
  takes its ``world``-th part of every one-process batch (:func:`shard_batches`): the ranks'
  batches together are the one-process batch, DDP's mean of the ranks' mean gradients is its
  mean gradient, and each example keeps its one-process random stream (its place in the
  epoch), so its negatives are the one-process ones. A run is reproducible for a seed and a
  world size, and follows the one-process run up to the order of float sums.
* The node-embedding table is replicated (4.2 M items: 8.4 M nodes x 24 floats, 0.8 GB) and
  its sparse gradient (the rows a batch touched) is averaged by :class:`SparseGradientSync`
  through dense all-gathers of the rows and their values, outside DDP: DDP's own sparse
  all-reduce on gloo damaged the heap in about one stressed 2-rank run in six on this machine
  (``docs/distributed.md``, "Known issues"). The NCCL path refuses sparse tables.
"""

from __future__ import annotations

from typing import Dict, Optional, Tuple

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from .._arrays import sparse_rows
from ..exceptions import InvalidInputError
from ..model import pair_bce_loss, score_pairs
from .ranks import Ranks


class PairScorer(nn.Module):
    """``model.score_pairs`` as a module's ``forward`` (with ``labels``, the mean BCE loss, fused
    on the CPU as in one process): DDP synchronises gradients through the forward of the module
    it wraps, and training scores pairs, not ``model(...)``."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, behaviours: torch.Tensor, rows: torch.Tensor, nodes: torch.Tensor,
                labels: Optional[torch.Tensor] = None) -> torch.Tensor:
        if labels is not None:
            return pair_bce_loss(self.model, behaviours, rows, nodes, labels)
        return score_pairs(self.model, behaviours, rows, nodes)


def data_parallel(model: nn.Module, ranks: Ranks) -> nn.Module:
    """``model``'s pair scorer wrapped in DDP over ``ranks`` (rank 0's weights broadcast first)."""
    scorer = PairScorer(model)
    tables = sparse_tables(scorer)
    if tables and ranks.backend == "nccl":
        raise InvalidInputError(
            "NCCL has no sparse all-reduce, and the model's node embeddings have sparse gradients: on GPUs "
            "give JTM a model_factory that builds JTMModel(..., sparse=False), or use the gloo backend "
            "(docs/distributed.md)"
        )
    device_ids = [ranks.device.index] if ranks.device.type == "cuda" else None
    # DDP leaves the sparse tables to SparseGradientSync: their rank-0 copy is sent here.
    nn.parallel.DistributedDataParallel._set_params_and_buffers_to_ignore_for_model(scorer, list(tables))
    with torch.no_grad():
        for table in tables.values():
            dist.broadcast(table, group=ranks.group, group_src=0)
    return nn.parallel.DistributedDataParallel(scorer, device_ids=device_ids, process_group=ranks.group)


def sparse_tables(module: nn.Module) -> Dict[str, torch.Tensor]:
    """``module``'s embedding tables with sparse gradients, by parameter name."""
    sparse = {id(m.weight) for m in module.modules() if isinstance(m, nn.Embedding) and m.sparse}
    return {name: p for name, p in module.named_parameters() if id(p) in sparse}


class SparseGradientSync:
    """``optimizer`` whose ``step`` first replaces each sparse table's gradient by its mean over
    the ranks (:func:`mean_sparse_gradient`): every rank then takes the same step, as DDP's
    averaging gives the dense parameters."""

    def __init__(self, optimizer, model: nn.Module, ranks: Ranks):
        self.optimizer, self.ranks = optimizer, ranks
        self.tables = list(sparse_tables(model).values())

    def zero_grad(self, set_to_none: bool = True) -> None:
        self.optimizer.zero_grad(set_to_none=set_to_none)

    def step(self) -> None:
        for table in self.tables:
            table.grad = mean_sparse_gradient(table, self.ranks)
        self.optimizer.step()


def mean_sparse_gradient(table: torch.Tensor, ranks: Ranks) -> torch.Tensor:
    """The mean over the ranks of ``table``'s sparse gradient (rows it did not touch: zero), the
    same tensor on every rank: each rank's (row, values) pairs gathered in rank order, padded
    to the longest, then summed row by row in that order."""
    world, group = ranks.world, ranks.group
    grad = table.grad
    if grad is None:
        rows, values = table.new_zeros(0, dtype=torch.long), table.new_zeros((0,) + table.shape[1:])
    else:
        rows, values = sparse_rows(grad)
    counts = [rows.new_zeros(1) for _ in range(world)]
    dist.all_gather(counts, rows.new_tensor([len(rows)]), group=group)
    sizes = [int(c) for c in counts]
    width = max(sizes)
    padded_rows = torch.cat([rows, rows.new_zeros(width - len(rows))])
    padded_values = torch.cat([values, values.new_zeros((width - len(rows),) + values.shape[1:])])
    all_rows = [torch.empty_like(padded_rows) for _ in range(world)]
    all_values = [torch.empty_like(padded_values) for _ in range(world)]
    dist.all_gather(all_rows, padded_rows, group=group)
    dist.all_gather(all_values, padded_values, group=group)
    rows = torch.cat([r[:n] for r, n in zip(all_rows, sizes)])
    values = torch.cat([v[:n] for v, n in zip(all_values, sizes)])
    return torch.sparse_coo_tensor(rows[None], values / world, table.shape, check_invariants=True).coalesce()


def shard_batches(n_examples: int, per_batch: int, rank: int, world: int) -> Tuple[int, np.ndarray]:
    """This rank's examples of a one-process epoch of ``n_examples`` in batches of
    ``per_batch``: ``(examples per rank and step, their places in the epoch)``.

    A step takes ``per_batch`` examples rounded down to a multiple of ``world`` (at least
    ``world``), and each rank its ``world``-th part of them, in order: the ranks' steps
    together are the one-process steps whenever ``per_batch`` is already such a multiple. The
    epoch is cut to a multiple of ``world`` (at most ``world - 1`` examples left out), so every
    rank takes the same number of steps, which DDP needs: a rank with a step more would wait
    for the others forever."""
    step = max(world, per_batch - per_batch % world)
    n = n_examples - n_examples % world
    full = n - n % step
    body = np.arange(full).reshape(-1, world, step // world)[:, rank, :].ravel()
    tail = np.arange(full, n).reshape(world, -1)[rank]
    return step // world, np.concatenate([body, tail])


def gradient_bytes(model: nn.Module) -> int:
    """Bytes this rank's gradients put into one step's all-reduce: dense gradients whole, a
    sparse one as its rows' indices (int64) and values."""
    total = 0
    for p in model.parameters():
        g = p.grad
        if g is None:
            continue
        if g.is_sparse:
            total += g._indices().numel() * 8 + g._values().numel() * g._values().element_size()
        else:
            total += g.numel() * g.element_size()
    return total


__all__ = ["PairScorer", "SparseGradientSync", "data_parallel", "gradient_bytes", "mean_sparse_gradient", "shard_batches",
           "sparse_tables"]
