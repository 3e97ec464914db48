"""Tree learning, paper Algorithm 2 (the algorithm itself is in ``rust/tree_learning.rs``)."""

from __future__ import annotations

from typing import Callable, Literal, Optional, Union

import numpy as np

from . import _core
from ._arrays import to_numpy
from ._core import Tree
from .config import JTMConfig

WeightsFn = Callable[[np.ndarray, np.ndarray, int, int], "np.ndarray"]
ProgressCallback = Callable[[int, int, int, int], object]


def learn_tree(
    weights_fn: WeightsFn,
    d: int = JTMConfig.d,
    *,
    tree: Tree,
    max_candidates: Optional[int] = None,
    stay_bonus: Union[None, float, np.ndarray] = None,
    chunk_size: Optional[int] = None,
    n_threads: Optional[int] = None,
    rebalance: Literal["regret", "weight"] = "regret",
    improve_passes: int = 8,
    keep_better: bool = True,
    show_progress: bool = True,
    callback: Optional[ProgressCallback] = None,
) -> Tree:
    """Re-assigns items to leaves so as to maximise the model's log-likelihood (paper eq. 2).

    Items are re-placed top-down, ``d`` levels per segment. Within a segment each item keeps
    its ancestor ``p`` at the level above and picks one of the ``arity**depth`` descendants of
    ``p`` at the segment's last level, greedily, with rebalancing so that no node exceeds its
    capacity.

    Parameters
    ----------
    weights_fn
        ``weights_fn(items, parents, start_level, end_level) -> float32|float64[n, arity**(end_level-start_level+1)]``.
        Column ``j`` of row ``i`` is the weight of moving ``items[i]`` to the ``j``-th
        descendant (left to right) of ``parents[i]`` at ``end_level``: the sum over the item's
        training samples of ``log p(ancestor at level j | user)`` for ``j = start_level..end_level``.
        Items without samples should get a constant row; they then keep their old relative
        place. Called on the calling thread, in chunks of at most ``chunk_size`` items.
        May return a torch tensor.
    d
        Levels per segment (the paper's d).
    tree
        The current tree; it is not modified.
    max_candidates
        Best candidates remembered per item (memory ``n_items * max_candidates * 8`` bytes);
        the default ``None`` keeps all ``arity**d``: the exact greedy of the paper. A cap below
        ``arity**d`` makes the greedy approximate where capacities are tight: on real data,
        ``d=7`` with 32 of 128 candidates made the segment ending at the leaves *raise* the
        eq. 2 objective, which all 128 lowered (docs/ablations.md).
    stay_bonus
        Added to each item's weight for its old place (the "home" candidate, where its parent
        is still its old ancestor) in every segment but the last: a number for every item, or
        one per item in the order of ``tree.items``. An item that leaves its subtree loses the
        deeper levels' fit, which a segment's weights do not see. None: the paper's weights.
    chunk_size
        Items per ``weights_fn`` call (default: about 4M weights per call).
    n_threads
        Threads for the assignment (default: rayon's global pool).
    rebalance
        Which items an overflowing node keeps, after the items that were already under it
        (the paper's lazy rule): ``"regret"`` (default) keeps those that would lose most by
        moving to their next free choice; ``"weight"`` keeps the heaviest, as in the public
        TDM/JTM code. Regret is closer to the optimal assignment on tightly packed levels.
    improve_passes
        Passes of pairwise-exchange improvement after the greedy (0 disables), applied where a
        parent's items x candidates table is small (the levels near the leaves).
    keep_better
        A parent whose items were all under it before keeps their old placement when that
        has the larger total weight, so no such parent loses weight (default True).
    show_progress
        Show progress (a tqdm bar on a terminal, log lines otherwise).
    callback
        ``callback(segment, n_segments, done, total)`` after each chunk of weights.

    Returns
    -------
    Tree
        A new, valid tree over the same items, arity and levels.
    """
    bar = None
    if show_progress:
        from .progress import bar as progress_bar

        # A tqdm bar on a terminal; log lines every ~30 s otherwise (CI, log files).
        bar = progress_bar(None, "learn_tree", "item", leave=False)
    last = [0, -1]

    def progress(segment: int, n_segments: int, done: int, total: int) -> None:
        if bar is not None:
            if not bar.total:
                bar.total = total * n_segments
            if segment != last[1]:
                last[0], last[1] = 0, segment
            bar.update(done - last[0])
            bar.set_postfix(segment=f"{segment + 1}/{n_segments}")
            last[0] = done
        if callback is not None:
            callback(segment, n_segments, done, total)

    def weights(items: np.ndarray, parents: np.ndarray, start: int, end: int):
        return to_numpy(weights_fn(items, parents, start, end))

    try:
        return _core.learn_tree(
            weights,
            tree,
            d=d,
            max_candidates=max_candidates,
            chunk_size=chunk_size,
            n_threads=n_threads,
            progress=progress if (bar is not None or callback is not None) else None,
            rebalance=rebalance,
            improve_passes=improve_passes,
            keep_better=keep_better,
            stay_bonus=None if stay_bonus is None else np.broadcast_to(np.asarray(stay_bonus, dtype=np.float64), (tree.n_items,)),
        )
    finally:
        if bar is not None:
            bar.close()
