"""Dynamic batching: the requests that queued while the last batch ran, and those that arrive
within ``max_wait_ms`` of the first (up to ``max_batch`` users), go through one batched
retrieval, run off the event loop on the one thread that retrieves, so HTTP keeps being served
while a batch runs. Under load, batches form by themselves from what queues meanwhile; a lone
user does not wait when ``max_wait_ms`` is 0.

A batch takes the served model once (:class:`~.slot.ModelSlot`), so all its answers come
from one model and name it. The queue is bounded: a full one refuses at once
(:class:`Overloaded`, a 503 with ``Retry-After``) instead of letting latency grow without end.
"""

from __future__ import annotations

import asyncio
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import List, Optional, Sequence

import numpy as np

from .metrics import ServiceMetrics
from .queries import Query
from .slot import ModelSlot, Served


class Overloaded(Exception):
    """The queue is full."""


@dataclass
class Answer:
    items: list
    scores: list
    unknown: list
    model: str


def known_history(served: Served, history: Sequence) -> tuple:
    """``(the items the model can use as features, the ones it cannot)``, in order."""
    model = served.model
    arr = np.asarray(history, dtype=np.int64 if served.int_ids else object)
    if model.item_ids is None:
        inside = (arr >= 0) & (arr < np.iinfo(np.int64).max)
        internal = arr[inside]
    else:
        inside = model.item_ids.contains(arr)
        internal = model.item_ids.encode(arr[inside])
    known = inside.copy()
    known[inside] = model.known_items(internal.astype(np.int64))
    return arr[known].tolist(), arr[~known].tolist()


#: The narrowest beam the service searches with: a query for ``m`` items gets the top ``m`` of
#: a beam ``max(m, MIN_BEAM)`` wide (recall only gains from a wider beam, and below this the
#: search costs little more).
MIN_BEAM = 64


def beam_width(query: Query, n_items: int) -> int:
    return min(n_items, max(query.m, MIN_BEAM))


def answer_batch(served: Served, queries: List[Query]) -> List[Answer]:
    """One batched retrieval per ``(beam width, exclude_history)`` among the queries
    (:func:`beam_width`): a query's answer is the top ``m`` of its own beam, whatever else the
    batch holds. The history is left out inside the search (``exclude`` of
    :meth:`jtm_rs.JTM.retrieve`), so the beam need not widen to make up for it."""
    split = [known_history(served, q.history) for q in queries]  # features: the known items, in order
    keys = [(beam_width(q, served.n_items), q.exclude_history) for q in queries]
    empty = -1 if served.int_ids else ""
    out: List[Optional[Answer]] = [None] * len(queries)
    for width, exclude in sorted(set(keys)):
        group = [k for k, key in enumerate(keys) if key == (width, exclude)]
        ids, scores = served.model.recommend([split[k][0] for k in group], width, on_unknown="ignore",
                                             exclude_history=exclude)
        for k, row, sc in zip(group, ids.tolist(), scores.tolist()):
            kept = [(i, s) for i, s in zip(row, sc) if i != empty][: queries[k].m]
            out[k] = Answer([i for i, _ in kept], [float(s) for _, s in kept], split[k][1], served.fingerprint)
    return out  # type: ignore[return-value]


class Batcher:
    """``await submit(queries)`` -> their :class:`Answer` list; :meth:`run` is the loop that
    forms and runs the batches (started by the application)."""

    def __init__(self, slot: ModelSlot, metrics: ServiceMetrics, max_batch: int = 64, max_wait_ms: float = 0.0,
                 max_queue: int = 1024):
        self.slot, self.metrics = slot, metrics
        self.max_batch, self.max_wait = max_batch, max_wait_ms / 1000.0
        self.queue: "asyncio.Queue" = asyncio.Queue(maxsize=max_queue)
        self.executor = ThreadPoolExecutor(1, thread_name_prefix="jtm-retrieve")
        self._task: Optional[asyncio.Task] = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self.run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
        self.executor.shutdown(wait=False, cancel_futures=True)

    async def submit(self, queries: List[Query]) -> List[Answer]:
        future = asyncio.get_running_loop().create_future()
        try:
            self.queue.put_nowait((queries, future))
        except asyncio.QueueFull:
            raise Overloaded() from None
        self.metrics.queue_depth.set(self.queue.qsize())
        return await future

    async def run(self) -> None:
        while True:
            batch = [await self.queue.get()]
            try:
                await self._run_batch(batch)
            except Exception as e:  # noqa: BLE001 - whatever fails, the loop goes on serving
                for _, f in batch:
                    if not f.done():
                        f.set_exception(e)

    async def _run_batch(self, batch: list) -> None:
        """Completes ``batch`` (its first request taken) with what else queues, then runs it."""
        loop = asyncio.get_running_loop()
        users = len(batch[0][0])
        deadline = loop.time() + self.max_wait
        # What queued while the last batch ran goes first, at once; then up to max_wait more
        # for others (0: none, the batches form only from what waits meanwhile).
        while users < self.max_batch:
            try:
                item = self.queue.get_nowait()
            except asyncio.QueueEmpty:
                left = deadline - loop.time()
                if left <= 0:
                    break
                try:
                    item = await asyncio.wait_for(self.queue.get(), left)
                except asyncio.TimeoutError:
                    break
            batch.append(item)
            users += len(item[0])
        self.metrics.queue_depth.set(self.queue.qsize())
        live = [(q, f) for q, f in batch if not f.done()]  # past their deadline: not run
        if not live:
            return
        served = self.slot.current
        queries = [q for qs, _ in live for q in qs]
        t = time.perf_counter()
        answers = await loop.run_in_executor(self.executor, answer_batch, served, queries)
        self.metrics.batch_users.observe(len(queries))
        self.metrics.batch_seconds.observe(time.perf_counter() - t)
        at = 0
        for qs, f in live:
            if not f.done():
                f.set_result(answers[at : at + len(qs)])
            at += len(qs)


__all__ = ["Answer", "Batcher", "Overloaded", "answer_batch", "beam_width", "known_history", "MIN_BEAM"]
