"""One place for the thread counts of torch (intra-op) and the Rust core (rayon).

``n_threads`` (``JTM(n_threads=…)``, ``--threads``) sets both. Left unset, rayon uses every
core for its short parallel phases (tree learning, k-means, beam search), and torch runs
**one** intra-op thread while a method trains or scores: measured on a 2-core machine with
another process busy, torch's default (one thread per core) trained 3–10x slower than one
thread, because its threads wait for each other at every operation whenever one is
descheduled; on idle cores one thread costs little (``benches/train_throughput.py``). Set
``JTM_TORCH_THREADS`` to change the default. Torch's global setting is restored afterwards.
"""

from __future__ import annotations

import contextlib
import functools
import os
from typing import Iterator, Optional

import torch

#: torch intra-op threads while training or scoring when ``n_threads`` is not given.
DEFAULT_TORCH_THREADS = 1


def torch_thread_count(n_threads: Optional[int]) -> int:
    if n_threads is not None:
        return int(n_threads)
    return int(os.environ.get("JTM_TORCH_THREADS", DEFAULT_TORCH_THREADS))


@contextlib.contextmanager
def torch_threads(n_threads: Optional[int]) -> Iterator[None]:
    """Runs the block with torch's intra-op threads set per :func:`torch_thread_count`."""
    want, before = torch_thread_count(n_threads), torch.get_num_threads()
    if want != before:
        torch.set_num_threads(want)
    try:
        yield
    finally:
        if want != before:
            torch.set_num_threads(before)


def uses_torch_threads(method):
    """Decorator for methods of objects with an ``n_threads`` attribute."""

    @functools.wraps(method)
    def wrapper(self, *args, **kwargs):
        with torch_threads(self.n_threads):
            return method(self, *args, **kwargs)

    return wrapper
