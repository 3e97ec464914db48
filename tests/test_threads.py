"""torch's thread count: fixed for scoring, measured per pass for training (ThreadTuner)."""

import os

import pytest
import torch

from jtm_rs import threads as threads_mod
from jtm_rs.threads import ThreadTuner, training_tuner


@pytest.mark.parametrize("most,want", [(1, [1]), (2, [1, 2]), (4, [1, 2, 4]), (6, [1, 2, 4, 6])])
def test_candidates_double_up_to_the_cores(most, want):
    assert ThreadTuner(most).candidates == want


def _drive(tuner: ThreadTuner, seconds_by_threads: dict, batches: int) -> list:
    """Runs ``batches`` fake batches whose time depends on the thread count set; returns the
    thread counts the batches ran on."""
    used = []
    tuner.start()
    for _ in range(batches):
        tuner.before()
        n = torch.get_num_threads()
        used.append(n)
        tuner.after(seconds_by_threads[n], samples=1000)
    tuner.finish()
    return used


@pytest.mark.parametrize("fast", [1, 2])
def test_tuner_probes_interleaved_then_keeps_the_fastest_and_restores(fast):
    before = torch.get_num_threads()
    tuner = ThreadTuner(2, rounds=3)
    times = {1: 0.02, 2: 0.03} if fast == 1 else {1: 0.03, 2: 0.02}
    used = _drive(tuner, times, batches=12)
    # one unmeasured warm-up batch, 3 rounds of (1, 2), then the winner
    assert used == [1, 1, 2, 1, 2, 1, 2] + [fast] * 5
    assert tuner.chosen == fast and torch.get_num_threads() == before
    # A new pass measures again: the load may have changed.
    used = _drive(tuner, {1: 0.01, 2: 0.05}, batches=8)
    assert tuner.chosen == 1 and used[-1] == 1


def test_a_much_slower_candidate_is_dropped_after_one_batch():
    """Busy cores: the 2-thread batch is 10x slower, so it is not probed again."""
    used = _drive(ThreadTuner(2, rounds=3), {1: 0.02, 2: 0.2}, batches=8)
    assert used == [1, 1, 2, 1, 1, 1, 1, 1]


def test_a_single_slow_probe_does_not_decide():
    """Each candidate is judged by its best batch: one descheduled batch does not sink it."""
    tuner = ThreadTuner(2, rounds=3, drop=100.0)
    tuner.start()
    seconds = iter([0.05, 0.02, 0.90, 0.02, 0.014, 0.02, 0.014])  # warm-up, then 1, 2, 1, 2, 1, 2
    for _ in range(7):
        tuner.before()
        tuner.after(next(seconds), 1000)
    tuner.finish()
    assert tuner.chosen == 2


def test_training_tuner_only_when_nobody_fixed_the_count(monkeypatch):
    monkeypatch.delenv("JTM_TORCH_THREADS", raising=False)
    monkeypatch.setattr(threads_mod, "available_cores", lambda: 2)
    assert isinstance(training_tuner(None, "cpu"), ThreadTuner)
    assert training_tuner(1, "cpu") is None
    assert training_tuner(None, "cuda") is None
    monkeypatch.setattr(threads_mod, "available_cores", lambda: 1)
    assert training_tuner(None, "cpu") is None
    monkeypatch.setattr(threads_mod, "available_cores", lambda: 2)
    monkeypatch.setenv("JTM_TORCH_THREADS", "1")
    assert training_tuner(None, "cpu") is None


def test_fit_tunes_training_threads_and_restores_them(monkeypatch):
    """Inside fit, training passes go through a ThreadTuner; torch's count is restored after."""
    from jtm_rs import JTM, synthetic

    monkeypatch.delenv("JTM_TORCH_THREADS", raising=False)
    monkeypatch.setattr(threads_mod, "available_cores", lambda: 2)
    chosen = []
    real_finish = ThreadTuner.finish

    def finish(self):
        chosen.append(self.chosen)
        real_finish(self)

    monkeypatch.setattr(ThreadTuner, "finish", finish)
    split = synthetic.generate(n_items=200, n_users=300, seed=0).interactions.split(seed=0)
    before = torch.get_num_threads()
    JTM(iterations=0, max_examples_per_epoch=2000, batch_size=256, validation_users=10, device="cpu").fit(
        split, show_progress=False)
    assert len(chosen) == 1 and chosen[0] in (1, 2)
    assert torch.get_num_threads() == before


_POOL_MASKS = """
import glob, json, os
import jtm_rs._core  # builds rayon's global pool
from jtm_rs._core import Tree
Tree.random(list(range(5000)), seed=0)  # a parallel section on the caller's pool
masks = {}
for task in glob.glob("/proc/self/task/*"):
    name = open(task + "/comm").read().strip()
    if name.startswith("jtm-rs-"):
        masks[name] = sorted(os.sched_getaffinity(int(task.rsplit("/", 1)[1])))
print(json.dumps(masks))
"""


def _pool_masks(**env):
    import json
    import subprocess
    import sys

    clean = {k: v for k, v in os.environ.items() if k not in ("RAYON_NUM_THREADS", "JTM_RS_PIN_THREADS")}
    out = subprocess.run([sys.executable, "-c", _POOL_MASKS], env={**clean, **env}, capture_output=True, text=True,
                         check=True)
    return json.loads(out.stdout)


@pytest.mark.skipif(not hasattr(os, "sched_getaffinity") or len(os.sched_getaffinity(0)) < 2,
                    reason="pinning needs Linux and at least 2 CPUs")
def test_a_pool_as_wide_as_the_cpus_pins_a_worker_to_each():
    """rayon's global pool, built on import as wide as the CPUs the process may use, has one
    worker on each CPU; JTM_RS_PIN_THREADS=0 and a narrower pool leave them to the scheduler."""
    cpus = sorted(os.sched_getaffinity(0))
    # As wide as the CPUs by RAYON_NUM_THREADS (the default width can be narrower, under a CPU quota).
    pinned = {k: v for k, v in _pool_masks(RAYON_NUM_THREADS=str(len(cpus))).items() if k.startswith("jtm-rs-global-")}
    assert len(pinned) == len(cpus)
    assert sorted(m[0] for m in pinned.values()) == cpus and all(len(m) == 1 for m in pinned.values())
    for env in ({"JTM_RS_PIN_THREADS": "0", "RAYON_NUM_THREADS": str(len(cpus))},
                {"RAYON_NUM_THREADS": str(len(cpus) - 1)}):
        free = {k: v for k, v in _pool_masks(**env).items() if k.startswith("jtm-rs-global-")}
        assert free and all(m == cpus for m in free.values()), env
