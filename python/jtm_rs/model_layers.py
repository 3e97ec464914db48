"""The layers of the paper's model (:mod:`jtm_rs.model`) that other models share: the time
windows' averages of the behaviour vectors, a PReLU with one shared slope, and the distinct
ids of a batch."""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ._core import unique_ranks

#: Sizes of the paper's 10 time windows over the 69 most recent behaviours (most recent first).
TIME_WINDOWS = (1, 1, 1, 2, 2, 2, 10, 10, 20, 20)


def fit_width(behaviours: torch.Tensor, width: int) -> torch.Tensor:
    """The ``width`` most recent behaviours, ``-1``-padded where a batch holds fewer."""
    if behaviours.shape[1] >= width:
        return behaviours[:, :width]
    return F.pad(behaviours, (0, width - behaviours.shape[1]), value=-1)


class WindowPool(nn.Module):
    """Averages behaviour vectors over fixed time windows (empty windows give zeros)."""

    def __init__(self, windows: Sequence[int]):
        super().__init__()
        w = torch.zeros(sum(windows), len(windows))
        start = 0
        for j, size in enumerate(windows):
            w[start : start + size, j] = 1.0
            start += size
        self.register_buffer("assign", w, persistent=False)
        self.width = sum(windows)

    def forward(self, vectors: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        # vectors [B, W, D], mask [B, W] -> [B, n_windows * D]
        sums = torch.einsum("bwd,wk->bkd", vectors * mask[..., None], self.assign)
        counts = (mask @ self.assign).clamp(min=1.0)
        return (sums / counts[..., None]).flatten(1)


class _SharedSlopePReLUFunction(torch.autograd.Function):
    """PReLU with one slope, through the leaky-ReLU kernels: torch's CPU PReLU backward is
    written for per-channel slopes and took 15 % of a training step (4x this)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, slope: torch.Tensor) -> torch.Tensor:
        a = float(slope)
        ctx.save_for_backward(x)
        ctx.a = a
        return F.leaky_relu(x, a)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        (x,) = ctx.saved_tensors
        grad_x = torch.ops.aten.leaky_relu_backward(grad, x, ctx.a, False)
        grad_slope = torch.dot(grad.reshape(-1), x.clamp(max=0).reshape(-1)).reshape(1)
        return grad_x, grad_slope


class PReLU(nn.PReLU):
    """``nn.PReLU`` (same parameters and state dict), faster on CPU for a single shared slope.
    On other devices, where reading the slope would synchronise, it is torch's own."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.weight.numel() != 1 or x.device.type != "cpu":
            return super().forward(x)
        return _SharedSlopePReLUFunction.apply(x, self.weight)


def unique_inverse(ids: torch.Tensor, n_ids: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``torch.unique(ids, return_inverse=True)`` for ids in ``[0, n_ids)``. Where the id range
    is not much larger than ``ids``, marks and a prefix sum over the range replace unique's sort
    (2.5x faster for a training batch: ~115k ids over 65k nodes); on the CPU a bitmap of the
    range in Rust (``unique_ranks``), one pass to mark and one to rank."""
    if ids.device.type == "cpu" and n_ids <= 64 * ids.numel():
        unique, inverse = unique_ranks(ids.reshape(-1).contiguous().numpy(), n_ids)
        return torch.from_numpy(unique), torch.from_numpy(inverse).view(ids.shape)
    if n_ids > 8 * ids.numel():
        return torch.unique(ids, return_inverse=True)
    mark = torch.zeros(n_ids, dtype=torch.bool, device=ids.device)
    mark.index_fill_(0, ids, True)
    rank = torch.cumsum(mark, 0) - 1
    return mark.nonzero().squeeze(1), rank[ids]
