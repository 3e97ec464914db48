"""Joining the process group a launcher set up: ``torchrun`` (and Slurm, Kubernetes operators,
Ray Train) start the processes and give each ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``,
``MASTER_ADDR`` and ``MASTER_PORT``; this turns them into an initialised group."""

from __future__ import annotations

import datetime
import os
from typing import Optional, Tuple

import torch

from ..exceptions import InvalidInputError

#: Seconds a collective waits for the other ranks before the run fails with an error. A rank
#: that dies closes its connections and the others fail at their next collective, at once;
#: this bounds the wait on a rank that hangs alive.
DEFAULT_RANK_TIMEOUT_S = 600.0

_LAUNCHER_VARIABLES = ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")


def init_from_environment(device: Optional[str], timeout_s: Optional[float] = None) -> Tuple[bool, str]:
    """Initialises torch.distributed from the launcher's environment unless it already is:
    gloo on CPU, NCCL with this process's GPU (``cuda:LOCAL_RANK``); collectives time out after
    ``timeout_s`` (default :data:`DEFAULT_RANK_TIMEOUT_S`). Returns ``(whether this call
    initialised it, the device this rank trains on)``."""
    import torch.distributed as dist

    timeout_s = DEFAULT_RANK_TIMEOUT_S if timeout_s is None else timeout_s
    cuda = (device or ("cuda" if torch.cuda.is_available() else "cpu")).startswith("cuda")
    local = int(os.environ.get("LOCAL_RANK", "0"))
    rank_device = f"cuda:{local}" if cuda and device in (None, "cuda") else (device or "cpu")
    if dist.is_available() and dist.is_initialized():
        return False, rank_device
    missing = [v for v in _LAUNCHER_VARIABLES if v not in os.environ]
    if missing:
        raise InvalidInputError(
            f"a distributed run needs the launcher's environment ({', '.join(missing)} not set): start it "
            "with e.g. `torchrun --nproc-per-node 2 -m jtm_rs.cli train DATA --out DIR --distributed`"
        )
    if cuda:
        torch.cuda.set_device(torch.device(rank_device))
    dist.init_process_group("nccl" if cuda else "gloo", timeout=datetime.timedelta(seconds=timeout_s))
    return True, rank_device


__all__ = ["DEFAULT_RANK_TIMEOUT_S", "init_from_environment"]
