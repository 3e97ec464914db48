"""The paper's comparison: methods by name (:mod:`.methods`) and the runner that writes
Table 1 and Figure 2 (:mod:`.runner`, ``jtm-rs experiment``)."""

import importlib
from typing import Any

from .names import METHODS

_LAZY = {"Experiment": "runner", "Budget": "methods"}  # they import torch: on first use


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["Experiment", "Budget", "METHODS"]
