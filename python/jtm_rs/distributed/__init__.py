"""JTM across processes on torch.distributed: the user starts the processes (``torchrun``,
Slurm, a Kubernetes operator, Ray Train) and initialises the process group; the library
splits its work over the group's ranks. No scheduler, parameter server or RPC of its own.

* :class:`Ranks` — the group, and the few collectives the library uses;
* :func:`sharded_weights_fn` — tree learning's model scoring split over ranks, every rank
  then running the same (deterministic) assignment, so all reach the one-process tree;
* :mod:`.training` — training with ``DistributedDataParallel``: each rank its part of every
  batch, gradients averaged;
* :func:`evaluate` — evaluation with the users split over ranks, the metrics reduced.
"""

from .evaluation import evaluate
from .ranks import Ranks
from .training import PairScorer, data_parallel, gradient_bytes, shard_batches
from .tree_learning import sharded_weights_fn

__all__ = ["PairScorer", "Ranks", "data_parallel", "evaluate", "gradient_bytes", "shard_batches",
           "sharded_weights_fn"]
