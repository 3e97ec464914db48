"""The methods of the paper's Table 1, by name, each built from the shared budget options.

The model-based rows are configurations of :class:`jtm_rs.JTM`:

=========  ================================================================================
item-dnn   the paper's DNN: the JTM network trained on the items alone (no tree levels),
           scored against every item
dnn        the JTM model scored against every item (:class:`jtm_rs.jtm.BruteForce`), no tree
           at retrieval; it is the final model of the ``jtm`` run, so the two rows differ only
           in retrieval
tdm        attention (DIN) model, no hierarchical representation, k-means tree re-clustered
           from the learned leaf embeddings between trainings (TDM's clustering)
jtm-j      joint tree learning (Algorithm 2), no hierarchical user representation
jtm-h      hierarchical user representation, tree fixed at the initial k-means tree
jtm        both (paper Algorithm 1)
=========  ================================================================================
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, Optional

from ..baselines import HSM, ItemCF, Popularity, YouTubeDNN
from ..config import VARIANTS, JTMConfig
from ..recommender import Recommender
from .names import METHODS

#: Methods whose model is another method's fit, retrieved differently: when both run, the
#: runner fits the other once and hands it to :func:`make` as ``shared``.
SHARES_FIT: Dict[str, str] = {"dnn": "jtm"}


@dataclass
class Budget:
    """Training options shared by every model-based method of one experiment (the JTM rows'
    defaults are :class:`JTMConfig`'s)."""

    iterations: int = JTMConfig.iterations
    epochs: int = JTMConfig.epochs
    max_examples_per_epoch: Optional[int] = JTMConfig.max_examples_per_epoch
    #: Further JTMConfig fields of the JTM rows (each row's own settings, :data:`VARIANTS`, win).
    jtm: Dict[str, Any] = field(default_factory=dict)
    n_threads: Optional[int] = None
    device: Optional[str] = None
    #: Item-CF's co-occurrence window; None: chosen on validation users.
    itemcf_window: Optional[int] = None


def make(name: str, budget: Budget, seed: int, shared: Optional[Recommender] = None) -> Recommender:
    """A fresh, unfitted recommender for ``name`` (for a method of :data:`SHARES_FIT`, one over
    the already fitted ``shared`` when given)."""
    if name == "popularity":
        return Popularity()
    if name == "itemcf":
        return ItemCF(window=budget.itemcf_window)
    if name == "youtube-dnn":
        return YouTubeDNN(seed=seed, device=budget.device, n_threads=budget.n_threads)
    if name == "sasrec":
        from ..two_tower import SASRec

        return SASRec(seed=seed, device=budget.device, n_threads=budget.n_threads)
    if name == "hsm":
        return HSM(seed=seed, device=budget.device, n_threads=budget.n_threads)
    from ..jtm import BruteForce

    if name == "dnn":
        return BruteForce(shared if shared is not None else make("jtm", budget, seed))
    if name == "item-dnn":
        return BruteForce(_jtm(name, budget, seed))
    return _jtm(name, budget, seed)


def _jtm(name: str, budget: Budget, seed: int):
    from ..jtm import JTM

    return JTM(
        device=budget.device,
        n_threads=budget.n_threads,
        iterations=budget.iterations,
        epochs=budget.epochs,
        max_examples_per_epoch=budget.max_examples_per_epoch,
        seed=seed,
        **{**budget.jtm, **VARIANTS[name]},
    )


__all__ = ["METHODS", "SHARES_FIT", "Budget", "make"]
