"""What beam-aware training (OTM) costs in fit time: the default JTM against beam-aware
configurations, fitted in one process in ABBA order, the ratio reported per round.

    python benches/beam_training_cost.py data/Beauty.txt
    python benches/beam_training_cost.py data/Beauty.txt --examples 20000 --rounds 3

Each fit is one training of ``--examples`` examples, one tree learning and a second training
(``iterations=1``) on the runner's split (users with >= 10 behaviours, 80/10/10, seed 0), one
torch and one rayon thread. Prints every fit's seconds and, per configuration, the ratio to
the default fit of the same round (min and median).
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

CONFIGS = {
    "default": {},
    "beam k=4, weight 0.03": dict(beam_samples=4, beam_weight=0.03),
    "jtm-otm (k=4, optimal targets, weight 0.1)": dict(beam_samples=4, pseudo_targets="optimal"),
}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("data")
    p.add_argument("--examples", type=int, default=20_000)
    p.add_argument("--rounds", type=int, default=3)
    a = p.parse_args()
    os.environ.setdefault("RAYON_NUM_THREADS", "1")

    from jtm_rs import JTM
    from jtm_rs.datasets import load

    split = load(a.data).filter_users(10).split(0.1, 0.1, seed=0)
    seconds = {name: [] for name in CONFIGS}
    for r in range(a.rounds):
        order = list(CONFIGS) if r % 2 == 0 else list(CONFIGS)[::-1]
        for name in order:
            t = time.perf_counter()
            JTM(iterations=1, max_examples_per_epoch=a.examples, device="cpu", seed=0, n_threads=1,
                **CONFIGS[name]).fit(split, show_progress=False)
            seconds[name].append(time.perf_counter() - t)
            print(f"round {r}: {name}: {seconds[name][-1]:.1f} s", flush=True)
    base = seconds["default"]
    for name, s in seconds.items():
        ratios = [x / b for x, b in zip(s, base)]
        print(f"{name}: ratio to the default min {min(ratios):.2f}, median {statistics.median(ratios):.2f}")


if __name__ == "__main__":
    main()
