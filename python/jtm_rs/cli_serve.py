"""``jtm-rs serve``: a saved model as an HTTP retrieval service (uvicorn + Starlette;
:mod:`jtm_rs.serving`, docs/serving.md)::

    jtm-rs serve run/ --port 8000 --max-batch 64
    curl -s localhost:8000/recommend -d '{"history": [12, 7, 31], "m": 10}'
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os

from .exceptions import InvalidInputError

#: The environment variable that carries the configuration to each worker process.
CONFIG_ENV = "JTM_RS_SERVE_CONFIG"


def add_serve_command(command, runtime_args) -> None:
    s = command("serve", "serve a saved model over HTTP: POST /recommend, /health, /ready, /metrics, /admin/reload")
    s.add_argument("model", help="directory of the saved model (jtm-rs train / update)")
    s.add_argument("--host", default="127.0.0.1", help="address to listen on")
    s.add_argument("--port", type=int, default=8000, help="port to listen on")
    s.add_argument("--max-batch", type=int, default=64, help="most users in one batched retrieval")
    s.add_argument("--max-wait-ms", type=float, default=0.0,
                   help="how long a batch waits for more requests beyond those queued meanwhile")
    s.add_argument("--max-queue", type=int, default=1024, help="requests waiting beyond this are refused (503)")
    s.add_argument("--timeout-ms", type=float, default=10_000.0, help="a request not answered by then gets a 504")
    s.add_argument("--workers", type=int, default=1, help="server processes, each with its own copy of the model")
    s.add_argument("--watch", type=float, default=0.0, metavar="SECONDS",
                   help="look at MODEL's manifest this often and swap in a new save written there (0: never)")
    runtime_args(s)
    s.set_defaults(fn=cmd_serve)


def app_from_environment():
    """The application of one worker process (uvicorn's factory), configured by :data:`CONFIG_ENV`."""
    from .serving import ServeConfig, create_app

    return create_app(ServeConfig(**json.loads(os.environ[CONFIG_ENV])))


def cmd_serve(a: argparse.Namespace) -> None:
    import uvicorn

    from .serving import ServeConfig, create_app
    from .serving.slot import load_served

    if a.max_batch < 1 or a.max_queue < 1 or a.workers < 1 or not a.max_wait_ms >= 0 or not a.timeout_ms > 0 \
            or not a.watch >= 0:
        raise InvalidInputError("--max-batch, --max-queue and --workers must be >= 1, --max-wait-ms and --watch "
                                ">= 0, --timeout-ms > 0")
    config = ServeConfig(a.model, max_batch=a.max_batch, max_wait_ms=a.max_wait_ms, max_queue=a.max_queue,
                         timeout_ms=a.timeout_ms, threads=a.threads, device=a.device, watch_s=a.watch,
                         workers=a.workers)
    served = load_served(a.model, a.threads, a.device)  # a save that cannot serve fails here, at once
    log = "info" if a.verbose else "warning"
    print(f"jtm-rs serve: {a.model} (model {served.fingerprint}, {served.n_items} items) on "
          f"http://{a.host}:{a.port} with {a.workers} worker(s)", flush=True)
    if a.workers == 1:
        uvicorn.run(create_app(config, served), host=a.host, port=a.port, log_level=log)
        return
    del served
    fields = {k: v for k, v in dataclasses.asdict(config).items() if k != "limits"}
    os.environ[CONFIG_ENV] = json.dumps(fields)
    uvicorn.run("jtm_rs.cli_serve:app_from_environment", factory=True, workers=a.workers, host=a.host, port=a.port,
                log_level=log)


__all__ = ["add_serve_command", "cmd_serve", "app_from_environment", "CONFIG_ENV"]
