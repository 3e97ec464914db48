"""The fixed cost of one call of the scoring pass: a saved model's MLP scoring 1, 64, 385
(one user's beam-search level at 10^6 items) and 6 000 pairs per call, on one thread.

    python benches/scoring_call.py runs/m1e6

Per call size and precision: microseconds a call (the median of 5 half-second runs) and the
GFLOP/s it reaches, a pair counted as the node's share of the first layer and the layers after
it (25 648 FLOP for the default model; the user's share comes with the call).
"""

from __future__ import annotations

import argparse
import time


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("model", help="saved model directory (jtm-rs train, benches/scale.py --save)")
    p.add_argument("--sizes", type=int, nargs="+", default=[1, 64, 385, 6000])
    p.add_argument("--users", type=int, default=16)
    a = p.parse_args()

    import numpy as np
    import torch

    from jtm_rs import JTM
    from jtm_rs.model import scoring_pass

    torch.set_num_threads(1)
    torch.set_grad_enabled(False)
    model = JTM.load(a.model, n_threads=1).model
    scorer = scoring_pass(model)
    if scorer is None:
        raise SystemExit("this model does not score through the Rust pass")
    hidden = model.mlp[0].weight.shape[0]
    flop = 2 * sum(w.size for w in scorer.weights) + 2 * scorer.w_node.size
    rng = np.random.default_rng(0)
    share = rng.standard_normal((a.users, hidden)).astype(np.float32)
    print("| pairs a call | precision | µs a call | GFLOP/s |")
    print("|---|---|---|---|")
    for n in a.sizes:
        rows = rng.integers(0, a.users, n).astype(np.int64)
        nodes = rng.integers(0, model.n_nodes, n).astype(np.int64)
        for precision in ["float32", "bfloat16"]:
            def call():
                scorer.scores(share, rows, nodes, precision=precision, n_threads=1)

            for _ in range(50):
                call()
            runs = []
            for _ in range(5):
                t, k = time.perf_counter(), 0
                while time.perf_counter() - t < 0.5:
                    call()
                    k += 1
                runs.append((time.perf_counter() - t) / k)
            dt = float(np.median(runs))
            print(f"| {n} | {precision} | {dt * 1e6:.1f} | {n * flop / dt / 1e9:.0f} |")


if __name__ == "__main__":
    main()
