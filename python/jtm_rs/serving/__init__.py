"""A retrieval service over HTTP (``jtm-rs serve``; docs/serving.md), built on Starlette and
uvicorn, with Prometheus metrics (``prometheus_client``). Optional: ``pip install jtm_rs[serve]``.

* :mod:`.slot`: the model being served and its atomic swap for a new save;
* :mod:`.queries`: a request's JSON, checked, into queries (or a 4xx with the reason);
* :mod:`.batcher`: concurrent requests gathered into one batched retrieval off the event loop;
* :mod:`.metrics`: the counters and histograms ``GET /metrics`` exposes;
* :mod:`.app`: the Starlette application and its routes.
"""

from .app import ServeConfig, create_app

__all__ = ["ServeConfig", "create_app"]
