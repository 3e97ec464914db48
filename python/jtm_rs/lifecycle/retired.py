"""Items retired from a JTM's tree: never retrieved again, still features of the users'
histories that hold them, through the leaf each last held (whose node rows and ancestors the
model trained with that item there)."""

from __future__ import annotations

from os import PathLike
from typing import Union

import numpy as np

from ..exceptions import InvalidInputError


class RetiredItems:
    """Sorted internal item ids and the leaf each held when it was retired."""

    __slots__ = ("items", "leaves")

    def __init__(self, items=(), leaves=()):
        items, leaves = np.asarray(items, np.int64).reshape(-1), np.asarray(leaves, np.int64).reshape(-1)
        if len(items) != len(leaves):
            raise InvalidInputError(f"{len(items)} retired items but {len(leaves)} leaves")
        order = np.argsort(items, kind="stable")
        self.items, self.leaves = items[order], leaves[order]
        if len(self.items) > 1 and not np.all(self.items[1:] > self.items[:-1]):
            raise InvalidInputError("retired items must be distinct")

    def __len__(self) -> int:
        return len(self.items)

    def __repr__(self) -> str:
        return f"RetiredItems({len(self)} items)"

    def _positions(self, items) -> tuple:
        v = np.asarray(items, np.int64)
        if not len(self.items):
            return np.zeros(v.shape, np.int64), np.zeros(v.shape, bool)
        pos = np.minimum(np.searchsorted(self.items, v), len(self.items) - 1)
        return pos, self.items[pos] == v

    def contains(self, items) -> np.ndarray:
        return self._positions(items)[1]

    def leaves_of(self, items) -> np.ndarray:
        """The leaf each retired item held; ``-1`` for the others."""
        pos, hit = self._positions(items)
        return np.where(hit, self.leaves[pos] if len(self.items) else -1, -1)

    def item_leaves(self, tree, items: np.ndarray) -> np.ndarray:
        """Leaves of ``items`` (int64, ``-1`` padded): the tree's for its items, the last held
        for retired ones; every item must be one or the other."""
        leaves = np.full(items.shape, -1, dtype=np.int64)
        real = items >= 0
        in_tree = real & tree.contains(items)
        leaves[in_tree] = tree.leaves(items[in_tree])
        leaves[real & ~in_tree] = self.leaves_of(items[real & ~in_tree])
        return leaves

    def add(self, items, leaves) -> "RetiredItems":
        """These also retired (an item retired again takes its newer leaf)."""
        keep = ~np.isin(self.items, items)
        return RetiredItems(np.concatenate([self.items[keep], items]), np.concatenate([self.leaves[keep], leaves]))

    def without(self, items) -> "RetiredItems":
        """Items back in the tree are no longer retired."""
        keep = ~np.isin(self.items, items)
        return RetiredItems(self.items[keep], self.leaves[keep])

    def save(self, path: Union[str, PathLike]) -> None:
        with open(path, "wb") as f:
            np.savez(f, items=self.items, leaves=self.leaves)

    @classmethod
    def load(cls, path: Union[str, PathLike]) -> "RetiredItems":
        with np.load(path, allow_pickle=False) as z:
            return cls(z["items"], z["leaves"])


__all__ = ["RetiredItems"]
