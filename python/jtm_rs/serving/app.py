"""The service's Starlette application: ``create_app(ServeConfig(...))``.

Routes: ``POST /recommend`` (one user or a ``users`` batch; :mod:`.queries`), ``GET /health``
(the process answers), ``GET /ready`` (a model is loaded), ``GET /metrics`` (Prometheus
text), ``POST /admin/reload`` (``{"path": DIR}``, default the served directory: load beside,
probe, swap; :mod:`.slot`). Every refusal is a 4xx with ``{"error", "kind"}``; a full queue is
a 503 with ``Retry-After``, a request past ``timeout_ms`` a 504. No error ends the process.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import orjson
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from .batcher import Batcher, Overloaded
from .metrics import ServiceMetrics
from .queries import BadRequest, Limits, parse, reload_path
from ..storage import MANIFEST
from .slot import ModelSlot, ReloadRefused, Served, fingerprint, load_served

logger = logging.getLogger("jtm_rs")


class JSONBody(JSONResponse):
    """A JSON response rendered by orjson: the event loop renders every answer (200 ids and
    200 scores a user), and the standard library's encoder held it, and the GIL the batches
    need, for a fifth of its time under load (docs/serving.md, "What the service spends")."""

    def render(self, content) -> bytes:
        return orjson.dumps(content)


@dataclass(frozen=True)
class ServeConfig:
    model_dir: str
    max_batch: int = 64
    max_wait_ms: float = 0.0
    max_queue: int = 1024
    timeout_ms: float = 10_000.0
    max_body_bytes: int = 1 << 20
    limits: Limits = field(default_factory=Limits)
    threads: Optional[int] = None
    device: Optional[str] = None
    #: Seconds between looks at ``model_dir``'s manifest; a new save there is loaded and
    #: swapped in as by ``POST /admin/reload`` (0: no watching). Every worker process watches
    #: for itself, so a save reaches all of them, which one reload request cannot.
    watch_s: float = 0.0
    #: Server processes behind the port. A reload request reaches only one of them, so with
    #: more than one it is refused (409) and ``watch_s`` swaps them all.
    workers: int = 1


class Service:
    """The state behind the routes: the model slot, the batcher, the metrics."""

    def __init__(self, config: ServeConfig, served: Served):
        self.config, self.metrics = config, ServiceMetrics()
        self.slot = ModelSlot(served)
        self.metrics.serving(served.fingerprint)
        self.batcher = Batcher(self.slot, self.metrics, config.max_batch, config.max_wait_ms, config.max_queue)
        self.reload_lock = asyncio.Lock()

    async def recommend(self, request: Request) -> Response:
        served = self.slot.current  # for checking ids and m; the batch takes its own reference
        body = await _read_body(request, self.config.max_body_bytes)
        queries, batched = parse(body, served.n_items, served.int_ids, self.config.limits)
        try:
            answers = await asyncio.wait_for(self.batcher.submit(queries), self.config.timeout_ms / 1000.0)
        except asyncio.TimeoutError:
            raise BadRequest(504, f"no answer within {self.config.timeout_ms:g} ms", "deadline") from None
        rows = [{"items": a.items, "scores": a.scores, "unknown": a.unknown} for a in answers]
        model = answers[0].model
        if len({a.model for a in answers}) != 1:  # never: one request is one batch
            raise RuntimeError("a request was answered by two models")
        return JSONBody({"results": rows, "model": model} if batched else {**rows[0], "model": model})

    async def reload(self, request: Request) -> Response:
        path = reload_path(await _read_body(request, self.config.max_body_bytes), self.slot.current.path)
        if self.config.workers > 1:
            raise BadRequest(409, f"this service runs {self.config.workers} worker processes and a reload request "
                                  "reaches one of them; start it with --watch SECONDS and write the new save into "
                                  f"{self.config.model_dir}", "reload_needs_watch")
        try:
            served, old = await self.swap_in(path)
        except ReloadRefused as e:
            raise BadRequest(409, f"reload refused, still serving {self.slot.current.fingerprint}: {e}",
                             "reload_refused") from None
        return JSONBody({"model": served.fingerprint, "previous": old.fingerprint, "path": served.path})

    async def swap_in(self, path: str) -> tuple:
        """Loads the save at ``path`` beside the served model, then swaps: ``(new, old)``, or
        :class:`ReloadRefused` with the old model still serving. One at a time."""
        async with self.reload_lock:
            loop = asyncio.get_running_loop()
            try:
                served = await loop.run_in_executor(None, load_served, path, self.config.threads, self.config.device)
            except ReloadRefused:
                self.metrics.reloads.labels(outcome="refused").inc()
                raise
            old = self.slot.swap(served)
            self.metrics.serving(served.fingerprint)
            self.metrics.reloads.labels(outcome="swapped").inc()
            return served, old

    async def watch(self) -> None:
        """Every ``watch_s`` seconds, a save in ``model_dir`` other than the one served (and
        than the last one refused) is swapped in (:meth:`swap_in`)."""
        path, refused = Path(self.config.model_dir), None
        while True:
            await asyncio.sleep(self.config.watch_s)
            try:  # a refused save is tried again once its manifest is written again
                now = (fingerprint(path), (path / MANIFEST).stat().st_mtime_ns)
            except (ReloadRefused, OSError):
                continue  # no save there at this moment: look again later
            if now[0] == self.slot.current.fingerprint or now == refused:
                continue
            try:
                await self.swap_in(str(path))
            except ReloadRefused as e:
                refused = now
                logger.warning("jtm-rs serve: a new save in %s was refused, still serving %s: %s", path,
                               self.slot.current.fingerprint, e)

    async def health(self, request: Request) -> Response:
        return JSONBody({"status": "alive"})

    async def ready(self, request: Request) -> Response:
        served = self.slot.current
        return JSONBody({"status": "ready", "model": served.fingerprint, "items": served.n_items,
                             "worker": os.getpid()})

    async def metrics_text(self, request: Request) -> Response:
        body, kind = self.metrics.exposition()
        return Response(body, media_type=kind)


#: A body over the limit is still read (and dropped) up to this many times the limit, so that
#: the client, still sending, reads the 413 instead of a reset connection; beyond it the
#: connection is closed early.
DRAIN_FACTOR = 8


async def _read_body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > DRAIN_FACTOR * limit:
        raise BadRequest(413, f"the body is {declared} bytes; at most {limit}", "body_too_large")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > DRAIN_FACTOR * limit:
            break
        if size <= limit:
            chunks.append(chunk)
    if size > limit:
        raise BadRequest(413, f"the body is over {limit} bytes", "body_too_large")
    return b"".join(chunks)


def _endpoint(service: Service, handler, name: str):
    async def call(request: Request) -> Response:
        t = time.perf_counter()
        try:
            response = await handler(request)
        except BadRequest as e:
            service.metrics.errors.labels(kind=e.kind).inc()
            response = JSONBody({"error": e.reason, "kind": e.kind}, status_code=e.status)
        except Overloaded:
            service.metrics.errors.labels(kind="overloaded").inc()
            response = JSONBody({"error": "the queue is full; retry", "kind": "overloaded"}, status_code=503,
                                    headers={"Retry-After": "1"})
        except Exception as e:  # noqa: BLE001 - a fault answers 500 and the process goes on
            service.metrics.errors.labels(kind="internal").inc()
            response = JSONBody({"error": f"{type(e).__name__}: {e}"[:500], "kind": "internal"}, status_code=500)
        service.metrics.requests.labels(endpoint=name, status=str(response.status_code)).inc()
        service.metrics.latency.labels(endpoint=name).observe(time.perf_counter() - t)
        return response

    return call


def create_app(config: ServeConfig, served: Optional[Served] = None) -> Starlette:
    """The application serving ``config.model_dir`` (loaded here unless ``served`` is given;
    a save that cannot serve raises :class:`~.slot.ReloadRefused`)."""
    service = Service(config, served or load_served(config.model_dir, config.threads, config.device))

    @contextlib.asynccontextmanager
    async def lifespan(app):
        service.batcher.start()
        watcher = asyncio.get_running_loop().create_task(service.watch()) if config.watch_s > 0 else None
        yield
        if watcher is not None:
            watcher.cancel()
        await service.batcher.stop()

    routes = [
        Route("/recommend", _endpoint(service, service.recommend, "recommend"), methods=["POST"]),
        Route("/admin/reload", _endpoint(service, service.reload, "reload"), methods=["POST"]),
        Route("/health", _endpoint(service, service.health, "health"), methods=["GET"]),
        Route("/ready", _endpoint(service, service.ready, "ready"), methods=["GET"]),
        Route("/metrics", _endpoint(service, service.metrics_text, "metrics"), methods=["GET"]),
    ]
    app = Starlette(routes=routes, lifespan=lifespan)
    app.state.service = service
    return app


__all__ = ["ServeConfig", "Service", "create_app"]
