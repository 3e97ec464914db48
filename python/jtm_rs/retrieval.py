"""Retrieval by layer-wise beam search (the driver is in ``rust/beam_search.rs``)."""

from __future__ import annotations

from typing import Callable, Optional, Tuple

import numpy as np

from ._arrays import to_numpy
from ._core import Tree
from .exceptions import InvalidInputError

ScoreFn = Callable[[np.ndarray, np.ndarray, int], "np.ndarray"]


def beam_search(
    tree: Tree,
    score_fn: ScoreFn,
    n_users: int,
    k: int,
    m: Optional[int] = None,
    *,
    batch_size: Optional[int] = None,
    n_threads: Optional[int] = None,
) -> Tuple[np.ndarray, np.ndarray]:
    """Top-``m`` items for each of ``n_users`` users, faiss style: ``(items, scores)``.

    Parameters
    ----------
    tree
        The index.
    score_fn
        ``score_fn(user_rows: int64[p], nodes: int64[p], level: int) -> float[p]``: one score
        per (user row, node) pair, higher is better. Called once per level per batch with
        every pair of that level; ``user_rows`` index ``0..n_users``. May return a torch tensor
        (CPU or CUDA); numpy float32 is used without a copy.
    n_users
        Number of users; rows ``0..n_users`` of whatever the scorer closes over.
    k
        Beam width per level.
    m
        Items returned per user (``m <= k``; default ``k``).
    batch_size
        Users per search (bounds the pairs per call to about ``batch_size * k * arity``);
        default: all at once.
    n_threads
        Threads for the top-k selection (default: rayon's global pool).

    Returns
    -------
    items : int64[n_users, m]
        Item ids, best first.
    scores : float32[n_users, m]
        Their leaf scores.
    """
    m = k if m is None else m
    if batch_size is None or batch_size >= n_users:
        return tree.beam_search(_numpy_scores(score_fn, 0), n_users, k, m, n_threads)
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    items, scores = [], []
    for lo in range(0, n_users, batch_size):
        n = min(batch_size, n_users - lo)
        i, s = tree.beam_search(_numpy_scores(score_fn, lo), n, k, m, n_threads)
        items.append(i)
        scores.append(s)
    return np.concatenate(items), np.concatenate(scores)


def _numpy_scores(score_fn: ScoreFn, offset: int) -> ScoreFn:
    def score(user_rows: np.ndarray, nodes: np.ndarray, level: int):
        rows = user_rows + offset if offset else user_rows
        return to_numpy(score_fn(rows, nodes, level))

    return score


def check_precision(precision: str) -> None:
    if precision not in ("float32", "bfloat16"):
        raise InvalidInputError(f"precision must be 'float32' or 'bfloat16', got {precision!r}")


def model_score_fn(model, tree: Tree, user_leaves, *, hierarchical: bool, precision: str = "float32",
                   n_threads: Optional[int] = None) -> ScoreFn:
    """A beam-search ``score_fn`` from a torch model following the :mod:`jtm_rs.model` call
    convention; ``user_leaves`` is ``LongTensor[n_users, W]`` (behaviour leaves, ``-1`` padded)
    on the model's device. Returns float32 tensors (moved to numpy by :func:`beam_search`).

    A model with ``user_share``/``score_user_share`` (:class:`~jtm_rs.model.JTMModel`) has each
    user's share of the first layer computed once, for the level asked first and every level
    below it, when the user first appears; each level then costs only its pairs.

    ``precision="bfloat16"`` scores with the multiplies' operands in bfloat16 (the Rust scoring
    pass on the CPU, else ``torch.autocast``; the scores come back as float32), every call
    alike (not by the size of the call: the arithmetic a user's answer comes from does not
    depend on the batch it is searched in). Per call: the callback may run on a thread the
    caller's autocast does not reach.

    ``n_threads``: the Rust scoring pass's threads, as :func:`beam_search`'s (``None``: every
    core); a level of a batch of users splits over them, one user's runs on the calling thread."""
    import torch

    from .features import behaviours_at
    from .geometry import TreeGeometry
    from .model import score_pairs, scoring_pass

    device = user_leaves.device
    geometry = TreeGeometry.of(tree, device)
    shares = _UserShares(model, geometry, user_leaves, hierarchical, precision) if hasattr(model, "score_user_share") else None

    check_precision(precision)
    bf16 = precision == "bfloat16"
    # The Rust pass with the weights read once for all the search's levels (the model does not
    # change during a search): a level of one user costs its pairs, not the conversions.
    passes: list = []

    def score(user_rows: np.ndarray, nodes: np.ndarray, level: int):
        # The Rust pass's path first, in numpy: at one user a level, torch's per-call costs
        # (no_grad, tensors around the arrays) were a large part of the level.
        if shares is not None and device.type == "cpu":
            if not passes:
                with torch.no_grad():
                    passes.append(scoring_pass(model))
            found = shares.rows(user_rows, level) if passes[0] is not None else None
            if found is not None:
                ids = np.where(nodes >= 0, nodes, model.n_nodes)
                return torch.from_numpy(passes[0].scores(*found, ids, precision=precision, n_threads=n_threads))
        return torch_score(user_rows, nodes, level)

    @torch.no_grad()
    def torch_score(user_rows: np.ndarray, nodes: np.ndarray, level: int):
        rows = torch.from_numpy(user_rows).to(device)
        nodes_t = torch.from_numpy(nodes).to(device)
        found = shares.rows(rows, level) if shares is not None else None
        if found is not None:
            return model.score_user_share(*found, nodes_t, precision=precision).float()
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            users, inverse = torch.unique(rows, return_inverse=True)
            beh = behaviours_at(geometry, user_leaves[users], level, hierarchical)
            return score_pairs(model, beh, inverse, nodes_t).float()

    return score


class _UserShares:
    """The first-layer user shares (``model.user_share``) of :func:`model_score_fn`, for the
    users of the current search (a batch of :func:`beam_search`) at every level from the first
    one asked to the leaves: ``[users * levels, H]``, user-major."""

    def __init__(self, model, geometry, user_leaves, hierarchical: bool, precision: str):
        import torch

        self.model, self.geometry, self.user_leaves, self.hierarchical = model, geometry, user_leaves, hierarchical
        # Models of the call convention's user_share(behaviours) take no precision.
        self.precision = {"precision": precision} if precision != "float32" else {}
        self.slot = torch.full((len(user_leaves),), -1, dtype=torch.int64, device=user_leaves.device)
        self.share = None
        self.first_level = 0
        self.n_levels = 1
        self.splits = True

    def rows(self, user_rows, level: int):
        """``(share, each pair's row in it)``, or ``None`` where the model's first layer does
        not split. ``user_rows`` a tensor, or on the CPU a numpy array (rows come back alike)."""
        if not self.splits:
            return None
        slot = self.slot.numpy() if isinstance(user_rows, np.ndarray) else self.slot  # the same memory
        at = slot[user_rows]
        if self.share is None or level < self.first_level or bool((at < 0).any()):
            self._compute(user_rows, level)
            if not self.splits:
                return None
            at = slot[user_rows]
        offset = level - self.first_level if self.hierarchical else 0
        at *= self.n_levels
        at += offset
        return self.share, at

    def _compute(self, user_rows, level: int) -> None:
        import torch

        with torch.no_grad():
            self._compute_shares(user_rows, level)

    def _compute_shares(self, user_rows, level: int) -> None:
        import torch

        users = torch.unique(torch.as_tensor(user_rows))
        beh = self.user_leaves[users]
        self.first_level, self.n_levels = level, 1
        self.share = None
        if self.hierarchical:
            levels = torch.arange(level, self.geometry.leaf_level + 1, device=beh.device)
            self.n_levels = len(levels)
            at = getattr(self.model, "user_share_at", None)
            if at is not None:  # the ancestors taken inside the Rust pass
                self.share = at(beh.repeat_interleave(len(levels), 0), levels.repeat(len(users)), self.geometry,
                                **self.precision)
            if self.share is None:
                beh = self.geometry.ancestors(beh[:, None, :], levels[None, :, None]).flatten(0, 1)
        if self.share is None:
            self.share = self.model.user_share(beh, **self.precision)
        self.splits = self.share is not None
        self.slot.fill_(-1)
        self.slot[users] = torch.arange(len(users), device=users.device)


class ExcludedLeaves:
    """Leaves never returned to some users: ``leaves`` ``int64[n_users, E]``, ``-1`` padded,
    one row per user (row ``r`` is user row ``r`` of the search). Looked up as sorted keys
    ``row * n_nodes + leaf``, so a level's pairs cost one binary search each."""

    def __init__(self, leaves: np.ndarray, n_nodes: int):
        rows = np.broadcast_to(np.arange(leaves.shape[0], dtype=np.int64)[:, None], leaves.shape)
        real = leaves >= 0
        self.leaves, self.n_nodes = leaves, n_nodes
        self.keys = np.unique(rows[real] * n_nodes + leaves[real])

    @classmethod
    def of(cls, tree: Tree, exclude, n_users: int) -> Optional["ExcludedLeaves"]:
        """The leaves of ``exclude`` (internal item ids ``[n_users, E]``, ``PAD`` padded; ids
        the tree does not hold are ignored); ``None`` for ``None``."""
        if exclude is None:
            return None
        exclude = np.asarray(exclude)
        if exclude.ndim != 2 or exclude.shape[0] != n_users or not np.issubdtype(exclude.dtype, np.integer):
            raise InvalidInputError(f"exclude must be an integer array [n_users = {n_users}, E], "
                                    f"got {exclude.dtype} {exclude.shape}")
        exclude = exclude.astype(np.int64)
        leaves = np.full(exclude.shape, -1, dtype=np.int64)
        inside = (exclude >= 0) & tree.contains(exclude)
        leaves[inside] = tree.leaves(exclude[inside])
        return cls(leaves, tree.n_nodes)

    def rows(self, rows: np.ndarray) -> "ExcludedLeaves":
        """Those of the users ``rows``, renumbered from 0."""
        return ExcludedLeaves(self.leaves[rows], self.n_nodes)

    def __bool__(self) -> bool:
        return bool(len(self.keys))

    def mask(self, user_rows: np.ndarray, nodes: np.ndarray) -> np.ndarray:
        """Which (user row, leaf) pairs are excluded."""
        keys = user_rows * self.n_nodes + nodes
        at = np.searchsorted(self.keys, keys).clip(max=len(self.keys) - 1)
        return self.keys[at] == keys


def excluding(score_fn: ScoreFn, leaf_level: int, excluded: ExcludedLeaves) -> ScoreFn:
    """``score_fn`` with the excluded leaves scored ``-inf`` at the leaf level: the beam then
    returns the best ``m`` of the other leaves it reaches (no wider beam is needed to make up
    for the user's own items), and an excluded leaf only where fewer than ``m`` others were
    reached (its score ``-inf`` says so)."""
    if not excluded:
        return score_fn

    def score(user_rows: np.ndarray, nodes: np.ndarray, level: int):
        s = score_fn(user_rows, nodes, level)
        if level != leaf_level:
            return s
        s = np.array(to_numpy(s), dtype=np.float32)
        s[excluded.mask(user_rows, nodes)] = -np.inf
        return s

    return score


def drop_excluded(items: np.ndarray, scores: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """Slots a search could only fill with an excluded item (score ``-inf``) become ``-1``."""
    items[np.isneginf(scores)] = -1
    return items, scores


def model_search(model, tree: Tree, user_leaves, M: int, k: int, *, method: str, hierarchical: bool,
                 excluded: Optional[ExcludedLeaves] = None, batch_size: Optional[int] = None,
                 n_threads: Optional[int] = None, precision: str = "float32") -> Tuple[np.ndarray, np.ndarray]:
    """A torch model's top-``M`` (``method`` ``"beam"``, width ``k``, or ``"brute_force"``),
    ``excluded`` leaves left out, scored in ``precision`` (``"float32"`` or ``"bfloat16"``). A
    user whose beam reached fewer than ``M`` leaves outside them is searched again with the
    beam wider by what it excludes; slots still empty (fewer items left than ``M``) are
    ``-1``, score ``-inf``."""
    if method == "brute_force":
        return drop_excluded(*brute_force(model, tree, user_leaves, M, hierarchical=hierarchical, excluded=excluded,
                                          precision=precision))
    score = excluding(model_score_fn(model, tree, user_leaves, hierarchical=hierarchical, precision=precision,
                                     n_threads=n_threads), tree.leaf_level, excluded)
    items, scores = beam_search(tree, score, len(user_leaves), k, M, batch_size=batch_size, n_threads=n_threads)
    if excluded:
        short = np.flatnonzero(np.isneginf(scores[:, -1]))
        wide = min(tree.n_items, k + excluded.leaves.shape[1])
        if len(short) and wide > k:
            import torch

            rows = torch.from_numpy(short).to(user_leaves.device)
            items[short], scores[short] = model_search(
                model, tree, user_leaves[rows], M, wide, method=method, hierarchical=hierarchical,
                excluded=excluded.rows(short), batch_size=batch_size, n_threads=n_threads, precision=precision)
    return drop_excluded(items, scores)


def brute_force(model, tree: Tree, user_leaves, m: int, *, hierarchical: bool, batch_pairs: int = 1 << 21,
                excluded: Optional[ExcludedLeaves] = None, precision: str = "float32"):
    """The paper's "DNN" row: score every item's leaf for every user, keep the top ``m``.
    Returns ``(items int64[n_users, m], scores float32[n_users, m])`` like :func:`beam_search`;
    ``excluded`` leaves score ``-inf``."""
    import torch

    from .features import behaviours_at
    from .geometry import TreeGeometry
    from .model import score_grid

    check_precision(precision)
    device = user_leaves.device
    geometry = TreeGeometry.of(tree, device)
    items = tree.items
    leaf_ids = tree.leaves(items)
    leaves = torch.from_numpy(leaf_ids).to(device)
    per_batch = max(1, batch_pairs // len(items))
    out_i, out_s = [], []
    with torch.no_grad():
        for lo in range(0, user_leaves.shape[0], per_batch):
            beh = behaviours_at(geometry, user_leaves[lo : lo + per_batch], tree.leaf_level, hierarchical)
            # Past batch_pairs items a user's leaves go in blocks: at 3.7 M items one call's
            # node shares were 1.9 GB (a pair's score does not depend on its call's others).
            logits = torch.cat([score_grid(model, beh, leaves[b : b + batch_pairs].expand(beh.shape[0], -1),
                                           precision=precision).float()
                                for b in range(0, len(items), batch_pairs)], dim=1)
            if excluded:
                rows = np.repeat(np.arange(lo, lo + beh.shape[0], dtype=np.int64), len(items))
                hit = excluded.mask(rows, np.tile(leaf_ids, beh.shape[0]))
                logits[torch.from_numpy(hit.reshape(beh.shape[0], -1)).to(device)] = float("-inf")
            s, j = torch.topk(logits, m, dim=1)
            out_i.append(items[j.cpu().numpy()])
            out_s.append(s.cpu().numpy())
    if not out_i:
        return np.zeros((0, m), dtype=np.int64), np.zeros((0, m), dtype=np.float32)
    return np.concatenate(out_i), np.concatenate(out_s)
