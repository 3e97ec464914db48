"""The methods of the paper's Table 1, by name, each built from the shared budget options.

The model-based rows are configurations of :class:`jtm_rs.JTM`:

=========  ================================================================================
dnn        the JTM model scored against every item (brute force), no tree at retrieval;
           it is the final model of the ``jtm`` run, so the two rows differ only in retrieval
tdm        attention (DIN) model, no hierarchical representation, k-means tree re-clustered
           from the learned leaf embeddings between trainings (TDM's clustering)
jtm-j      joint tree learning (Algorithm 2), no hierarchical user representation
jtm-h      hierarchical user representation, tree fixed at the initial k-means tree
jtm        both (paper Algorithm 1)
=========  ================================================================================
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Optional

from ..baselines import HSM, ItemCF, Popularity, YouTubeDNN
from .names import METHODS
#: Named in the issue, not built yet: the runner says so instead of running them.
NOT_BUILT: Dict[str, str] = {}
#: JTM configurations of the model-based rows (``dnn`` reuses the ``jtm`` fit).
JTM_VARIANTS: Dict[str, dict] = {
    "jtm": dict(hierarchical=True, tree_learning="jtm"),
    "jtm-j": dict(hierarchical=False, tree_learning="jtm"),
    "jtm-h": dict(hierarchical=True, tree_learning="none"),
    "tdm": dict(hierarchical=False, attention=True, tree_learning="clustering"),
}


@dataclass
class Budget:
    """Training options shared by every model-based method of one experiment."""

    iterations: int = 3
    epochs: int = 1
    max_examples_per_epoch: Optional[int] = None
    n_threads: Optional[int] = None
    device: Optional[str] = None
    #: Item-CF's co-occurrence window; None: chosen on validation users.
    itemcf_window: Optional[int] = None


def make(name: str, budget: Budget, seed: int):
    """A fresh, unfitted recommender for ``name``."""
    if name in NOT_BUILT:
        raise NotImplementedError(NOT_BUILT[name])
    if name == "popularity":
        return Popularity()
    if name == "itemcf":
        return ItemCF(window=budget.itemcf_window)
    if name == "youtube-dnn":
        return YouTubeDNN(seed=seed, device=budget.device, n_threads=budget.n_threads)
    if name == "hsm":
        return HSM(seed=seed, device=budget.device, n_threads=budget.n_threads)
    from ..jtm import JTM

    variant = JTM_VARIANTS["jtm" if name == "dnn" else name]
    return JTM(
        device=budget.device,
        n_threads=budget.n_threads,
        iterations=budget.iterations,
        epochs=budget.epochs,
        max_examples_per_epoch=budget.max_examples_per_epoch,
        seed=seed,
        **variant,
    )
