"""jtm_rs: JTM (Zhu et al., NeurIPS 2019) with a Rust core.

:class:`JTM` is the learner (paper Algorithm 1): ``JTM().fit(split)``, ``recommend``,
``evaluate``, ``save``/``load``; ``jtm-rs demo`` runs it on generated data.
:mod:`jtm_rs.datasets` loads public data sets with their ids mapped (:class:`IdMap`);
:mod:`jtm_rs.baselines` and :mod:`jtm_rs.experiments` give the paper's comparison.

A :class:`Tree` holds items at its leaves; :func:`learn_tree` re-learns the item placement from
a model (paper Algorithm 2); :func:`beam_search` retrieves the top-M items per user by
layer-wise beam search with any batched scorer (a torch model on CPU or CUDA, or numpy).
"""

from __future__ import annotations

import importlib
from typing import Any

from .openmp import shorten_openmp_spin

shorten_openmp_spin()  # before anything imports torch (jtm_rs.openmp says why)

from . import exceptions  # noqa: E402
from ._core import Tree, __version__  # noqa: E402
from .exceptions import (  # noqa: E402
    CallbackError,
    CorruptModelError,
    CorruptTreeError,
    DataFormatError,
    InvalidInputError,
    JtmError,
    JtmInternalError,
    RankLostError,
    UnknownItemError,
)

# The rest is imported on first use (PEP 562): torch takes seconds to import, and
# `jtm-rs --help`, `--version` or an argument error should not wait for it.
_LAZY = {
    "JTM": "jtm", "BruteForce": "jtm", "JTMConfig": "config", "IterationRecord": "config",
    "Recommender": "recommender",
    "JTMModel": "model",
    "Interactions": "data", "Split": "data", "EvaluationUsers": "data",
    "IdMap": "ids",
    "beam_search": "retrieval",
    "Samples": "samples", "generate_samples": "samples",
    "learn_tree": "tree_learning",
}
_SUBMODULES = ("datasets", "baselines", "experiments", "synthetic", "cli", "demo", "metrics", "model", "training",
               "tree_weights")


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
        globals()[name] = value
        return value
    if name in _SUBMODULES:
        return importlib.import_module(f".{name}", __name__)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list:
    return sorted(set(globals()) | set(_LAZY) | set(_SUBMODULES))


__all__ = [
    "JTM",
    "BruteForce",
    "Recommender",
    "JTMConfig",
    "IterationRecord",
    "JTMModel",
    "Interactions",
    "Split",
    "IdMap",
    "datasets",
    "EvaluationUsers",
    "Tree",
    "learn_tree",
    "beam_search",
    "generate_samples",
    "Samples",
    "__version__",
    *exceptions.__all__,
]
