"""One place for the thread counts of torch (intra-op) and the Rust core (rayon).

``n_threads`` (``JTM(n_threads=…)``, ``--threads``) sets both. Left unset, rayon uses every
core for its short parallel phases (tree learning, k-means, beam search), and torch runs
**one** intra-op thread while a method scores: measured on a 2-core machine with another
process busy, torch's default (one thread per core) trained 3–10x slower than one thread,
because its threads wait for each other at every operation whenever one is descheduled.

Training, where it matters most, measures instead (:class:`ThreadTuner`): each epoch starts
with a few batches on 1, 2, 4, … threads (up to the cores this process may use) and goes on
with the fastest — 2 threads on idle cores (~1.5x one), 1 on busy ones. Set
``JTM_TORCH_THREADS`` (a number) to fix the count instead. Torch's global setting is restored
afterwards (``benches/train_throughput.py`` measures all of this).
"""

from __future__ import annotations

import contextlib
import functools
import logging
import math
import os
import time
from typing import Dict, Iterator, List, Optional

import torch

#: torch intra-op threads while scoring when ``n_threads`` is not given.
DEFAULT_TORCH_THREADS = 1

logger = logging.getLogger("jtm_rs")


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


def available_cores() -> int:
    """Cores this process may run on (its CPU affinity where the OS tells it)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def training_tuner(n_threads: Optional[int], device_type: str) -> Optional["ThreadTuner"]:
    """A :class:`ThreadTuner` where nobody fixed the count (no ``n_threads``, no
    ``JTM_TORCH_THREADS``), training runs on the CPU and more than one core is there."""
    if n_threads is not None or os.environ.get("JTM_TORCH_THREADS") or device_type != "cpu":
        return None
    cores = available_cores()
    return ThreadTuner(cores) if cores > 1 else None


class ThreadTuner:
    """Picks torch's intra-op thread count for one pass of training by timing it.

    :meth:`start` begins a pass; around each batch, :meth:`before` sets the thread count and
    :meth:`after` records the batch's seconds per sample. The first batch warms up unmeasured;
    the next batches cycle through the candidates ``rounds`` times (interleaved, so a load that
    changes meanwhile slows all alike), dropping a candidate as soon as its best batch is
    ``drop`` times slower than another's (on busy cores extra threads can be 10x slower: one
    such batch is enough); the rest of the pass runs on the candidate whose best batch had the
    lowest seconds per sample. :meth:`finish` restores torch's count. Candidates are 1, 2,
    4, … up to ``most``, and ``most`` itself.
    """

    def __init__(self, most: int, rounds: int = 3, drop: float = 1.5):
        cands = [1]
        while cands[-1] * 2 <= most:
            cands.append(cands[-1] * 2)
        if most > cands[-1]:
            cands.append(most)
        self.candidates: List[int] = cands
        self.rounds = rounds
        self.drop = drop
        self.chosen: Optional[int] = None
        self.best: Dict[int, float] = {}
        self._queue: List[int] = []
        self._warm = True
        self._restore = torch.get_num_threads()

    def start(self) -> None:
        self.chosen, self.best, self._warm = None, {c: math.inf for c in self.candidates}, True
        self._queue = [c for _ in range(self.rounds) for c in self.candidates]
        self._restore = torch.get_num_threads()

    def _current(self) -> int:
        if self.chosen is not None:
            return self.chosen
        return self.candidates[0] if self._warm or not self._queue else self._queue[0]

    def before(self) -> None:
        want = self._current()
        if torch.get_num_threads() != want:
            torch.set_num_threads(want)

    def after(self, seconds: float, samples: int) -> None:
        if self.chosen is not None:
            return
        if self._warm:
            self._warm = False
        else:
            c = self._queue.pop(0)
            if samples > 0:
                self.best[c] = min(self.best[c], seconds / samples)
            fastest = min(self.best.values())
            # Unmeasured candidates (inf) stay queued; measured ones stay while within `drop`.
            self._queue = [q for q in self._queue if math.isinf(self.best[q]) or self.best[q] <= self.drop * fastest]
        if not self._queue:
            self.chosen = min(self.candidates, key=lambda c: self.best[c])
            logger.debug("training on %d torch thread(s); samples/s by threads: %s", self.chosen,
                         {c: round(1 / t) if t > 0 and math.isfinite(t) else None for c, t in self.best.items()})

    def finish(self) -> None:
        if torch.get_num_threads() != self._restore:
            torch.set_num_threads(self._restore)

    @contextlib.contextmanager
    def batch(self, samples: int) -> Iterator[None]:
        """:meth:`before`, the block, then :meth:`after` with its seconds for ``samples``."""
        self.before()
        t0 = time.perf_counter()
        yield
        self.after(time.perf_counter() - t0, samples)


def tuned(tuner: Optional[ThreadTuner], samples: int):
    """``tuner.batch(samples)``, or nothing where there is no tuner."""
    return contextlib.nullcontext() if tuner is None else tuner.batch(samples)
