"""Callback results to numpy: torch tensors (CPU or CUDA, with or without grad) are accepted."""

from __future__ import annotations

from typing import Any


def to_numpy(x: Any) -> Any:
    """Returns ``x`` as a numpy array when it is a torch tensor; anything else unchanged
    (the Rust side names the problem if it is not a float32/float64 array)."""
    if hasattr(x, "detach") and hasattr(x, "cpu"):
        return x.detach().cpu().numpy()
    return x

