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

from . import exceptions
from ._core import Tree, __version__
from .exceptions import (
    CallbackError,
    CorruptModelError,
    CorruptTreeError,
    DataFormatError,
    InvalidInputError,
    JtmError,
    JtmInternalError,
    UnknownItemError,
)
from . import datasets
from .data import EvaluationUsers, Interactions, Split
from .ids import IdMap
from .jtm import JTM, IterationRecord, JTMConfig
from .model import JTMModel
from .retrieval import beam_search
from .samples import Samples, generate_samples
from .tree_learning import learn_tree

__all__ = [
    "JTM",
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
