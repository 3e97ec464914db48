"""The retrieval service, started for real (``jtm-rs serve`` under uvicorn on a free port) and
spoken to over HTTP: answers equal the in-process ``recommend``, unknown items are reported,
bad requests get a 4xx and leave the server alive, a reload swaps models and refuses a
damaged save, a full queue answers 503 and a late answer 504, and /metrics counts it all."""

import json
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

pytest.importorskip("starlette")
pytest.importorskip("uvicorn")
pytest.importorskip("prometheus_client")

from jtm_rs import JTM, Interactions, synthetic  # noqa: E402
from jtm_rs.storage import fingerprint  # noqa: E402


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http(url, body=None, method=None, raw=None):
    """``(status, parsed JSON or text, headers)``; 4xx/5xx are answers, not exceptions."""
    data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
    req = urllib.request.Request(url, data=data, method=method or ("POST" if data is not None else "GET"),
                                 headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            status, text, headers = r.status, r.read().decode(), r.headers
    except urllib.error.HTTPError as e:
        status, text, headers = e.code, e.read().decode(), e.headers
    try:
        return status, json.loads(text), headers
    except ValueError:
        return status, text, headers


class Server:
    def __init__(self, model_dir, *args):
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc = subprocess.Popen([sys.executable, "-m", "jtm_rs.cli", "serve", str(model_dir), "--port",
                                      str(self.port), "--threads", "1", "--device", "cpu", *args],
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the server exited: {self.proc.stdout.read()}")
            try:
                if http(self.url + "/health")[0] == 200:
                    return
            except OSError:
                time.sleep(0.1)
        raise RuntimeError("the server did not come up in 120 s")

    def stop(self):
        self.proc.terminate()
        self.proc.wait(timeout=30)


def _fit(seed, out):
    raw = synthetic.generate(300, 250, seed=seed).interactions
    data = Interactions.from_ids(raw.user, raw.item * 3 + 7, raw.timestamp)  # the data's own ids
    jtm = JTM(iterations=1, max_examples_per_epoch=3000, n_threads=1, seed=seed).fit(data, show_progress=False)
    jtm.save(out)
    return jtm, data


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    root = tmp_path_factory.mktemp("serving")
    jtm, data = _fit(0, root / "a")
    _fit(1, root / "b")
    server = Server(root / "a")
    yield server, jtm, data, root
    server.stop()


def _histories(data, n=5):
    return [data.item_ids.decode(data.item[data.user == u]).tolist()[:12] for u in np.unique(data.user)[:n]]


def test_answers_are_the_in_process_recommendations(served):
    server, jtm, data, _ = served
    hist = _histories(data)
    want, scores = (x[:, :10] for x in jtm.recommend(hist, M=64))  # a beam of 64 (MIN_BEAM)
    status, ready, _ = http(server.url + "/ready")
    assert status == 200 and ready["items"] == jtm.tree.n_items
    status, one, _ = http(server.url + "/recommend", {"history": hist[0], "m": 10, "exclude_history": False})
    assert status == 200 and one["items"] == want[0].tolist() and one["model"] == ready["model"]
    np.testing.assert_allclose(one["scores"], scores[0], rtol=1e-5)
    status, many, _ = http(server.url + "/recommend",
                           {"users": [{"history": h, "m": 10, "exclude_history": False} for h in hist]})
    assert status == 200 and [r["items"] for r in many["results"]] == want.tolist()
    status, left_out, _ = http(server.url + "/recommend", {"history": hist[1], "m": 10})  # exclude_history: default
    assert status == 200 and len(left_out["items"]) == 10 and not set(left_out["items"]) & set(hist[1])
    # A user's answer does not depend on what else its batch asks.
    mixed = [{"history": hist[1], "m": 10}, {"history": hist[2], "m": 100}, {"history": hist[3], "m": 3}]
    status, together, _ = http(server.url + "/recommend", {"users": mixed})
    assert status == 200 and together["results"][0]["items"] == left_out["items"]
    for q, r in zip(mixed[1:], together["results"][1:]):
        assert http(server.url + "/recommend", q)[1]["items"] == r["items"]


def test_unknown_items_are_reported_and_left_out_of_the_features(served):
    server, jtm, data, _ = served
    h = _histories(data, 1)[0]
    status, got, _ = http(server.url + "/recommend", {"history": [999_999, *h, -5], "m": 10, "exclude_history": False})
    assert status == 200 and got["unknown"] == [999_999, -5]
    assert got["items"] == jtm.recommend([h], M=64)[0][0][:10].tolist()


BAD = [
    (b"{not json", 400), (b"", 400), (b"[1, 2]", 422), (b"null", 422), (b"{}", 422),
    (b'{"history": 5}', 422), (b'{"history": []}', 422), (b'{"history": ["a"]}', 422),
    (b'{"history": [true]}', 422), (b'{"history": [1.5]}', 422), (b'{"history": [[1]]}', 422),
    (b'{"history": [99999999999999999999999]}', 422), (b'{"history": [10], "m": 0}', 422),
    (b'{"history": [10], "m": 100000000}', 422), (b'{"history": [10], "m": "ten"}', 422),
    (b'{"history": [10], "exclude_history": "yes"}', 422), (b'{"history": [10], "colour": 1}', 422),
    (b'{"users": []}', 422), (b'{"users": {"history": [10]}}', 422), (b'{"users": [5]}', 422),
    (b'{"users": [{"history": [10]}], "m": 3}', 422), (json.dumps({"history": list(range(20_001))}).encode(), 413),
    (json.dumps({"users": [{"history": [10]}] * 1001}).encode(), 413), (b" " * (2 << 20), 413),
]


def test_bad_requests_get_a_4xx_with_the_reason_and_the_server_goes_on(served):
    server, _, data, _ = served
    assert len(BAD) >= 20
    for raw, want in BAD:
        status, body, _ = http(server.url + "/recommend", raw=raw)
        assert status == want, (raw[:60], status, body)
        assert isinstance(body, dict) and body["error"] and body["kind"], body
    assert http(server.url + "/recommend")[0] == 405  # GET
    assert http(server.url + "/nowhere")[0] == 404
    assert http(server.url + "/health")[0] == 200
    assert http(server.url + "/recommend", {"history": _histories(data, 1)[0], "m": 5})[0] == 200
    _, text, headers = http(server.url + "/metrics")
    assert headers["Content-Type"].startswith("text/plain")
    assert 'jtm_errors_total{kind="empty_history"} 1.0' in text and 'jtm_errors_total{kind="internal"}' not in text
    assert 'jtm_requests_total{endpoint="recommend",status="422"}' in text and "jtm_batch_users_bucket" in text


def test_a_reload_swaps_the_model_and_a_damaged_save_is_refused(served, tmp_path):
    server, _, data, root = served
    h = _histories(data, 1)[0]
    first = http(server.url + "/ready")[1]["model"]
    status, swapped, _ = http(server.url + "/admin/reload", {"path": str(root / "b")})
    assert status == 200 and swapped["previous"] == first and swapped["model"] != first
    assert http(server.url + "/recommend", {"history": h, "m": 5})[1]["model"] == swapped["model"]
    damaged = tmp_path / "damaged"
    shutil.copytree(root / "b", damaged)
    part = next(p for p in damaged.iterdir() if p.name.startswith("model-"))
    part.write_bytes(part.read_bytes()[:100])
    for path in (damaged, tmp_path / "missing"):
        status, refused, _ = http(server.url + "/admin/reload", {"path": str(path)})
        assert status == 409 and refused["kind"] == "reload_refused" and swapped["model"] in refused["error"]
    assert http(server.url + "/recommend", {"history": h, "m": 5})[1]["model"] == swapped["model"]
    status, back, _ = http(server.url + "/admin/reload", {"path": str(root / "a")})
    assert status == 200 and back["model"] == first
    assert f'jtm_model{{fingerprint="{first}"}} 1.0' in http(server.url + "/metrics")[1]


def _write_save_over(src, dst):
    """``src``'s save written into ``dst`` as a save is: its parts first, the manifest last."""
    for f in src.iterdir():
        if f.name != "manifest.json":
            shutil.copy2(f, dst / f.name)
    shutil.copy2(src / "manifest.json", dst / "manifest.tmp")
    (dst / "manifest.tmp").replace(dst / "manifest.json")


def _all_workers_serve(url, model, workers=2, seconds=60):
    """``/ready`` asked on new connections until 20 answers in a row name ``model`` and every
    one of ``workers`` processes has answered so since; else an AssertionError."""
    deadline, run, seen = time.monotonic() + seconds, 0, set()
    while run < 20 or len(seen) < workers:
        assert time.monotonic() < deadline, f"not every worker serves {model} (seen: {seen})"
        ready = http(url + "/ready")[1]
        if ready["model"] == model:
            run, seen = run + 1, seen | {ready["worker"]}
        else:
            run, seen = 0, set()
        time.sleep(0.02)


def test_a_watched_directory_swaps_every_worker_and_refuses_a_damaged_save(served, tmp_path):
    _, _, data, root = served
    watched = tmp_path / "watched"
    shutil.copytree(root / "a", watched)
    server = Server(watched, "--watch", "0.1", "--workers", "2")
    try:
        first = http(server.url + "/ready")[1]["model"]
        status, refused, _ = http(server.url + "/admin/reload", {"path": str(root / "b")})
        assert status == 409 and refused["kind"] == "reload_needs_watch"  # it would swap one worker of two
        _write_save_over(root / "b", watched)  # a new save in the served directory
        new = fingerprint(watched)
        assert new != first
        _all_workers_serve(server.url, new)
        damaged = tmp_path / "damaged"
        shutil.copytree(root / "a", damaged)
        part = next(p for p in damaged.iterdir() if p.name.startswith("model-"))
        part.write_bytes(part.read_bytes()[:100])
        _write_save_over(damaged, watched)
        time.sleep(1.0)  # ten looks
        _all_workers_serve(server.url, new, seconds=10)  # still the good save, every worker
        assert http(server.url + "/recommend", {"history": _histories(data, 1)[0], "m": 5})[1]["model"] == new
    finally:
        server.stop()


def test_a_full_queue_answers_503_and_a_late_answer_504(served):
    _, jtm, data, root = served
    h = _histories(data, 1)[0]
    tight = Server(root / "a", "--max-queue", "1", "--max-batch", "1", "--max-wait-ms", "0")
    try:
        with ThreadPoolExecutor(24) as pool:
            answers = list(pool.map(lambda _: http(tight.url + "/recommend", {"history": h, "m": jtm.tree.n_items}),
                                    range(96)))
        statuses = [a[0] for a in answers]
        assert set(statuses) <= {200, 503} and 200 in statuses and 503 in statuses, statuses
        assert all(a[2]["Retry-After"] == "1" for a in answers if a[0] == 503)
        assert http(tight.url + "/health")[0] == 200
    finally:
        tight.stop()
    late = Server(root / "a", "--timeout-ms", "0.001")
    try:
        status, body, _ = http(late.url + "/recommend", {"history": h, "m": 5})
        assert status == 504 and body["kind"] == "deadline"
        assert http(late.url + "/health")[0] == 200
    finally:
        late.stop()


def test_the_readme_serving_example_runs_as_written(served):
    """The README's ``console`` block: its serve line's options parse, and the JSON of each
    curl line is answered 200 by a real server (the README's ids may be unknown to this model:
    they are reported, not refused)."""
    import re
    import shlex
    from pathlib import Path

    from jtm_rs import cli

    server, _, _, root = served
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    block = next(b for b in re.findall(r"^```console\n(.*?)^```", readme, flags=re.M | re.S) if "jtm-rs serve" in b)
    lines = [shlex.split(line[2:].rstrip(" &")) for line in block.splitlines() if line.startswith("$ ")]
    serve = next(w for w in lines if w[0] == "jtm-rs")
    args = cli.build_parser().parse_args(serve[1:])
    assert args.command == "serve" and args.port == 8000
    curls = [w for w in lines if w[0] == "curl"]
    assert curls and all(w[w.index("-d") - 1].startswith("localhost:8000/") for w in curls)
    for w in curls:
        path = "/" + w[w.index("-d") - 1].split("/", 1)[1]
        doc = json.loads(w[w.index("-d") + 1])
        if path == "/admin/reload":
            doc = {"path": str(root / "b")}  # the README's run2/ is this test's second save
        status, body, _ = http(server.url + path, doc)
        assert status == 200, (path, body)
        if path == "/recommend":
            assert len(body["items"]) == doc["m"] and body["model"]
    http(server.url + "/admin/reload", {"path": str(root / "a")})


def test_string_ids_are_answered_in_the_data_s_own_ids(tmp_path):
    from jtm_rs.serving.batcher import answer_batch
    from jtm_rs.serving.queries import BadRequest, Limits, Query, parse
    from jtm_rs.serving.slot import load_served

    raw = synthetic.generate(200, 200, seed=4).interactions
    names = np.array([f"sku-{i}" for i in range(raw.item.max() + 1)])
    data = Interactions.from_ids(raw.user, names[raw.item], raw.timestamp)
    jtm = JTM(iterations=1, max_examples_per_epoch=2000, n_threads=1).fit(data, show_progress=False)
    jtm.save(tmp_path / "m")
    served = load_served(tmp_path / "m", 1)
    assert not served.int_ids
    h = data.item_ids.decode(data.item[:8]).tolist()
    (a,) = answer_batch(served, [Query(tuple(h + ["nope"]), 7, True)])
    assert a.unknown == ["nope"] and len(a.items) == 7 and all(i.startswith("sku-") for i in a.items)
    assert not set(a.items) & set(h)
    with pytest.raises(BadRequest, match="strings"):
        parse(b'{"history": [3]}', served.n_items, served.int_ids, Limits())
