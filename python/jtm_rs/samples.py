"""Training samples with per-level negatives (generated in ``rust/samples.rs``)."""

from __future__ import annotations

from typing import NamedTuple, Optional, Sequence

import numpy as np

from ._core import Tree


class Samples(NamedTuple):
    """Flat, aligned arrays: example ``example[r]`` sees ``node[r]`` at ``level[r]`` with ``label[r]``."""

    example: np.ndarray  # int64, index into the targets passed in
    node: np.ndarray  # int64 node ids
    level: np.ndarray  # int64
    label: np.ndarray  # float32, 1 for the positive (the target's ancestor), 0 for negatives


def generate_samples(
    tree: Tree,
    targets: np.ndarray,
    negatives: Sequence[int],
    *,
    start_level: int = 1,
    seed: int = 0,
    n_threads: Optional[int] = None,
    first_stream: int = 0,
) -> Samples:
    """For each target item and each level from ``start_level`` to the leaves: the target's
    ancestor (label 1) and ``negatives[level]`` distinct other live nodes of that level drawn
    uniformly (label 0; capped at the number of other live nodes). Seeded and independent of
    the thread count.

    ``negatives`` has one count per level ``0..tree.leaf_level``. Target ``e`` draws from
    random stream ``first_stream + e``: an epoch generated in chunks, each with its offset in
    the epoch, equals the epoch generated at once.
    """
    return Samples(*tree.generate_samples(targets, list(negatives), start_level, seed, n_threads, first_stream))
