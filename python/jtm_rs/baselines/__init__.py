"""Baselines of the paper's comparison, one file per method, behind
:class:`~jtm_rs.baselines.base.Recommender` (the interface :class:`jtm_rs.JTM` shares):

* :class:`Popularity` — the most frequent training items;
* :class:`ItemCF` — cosine item-item co-occurrence within a window, scored from behaviours.

The model-based rows (DNN, TDM, JTM-J, JTM-H) are configurations of :class:`jtm_rs.JTM`; see
:mod:`jtm_rs.experiments.methods`.
"""

from .base import Recommender, top_m
from .itemcf import ItemCF
from .popularity import Popularity

__all__ = ["Recommender", "Popularity", "ItemCF", "top_m"]
