"""The process group a distributed run works in: this process's rank, the world size, and the
collectives the library needs, on numpy arrays (gloo on CPU; NCCL through the current CUDA
device)."""

from __future__ import annotations

import hashlib
from typing import Any, Optional

import numpy as np
import torch

from ..exceptions import InvalidInputError


class Ranks:
    """This process's place in an initialised torch.distributed group (default: the world)."""

    def __init__(self, group: Optional[Any] = None):
        import torch.distributed as dist

        if not (dist.is_available() and dist.is_initialized()):
            raise InvalidInputError(
                "torch.distributed is not initialised: start the processes with torchrun (or another "
                "launcher) and call torch.distributed.init_process_group() before a distributed run"
            )
        self.group = group
        self.rank = dist.get_rank(group)
        self.world = dist.get_world_size(group)
        # NCCL moves CUDA tensors only; gloo and the rest take CPU ones.
        backend = self.backend = dist.get_backend(group)
        self.device = torch.device("cuda", torch.cuda.current_device()) if backend == "nccl" else torch.device("cpu")

    @classmethod
    def current(cls) -> Optional["Ranks"]:
        """The world group's ranks when torch.distributed is initialised, else None."""
        import torch.distributed as dist

        return cls() if dist.is_available() and dist.is_initialized() else None

    @property
    def is_leader(self) -> bool:
        """Rank 0: the one that writes checkpoints and prints progress."""
        return self.rank == 0

    def mine(self, n: int) -> slice:
        """This rank's share of ``n`` rows: every ``world``-th row from ``rank`` (interleaved, so
        shares of rows sorted by anything stay alike)."""
        return slice(self.rank, n, self.world)

    def gather_rows(self, part: np.ndarray, n: int) -> np.ndarray:
        """Every rank's :meth:`mine` share of an ``[n, ...]`` array, put back together on every
        rank (``part`` is this rank's rows, in order)."""
        shares = self._gather_shares(part, [len(range(r, n, self.world)) for r in range(self.world)])
        out = np.empty((n, *shares[0].shape[1:]), dtype=shares[0].dtype)
        for r, share in enumerate(shares):
            out[r::self.world] = share
        return out

    def gather_owned(self, values: np.ndarray, owner: np.ndarray) -> np.ndarray:
        """Every position of a 1-D array from the rank that owns it (``owner``, the same on
        every rank), put together on every rank: each rank sends only the values it owns."""
        shares = self._gather_shares(values[owner == self.rank], np.bincount(owner, minlength=self.world).tolist())
        out = np.empty_like(values)
        for r, share in enumerate(shares):
            out[owner == r] = share
        return out

    def _gather_shares(self, part: np.ndarray, sizes: list) -> list:
        """Every rank's ``part`` (rank ``r``'s has ``sizes[r]`` rows), on every rank."""
        import torch.distributed as dist

        src = torch.from_numpy(np.ascontiguousarray(part)).to(self.device)
        padded = src.new_zeros((max(sizes), *src.shape[1:]))  # all_gather needs one shape
        padded[: len(src)] = src
        gathered = [torch.empty_like(padded) for _ in range(self.world)]
        dist.all_gather(gathered, padded, group=self.group)
        return [g[:size].cpu().numpy() for g, size in zip(gathered, sizes)]

    def sum_sparse(self, matrix):
        """The sum over ranks of a scipy sparse matrix of the same shape everywhere, as CSR with
        sorted indices (every rank gets it): each rank's non-zeros gathered, duplicates summed."""
        import scipy.sparse as sp
        import torch.distributed as dist

        coo = matrix.tocoo()
        parts: list = [None] * self.world
        dist.all_gather_object(parts, (coo.row, coo.col, coo.data), group=self.group)
        rows, cols, data = (np.concatenate([p[i] for p in parts]) for i in range(3))
        out = sp.coo_matrix((data, (rows, cols)), shape=matrix.shape).tocsr()
        out.sum_duplicates()
        out.sort_indices()
        return out

    def sum(self, values) -> np.ndarray:
        """The sums over ranks of a few numbers, in float64 (every rank gets them)."""
        import torch.distributed as dist

        t = torch.tensor(np.asarray(values, dtype=np.float64), device=self.device)
        dist.all_reduce(t, group=self.group)
        return t.cpu().numpy()

    def mean(self, value: float) -> float:
        """The mean over ranks of a number (every rank gets it)."""
        return float(self.sum([value])[0]) / self.world

    def check_same(self, what: str, value: str) -> None:
        """Refuses to go on, on every rank, unless ``value`` (e.g. a fingerprint of the data or
        the configuration) is the same on all ranks; the error names ``what`` and the ranks."""
        import torch.distributed as dist

        digest = hashlib.sha256(value.encode()).hexdigest()[:16]
        seen: list = [None] * self.world
        dist.all_gather_object(seen, digest, group=self.group)
        differ = [r for r, d in enumerate(seen) if d != seen[0]]
        if differ:
            raise InvalidInputError(f"the {what} differs across ranks: rank(s) {differ} disagree with rank 0")


__all__ = ["Ranks"]
