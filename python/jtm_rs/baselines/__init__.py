"""Baselines of the paper's comparison, one file per method, behind
:class:`~jtm_rs.recommender.Recommender` (the interface :class:`jtm_rs.JTM` shares):

* :class:`Popularity` — the most frequent training items;
* :class:`ItemCF` — cosine item-item co-occurrence within a window, scored from behaviours;
* :class:`YouTubeDNN` — two-tower model, sampled softmax, exact inner-product top-M;
* :class:`HSM` — hierarchical softmax over JTM's initial tree, beam search by path probability.

The model-based rows (TDM, JTM-J, JTM-H) are configurations of :class:`jtm_rs.JTM`, and DNN
is :class:`jtm_rs.jtm.BruteForce`; see :mod:`jtm_rs.experiments.methods`.
"""

from ..recommender import Recommender, top_m
from ._torch import EpochRecord, TorchRecommender
from .hsm import HSM
from .itemcf import ItemCF
from .popularity import Popularity
from .youtube_dnn import YouTubeDNN

__all__ = ["Recommender", "Popularity", "ItemCF", "YouTubeDNN", "HSM", "TorchRecommender", "EpochRecord", "top_m"]
