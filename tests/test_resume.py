"""A killed run resumes: ``JTM.fit(resume=DIR)`` and ``jtm-rs train --resume DIR`` go on from
the last checkpoint and reach what an uninterrupted run with the same seed reaches."""

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

from jtm_rs import JTM, InvalidInputError, cli, synthetic
from jtm_rs.exceptions import CorruptModelError

KW = dict(iterations=2, max_examples_per_epoch=2500, validation_m=20, validation_users=100, device="cpu", n_threads=1)


@pytest.fixture(scope="module")
def split():
    return synthetic.generate(400, 500, seed=5).interactions.split(0.1, 0.1, seed=0)


@pytest.fixture(scope="module")
def uninterrupted(split):
    return JTM(**KW).fit(split, show_progress=False)


def _same_run(a: JTM, b: JTM) -> None:
    assert a.tree == b.tree
    assert [r.validation for r in a.history] == [r.validation for r in b.history]
    assert [(r.objective, r.objective_after_tree_learning, r.train_loss) for r in a.history] == [
        (r.objective, r.objective_after_tree_learning, r.train_loss) for r in b.history
    ]
    sa, sb = a.model.state_dict(), b.model.state_dict()
    assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


@pytest.mark.parametrize("stop_after", [0, 1])
def test_fit_resumes_to_the_uninterrupted_result(split, uninterrupted, tmp_path, stop_after):
    part = JTM(**KW).fit(split, show_progress=False, checkpoint_dir=tmp_path, callback=lambda r: r.iteration < stop_after)
    assert len(part.history) == stop_after + 1  # the loop really stopped early
    resumed = JTM(**KW).fit(split, show_progress=False, resume=tmp_path)
    _same_run(resumed, uninterrupted)
    _same_run(JTM.load(tmp_path), uninterrupted)  # checkpoints went on into the resumed directory


def test_a_beam_aware_run_resumes_to_the_uninterrupted_result(split, tmp_path):
    """Beam-aware training's samples come from the model at each batch: a resumed run must
    restore the same model and optimiser state to draw them again."""
    kw = {**KW, "beam_samples": 3, "pseudo_targets": "optimal"}
    whole = JTM(**kw).fit(split, show_progress=False)
    JTM(**kw).fit(split, show_progress=False, checkpoint_dir=tmp_path, callback=lambda r: False)
    resumed = JTM(**kw).fit(split, show_progress=False, resume=tmp_path)
    _same_run(resumed, whole)
    with pytest.raises(InvalidInputError, match="another configuration.*beam_samples"):
        JTM(**{**kw, "beam_samples": 2}).fit(split, show_progress=False, resume=tmp_path)


def test_resume_of_a_finished_run_returns_it_and_an_empty_directory_starts_afresh(split, uninterrupted, tmp_path):
    fresh = JTM(**KW).fit(split, show_progress=False, resume=tmp_path / "new")
    _same_run(fresh, uninterrupted)
    again = JTM(**KW).fit(split, show_progress=False, resume=tmp_path / "new")
    _same_run(again, uninterrupted)


def test_resume_refuses_other_configuration_data_or_a_plain_save(split, tmp_path):
    JTM(**KW).fit(split, show_progress=False, checkpoint_dir=tmp_path / "ck", callback=lambda r: False)
    with pytest.raises(InvalidInputError, match="another configuration.*learning_rate"):
        JTM(**{**KW, "learning_rate": 1e-2}).fit(split, show_progress=False, resume=tmp_path / "ck")
    other = synthetic.generate(400, 500, seed=6).interactions.split(0.1, 0.1, seed=0)
    with pytest.raises(InvalidInputError, match="other data"):
        JTM(**KW).fit(other, show_progress=False, resume=tmp_path / "ck")
    model = JTM.load(tmp_path / "ck")
    model.save(tmp_path / "plain")
    with pytest.raises(InvalidInputError, match="not a checkpoint"):
        JTM(**KW).fit(split, show_progress=False, resume=tmp_path / "plain")


def test_resume_names_a_damaged_training_state(split, tmp_path):
    JTM(**KW).fit(split, show_progress=False, checkpoint_dir=tmp_path, callback=lambda r: False)
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    part = tmp_path / manifest["parts"]["training"]["file"]
    part.write_bytes(part.read_bytes()[:-20] + b"\0" * 20)
    with pytest.raises(CorruptModelError, match="training part"):
        JTM(**KW).fit(split, show_progress=False, resume=tmp_path)


def _history_len(run) -> int:
    try:
        manifest = json.loads((run / "manifest.json").read_text())
        return len(json.loads((run / manifest["parts"]["history"]["file"]).read_text()))
    except (FileNotFoundError, json.JSONDecodeError, KeyError):
        return 0


@pytest.mark.skipif(sys.platform == "win32", reason="SIGKILL")
def test_cli_train_killed_then_resumed_matches_an_uninterrupted_run(tmp_path):
    data = tmp_path / "d.csv"
    assert cli.main(["generate", str(data), "--items", "300", "--users", "400"]) == 0
    args = ["--iterations", "2", "--examples-per-epoch", "2500", "--m", "10", "--quiet", "--device", "cpu", "--threads", "1"]
    killed = tmp_path / "killed"
    proc = subprocess.Popen(
        [sys.executable, "-m", "jtm_rs.cli", "train", str(data), "--out", str(killed), *args],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env={**os.environ, "PYTHONWARNINGS": "ignore"},
    )
    deadline = time.monotonic() + 300
    while _history_len(killed) < 1 and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    rounds = _history_len(killed)
    assert 1 <= rounds < 3, f"the run was not killed mid-way ({rounds} rounds saved): {proc.stderr.read().decode()}"
    assert cli.main(["train", str(data), "--resume", str(killed), "--quiet", "--device", "cpu", "--threads", "1"]) == 0
    straight = tmp_path / "straight"
    assert cli.main(["train", str(data), "--out", str(straight), *args]) == 0
    _same_run(JTM.load(killed), JTM.load(straight))
    assert np.array_equal(JTM.load(killed).tree.items, JTM.load(straight).tree.items)


def test_cli_resume_needs_a_train_directory(tmp_path, capsys):
    data = tmp_path / "d.csv"
    assert cli.main(["generate", str(data), "--items", "100", "--users", "100"]) == 0
    assert cli.main(["train", str(data), "--resume", str(tmp_path / "nothing"), "--quiet"]) == 2
    assert "split.json" in capsys.readouterr().err
    assert cli.main(["train", str(data), "--quiet"]) == 2
    assert "--out" in capsys.readouterr().err
