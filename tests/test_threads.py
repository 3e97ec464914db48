"""torch's thread count: fixed for scoring, measured per pass for training (ThreadTuner)."""

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
