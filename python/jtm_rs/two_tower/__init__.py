"""Two-tower retrieval, what users of vector search run instead of a tree: a user tower and an
item tower whose inner product is the score, searched by a nearest-neighbour index.

* :class:`SASRec` — the self-attentive sequential model (causal Transformer over the behaviour
  sequence, item embeddings shared with the output layer), behind
  :class:`~jtm_rs.recommender.Recommender`;
* :class:`ExactIndex` / :class:`HNSWIndex` — exact (blocked matrix product) and approximate
  (faiss ``IndexHNSWFlat``) inner-product search, ``search(x, k) -> (D, I)``;
* :func:`sasrec_item_vectors` — SASRec's item vectors for JTM's initial tree
  (``JTMConfig(initial_tree="sasrec")``).

The paper's own two-tower row, YouTube product-DNN, is :class:`jtm_rs.baselines.YouTubeDNN`.
"""

from ..sequence_model import SequenceEncoder
from .index import INDEXES, ExactIndex, HNSWIndex, make_index
from .sasrec import SASRec, sasrec_item_vectors

__all__ = ["SASRec", "sasrec_item_vectors", "SequenceEncoder", "ExactIndex", "HNSWIndex", "INDEXES", "make_index"]
