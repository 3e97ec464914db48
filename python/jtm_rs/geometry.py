"""Node numbering of a b-ary heap-ordered tree: the one place Python computes it.

The root is node 0; level ``l`` holds nodes ``first_node(b, l) .. first_node(b, l + 1) - 1``
left to right, and node ``n``'s children are ``b*n + 1 .. b*n + b`` (the Rust core's
``tree.rs`` is the other, and only other, place that computes it). Ancestors and descendants
are a pure function of the numbering; only the item -> leaf map depends on the learned tree,
and that comes from Rust (:meth:`Tree.leaves`).
"""

from __future__ import annotations

import torch

from ._core import Tree


def first_node(arity: int, level: int) -> int:
    """Id of the leftmost node at ``level``."""
    return (arity**level - 1) // (arity - 1)


class TreeGeometry:
    """The numbering's arithmetic in torch (device-side), over whole tensors of nodes.

    For a leaf ``n``, its ancestor at level ``l`` is ``start[l] + (n - start[L]) // b**(L-l)``.
    """

    def __init__(self, arity: int, leaf_level: int, device: torch.device | str = "cpu"):
        self.arity = arity
        self.leaf_level = leaf_level
        starts = [first_node(arity, level) for level in range(leaf_level + 2)]
        self.level_start = torch.tensor(starts, dtype=torch.int64, device=device)
        self.n_nodes = starts[-1]

    @classmethod
    def of(cls, tree: Tree, device: torch.device | str = "cpu") -> "TreeGeometry":
        return cls(tree.arity, tree.leaf_level, device)

    def level_of(self, nodes: torch.Tensor) -> torch.Tensor:
        return torch.searchsorted(self.level_start, nodes, right=True) - 1

    def ancestors(self, leaves: torch.Tensor, level: torch.Tensor | int) -> torch.Tensor:
        """Ancestor at ``level`` of each leaf (``level`` broadcasts against ``leaves``); ``-1``
        (padding) stays ``-1``."""
        level = torch.as_tensor(level, device=leaves.device)
        span = torch.pow(torch.tensor(self.arity, device=leaves.device), self.leaf_level - level)
        anc = self.level_start[level] + torch.div(
            leaves - self.level_start[self.leaf_level], span, rounding_mode="floor"
        )
        return torch.where(leaves >= 0, anc, leaves)

    def descendants(self, parents: torch.Tensor, parent_level: int, level: int) -> torch.Tensor:
        """``[len(parents), b**(level-parent_level)]``: descendants at ``level``, left to right."""
        width = self.arity ** (level - parent_level)
        first = self.level_start[level] + (parents - self.level_start[parent_level]) * width
        return first[:, None] + torch.arange(width, device=parents.device)

    def parent(self, nodes: torch.Tensor) -> torch.Tensor:
        """Parent of each (non-root) node."""
        return torch.div(nodes - 1, self.arity, rounding_mode="floor")

    def children(self, nodes: torch.Tensor) -> torch.Tensor:
        """``[..., b]``: the children of each node, left to right."""
        return nodes[..., None] * self.arity + torch.arange(1, self.arity + 1, device=nodes.device)
