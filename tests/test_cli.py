"""The newcomer's CLI: --version, help on every option, short reprs, --tree, the unknown-items
warning, one-line warnings, progress lines when output is not a terminal."""

import logging
import re
import subprocess
import sys

import numpy as np
import pytest

import jtm_rs
from jtm_rs import JTM, Interactions, cli, synthetic
from jtm_rs.progress import LogBar


def test_version_and_help_do_not_import_torch():
    code = ("import sys; from jtm_rs import cli\n"
            "try:\n    cli.main(['--version'])\nexcept SystemExit as e:\n    assert e.code == 0\n"
            "assert 'torch' not in sys.modules, 'torch was imported'\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == f"jtm-rs {jtm_rs.__version__}"


def test_every_option_has_help_and_defaults_are_shown():
    parser = cli.build_parser()
    subparsers = next(a for a in parser._actions if a.dest == "command").choices
    for name, sub in subparsers.items():
        for action in sub._actions:
            if action.dest == "help":
                continue
            assert action.help, f"{name} {action.option_strings or action.dest} has no help"
        text = sub.format_help()
        if name in ("train", "experiment"):
            assert "(default: 5)" in text and "(default: 0.1)" in text  # --iterations, --validation
    assert "--full" in subparsers["demo"].format_help()


def test_reprs_are_short(tmp_path):
    data = synthetic.generate(300, 300, seed=0).interactions
    split = data.split(0.1, 0.1, seed=0)
    for obj in (data, split, split.test.evaluation_users(), JTM(iterations=1), jtm_rs.Tree.random(data.items)):
        text = repr(obj)
        assert len(text) < 200 and "array" not in text and "\n" not in text, text
    assert re.fullmatch(r"Interactions\(rows=\d+, users=300, items=\d+, categories\)", repr(data))
    assert repr(JTM(iterations=1)) == "JTM(not fitted; iterations=1)"


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("cli")
    data = tmp / "d.csv"
    assert cli.main(["generate", str(data), "--items", "300", "--users", "300"]) == 0
    out = tmp / "run"
    args = ["--iterations", "0", "--examples-per-epoch", "2000", "--m", "10", "--quiet", "--device", "cpu"]
    assert cli.main(["train", str(data), "--out", str(out), *args]) == 0
    return tmp, data, out


def test_learn_tree_then_evaluate_and_train_with_tree(run, capsys):
    tmp, data, out = run
    tree = tmp / "t.jtm"
    assert cli.main(["learn-tree", str(data), "--model", str(out), "--out", str(tree), "--quiet"]) == 0
    capsys.readouterr()
    assert cli.main(["evaluate", str(data), "--model", str(out), "--m", "10", "--tree", str(tree)]) == 0
    assert "beam: Precision@10" in capsys.readouterr().out
    # The learned tree is the one retrieved over: a tree of other items is refused by name.
    other = tmp / "other.jtm"
    jtm_rs.Tree.random(np.arange(10**6, 10**6 + 50)).save(other)
    assert cli.main(["evaluate", str(data), "--model", str(out), "--tree", str(other)]) == 2
    assert "other items than the model's" in capsys.readouterr().err
    # train --tree starts from the given tree (iterations 0: it is the final tree).
    again = tmp / "again"
    assert cli.main(["train", str(data), "--out", str(again), "--tree", str(tree), "--iterations", "0",
                     "--examples-per-epoch", "500", "--quiet", "--device", "cpu"]) == 0
    assert JTM.load(again).tree == jtm_rs.Tree.load(tree)


def test_evaluate_warns_when_the_data_is_not_the_models(run, tmp_path, capsys):
    _, _, out = run
    stranger = tmp_path / "s.csv"
    Interactions.from_ids(np.repeat(np.arange(40), 12), np.arange(480) + 10**7, np.tile(np.arange(12), 40)).to_csv(stranger)
    with pytest.warns(UserWarning, match="100% of the evaluation users' behaviours are items the model does not know"):
        assert cli.main(["evaluate", str(stranger), "--model", str(out), "--m", "10"]) == 0
    assert "Recall@10 0.0000" in capsys.readouterr().out
    # From the command line the warning is one line, without Python's source-line format.
    proc = subprocess.run([sys.executable, "-m", "jtm_rs.cli", "evaluate", str(stranger), "--model", str(out), "-q"],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.startswith("jtm-rs: warning: 100% of the evaluation") and proc.stderr.count("\n") == 1, proc.stderr
    assert "UserWarning" not in proc.stderr


def test_evaluate_maps_the_data_into_the_models_ids(run, tmp_path, capsys):
    """The same behaviours with a few extra items: the file's own ids shift, the model's do not."""
    _, data, out = run
    d = jtm_rs.datasets.load(data)
    users = np.concatenate([d.user_ids.decode(d.user), 10**6 + np.arange(20)])  # new users sort last
    items = np.concatenate([d.item_ids.decode(d.item), -5 - np.arange(20)])  # new items sort first
    shifted = tmp_path / "shifted.csv"
    Interactions.from_ids(users, items, np.concatenate([d.timestamp, np.zeros(20, np.int64)])).to_csv(shifted)
    assert not np.array_equal(jtm_rs.datasets.load(shifted).item_ids.decode(np.arange(5)), d.item_ids.decode(np.arange(5)))
    assert cli.main(["evaluate", str(data), "--model", str(out), "--m", "10"]) == 0
    same = capsys.readouterr().out.split("(")[0]
    assert cli.main(["evaluate", str(shifted), "--model", str(out), "--m", "10"]) == 0
    assert capsys.readouterr().out.split("(")[0] == same


def test_log_bar_reports_while_running_and_at_the_end(caplog):
    with caplog.at_level(logging.INFO, logger="jtm_rs"):
        bar = LogBar(100, "phase", "item", interval=0.0)
        bar.update(40)
        bar.set_postfix(loss="0.5")
        bar.close()
    lines = [r.getMessage() for r in caplog.records]
    assert lines[0].startswith("phase: 40/100 item") and lines[-1].startswith("phase: 40/100 item, loss 0.5 in ")


def test_fit_prints_progress_lines_when_output_is_not_a_terminal(tmp_path):
    code = ("from jtm_rs import JTM, synthetic\n"
            "s = synthetic.generate(200, 200, seed=0).interactions.split(0.1, 0.1, seed=0)\n"
            "JTM(iterations=1, max_examples_per_epoch=500, validation_users=50, device='cpu').fit(s)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env={**__import__("os").environ, "JTM_PROGRESS_INTERVAL": "0"})
    assert out.returncode == 0, out.stderr
    assert "round 0: trained in" in out.stderr and "round 0: tree learned in" in out.stderr
    assert "round 0 epoch 1/1:" in out.stderr and "learn_tree:" in out.stderr  # the phases' own lines


def test_train_options_are_the_configs_fields(tmp_path):
    """Every JTMConfig field is an option of train and experiment (derived, not copied), and a
    --config file sets fields that options then override."""
    import argparse
    import dataclasses

    from jtm_rs.cli_options import config_overrides
    from jtm_rs.config import JTMConfig

    parser = cli.build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices
    for command in ("train", "experiment"):
        text = sub[command].format_help()
        for f in dataclasses.fields(JTMConfig):
            if f.name != "seed":
                assert f"--{f.name.replace('_', '-')}" in text, (command, f.name)
    cfg = tmp_path / "c.json"
    cfg.write_text('{"d": 3, "stay_bonus": 0.5}')
    a = parser.parse_args(["train", "x.csv", "--config", str(cfg), "--d", "5", "--no-hierarchy",
                           "--max-samples-per-item", "none", "--hidden", "32", "16", "--negatives", "30"])
    assert config_overrides(a) == {"d": 5, "stay_bonus": 0.5, "hierarchical": False, "max_samples_per_item": None,
                                   "hidden": [32, 16], "negatives": 30}
    JTMConfig(**config_overrides(a))  # a valid configuration


def test_distributed_train_outside_a_launcher_says_how_to_launch(run, tmp_path, capsys, monkeypatch):
    _, data, _ = run
    for var in ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(var, raising=False)
    assert cli.main(["train", str(data), "--out", str(tmp_path / "d"), "--distributed", "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    assert "RANK" in err and "torchrun --nproc-per-node" in err
    assert not (tmp_path / "d").exists()


def test_a_launched_train_says_its_ranks_and_backend_and_the_save_records_them(run, tmp_path):
    """As under torchrun (its environment, one rank here): the leader's first line names the
    ranks, backend and device, and every round of the save records its world size."""
    import os
    import socket

    _, data, _ = run
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "RANK": "0", "LOCAL_RANK": "0", "WORLD_SIZE": "1", "MASTER_ADDR": "127.0.0.1",
           "MASTER_PORT": str(port), "PYTHONWARNINGS": "ignore"}
    out = subprocess.run([sys.executable, "-m", "jtm_rs.cli", "train", str(data), "--out", str(tmp_path / "d"),
                          "--distributed", "--device", "cpu", "--threads", "1", "--iterations", "0",
                          "--examples-per-epoch", "1000", "--m", "10"], env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert "1 rank(s) over gloo, rank 0 on cpu" in out.stdout + out.stderr
    assert [r.world_size for r in JTM.load(tmp_path / "d").history] == [1]
