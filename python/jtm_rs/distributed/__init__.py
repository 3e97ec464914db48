"""JTM across processes on torch.distributed: the user starts the processes (``torchrun``,
Slurm, a Kubernetes operator, Ray Train) and initialises the process group; the library
splits its work over the group's ranks. No scheduler, parameter server or RPC of its own.

* :class:`Ranks` — the group, and the few collectives the library uses;
* :func:`sharded_weights_fn` — tree learning's model scoring split over ranks, every rank
  then running the same (deterministic) assignment, so all reach the one-process tree;
* :func:`kmeans_tree` — the balanced k-means tree with its subtrees split over ranks;
* :mod:`.training` — training with ``DistributedDataParallel``: each rank its part of every
  batch, gradients averaged;
* :func:`evaluate` — evaluation with the users split over ranks, the metrics reduced.
"""

from .evaluation import evaluate
from .kmeans import kmeans_tree
from .ranks import Ranks
from .training import (PairScorer, SparseGradientSync, data_parallel, gradient_bytes, mean_sparse_gradient, shard_batches,
                       sparse_tables)
from .tree_learning import sharded_weights_fn

__all__ = ["PairScorer", "Ranks", "SparseGradientSync", "data_parallel", "evaluate", "gradient_bytes", "kmeans_tree",
           "mean_sparse_gradient", "shard_batches", "sharded_weights_fn", "sparse_tables"]
