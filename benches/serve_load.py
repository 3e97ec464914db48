"""The retrieval service under load: closed-loop HTTP clients against ``jtm-rs serve``, beside
the in-process rates of the same model measured in the same run, so that the HTTP and batching
overheads come out as ratios.

    python benches/serve_load.py runs/beauty-model --clients 1 8 32 128 --seconds 60
    python benches/serve_load.py runs/a --swap-with runs/b --soak 600 --clients 32   # the soak
    python benches/serve_load.py runs/model --in-process 16 64   # no server: one user, batches of 16 and 64

Per level of concurrency: users answered per second, p50/p95/p99 latency, mean users per
batched retrieval (from the server's /metrics), errors. In process, after: ``recommend`` one
user at a time (p50, users/s) and batched at each observed mean batch size, the history left
out as the service leaves it out (``exclude_history=True``).

The soak (``--swap-with``): ``--clients`` clients for ``--soak`` seconds while the served model
is swapped between the two saves every ``--swap-every`` seconds (``POST /admin/reload``); every
answer's items are checked against what the model it names answers in process for the same
history: a mismatch is a *mixed* answer; any non-200 a *failed* one.

Each client sends the histories of the model's own generated users, round robin, ``m`` items.
Clients are threads of this process on persistent connections: on a 2-core machine they share
the cores with the server, as real clients on the same host would.
"""

from __future__ import annotations

import argparse
import http.client
import json
import re
import socket
import subprocess
import sys
import threading
import time

import numpy as np


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Client:
    def __init__(self, port: int):
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)

    def post(self, path: str, doc) -> tuple:
        body = json.dumps(doc).encode()
        try:
            self.conn.request("POST", path, body, {"Content-Type": "application/json"})
            r = self.conn.getresponse()
            return r.status, json.loads(r.read() or b"null")
        except (OSError, http.client.HTTPException, ValueError) as e:
            self.conn.close()
            return 0, {"error": str(e)}

    def get(self, path: str) -> str:
        self.conn.request("GET", path)
        return self.conn.getresponse().read().decode()


def batch_stats(text: str) -> tuple:
    total = float(re.search(r"^jtm_batch_users_sum (\S+)$", text, re.M).group(1))
    count = float(re.search(r"^jtm_batch_users_count (\S+)$", text, re.M).group(1))
    return total, count


def start_server(model: str, port: int, args) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "jtm_rs.cli", "serve", model, "--port", str(port), "--max-batch", str(args.max_batch),
           "--max-wait-ms", str(args.max_wait_ms), "--device", "cpu"]
    if args.threads:
        cmd += ["--threads", str(args.threads)]
    if args.workers > 1:
        cmd += ["--workers", str(args.workers)]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"the server exited: {proc.stderr.read()}")
        try:
            if Client(port).get("/health"):
                return proc
        except OSError:
            time.sleep(0.2)
    raise SystemExit("the server did not come up")


def closed_loop(port: int, histories, m: int, clients: int, seconds: float, check=None) -> dict:
    latencies, statuses, answers = [], [], []
    stop = time.monotonic() + seconds

    def run(k: int) -> None:
        c, i = Client(port), k
        while time.monotonic() < stop:
            h = histories[i % len(histories)]
            t = time.perf_counter()
            status, body = c.post("/recommend", {"history": h, "m": m})
            latencies.append(time.perf_counter() - t)
            statuses.append(status)
            if check is not None and status == 200:
                answers.append((i % len(histories), body["model"], body["items"]))
            i += clients

    before = batch_stats(Client(port).get("/metrics"))
    t0 = time.monotonic()
    threads = [threading.Thread(target=run, args=(k,)) for k in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.monotonic() - t0
    after = batch_stats(Client(port).get("/metrics"))
    lat = np.array(latencies) * 1000
    ok = int(sum(s == 200 for s in statuses))
    out = {"clients": clients, "users_per_s": ok / wall, "p50": np.percentile(lat, 50), "p95": np.percentile(lat, 95),
           "p99": np.percentile(lat, 99), "batch": (after[0] - before[0]) / max(after[1] - before[1], 1),
           "errors": len(statuses) - ok, "requests": len(statuses)}
    if check is not None:
        out["mixed"] = sum(check(j, model, items) for j, model, items in answers)
    return out


def in_process(model_dir: str, histories, m: int, batches, threads, calls: int = 200) -> dict:
    from jtm_rs import JTM

    jtm = JTM.load(model_dir, n_threads=threads)
    one = []
    for k in range(calls):
        t = time.perf_counter()
        jtm.recommend([histories[k % len(histories)]], M=m, on_unknown="ignore", exclude_history=True)
        one.append(time.perf_counter() - t)
    res = {"one_p50_ms": 1000 * float(np.median(one)), "one_users_per_s": 1 / float(np.mean(one))}
    for b in sorted({max(1, int(round(x))) for x in batches}):
        t = time.perf_counter()
        n = 0
        while time.perf_counter() - t < 5:
            jtm.recommend([histories[(n + i) % len(histories)] for i in range(b)], M=m, on_unknown="ignore",
                          exclude_history=True)
            n += b
        res[f"batched_{b}_users_per_s"] = n / (time.perf_counter() - t)
    return res


def in_process_line(base: dict) -> str:
    return (f"in process: one user p50 {base['one_p50_ms']:.2f} ms, {base['one_users_per_s']:.1f} users/s; "
            + ", ".join(f"batches of {k[8:-12]}: {v:.1f} users/s" for k, v in base.items() if k.startswith("batched")))


def histories_of(model_dir: str, n: int, seed: int):
    """Histories of ``n`` users in the model's own ids: runs of items the model knows."""
    from jtm_rs import JTM

    jtm = JTM.load(model_dir, n_threads=1)
    rng = np.random.default_rng(seed)
    items = jtm.tree.items
    ids = jtm.item_ids.decode(items) if jtm.item_ids is not None else items
    return [rng.choice(ids, int(rng.integers(5, 40))).tolist() for _ in range(n)]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("model", help="saved model directory")
    p.add_argument("--clients", type=int, nargs="+", default=[1, 8, 32, 128])
    p.add_argument("--seconds", type=float, default=60)
    p.add_argument("--m", type=int, default=200)
    p.add_argument("--max-batch", type=int, default=64)
    p.add_argument("--max-wait-ms", type=float, default=0.0)
    p.add_argument("--threads", type=int, default=None, help="the server's --threads (and the in-process runs')")
    p.add_argument("--workers", type=int, default=1,
                   help="the server's --workers (the mean batch is then one worker's, whichever answers /metrics)")
    p.add_argument("--users", type=int, default=1000)
    p.add_argument("--swap-with", default=None, help="a second save: run the soak instead")
    p.add_argument("--soak", type=float, default=600)
    p.add_argument("--swap-every", type=float, default=60)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--in-process", type=int, nargs="+", default=None, metavar="USERS",
                   help="no server: only the in-process rates, one user and batches of these sizes")
    a = p.parse_args()
    histories = histories_of(a.model, a.users, a.seed)
    if a.in_process:
        base = in_process(a.model, histories, a.m, a.in_process, a.threads)
        print(in_process_line(base))
        return
    port = free_port()
    server = start_server(a.model, port, a)
    try:
        if a.swap_with:
            soak(a, port, histories)
            return
        rows = [closed_loop(port, histories, a.m, c, a.seconds) for c in a.clients]
    finally:
        server.terminate()
        server.wait()
    base = in_process(a.model, histories, a.m, [r["batch"] for r in rows if a.workers == 1], a.threads)
    print(in_process_line(base))
    print("| clients | users/s | × one-user in process | p50 ms | p95 ms | p99 ms | mean batch | "
          "p99 bound 4·p50₁·c/b ms | errors / requests |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        if a.workers > 1:  # /metrics answers from one worker at a time: no mean batch
            r["batch"] = float("nan")
        bound = 4 * base["one_p50_ms"] * r["clients"] / max(r["batch"], 1)
        print(f"| {r['clients']} | {r['users_per_s']:.1f} | {r['users_per_s'] / base['one_users_per_s']:.2f} | "
              f"{r['p50']:.2f} | {r['p95']:.2f} | {r['p99']:.2f} | {r['batch']:.2f} | {bound:.1f} | "
              f"{r['errors']} / {r['requests']} |")


def soak(a, port: int, histories) -> None:
    from jtm_rs.serving.batcher import answer_batch
    from jtm_rs.serving.queries import Query
    from jtm_rs.serving.slot import load_served

    expected = {}  # each history answered alone, in process, by each model
    for d in (a.model, a.swap_with):
        served = load_served(d, a.threads)
        expected[served.fingerprint] = [answer_batch(served, [Query(tuple(h), a.m, True)])[0].items for h in histories]

    def mixed(j, model, items) -> bool:
        return model not in expected or expected[model][j] != items

    swaps = []
    done = threading.Event()

    def swapper() -> None:
        k = 1
        while not done.wait(a.swap_every):
            # A new connection per swap: the server closes one left idle longer than its keep-alive.
            swaps.append(Client(port).post("/admin/reload", {"path": [a.model, a.swap_with][k % 2]})[0])
            k += 1

    t = threading.Thread(target=swapper)
    t.start()
    r = closed_loop(port, histories, a.m, a.clients[0], a.soak, check=mixed)
    done.set()
    t.join()
    print(f"soak: {a.clients[0]} clients, {a.soak:.0f} s, {len(swaps)} swaps ({sum(s == 200 for s in swaps)} done: {swaps}); "
          f"{r['requests']} requests, {r['errors']} failed, {r['mixed']} mixed; p50 {r['p50']:.2f} ms, "
          f"p99 {r['p99']:.2f} ms, {r['users_per_s']:.1f} users/s")


if __name__ == "__main__":
    main()
