"""Callback results to numpy: torch tensors (CPU or CUDA, with or without grad) are accepted."""

from __future__ import annotations

from typing import Any


def to_numpy(x: Any) -> Any:
    """Returns ``x`` as a numpy array when it is a torch tensor; anything else unchanged
    (the Rust side names the problem if it is not a float32/float64 array)."""
    if hasattr(x, "detach") and hasattr(x, "cpu"):
        return x.detach().cpu().numpy()
    return x


def sparse_rows(grad) -> tuple:
    """``(rows, values)`` of a table's sparse gradient, rows distinct and ascending: as they
    are where they already are (the model's one lookup per batch; checked in O(rows)), else
    after a coalesce (a sort). Used by the optimiser and by the ranks' gradient average."""
    rows, values = grad._indices()[0], grad._values()
    if rows.numel() > 1 and not bool((rows[1:] > rows[:-1]).all()):
        grad = grad.coalesce()
        rows, values = grad._indices()[0], grad._values()
    return rows, values
