"""Where beam search loses a user's items: level by level, the share of each user's true
items whose ancestor at that level is still in the beam.

Beam search keeps k nodes per level; an item is retrievable only while its ancestor survives
every level. At the leaf level the share is Recall@M; the levels where it falls are where
the model's node scores mislead the beam (the gap beam-aware training aims at, OTM §3).
"""

from __future__ import annotations

from typing import Optional

import numpy as np

from ._arrays import to_numpy
from .data import EvaluationUsers
from .retrieval import beam_search, model_score_fn
from .tree_policy import resolve_precision


def beam_recall_by_level(jtm, users: EvaluationUsers, M: int = 200, *, beam_size: Optional[int] = None,
                         batch_size: int = 1024) -> np.ndarray:
    """``float64[L + 1]``: entry ``l`` is the mean over ``users`` (those with a ground truth)
    of the share of their true items whose level-``l`` ancestor is in the beam of
    ``jtm.retrieve(users.features, M, beam_size=beam_size)``. Levels above the first one the
    beam searches keep every node; entry ``L`` is Recall@M. True items the tree lacks count as
    lost, as in :meth:`~jtm_rs.JTM.evaluate`."""
    tree, model = jtm.check_fitted()
    k = M if beam_size is None else beam_size
    n = len(users)
    sizes = np.diff(users.truth_indptr)
    truth_user = np.repeat(np.arange(n), sizes)
    known = tree.contains(users.truth_items)
    t_user, t_item = truth_user[known], users.truth_items[known]
    hits = np.zeros((tree.leaf_level + 1, n))
    hits[:] = np.bincount(t_user, minlength=n)  # levels above the search keep every node
    model.eval()
    precision = resolve_precision(jtm.config.retrieval_precision, jtm.device)  # the arithmetic retrieve uses
    score = model_score_fn(model, tree, jtm.user_leaves(users.features, "ignore"), hierarchical=jtm.config.hierarchical,
                           precision=precision, n_threads=jtm.n_threads)
    n_nodes = np.int64(tree.n_nodes)

    def recording(user_rows: np.ndarray, nodes: np.ndarray, level: int):
        s = to_numpy(score(user_rows, nodes, level)).astype(np.float32, copy=False)
        keep = M if level == tree.leaf_level else k
        # The beam's own choice: per user, by score (ties to the smaller node id).
        order = np.lexsort((nodes, -s, user_rows))
        u = user_rows[order]
        start = np.searchsorted(u, u, side="left")
        kept = order[np.arange(len(order)) - start < keep]
        batch = np.unique(user_rows)
        mine = np.isin(t_user, batch)
        anc = tree.item_ancestors(t_item[mine], level)
        in_beam = np.isin(t_user[mine] * n_nodes + anc, user_rows[kept] * n_nodes + nodes[kept])
        hits[level, batch] = 0
        np.add.at(hits[level], t_user[mine][in_beam], 1)
        return s

    beam_search(tree, recording, n, k, M, batch_size=batch_size, n_threads=jtm.n_threads)
    valid = sizes > 0
    return (hits[:, valid] / sizes[valid]).mean(axis=1) if valid.any() else np.zeros(tree.leaf_level + 1)


__all__ = ["beam_recall_by_level"]
