"""The experiment runner end to end on a tiny data set: every built method, the table, the
figure, and the rerun-after-crash cache."""

import json

import numpy as np
import pytest

from jtm_rs import synthetic
from jtm_rs.cli import main
from jtm_rs.exceptions import InvalidInputError
from jtm_rs.experiments import METHODS, Budget, Experiment
from jtm_rs.experiments import runner as runner_mod


@pytest.fixture(scope="module")
def tiny():
    return synthetic.generate(256, 300, seed=1).interactions


def _experiment(data, out, methods, **kw):
    return Experiment(
        data, out, methods=methods, seeds=(0,), M=20,
        budget=Budget(iterations=1, max_examples_per_epoch=1500, n_threads=1), show_progress=False, **kw,
    )


def test_runner_writes_table_figure_and_curves(tiny, tmp_path):
    methods = list(METHODS)
    res = _experiment(tiny, tmp_path, methods).run()
    assert set(res) == set(methods)
    table = (tmp_path / "table.md").read_text()
    for m in res:
        assert f"| {m} |" in table
    assert (tmp_path / "figure2.png").stat().st_size > 1000
    csv = (tmp_path / "table.csv").read_text().splitlines()
    assert csv[0].startswith("method,precision_mean") and len(csv) == 1 + len(res)
    for m in ("jtm", "tdm", "jtm-j", "jtm-h"):
        curve = res[m][0]["curve"]
        assert [c["iteration"] for c in curve] == [0, 1]
    # Each search's latency beside its recall: JTM's beam against brute force with its model,
    # SASRec's HNSW against its exact search (which is its Table 1 number).
    jtm, sas = res["jtm"][0]["retrieval"], res["sasrec"][0]["retrieval"]
    assert set(jtm) == {"brute_force", "beam"} and set(sas) == {"exact", "hnsw"}
    assert jtm["brute_force"]["share_of_exact"] == sas["exact"]["share_of_exact"] == 1.0
    assert sas["exact"]["recall"] == pytest.approx(res["sasrec"][0]["test"]["recall"])
    assert jtm["beam"]["recall"] == pytest.approx(res["jtm"][0]["test"]["recall"])
    assert all(v["p50_ms"] > 0 for v in (*jtm.values(), *sas.values()))
    assert "popularity" not in [r for r in res if res[r][0].get("retrieval")]
    assert "| sasrec | hnsw |" in table and "| jtm | beam |" in table
    passes = res["sasrec"][0]["passes"]
    assert passes and all(p["validation_recall"] is not None for p in passes) and "passes" not in res["jtm"][0]
    # dnn is the brute-force retrieval of the jtm model: it never needs its own fit.
    assert res["dnn"][0]["fit_seconds"] == res["jtm"][0]["fit_seconds"]


def test_rerun_after_crash_runs_only_what_is_missing(tiny, tmp_path, monkeypatch):
    exp = _experiment(tiny, tmp_path, ["popularity", "itemcf"])
    calls = []
    real_make = runner_mod.make

    def crashing_make(name, budget, seed):
        calls.append(name)
        if name == "itemcf":
            raise KeyboardInterrupt  # the run dies after popularity finished
        return real_make(name, budget, seed)

    monkeypatch.setattr(runner_mod, "make", crashing_make)
    with pytest.raises(KeyboardInterrupt):
        exp.run()
    assert exp.result_path("popularity", 0).exists() and not exp.result_path("itemcf", 0).exists()
    first = json.loads(exp.result_path("popularity", 0).read_text())
    calls.clear()
    monkeypatch.setattr(runner_mod, "make", real_make)
    monkeypatch.setattr(runner_mod, "make", lambda n, b, s: (calls.append(n), real_make(n, b, s))[1])
    exp.run()
    assert calls == ["itemcf"]
    assert json.loads(exp.result_path("popularity", 0).read_text()) == first
    # Report only: tables from the cache, nothing fitted, missing runs named.
    calls.clear()
    (tmp_path / "table.md").unlink()
    more = _experiment(tiny, tmp_path, ["popularity", "itemcf", "youtube-dnn"])
    assert set(more.report()) == {"popularity", "itemcf"} and calls == []
    assert "| itemcf |" in (tmp_path / "table.md").read_text()


def test_unknown_method_is_refused(tiny, tmp_path):
    with pytest.raises(InvalidInputError, match="unknown method"):
        _experiment(tiny, tmp_path, ["popularity", "bpr"])


def test_cli_experiment_on_any_loader_format(tiny, tmp_path, capsys):
    # The sequence format with string ids: the runner takes any file the loaders read.
    lines = []
    for u in np.unique(tiny.user)[:200]:
        items = tiny.item[tiny.user == u]
        lines.append(" ".join([f"user-{u}"] + [f"item-{i}" for i in items]))
    p = tmp_path / "seq.txt"
    p.write_text("\n".join(lines) + "\n")
    rc = main(["experiment", str(p), "--methods", "popularity", "itemcf", "--out", str(tmp_path / "run"), "--m", "10", "--quiet"])
    assert rc == 0
    out = capsys.readouterr().out
    assert "| itemcf |" in out and "[seed 0] popularity" in out
