"""Hierarchical user features (paper §3.3) of the training examples, on the model's device.

A user's behaviours enter the model as tree nodes: with the hierarchical representation
(JTM-H), the ancestors at the scored node's level of the behaviour items' leaves; without it
(JTM-J), the leaves themselves.
"""

from __future__ import annotations

from typing import Optional

import numpy as np
import torch

from ._core import Tree, example_leaves
from .data import Windows
from .geometry import TreeGeometry


class BehaviourLeaves:
    """The leaves (under one tree) of every example's behaviours, gathered on the device."""

    def __init__(self, windows: Windows, tree: Tree, device: torch.device):
        self.windows = windows
        self.device = device
        self.leaf = torch.from_numpy(tree.leaves(windows.items)).to(device)
        self.pos = torch.from_numpy(windows.pos).to(device)
        self.row_start = torch.from_numpy(windows.row_start).to(device)
        self.offsets = torch.arange(1, windows.max_behaviours + 1, device=device)
        self._row_end: Optional[torch.Tensor] = None

    def __call__(self, examples: torch.Tensor) -> torch.Tensor:
        """``LongTensor[B, max_behaviours]`` leaf ids, most recent first, ``-1`` padded."""
        if self.device.type == "cpu":  # one pass in Rust, not five over [B, max_behaviours]
            return torch.from_numpy(example_leaves(self.leaf.numpy(), self.windows.pos, self.windows.row_start,
                                                   examples.numpy().astype(np.int64, copy=False),
                                                   self.windows.max_behaviours))
        offs = self.pos[examples, None] - self.offsets
        return torch.where(offs >= self.row_start[examples, None], self.leaf[offs.clamp(min=0)], -1)

    def targets_ahead(self, examples: torch.Tensor, h: int) -> torch.Tensor:
        """``LongTensor[B, h]`` leaf ids of each example's target and the ``h - 1`` items after
        it in the user's row (:meth:`Windows.targets_ahead`), ``-1`` past the row's end."""
        if self._row_end is None:
            self._row_end = torch.from_numpy(self.windows.row_ends()).to(self.device)
        offs = self.pos[examples, None] + torch.arange(h, device=self.device)
        inside = offs < self._row_end[examples, None]
        return torch.where(inside, self.leaf[torch.where(inside, offs, 0)], -1)


def behaviours_at(geometry: TreeGeometry, leaves: torch.Tensor, level, hierarchical: bool) -> torch.Tensor:
    """The user representation at ``level``: ancestors of the behaviour leaves (JTM-H) or the
    leaves themselves (JTM-J). ``level`` is an int or one level per row of ``leaves``."""
    if not hierarchical:
        return leaves
    if isinstance(level, torch.Tensor) and level.dim() == 1:
        level = level[:, None]
    return geometry.ancestors(leaves, level)
