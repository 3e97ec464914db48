"""The ``weights_fn`` that paper Algorithm 2 needs, computed from a trained model
(docs/design.md, "Tree learning").

For item ``c`` re-placed under parent ``p`` in the segment ``s..e``, candidate ``t`` (a
descendant of ``p`` at level ``e``) gets

    W[c, t] = Σ_{samples (u, c)} Σ_{j=s..e} log p̂(b_j(t) | u)

Per sample, every node of ``p``'s subtree from level ``s`` to ``e`` is scored once
(``b + b² + … + b^(e−s+1)`` model calls) and the log-probabilities are summed along each
root-to-candidate path by repeating level ``j``'s column ``b^(e−j)`` times — not
``(e−s+1)·b^(e−s+1)`` separate calls. Samples per item are capped (``max_samples_per_item``,
drawn at random, seeded) and the kept ones weighted by ``count / kept`` so that W still
estimates the sum over all of the item's samples: without that weight, capping would treat a
popular item like a rare one when they compete for a node, and tree learning would optimise a
different objective from eq. 2. Items with no sample get an all-zero row: the learner then keeps
their old relative place. User features use the hierarchy of the tree the model was trained
on (the old tree), as the model saw them.
"""

from __future__ import annotations

from typing import Optional

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ._core import Tree
from ._core import item_samples as native_item_samples
from .exceptions import InvalidInputError
from .features import BehaviourLeaves, behaviours_at
from .geometry import TreeGeometry, first_node
from .model import score_grid
from .threads import ThreadTuner, tuned
from .tree_learning import WeightsFn


def item_samples(targets: np.ndarray, max_per_item: Optional[int], seed: int = 0):
    """Example rows grouped by target item, at most ``max_per_item`` per item (random, seeded).

    Returns ``(keys, indptr, rows, scale)``: the kept rows of item ``keys[k]`` are
    ``rows[indptr[k]:indptr[k+1]]``, standing for ``scale[k]`` times as many rows.
    """
    if max_per_item is not None and max_per_item < 1:
        raise InvalidInputError(f"max_samples_per_item must be at least 1 (or None), got {max_per_item}")
    perm = np.random.default_rng(seed).permutation(len(targets))
    # The first max_per_item of each item in the permutation's order, as a stable sort by
    # target would give, in two passes in Rust: the sort's copies of the 78 M targets of the
    # UserBehavior layout held ~4 GB at once, the fit's highest memory mark.
    t = targets if targets.dtype in (np.int32, np.int64) else targets.astype(np.int64)
    keys, indptr, rows, counts = native_item_samples(np.ascontiguousarray(t), perm, max_per_item)
    return keys, indptr, rows, counts / np.maximum(np.diff(indptr), 1)


def model_weights_fn(
    model: nn.Module,
    tree: Tree,
    leaves: BehaviourLeaves,
    *,
    hierarchical: bool = True,
    max_samples_per_item: Optional[int] = 8,
    batch_pairs: int = 1 << 20,
    seed: int = 0,
    stay_bonus: float = 0.0,
    precision: str = "float32",
    threads: Optional[ThreadTuner] = None,
    only: Optional[np.ndarray] = None,
) -> WeightsFn:
    """Builds ``weights_fn(items, parents, start_level, end_level)`` for :func:`jtm_rs.learn_tree`
    from ``model`` and the training examples behind ``leaves`` (leaves under ``tree``, the tree
    the model was trained on).

    The function's ``stay_bonus`` attribute is ``stay_bonus`` (nats per training example)
    times each item's training examples, in the order of ``tree.items``: pass it to
    :func:`jtm_rs.learn_tree`, which adds it to the item's old place in every segment but the
    last (0: the paper's weights).

    ``precision="bfloat16"`` scores with the multiplies' operands in bfloat16 (the Rust scoring
    pass for :class:`~jtm_rs.model.JTMModel` on the CPU, else ``torch.autocast``; the
    log-probabilities are summed in float32/64 as before).

    With ``threads``, torch's thread count is chosen by timing the first blocks of scoring
    (one :class:`ThreadTuner` pass over all calls; the caller restores the count).

    With ``only`` (item ids), only those items' samples are scored; every other item gets an
    all-zero row. For callers that hold the others in place anyway (an update's known items,
    pinned), so that tree learning costs what the items that may move cost."""
    if precision not in ("float32", "bfloat16"):
        raise InvalidInputError(f"precision must be 'float32' or 'bfloat16', got {precision!r}")
    device = leaves.device
    geometry = TreeGeometry.of(tree, device)
    b = tree.arity
    keys, indptr, rows, scale = item_samples(leaves.windows.targets, max_samples_per_item, seed)
    if only is not None:
        keep = np.isin(keys, only)
        rows = rows[np.repeat(keep, np.diff(indptr))]
        indptr = np.concatenate(([0], np.cumsum(np.diff(indptr)[keep]))).astype(np.int64)
        keys, scale = keys[keep], scale[keep]
    rows_t = torch.from_numpy(rows).to(device)
    if threads is not None:
        threads.start()

    at = getattr(model, "score_grid_at", None)

    @torch.no_grad()
    def weights(items: np.ndarray, parents: np.ndarray, start: int, end: int) -> np.ndarray:
        model.eval()
        width = b ** (end - start + 1)
        out = torch.zeros(len(items), width, dtype=torch.float64, device=device)
        k = np.searchsorted(keys, items)
        known = (k < len(keys)) & (keys[np.minimum(k, len(keys) - 1)] == items) if len(keys) else np.zeros(len(items), bool)
        lo = np.where(known, indptr[np.minimum(k, len(keys))], 0)
        n = np.where(known, indptr[np.minimum(k + 1, len(keys))] - lo, 0)
        owner = np.repeat(np.arange(len(items)), n)
        flat = np.repeat(lo - np.cumsum(n) + n, n) + np.arange(n.sum())  # indexes into `rows`
        if len(flat) == 0:
            return out.cpu().numpy()
        owner_t = torch.from_numpy(owner).to(device)
        sample_rows = rows_t[torch.from_numpy(flat).to(device)]
        parents_t = torch.from_numpy(np.ascontiguousarray(parents, dtype=np.int64)).to(device)
        nodes_per_sample = sum(b ** (j - start + 1) for j in range(start, end + 1))
        step = max(1, batch_pairs // nodes_per_sample)
        for s0 in range(0, len(flat), step):
            own = owner_t[s0 : s0 + step]
            with tuned(threads, len(own) * nodes_per_sample):
                lv = leaves(sample_rows[s0 : s0 + step])
                acc = torch.zeros(len(own), width, device=device)
                for j in range(start, end + 1):
                    nodes = geometry.descendants(parents_t[own], start - 1, j)
                    # The Rust pass takes the ancestors itself; other models get them here.
                    logits = at(lv, j if hierarchical else None, geometry, nodes, precision) if at else None
                    if logits is None:
                        logits = score_grid(model, behaviours_at(geometry, lv, j, hierarchical), nodes, precision=precision)
                    logp = F.logsigmoid(logits.float())
                    acc += logp.repeat_interleave(b ** (end - j), dim=1)
                out.index_add_(0, own, acc.double())
        weight = np.where(known, scale[np.minimum(k, len(keys) - 1)], 0.0)
        return (out * torch.from_numpy(weight).to(device)[:, None]).cpu().numpy()

    # The examples the kept samples stand for, per item of the tree (0 for items without any).
    per_item = np.zeros(tree.n_items)
    pos = np.searchsorted(tree.items, keys)
    ok = pos < tree.n_items
    ok[ok] = tree.items[pos[ok]] == keys[ok]
    per_item[pos[ok]] = (np.diff(indptr) * scale)[ok]
    weights.stay_bonus = stay_bonus * per_item if stay_bonus else None
    return weights


#: Nats that hold a pinned item at its leaf: far above any eq. 2 weight, finite.
PINNED_WEIGHT = 1e12


def pinned_weights_fn(weights: WeightsFn, tree: Tree, pinned: np.ndarray) -> WeightsFn:
    """``weights`` with each pinned item (one flag per item of ``tree.items``) given
    :data:`PINNED_WEIGHT` on the candidate that is its own node in ``tree``, in every segment
    (the last one too), so that it keeps its exact leaf: its ancestors, and so every feature
    that reads them, stay as the model learned them. Build ``weights`` with ``only`` set to the
    unpinned items: a pinned item's own scores could not move it."""
    order = np.argsort(tree.items, kind="stable")
    sorted_items, held = tree.items[order], np.asarray(pinned, bool)[order]
    starts = [first_node(tree.arity, level) for level in range(tree.leaf_level + 1)]

    def pinned_weights(items: np.ndarray, parents: np.ndarray, start: int, end: int) -> np.ndarray:
        out = weights(items, parents, start, end)
        pos = np.minimum(np.searchsorted(sorted_items, items), len(sorted_items) - 1)
        rows = np.flatnonzero((sorted_items[pos] == items) & held[pos])
        if len(rows):
            width = tree.arity ** (end - start + 1)
            own = tree.item_ancestors(items[rows], end)
            first = starts[end] + (np.asarray(parents)[rows] - starts[start - 1]) * width
            col = own - first
            ok = (col >= 0) & (col < width)  # under the parent it is being placed under
            out[rows[ok], col[ok]] += PINNED_WEIGHT
        return out

    pinned_weights.stay_bonus = getattr(weights, "stay_bonus", None)
    return pinned_weights
