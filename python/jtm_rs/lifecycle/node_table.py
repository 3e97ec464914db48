"""The model's node table during an update: which rows train, and rows that follow their items.

* :func:`only_rows`: while training, every parameter but the node table is held and only the
  given rows of the table move (``update_training="new-paths"`` or ``"new-leaves"``): the
  rows that lead to and score the new items learn against the model as the fit left it, so
  what the old items' scores rest on is not moved.
* :func:`follow_items`: after tree learning moved items, each item's leaf row goes with it.
  Tree learning keeps the model's rows where they are (the fit's alternation trains again
  afterwards); an update ends with it, so an item that moved would otherwise answer with the
  row of a leaf it never trained on.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator, Optional

import numpy as np
import torch
from torch import nn

from .._core import Tree
from ..exceptions import InvalidInputError


def node_table(model: nn.Module, n_nodes: int) -> Optional[torch.Tensor]:
    """The node embedding weight (``n_nodes + 1`` rows, the last padding), if the model has
    one: its ``embedding`` (the windows model), else its first embedding of that many rows
    (the sequence model's encoder reads behaviours and nodes from one table)."""
    for emb in [getattr(model, "embedding", None), *(m for m in model.modules() if isinstance(m, nn.Embedding))]:
        weight = getattr(emb, "weight", None)
        if weight is not None and weight.shape[0] == n_nodes + 1:
            return weight
    return None


@contextmanager
def only_rows(model: nn.Module, n_nodes: int, rows: np.ndarray) -> Iterator[None]:
    """Within the block, gradients reach only ``rows`` of the node table: the model's other
    parameters do not ask for any (and are restored to asking afterwards), and the table's
    gradient loses every other row before the optimiser sees it (a sparse gradient keeps its
    row order, so :class:`~jtm_rs.training.LazyAdam` uses it as it is)."""
    table = node_table(model, n_nodes)
    if table is None:
        raise InvalidInputError("update_training='new-paths' or 'new-leaves' needs a model with a node embedding "
                                "table of one row per node; use update_training='model'")
    keep = torch.zeros(table.shape[0], dtype=torch.bool, device=table.device)
    keep[torch.from_numpy(np.asarray(rows, dtype=np.int64)).to(table.device)] = True
    held = [p for p in model.parameters() if p is not table and p.requires_grad]

    def mask(grad: torch.Tensor) -> torch.Tensor:
        if grad.is_sparse:
            index, values = grad._indices(), grad._values()
            kept = keep[index[0]]
            return torch.sparse_coo_tensor(index[:, kept], values[kept], grad.shape, check_invariants=False)
        return grad * keep[:, None].to(grad.dtype)

    handle = table.register_hook(mask)
    for p in held:
        p.requires_grad_(False)
    try:
        yield
    finally:
        handle.remove()
        for p in held:
            p.requires_grad_(True)


@torch.no_grad()
def follow_items(model: nn.Module, old: Tree, new: Tree) -> int:
    """Copies each item's leaf row under ``old`` to its leaf under ``new`` (same shape of
    tree); other rows stay. Returns how many items moved."""
    table = node_table(model, new.n_nodes)
    items = new.items
    src, dst = old.leaves(items), new.leaves(items)
    moved = src != dst
    if table is not None and moved.any():
        table[torch.from_numpy(dst[moved]).to(table.device)] = table[torch.from_numpy(src[moved]).to(table.device)].clone()
    return int(moved.sum())


__all__ = ["node_table", "only_rows", "follow_items"]
